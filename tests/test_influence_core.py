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


# --- influence_scores ------------------------------------------------------------------------------

from labkit.influence import (  # noqa: E402
    exact_ggn,
    fit_ekfac,
    influence_scores,
    inverse_hvp,
    loo_retrain,
    tracin,
    train_logistic_regression,
)


def _flat_hessian(model, x, y):
    """The oracle: torch.autograd.functional.hessian of the mean loss as a function of the flat parameters."""
    params = list(model.parameters())
    shapes = [p.shape for p in params]
    theta = torch.cat([p.detach().reshape(-1) for p in params]).double()
    names = [n for n, _ in model.named_parameters()]

    def loss(t):
        parts, i = {}, 0
        for n, s in zip(names, shapes, strict=True):
            k = s.numel()
            parts[n] = t[i : i + k].reshape(s)
            i += k
        return F.cross_entropy(torch.func.functional_call(model.double(), parts, (x.double(),)), y)

    h = torch.autograd.functional.hessian(loss, theta)
    model.float()
    return h


def _trained_logreg(n=40, seed=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g, dtype=torch.float64)
    y = (x[:, 0] + 0.5 * torch.randn(n, generator=g, dtype=torch.float64) > 0).long()
    return train_logistic_regression((x, y), num_classes=2, weight_decay=0.05), x, y


def test_exact_matches_an_explicit_inverse_of_the_autograd_hessian():
    model, (x, y) = _mlp(), _data(n=20)
    xq, yq = _data(n=3, seed=5)
    damping = 0.5
    h = _flat_hessian(model, x, y)
    gq = _loop_grads(model, xq, yq).double()
    gt = _loop_grads(model, x, y).double()
    expected = gq @ torch.linalg.inv(h + damping * torch.eye(len(h), dtype=h.dtype)) @ gt.T
    got = influence_scores(model, F.cross_entropy, (x, y), (xq, yq), method="exact", damping=damping)
    assert got.shape == (3, 20)
    torch.testing.assert_close(got.double(), expected, atol=1e-4, rtol=1e-4)


