"""Scalar (depth-D, width-1) linear networks, where gradient flow can be solved in closed form.

Kreisler, Nacson, Soudry and Carmon, *Gradient Descent Monotonically Decreases the Sharpness of Gradient
Flow Solutions in Scalar Networks and Beyond*, ICML 2023 (arXiv:2305.13064): for ``f(x) = x * prod_i w_i``
gradient flow conserves ``w_i^2 - w_j^2``, so the minimiser it would reach from any point is known, and so is
its sharpness (the "GFS sharpness"). Along gradient descent at the edge of stability the loss oscillates,
but the GFS sharpness decreases monotonically until it falls below ``2 / eta``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from labkit import checks


def _weights(weights: torch.Tensor | list[float], name: str = "weights") -> torch.Tensor:
    """A non-empty flat float64 vector of finite weights."""
    if isinstance(weights, torch.Tensor):
        checks.tensor(weights, name)
    try:
        w = torch.as_tensor(weights, dtype=torch.float64).detach().reshape(-1)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"{name} must be a tensor or sequence of real numbers, got {type(weights).__name__}") from exc
    if w.numel() < 1:
        raise ValueError(f"{name} must hold at least one value")
    return checks.tensor(w, name)


class ScalarNetwork(nn.Module):
    """``f(x) = x * prod_i w_i`` with a trainable weight vector ``w`` of length ``depth``."""

    def __init__(self, weights: torch.Tensor | list[float]):
        super().__init__()
        w = _weights(weights).clone()
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
    w = _weights(weights)
    x, y = checks.number(x, "x"), checks.number(y, "y")
    checks.number(tol, "tol", low=0, low_open=True)
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


def scalar_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``mean (outputs - targets)^2 / 2``: the loss of a scalar network on its one example."""
    return 0.5 * ((outputs - targets) ** 2).mean()


@dataclass(frozen=True)
class ScalarRun:
    """Gradient descent on a :class:`ScalarNetwork` (:func:`run_scalar`): the step size ``eta``, the loss and the
    GFS sharpness before each step, and the sharpness and GFS sharpness at the end."""

    eta: float
    loss: np.ndarray
    gfs: np.ndarray
    final_sharpness: float
    final_gfs: float


def run_scalar(weights: torch.Tensor, *, fraction: float, steps: int = 600) -> ScalarRun:
    """Kreisler et al. (ICML 2023): full-batch GD on ``(prod w - 1)^2 / 2`` from ``weights`` with the step size
    ``eta = 2 / (fraction * S_GFS(weights))`` (``fraction < 1``: the solution gradient flow would reach is too
    sharp for GD), recording the loss and the GFS sharpness (:func:`gfs_sharpness`) before every step."""
    checks.number(fraction, "fraction", low=0, low_open=True)
    checks.positive_int(steps, "steps")
    w0 = _weights(weights)
    eta = 2 / (fraction * gfs_sharpness(w0))
    model = ScalarNetwork(w0)
    one = torch.ones(1, dtype=torch.float64)
    opt = torch.optim.SGD(model.parameters(), lr=eta)
    losses, gfs = [], []
    for _ in range(steps):
        gfs.append(gfs_sharpness(model.weight.detach()))
        opt.zero_grad()
        loss = scalar_loss(model(one), one)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    w = model.weight.detach()
    hessian = torch.func.hessian(lambda v: scalar_loss(one * torch.prod(v), one))(w)
    return ScalarRun(eta, np.array(losses), np.array(gfs), float(torch.linalg.eigvalsh(hessian)[-1]), gfs_sharpness(w))
