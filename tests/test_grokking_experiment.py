"""The grokking notebooks' experiments: seeded fresh models, one-call modular runs, the train-logit cache of
``train_grokking``, and the XOR-cluster training of Xu et al. (2023) against the same run written out."""

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from labkit.grokking import (
    GrokRun,
    OneHotMLP,
    TwoLayerReLU,
    fresh_model,
    log_spaced_steps,
    logistic_loss,
    make_optimizer,
    modular_arithmetic,
    modular_run,
    plane_decision_maps,
    train_grokking,
    train_xor,
    xor_clusters,
    xor_loss,
)
from labkit.grokking.xor import FLIPPED_ACC, PLANE_SHARE, TEST_ACC, TRAIN_ACC
from labkit.training import accuracy, fit


def test_fresh_model_is_seeded_and_leaves_the_global_generator_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = fresh_model(11, seed=5, hidden=(16,), activation="quadratic", bias=False)
    assert torch.equal(torch.get_rng_state(), before)
    b = fresh_model(11, seed=5, hidden=(16,), activation="quadratic", bias=False)
    c = fresh_model(11, seed=6, hidden=(16,), activation="quadratic", bias=False)
    assert isinstance(a, OneHotMLP) and a.bias is None
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.embedding, c.embedding)
    torch.manual_seed(5)  # the same as seeding torch by hand and building the model
    ref = OneHotMLP(11, hidden=(16,), activation="quadratic", bias=False)
    assert torch.equal(ref.embedding, a.embedding)
    with pytest.raises(ValueError, match="seed"):
        fresh_model(11, seed=-1)
    wide = fresh_model(11, seed=5, hidden=(16,), activation="quadratic", bias=False, dtype=torch.float64)
    assert wide.embedding.dtype == torch.float64 and torch.equal(wide.embedding, a.embedding.double())
    with pytest.raises(TypeError, match="dtype"):
        fresh_model(11, seed=5, dtype=torch.float16)


def test_modular_run_trains_float64_weights():
    data = modular_arithmetic(11, train_fraction=0.5, seed=2)
    r = modular_run(data, seed=3, hidden=(8, 8), bias=False, lr=1e-2, weight_decay=0.0, loss="stablemax",
                    dtype=torch.float64, steps=3, eval_every=3, measures=("acc", "loss"), progress=False)
    assert all(p.dtype == torch.float64 for p in r.model.parameters())
    assert r.history.steps[-1] == 3


def test_modular_run_equals_the_three_steps_written_out():
    data = modular_arithmetic(11, train_fraction=0.5, seed=2)
    options = dict(steps=12, eval_every=4, measures=("acc", "loss", "weight_norm", "collapse"), progress=False)
    one_call = modular_run(data, seed=3, hidden=(16, 16), optimizer="perp_adamw", lr=1e-2, weight_decay=0.5,
                           **options)
    model = fresh_model(11, seed=3, hidden=(16, 16))
    by_hand = train_grokking(model, data, optimizer=make_optimizer(model, "perp_adamw", lr=1e-2, weight_decay=0.5),
                             **options)
    assert one_call.history.rows == by_hand.history.rows
    assert one_call.history.loss == by_hand.history.loss
    assert isinstance(one_call, GrokRun)
    with pytest.raises(dataclasses.FrozenInstanceError):
        one_call.summary = None  # results are frozen
    with pytest.raises(dataclasses.FrozenInstanceError):
        one_call.summary.memorize_step = 0
    with pytest.raises(TypeError, match="ModularSplit"):
        modular_run(xor_clusters(8, 8, dim=4), seed=0, steps=1)
    with pytest.raises(TypeError):
        modular_run(data, seed=0, steps=1, not_an_option=True)


def test_train_logit_columns_equal_a_fresh_forward_pass_at_every_evaluation():
    """The train logits are computed once per evaluation; every column still sees that evaluation's model."""
    data = modular_arithmetic(11, train_fraction=0.5, seed=0)
    model = fresh_model(11, seed=0, hidden=(16, 16))
    direct = {
        "direct_acc": lambda m: (m(data.train_x).argmax(-1) == data.train_y).float().mean().item(),
        "direct_loss": lambda m: F.cross_entropy(m(data.train_x), data.train_y).item(),
    }
    run = train_grokking(model, data, optimizer=make_optimizer(model, lr=3e-2), steps=20, eval_every=2,
                         measures=("acc", "loss"), extra_metrics=direct, progress=False)
    assert run.history["train_acc"] == run.history["direct_acc"]
    assert run.history["train_loss"] == pytest.approx(run.history["direct_loss"], rel=1e-6)
    assert len(set(run.history["train_loss"])) == len(run.history)  # a new value at every evaluation


