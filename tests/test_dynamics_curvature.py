"""labkit.dynamics.curvature: mini-batch top eigenvalues against exact Hessians, the fits against closed forms,
max_stable_lr against the 2/lambda bound of gradient descent on a quadratic, the learning-rate bank against
separate runs of fit."""

import copy
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from labkit.dynamics import (
    RegressionBank,
    batch_top_eigenvalue,
    curvature_sweep,
    inverse_batch_fit,
    loglog_slope,
    max_stable_lr,
    regression_mlp,
    regression_train_fn,
    spiked_regression,
    stable_lr_sweep,
)
from labkit.hessian import exact_hessian
from labkit.training import fit


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(n=5, d=3, width=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = spiked_regression(n, d, spike=4.0, generator=g)
    return regression_mlp(d, width=width, generator=g).double(), x.double(), y.double()


def top_exact(model, x, y):
    return float(torch.linalg.eigvalsh(exact_hessian(model, F.mse_loss, (x, y)))[-1])


def test_batch_values_are_top_eigenvalues_of_exact_minibatch_hessians():
    model, x, y = tiny()
    B = 3
    exact = [top_exact(model, x[list(s)], y[list(s)]) for s in itertools.combinations(range(len(x)), B)]
    stats = batch_top_eigenvalue(model, F.mse_loss, (x, y), batch_size=B, batches=6,
                                 generator=torch.Generator().manual_seed(1), tol=1e-10)
    assert stats.values.shape == (6,) and stats.batch_size == B and stats.converged
    for idx, v in zip(stats.indices, stats.values, strict=True):  # the recorded batches give the values
        assert float(v) == pytest.approx(top_exact(model, x[idx], y[idx]), rel=1e-7)
    for v in stats.values:  # each value is the top eigenvalue of one B-subset's exact Hessian
        assert min(abs(float(v) - e) for e in exact) < 1e-7 * max(exact)
    assert stats.full_batch == pytest.approx(top_exact(model, x, y), rel=1e-8)
    assert stats.mean == pytest.approx(float(stats.values.mean()))
    assert stats.std == pytest.approx(float(stats.values.std()))


def test_full_size_batches_equal_the_full_batch_and_jensen_holds_on_average():
    model, x, y = tiny(n=8)
    full = batch_top_eigenvalue(model, F.mse_loss, (x, y), batch_size=8, batches=2,
                                generator=torch.Generator().manual_seed(0), tol=1e-10)
    assert torch.allclose(full.values, torch.full((2,), full.full_batch, dtype=torch.float64), rtol=1e-7)
    # the top eigenvalue is convex and H is the average of the mini-batch Hessians: E lambda(H_B) >= lambda(H)
    exact = [top_exact(model, x[list(s)], y[list(s)]) for s in itertools.combinations(range(8), 2)]
    assert sum(exact) / len(exact) >= full.full_batch


def test_batch_top_eigenvalue_leaves_the_model_as_found():
    model, x, y = tiny()
    model.train()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    before = copy.deepcopy(model.state_dict())
    batch_top_eigenvalue(model, F.mse_loss, (x, y), batch_size=2, batches=2)
    assert model.training
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_batch_top_eigenvalue_bad_input():
    model, x, y = tiny()
    with pytest.raises(ValueError, match="batch_size"):
        batch_top_eigenvalue(model, F.mse_loss, (x, y), batch_size=6, batches=1)
    with pytest.raises(ValueError, match="batches"):
        batch_top_eigenvalue(model, F.mse_loss, (x, y), batch_size=2, batches=0)
    with pytest.raises(TypeError, match="model"):
        batch_top_eigenvalue("net", F.mse_loss, (x, y), batch_size=2, batches=1)
    with pytest.raises(TypeError, match="generator"):
        batch_top_eigenvalue(model, F.mse_loss, (x, y), batch_size=2, batches=1, generator=3)
    with pytest.raises((TypeError, ValueError)):
        batch_top_eigenvalue(model, F.mse_loss, x, batch_size=2, batches=1)


def test_inverse_batch_fit_and_loglog_slope_recover_closed_forms():
    b = torch.tensor([2.0, 4, 8, 16, 32])
    fit_ = inverse_batch_fit(b, 3.0 + 40.0 / b)
    assert fit_.intercept == pytest.approx(3.0) and fit_.slope == pytest.approx(40.0) and fit_.r2 == pytest.approx(1)
    assert torch.allclose(fit_.predict([8.0]), torch.tensor([8.0], dtype=torch.float64))
    assert loglog_slope(b, 0.3 * b ** 0.5) == pytest.approx(0.5)
    assert loglog_slope(b, 2.0 * b) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same length"):
        inverse_batch_fit([1, 2], [1.0])
    with pytest.raises(ValueError, match="positive"):
        loglog_slope([1, 2], [1.0, -1.0])
    with pytest.raises(ValueError, match="finite"):
        inverse_batch_fit([1, 2], [1.0, math.nan])


def quadratic_train_fn(lam, steps=50):
    """Gradient descent on lam/2 w^2 from w = 1: stable iff lr < 2 / lam."""
    def train(lr, batch_size):
        w, losses = 1.0, [0.5 * lam]
        for _ in range(steps):
            w -= lr * lam * w
            losses.append(0.5 * lam * w * w)
        return losses
    return train


def test_max_stable_lr_is_the_grid_point_below_two_over_lambda():
    lam = 4.0  # 2 / lam = 0.5
    grid = [0.1 * 1.25 ** k for k in range(12)]
    res = max_stable_lr(quadratic_train_fn(lam), grid, batch_size=1)
    assert res.lr == max(g for g in grid if g < 2 / lam)
    assert res.diverged[-1] and not any(res.diverged[:-1]) and res.lrs == tuple(sorted(grid))[:len(res.diverged)]
    assert "diverged" in res.criterion

    def vectorized(lrs, batch_size):
        return torch.stack([torch.tensor(quadratic_train_fn(lam)(lr, batch_size)) for lr in lrs])

    same = max_stable_lr(vectorized, grid, batch_size=1, vectorized=True)
    assert same.lr == res.lr and len(same.diverged) == len(grid)
    with pytest.raises(ValueError, match="extend lrs downwards"):
        max_stable_lr(quadratic_train_fn(lam), [0.6, 0.7], batch_size=1)
    with pytest.raises(ValueError, match="lrs"):
        max_stable_lr(quadratic_train_fn(lam), [], batch_size=1)
    with pytest.raises(TypeError, match="train_fn"):
        max_stable_lr(3, grid, batch_size=1)
    with pytest.raises(ValueError, match=r"\(2, T\)"):
        max_stable_lr(lambda lrs, b: torch.ones(3, 2), [0.1, 0.2], batch_size=1, vectorized=True)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_learning_rate_bank_matches_separate_fit_runs(optimizer):
    g = torch.Generator().manual_seed(0)
    x, y = spiked_regression(40, 6, generator=g)
    model = regression_mlp(6, width=5, generator=g)
    before = copy.deepcopy(model.state_dict())
    lrs = (0.01, 0.05)
    curves = regression_train_fn(model, (x, y), optimizer=optimizer, steps=15, seed=3)(lrs, 8)
    assert curves.shape == (2, 2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    for lr, row in zip(lrs, curves, strict=True):
        net = copy.deepcopy(model)
        opt = (torch.optim.SGD(net.parameters(), lr=lr) if optimizer == "sgd"
               else torch.optim.Adam(net.parameters(), lr=lr, eps=1e-16 / lr))
        fit(net, lambda m, b: F.mse_loss(m(b[0]), b[1]), (x, y), optimizer=opt, steps=15, batch_size=8, seed=3,
            progress=False)
        with torch.no_grad():
            assert float(row[0]) == pytest.approx(float(F.mse_loss(model(x), y)), rel=1e-5)
            assert float(row[1]) == pytest.approx(float(F.mse_loss(net(x), y)), rel=1e-4)


def test_bank_marks_blown_up_copies_and_keeps_the_others():
    g = torch.Generator().manual_seed(0)
    x, y = spiked_regression(64, 10, generator=g)
    model = regression_mlp(10, width=8, generator=g)
    curves = regression_train_fn(model, (x, y), steps=30)((0.01, 100.0), 4)
    assert math.isfinite(curves[0, 1]) and curves[0, 1] < curves[0, 0]
    assert math.isinf(curves[1, 1])
    bank = RegressionBank(model, [1.0, 2.0])
    assert bank(x).shape == (2, 64, 1) and torch.allclose(bank(x)[0], model(x), atol=1e-6)
    with pytest.raises(TypeError, match="regression_mlp"):
        regression_train_fn(nn.Linear(10, 1), (x, y))
    with pytest.raises(ValueError, match="optimizer"):
        regression_train_fn(model, (x, y), optimizer="lbfgs")


def test_sweeps():
    g = torch.Generator().manual_seed(0)
    x, y = spiked_regression(64, 12, generator=g)
    model = regression_mlp(12, width=8, generator=g)
    sweep = curvature_sweep(model, F.mse_loss, (x, y), batch_sizes=[16, 2, 4], batches=2, generator=g)
    assert sweep.batch_sizes == (2, 4, 16) and sweep.means.shape == (3,) and len(sweep.stats) == 3
    assert sweep.means[0] > sweep.full_batch
    lrs = [0.01 * 2 ** (k / 2) for k in range(16)]
    res = stable_lr_sweep(model, (x, y), batch_sizes=[2, 8], lrs=lrs, steps=20)
    assert res.max_lrs.shape == (2,) and res.max_lrs[1] >= res.max_lrs[0]
    assert math.isfinite(res.slope()) and res.slope(max_batch=8) == res.slope()
    with pytest.raises(ValueError, match="at least two"):
        curvature_sweep(model, F.mse_loss, (x, y), batch_sizes=[4], batches=1)
