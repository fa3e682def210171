"""labkit.autograd: parameters as vectors, the model-state guard, the generator rule, batches and chunks."""

import pytest
import torch
from torch import nn

from labkit.autograd import (
    as_batches,
    as_pair,
    check_generator,
    even_chunks,
    flatten,
    preserve_model,
    rademacher,
    randint,
    randn,
    randperm,
    resolve_params,
    train_mode,
    unflatten,
    zeros_if_none,
)


def busy_model() -> nn.Module:
    """BatchNorm, Dropout, a frozen parameter, a forward hook and existing gradients."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4, 2))
    model[4].bias.requires_grad_(False)
    model[0].weight.grad = torch.ones_like(model[0].weight)
    model[1].eval()  # a submodule whose mode differs from its parent's
    model.hook_calls = 0

    def hook(*_):
        model.hook_calls += 1

    model[0].register_forward_hook(hook)
    return model


def snapshot(model: nn.Module) -> dict:
    return {
        "params": [p.detach().clone() for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "flags": [p.requires_grad for p in model.parameters()],
        "buffers": [b.clone() for b in model.buffers()],
        "modes": [m.training for m in model.modules()],
    }


def same(a: dict, b: dict) -> bool:
    eq = lambda x, y: (x is None and y is None) or (x is not None and y is not None and torch.equal(x, y))  # noqa: E731
    return all(eq(x, y) for x, y in zip(a["params"] + a["grads"] + a["buffers"],
                                        b["params"] + b["grads"] + b["buffers"], strict=True)) \
        and a["flags"] == b["flags"] and a["modes"] == b["modes"]


def test_preserve_model_restores_everything_a_measurement_may_touch():
    model = busy_model()
    before = snapshot(model)
    refs = list(model.parameters())
    with preserve_model(model):
        model.train()
        model(torch.randn(8, 3)).sum().backward()  # updates BN statistics and grads
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
                p.requires_grad_(True)
        model[0].weight.grad = None
    assert same(before, snapshot(model))
    assert all(a is b for a, b in zip(refs, model.parameters(), strict=True)), "parameters must stay the same objects"
    assert model.hook_calls == 1, "hooks stay registered"


def test_preserve_model_restores_on_error_and_can_leave_parameters():
    model = busy_model()
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="boom"), preserve_model(model):
        model.train()
        raise RuntimeError("boom")
    assert same(before, snapshot(model))
    with preserve_model(model, params=False), torch.no_grad():
        model[0].weight.add_(1.0)
    assert not torch.equal(model[0].weight, before["params"][0])


def test_train_mode_restores_each_submodules_own_flag():
    model = busy_model()
    modes = [m.training for m in model.modules()]
    with train_mode(model, False):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == modes
    with train_mode(model, True):
        assert all(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == modes


def test_resolve_params_refuses_foreign_and_repeated_parameters():
    model, other = busy_model(), nn.Linear(2, 2)
    assert resolve_params(model) == [p for p in model.parameters() if p.requires_grad]
    assert resolve_params(model, [model[0].weight]) == [model[0].weight]
    with pytest.raises(ValueError, match=r"params\[0\] is not a parameter of model"):
        resolve_params(model, [other.weight])
    with pytest.raises(ValueError, match="twice"):
        resolve_params(model, [model[0].weight, model[0].weight])
    with pytest.raises(ValueError, match="no parameters"):
        resolve_params(model, [])
    with pytest.raises(TypeError, match="model must be"):
        resolve_params("model")
    with pytest.raises(TypeError, match="params must be"):
        resolve_params(model, model[0].weight)


def test_flatten_unflatten_round_trip_and_shape_errors():
    ts = [torch.randn(2, 3), torch.randn(4), torch.randn(1, 1, 2)]
    v = flatten(ts)
    assert v.shape == (12,)
    back = unflatten(v, ts)
    assert all(torch.equal(a, b) for a, b in zip(ts, back, strict=True))
    with pytest.raises(ValueError, match="12 entries"):
        unflatten(torch.zeros(11), ts)
    assert torch.equal(zeros_if_none([None, ts[1]], ts[:2])[0], torch.zeros(2, 3))


def test_generator_rule_draws_on_the_generator_and_moves_to_the_device():
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = randn((3, 2), generator=g1, device="cpu", dtype=torch.float64)
    b = torch.randn((3, 2), generator=g2, dtype=torch.float64)
    assert torch.equal(a, b) and a.dtype == torch.float64
    assert sorted(randperm(6, generator=torch.Generator().manual_seed(1)).tolist()) == list(range(6))
    r = rademacher((100,), generator=torch.Generator().manual_seed(0))
    assert set(r.tolist()) == {-1.0, 1.0}
    assert randint(0, 3, (50,), generator=torch.Generator().manual_seed(0)).max() < 3
    with pytest.raises(TypeError, match="generator must be"):
        check_generator(5)
    if torch.cuda.is_available():  # pragma: no cover - exercised on GPU machines
        assert randn((2,), generator=torch.Generator().manual_seed(0), device="cuda").device.type == "cuda"


def test_batches_pairs_and_chunks():
    x, y = torch.randn(5, 2), torch.arange(5)
    assert len(as_batches((x, y))) == 1 and len(as_batches([(x, y), (x[:0], y[:0]), (x, y)])) == 2
    with pytest.raises(TypeError, match="data must be"):
        as_batches(x)
    with pytest.raises(TypeError, match="data batch 0"):
        as_batches([x])
    with pytest.raises(ValueError, match="data is empty"):
        as_batches((x[:0], y[:0]))
    with pytest.raises(ValueError, match="4 rows but targets have 5"):
        as_batches((x[:4], y))
    assert as_pair((x, y))[0] is x
    with pytest.raises(ValueError, match="as many targets"):
        as_pair((x, y[:2]))
    assert [s.stop - s.start for s in even_chunks(50, 32)] == [25, 25]
    assert [s.stop - s.start for s in even_chunks(50, 16)] == [13, 13, 13, 11]
    assert even_chunks(0, 4) == []
    with pytest.raises(ValueError, match="chunk size"):
        even_chunks(5, 0)
