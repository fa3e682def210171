"""EL2N, GraNd, prune and auroc against their definitions (Paul et al., arXiv 2107.07075)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from labkit.influence.pruning import auroc, el2n, grand, prune, train_copy


def _net(seed=0, bn=False):
    torch.manual_seed(seed)
    layers = [nn.Linear(5, 7)] + ([nn.BatchNorm1d(7)] if bn else []) + [nn.Tanh(), nn.Linear(7, 3)]
    return nn.Sequential(*layers)


def _data(n=20, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_el2n_is_the_mean_error_norm_over_models():
    x, y = _data()
    nets = [_net(0), _net(1)]
    want = torch.stack([torch.stack([(m(x[i:i + 1]).softmax(1)[0] - F.one_hot(y[i], 3).float()).norm()
                                     for i in range(len(x))]) for m in nets]).mean(0)
    assert torch.allclose(el2n(nets, (x, y)), want.detach(), atol=1e-6)
    assert torch.allclose(el2n(nets[0], [(x[:7], y[:7]), (x[7:], y[7:])]), el2n(nets[0], (x, y)))


def test_grand_is_the_mean_gradient_norm_over_models():
    x, y = _data(8)
    nets = [_net(0), _net(2)]
    want = []
    for m in nets:
        params = list(m.parameters())
        want.append(torch.stack([torch.cat([g.flatten() for g in torch.autograd.grad(
            F.cross_entropy(m(x[i:i + 1]), y[i:i + 1]), params)]).norm() for i in range(len(x))]))
    assert torch.allclose(grand(nets, F.cross_entropy, (x, y)), torch.stack(want).mean(0), rtol=1e-5, atol=1e-7)


def test_scores_leave_the_model_as_found():
    x, y = _data()
    m = _net(0, bn=True).train()
    for p in m.parameters():
        p.grad = torch.ones_like(p)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    el2n(m, (x, y))
    grand(m, F.cross_entropy, (x, y))
    assert m.training and all(torch.equal(v, before[k]) for k, v in m.state_dict().items())
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in m.parameters())


def test_prune_keeps_hard_easy_or_random():
    s = torch.tensor([0.5, 0.1, 0.9, 0.5, 0.3])
    assert prune(s, 0.4).tolist() == [0, 2, 3]
    assert prune(s, 0.4, keep="easy").tolist() == [0, 1, 4]
    assert prune(s, 0.0).tolist() == [0, 1, 2, 3, 4]
    r1 = prune(s, 0.6, keep="random", generator=torch.Generator().manual_seed(3))
    r2 = prune(s, 0.6, keep="random", generator=torch.Generator().manual_seed(3))
    assert torch.equal(r1, r2) and len(r1) == 2 and r1.dtype == torch.long and bool((r1[1:] > r1[:-1]).all())


def test_auroc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    g = torch.Generator().manual_seed(0)
    s = torch.randint(0, 5, (60,), generator=g).float()          # many ties
    pos = torch.rand(60, generator=g) < 0.3
    assert auroc(s, pos) == pytest.approx(roc_auc_score(pos.numpy(), s.numpy()), abs=1e-12)


def test_train_copy_leaves_init_alone_and_trains_on_the_subset():
    x, y = _data(40)
    init = _net(0)
    before = [p.clone() for p in init.parameters()]
    m = train_copy(init, (x, y), indices=torch.arange(10), steps=5, lr=0.1, batch_size=8)
    assert all(torch.equal(p, q) for p, q in zip(init.parameters(), before, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(m.parameters(), before, strict=True))


@pytest.mark.parametrize("call, error, match", [
    (lambda: prune(torch.ones(3), 1.0), ValueError, "fraction"),
    (lambda: prune(torch.ones(3), 0.5, keep="middle"), ValueError, "keep"),
    (lambda: prune(torch.tensor([1.0, float("nan")]), 0.5), ValueError, "NaN"),
    (lambda: prune(torch.ones(2, 2), 0.5), TypeError, "1-D"),
    (lambda: el2n([], _data()), TypeError, "models"),
    (lambda: el2n(_net(), (_data()[0], _data()[1].float())), TypeError, "class indices"),
    (lambda: el2n(_net(), (_data()[0], _data()[1] + 3)), ValueError, "targets must lie"),
    (lambda: grand(_net(), "ce", _data()), TypeError, "loss_fn"),
    (lambda: auroc(torch.ones(3), torch.zeros(3, dtype=torch.bool)), ValueError, "positive"),
])
def test_bad_input_is_refused(call, error, match):
    with pytest.raises(error, match=match):
        call()
