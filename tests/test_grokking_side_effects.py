"""Every grokking-pillar measurement leaves the caller's model as found.

The model has BatchNorm (running statistics away from their start), Dropout, a frozen parameter, a forward
hook, existing ``.grad`` and mixed train/eval modes. After each call the parameter values, gradients,
``requires_grad`` flags, every submodule's ``training`` flag and every buffer are bit for bit as before, and
the hook is still registered and fires. The optimizer wrappers are built on the model without touching it,
and their ``step`` leaves ``.grad`` as the true gradient.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from model_state import assert_same, busy_mlp
from model_state import snapshot as model_snapshot
from torch import nn
from torch.nn import functional as F

from labkit.data.core import Split
from labkit.grokking import (
    GrokfastEMA,
    OneHotMLP,
    PerpGrad,
    fourier_concentration,
    make_optimizer,
    modular_arithmetic,
    nlm_cosine,
    parameter_drift,
    snapshot,
    weight_norm,
)
from labkit.grokking.experiment import check_data


def busy_model(bn_eval: bool) -> tuple[nn.Module, list[int]]:
    return busy_mlp(data()[0], bn_eval=bn_eval)


def data(n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)








def _loss(m: nn.Module) -> torch.Tensor:
    x, y = data()
    return F.cross_entropy(m(x), y)


CALLS: dict[str, Callable[[nn.Module], Any]] = {
    "nlm_cosine(callable)": lambda m: nlm_cosine(m, _loss),
    "nlm_cosine(params)": lambda m: nlm_cosine(m, _loss, params=[m[4].weight]),
    "nlm_cosine(tensor)": lambda m: nlm_cosine(m, _loss(m)),
    "weight_norm": weight_norm,
    "snapshot": snapshot,
    "parameter_drift": lambda m: parameter_drift(m, {n: p.detach() + 1 for n, p in m.named_parameters()}),
    "fourier_concentration(weights)": lambda m: fourier_concentration(m[4].weight.T, top_k=1),
    "check_data": lambda m: check_data(m, Split(*data(), *data())),
    "make_optimizer(adamw)": lambda m: make_optimizer(m, "adamw"),
    "make_optimizer(perp_sgd)": lambda m: make_optimizer(m, "perp_sgd", lr=0.1),
    "GrokfastEMA": lambda m: GrokfastEMA(m.parameters(), lr=1e-3),
    "PerpGrad": lambda m: PerpGrad(m.parameters(), torch.optim.SGD, lr=0.1),
}


@pytest.mark.parametrize("bn_eval", [False, True], ids=["all-train", "bn-in-eval"])
@pytest.mark.parametrize("name", sorted(CALLS))
def test_measurement_leaves_the_model_as_found(name: str, bn_eval: bool) -> None:
    model, calls = busy_model(bn_eval)
    before = model_snapshot(model)
    reference = copy.deepcopy(model)
    CALLS[name](model)
    after = model_snapshot(model)
    if name == "nlm_cosine(tensor)":  # the caller built the loss (its forward moved the statistics), not us
        before["buffers"], after["buffers"] = {}, {}
    assert_same(before, after)
    model.eval()
    reference.eval()
    x, _ = data()
    with torch.no_grad():
        expected = reference(x) if name != "nlm_cosine(tensor)" else model(x)
        calls.clear()
        assert torch.equal(model(x), expected)
    assert calls == [len(x)]


def test_nlm_cosine_in_train_mode_does_not_move_the_running_statistics():
    model, _ = busy_model(False)
    stats = model[1].running_mean.clone(), model[1].num_batches_tracked.clone()
    nlm_cosine(model, _loss)
    assert torch.equal(model[1].running_mean, stats[0]) and torch.equal(model[1].num_batches_tracked, stats[1])


@pytest.mark.parametrize("name", ["perp_adamw", "grokfast_adamw"])
def test_wrapper_step_leaves_the_true_gradient(name: str) -> None:
    p = 7
    split = modular_arithmetic(p, train_fraction=0.5)
    torch.manual_seed(0)
    model = OneHotMLP(p, hidden=(8,))
    opt = make_optimizer(model, name)
    opt.zero_grad()
    F.cross_entropy(model(split.train_x), split.train_y).backward()
    grads = {n: q.grad.clone() for n, q in model.named_parameters()}
    opt.step()
    for n, q in model.named_parameters():
        assert torch.equal(q.grad, grads[n]), n
