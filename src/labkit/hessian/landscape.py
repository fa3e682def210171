"""Loss landscapes along directions in parameter space (Li, Xu, Taylor, Studer and Goldstein,
*Visualizing the Loss Landscape of Neural Nets*, NeurIPS 2018, arXiv:1712.09913).

Directions are flat vectors over the model's trainable parameters (the same layout as
``HessianOperator`` and the eigenvectors of ``top_eigenvalues``). Surfaces are evaluated under
``torch.no_grad`` with ``torch.func.functional_call`` on shifted copies of the parameters and copies of the
buffers: the caller's parameters are never written (an existing ``HessianOperator`` on the model stays
valid), and a train-mode surface uses batch statistics without updating BatchNorm running statistics.
Grid values, directions and data must be finite; inputs in the model's dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from labkit import checks
from labkit.autograd import check_module, flatten, preserve_model, randn, resolve_params, unflatten
from labkit.autograd import train_mode as _mode
from labkit.hessian import _inputs
from labkit.hessian.operator import LossFn, checked_loss


@dataclass(frozen=True)
class Surface1D:
    """Losses ``losses[i]`` at ``theta + alphas[i] * direction``."""

    alphas: torch.Tensor
    losses: torch.Tensor


@dataclass(frozen=True)
class Surface2D:
    """Losses ``losses[i, j]`` at ``theta + alphas[i] * d1 + betas[j] * d2``."""

    alphas: torch.Tensor
    betas: torch.Tensor
    losses: torch.Tensor


def random_direction(
    model: nn.Module,
    *,
    params: Sequence[nn.Parameter] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A raw Gaussian direction (one flat vector, no normalisation): the baseline Li et al. criticise."""
    chosen = resolve_params(model, params)
    n = sum(p.numel() for p in chosen)
    return randn((n,), generator=generator, dtype=torch.float32).to(device=chosen[0].device, dtype=chosen[0].dtype)


