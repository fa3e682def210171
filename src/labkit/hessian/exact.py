"""The exact Hessian matrix of the mean loss, for models up to a few thousand parameters."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from labkit.autograd import as_batches, flatten, resolve_params, zeros_if_none
from labkit.autograd import train_mode as _mode
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
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    chosen = resolve_params(model, params)
    batches = as_batches(data)
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
            loss = checked_loss(loss_fn, clone(cast(x)), cast(y))
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
