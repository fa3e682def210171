"""Input-gradient attributions: saliency, input x gradient, the SmoothGrad family, Integrated Gradients.

All functions take ``model`` returning logits (N, C), an input batch ``x`` (N, ...) and a ``target``
(int or LongTensor (N,)), and return signed, unscaled tensors shaped like ``x`` on ``x``'s device.
Gradients are taken of the summed target score with the input as the only leaf, so the caller's
``param.grad`` is never touched; the model is evaluated in eval mode and its modes are restored.
"""

from __future__ import annotations

import typing
import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from labkit import checks
from labkit.attributions._common import (
    PointGrads,
    check_generator,
    check_input,
    check_model_input,
    check_nonneg_float,
    check_number_or_tensor,
    check_positive_int,
    check_target,
    chunks,
    evaluating,
    finite_result,
    input_grad,
    resolve_chunk,
    target_score,
)
from labkit.autograd import randn

Model = Callable[[torch.Tensor], torch.Tensor]

SMOOTHGRAD_KINDS = ("mean", "square", "var")
IG_RULES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")


def saliency(model: Model, x: torch.Tensor, target: int | torch.Tensor, *, abs: bool = False) -> torch.Tensor:
    """Gradient of the target logit w.r.t. the input (Simonyan, Vedaldi & Zisserman, 2014,
    *Deep Inside Convolutional Networks*, https://arxiv.org/abs/1312.6034).

    Signed by default; ``abs=True`` gives the paper's |gradient| (Captum's default).
    """
    x = check_model_input(model, x)
    t = check_target(target, x.shape[0], x.device)
    if not isinstance(abs, bool):
        raise TypeError(f"abs must be a bool, got {type(abs).__name__}")
    with evaluating(model):
        g, _ = input_grad(model, x, t)
    finite_result(g, "gradients")
    return g.abs() if abs else g


def input_x_gradient(model: Model, x: torch.Tensor, target: int | torch.Tensor) -> torch.Tensor:
    """Input times gradient (Shrikumar et al., 2016, https://arxiv.org/abs/1605.01713)."""
    g = saliency(model, x, target)  # checks x
    return x.detach() * g


def noise_scale(x: torch.Tensor, noise: float) -> torch.Tensor:
    """Per-example noise std ``noise * (max(x_i) - min(x_i))``, shaped (N, 1, ..., 1) for broadcasting.
    ``noise`` is a finite number >= 0; ``x`` a finite floating batch (N, ...)."""
    x = check_input(x)
    noise = check_nonneg_float(noise, "noise")
    flat = x.detach().reshape(x.shape[0], -1)
    spread = flat.max(dim=1).values - flat.min(dim=1).values
    sigma = noise * spread
    if not bool(torch.isfinite(sigma).all()):
        raise ValueError(f"noise * (max(x_i) - min(x_i)) overflows {x.dtype}: rescale x or lower noise")
    return sigma.reshape(-1, *([1] * (x.ndim - 1)))