def test_exact_ggn_matches_the_hessian_operator_ggn():
    from labkit.hessian import GGNOperator

    model, (x, y) = _mlp(), _data(n=15)
    dense = GGNOperator(model, F.cross_entropy, (x, y)).to_dense().double()
    torch.testing.assert_close(exact_ggn(model, F.cross_entropy, (x, y)), dense, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("curvature", ["hessian", "ggn"])
def test_cg_and_lissa_match_exact_on_a_convex_problem(curvature):
    model, x, y = _trained_logreg()
    xq, yq = x[:3] + 0.1, y[:3]
    kw = dict(curvature=curvature, damping=0.05)
    exact = influence_scores(model, F.cross_entropy, (x, y), (xq, yq), method="exact", **kw)
    cg = influence_scores(model, F.cross_entropy, (x, y), (xq, yq), method="cg", tol=1e-10, **kw)
    torch.testing.assert_close(cg, exact, atol=1e-6, rtol=1e-6)
    lissa = influence_scores(model, F.cross_entropy, (x, y), (xq, yq), method="lissa", depth=400, **kw)
    torch.testing.assert_close(lissa, exact, atol=1e-3, rtol=1e-3)
    # stochastic LiSSA (minibatches of 10) is an unbiased but noisy estimate: close on average
    noisy = influence_scores(model, F.cross_entropy, (x, y), (xq, yq), method="lissa", depth=200, repeats=4,
                             batch_size=10, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.corrcoef(torch.stack([noisy.flatten(), exact.flatten()]))[0, 1] > 0.9


def test_cg_reports_non_convergence():
    model, (x, y) = _mlp(), _data(n=20)
    out = inverse_hvp(model, F.cross_entropy, (x, y), torch.ones(1, 66), method="cg", max_iter=2, tol=1e-12)
    assert not out.converged and out.x.shape == (66, 1) and out.residuals.shape == (1,)
    with pytest.raises(RuntimeError, match="CG did not converge"):
        influence_scores(model, F.cross_entropy, (x, y), (x[:2], y[:2]), method="cg", max_iter=2, tol=1e-12)


def test_removing_an_example_is_predicted_by_scores_over_n():
    """Koh & Liang's identity on a convex model: loo_retrain ≈ scores / n (with the damping = weight decay)."""
    model, x, y = _trained_logreg(n=200)
    n, wd = len(x), 0.05

    def train_fn(data):
        return train_logistic_regression(data, num_classes=2, weight_decay=wd, normalizer=n, init=model)

    xq, yq = x[:2] + 0.2, y[:2]
    scores = influence_scores(model, F.cross_entropy, (x, y), (xq, yq), method="exact", damping=wd)
    idx = torch.arange(0, 200, 20)
    actual = loo_retrain(train_fn, (x, y), (xq, yq), idx)
    predicted = scores[:, idx] / n
    assert torch.corrcoef(torch.stack([actual.flatten(), predicted.flatten()]))[0, 1] > 0.99
    torch.testing.assert_close(actual, predicted, atol=1e-4, rtol=0.1)


def test_loo_retrain_against_a_mean_predictor():
    class Mean(nn.Module):
        def __init__(self, value):
            super().__init__()
            self.value = nn.Parameter(torch.tensor(value))

        def forward(self, x):
            return self.value.expand(len(x))

    x, y = torch.zeros(4, 1), torch.tensor([1.0, 2.0, 3.0, 10.0])
    out = loo_retrain(lambda d: Mean(float(d[1].mean())), (x, y), (torch.zeros(1, 1), torch.tensor([0.0])),
                      [0, 3], loss_fn=F.mse_loss)
    full = 4.0**2
    torch.testing.assert_close(out, torch.tensor([[5.0**2 - full, 2.0**2 - full]]))
    with pytest.raises(ValueError, match="indices"):
        loo_retrain(lambda d: Mean(0.0), (x, y), (x, y), [4], loss_fn=F.mse_loss)


# --- TracIn ----------------------------------------------------------------------------------------


def test_tracin_is_the_sum_of_gradient_dot_products():
    ckpts = [_mlp(0), _mlp(1)]
    (x, y), (xq, yq) = _data(n=6), _data(n=2, seed=9)
    expected = sum(lr * _loop_grads(m, xq, yq) @ _loop_grads(m, x, y).T for m, lr in zip(ckpts, [0.1, 0.3],
                                                                                       strict=True))
    torch.testing.assert_close(tracin(ckpts, F.cross_entropy, (x, y), (xq, yq), lrs=[0.1, 0.3]), expected)
    with pytest.raises(ValueError, match="lrs"):
        tracin(ckpts, F.cross_entropy, (x, y), (xq, yq), lrs=[0.1])


def test_tracin_matches_captum_tracincp(tmp_path):
    captum_influence = pytest.importorskip("captum.influence")
    from torch.utils.data import TensorDataset

    ckpts, lrs = [_mlp(0), _mlp(1), _mlp(2)], [0.5, 0.2, 0.1]
    paths = []
    for k, (m, lr) in enumerate(zip(ckpts, lrs, strict=True)):
        path = tmp_path / f"ckpt{k}.pt"
        torch.save({"state": m.state_dict(), "lr": lr}, path)
        paths.append(str(path))

    def load(model, path):
        saved = torch.load(path)
        model.load_state_dict(saved["state"])
        return saved["lr"]

    (x, y), (xq, yq) = _data(n=8), _data(n=3, seed=9)
    peer = captum_influence.TracInCP(_mlp(5), TensorDataset(x, y), paths, checkpoints_load_func=load,
                                     loss_fn=nn.CrossEntropyLoss(reduction="none"), batch_size=4)
    expected = peer.influence((xq, yq))
    got = tracin(ckpts, F.cross_entropy, (x, y), (xq, yq), lrs=lrs)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


# --- EK-FAC ----------------------------------------------------------------------------------------


def test_ekfac_is_exact_on_one_linear_layer_and_one_example():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    x, y = torch.randn(1, 4), torch.tensor([2])
    factors = fit_ekfac(model, F.cross_entropy, (x, y))
    dense = factors.matvec(torch.eye(15)).double()
    torch.testing.assert_close(dense, exact_ggn(model, F.cross_entropy, (x, y)), atol=1e-6, rtol=1e-5)
    xq, yq = torch.randn(5, 4), torch.randint(0, 3, (5,))
    kw = dict(curvature="ggn", damping=0.1)
    torch.testing.assert_close(influence_scores(model, F.cross_entropy, (x, y), (xq, yq), method="ekfac", **kw),
                               influence_scores(model, F.cross_entropy, (x, y), (xq, yq), method="exact", **kw),
                               atol=1e-5, rtol=1e-4)


def test_ekfac_inverse_undoes_its_product_and_tracks_exact_on_an_mlp():
    model, (x, y) = _mlp(), _data(n=60)
    factors = fit_ekfac(model, F.cross_entropy, (x, y))
    v = torch.randn(3, 66, dtype=torch.float64)
    back = factors.inverse_hvp(factors.matvec(v) + 0.1 * v, damping=0.1)
    torch.testing.assert_close(back, v, atol=1e-8, rtol=1e-8)
    xq, yq = _data(n=4, seed=7)
    kw = dict(curvature="ggn", damping=0.1)
    ek = influence_scores(model, F.cross_entropy, (x, y), (xq, yq), method="ekfac", **kw)
    ex = influence_scores(model, F.cross_entropy, (x, y), (xq, yq), method="exact", **kw)
    assert torch.corrcoef(torch.stack([ek.flatten(), ex.flatten()]))[0, 1] > 0.8


def test_ekfac_refuses_what_it_does_not_cover():
    net = nn.Sequential(nn.Conv2d(2, 2, 3, groups=2), nn.Flatten(), nn.Linear(8, 4), nn.LayerNorm(4))
    x, y = torch.randn(4, 2, 4, 4), torch.randint(0, 3, (4,))
    with pytest.raises(NotImplementedError, match="groups=2"):
        fit_ekfac(net, F.cross_entropy, (x, y))
    with pytest.raises(NotImplementedError, match="LayerNorm"):
        fit_ekfac(net, F.cross_entropy, (x, y), params=list(net[2:].parameters()))
    fit_ekfac(net, F.cross_entropy, (x, y), params=list(net[2].parameters()))  # the Linear layer alone is fine
    model, (x, y) = _mlp(), _data()
    with pytest.raises(ValueError, match="curvature='ggn'"):
        influence_scores(model, F.cross_entropy, (x, y), (x, y), method="ekfac")


# --- side effects and bad input --------------------------------------------------------------------


@pytest.mark.parametrize("method", ["exact", "cg", "lissa", "ekfac"])
def test_influence_leaves_the_model_as_found(method):
    model, (x, y) = _mlp(), _data(n=12)
    model.train()
    model[0].weight.grad = torch.ones_like(model[0].weight)
    before = [p.detach().clone() for p in model.parameters()]
    opts = {"depth": 5} if method == "lissa" else {}
    influence_scores(model, F.cross_entropy, (x, y), (x[:2], y[:2]), method=method, curvature="ggn", damping=1.0,
                     **opts)
    assert model.training and torch.equal(model[0].weight.grad, torch.ones_like(model[0].weight))
    assert model[2].weight.grad is None
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_influence_bad_input():
    model, (x, y) = _mlp(), _data()
    with pytest.raises(ValueError, match="method"):
        influence_scores(model, F.cross_entropy, (x, y), (x, y), method="newton")
    with pytest.raises(ValueError, match="curvature"):
        influence_scores(model, F.cross_entropy, (x, y), (x, y), curvature="fisher")
    with pytest.raises(ValueError, match="damping"):
        influence_scores(model, F.cross_entropy, (x, y), (x, y), damping=-1.0)
    with pytest.raises(TypeError, match="solver options"):
        influence_scores(model, F.cross_entropy, (x, y), (x, y), tol=1e-3)
    with pytest.raises(ValueError, match="query"):
        influence_scores(model, F.cross_entropy, (x, y), (x[:, :3], y))


def test_correlations_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    from labkit.influence.influence_experiments import pearson, spearman

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, generator=g, dtype=torch.float64), torch.randn(50, generator=g, dtype=torch.float64)
    b = a + 0.5 * b
    assert abs(pearson(a, b) - stats.pearsonr(a.numpy(), b.numpy())[0]) < 1e-10
    assert abs(spearman(a, b) - stats.spearmanr(a.numpy(), b.numpy())[0]) < 1e-10
