"""Sharpness measures of a trained model, all leaving it as they found it (``labkit.autograd.preserve_model``).

* :func:`hessian_top_eigenvalue` and :func:`hessian_trace`: curvature of the mean loss, through
  ``labkit.hessian``'s public operator and solvers. The top eigenvalue is a :class:`TopEigenvalue`, a
  ``float`` that also carries the solver's ``converged`` flag and ``residual``; the trace a
  :class:`TraceEstimate`, a ``float`` with its ``stderr``.
* :func:`worst_case_sharpness`: ``max_{||delta|| <= rho} L(w + delta) - L(w)``, and with
  ``adaptive=True`` the adaptive variant ``max_{||delta / |w| || <= rho}`` that is invariant to the
  rescalings a ReLU network allows (Kwon et al., 2021; Andriushchenko et al., 2023,
  https://arxiv.org/abs/2302.07011), estimated by projected normalised gradient ascent; with
  ``batch_size=m`` the average over batches of ``m`` examples (m-sharpness).

Every function takes ``loss_fn(outputs, targets) -> mean loss`` and ``data = (inputs, targets)``, the
convention of ``labkit.hessian.HessianOperator``. Models are evaluated in eval mode (every submodule's
mode, the parameters, their ``.grad`` and the buffers are restored afterwards).

Bad input is a ``ValueError``/``TypeError`` naming the argument, never a silent number: every option is a finite
number in range (``labkit.checks``); ``params`` must be the model's own; the model's weights must be finite; the
data must be a finite ``(inputs, targets)`` pair in the model's dtype that the model and ``loss_fn`` accept
(probed on the first two rows; integer targets of a cross-entropy/NLL loss must be class indices of the outputs).
A NaN/inf loss inside the ball of ``worst_case_sharpness`` is an error naming ``rho``, not a skipped point.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from labkit import checks
from labkit.autograd import (
    check_generator,
    check_module,
    preserve_model,
    randn,
    resolve_params,
    train_mode,
    zeros_if_none,
)
from labkit.hessian import HessianOperator, hutchinson_trace, top_eigenvalues
from labkit.sam._inputs import (
    check_bool,
    check_data,
    check_finite_params,
    check_loss_fn,
    optional_number,
    optional_positive_int,
)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class TopEigenvalue(float):
    """The top Hessian eigenvalue as a plain ``float`` that also carries how the solver ended.

    ``converged``: whether the solver's relative residual ``||H v - lambda v|| / |lambda|`` is within
    its tolerance; ``residual``: that residual. Arithmetic, formatting and comparisons are a float's.
    """

    converged: bool
    residual: float

    def __new__(cls, value: float, converged: bool = True, residual: float = 0.0) -> TopEigenvalue:
        obj = super().__new__(cls, value)
        object.__setattr__(obj, "converged", bool(converged))
        object.__setattr__(obj, "residual", float(residual))
        return obj

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a TopEigenvalue is read-only")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (float(self), self.converged, self.residual))

    def __repr__(self) -> str:
        return f"TopEigenvalue({float(self)!r}, converged={self.converged}, residual={self.residual:.2e})"


class TraceEstimate(float):
    """Hutchinson's estimate of ``trace(H)`` as a plain ``float`` that also carries its standard error
    (``stderr``) and the number of probes (``samples``)."""

    stderr: float
    samples: int

    def __new__(cls, value: float, stderr: float = 0.0, samples: int = 0) -> TraceEstimate:
        obj = super().__new__(cls, value)
        object.__setattr__(obj, "stderr", float(stderr))
        object.__setattr__(obj, "samples", int(samples))
        return obj

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a TraceEstimate is read-only")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (float(self), self.stderr, self.samples))

    def __repr__(self) -> str:
        return f"TraceEstimate({float(self)!r}, stderr={self.stderr:.3g}, samples={self.samples})"


def _check(model: nn.Module, loss_fn: object, data: object, params: Sequence[nn.Parameter] | None,
           generator: object) -> tuple[torch.Tensor, torch.Tensor, list[nn.Parameter]]:
    """The checks every measurement makes: a module, a callable loss, parameters of ``model`` (finite),
    data the model and loss accept (see ``labkit.sam._inputs.check_data``), a generator or None."""
    check_module(model)
    check_loss_fn(loss_fn)
    check_generator(generator)
    chosen = resolve_params(model, params)
    check_finite_params(list(model.parameters()))
    x, y = check_data(model, data, loss_fn=loss_fn)
    return x, y, chosen


def hessian_top_eigenvalue(
    model: nn.Module,
    loss_fn: LossFn,
    data: tuple[torch.Tensor, torch.Tensor],
    *,
    params: Sequence[nn.Parameter] | None = None,
    tol: float = 1e-4,
    generator: torch.Generator | None = None,
) -> TopEigenvalue:
    """The largest Hessian eigenvalue ``lambda_max`` of the mean loss (Lanczos via ``labkit.hessian``).

    The quantity SAM is meant to shrink (Foret et al., 2021) and that gradient descent drives to
    ``2 / lr`` at the edge of stability (Cohen et al., 2021). Returns a :class:`TopEigenvalue` (a float
    with ``.converged`` and ``.residual``) and warns when the solver did not converge.
    """
    tol = checks.number(tol, "tol", low=0, low_open=True)
    x, y, chosen = _check(model, loss_fn, data, params, generator)
    with preserve_model(model):
        op = HessianOperator(model, loss_fn, (x, y), params=chosen)
        result = top_eigenvalues(op, k=1, tol=tol, generator=generator)
    residual = float(result.residuals[0])
    if not result.converged:
        warnings.warn(f"top Hessian eigenvalue did not converge (residual {residual:.2e})",
                      RuntimeWarning, stacklevel=2)
    return TopEigenvalue(float(result.eigenvalues[0]), converged=bool(result.converged), residual=residual)


def hessian_trace(
    model: nn.Module,
    loss_fn: LossFn,
    data: tuple[torch.Tensor, torch.Tensor],
    *,
    params: Sequence[nn.Parameter] | None = None,
    samples: int = 100,
    generator: torch.Generator | None = None,
) -> TraceEstimate:
    """Hutchinson estimate of ``trace(H)`` of the mean loss with ``samples`` Rademacher probes
    (via ``labkit.hessian.hutchinson_trace``): a :class:`TraceEstimate`, a float with ``.stderr``."""
    samples = checks.integer(samples, "samples", low=2)
    x, y, chosen = _check(model, loss_fn, data, params, generator)
    with preserve_model(model):
        op = HessianOperator(model, loss_fn, (x, y), params=chosen)
        result = hutchinson_trace(op, samples=samples, generator=generator)
    return TraceEstimate(float(result.estimate), stderr=float(result.stderr), samples=int(result.samples))


def _norm(ts: list[torch.Tensor]) -> torch.Tensor:
    dev = ts[0].device
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t).to(dev) for t in ts]))


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
            grads = zeros_if_none(torch.autograd.grad(loss, params, allow_unused=True), params)
        if scale is not None:  # gradient with respect to eta
            grads = [g * t for g, t in zip(grads, scale, strict=True)]
        return float(loss.detach()), grads

    with torch.no_grad():
        for p, w in zip(params, w0, strict=True):
            p.copy_(w)
    base, grads = loss_and_grad()
    g_norm = _norm(grads)
    if not math.isfinite(base):
        raise ValueError(f"loss_fn is {base} at the unperturbed weights on data: the loss must be finite")
    if not math.isfinite(float(g_norm)):
        raise ValueError("the loss gradient at the unperturbed weights is not finite (NaN or inf) on data")
    if float(g_norm) > 0:
        eta = [g * (rho / g_norm) for g in grads]  # start where SAM's first step goes
    else:  # at an exact stationary point: a seeded random direction (the generator rule of labkit.autograd)
        eta = [randn(p.shape, generator=generator, device=p.device, dtype=p.dtype) for p in params]
        eta = [e * (rho / _norm(eta)) for e in eta]
    best = 0.0
    for _ in range(steps):
        set_delta(eta)
        value, grads = loss_and_grad()
        g_norm = _norm(grads)
        _check_perturbed(value, g_norm, rho)
        best = max(best, value - base)
        if float(g_norm) == 0:
            break
        eta = [e + g * (step_size / g_norm) for e, g in zip(eta, grads, strict=True)]
        e_norm = _norm(eta)
        if float(e_norm) > rho:
            eta = [e * (rho / e_norm) for e in eta]
    set_delta(eta)
    with torch.no_grad():
        value = float(loss_fn(model(x), y))
    _check_perturbed(value, None, rho)
    return max(best, value - base)


def _check_perturbed(value: float, g_norm: torch.Tensor | None, rho: float) -> None:
    """A NaN/inf loss (or gradient) inside the ball would make ``max`` skip it silently: refuse it."""
    if not math.isfinite(value) or (g_norm is not None and not math.isfinite(float(g_norm))):
        raise ValueError(f"the loss (or its gradient) is not finite at a point of the ball of radius rho={rho}: "
                         "the worst case is unbounded there; use a smaller rho")


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
    The model runs in eval mode; its parameters, gradients, buffers and every submodule's mode are restored.
    """
    rho = checks.number(rho, "rho", low=0)
    adaptive = check_bool(adaptive, "adaptive")
    eta = checks.number(eta, "eta", low=0)
    steps = checks.positive_int(steps, "steps")
    batch_size = optional_positive_int(batch_size, "batch_size")
    step_size = optional_number(step_size, "step_size", low=0, low_open=True)
    step_size = rho if step_size is None else step_size
    x, y, chosen = _check(model, loss_fn, data, params, generator)
    if rho == 0:
        return 0.0
    w0 = [p.detach().clone() for p in chosen]
    scale = [w.abs() + eta for w in w0] if adaptive else None
    m = len(x) if batch_size is None else min(batch_size, len(x))
    values = []
    with preserve_model(model), train_mode(model, False):
        for start in range(0, len(x) - m + 1, m):
            xb, yb = x[start:start + m], y[start:start + m]
            values.append(_ascent(model, loss_fn, xb, yb, chosen, w0, scale, rho, steps, step_size, generator))
    return sum(values) / len(values)
