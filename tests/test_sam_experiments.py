"""labkit.sam.experiments: the optimizer factory, training runs over fit, matched-loss sharpness, the four
measures and Kendall's tau; and the TopEigenvalue float that carries the solver's convergence."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from labkit.sam import (
    MEASURES,
    SAM,
    MatchedSharpness,
    SharpnessMeasures,
    TopEigenvalue,
    TraceEstimate,
    Trained,
    hessian_top_eigenvalue,
    hessian_trace,
    kendall_tau,
    make_optimizer,
    matched_loss_sharpness,
    sharpness_measures,
    snapshot_top_eigenvalue,
    train_from,
)
from labkit.training import fit, fit_loss


def small_net(seed: int = 0, norm: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(5, 8)]
    if norm:
        layers.append(nn.BatchNorm1d(8))
    layers += [nn.Tanh(), nn.Linear(8, 3)]
    return nn.Sequential(*layers)


def data(seed: int = 1, n: int = 40):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_make_optimizer_kinds():
    net = small_net(norm=True)
    sgd = make_optimizer(net, "sgd", lr=0.1, momentum=0.9)
    assert type(sgd) is torch.optim.SGD and sgd.defaults["momentum"] == 0.9
    sam = make_optimizer(net, "SAM", lr=0.1, rho=0.2)
    assert isinstance(sam, SAM) and sam._perturb_ids is None and sam.param_groups[0]["rho"] == 0.2
    assert sam.model is net and not sam.param_groups[0]["adaptive"]
    assert make_optimizer(net, "asam", lr=0.1).param_groups[0]["adaptive"]
    assert make_optimizer(net, "sam", lr=0.1).param_groups[0]["rho"] == 0.05
    on = make_optimizer(net, "SAM-ON", lr=0.1, rho=0.5)
    assert on._perturb_ids == {id(net[1].weight), id(net[1].bias)}
    assert make_optimizer(net, "asam-on", lr=0.1).param_groups[0]["adaptive"]
    adam = make_optimizer(net, "sam", lr=1e-3, base=torch.optim.Adam)
    assert isinstance(adam.base_optimizer, torch.optim.Adam)
    with pytest.raises(ValueError, match="kind"):
        make_optimizer(net, "lbfgs", lr=0.1)
    with pytest.raises(ValueError, match="rho"):
        make_optimizer(net, "sgd", lr=0.1, rho=0.1)
    with pytest.raises(ValueError, match="lr"):
        make_optimizer(net, "sam", lr=0.0)
    with pytest.raises(TypeError, match="model"):
        make_optimizer([p for p in net.parameters()], "sam", lr=0.1)
    with pytest.raises(ValueError, match="normalization"):
        make_optimizer(small_net(), "sam-on", lr=0.1)


def test_train_from_matches_fit_by_hand_and_leaves_init_untouched():
    x, y = data()
    init = small_net(norm=True)
    before = copy.deepcopy(init.state_dict())
    out = train_from(init, (x, y), kind="sam", rho=0.1, lr=0.1, momentum=0.9, steps=12, batch_size=16, seed=3,
                     schedule="cosine", test=(x[:10], y[:10]), eval_every=4, progress=False)
    assert isinstance(out, Trained)
    model, history = out
    for k, v in init.state_dict().items():
        assert torch.equal(v, before[k]), k
    ref = copy.deepcopy(init)
    opt = SAM(ref.parameters(), torch.optim.SGD, rho=0.1, model=ref, lr=0.1, momentum=0.9)
    ref_history = fit(ref, fit_loss(F.cross_entropy), (x, y), optimizer=opt, steps=12, batch_size=16, seed=3,
                      scheduler=torch.optim.lr_scheduler.CosineAnnealingLR(opt, 12), progress=False)
    for a, b in zip(model.state_dict().values(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert history.loss == ref_history.loss
    assert history.steps == [0, 4, 8, 12]
    assert history["train loss"][-1] == pytest.approx(F.cross_entropy(model.eval()(x), y).item(), rel=1e-6)
    assert 0.0 <= history["test accuracy"][-1] <= 1.0


def test_train_from_epochs_stop_loss_snapshots_and_errors():
    x, y = data()
    init = small_net()
    h = train_from(init, (x, y), kind="sgd", lr=0.5, epochs=3, batch_size=16, progress=False).history
    assert len(h.loss) == 9 and h.steps == [0, 3, 6, 9]  # ceil(40 / 16) = 3 steps an epoch, evaluated each epoch
    h = train_from(init, (x, y), kind="sgd", lr=0.5, steps=500, eval_every=5, stop_loss=0.9, progress=False).history
    assert h["train loss"][-1] <= 0.9 and all(v > 0.9 for v in h["train loss"][:-1]) and h.steps[-1] < 500
    h = train_from(init, (x, y), kind="sgd", lr=0.5, steps=50, eval_every=5, progress=False,
                   stop_when=lambda hist: hist.steps[-1] >= 15).history
    assert h.steps == [0, 5, 10, 15] and len(h.loss) == 15  # an explorer's Stop: the run so far, ended early
    with pytest.raises(TypeError, match="stop_when"):
        train_from(init, (x, y), lr=0.1, steps=2, stop_when=True)
    h = train_from(init, (x, y), kind="sgd", lr=0.5, steps=4, snapshots=[0, 2], progress=False).history
    assert sorted(h.snapshots) == [0, 2]
    with pytest.raises(ValueError, match="exactly one of steps and epochs"):
        train_from(init, (x, y), lr=0.1)
    with pytest.raises(ValueError, match="exactly one of steps and epochs"):
        train_from(init, (x, y), lr=0.1, steps=2, epochs=2)
    h = train_from(init, (x, y), kind="sgd", lr=0.5, steps=2, train_loss=False, test=(x, y), progress=False).history
    assert sorted(h.rows[-1]) == ["loss", "step", "test accuracy"]
    with pytest.raises(ValueError, match="train_loss"):
        train_from(init, (x, y), lr=0.1, steps=2, stop_loss=0.1, train_loss=False)
    with pytest.raises(ValueError, match="schedule"):
        train_from(init, (x, y), lr=0.1, steps=2, schedule="step")
    with pytest.raises(ValueError, match="batch_size"):
        train_from(init, (x, y), lr=0.1, steps=2, batch_size=0)
    with pytest.raises(TypeError, match="init"):
        train_from(lambda t: t, (x, y), lr=0.1, steps=2)
    with pytest.raises(TypeError, match="data"):
        train_from(init, x, lr=0.1, steps=2)


def test_snapshot_and_matched_loss_sharpness():
    x, y = data()
    init = small_net()
    every = list(range(0, 41, 5))
    gd = train_from(init, (x, y), kind="sgd", lr=0.5, steps=40, eval_every=every, snapshots=every,
                    progress=False).history
    sam = train_from(init, (x, y), kind="sam", rho=0.3, lr=0.5, steps=40, eval_every=every, snapshots=every,
                     progress=False).history
    net = copy.deepcopy(init)
    net.load_state_dict(gd.snapshots[20])
    direct = hessian_top_eigenvalue(net, F.cross_entropy, (x, y), generator=torch.Generator().manual_seed(0))
    at20 = snapshot_top_eigenvalue(init, gd, 20, (x, y), generator=torch.Generator().manual_seed(0))
    assert isinstance(at20, TopEigenvalue) and at20 == pytest.approx(direct, rel=1e-6)
    with pytest.raises(ValueError, match="no snapshot at step 3"):
        snapshot_top_eigenvalue(init, gd, 3, (x, y))
    m = matched_loss_sharpness(init, gd, sam, (x, y), generator=torch.Generator().manual_seed(0))
    assert isinstance(m, MatchedSharpness)
    assert m.target == sam["train loss"][-1]
    first = next(s for s, v in zip(gd.steps, gd["train loss"], strict=True) if v <= m.target)
    assert m.gd_step == first
    assert m.ratio == pytest.approx(float(m.sam) / float(m.gd))
    with pytest.raises(TypeError, match="gd must be"):
        matched_loss_sharpness(init, {}, sam, (x, y))


def test_top_eigenvalue_is_a_float_that_carries_convergence():
    value = TopEigenvalue(2.5, converged=False, residual=1e-3)
    assert value == 2.5 and value * 2 == 5.0 and f"{value:.1f}" == "2.5" and isinstance(value, float)
    assert not value.converged and value.residual == 1e-3
    assert "converged=False" in repr(value)
    with pytest.raises(AttributeError):
        value.converged = True
    back = pickle.loads(pickle.dumps(value))
    assert back == 2.5 and not back.converged and back.residual == 1e-3
    tr = TraceEstimate(3.0, stderr=0.5, samples=10)
    assert tr + 1 == 4.0 and tr.stderr == 0.5 and tr.samples == 10 and "stderr=0.5" in repr(tr)
    assert pickle.loads(pickle.dumps(tr)).stderr == 0.5
    x, y = data()
    est = hessian_trace(small_net(), F.cross_entropy, (x, y), samples=8, generator=torch.Generator().manual_seed(0))
    assert isinstance(est, TraceEstimate) and est.samples == 8 and est.stderr > 0
    lam = hessian_top_eigenvalue(small_net(), F.cross_entropy, (x, y))
    assert isinstance(lam, TopEigenvalue) and lam.converged and 0 <= lam.residual <= 1e-4


def test_sharpness_measures_and_kendall_tau():
    x, y = data()
    net = small_net()
    gen = torch.Generator().manual_seed(0)
    s = sharpness_measures(net, (x, y), trace_samples=5, rho=0.1, adaptive_rho=0.5, ascent_steps=3, m=20,
                           generator=gen)
    assert isinstance(s, SharpnessMeasures)
    assert list(s.as_dict()) == list(MEASURES)
    assert s.lambda_max > 0 and s.worst_case > 0 and s.adaptive_worst_case > 0
    with pytest.raises(TypeError, match="generator"):
        sharpness_measures(net, (x, y), generator=0)
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau([1, 1, 1], [1, 2, 3]) == 0.0  # a constant column has no ranking
    with pytest.raises(ValueError, match="same length"):
        kendall_tau([1, 2], [1, 2, 3])
