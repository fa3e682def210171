"""Class activation maps from gradients at a chosen layer: Grad-CAM, Grad-CAM++, Smooth Grad-CAM++,
XGrad-CAM and NormGrad.

Every function is ``f(model, x, target, *, layer, ...)`` with ``layer`` a module of ``model`` whose
output is a feature map (N, K, h, w). Maps are signed only where the method is (the ReLU is an option),
never min-max scaled, shaped (N, H, W) at the input's resolution (bilinear upsampling) or (N, h, w)
with ``upsample=False``. The caller's ``param.grad`` is never touched and module modes are restored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from labkit import checks
from labkit.attributions._common import (
    check_callable,
    check_generator,
    check_image_input,
    check_nonneg_float,
    check_positive_int,
    check_target,
    evaluating,
    finite_result,
    target_score,
)
from labkit.attributions.gradients import noise_scale
from labkit.autograd import randn

GRADCAM_PP_DERIVATIVES = ("closed_form", "exact")


def _check_layer(model: object, layer: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module for layer-based maps, got {type(model).__name__}")
    if not isinstance(layer, nn.Module):
        raise TypeError(f"layer must be an nn.Module (a submodule of model), got {type(layer).__name__}")
    if not any(m is layer for m in model.modules()):
        raise ValueError(f"layer {type(layer).__name__} is not a submodule of the model")
    return layer


@contextmanager
def _capture(layer: nn.Module, replace: torch.Tensor | None = None) -> Iterator[list[torch.Tensor]]:
    """Record the layer's output (or substitute ``replace`` for it) during the forward pass."""
    store: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inp: object, out: object) -> torch.Tensor | None:
        if not isinstance(out, torch.Tensor) or out.ndim != 4:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"layer output must be a feature map of shape (N, K, h, w), got {shape}")
        if store:
            raise ValueError("layer is called more than once in the forward pass; pick a module used once")
        if replace is not None:
            store.append(replace)
            return replace
        store.append(out)
        return None

    handle = layer.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


class LayerGrad(NamedTuple):
    """A layer's ``activations`` A (N, K, h, w), the ``gradient`` dS/dA of the summed target score and the
    (N,) target ``scores`` (unpacks as ``a, g, s``)."""

    activations: torch.Tensor
    gradient: torch.Tensor
    scores: torch.Tensor


def _checked(model: object, x: object, target: object, layer: object) -> tuple[torch.Tensor, torch.Tensor]:
    """The entry checks of every map: a module and one of its layers, an image batch, class indices."""
    _check_layer(model, layer)
    x = check_image_input(model, x)
    return x, check_target(target, x.shape[0], x.device)


def _act_grad(model: nn.Module, x: torch.Tensor, t: torch.Tensor, layer: nn.Module) -> LayerGrad:
    """:func:`layer_activation_and_grad` on checked arguments, inside :func:`evaluating`."""
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)  # keeps a graph even when parameters are frozen
        with _capture(layer) as store:
            score = target_score(model, xr, t)
        if not store:
            raise ValueError("layer was not called in the forward pass of the model")
        a = store[0]
        (g,) = torch.autograd.grad(score.sum(), a)
    return LayerGrad(a.detach(), g, score.detach())


def layer_activation_and_grad(
    model: nn.Module, x: torch.Tensor, target: int | torch.Tensor, *, layer: nn.Module
) -> LayerGrad:
    """Activations ``A`` (N, K, h, w) of ``layer``, the gradient dS/dA of the summed target score and
    the (N,) scores, as a :class:`LayerGrad`. Only ``A`` is differentiated, so parameter gradients are
    never formed or stored. ``x`` is an image batch (N, C, H, W) of the model's dtype."""
    x, t = _checked(model, x, target, layer)
    with evaluating(model):
        out = _act_grad(model, x, t, layer)
    for part, value in zip(out._fields, out, strict=True):
        finite_result(value, part)
    return out


