"""labkit.dynamics.opposing (Rosenfeld & Risteski, arXiv 2311.04163): the anti-phase correlation on sine waves,
planted opposing groups recovered from synthetic loss curves, the toy data against its definition, and the
recorded sharpness against the exact Hessian."""

import math

import pytest
import torch

from labkit.dynamics.opposing import (
    OpposingData,
    antiphase_correlation,
    find_opposing_groups,
    opposing_loss,
    opposing_mlp,
    opposing_signals_data,
    train_opposing,
)
from labkit.hessian import exact_hessian

t = torch.linspace(0, 8 * math.pi, 401, dtype=torch.float64)


def test_antiphase_correlation_on_sine_waves():
    assert antiphase_correlation(torch.sin(t), -torch.sin(t)) == pytest.approx(-1.0, abs=1e-12)
    assert antiphase_correlation(torch.sin(t), 3 * torch.sin(t) + 2) == pytest.approx(1.0, abs=1e-12)
    assert abs(antiphase_correlation(torch.sin(t), torch.cos(t))) < 0.02
    # a shared downward trend does not hide the anti-phase swing (changes, not levels, are correlated)
    trend = torch.exp(-t / 10)
    assert antiphase_correlation(trend + 0.1 * torch.sin(3 * t), trend - 0.1 * torch.sin(3 * t)) < -0.8
    assert math.isnan(antiphase_correlation(torch.ones(5), torch.arange(5.0)))


def test_find_opposing_groups_recovers_planted_groups():
    g = torch.Generator().manual_seed(0)
    T, n = 200, 50
    losses = 1 + 0.01 * torch.randn(T, n, generator=g, dtype=torch.float64)
    swing = 0.5 * torch.sin(torch.arange(T, dtype=torch.float64) * 0.7)
    a, b = torch.tensor([3, 17, 40]), torch.tensor([5, 9, 22])
    losses[:, a] += swing[:, None]
    losses[:, b] -= swing[:, None]
    found = find_opposing_groups(losses, k=3)
    assert {frozenset(found.group_a.tolist()), frozenset(found.group_b.tolist())} == {
        frozenset(a.tolist()), frozenset(b.tolist())}
    assert found.correlation < -0.99
    assert found.scores.shape == (n,)
    # group_a is the group whose loss rises first (swing rises at step 1 for a)
    assert set(found.group_a.tolist()) == set(a.tolist())


def test_data_matches_its_definition():
    data = opposing_signals_data(60, 4, group_size=5, magnitude=7.0, generator=torch.Generator().manual_seed(1))
    assert data.x.shape == (60, 5) and data.y.shape == (60,)
    extra = data.x[:, -1]
    assert torch.equal(torch.nonzero(extra).flatten().sort().values,
                       torch.cat([data.group_a, data.group_b]).sort().values)
    assert torch.all(extra[data.group_a] == 7.0) and torch.all(data.y[data.group_a] == 1)
    assert torch.all(data.y[data.group_b] == -1)
    rest = data.without_groups()
    assert isinstance(rest, OpposingData) and rest.x.shape == (50, 5) and torch.all(rest.x[:, -1] == 0)


def test_recorded_losses_and_sharpness_against_the_exact_hessian():
    data = opposing_signals_data(40, 3, group_size=4, magnitude=5.0, generator=torch.Generator().manual_seed(2),
                                 dtype=torch.float64)
    run = train_opposing(data, hidden=6, lr=0.01, steps=4, every=2, init_generator=torch.Generator().manual_seed(3),
                         generator=torch.Generator().manual_seed(4))
    assert run.losses.shape == (4, 40) and run.sharpness_steps == [0, 2, 4]
    model = opposing_mlp(4, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    per0 = 0.5 * (model(data.x).reshape(-1) - data.y) ** 2
    assert torch.allclose(run.losses[0], per0)
    lam = torch.linalg.eigvalsh(exact_hessian(model, opposing_loss, (data.x, data.y)))[-1]
    assert run.sharpness[0] == pytest.approx(float(lam), rel=1e-5)


def test_bad_input():
    with pytest.raises(ValueError, match="loss_a and loss_b"):
        antiphase_correlation(torch.ones(4), torch.ones(5))
    with pytest.raises(ValueError, match="loss_a"):
        antiphase_correlation(torch.ones(2), torch.ones(2))
    with pytest.raises(ValueError, match="k"):
        find_opposing_groups(torch.rand(10, 6), k=4)
    with pytest.raises(ValueError, match="per_example_losses"):
        find_opposing_groups(torch.rand(10), k=1)
    with pytest.raises(ValueError, match="group_size"):
        opposing_signals_data(10, 3, group_size=20, magnitude=1.0)
    with pytest.raises(ValueError, match="magnitude"):
        opposing_signals_data(10, 3, group_size=2, magnitude=0.0)
    with pytest.raises(TypeError, match="data"):
        train_opposing((torch.zeros(3, 2), torch.zeros(3)), hidden=2, lr=0.1, steps=1)
    with pytest.raises(ValueError, match="activation"):
        opposing_mlp(3, 2, activation="gelu")
