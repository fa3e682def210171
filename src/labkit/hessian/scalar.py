"""Scalar (depth-D, width-1) linear networks, where gradient flow can be solved in closed form.

Kreisler, Nacson, Soudry and Carmon, *Gradient Descent Monotonically Decreases the Sharpness of Gradient
Flow Solutions in Scalar Networks and Beyond*, ICML 2023 (arXiv:2305.13064): for ``f(x) = x * prod_i w_i``
gradient flow conserves ``w_i^2 - w_j^2``, so the minimiser it would reach from any point is known, and so is
its sharpness (the "GFS sharpness"). Along gradient descent at the edge of stability the loss oscillates,
but the GFS sharpness decreases monotonically until it falls below ``2 / eta``.
"""

from __future__ import annotations

import torch
from torch import nn


class ScalarNetwork(nn.Module):
    """``f(x) = x * prod_i w_i`` with a trainable weight vector ``w`` of length ``depth``."""

    def __init__(self, weights: torch.Tensor | list[float]):
        super().__init__()
        w = torch.as_tensor(weights, dtype=torch.float64).detach().clone().reshape(-1)
        if w.numel() < 1:
            raise ValueError("weights must hold at least one value")
        self.weight = nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.prod(self.weight)


def gradient_flow_solution(
    weights: torch.Tensor, *, x: float = 1.0, y: float = 1.0, tol: float = 1e-13
) -> torch.Tensor:
    """The minimiser that gradient flow on ``(x prod w - y)^2`` reaches from ``weights``.

    Gradient flow keeps every ``w_i^2 - w_1^2`` fixed and the signs of the ``w_i``; the solution is the
    point on that curve with ``x prod w = y``, found by bisection on ``s = w_1^2``. Raises ``ValueError`` when
    the signs of ``weights`` cannot give ``prod w = y / x`` (or any weight is zero).
    """
    w = torch.as_tensor(weights, dtype=torch.float64).detach().reshape(-1)
    if x == 0 or y == 0:
        raise ValueError("x and y must be non-zero")
    if (w == 0).any():
        raise ValueError("weights must be non-zero (a zero weight stays zero under gradient flow)")
    signs = torch.sign(w)
    target = y / x
    if float(torch.prod(signs)) * target < 0:
        raise ValueError("the signs of weights cannot reach prod(w) = y / x without crossing zero")
    offsets = w**2 - w[0] ** 2
    lo = float(torch.clamp(-offsets, min=0).max())
    goal = abs(target) ** 2

    def product_sq(s: float) -> float:
        return float(torch.prod(s + offsets))

    hi = max(lo, 1.0)
    while product_sq(hi) < goal:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if product_sq(mid) < goal:
            lo = mid
        else:
            hi = mid
        if hi - lo <= tol * max(1.0, hi):
            break
    s = (lo + hi) / 2
    return signs * torch.sqrt(s + offsets)


def gfs_sharpness(weights: torch.Tensor, *, x: float = 1.0, y: float = 1.0) -> float:
    """Sharpness (top Hessian eigenvalue) of ``L(w) = (x prod w - y)^2 / 2`` at the gradient-flow solution
    reached from ``weights``: at a minimum ``H = x^2 grad(prod w) grad(prod w)^T``, so ``lambda = y^2 sum 1/w_i^2``."""
    w_star = gradient_flow_solution(weights, x=x, y=y)
    return float((y**2) * (1 / w_star**2).sum())
