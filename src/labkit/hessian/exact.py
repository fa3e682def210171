"""The exact Hessian matrix of the mean loss, for models up to a few thousand parameters."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from labkit import checks
from labkit.autograd import as_batches, flatten, resolve_params, zeros_if_none
from labkit.autograd import train_mode as _mode
from labkit.hessian import _inputs
from labkit.hessian.operator import LossFn, checked_loss


def exact_hessian(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    *,
    params: Sequence[nn.Parameter] | None = None,
    dtype: torch.dtype = torch.float64,
    chunk_size: int = 256,
    train_mode: bool = False,
) -> torch.Tensor:
    """The ``(P, P)`` Hessian of the mean loss over ``data`` (batches weighted by size) w.r.t. ``params``.

    Computed in ``dtype`` (float64 by default) on a copy of the model, row block by row block with
    batched double backward (``chunk_size`` rows at a time), then symmetrised. The caller's model,
    parameters and ``param.grad`` are not touched. Floating-point inputs/targets are cast to ``dtype``.
    This is the oracle the iterative methods are tested against (Sagun et al. 2017 use it for small nets).
    ``train_mode=True`` runs the copy in train mode (batch statistics, active dropout): the caller's BatchNorm
    running statistics are never updated, as with ``HessianOperator(train_mode=True)``.
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    checks.positive_int(chunk_size, "chunk_size")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(outputs, targets), got {type(loss_fn).__name__}")
    if not isinstance(train_mode, bool):
        raise TypeError(f"train_mode must be a bool, got {type(train_mode).__name__}")
    chosen = resolve_params(model, params)
    _inputs.finite_params(model, chosen)
    batches = as_batches(data)
    for i, (x, y) in enumerate(batches):  # inputs are cast to dtype below: any floating dtype will do
        where = "data" if len(batches) == 1 else f"data batch {i}"
        checks.tensor(x, f"{where} inputs")
        checks.tensor(y, f"{where} targets")
    positions = {id(p): i for i, p in enumerate(model.parameters())}
    index = [positions[id(p)] for p in chosen]
    clone = copy.deepcopy(model).to(dtype)
    clone_params = list(clone.parameters())
    wrt = [clone_params[i] for i in index]
    device = wrt[0].device
    n_total = sum(len(x) for x, _ in batches)
    numel = sum(p.numel() for p in wrt)

    def cast(t: torch.Tensor) -> torch.Tensor:
        t = t.to(device)
        return t.to(dtype) if t.is_floating_point() else t

    with torch.enable_grad(), _mode(clone, train_mode):
        grad = None
        for x, y in batches:
            loss = checked_loss(loss_fn, _inputs.run_model(clone, cast(x)), cast(y))
            g = torch.autograd.grad(loss, wrt, create_graph=True, allow_unused=True)
            g = flatten(zeros_if_none(g, wrt))
            g = g * (len(x) / n_total)
            grad = g if grad is None else grad + g
        assert grad is not None
        hess = torch.zeros(numel, numel, dtype=dtype, device=device)
        if not grad.requires_grad:
            return hess
        eye = torch.eye(numel, dtype=dtype, device=device)
        for start in range(0, numel, chunk_size):
            rows = eye[start : start + chunk_size]
            blocks = torch.autograd.grad(grad, wrt, rows, retain_graph=True, is_grads_batched=True, allow_unused=True)
            blocks = [
                torch.zeros(len(rows), *p.shape, dtype=dtype, device=device) if b is None else b
                for b, p in zip(blocks, wrt, strict=True)
            ]
            hess[start : start + len(rows)] = torch.cat([b.reshape(len(rows), -1) for b in blocks], dim=1)
    return (hess + hess.T) / 2