def test_log_spaced_steps():
    assert log_spaced_steps(150) == [0, 1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150]
    assert log_spaced_steps(1) == [0, 1]
    assert log_spaced_steps(1000)[-3:] == [500, 700, 1000]
    with pytest.raises(ValueError, match="steps"):
        log_spaced_steps(0)


def test_logistic_loss_is_log_one_plus_exp():
    scores, y = torch.tensor([0.0, 2.0, -1.0]), torch.tensor([1.0, -1.0, -1.0])
    expected = torch.log(1 + torch.exp(-y * scores)).mean()
    torch.testing.assert_close(logistic_loss(scores, y), expected)
    with pytest.raises(ValueError, match="same shape"):
        logistic_loss(scores, y[:2])


def test_train_xor_equals_fit_with_the_metrics_written_out():
    data = xor_clusters(40, 80, dim=300, signal=8.0, noise_rate=0.1, seed=1)
    init = TwoLayerReLU(300, 32, init_scale=1e-3, generator=torch.Generator().manual_seed(0))
    ours = copy.deepcopy(init)
    history = train_xor(ours, data, lr=1.0, steps=10, progress=False)
    ref_model = copy.deepcopy(init)
    x, y, fl, basis = data.train_x, data.train_y, data.flipped, data.plane_basis()
    ref = fit(ref_model, lambda m, b: F.softplus(-b[1] * m(b[0])).mean(), (x, y),
              optimizer=torch.optim.SGD(ref_model.parameters(), lr=1.0), steps=10, eval_every=[0, 1, 2, 3, 5, 7, 10],
              metrics={"a": lambda m: accuracy(m, x, y), "f": lambda m: accuracy(m, x[fl], y[fl]),
                       "t": lambda m: accuracy(m, data.test_x, data.test_y),
                       "s": lambda m: ((m.weight @ basis).norm() / m.weight.norm()).item()}, progress=False)
    assert history.steps == ref.steps == [0, 1, 2, 3, 5, 7, 10]
    for ours_col, ref_col in ((TRAIN_ACC, "a"), (FLIPPED_ACC, "f"), (TEST_ACC, "t"), (PLANE_SHARE, "s")):
        assert history[ours_col] == ref[ref_col]
    assert sorted(history.snapshots) == history.steps
    torch.testing.assert_close(ours.weight, ref_model.weight)
    assert xor_loss(ours, (x, y)).item() == pytest.approx(logistic_loss(ours(x), y).item())
    with pytest.raises(TypeError, match="TwoLayerReLU"):
        train_xor(torch.nn.Linear(300, 1), data, steps=1)


def test_plane_decision_maps_equal_the_restricted_network():
    data = xor_clusters(8, 8, dim=50, signal=5.0, seed=0)
    net = TwoLayerReLU(50, 8, init_scale=1.0, generator=torch.Generator().manual_seed(0))
    grid = torch.linspace(-3, 3, 7)
    maps = plane_decision_maps({4: net.state_dict()}, data.plane_basis(), grid)
    uu, vv = torch.meshgrid(grid, grid, indexing="xy")
    expected = net.restricted(data.plane_basis())(torch.stack([uu.reshape(-1), vv.reshape(-1)], 1)).reshape(7, 7)
    assert list(maps) == [4]
    torch.testing.assert_close(maps[4], expected)
    with pytest.raises(ValueError, match="basis"):
        plane_decision_maps({}, torch.zeros(50, 3), grid)


def test_train_grokking_stop_when_ends_the_run_early_and_keeps_the_history_so_far():
    data = modular_arithmetic(11, train_fraction=0.5, seed=2)
    asked = []

    def stop_when(history):
        asked.append(history.steps[-1])
        return history.steps[-1] >= 4

    r = modular_run(data, seed=3, hidden=(8,), lr=1e-2, steps=20, eval_every=2, measures=("acc",),
                    stop_when=stop_when, progress=False)
    assert r.history.steps == [0, 2, 4] and asked == [0, 2, 4]
    # combined with stop_after_grok: either one stops the run
    r = modular_run(data, seed=3, hidden=(8,), lr=1e-2, steps=6, eval_every=2, measures=("acc",),
                    stop_after_grok=True, stop_when=lambda h: False, progress=False)
    assert r.history.steps == [0, 2, 4, 6]
    with pytest.raises(TypeError, match="stop_when"):
        modular_run(data, seed=3, hidden=(8,), steps=2, stop_when="soon", progress=False)
