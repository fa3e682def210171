"""Infidelity / max-sensitivity against Captum on fixed perturbations, curves and ROAR on exact cases."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from labkit.attributions import (
    deletion_curve,
    infidelity,
    insertion_curve,
    integrated_gradients,
    max_sensitivity,
    remove_features,
    roar,
    saliency,
)
from labkit.models import cnn

captum_metrics = pytest.importorskip("captum.metrics")
captum_attr = pytest.importorskip("captum.attr")


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return cnn(1, 5, channels=(4, 6), image_size=8, activation="softplus").double()


def batch(n: int = 3) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.mark.parametrize("normalize", [False, True])
def test_infidelity_matches_captum_on_fixed_perturbations(normalize):
    model, x, samples, noise = small_cnn(), batch(), 6, 0.1
    attr = integrated_gradients(model, x, 2, steps=16)
    gen = torch.Generator().manual_seed(4)
    pert = torch.stack([noise * torch.randn(x.shape, generator=gen, dtype=x.dtype) for _ in range(samples)])
    layout = pert.transpose(0, 1).reshape(-1, *x.shape[1:])  # captum repeats each example S times

    def perturb(inputs):
        return layout, inputs - layout

    ref = captum_metrics.infidelity(
        model, perturb, x, attr, target=2, n_perturb_samples=samples, normalize=normalize
    )
    ours = infidelity(
        model,
        x,
        attr,
        2,
        samples=samples,
        noise=noise,
        normalize=normalize,
        generator=torch.Generator().manual_seed(4),
    )
    torch.testing.assert_close(ours, ref, atol=1e-8, rtol=1e-6)
    ours_chunked = infidelity(
        model,
        x,
        attr,
        2,
        samples=samples,
        noise=noise,
        normalize=normalize,
        generator=torch.Generator().manual_seed(4),
        chunk_size=2,
    )
    torch.testing.assert_close(ours_chunked, ours, atol=1e-12, rtol=0)


def test_infidelity_of_gradient_is_zero_on_linear_model():
    torch.manual_seed(0)
    lin = nn.Linear(8, 3).double()
    x = torch.randn(5, 8, dtype=torch.float64)
    value = infidelity(lin, x, saliency(lin, x, 1), 1, samples=20, noise=0.5)
    assert value.abs().max() < 1e-20
    assert (infidelity(lin, x, 2 * saliency(lin, x, 1), 1, samples=20, noise=0.5) > 1e-3).all()
    assert infidelity(lin, x, 2 * saliency(lin, x, 1), 1, samples=20, noise=0.5, normalize=True).max() < 1e-20


def test_max_sensitivity_matches_captum_on_fixed_perturbations():
    model, x, samples, radius = small_cnn(), batch(), 5, 0.05
    gen = torch.Generator().manual_seed(7)
    d = torch.stack(
        [(2 * torch.rand(x.shape, generator=gen, dtype=x.dtype) - 1) * radius for _ in range(samples)]
    )
    layout = d.transpose(0, 1).reshape(-1, *x.shape[1:])

    def perturb(inputs, r):
        return inputs + layout

    sal = captum_attr.Saliency(model)
    ref = captum_metrics.sensitivity_max(
        lambda inp, target: sal.attribute(inp, target=target, abs=False),
        x,
        perturb_func=perturb,
        n_perturb_samples=samples,
        target=2,
    )
    ours = max_sensitivity(
        lambda z, t: saliency(model, z, t),
        x,
        2,
        radius=radius,
        samples=samples,
        normalize=True,
        generator=torch.Generator().manual_seed(7),
    )
    torch.testing.assert_close(ours, ref, atol=1e-8, rtol=1e-6)
    # a constant explanation has zero sensitivity
    assert max_sensitivity(lambda z, t: torch.ones_like(z), x, 2, samples=3).abs().max() == 0


def test_deletion_and_insertion_curves():
    torch.manual_seed(0)
    lin = nn.Linear(6, 2).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[3.0, 2.0, 1.0, -1.0, -2.0, -3.0], [0.0] * 6], dtype=torch.float64))
        lin.bias.zero_()
    x = torch.ones(1, 6, dtype=torch.float64)
    attr = x * lin.weight[0].detach()
    dele = deletion_curve(lin, x, attr, 0, steps=6, score="logit")
    torch.testing.assert_close(dele.fractions, torch.arange(7, dtype=torch.float64) / 6)
    torch.testing.assert_close(
        dele.scores[0], torch.tensor([0.0, -3, -5, -6, -5, -3, 0], dtype=torch.float64)
    )
    torch.testing.assert_close(dele.auc, torch.trapezoid(dele.scores, dele.fractions, dim=1))
    ins = insertion_curve(lin, x, attr, 0, steps=6, score="logit")
    torch.testing.assert_close(ins.scores[0], torch.tensor([0.0, 3, 5, 6, 5, 3, 0], dtype=torch.float64))
    probs = deletion_curve(lin, x, attr, 0, steps=3)
    assert ((probs.scores > 0) & (probs.scores < 1)).all()
    with pytest.raises(ValueError, match="score must be"):
        deletion_curve(lin, x, attr, 0, score="loss")
    with pytest.raises(ValueError, match="attributions must be shaped like x"):
        insertion_curve(lin, x, attr[:, :3], 0)


def test_remove_features_and_roar():
    x = torch.arange(12, dtype=torch.float64).reshape(2, 1, 2, 3)
    attr = x.clone()
    top = remove_features(x, attr, 1 / 3, order="top", fill=-1.0)
    assert (top.reshape(2, -1)[:, 4:] == -1).all() and (top.reshape(2, -1)[:, :4] >= 0).all()
    bottom = remove_features(x, attr, 0.5, order="bottom", fill=-1.0)
    assert (bottom.reshape(2, -1)[:, :3] == -1).all() and (bottom.reshape(2, -1)[:, 3:] >= 0).all()
    rnd = remove_features(x, attr, 0.5, order="random", fill=-1.0, generator=torch.Generator().manual_seed(0))
    assert ((rnd == -1).reshape(2, -1).sum(1) == 3).all()
    with pytest.raises(ValueError, match="order must be"):
        remove_features(x, attr, 0.5, order="middle")
    with pytest.raises(ValueError, match="fraction"):
        remove_features(x, attr, 1.5)

    # ROAR with a nearest-class-mean learner: features 0-1 carry the label, the rest are noise
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 2
    data = torch.randn(200, 8, generator=gen, dtype=torch.float64)
    data[:, :2] += 3 * (2 * y[:, None] - 1)
    importance = torch.tensor([5.0, 5.0, 0, 0, 0, 0, 0, 0], dtype=torch.float64).expand(200, 8)

    def train(xt, yt):
        means = torch.stack([xt[yt == k].mean(0) for k in (0, 1)])
        return lambda z: -torch.cdist(z, means)

    top = roar(
        train,
        data[:100],
        y[:100],
        data[100:],
        y[100:],
        importance[:100],
        importance[100:],
        fractions=(0.0, 0.25),
        order="top",
    )
    bottom = roar(
        train,
        data[:100],
        y[:100],
        data[100:],
        y[100:],
        importance[:100],
        importance[100:],
        fractions=(0.0, 0.25),
        order="bottom",
    )
    assert top.accuracy[0] > 0.95 and bottom.accuracy[1] > 0.95 and top.accuracy[1] < 0.7


def test_metric_bad_inputs():
    model, x = small_cnn(), batch()
    attr = torch.zeros_like(x)
    with pytest.raises(ValueError, match="samples"):
        infidelity(model, x, attr, 0, samples=0)
    with pytest.raises(ValueError, match="NaN"):
        infidelity(model, x, attr * float("nan"), 0)
    with pytest.raises(ValueError, match="target must be < number of classes"):
        infidelity(model, x, attr, 7)
    with pytest.raises(ValueError, match="radius"):
        max_sensitivity(lambda z, t: z, x, 0, radius=-0.1)
    with pytest.raises(ValueError, match="shaped like x"):
        max_sensitivity(lambda z, t: z[:, 0], x, 0)
    with pytest.raises(TypeError, match="explain"):
        max_sensitivity(None, x, 0)


def test_pgd_perturb_stays_in_ball_and_raises_loss():
    from labkit.attributions.robust import pgd_perturb

    torch.manual_seed(0)
    lin = nn.Linear(6, 2).double()
    x = torch.rand(5, 6, dtype=torch.float64) * 0.5 + 0.25
    y = torch.tensor([0, 1, 0, 1, 1])
    lin.weight.grad = torch.full_like(lin.weight, 3.0)
    xa = pgd_perturb(lin, x, y, eps=0.1, steps=10, random_start=False)
    assert (xa - x).abs().max() <= 0.1 + 1e-12
    # on a linear binary model the L-inf optimum moves every pixel by eps against the margin's gradient
    w = (lin.weight[1] - lin.weight[0]).detach()
    best = x + 0.1 * torch.where(y[:, None] == 0, w.sign(), -w.sign())
    torch.testing.assert_close(xa, best)
    assert torch.equal(lin.weight.grad, torch.full_like(lin.weight, 3.0))
    x2 = pgd_perturb(lin, x, y, eps=0.3, norm="2", steps=5, generator=torch.Generator().manual_seed(0))
    assert ((x2 - x).norm(dim=1) <= 0.3 + 1e-9).all() and x2.min() >= 0 and x2.max() <= 1
    with pytest.raises(ValueError, match="norm"):
        pgd_perturb(lin, x, y, eps=0.1, norm="1")
