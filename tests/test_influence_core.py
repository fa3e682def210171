"""Tests of labkit.influence's core: per-example gradients, influence scores, TracIn, leave-one-out retraining."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from labkit.influence import per_example_grads


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))


def _data(n: int = 11, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def _loop_grads(model, x, y, params=None):
    params = list(model.parameters()) if params is None else params
    rows = []
    for i in range(len(x)):
        g = torch.autograd.grad(F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]), params)
        rows.append(torch.cat([t.reshape(-1) for t in g]))
    return torch.stack(rows)


@pytest.mark.parametrize("chunk_size", ["auto", 1, 4, 100])
def test_per_example_grads_match_a_python_loop(chunk_size):
    model, (x, y) = _mlp(), _data()
    got = per_example_grads(model, F.cross_entropy, (x, y), chunk_size=chunk_size)
    torch.testing.assert_close(got, _loop_grads(model, x, y), atol=1e-6, rtol=1e-5)


def test_per_example_grads_batches_and_params_subset():
    model, (x, y) = _mlp(), _data()
    last = list(model[2].parameters())
    got = per_example_grads(model, F.cross_entropy, [(x[:4], y[:4]), (x[4:], y[4:])], params=last)
    torch.testing.assert_close(got, _loop_grads(model, x, y, last), atol=1e-6, rtol=1e-5)
    # the mean of the rows is the gradient of the mean loss
    full = torch.autograd.grad(F.cross_entropy(model(x), y), last)
    torch.testing.assert_close(got.mean(0), torch.cat([t.reshape(-1) for t in full]), atol=1e-6, rtol=1e-5)


def test_per_example_grads_leaves_model_as_found():
    model, (x, y) = _mlp(), _data()
    model.train()
    before = [p.detach().clone() for p in model.parameters()]
    per_example_grads(model, F.cross_entropy, (x, y))
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_per_example_grads_bad_input():
    model, (x, y) = _mlp(), _data()
    with pytest.raises(ValueError, match="chunk_size"):
        per_example_grads(model, F.cross_entropy, (x, y), chunk_size=0)
    with pytest.raises(TypeError, match="loss_fn"):
        per_example_grads(model, "ce", (x, y))
    with pytest.raises(ValueError, match="params"):
        per_example_grads(model, F.cross_entropy, (x, y), params=[nn.Parameter(torch.zeros(2))])
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        per_example_grads(model, F.cross_entropy, (bad, y))
