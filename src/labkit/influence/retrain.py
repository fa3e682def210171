"""Leave-one-out retraining: the ground truth influence functions estimate (Koh & Liang, *Understanding
Black-box Predictions via Influence Functions*, arXiv 1703.04730, Fig. 2), and a deterministic L2-regularized
logistic regression to retrain (their convex setting).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from labkit import checks
from labkit.autograd import as_pair
from labkit.influence.per_example import LossFn, check_loss_fn

Data = tuple[torch.Tensor, torch.Tensor]


def _query_losses(model: nn.Module, loss_fn: LossFn, query: Data) -> torch.Tensor:
    x, y = query
    with torch.no_grad():
        out = model(x)
        return torch.stack([loss_fn(out[j : j + 1], y[j : j + 1]) for j in range(len(x))])


def loo_retrain(
    train_fn: Callable[[Data], nn.Module],
    train: Data,
    query: Data,
    indices: Sequence[int] | torch.Tensor,
    *,
    loss_fn: LossFn = F.cross_entropy,
) -> torch.Tensor:
    """The measured change of each query loss when each training example in ``indices`` is left out:
    ``out[j, k] = L(query_j; train_fn(train without indices[k])) − L(query_j; train_fn(train))``, a
    ``(q, len(indices))`` tensor. ``train_fn(data)`` trains a fresh model on an ``(inputs, targets)`` pair and
    returns it; it should be deterministic (same data, same model), or the differences measure its noise.
    ``loss_fn(outputs, targets)`` is the mean loss (cross-entropy by default)."""
    if not callable(train_fn):
        raise TypeError(f"train_fn must be callable as train_fn((inputs, targets)) -> model, got {type(train_fn)}")
    check_loss_fn(loss_fn)
    x, y = as_pair(train, "train")
    query = as_pair(query, "query")
    n = len(x)
    idx = torch.as_tensor(indices).reshape(-1)
    if idx.dtype in (torch.float16, torch.float32, torch.float64, torch.bool) or len(idx) == 0:
        raise ValueError("indices must be a non-empty sequence of integer positions in train")
    if bool((idx < 0).any()) or bool((idx >= n).any()):
        raise ValueError(f"indices must lie in [0, {n}), got {idx.min().item()}..{idx.max().item()}")
    base = _query_losses(train_fn((x, y)), loss_fn, query)
    cols = []
    for i in idx.tolist():
        keep = torch.cat([torch.arange(i), torch.arange(i + 1, n)])
        model = train_fn((x[keep], y[keep]))
        cols.append(_query_losses(model, loss_fn, query) - base)
    return torch.stack(cols, 1)


def train_logistic_regression(
    data: Data,
    *,
    num_classes: int,
    weight_decay: float,
    normalizer: int | None = None,
    init: nn.Linear | None = None,
    tol: float = 1e-10,
    max_iter: int = 50,
) -> nn.Linear:
    """Multinomial logistic regression minimizing ``Σ_i CE_i / normalizer + weight_decay/2 ‖θ‖²`` (θ: weight and
    bias) by Newton's method with a backtracking line search, in float64, from ``init`` (zeros when None) until
    the gradient norm is below ``tol``. ``normalizer`` defaults to ``len(data)``; fix it to the full training set's
    size when retraining without one example, so the objective is Koh & Liang's with that example's weight set to
    zero. Deterministic: the same data give the same model. Returns a float64 ``nn.Linear``."""
    x, y = as_pair(data, "data")
    num_classes = checks.positive_int(num_classes, "num_classes")
    weight_decay = checks.number(weight_decay, "weight_decay", low=0.0, low_open=True)
    norm = len(x) if normalizer is None else checks.positive_int(normalizer, "normalizer")
    x = x.to(torch.float64)
    xa = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    d = xa.shape[1]
    onehot = F.one_hot(y, num_classes).to(x.dtype)
    theta = torch.zeros(num_classes, d, dtype=x.dtype)
    if init is not None:
        theta = torch.cat([init.weight.detach(), init.bias.detach().unsqueeze(1)], 1).to(x.dtype).clone()

    def objective(t: torch.Tensor) -> float:
        logits = xa @ t.T
        return float(-(torch.log_softmax(logits, 1) * onehot).sum() / norm + weight_decay / 2 * (t**2).sum())

    eye = torch.eye(num_classes * d, dtype=x.dtype)
    for _ in range(max_iter):
        p = torch.softmax(xa @ theta.T, 1)
        grad = ((p - onehot).T @ xa / norm + weight_decay * theta).reshape(-1)
        if float(grad.norm()) < tol:
            break
        # Hessian of the cross-entropy: Σ_i (diag p_i − p_i p_iᵀ) ⊗ x_i x_iᵀ (class-major layout)
        w = torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)  # (n, C, C)
        hess = torch.einsum("nab,ni,nj->aibj", w, xa, xa).reshape(num_classes * d, -1) / norm
        step = torch.linalg.solve(hess + weight_decay * eye, grad).reshape(num_classes, d)
        f0, t = objective(theta), 1.0
        while objective(theta - t * step) > f0 - 1e-4 * t * float(grad @ step.reshape(-1)) and t > 1e-8:
            t /= 2
        theta = theta - t * step
    model = nn.Linear(d - 1, num_classes).to(torch.float64)
    with torch.no_grad():
        model.weight.copy_(theta[:, :-1])
        model.bias.copy_(theta[:, -1])
    return model


__all__ = ["loo_retrain", "train_logistic_regression"]
