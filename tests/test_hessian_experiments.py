"""The Hessian notebooks' experiments (labkit.hessian.experiments, the approximate-Newton study in
labkit.hessian.newton and the scalar-network runs in labkit.hessian.scalar), on tiny problems."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from labkit.hessian import exact_hessian, softmax_regression_hessian, softmax_regression_hessian_diagonal
from labkit.hessian.experiments import (
    binary_accuracy,
    copy_generator,
    edge_of_stability_runs,
    gradient_subspace_runs,
    half_squared_error,
    logistic_loss,
    rescaled_copy,
    rescaling_curves,
    seeded_init,
    sharpness,
    train_aligned_heads,
    train_network,
    width_class_spectra,
)
from labkit.hessian.newton import (
    DescentRun,
    NewtonRun,
    approximate_newton_runs,
    contraction_rate,
    gradient_descent,
    hessian_approximations,
    softmax_regression_loss_grad,
    steps_to,
    tuned_gradient_descent,
)
from labkit.hessian.scalar import gfs_sharpness, run_scalar, scalar_loss
from labkit.models import mlp


def _data(n=40, d=64, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, c, (n,), generator=g)


def test_seeded_init_is_repeatable_and_restores_the_global_generator():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    with seeded_init(7):
        a = mlp(4, [3], 2)
    assert torch.equal(torch.random.get_rng_state(), before)
    with seeded_init(7):
        b = mlp(4, [3], 2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    with pytest.raises(ValueError, match="seed"):
        with seeded_init(-1):
            pass


def test_copy_generator_gives_the_same_draws_and_leaves_the_original():
    g = torch.Generator().manual_seed(3)
    twin = copy_generator(g)
    assert torch.equal(torch.randn(5, generator=twin), torch.randn(5, generator=g))
    assert copy_generator(None) is None
    with pytest.raises(TypeError):
        copy_generator(3)


def test_train_network_stops_at_the_target_loss_and_checks_its_options():
    x, y = _data()
    with seeded_init(0):
        net = mlp(64, [16], 3)
    history = train_network(net, (x, y), lr=1e-2, steps=2000, target_loss=0.5)
    assert history.loss[-1] < 0.5 and len(history.loss) < 2000
    assert all(v >= 0.5 for v in history.loss[:-1])
    with pytest.raises(ValueError, match="optimizer"):
        train_network(net, (x, y), lr=0.1, steps=1, optimizer="lbfgs")
    with pytest.raises(ValueError, match="lr"):
        train_network(net, (x, y), lr=0.0, steps=1)
    with pytest.raises(ValueError, match="target_loss"):
        train_network(net, (x, y), lr=0.1, steps=1, target_loss=-1.0)
    with pytest.raises(ValueError, match="batch_seed"):
        train_network(net, (x, y), lr=0.1, steps=1, batch_seed=-1)
    # a 63-bit stream seed (run.seed_for) works for mini-batches
    history = train_network(net, (x, y), lr=0.1, steps=3, optimizer="sgd", batch_size=8, batch_seed=2**62 + 5)
    assert len(history.loss) == 3


def test_width_class_spectra_gives_full_sorted_spectra():
    grid = width_class_spectra(widths=[3, 4], class_sets=[[0, 1], [0, 1, 2]], n_train=60, lr=1e-2, max_steps=30,
                               target_loss=0.01, init_seed=1, generator=torch.Generator().manual_seed(0))
    assert grid.classes == [2, 3] and grid.widths == [3, 4]
    for (c, w), ev in grid.spectra.items():
        assert len(ev) == grid.parameters[(c, w)] == 64 * w + w + w * c + c
        assert torch.all(ev[:-1] >= ev[1:])
        assert 1 <= grid.outliers[(c, w)] < len(ev)
    assert grid.ggn_top.shape == (2,)
    with pytest.raises(dataclasses.FrozenInstanceError):
        grid.ggn_top = None
    with pytest.raises(ValueError, match="widths"):
        width_class_spectra(widths=[], class_sets=[[0, 1]], n_train=10, lr=0.1, max_steps=1, target_loss=0.1)


def test_gradient_subspace_runs_measure_fractions_at_every_checkpoint():
    x, y = _data(n=64, c=10)
    runs = gradient_subspace_runs(x, y, hidden=4, runs={"SGD": (0.1, 16), "GD": (0.1, None)}, steps=4,
                                  eval_steps=[0, 2, 4], k=2, init_seed=0, generator=torch.Generator().manual_seed(0))
    assert set(runs) == {"SGD", "GD"}
    for r in runs.values():
        assert r.steps == [0, 2, 4] and len(r.fractions) == len(r.random_fractions) == len(r.sharpness) == 3
        assert all(0 <= f <= 1 + 1e-6 for f in r.fractions + r.random_fractions)
        assert r.late_mean(after=2) == pytest.approx(sum(r.fractions[1:]) / 2)
        assert r.late_random_max(after=2) == max(r.random_fractions[1:])
        with pytest.raises(ValueError, match="checkpoint"):
            r.late_mean(after=100)
    with pytest.raises(ValueError, match="eval_steps"):
        gradient_subspace_runs(x, y, hidden=4, runs={"GD": (0.1, None)}, steps=4, eval_steps=[0, 8])


def test_gradient_subspace_runs_keep_a_snapshot_at_every_checkpoint():
    x, y = _data(n=64, c=10)
    runs = gradient_subspace_runs(x, y, hidden=4, runs={"GD": (0.1, None)}, steps=4, eval_steps=[0, 2, 4], k=2,
                                  init_seed=0, generator=torch.Generator().manual_seed(0))
    r = runs["GD"]
    assert sorted(r.snapshots) == [0, 2, 4]
    with seeded_init(0):
        net = mlp(64, [4], 10)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), r.snapshots[0].values(), strict=True))
    net.load_state_dict(r.snapshots[4])  # the last snapshot is the trained network the final loss was measured on
    assert F.cross_entropy(net(x), y).item() == pytest.approx(r.final_loss, rel=1e-5)
    assert not any(torch.equal(a, b) for a, b in zip(r.snapshots[0].values(), r.snapshots[4].values(), strict=True))


def test_rescaled_copy_is_the_same_function_and_filter_normalized_curves_do_not_see_it():
    x, y = _data()
    with seeded_init(0):
        net = mlp(64, [8], 3)
    twin = rescaled_copy(net, 5.0)
    assert torch.allclose(net(x), twin(x), atol=1e-5)
    assert not torch.allclose(net[0].weight, twin[0].weight)
    with pytest.raises(ValueError, match="factor"):
        rescaled_copy(net, -1.0)
    alphas = torch.linspace(-1, 1, 5)
    curves = rescaling_curves(net, F.cross_entropy, (x, y), factors=[1.0, 5.0], alphas=alphas,
                              generator=torch.Generator().manual_seed(0))
    assert set(curves) == {(k, c) for k in ("raw Gaussian", "filter-normalized") for c in (1.0, 5.0)}
    assert torch.allclose(curves[("filter-normalized", 1.0)], curves[("filter-normalized", 5.0)], atol=1e-4)
    assert not torch.allclose(curves[("raw Gaussian", 1.0)], curves[("raw Gaussian", 5.0)], atol=1e-2)


def test_sharpness_is_the_top_eigenvalue_of_the_exact_hessian():
    x, y = _data(n=30, d=4)
    targets = F.one_hot(y, 3).double()
    with seeded_init(0):
        net = mlp(4, [3], 3, activation="tanh").double()
    assert float(half_squared_error(torch.zeros(2, 3), torch.ones(2, 3))) == pytest.approx(1.5)
    exact = torch.linalg.eigvalsh(exact_hessian(net, half_squared_error, (x.double(), targets)))[-1]
    g = torch.Generator().manual_seed(0)
    value = sharpness(net, half_squared_error, (x.double(), targets), tol=1e-8, generator=g)
    assert value == pytest.approx(float(exact), rel=1e-6)
    assert sharpness(net, half_squared_error, (x.double(), targets), tol=1e-8, generator=g) == value


def test_edge_of_stability_runs_record_the_sharpness():
    x, y = _data(n=30, d=8)
    runs = edge_of_stability_runs(x, F.one_hot(y, 3).float(), hidden=4, lrs=[0.1, 0.05], steps=4, every=2)
    assert set(runs) == {0.1, 0.05}
    assert runs[0.1].steps == [0, 2, 4] and all(s > 0 for s in runs[0.1]["sharpness"])


def test_aligned_heads_train_and_report_accuracies():
    g = torch.Generator().manual_seed(0)
    domains = [(torch.randn(50, 2, generator=g), torch.randint(0, 2, (50,), generator=g)) for _ in range(2)]
    assert float(logistic_loss(torch.zeros(4, 1), torch.ones(4))) == pytest.approx(float(torch.log(torch.tensor(2.0))))
    head = torch.nn.Linear(2, 1)
    assert binary_accuracy(head, *domains[0]) == pytest.approx(
        float(((head(domains[0][0])[:, 0] > 0).long() == domains[0][1]).float().mean()))
    results = train_aligned_heads(domains, validation=domains[1], test=domains[0],
                                  methods={"ERM": ("erm", 0.0, 0.0), "HGP": ("hgp", 1.0, 1.0),
                                           "F": ("frobenius", 1.0, 1.0)},
                                  steps=3, lr=0.5, probes=2, generator=torch.Generator().manual_seed(1))
    assert set(results) == {"ERM", "HGP", "F"}
    r = results["ERM"]
    assert 0 <= r.test <= 1 and 0 <= r.train <= 1 and r.w_inv == float(r.head.weight[0, 0].detach())
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.test = 1.0
    with pytest.raises(ValueError, match="train_domains"):
        train_aligned_heads([], validation=domains[0], test=domains[0], methods={}, steps=1, lr=0.1)


def test_aligned_heads_report_progress_and_stop_when_asked():
    g = torch.Generator().manual_seed(0)
    domains = [(torch.randn(50, 2, generator=g), torch.randint(0, 2, (50,), generator=g)) for _ in range(2)]
    methods = {"ERM": ("erm", 0.0, 0.0), "HGP": ("hgp", 1.0, 1.0)}
    plain = train_aligned_heads(domains, validation=domains[1], test=domains[0], methods=methods, steps=30, lr=0.5)
    calls = []
    watched = train_aligned_heads(domains, validation=domains[1], test=domains[0], methods=methods, steps=30, lr=0.5,
                                  progress=lambda done, total: calls.append((done, total)) and False)
    assert calls[-1] == (60, 60) and all(t == 60 for _, t in calls)
    for name in methods:  # watching does not change the training
        assert torch.equal(plain[name].head.weight, watched[name].head.weight)
    stopped = train_aligned_heads(domains, validation=domains[1], test=domains[0], methods=methods, steps=30, lr=0.5,
                                  progress=lambda done, total: done >= 10)
    assert list(stopped) == ["ERM"] and not torch.equal(stopped["ERM"].head.weight, plain["ERM"].head.weight)
    with pytest.raises(TypeError, match="progress"):
        train_aligned_heads(domains, validation=domains[1], test=domains[0], methods=methods, steps=3, lr=0.5,
                            progress=1)


def _softmax_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 5, generator=g, dtype=torch.float64)
    return x, torch.randint(0, 3, (60,), generator=g)


def test_softmax_regression_loss_grad_matches_autograd():
    x, y = _softmax_problem()
    w = torch.randn(15, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    loss, g = softmax_regression_loss_grad(x, y, l2=0.1)(w)

    def f(v):
        return F.cross_entropy(x @ v.view(3, 5).T, y) + 0.05 * (v * v).sum()

    assert loss == pytest.approx(float(f(w)))
    assert torch.allclose(g, torch.func.grad(f)(w))
    with pytest.raises(ValueError, match="x must be"):
        softmax_regression_loss_grad(x, y[:3])


def test_hessian_approximations_exact_stale_subsampled_diagonal():
    x, y = _softmax_problem()
    approx = hessian_approximations(x, classes=3, l2=0.1, subsample=0.5, stale_every=2,
                                    generator=torch.Generator().manual_seed(0))
    assert list(approx) == ["exact", "subsampled 50%", "stale (every 2)", "diagonal"]
    w0 = torch.zeros(15, dtype=torch.float64)
    w1 = torch.randn(15, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    fn, diag = approx["exact"]
    assert not diag and torch.allclose(fn(w1, 0), softmax_regression_hessian(x, w1.view(3, 5), l2=0.1))
    stale = approx["stale (every 2)"].hessian
    assert torch.equal(stale(w0, 0), stale(w1, 1)) and not torch.equal(stale(w0, 0), stale(w1, 2))
    sub = approx["subsampled 50%"].hessian
    assert not torch.allclose(sub(w1, 0), fn(w1, 0))
    assert approx["diagonal"].diagonal
    expected = softmax_regression_hessian_diagonal(x, w1.view(3, 5), l2=0.1)
    assert torch.allclose(approx["diagonal"].hessian(w1, 0), expected)
    with pytest.raises(ValueError, match="subsample"):
        hessian_approximations(x, classes=3, subsample=0.0)
    with pytest.raises(ValueError, match="stale_every"):
        hessian_approximations(x, classes=3, stale_every=0)


def test_approximate_newton_runs_and_tuned_gradient_descent():
    x, y = _softmax_problem()
    loss_grad = softmax_regression_loss_grad(x, y, l2=0.1)
    approx = hessian_approximations(x, classes=3, l2=0.1, generator=torch.Generator().manual_seed(0))
    w0 = torch.zeros(15, dtype=torch.float64)
    runs = approximate_newton_runs(loss_grad, approx, w0, steps=30, lipschitz=[0.1, 1.0], tol=1e-10)
    assert ("exact", 1.0) in runs and ("exact", 0.1) not in runs and ("diagonal", 0.1) in runs
    exact = runs[("exact", 1.0)]
    assert isinstance(exact, NewtonRun) and exact.grad_norms[-1] <= 1e-10
    with pytest.raises(dataclasses.FrozenInstanceError):
        exact.x = w0
    best_lr, gd = tuned_gradient_descent(loss_grad, w0, lrs=[0.1, 1.0], steps=20)
    assert best_lr == 1.0 and isinstance(gd[0.1], DescentRun) and len(gd[0.1].grad_norms) == 20
    assert gd[1.0].grad_norms[-1] < gd[0.1].grad_norms[-1]
    one = gradient_descent(loss_grad, w0, lr=1.0, steps=20)
    assert one.grad_norms == gd[1.0].grad_norms
    with pytest.raises(ValueError, match="lr"):
        gradient_descent(loss_grad, w0, lr=-1.0, steps=2)
    with pytest.raises(ValueError, match="lrs"):
        tuned_gradient_descent(loss_grad, w0, lrs=[], steps=2)


def test_steps_to_and_contraction_rate():
    norms = [1.0, 0.5, 0.25, 0.125, 1e-12]
    assert steps_to(norms, 0.3) == 2 and steps_to(norms, 1e-20) is None
    assert contraction_rate(norms) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="floor"):
        contraction_rate([1e-12])


def test_run_scalar_gfs_sharpness_goes_down_below_two_over_eta():
    w0 = torch.tensor([0.4, 1.4, 1.8, 1.0], dtype=torch.float64)
    r = run_scalar(w0, fraction=0.8, steps=300)
    assert r.eta == pytest.approx(2 / (0.8 * gfs_sharpness(w0)))
    assert len(r.loss) == len(r.gfs) == 300 and r.gfs[0] == pytest.approx(gfs_sharpness(w0))
    assert (r.gfs[1:] <= r.gfs[:-1] * (1 + 1e-9)).all() and (r.loss[1:] > r.loss[:-1]).any()
    assert r.final_gfs * r.eta / 2 < 1 and r.final_sharpness == pytest.approx(r.final_gfs, rel=1e-6)
    one = torch.ones(1, dtype=torch.float64)
    assert float(scalar_loss(3 * one, one)) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="fraction"):
        run_scalar(w0, fraction=0.0)
    with pytest.raises(ValueError, match="steps"):
        run_scalar(w0, fraction=0.8, steps=0)
