"""Loss-landscape experiment: the loss along random directions of rescaled copies of a ReLU network (Li et al.,
NeurIPS 2018; Dinh et al. 2017)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn

from labkit import checks
from labkit.hessian import filter_normalized_direction, loss_surface_1d, random_direction
from labkit.hessian.experiments.training import copy_generator

DIRECTIONS = {"raw Gaussian": random_direction, "filter-normalized": filter_normalized_direction}


def rescaled_copy(model: nn.Sequential, factor: float, *, first: int = 0, second: int = 2) -> nn.Sequential:
    """A copy of a ReLU MLP computing the same function: layer ``first`` (weight and bias) times ``factor``,
    layer ``second``'s weight divided by it (positive homogeneity of ReLU; Dinh et al. 2017)."""
    checks.number(factor, "factor", low=0, low_open=True)  # ReLU is only positively homogeneous
    net = copy.deepcopy(model)
    with torch.no_grad():
        net[first].weight.mul_(factor)
        net[first].bias.mul_(factor)
        net[second].weight.div_(factor)
    return net


def rescaling_curves(
    model: nn.Sequential,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    data: tuple[torch.Tensor, torch.Tensor],
    *,
    factors: Sequence[float],
    alphas: torch.Tensor,
    generator: torch.Generator | None = None,
) -> dict[tuple[str, float], torch.Tensor]:
    """Li et al., *Visualizing the Loss Landscape of Neural Nets* (NeurIPS 2018): the loss along
    ``theta + alpha d`` of every rescaled copy (:func:`rescaled_copy`) for a raw Gaussian and a
    filter-normalized direction ``d``, each drawn from the same state of ``generator`` for every copy;
    keyed by ``(kind, factor)`` with kinds ``"raw Gaussian"`` and ``"filter-normalized"``."""
    if not factors:
        raise ValueError("factors must hold at least one rescaling factor")
    for i, factor in enumerate(factors):
        checks.number(factor, f"factors[{i}]", low=0, low_open=True)
    curves = {}
    for factor in factors:
        net = rescaled_copy(model, factor)
        for kind, make in DIRECTIONS.items():
            d = make(net, generator=copy_generator(generator))
            curves[(kind, factor)] = loss_surface_1d(net, loss_fn, data, d, alphas=alphas).losses
    return curves


__all__ = ["DIRECTIONS", "rescaled_copy", "rescaling_curves"]