def filter_normalized_direction(
    model: nn.Module,
    *,
    params: Sequence[nn.Parameter] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A random Gaussian direction with each filter rescaled to the norm of the matching weight filter.

    A "filter" is one output unit: a row of a linear weight, one output channel of a conv kernel.
    Parameters with at most one dimension (biases, normalisation scales/shifts) get zero direction,
    the "ignore biasbn" choice of Li et al. (2018), so the direction is invariant to rescaling the
    weights of a ReLU layer: ``d_ij <- d_ij / ||d_i|| * ||theta_i||``.
    """
    chosen = resolve_params(model, params)
    parts = []
    for p in chosen:
        d = randn(p.shape, generator=generator, dtype=torch.float32).to(device=p.device, dtype=p.dtype)
        if p.dim() <= 1:
            d = torch.zeros_like(p)
        else:
            w = p.detach().reshape(p.shape[0], -1)
            dd = d.reshape(p.shape[0], -1)
            dd = dd * (w.norm(dim=1, keepdim=True) / dd.norm(dim=1, keepdim=True).clamp_min(1e-12))
            d = dd.reshape(p.shape)
        parts.append(d)
    return flatten(parts)


def interpolation_direction(model_a: nn.Module, model_b: nn.Module) -> torch.Tensor:
    """The flat direction ``theta_b - theta_a`` between two models of the same architecture
    (``alpha = 1`` on ``model_a``'s surface reaches ``model_b``; Goodfellow et al. 2015), in ``model_a``'s dtype."""
    check_module(model_a, "model_a")
    check_module(model_b, "model_b")
    pa = resolve_params(model_a, None)
    pb = resolve_params(model_b, None)
    if [p.shape for p in pa] != [p.shape for p in pb]:
        raise ValueError("model_a and model_b must have the same trainable parameter shapes")
    _inputs.finite_params(model_a, pa, "model_a")
    _inputs.finite_params(model_b, pb, "model_b")
    return flatten([b.detach().to(device=a.device, dtype=a.dtype) - a.detach() for a, b in zip(pa, pb, strict=True)])


def _check_direction(d: Any, n: int, name: str) -> torch.Tensor:
    if not isinstance(d, torch.Tensor):
        raise TypeError(f"{name} must be a flat tensor, got {type(d).__name__}")
    if d.ndim != 1 or d.numel() != n:
        raise ValueError(f"{name} must be a flat vector of length {n} (number of parameters), got {tuple(d.shape)}")
    if d.dtype == torch.bool or d.is_complex():
        raise TypeError(f"{name} must be a real vector, got dtype {d.dtype}")
    return checks.tensor(d, name).detach()


def _grid(values: Any, name: str) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        checks.tensor(values, name)
    try:
        t = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"{name} must be a sequence or tensor of real numbers, got {type(values).__name__}") from exc
    if t.numel() == 0:
        raise ValueError(f"{name} must hold at least one value")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite values: {t.tolist()}")
    return t


def _mean_loss(model: nn.Module, loss_fn: LossFn, batches: list, device: torch.device,
               tensors: dict[str, torch.Tensor]) -> float:
    total = sum(len(x) for x, _ in batches)
    out = 0.0
    for x, y in batches:
        outputs = _inputs.run_model(model, x.to(device), tensors=tensors)
        out += len(x) / total * float(checked_loss(loss_fn, outputs, y.to(device)))
    return out


def loss_surface_2d(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    d1: torch.Tensor,
    d2: torch.Tensor | None = None,
    *,
    alphas: Any = None,
    betas: Any = None,
    params: Sequence[nn.Parameter] | None = None,
    train_mode: bool = False,
) -> Surface2D:
    """Mean loss on the plane ``theta + a d1 + b d2`` over the grid ``alphas x betas``
    (default ``linspace(-1, 1, 21)`` each). The model's parameters and buffers are never written."""
    chosen = resolve_params(model, params)
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(outputs, targets), got {type(loss_fn).__name__}")
    if not isinstance(train_mode, bool):
        raise TypeError(f"train_mode must be a bool, got {type(train_mode).__name__}")
    _inputs.finite_params(model, chosen)
    batches = _inputs.batches(data, model)
    n = sum(p.numel() for p in chosen)
    d1 = _check_direction(d1, n, "d1")
    d2 = None if d2 is None else _check_direction(d2, n, "d2")
    alphas = _grid(torch.linspace(-1, 1, 21) if alphas is None else alphas, "alphas")
    betas = _grid([0.0] if d2 is None else (torch.linspace(-1, 1, 21) if betas is None else betas), "betas")
    device = chosen[0].device
    names = {id(p): name for name, p in model.named_parameters()}
    keys = [names[id(p)] for p in chosen]
    saved = [p.detach() for p in chosen]
    dirs1 = [t.to(p.dtype) for t, p in zip(_split(d1, chosen), chosen, strict=True)]
    dirs2 = None if d2 is None else [t.to(p.dtype) for t, p in zip(_split(d2, chosen), chosen, strict=True)]
    losses = torch.zeros(len(alphas), len(betas), dtype=torch.float64)
    # shifted copies of the parameters go in through functional_call: nothing of the caller's is written; the
    # core's guard still restores modes, .grad and buffers should a hook of the model change them
    with preserve_model(model, params=False), torch.no_grad(), _mode(model, train_mode):
        for i, a in enumerate(alphas.tolist()):
            for j, b in enumerate(betas.tolist()):
                shifted = [s + a * u for s, u in zip(saved, dirs1, strict=True)]
                if dirs2 is not None:
                    shifted = [t.add_(v, alpha=b) for t, v in zip(shifted, dirs2, strict=True)]
                tensors = dict(zip(keys, shifted, strict=True))
                losses[i, j] = _mean_loss(model, loss_fn, batches, device, tensors)
    return Surface2D(alphas=alphas, betas=betas, losses=losses)


def loss_surface_1d(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    direction: torch.Tensor,
    *,
    alphas: Any = None,
    params: Sequence[nn.Parameter] | None = None,
    train_mode: bool = False,
) -> Surface1D:
    """Mean loss along the line ``theta + alpha * direction`` (default ``alphas = linspace(-1, 1, 41)``).

    ``direction`` is a flat vector: random (``random_direction``), filter-normalised, a Hessian
    eigenvector, or ``interpolation_direction(a, b)``. The model's parameters and buffers are never written.
    """
    chosen = resolve_params(model, params)
    direction = _check_direction(direction, sum(p.numel() for p in chosen), "direction")
    alphas = torch.linspace(-1, 1, 41) if alphas is None else alphas
    surface = loss_surface_2d(
        model, loss_fn, data, direction, None, alphas=alphas, params=params, train_mode=train_mode
    )
    return Surface1D(alphas=surface.alphas, losses=surface.losses[:, 0])


def _split(vector: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``unflatten`` with each piece moved to its parameter's device."""
    return [piece.to(t.device) for piece, t in zip(unflatten(vector, like), like, strict=True)]
