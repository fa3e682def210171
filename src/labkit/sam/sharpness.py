"""Sharpness measures of a trained model, all leaving its parameters, gradients and mode as they were.

* :func:`hessian_top_eigenvalue` and :func:`hessian_trace`: curvature of the mean loss, through
  ``labkit.hessian``'s public operator and solvers.
* :func:`worst_case_sharpness`: ``max_{||delta|| <= rho} L(w + delta) - L(w)``, and with
  ``adaptive=True`` the adaptive variant ``max_{||delta / |w| || <= rho}`` that is invariant to the
  rescalings a ReLU network allows (Kwon et al., 2021; Andriushchenko et al., 2023,
  https://arxiv.org/abs/2302.07011), estimated by projected normalised gradient ascent; with
  ``batch_size=m`` the average over batches of ``m`` examples (m-sharpness).

Every function takes ``loss_fn(outputs, targets) -> mean loss`` and ``data = (inputs, targets)``, the
convention of ``labkit.hessian.HessianOperator``. Models are evaluated in eval mode (restored after).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn

from labkit.hessian import HessianOperator, hutchinson_trace, top_eigenvalues

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _check(model: nn.Module, data: object) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    pair = isinstance(data, (tuple, list)) and len(data) == 2
    if not (pair and all(isinstance(t, torch.Tensor) for t in data)):
        raise TypeError("data must be an (inputs, targets) pair of tensors")
    x, y = data
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"data must be non-empty with as many targets as inputs, got {len(x)} and {len(y)}")
    return x, y


def _params(model: nn.Module, params: Sequence[nn.Parameter] | None) -> list[nn.Parameter]:
    chosen = [p for p in model.parameters() if p.requires_grad] if params is None else list(params)
    if not chosen:
        raise ValueError("params is empty: the model has no trainable parameters to measure sharpness over")
    return chosen


def hessian_top_eigenvalue(
    model: nn.Module,
    loss_fn: LossFn,
    data: tuple[torch.Tensor, torch.Tensor],
    *,
    params: Sequence[nn.Parameter] | None = None,
    tol: float = 1e-4,
    generator: torch.Generator | None = None,
) -> float:
    """The largest Hessian eigenvalue ``lambda_max`` of the mean loss (Lanczos via ``labkit.hessian``).

    The quantity SAM is meant to shrink (Foret et al., 2021) and that gradient descent drives to
    ``2 / lr`` at the edge of stability (Cohen et al., 2021). Warns when the solver did not converge.
    """
    _check(model, data)
    op = HessianOperator(model, loss_fn, tuple(data), params=_params(model, params))
    result = top_eigenvalues(op, k=1, tol=tol, generator=generator)
    if not result.converged:
        warnings.warn(f"top Hessian eigenvalue did not converge (residual {float(result.residuals[0]):.2e})",
                      RuntimeWarning, stacklevel=2)
    return float(result.eigenvalues[0])


def hessian_trace(
    model: nn.Module,
    loss_fn: LossFn,
    data: tuple[torch.Tensor, torch.Tensor],
    *,
    params: Sequence[nn.Parameter] | None = None,
    samples: int = 100,
    generator: torch.Generator | None = None,
) -> float:
    """Hutchinson estimate of ``trace(H)`` of the mean loss with ``samples`` Rademacher probes
    (via ``labkit.hessian.hutchinson_trace``)."""
    _check(model, data)
    op = HessianOperator(model, loss_fn, tuple(data), params=_params(model, params))
    return float(hutchinson_trace(op, samples=samples, generator=generator).estimate)


def _ascent(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, params: list[nn.Parameter],
            w0: list[torch.Tensor], scale: list[torch.Tensor] | None, rho: float, steps: int,
            step_size: float, generator: torch.Generator | None) -> float:
    """Projected normalised gradient ascent on ``eta`` with ``delta = T eta``, ``||eta|| <= rho``."""

    def set_delta(eta: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for i, p in enumerate(params):
                p.copy_(w0[i] + (eta[i] if scale is None else eta[i] * scale[i]))

    def loss_and_grad() -> tuple[float, list[torch.Tensor]]:
        with torch.enable_grad():
            loss = loss_fn(model(x), y)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
        if scale is not None:  # gradient with respect to eta
            grads = [g * t for g, t in zip(grads, scale, strict=True)]
        return float(loss.detach()), grads

    def norm(ts: list[torch.Tensor]) -> torch.Tensor:
        dev = ts[0].device
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t).to(dev) for t in ts]))

    with torch.no_grad():
        for p, w in zip(params, w0, strict=True):
            p.copy_(w)
    base, grads = loss_and_grad()
    g_norm = norm(grads)
    if not math.isfinite(base):
        raise FloatingPointError(f"the loss at the unperturbed weights is {base}")
    if float(g_norm) > 0:
        eta = [g * (rho / g_norm) for g in grads]  # start where SAM's first step goes
    else:  # at an exact stationary point: a seeded random direction
        gen_device = generator.device if generator is not None else torch.device("cpu")
        eta = [torch.randn(p.shape, generator=generator, device=gen_device, dtype=p.dtype).to(p.device)
               for p in params]
        eta = [e * (rho / norm(eta)) for e in eta]
    best = 0.0
    for _ in range(steps):
        set_delta(eta)
        value, grads = loss_and_grad()
        best = max(best, value - base)
        g_norm = norm(grads)
        if float(g_norm) == 0:
            break
        eta = [e + g * (step_size / g_norm) for e, g in zip(eta, grads, strict=True)]
        e_norm = norm(eta)
        if float(e_norm) > rho:
            eta = [e * (rho / e_norm) for e in eta]
    set_delta(eta)
    with torch.no_grad():
        best = max(best, float(loss_fn(model(x), y)) - base)
    return best


def worst_case_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    data: tuple[torch.Tensor, torch.Tensor],
    *,
    rho: float,
    adaptive: bool = False,
    eta: float = 0.0,
    steps: int = 20,
    step_size: float | None = None,
    batch_size: int | None = None,
    params: Sequence[nn.Parameter] | None = None,
    generator: torch.Generator | None = None,
) -> float:
    """Worst-case sharpness ``max_{||delta|| <= rho} L(w + delta) - L(w)`` (Andriushchenko et al., 2023).

    ``adaptive=True`` measures the ball in the weight-scaled norm ``||delta / (|w| + eta)|| <= rho``
    (adaptive sharpness, invariant to per-neuron rescaling). The maximum is estimated by ``steps`` of
    projected normalised gradient ascent (step ``step_size``, default ``rho``) started at SAM's
    perturbation (a seeded random direction at a stationary point); the result is the best value seen,
    a lower bound on the true maximum that is tight on quadratics. ``batch_size=m`` averages the
    worst case over consecutive batches of ``m`` examples (m-sharpness); ``None`` uses all of ``data``.
    The model runs in eval mode; its parameters, gradients and mode are restored.
    """
    x, y = _check(model, data)
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not (rho >= 0 and math.isfinite(rho)):
        raise ValueError(f"rho must be a finite number >= 0, got {rho!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta!r}")
    step_size = float(rho) if step_size is None else float(step_size)
    if step_size <= 0 and rho > 0:
        raise ValueError(f"step_size must be > 0, got {step_size!r}")
    params = _params(model, params)
    if rho == 0:
        return 0.0
    w0 = [p.detach().clone() for p in params]
    scale = [w.abs() + eta for w in w0] if adaptive else None
    was_training = model.training
    m = len(x) if batch_size is None else min(batch_size, len(x))
    values = []
    model.eval()
    try:
        for start in range(0, len(x) - m + 1, m):
            xb, yb = x[start:start + m], y[start:start + m]
            values.append(_ascent(model, loss_fn, xb, yb, params, w0, scale, float(rho), steps, step_size,
                                  generator))
    finally:
        with torch.no_grad():
            for p, w in zip(params, w0, strict=True):
                p.copy_(w)
        model.train(was_training)
    return sum(values) / len(values)
