"""gradient_coherence, winsorized_mean and the Winsorized optimizer (Chatterjee & Zielinski, arXiv 2203.10036)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from labkit.influence.coherence import Winsorized, coherence_along, gradient_coherence, winsorized_mean
from labkit.influence.per_example import per_example_grads
from labkit.training import fit, fit_loss


def test_orthogonal_and_identical_gradients():
    c = gradient_coherence(3.0 * torch.eye(6))
    assert c.alpha == pytest.approx(1 / 6) and c.alpha_perp == pytest.approx(1 / 6) and c.ratio == pytest.approx(1.0)
    c = gradient_coherence(torch.tensor([[1.0, -2.0]]).repeat(4, 1))
    assert c.alpha == pytest.approx(1.0) and c.ratio == pytest.approx(4.0)
    c = gradient_coherence(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))     # opposite: the mean vanishes
    assert c.alpha == pytest.approx(0.0)


def test_alpha_against_its_definition():
    g = torch.randn(9, 5, generator=torch.Generator().manual_seed(0))
    want = (g.mean(0).norm() ** 2 / (g.norm(dim=1) ** 2).mean()).item()
    assert gradient_coherence(g).alpha == pytest.approx(want, rel=1e-6)


def test_winsorized_mean_against_a_loop():
    g = torch.randn(11, 4, generator=torch.Generator().manual_seed(1))
    for c in (0, 1, 3, 5):
        want = []
        for j in range(4):
            col = sorted(g[:, j].tolist())
            lo, hi = col[c], col[len(col) - 1 - c]
            want.append(sum(min(max(v, lo), hi) for v in g[:, j].tolist()) / len(col))
        assert torch.allclose(winsorized_mean(g, c), torch.tensor(want), atol=1e-6)
    assert torch.allclose(winsorized_mean(g, 0), g.mean(0))


def _setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    g = torch.Generator().manual_seed(2)
    return model, (torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g))


def test_winsorized_c0_is_sgd_and_c_steps_along_the_winsorized_mean():
    model, data = _setup()
    a, b, c = copy.deepcopy(model), copy.deepcopy(model), copy.deepcopy(model)
    opt_a = Winsorized(a, torch.optim.SGD, loss_fn=F.cross_entropy, c=0, lr=0.1)
    fit(a, opt_a.loss, data, optimizer=opt_a, steps=3, progress=False)
    fit(b, fit_loss(), data, optimizer=torch.optim.SGD(b.parameters(), lr=0.1), steps=3, progress=False)
    assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    want = torch.cat([p.detach().flatten() for p in c.parameters()]) - 0.1 * winsorized_mean(
        per_example_grads(c, F.cross_entropy, data), 2)
    opt_c = Winsorized(c, torch.optim.SGD, loss_fn=F.cross_entropy, c=2, lr=0.1)
    fit(c, opt_c.loss, data, optimizer=opt_c, steps=1, progress=False)
    assert torch.allclose(torch.cat([p.detach().flatten() for p in c.parameters()]), want, atol=1e-6)


def test_coherence_along_snapshots_leaves_the_model_alone():
    model, data = _setup()
    before = copy.deepcopy(model.state_dict())
    net = copy.deepcopy(model)
    h = fit(net, fit_loss(), data, optimizer=torch.optim.SGD(net.parameters(), lr=0.1), steps=2, snapshots=[0, 2],
            eval_every=[0, 2], progress=False)
    out = coherence_along(model, F.cross_entropy, data, h.snapshots)
    assert sorted(out) == [0, 2]
    assert out[0].alpha == pytest.approx(gradient_coherence(per_example_grads(model, F.cross_entropy, data)).alpha)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("call, error, match", [
    (lambda: gradient_coherence(torch.ones(3)), TypeError, "2-D"),
    (lambda: gradient_coherence(torch.zeros(3, 2)), ValueError, "zero"),
    (lambda: gradient_coherence(torch.tensor([[float("nan")]])), ValueError, "NaN"),
    (lambda: winsorized_mean(torch.ones(4, 2), 2), ValueError, "below m/2"),
    (lambda: winsorized_mean(torch.ones(4, 2), -1), ValueError, "non-negative"),
    (lambda: Winsorized(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)), torch.optim.SGD,
                        loss_fn=F.cross_entropy, c=1, lr=0.1), ValueError, "BatchNorm"),
    (lambda: Winsorized(nn.Linear(2, 2), object, loss_fn=F.cross_entropy, c=1), TypeError, "base_optimizer_cls"),
    (lambda: Winsorized(nn.Linear(2, 2), torch.optim.SGD, loss_fn=F.cross_entropy, c=1, lr=0.1).step(), ValueError,
     "closure"),
])
def test_bad_input_is_refused(call, error, match):
    with pytest.raises(error, match=match):
        call()
