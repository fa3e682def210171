"""Symmetric low-rank matrix sensing and the incremental learning of gradient descent.

Jin, Li, Lyu, Du and Lee, *Understanding Incremental Learning of Gradient Descent: A Fine-grained Analysis of
Matrix Sensing* (ICML 2023, arXiv 2301.11500). A rank-``r`` PSD target ``M* = V diag(s) V^T`` is observed through
``m`` near-isotropic linear measurements ``y_k = <A_k, M*>``; gradient descent runs on the factorization
``X = U U^T`` with the loss

    f(U) = 1/(4m) sum_k (<A_k, U U^T> - y_k)^2,   grad f(U) = (1/m) sum_k (<A_k, U U^T> - y_k) A_k U

(``A_k`` symmetric). From a small initialization ``U_0 = alpha * U_bar`` the paper shows that GD learns the
target's eigenvalues one at a time, largest first, with plateaus in between (the greedy low-rank learning
picture); :func:`incremental_learning_times` reads off when each one is learned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from labkit import checks
from labkit.autograd import check_generator, randn

__all__ = [
    "SensingProblem",
    "SensingRun",
    "incremental_learning_times",
    "matrix_sensing",
    "sensing_gd",
    "sensing_gradient",
    "sensing_loss",
]


class SensingProblem(NamedTuple):
    """``A`` (m, d, d) symmetric measurement matrices, ``y`` (m,) with ``y[k] = <A[k], target>``, ``target``
    (d, d) the symmetric PSD ground truth."""

    A: torch.Tensor
    y: torch.Tensor
    target: torch.Tensor


class SensingRun(NamedTuple):
    """A gradient-descent run on ``U U^T``: ``steps`` (T,) the recorded steps, ``eigenvalues`` (T, d) the
    eigenvalues of ``U_t U_t^T`` in decreasing order (its singular values), ``loss`` (T,) the sensing loss
    and ``error`` (T,) the relative error ``||U U^T - M*||_F / ||M*||_F`` at those steps, ``U`` the last
    iterate, ``stopped`` whether a ``stop`` callback ended the run early."""

    steps: torch.Tensor
    eigenvalues: torch.Tensor
    loss: torch.Tensor
    error: torch.Tensor
    U: torch.Tensor
    stopped: bool


def matrix_sensing(d: int, rank: int, measurements: int, *, singular_values: torch.Tensor | list[float] | None = None,
                   generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64,
                   device: str | torch.device | None = None) -> SensingProblem:
    """A random symmetric matrix-sensing problem (Jin et al. 2023, arXiv 2301.11500, Sec. 3).

    The target is ``V diag(s) V^T`` with ``V`` (d, rank) orthonormal (QR of a Gaussian matrix) and ``s`` the
    ``singular_values`` (default ``rank, rank - 1, ..., 1``: distinct, so the learning order is defined).
    Each ``A[k] = (G + G^T) / 2`` with ``G`` standard Gaussian, so ``E <A, X>^2 = ||X||_F^2`` for symmetric
    ``X`` (near-isotropic measurements, the RIP regime when ``measurements`` is a few times ``d * rank``).
    Random numbers come from ``generator`` (CPU by default, labkit's generator rule).
    """
    checks.positive_int(d, "d")
    checks.integer(rank, "rank", low=1, high=d)
    checks.positive_int(measurements, "measurements")
    check_generator(generator)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    if singular_values is None:
        s = torch.arange(rank, 0, -1, dtype=dtype)
    else:
        s = torch.as_tensor(singular_values, dtype=dtype).flatten()
        checks.tensor(s, "singular_values")
        if s.numel() != rank:
            raise ValueError(f"singular_values must have rank={rank} entries, got {s.numel()}")
        if bool((s <= 0).any()):
            raise ValueError(f"singular_values must be positive, got {s.tolist()}")
    device = torch.device("cpu") if device is None else torch.device(device)
    V, _ = torch.linalg.qr(randn((d, rank), generator=generator, device=device, dtype=dtype))
    target = (V * s.to(device)) @ V.T
    target = (target + target.T) / 2
    G = randn((measurements, d, d), generator=generator, device=device, dtype=dtype)
    A = (G + G.transpose(1, 2)) / 2
    y = torch.einsum("kij,ij->k", A, target)
    return SensingProblem(A, y, target)


def _check_problem(problem: object) -> SensingProblem:
    if not isinstance(problem, SensingProblem):
        raise TypeError(f"problem must be a SensingProblem (from matrix_sensing), got {type(problem).__name__}")
    return problem


def _check_factor(U: object, problem: SensingProblem) -> torch.Tensor:
    U = checks.tensor(U, "U", floating=True, ndim=2)
    d = problem.target.shape[0]
    if U.shape[0] != d:
        raise ValueError(f"U must have d={d} rows (U U^T is compared with the (d, d) target), "
                         f"got shape {tuple(U.shape)}")
    return U


def sensing_loss(problem: SensingProblem, U: torch.Tensor) -> torch.Tensor:
    """``f(U) = 1/(4m) sum_k (<A_k, U U^T> - y_k)^2`` (differentiable in ``U``)."""
    problem = _check_problem(problem)
    U = _check_factor(U, problem)
    r = torch.einsum("kij,ij->k", problem.A, U @ U.T) - problem.y
    return (r**2).mean() / 4


def sensing_gradient(problem: SensingProblem, U: torch.Tensor) -> torch.Tensor:
    """The closed-form gradient ``(1/m) sum_k (<A_k, U U^T> - y_k) A_k U`` of :func:`sensing_loss`."""
    problem = _check_problem(problem)
    U = _check_factor(U, problem)
    r = torch.einsum("kij,ij->k", problem.A, U @ U.T) - problem.y
    return torch.einsum("k,kij->ij", r, problem.A) @ U / r.numel()


def sensing_gd(problem: SensingProblem, *, init_scale: float, lr: float, steps: int, width: int | None = None,
               record_every: int = 1, generator: torch.Generator | None = None,
               stop: Callable[[int, int], bool] | None = None) -> SensingRun:
    """Gradient descent ``U <- U - lr * grad f(U)`` from ``U_0 = init_scale * U_bar``, ``U_bar`` (d, width) with
    i.i.d. ``N(0, 1/d)`` entries (``width`` defaults to ``d``: the over-parameterized case of Jin et al.).

    Records the eigenvalues of ``U U^T``, the loss and the relative error every ``record_every`` steps and at
    the end. ``stop(done, steps)`` (e.g. an explorer's progress callback) is asked every ``record_every``
    steps and ends the run when it returns True. Raises ``FloatingPointError`` if the iterate diverges.
    """
    problem = _check_problem(problem)
    init_scale = checks.number(init_scale, "init_scale", low=0, low_open=True)
    lr = checks.number(lr, "lr", low=0, low_open=True)
    checks.positive_int(steps, "steps")
    checks.positive_int(record_every, "record_every")
    check_generator(generator)
    if stop is not None and not callable(stop):
        raise TypeError(f"stop must be None or a callable (done, total) -> bool, got {type(stop).__name__}")
    target = problem.target
    d = target.shape[0]
    width = d if width is None else checks.positive_int(width, "width")
    U = init_scale * randn((d, width), generator=generator, device=target.device, dtype=target.dtype) / d**0.5
    A, y = problem.A, problem.y
    norm = torch.linalg.matrix_norm(target)
    rec_steps, eigs, losses, errors = [], [], [], []
    stopped = False

    def record(step: int, X: torch.Tensor, r: torch.Tensor) -> None:
        rec_steps.append(step)
        eigs.append(torch.linalg.eigvalsh(X).flip(0))
        losses.append((r**2).mean() / 4)
        errors.append(torch.linalg.matrix_norm(X - target) / norm)

    for step in range(steps + 1):
        X = U @ U.T
        r = torch.einsum("kij,ij->k", A, X) - y
        if step % record_every == 0 or step == steps:
            if not bool(torch.isfinite(r).all()):
                raise FloatingPointError(f"gradient descent diverged at step {step} (lr={lr} is too large)")
            record(step, X, r)
            if stop is not None and step < steps and stop(step, steps):
                stopped = True
                break
        if step == steps:
            break
        U = U - lr * (torch.einsum("k,kij->ij", r, A) @ U) / r.numel()
    return SensingRun(torch.tensor(rec_steps), torch.stack(eigs), torch.stack(losses), torch.stack(errors), U, stopped)


def incremental_learning_times(history: torch.Tensor, target: torch.Tensor, *, steps: torch.Tensor | None = None,
                               fraction: float = 0.5) -> torch.Tensor:
    """The step at which each singular value of the iterate first reaches ``fraction`` (default half) of the
    target's (Jin et al. 2023, arXiv 2301.11500: incremental learning shows as these times being ordered
    and far apart).

    ``history``: a (T, d, d) stack of iterates ``X_t`` or a (T, q) array of their singular values in
    decreasing order (e.g. ``SensingRun.eigenvalues``); ``target``: the (d, d) target or its singular values.
    ``steps`` (T,) gives the step number of each row (default ``0..T-1``). Returns a ``long`` tensor with one
    entry per non-zero singular value of the target (largest first), ``-1`` where it is never reached.
    """
    history = checks.tensor(history, "history", floating=True, nonempty=True)
    target = checks.tensor(target, "target", floating=True, nonempty=True)
    fraction = checks.number(fraction, "fraction", low=0, low_open=True)
    if history.ndim == 3:
        if history.shape[1] != history.shape[2]:
            raise ValueError(f"history of iterates must be (T, d, d), got shape {tuple(history.shape)}")
        values = torch.linalg.svdvals(history)
    elif history.ndim == 2:
        values = history
    else:
        raise ValueError("history must be (T, d, d) iterates or (T, q) singular values, "
                         f"got shape {tuple(history.shape)}")
    if target.ndim == 2:
        if target.shape[0] != target.shape[1]:
            raise ValueError("target must be a square matrix or a vector of singular values, "
                             f"got {tuple(target.shape)}")
        star = torch.linalg.svdvals(target)
    elif target.ndim == 1:
        star = target.sort(descending=True).values
    else:
        raise ValueError(f"target must be a square matrix or a vector of singular values, got {tuple(target.shape)}")
    star = star[star > 1e-8 * star.max()]
    if star.numel() > values.shape[1]:
        raise ValueError(f"the target has {star.numel()} non-zero singular values but history tracks only "
                         f"{values.shape[1]}")
    T = values.shape[0]
    if steps is None:
        steps = torch.arange(T)
    else:
        steps = checks.tensor(steps, "steps", ndim=1)
        if steps.numel() != T:
            raise ValueError(f"steps must have one entry per row of history ({T}), got {steps.numel()}")
    reached = values[:, : star.numel()].to(star.dtype) >= fraction * star.to(values.device)
    out = torch.full((star.numel(),), -1, dtype=torch.long)
    for i in range(star.numel()):
        hit = torch.nonzero(reached[:, i])
        if hit.numel():
            out[i] = int(steps[int(hit[0])])
    return out