def _flags(relu: object, upsample: object) -> None:
    for name, value in (("relu", relu), ("upsample", upsample)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be a bool, got {type(value).__name__}")


def _finish(cam: torch.Tensor, x: torch.Tensor, relu: bool, upsample: bool, context: str = "") -> torch.Tensor:
    finite_result(cam, "maps", context=context)
    if relu:
        cam = F.relu(cam)
    if upsample and x.ndim == 4 and cam.shape[-2:] != x.shape[-2:]:
        cam = F.interpolate(
            cam.unsqueeze(1), size=x.shape[-2:], mode="bilinear", align_corners=False
        ).squeeze(1)
    return cam


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    target: int | torch.Tensor,
    *,
    layer: nn.Module,
    relu: bool = True,
    upsample: bool = True,
) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., 2017, https://arxiv.org/abs/1610.02391):
    ``relu(sum_k w_k A_k)`` with ``w_k`` the spatial mean of dS/dA_k."""
    _flags(relu, upsample)
    a, g, _ = layer_activation_and_grad(model, x, target, layer=layer)
    w = g.mean(dim=(2, 3), keepdim=True)
    return _finish((w * a).sum(1), x, relu, upsample)


def _pp_alpha(a: torch.Tensor, d1: torch.Tensor, d2: torch.Tensor, d3: torch.Tensor) -> torch.Tensor:
    """alpha_kij = d2 / (2 d2 + sum_ab A_kab * d3), zero where the denominator vanishes (paper eq. 10)."""
    denom = 2 * d2 + a.sum(dim=(2, 3), keepdim=True) * d3
    safe = torch.where(denom != 0, denom, torch.ones_like(denom))
    return torch.where(denom != 0, d2 / safe, torch.zeros_like(d2))


def _score_diag_derivatives(
    model: nn.Module, x: torch.Tensor, t: torch.Tensor, layer: nn.Module, a: torch.Tensor, vmap_chunk: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact S_i, S_ii, S_iii (first, diagonal second and third derivatives of each example's score
    w.r.t. each entry of its layer activation), by nested forward-mode derivatives along each basis
    direction (torch.func; cost grows with the number of activation entries: tiny models only)."""
    from torch.func import jvp, vmap

    def score_of(act: torch.Tensor) -> torch.Tensor:
        with _capture(layer, replace=act):
            return target_score(model, x, t).sum()  # examples are independent: the sum separates them

    def along(e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        def f0(s: torch.Tensor) -> torch.Tensor:
            return score_of(a + s * e)

        def f1(s: torch.Tensor) -> torch.Tensor:
            return jvp(f0, (s,), (torch.ones_like(s),))[1]

        def f2(s: torch.Tensor) -> torch.Tensor:
            return jvp(f1, (s,), (torch.ones_like(s),))[1]

        zero = torch.zeros((), dtype=a.dtype, device=a.device)
        d1 = f1(zero)
        d2, d3 = jvp(f2, (zero,), (torch.ones_like(zero),))
        return d1, d2, d3

    per_example = a[0].numel()  # a holds a single example
    basis = torch.eye(per_example, dtype=a.dtype, device=a.device).reshape(per_example, *a.shape)
    return vmap(along, chunk_size=vmap_chunk)(basis)


def _exact_pp_terms(
    model: nn.Module, x: torch.Tensor, target: int | torch.Tensor, layer: nn.Module, vmap_chunk: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x, t = _checked(model, x, target, layer)
    n = x.shape[0]
    a_list, d1s, d2s, d3s = [], [], [], []
    with evaluating(model):
        for i in range(n):  # one example at a time keeps the directional derivatives separate
            xi, ti = x[i : i + 1].detach(), t[i : i + 1]
            with torch.no_grad(), _capture(layer) as store:
                target_score(model, xi, ti)
            if not store:
                raise ValueError("layer was not called in the forward pass of the model")
            ai = store[0].detach()
            d1, d2, d3 = _score_diag_derivatives(model, xi, ti, layer, ai, vmap_chunk)
            a_list.append(ai[0])
            d1s.append(d1.reshape(ai.shape[1:]))
            d2s.append(d2.reshape(ai.shape[1:]))
            d3s.append(d3.reshape(ai.shape[1:]))
    return tuple(torch.stack(v).detach() for v in (a_list, d1s, d2s, d3s))  # type: ignore[return-value]


def grad_cam_pp(
    model: nn.Module,
    x: torch.Tensor,
    target: int | torch.Tensor,
    *,
    layer: nn.Module,
    derivatives: str = "closed_form",
    relu: bool = True,
    upsample: bool = True,
    vmap_chunk: int = 256,
) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhyay et al., 2018, https://arxiv.org/abs/1710.11063).

    ``w_k = sum_ij alpha_kij relu(dS/dA_kij)``, ``alpha = Y'' / (2 Y'' + sum_ab A_kab Y''')`` for the
    exponentiated score ``Y = exp(S)``; the map is ``relu(sum_k w_k A_k)``.

    ``derivatives="closed_form"`` is the paper's formula (and what pytorch-grad-cam ships): it assumes
    ``S`` is piecewise linear in ``A`` so that ``Y''/Y = (S')^2`` and ``Y'''/Y = (S')^3``.
    ``derivatives="exact"`` uses the true derivatives of ``Y = exp(S)``:
    ``Y''/Y = S'^2 + S''`` and ``Y'''/Y = S'^3 + 3 S' S'' + S'''`` with the diagonal second and third
    derivatives of the actual score computed by forward-mode autodiff (costly: one nested JVP per
    activation entry, per example). Both agree when everything after ``layer`` is piecewise linear.
    """
    checks.choice(derivatives, "derivatives", GRADCAM_PP_DERIVATIVES)
    check_positive_int(vmap_chunk, "vmap_chunk")
    _flags(relu, upsample)
    if derivatives == "closed_form":
        a, g, _ = layer_activation_and_grad(model, x, target, layer=layer)
        d1, d2, d3 = g, g.pow(2), g.pow(3)
    else:
        a, s1, s2, s3 = _exact_pp_terms(model, x, target, layer, vmap_chunk)
        d1, d2, d3 = s1, s1.pow(2) + s2, s1.pow(3) + 3 * s1 * s2 + s3
    alpha = _pp_alpha(a, d1, d2, d3)
    w = (alpha * F.relu(d1)).sum(dim=(2, 3), keepdim=True)
    return _finish((w * a).sum(1), x, relu, upsample)


def smooth_grad_cam_pp(
    model: nn.Module,
    x: torch.Tensor,
    target: int | torch.Tensor,
    *,
    layer: nn.Module,
    samples: int = 25,
    noise: float = 0.15,
    generator: torch.Generator | None = None,
    relu: bool = True,
    upsample: bool = True,
) -> torch.Tensor:
    """Smooth Grad-CAM++ (Omeiza et al., 2019, https://arxiv.org/abs/1908.01224).

    Grad-CAM++ (closed form) with the 1st, 2nd and 3rd powers of dS/dA each averaged over ``samples``
    noisy inputs ``x + N(0, sigma_i^2)``, ``sigma_i = noise * (max(x_i) - min(x_i))``; the weights are
    applied to the clean input's activations. Noise draws are one ``randn(x.shape)`` per sample.
    """
    x, t = _checked(model, x, target, layer)
    samples = check_positive_int(samples, "samples")
    noise = check_nonneg_float(noise, "noise")
    gen = check_generator(generator, x.device)
    _flags(relu, upsample)
    x = x.detach()
    sigma = noise_scale(x, noise)
    with evaluating(model):
        a = _act_grad(model, x, t, layer).activations
        d1 = torch.zeros_like(a)
        d2 = torch.zeros_like(a)
        d3 = torch.zeros_like(a)
        for _ in range(samples):
            eps = randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
            g = _act_grad(model, x + sigma * eps, t, layer).gradient
            d1 += g
            d2 += g.pow(2)
            d3 += g.pow(3)
    d1, d2, d3 = d1 / samples, d2 / samples, d3 / samples
    alpha = _pp_alpha(a, d1, d2, d3)
    w = (alpha * F.relu(d1)).sum(dim=(2, 3), keepdim=True)
    return _finish((w * a).sum(1), x, relu, upsample, f" at x plus noise (noise={noise})")


def xgrad_cam(
    model: nn.Module,
    x: torch.Tensor,
    target: int | torch.Tensor,
    *,
    layer: nn.Module,
    relu: bool = True,
    upsample: bool = True,
) -> torch.Tensor:
    """XGrad-CAM (Fu et al., 2020, *Axiom-based Grad-CAM*, https://arxiv.org/abs/2008.02312):
    ``w_k = sum_ij (A_kij / sum_ab A_kab) dS/dA_kij`` (zero where ``sum_ab A_kab = 0``)."""
    _flags(relu, upsample)
    a, g, _ = layer_activation_and_grad(model, x, target, layer=layer)
    mass = a.sum(dim=(2, 3), keepdim=True)
    safe = torch.where(mass != 0, mass, torch.ones_like(mass))
    w = torch.where(mass != 0, (a * g).sum(dim=(2, 3), keepdim=True) / safe, torch.zeros_like(mass))
    return _finish((w * a).sum(1), x, relu, upsample)


def norm_grad(
    model: nn.Module,
    x: torch.Tensor,
    target: int | torch.Tensor,
    *,
    layer: nn.Module,
    upsample: bool = True,
) -> torch.Tensor:
    """NormGrad (Rebuffi et al., 2020, *There and Back Again*, https://arxiv.org/abs/2004.02866),
    single-layer "virtual identity" form: at each location the Frobenius norm of the outer product of
    the activation and gradient vectors, ``||A_:ij|| * ||dS/dA_:ij||`` (non-negative)."""
    _flags(False, upsample)
    a, g, _ = layer_activation_and_grad(model, x, target, layer=layer)
    return _finish(a.norm(dim=1) * g.norm(dim=1), x, False, upsample)


def conservation_error(
    model: nn.Module,
    x: torch.Tensor,
    target: int | torch.Tensor,
    *,
    layer: nn.Module,
    method: Callable[..., torch.Tensor],
) -> torch.Tensor:
    """XGrad-CAM's conservation axiom residual ``|S - sum_ij L_ij| / |S|`` per example, with ``L`` the
    method's map before the ReLU at layer resolution (``method`` is grad_cam or xgrad_cam)."""
    x, t = _checked(model, x, target, layer)
    check_callable(method, "method", (model, x, t), {"layer": layer, "relu": False, "upsample": False},
                   "method(model, x, target, *, layer, relu, upsample) such as grad_cam or xgrad_cam")
    cam = method(model, x, t, layer=layer, relu=False, upsample=False)
    if not isinstance(cam, torch.Tensor) or cam.ndim != 3 or cam.shape[0] != x.shape[0]:
        shape = tuple(cam.shape) if isinstance(cam, torch.Tensor) else type(cam).__name__
        raise ValueError(f"method must return maps of shape (N, h, w) with N={x.shape[0]}, got {shape}")
    with torch.no_grad(), evaluating(model):
        s = target_score(model, x, t)
    return finite_result((s - cam.sum(dim=(1, 2))).abs() / s.abs().clamp_min(1e-12), "scores",
                         source="model or method")
