"""Every SAM-pillar measurement leaves the caller's model as found.

The model has BatchNorm (running statistics), Dropout, a frozen parameter, a forward hook, existing ``.grad``
and mixed train/eval modes (a BatchNorm in eval inside a model in train, the case ``worst_case_sharpness``
once got wrong). After each call the parameter values, gradients, ``requires_grad`` flags, every submodule's
``training`` flag and every buffer are bit for bit as before, and the hook is still registered and fires.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from model_state import assert_same, busy_mlp, snapshot
from torch import nn
from torch.nn import functional as F

from labkit.autograd import train_mode
from labkit.sam import (
    frozen_running_stats,
    hessian_top_eigenvalue,
    hessian_trace,
    make_optimizer,
    matched_loss_sharpness,
    norm_parameters,
    sharpness_measures,
    snapshot_top_eigenvalue,
    train_from,
    worst_case_sharpness,
)

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def busy_model(bn_eval: bool) -> tuple[nn.Module, list[int]]:
    return busy_mlp(data()[0], bn_eval=bn_eval)


def data(n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)








def _trained_pair(model: nn.Module) -> Any:
    x, y = data()
    gd = train_from(model, (x, y), kind="sgd", lr=0.05, steps=3, eval_every=1, snapshots=[1, 2, 3], progress=False)
    sam = train_from(model, (x, y), kind="sam", lr=0.05, steps=3, eval_every=1, snapshots=[1, 2, 3],
                     progress=False)
    return matched_loss_sharpness(model, gd.history, sam.history, (x, y))


def _snapshot_eigenvalue(model: nn.Module) -> Any:
    x, y = data()
    run = train_from(model, (x, y), kind="sam", lr=0.05, steps=2, snapshots=[2], progress=False)
    return snapshot_top_eigenvalue(model, run.history, 2, (x, y))


def _frozen_stats(model: nn.Module) -> None:
    x, _ = data()
    with frozen_running_stats(model), train_mode(model, True), torch.no_grad():
        model(x)  # updates the running statistics inside the block; they come back after it


CALLS: dict[str, Callable[[nn.Module], Any]] = {
    "hessian_top_eigenvalue": lambda m: hessian_top_eigenvalue(m, F.cross_entropy, data(), tol=1e-3),
    "hessian_top_eigenvalue(params)": lambda m: hessian_top_eigenvalue(
        m, F.cross_entropy, data(), params=[m[4].weight], tol=1e-3),
    "hessian_trace": lambda m: hessian_trace(m, F.cross_entropy, data(), samples=4),
    "worst_case_sharpness": lambda m: worst_case_sharpness(m, F.cross_entropy, data(), rho=0.1, steps=3),
    "worst_case_sharpness(adaptive, m=4)": lambda m: worst_case_sharpness(
        m, F.cross_entropy, data(), rho=0.3, adaptive=True, eta=0.01, steps=3, batch_size=4),
    "worst_case_sharpness(params)": lambda m: worst_case_sharpness(
        m, F.cross_entropy, data(), rho=0.1, steps=2, params=[m[0].weight]),
    "sharpness_measures": lambda m: sharpness_measures(m, data(), trace_samples=3, ascent_steps=2, m=6),
    "train_from": lambda m: train_from(m, data(), kind="sam", lr=0.1, steps=2, test=data(), progress=False),
    "train_from(sam-on)": lambda m: train_from(m, data(), kind="sam-on", lr=0.1, steps=2, progress=False),
    "snapshot_top_eigenvalue": _snapshot_eigenvalue,
    "matched_loss_sharpness": _trained_pair,
    "make_optimizer": lambda m: make_optimizer(m, "asam", lr=0.1, momentum=0.9),
    "norm_parameters": norm_parameters,
    "frozen_running_stats": _frozen_stats,
}


@pytest.mark.parametrize("bn_eval", [False, True], ids=["all-train", "bn-in-eval"])
@pytest.mark.parametrize("name", sorted(CALLS))
def test_measurement_leaves_the_model_as_found(name: str, bn_eval: bool) -> None:
    model, calls = busy_model(bn_eval)
    before = snapshot(model)
    reference = copy.deepcopy(model)
    CALLS[name](model)
    assert_same(before, snapshot(model))
    # the hook is still there and still fires; the model computes what an untouched copy computes
    model.eval()
    reference.eval()
    x, _ = data()
    with torch.no_grad():
        expected = reference(x)  # (the deep copy carries the hook too)
        calls.clear()
        assert torch.equal(model(x), expected)
    assert calls == [len(x)]


def test_worst_case_sharpness_restores_a_batchnorm_left_in_eval() -> None:
    """The listed case: a BatchNorm in eval inside a model in train came back in train."""
    model, _ = busy_model(bn_eval=True)
    worst_case_sharpness(model, F.cross_entropy, data(), rho=0.1, steps=2)
    assert model.training and not model[1].training and model[3].training


def test_measurements_do_not_depend_on_the_callers_mode() -> None:
    """Measurements run in eval mode: Dropout off, BatchNorm on its running statistics."""
    a, _ = busy_model(bn_eval=False)
    b, _ = busy_model(bn_eval=True)
    b.eval()
    for fn in (lambda m: worst_case_sharpness(m, F.cross_entropy, data(), rho=0.1, steps=3),
               lambda m: hessian_trace(m, F.cross_entropy, data(), samples=4,
                                       generator=torch.Generator().manual_seed(0))):
        assert float(fn(a)) == float(fn(b))
