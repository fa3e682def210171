"""TracIn: influence as the sum, over training checkpoints, of learning rate × gradient dot products.

Pruthi et al., *Estimating Training Data Influence by Tracing Gradient Descent*, NeurIPS 2020,
arXiv 2002.08484, Eq. (3) (TracInCP): ``TracIn(z, z') = Σ_k η_k ∇ℓ(w_k, z) · ∇ℓ(w_k, z')``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from labkit import checks
from labkit.influence.per_example import LossFn, check_loss_fn, per_example_grads


def tracin(
    checkpoints: Sequence[nn.Module],
    loss_fn: LossFn,
    train: Any,
    query: Any,
    *,
    lrs: Sequence[float] | float,
    params: Sequence[str] | None = None,
) -> torch.Tensor:
    """TracInCP scores ``Σ_k lrs[k] · ∇L_k(query_j) · ∇L_k(train_i)``: a ``(q, n)`` tensor.

    ``checkpoints`` are models saved along training (each left as found); ``lrs`` one learning rate per
    checkpoint (a single number is used for all). ``params``: names of the parameters to differentiate (e.g.
    ``["2.weight", "2.bias"]`` for the last layer, as TracIn's paper does for speed); all trainable parameters
    when None. Gradients are per-example (:func:`labkit.influence.per_example_grads`), positive scores mean the
    training example lowered the query's loss ("proponents").
    """
    check_loss_fn(loss_fn)
    if isinstance(checkpoints, nn.Module) or not isinstance(checkpoints, Sequence) or not checkpoints:
        raise TypeError("checkpoints must be a non-empty sequence of models (nn.Module)")
    for i, m in enumerate(checkpoints):
        if not isinstance(m, nn.Module):
            raise TypeError(f"checkpoints[{i}] must be an nn.Module, got {type(m).__name__}")
    if isinstance(lrs, (int, float)) and not isinstance(lrs, bool):
        lrs = [float(lrs)] * len(checkpoints)
    if isinstance(lrs, (str, bytes)) or not isinstance(lrs, Sequence) or len(lrs) != len(checkpoints):
        raise ValueError(f"lrs must be a number or one learning rate per checkpoint ({len(checkpoints)})")
    rates = [checks.number(r, f"lrs[{k}]", low=0.0) for k, r in enumerate(lrs)]
    total = None
    for k, (model, rate) in enumerate(zip(checkpoints, rates, strict=True)):
        chosen = None
        if params is not None:
            named = dict(model.named_parameters())
            unknown = [n for n in params if n not in named]
            if unknown:
                raise ValueError(f"params names {unknown} are not parameters of checkpoints[{k}]")
            chosen = [named[n] for n in params]
        g_train = per_example_grads(model, loss_fn, train, params=chosen, name="train")
        g_query = per_example_grads(model, loss_fn, query, params=chosen, name="query")
        term = rate * (g_query @ g_train.T)
        total = term if total is None else total + term
    assert total is not None
    return total


__all__ = ["tracin"]
