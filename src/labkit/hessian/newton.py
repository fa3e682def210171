"""Gradient-regularized Newton steps with exact or approximate Hessians, on flat parameter vectors.

The step ``x+ = x - (B + lambda I)^{-1} g`` with ``lambda = sqrt(L ||g||)`` (Mishchenko, *Regularized Newton
Method with Global O(1/k^2) Convergence*, SIAM J. Optim. 2023; Doikov and Nesterov, *Gradient Regularization
of Newton Method with Bregman Distances*, 2023) and ``B`` the exact Hessian or an approximation (subsampled,
stale, diagonal), as studied under gradient-normalized smoothness for approximate Hessians. ``L`` is adapted:
halved after an accepted step, doubled until the step decreases the loss.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F

from labkit import checks
from labkit.autograd import check_generator, randperm


def _features_and_weight(x: torch.Tensor, weight: torch.Tensor, l2: float) -> None:
    checks.tensor(x, "x", floating=True)
    checks.tensor(weight, "weight", floating=True)
    if x.ndim != 2 or weight.ndim != 2 or weight.shape[1] != x.shape[1]:
        raise ValueError(f"x must be (N, D) and weight (C, D), got {tuple(x.shape)} and {tuple(weight.shape)}")
    if len(x) == 0:
        raise ValueError("x is empty: expected at least one example")
    if x.dtype != weight.dtype:
        raise TypeError(f"x has dtype {x.dtype} but weight has {weight.dtype}: convert one of them")
    checks.number(l2, "l2", low=0.0)


def softmax_regression_hessian(
    x: torch.Tensor, weight: torch.Tensor, *, l2: float = 0.0, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """Closed-form Hessian of ``mean_n CE(W x_n, y_n) + l2/2 ||W||^2`` w.r.t. ``W`` (shape ``(C, D)``), flattened
    row-major like ``W.reshape(-1)``: block ``(c, c')`` is ``mean_n (p_nc delta_cc' - p_nc p_nc') x_n x_n^T``.
    ``rows`` restricts the mean to a subset of examples (a subsampled Hessian). It does not depend on the labels.
    """
    _features_and_weight(x, weight, l2)
    if rows is not None:
        checks.tensor(rows, "rows")
        if rows.is_floating_point() or rows.is_complex() or rows.dtype == torch.bool or rows.ndim != 1:
            raise TypeError(f"rows must be a 1-D integer tensor of example indices, got {rows.dtype} "
                            f"{tuple(rows.shape)}")
        if rows.numel() == 0:
            raise ValueError("rows is empty: expected at least one example index")
        if int(rows.min()) < 0 or int(rows.max()) >= len(x):
            raise ValueError(f"rows must hold indices in [0, {len(x)}), got values in [{int(rows.min())}, "
                             f"{int(rows.max())}]")
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
    _features_and_weight(x, weight, l2)
    p = torch.softmax(x @ weight.T, dim=1)
    return ((p * (1 - p)).T @ (x * x) / len(x)).reshape(-1) + l2


@dataclass(frozen=True)
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
    if not callable(loss_grad) or not callable(hessian):
        raise TypeError("loss_grad and hessian must be callable: loss_grad(x) -> (loss, grad), hessian(x, k) -> B")
    checks.positive_int(steps, "steps")
    checks.number(lipschitz, "lipschitz", low=0, low_open=True)
    checks.number(tol, "tol", low=0.0)
    checks.tensor(x0, "x0", floating=True, ndim=1, nonempty=True)
    x = x0.detach().clone()
    loss, g = loss_grad(x)
    losses, grad_norms, lambdas = [loss], [float(g.norm())], []
    hessian_calls, function_calls = 0, 1
    big_l = float(lipschitz)
    for k in range(steps):
        gnorm = float(g.norm())
        if gnorm <= tol:
            break
        b = hessian(x, k)
        hessian_calls += 1
        for _ in range(50):
            lam = (big_l * gnorm) ** 0.5
            if diagonal:
                d = g / (b + lam)
            else:
                d = torch.linalg.solve(b + lam * torch.eye(len(x), dtype=b.dtype, device=b.device), g)
            new_loss, new_g = loss_grad(x - d)
            function_calls += 1
            if new_loss <= loss:
                break
            big_l *= 2
        x, loss, g = x - d, new_loss, new_g
        big_l /= 2
        losses.append(loss)
        grad_norms.append(float(g.norm()))
        lambdas.append(lam)
    return NewtonRun(x=x, losses=losses, grad_norms=grad_norms, lambdas=lambdas, hessian_calls=hessian_calls,
                     function_calls=function_calls)


LossGrad = Callable[[torch.Tensor], tuple[float, torch.Tensor]]
HessianFn = Callable[[torch.Tensor, int], torch.Tensor]


def softmax_regression_loss_grad(x: torch.Tensor, y: torch.Tensor, *, l2: float = 0.0) -> LossGrad:
    """``loss_grad(w) -> (loss, grad)`` of ``mean_n CE(W x_n, y_n) + l2/2 ||W||^2`` for the flat ``w = W.reshape(-1)``,
    ``W`` of shape ``(C, D)`` with ``C = y.max() + 1`` (the input of :func:`regularized_newton`)."""
    checks.tensor(x, "x", floating=True)
    checks.tensor(y, "y")
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"x must be (N, D) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if len(x) == 0:
        raise ValueError("x is empty: expected at least one example")
    checks.class_indices(y, int(y.max()) + 1 if y.numel() and not y.is_floating_point() else 1, "y")
    checks.number(l2, "l2", low=0.0)
    classes, dim = int(y.max()) + 1, x.shape[1]

    def check(w: torch.Tensor) -> None:
        if not isinstance(w, torch.Tensor) or w.shape != (classes * dim,):
            shape = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
            raise ValueError(f"w must be a flat vector of length {classes * dim} (C * D), got {shape}")

    def loss_grad(w: torch.Tensor) -> tuple[float, torch.Tensor]:
        check(w)
        w = w.detach().requires_grad_(True)
        loss = F.cross_entropy(x @ w.view(classes, dim).T, y) + 0.5 * l2 * (w * w).sum()
        (g,) = torch.autograd.grad(loss, w)
        return loss.item(), g

    return loss_grad


class HessianApproximation(NamedTuple):
    """``hessian(w, k)`` for :func:`regularized_newton` and whether it returns a diagonal (unpacks as a pair)."""

    hessian: HessianFn
    diagonal: bool


def hessian_approximations(
    x: torch.Tensor,
    *,
    classes: int,
    l2: float = 0.0,
    subsample: float = 0.1,
    stale_every: int = 5,
    generator: torch.Generator | None = None,
) -> dict[str, HessianApproximation]:
    """The four Hessian choices of Semenov, Jaggi and Doikov, *Gradient-Normalized Smoothness for Optimization
    with Approximate Hessians* (2025), for softmax regression on ``x``: ``"exact"``, ``"subsampled 10%"`` (a
    fresh random ``subsample`` share of the examples every step, drawn from ``generator``), ``"stale (every 5)"``
    (the exact Hessian, recomputed every ``stale_every`` steps) and ``"diagonal"``."""
    checks.tensor(x, "x", floating=True, ndim=2, nonempty=True)
    checks.positive_int(classes, "classes")
    checks.number(l2, "l2", low=0.0)
    checks.number(subsample, "subsample", low=0, high=1, low_open=True)
    checks.positive_int(stale_every, "stale_every")
    check_generator(generator)
    n_sub = max(1, int(subsample * len(x)))
    shape = (classes, x.shape[1])
    cache: dict[str, torch.Tensor] = {}

    def exact(w: torch.Tensor, k: int) -> torch.Tensor:
        return softmax_regression_hessian(x, w.view(shape), l2=l2)

    def subsampled(w: torch.Tensor, k: int) -> torch.Tensor:
        rows = randperm(len(x), generator=generator, device=x.device)[:n_sub]
        return softmax_regression_hessian(x, w.view(shape), l2=l2, rows=rows)

    def stale(w: torch.Tensor, k: int) -> torch.Tensor:
        if k % stale_every == 0 or "stale" not in cache:
            cache["stale"] = exact(w, k)
        return cache["stale"]

    def diagonal(w: torch.Tensor, k: int) -> torch.Tensor:
        return softmax_regression_hessian_diagonal(x, w.view(shape), l2=l2)

    return {"exact": HessianApproximation(exact, False),
            f"subsampled {subsample:.0%}": HessianApproximation(subsampled, False),
            f"stale (every {stale_every})": HessianApproximation(stale, False),
            "diagonal": HessianApproximation(diagonal, True)}


def approximate_newton_runs(
    loss_grad: LossGrad,
    approximations: dict[str, HessianApproximation],
    x0: torch.Tensor,
    *,
    steps: int,
    lipschitz: Sequence[float],
    reference: str = "exact",
    reference_lipschitz: float = 1.0,
    tol: float = 0.0,
) -> dict[tuple[str, float], NewtonRun]:
    """:func:`regularized_newton` with every approximation and every initial ``L0`` in ``lipschitz``, keyed by
    ``(name, L0)``; the ``reference`` approximation runs once, at ``reference_lipschitz``."""
    if isinstance(lipschitz, (str, bytes)) or not isinstance(lipschitz, Sequence) or not lipschitz:
        raise ValueError(f"lipschitz must be a non-empty sequence of positive numbers, got {lipschitz!r}")
    for i, big_l in enumerate(lipschitz):
        checks.number(big_l, f"lipschitz[{i}]", low=0, low_open=True)
    checks.number(reference_lipschitz, "reference_lipschitz", low=0, low_open=True)
    runs = {}
    for big_l in lipschitz:
        for name, (hessian, diagonal) in approximations.items():
            if name == reference and big_l != reference_lipschitz:
                continue
            runs[(name, big_l)] = regularized_newton(loss_grad, hessian, x0, steps=steps, lipschitz=big_l,
                                                     diagonal=diagonal, tol=tol)
    if reference in approximations and (reference, reference_lipschitz) not in runs:
        hessian, diagonal = approximations[reference]
        runs[(reference, reference_lipschitz)] = regularized_newton(loss_grad, hessian, x0, steps=steps,
                                                                    lipschitz=reference_lipschitz,
                                                                    diagonal=diagonal, tol=tol)
    return runs


@dataclass(frozen=True)
class DescentRun:
    """Iterates of :func:`gradient_descent`: the final point, and the loss and gradient norm before each step."""

    x: torch.Tensor
    losses: list[float]
    grad_norms: list[float]


def gradient_descent(loss_grad: LossGrad, x0: torch.Tensor, *, lr: float, steps: int) -> DescentRun:
    """``steps`` steps of ``x <- x - lr * grad`` from ``x0`` (the baseline of the approximate-Newton study)."""
    checks.positive_int(steps, "steps")
    checks.number(lr, "lr", low=0, low_open=True)
    checks.tensor(x0, "x0", floating=True, ndim=1, nonempty=True)
    x, losses, norms = x0.detach().clone(), [], []
    for _ in range(steps):
        loss, g = loss_grad(x)
        losses.append(loss)
        norms.append(float(g.norm()))
        x = x - lr * g
    return DescentRun(x, losses, norms)


class TunedDescent(NamedTuple):
    """The step size of :func:`tuned_gradient_descent` with the smallest final gradient norm, and every run."""

    best_lr: float
    runs: dict[float, DescentRun]


def tuned_gradient_descent(
    loss_grad: LossGrad, x0: torch.Tensor, *, lrs: Sequence[float], steps: int
) -> TunedDescent:
    """:func:`gradient_descent` at every step size of ``lrs``; returns ``(best_lr, runs)`` where the best step
    size ends with the smallest finite gradient norm."""
    if isinstance(lrs, (str, bytes)) or not isinstance(lrs, Sequence) or not lrs:
        raise ValueError(f"lrs must be a non-empty sequence of step sizes, got {lrs!r}")
    for i, lr in enumerate(lrs):
        checks.number(lr, f"lrs[{i}]", low=0, low_open=True)
    runs = {lr: gradient_descent(loss_grad, x0, lr=lr, steps=steps) for lr in lrs}

    def final(lr: float) -> float:
        v = runs[lr].grad_norms[-1]
        return v if v == v and v != float("inf") else float("inf")

    return TunedDescent(min(runs, key=final), runs)


def steps_to(values: Sequence[float], level: float) -> int | None:
    """The first iteration whose value (e.g. gradient norm) is at most ``level``, or None if none is (the list
    analogue of :meth:`labkit.training.History.first_step`)."""
    checks.number(level, "level")
    return next((k for k, v in enumerate(values) if v <= level), None)


def contraction_rate(values: Sequence[float], *, floor: float = 1e-9) -> float:
    """Mean contraction per iteration, ``(v_last / v_first) ** (1 / (n - 1))`` over the values above ``floor``
    (machine-precision plateaus excluded); below 1 on a straight line of a log plot means a linear rate."""
    checks.number(floor, "floor", low=0.0)
    used = [v for v in values if v > floor]
    if not used:
        raise ValueError(f"no value above floor={floor!r}")
    return (used[-1] / used[0]) ** (1 / max(len(used) - 1, 1))