def smoothgrad(
    model: Model,
    x: torch.Tensor,
    target: int | torch.Tensor,
    *,
    samples: int = 50,
    noise: float = 0.15,
    kind: str = "mean",
    generator: torch.Generator | None = None,
    chunk_size: int | str = "auto",
) -> torch.Tensor:
    """SmoothGrad (Smilkov et al., 2017, https://arxiv.org/abs/1706.03825) and its variants.

    Averages input gradients at ``samples`` noisy copies ``x + eps``, ``eps ~ N(0, sigma_i^2)`` with
    ``sigma_i = noise * (max(x_i) - min(x_i))`` per example, the paper's noise level relative to the
    input's range. ``kind``: ``"mean"`` (SmoothGrad), ``"square"`` (mean of squared gradients,
    SmoothGrad^2 of Hooker et al. 2019) or ``"var"`` (VarGrad, Adebayo et al. 2018: population variance).
    Noise for sample ``s`` is drawn as one ``randn`` of shape ``x.shape`` from ``generator`` in order
    s = 0, 1, ..., so every ``chunk_size`` uses the same noise and gives the same result up to float
    rounding (the gradients are summed in another grouping: ``"auto"`` and ``1`` may differ in the last
    bits of float32).
    """
    x = check_model_input(model, x)
    t = check_target(target, x.shape[0], x.device)
    samples = check_positive_int(samples, "samples")
    noise = check_nonneg_float(noise, "noise")
    checks.choice(kind, "kind", SMOOTHGRAD_KINDS)
    gen = check_generator(generator, x.device)
    n = x.shape[0]
    rows = resolve_chunk(chunk_size, x[0].numel())
    x = x.detach()
    sigma = noise_scale(x, noise)
    total = torch.zeros_like(x)
    total_sq = torch.zeros_like(x) if kind != "mean" else None
    grad = PointGrads(model, x)
    with evaluating(model):
        for p0, p1, e0, e1 in chunks(samples, n, rows):
            if e0 == 0 or p1 - p0 > 1:
                # one draw of the full batch per sample index, in order (chunk-size independent)
                eps = torch.stack(
                    [
                        randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
                        for _ in range(p0, p1)
                    ]
                )
            k = p1 - p0
            pts = x[e0:e1].unsqueeze(0) + sigma[e0:e1].unsqueeze(0) * eps[:, e0:e1]
            g = grad(pts.reshape(k * (e1 - e0), *x.shape[1:]), t[e0:e1].repeat(k))
            g = g.reshape(k, e1 - e0, *x.shape[1:])
            total[e0:e1] += g.sum(0)
            if total_sq is not None:
                total_sq[e0:e1] += g.square().sum(0)
    mean = total / samples
    if kind == "mean":
        return finite_result(mean, "gradients", context=f" at x plus noise (noise={noise})")
    mean_sq = finite_result(total_sq / samples, "gradients", context=f" at x plus noise (noise={noise})")
    if kind == "square":
        return mean_sq
    return (mean_sq - mean.square()).clamp_min(0.0)


class Quadrature(NamedTuple):
    """Path positions ``alphas`` in [0, 1] and their quadrature ``weights`` (unpacks as ``a, w``)."""

    alphas: torch.Tensor
    weights: torch.Tensor


class IGResult(NamedTuple):
    """Integrated Gradients with its completeness gap (unpacks as ``attr, delta``).

    ``attributions`` is shaped like the input; ``delta`` (N,) is ``sum_i IG_i - (F(x) - F(b))``.
    """

    attributions: torch.Tensor
    delta: torch.Tensor


def ig_points(steps: int, rule: str, *, dtype: torch.dtype = torch.float64) -> Quadrature:
    """Path positions ``alpha`` in [0, 1] and quadrature weights for Integrated Gradients.

    Gauss-Legendre nodes mapped from [-1, 1]; Riemann left/right/middle use ``1/steps`` weights;
    trapezoid uses ``steps`` equally spaced points including both ends (Captum's conventions).
    """
    steps = check_positive_int(steps, "steps")
    checks.choice(rule, "rule", IG_RULES)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    if rule == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return Quadrature(torch.tensor(0.5 * (nodes + 1), dtype=dtype), torch.tensor(0.5 * weights, dtype=dtype))
    i = torch.arange(steps, dtype=dtype)
    w = torch.full((steps,), 1.0 / steps, dtype=dtype)
    if rule == "riemann_left":
        return Quadrature(i / steps, w)
    if rule == "riemann_right":
        return Quadrature((i + 1) / steps, w)
    if rule == "riemann_middle":
        return Quadrature((i + 0.5) / steps, w)
    if steps < 2:
        raise ValueError("steps must be >= 2 for rule='riemann_trapezoid'")
    w = torch.full((steps,), 1.0 / (steps - 1), dtype=dtype)
    w[0] /= 2
    w[-1] /= 2
    return Quadrature(torch.linspace(0, 1, steps, dtype=dtype), w)


