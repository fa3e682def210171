"""StableMax and the cross-entropy losses of the grokking notebooks.

Prieto, Barsbey, Mediano, Birdal (2025), *Grokking at the Edge of Numerical Stability*,
arXiv:2501.04697. StableMax replaces ``exp`` in softmax with

    s(x) = x + 1        for x >= 0
    s(x) = 1 / (1 - x)  for x < 0,

which grows linearly instead of exponentially, so the largest logit cannot swamp the others in
floating point (no Softmax Collapse).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from labkit import checks

LOSSES = ("softmax", "softmax64", "stablemax", "mse")


def _check_logits(logits: torch.Tensor, target: torch.Tensor | None = None) -> None:
    """Types, shapes, devices and label ranges. NaN/inf logits are not refused here: these are maps and losses
    on the training path, and a NaN logit comes out as a NaN (never as a finite value), which
    :func:`labkit.training.fit`'s ``on_nonfinite`` catches."""
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError("logits must be a floating-point tensor, got "
                        f"{getattr(logits, 'dtype', type(logits).__name__)}")
    if logits.device.type == "meta":
        raise ValueError("logits is on the 'meta' device (shapes only, no values): move it to 'cpu' or 'cuda'")
    if target is None:
        return
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (N, C), got {tuple(logits.shape)}")
    if logits.shape[0] == 0 or logits.shape[1] == 0:
        raise ValueError(f"logits is empty (shape {tuple(logits.shape)}): a loss needs examples and classes")
    if not isinstance(target, torch.Tensor) or target.dtype != torch.long or target.shape != logits.shape[:1]:
        got = f"{getattr(target, 'dtype', type(target).__name__)} {tuple(getattr(target, 'shape', ()))}"
        raise ValueError(f"target must be a LongTensor of shape ({logits.shape[0]},), got {got}")
    if target.device != logits.device:
        raise ValueError(f"target is on {target.device} but logits on {logits.device}")
    if int(target.min()) < 0 or int(target.max()) >= logits.shape[1]:
        raise ValueError(f"target values must lie in [0, {logits.shape[1]}), "
                         f"got [{int(target.min())}, {int(target.max())}]")


def _check_dim(logits: torch.Tensor, dim: int) -> None:
    checks.integer(dim, "dim")
    if logits.ndim == 0 or not -logits.ndim <= dim < logits.ndim:
        raise ValueError(f"dim must index a dimension of logits (shape {tuple(logits.shape)}), got {dim}")


def stable_s(x: torch.Tensor) -> torch.Tensor:
    """The StableMax map s(x): x + 1 for x >= 0, 1 / (1 - x) for x < 0 (always positive)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    # 1 - x = 1 + |x| for x < 0; the unselected branch stays finite for x >= 0, so its gradient is 0, not NaN
    return torch.where(x >= 0, x + 1, (1 + x.abs()).reciprocal())


def log_stable_s(x: torch.Tensor) -> torch.Tensor:
    """log s(x) without overflow: log1p(x) for x >= 0, -log1p(-x) for x < 0."""
    return torch.where(x >= 0, torch.log1p(torch.clamp(x, min=0)), -torch.log1p(-torch.clamp(x, max=0)))


def stablemax(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """StableMax probabilities s(x_i) / sum_j s(x_j) along ``dim`` (Prieto et al., 2025, eq. 5)."""
    _check_logits(logits)
    _check_dim(logits, dim)
    s = stable_s(logits)
    return s / s.sum(dim=dim, keepdim=True)


def log_stablemax(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """log StableMax, computed as log s(x_i) - log sum_j s(x_j)."""
    _check_logits(logits)
    _check_dim(logits, dim)
    return log_stable_s(logits) - torch.log(stable_s(logits).sum(dim=dim, keepdim=True))


def stablemax_cross_entropy(logits: torch.Tensor, target: torch.Tensor, *,
                            reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy with StableMax instead of softmax: -log(s(x_y) / sum_j s(x_j)) (Prieto et al., 2025).

    Computed in float64 (as the paper's reference code does) and returned in the logits' dtype.
    ``reduction`` is "mean", "sum" or "none".
    """
    _check_logits(logits, target)
    _check_reduction(reduction)
    x = logits.double()
    # log sum_j s(x_j) - log s(x_y): the log only on the target column, (N,) instead of (N, C) work
    losses = torch.log(stable_s(x).sum(dim=1)) - log_stable_s(x.gather(1, target[:, None]).squeeze(1))
    return _reduce(losses, reduction).to(logits.dtype)


def softmax_cross_entropy(logits: torch.Tensor, target: torch.Tensor, *, dtype: torch.dtype | None = None,
                          reduction: str = "mean") -> torch.Tensor:
    """Ordinary cross-entropy, optionally computed in ``dtype`` (float64 delays Softmax Collapse)."""
    _check_logits(logits, target)
    _check_reduction(reduction)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype or None, got {dtype!r}")
    work = logits if dtype is None else logits.to(dtype)
    return F.cross_entropy(work, target, reduction=reduction).to(logits.dtype)


def _check_reduction(reduction: str) -> None:
    if not isinstance(reduction, str) or reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _reduce(losses: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    if reduction == "none":
        return losses
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def mse_one_hot_loss(logits: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """Squared error to the one-hot target, 1/2 ||f(x) - e_y||^2 per example (the l2 loss of Tian, 2025)."""
    _check_logits(logits, target)
    _check_reduction(reduction)
    one_hot = F.one_hot(target, logits.shape[1]).to(logits.dtype)
    return _reduce(0.5 * (logits - one_hot).pow(2).sum(dim=1), reduction)


def classification_loss(kind: str = "softmax") -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``loss(logits, target)`` for ``kind`` in "softmax" (float32), "softmax64" (float64), "stablemax"
    or "mse" (squared error to one-hot targets)."""
    if not isinstance(kind, str):
        raise ValueError(f"kind must be one of {LOSSES}, got {kind!r}")
    if kind == "softmax":
        return softmax_cross_entropy
    if kind == "softmax64":
        return lambda logits, target: softmax_cross_entropy(logits, target, dtype=torch.float64)
    if kind == "stablemax":
        return stablemax_cross_entropy
    if kind == "mse":
        return mse_one_hot_loss
    raise ValueError(f"kind must be one of {LOSSES}, got {kind!r}")
