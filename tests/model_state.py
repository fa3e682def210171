"""What a measurement must leave as found, for the side-effect tests of every pillar: parameter values and
objects, ``.grad``, ``requires_grad``, every submodule's train/eval mode, buffers and registered hooks."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def snapshot(model: nn.Module) -> dict[str, Any]:
    return {
        "params": {n: p.detach().clone() for n, p in model.named_parameters()},
        "objects": {n: id(p) for n, p in model.named_parameters()},
        "grads": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "training": {n: m.training for n, m in model.named_modules()},
        "buffers": {n: b.clone() for n, b in model.named_buffers()},
        "hooks": {n: list(m._forward_hooks) for n, m in model.named_modules()},
        "pre_hooks": {n: list(m._forward_pre_hooks) for n, m in model.named_modules()},
        "backward_hooks": {n: list(m._backward_hooks) for n, m in model.named_modules()},
    }


def assert_same(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Every entry of two snapshots agrees (tensors bit for bit)."""
    for key in ("objects", "requires_grad", "training", "hooks", "pre_hooks", "backward_hooks"):
        assert before[key] == after[key], f"{key} changed"
    for key in ("params", "buffers"):
        assert before[key].keys() == after[key].keys(), f"{key} names changed"
        for name, value in before[key].items():
            assert torch.equal(value, after[key][name]), f"{key} {name} changed"
    for name, grad in before["grads"].items():
        other = after["grads"][name]
        assert (grad is None) == (other is None), f".grad of {name} appeared or vanished"
        assert grad is None or torch.equal(grad, other), f".grad of {name} changed"


def busy_mlp(x: torch.Tensor, *, hidden: int = 6, classes: int = 3, bn_eval: bool = False,
             dtype: torch.dtype = torch.float32) -> tuple[nn.Module, list[int]]:
    """An MLP with BatchNorm (statistics away from their start), Dropout, a frozen bias, a forward hook that
    counts calls, and existing gradients (None on one parameter). ``bn_eval`` leaves BatchNorm in eval mode
    inside a model in train mode."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(x.shape[1], hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(hidden, classes)).to(dtype)
    with torch.no_grad():
        model.train()(x.to(dtype) * 3 + 1)
    model[0].bias.requires_grad_(False)
    for i, p in enumerate(model.parameters()):
        p.grad = None if i == 2 else torch.full_like(p, 0.25 * (i + 1))
    model.train()
    if bn_eval:
        model[1].eval()
    calls: list[int] = []
    model[4].register_forward_hook(lambda module, args, out: calls.append(out.shape[0]))
    return model, calls