def _baseline(baseline: float | torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    if baseline is None:
        return torch.zeros_like(x)
    return check_number_or_tensor(baseline, x, "baseline")


def _integrated_gradients(
    model: Model,
    x: torch.Tensor,
    target: int | torch.Tensor,
    baseline: float | torch.Tensor | None,
    steps: int,
    rule: str,
    chunk_size: int | str,
    with_delta: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    x = check_model_input(model, x)
    t = check_target(target, x.shape[0], x.device)
    alphas, weights = ig_points(steps, rule)
    alphas, weights = alphas.to(x.device, x.dtype), weights.to(x.device, x.dtype)
    b = _baseline(baseline, x.detach())
    x = x.detach()
    diff = x - b
    n = x.shape[0]
    rows = resolve_chunk(chunk_size, x[0].numel())
    total = torch.zeros_like(x)
    view = (-1,) + (1,) * x.ndim
    grad = PointGrads(model, x)
    with evaluating(model):
        for p0, p1, e0, e1 in chunks(len(alphas), n, rows):
            k = p1 - p0
            pts = b[e0:e1].unsqueeze(0) + alphas[p0:p1].reshape(view) * diff[e0:e1].unsqueeze(0)
            g = grad(pts.reshape(k * (e1 - e0), *x.shape[1:]), t[e0:e1].repeat(k))
            total[e0:e1] += (g.reshape(k, e1 - e0, *x.shape[1:]) * weights[p0:p1].reshape(view)).sum(0)
        attr = finite_result(diff * total, context=" on the path from baseline to x")
        if not with_delta:
            return attr, None
        with torch.no_grad():
            ends = target_score(model, torch.cat([x, b]), t.repeat(2))
    return attr, finite_result(attr.reshape(n, -1).sum(1) - (ends[:n] - ends[n:]), "scores",
                               context=" at x or baseline")


def integrated_gradients(
    model: Model,
    x: torch.Tensor,
    target: int | torch.Tensor,
    *,
    baseline: float | torch.Tensor | None = None,
    steps: int = 50,
    rule: str = "gausslegendre",
    chunk_size: int | str = "auto",
    return_delta: bool = False,
) -> torch.Tensor | IGResult:
    """Integrated Gradients (Sundararajan, Taly & Yan, 2017, https://arxiv.org/abs/1703.01365).

    ``IG_i = (x_i - b_i) * int_0^1 dF/dx_i(b + a (x - b)) da`` by the quadrature ``rule``
    (see :func:`ig_points`); ``baseline`` defaults to zeros and may be a number, a tensor shaped like
    ``x`` or like one example. Returns the attributions, shaped like ``x``.

    For the completeness gap use :func:`integrated_gradients_with_delta`. ``return_delta=True`` still
    works (deprecated): it returns that function's :class:`IGResult`, which unpacks as ``attr, delta``.
    """
    if not isinstance(return_delta, bool):
        raise TypeError(f"return_delta must be a bool, got {type(return_delta).__name__}")
    if return_delta:
        warnings.warn("integrated_gradients(..., return_delta=True) is deprecated: call "
                      "integrated_gradients_with_delta(...), which returns an IGResult (attributions, delta)",
                      DeprecationWarning, stacklevel=2)
        return integrated_gradients_with_delta(model, x, target, baseline=baseline, steps=steps, rule=rule,
                                               chunk_size=chunk_size)
    return _integrated_gradients(model, x, target, baseline, steps, rule, chunk_size, with_delta=False)[0]


def integrated_gradients_with_delta(
    model: Model,
    x: torch.Tensor,
    target: int | torch.Tensor,
    *,
    baseline: float | torch.Tensor | None = None,
    steps: int = 50,
    rule: str = "gausslegendre",
    chunk_size: int | str = "auto",
) -> IGResult:
    """Integrated Gradients and its completeness gap per example, ``delta = sum_i IG_i - (F(x) - F(b))``
    (shape (N,)): the paper's check that enough steps were taken (Sundararajan et al., 2017: within 5%
    with 20-300 steps). Options as :func:`integrated_gradients`."""
    attr, delta = _integrated_gradients(model, x, target, baseline, steps, rule, chunk_size, with_delta=True)
    return IGResult(attr, typing.cast(torch.Tensor, delta))
