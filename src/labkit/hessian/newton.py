"""Gradient-regularized Newton steps with exact or approximate Hessians, on flat parameter vectors.

The step ``x+ = x - (B + lambda I)^{-1} g`` with ``lambda = sqrt(L ||g||)`` (Mishchenko, *Regularized Newton
Method with Global O(1/k^2) Convergence*, SIAM J. Optim. 2023; Doikov and Nesterov, *Gradient Regularization
of Newton Method with Bregman Distances*, 2023) and ``B`` the exact Hessian or an approximation (subsampled,
stale, diagonal), as studied under gradient-normalized smoothness for approximate Hessians. ``L`` is adapted:
halved after an accepted step, doubled until the step decreases the loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch


def softmax_regression_hessian(
    x: torch.Tensor, weight: torch.Tensor, *, l2: float = 0.0, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """Closed-form Hessian of ``mean_n CE(W x_n, y_n) + l2/2 ||W||^2`` w.r.t. ``W`` (shape ``(C, D)``), flattened
    row-major like ``W.reshape(-1)``: block ``(c, c')`` is ``mean_n (p_nc delta_cc' - p_nc p_nc') x_n x_n^T``.
    ``rows`` restricts the mean to a subset of examples (a subsampled Hessian). It does not depend on the labels.
    """
    if x.ndim != 2 or weight.ndim != 2 or weight.shape[1] != x.shape[1]:
        raise ValueError(f"x must be (N, D) and weight (C, D), got {tuple(x.shape)} and {tuple(weight.shape)}")
    if rows is not None:
        x = x[rows]
    c, d = weight.shape
    p = torch.softmax(x @ weight.T, dim=1)  # (N, C)
    coeff = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]  # (N, C, C)
    weighted = coeff.reshape(len(x), c * c, 1) * x[:, None, :]  # (N, C*C, D)
    blocks = weighted.permute(1, 2, 0) @ x / len(x)  # (C*C, D, D): X^T diag(coeff_ab) X
    hess = blocks.reshape(c, c, d, d).permute(0, 2, 1, 3).reshape(c * d, c * d)
    if l2:
        hess = hess + l2 * torch.eye(c * d, dtype=hess.dtype, device=hess.device)
    return hess


def softmax_regression_hessian_diagonal(x: torch.Tensor, weight: torch.Tensor, *, l2: float = 0.0) -> torch.Tensor:
    """The diagonal of :func:`softmax_regression_hessian` in ``O(N C D)``: ``mean_n p_nc (1 - p_nc) x_ni^2 + l2``."""
    if x.ndim != 2 or weight.ndim != 2 or weight.shape[1] != x.shape[1]:
        raise ValueError(f"x must be (N, D) and weight (C, D), got {tuple(x.shape)} and {tuple(weight.shape)}")
    p = torch.softmax(x @ weight.T, dim=1)
    return ((p * (1 - p)).T @ (x * x) / len(x)).reshape(-1) + l2


@dataclass
class NewtonRun:
    """Iterates of ``regularized_newton``: losses, gradient norms and regularisation per step (index 0 = start)."""

    x: torch.Tensor
    losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    lambdas: list[float] = field(default_factory=list)
    hessian_calls: int = 0
    function_calls: int = 0


def regularized_newton(
    loss_grad: Callable[[torch.Tensor], tuple[float, torch.Tensor]],
    hessian: Callable[[torch.Tensor, int], torch.Tensor],
    x0: torch.Tensor,
    *,
    steps: int,
    lipschitz: float = 1.0,
    diagonal: bool = False,
    tol: float = 0.0,
) -> NewtonRun:
    """Run ``steps`` gradient-regularized Newton steps from ``x0``.

    ``loss_grad(x) -> (loss, grad)``; ``hessian(x, k) -> B`` (a ``(P, P)`` matrix, or a ``(P,)`` diagonal with
    ``diagonal=True``) at step ``k`` (so a stale approximation can return a cached matrix). Each step solves
    ``(B + sqrt(L ||g||) I) d = g`` and accepts ``x - d`` if the loss does not increase, else doubles ``L``
    (up to 50 times); after acceptance ``L`` is halved. Stops early when ``||g|| <= tol``.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not lipschitz > 0:
        raise ValueError(f"lipschitz must be positive, got {lipschitz!r}")
    x = x0.detach().clone()
    loss, g = loss_grad(x)
    run = NewtonRun(x=x, losses=[loss], grad_norms=[float(g.norm())], function_calls=1)
    big_l = float(lipschitz)
    for k in range(steps):
        gnorm = float(g.norm())
        if gnorm <= tol:
            break
        b = hessian(x, k)
        run.hessian_calls += 1
        for _ in range(50):
            lam = (big_l * gnorm) ** 0.5
            if diagonal:
                d = g / (b + lam)
            else:
                d = torch.linalg.solve(b + lam * torch.eye(len(x), dtype=b.dtype, device=b.device), g)
            new_loss, new_g = loss_grad(x - d)
            run.function_calls += 1
            if new_loss <= loss:
                break
            big_l *= 2
        x, loss, g = x - d, new_loss, new_g
        big_l /= 2
        run.losses.append(loss)
        run.grad_norms.append(float(g.norm()))
        run.lambdas.append(lam)
    run.x = x
    return run
