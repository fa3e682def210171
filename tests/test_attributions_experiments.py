"""The attribution notebooks' experiments: training helpers, losses, explainers and the measures they compare."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from labkit.attributions import (
    Curve,
    LayerGrad,
    RoarResult,
    deletion_curve,
    gini_index,
    grad_cam,
    instability,
    layer_activation_and_grad,
    saliency,
    smoothgrad,
)
from labkit.attributions.data import two_digit_canvas
from labkit.attributions.experiments import (
    DiffRoar,
    TrainedOnDigits,
    adversarial_loss,
    diffroar,
    explainer,
    fit_classifier,
    multilabel_loss,
    own_digit_rate,
    saturating,
    train_digits_cnn,
    train_mlp,
)
from labkit.models import cnn, mlp
from labkit.training import cross_entropy


def test_saturating_is_the_papers_flat_unit():
    z = torch.tensor([[0.0], [0.5], [2.0]], requires_grad=True)
    out = saturating(z)
    torch.testing.assert_close(out.detach(), torch.tensor([[0.0], [0.5], [1.0]]))
    (g,) = torch.autograd.grad(out.sum(), z)
    assert g[2].item() == 0.0 and g[1].item() == 1.0


def test_fit_classifier_trains_and_returns_eval_mode():
    torch.manual_seed(0)
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    model = mlp(4, [16], 3)
    before = cross_entropy(model, (x, y)).item()
    out = fit_classifier(model, x, y, steps=30, lr=1e-2, batch_size=32, progress=False)
    assert out is model and not any(m.training for m in model.modules())
    assert cross_entropy(model, (x, y)).item() < before
    with pytest.raises(ValueError, match="lr"):
        fit_classifier(model, x, y, steps=1, lr=0.0, progress=False)
    with pytest.raises(TypeError, match="loss"):
        fit_classifier(model, x, y, steps=1, loss="ce", progress=False)
    with pytest.raises(TypeError, match="model"):
        fit_classifier(lambda z: z, x, y, steps=1, progress=False)


def test_train_digits_cnn_is_seeded_by_the_caller():
    def run() -> TrainedOnDigits:
        with torch.random.fork_rng():
            torch.manual_seed(3)
            return train_digits_cnn(channels=(4,), steps=3, seed=1, progress=False)

    a, b = run(), run()
    model, data = a
    assert data.train_x.shape[1:] == (1, 8, 8) and not model.training
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=0, rtol=0)


def test_train_mlp_checks_its_input_and_trains_a_fresh_model():
    torch.manual_seed(0)
    x, y = torch.rand(40, 6), torch.randint(0, 2, (40,))
    model = train_mlp(x, y, hidden=[8], classes=2, steps=2)
    assert model(x).shape == (40, 2) and not model.training
    with pytest.raises(ValueError, match="flat"):
        train_mlp(x.reshape(40, 1, 2, 3), y, hidden=[8], classes=2, steps=1)
    with pytest.raises(ValueError, match="classes"):
        train_mlp(x, y, hidden=[8], classes=0, steps=1)


def test_adversarial_loss_is_the_loss_at_the_pgd_point():
    torch.manual_seed(0)
    model, x, y = mlp(6, [8], 3), torch.rand(5, 6), torch.randint(0, 3, (5,))
    clean = cross_entropy(model, (x, y))
    with torch.random.fork_rng():
        torch.manual_seed(1)
        adv = adversarial_loss(eps=0.3, steps=3)(model, (x, y))
    assert adv.ndim == 0 and adv.item() >= clean.item() - 1e-6
    torch.testing.assert_close(adversarial_loss(eps=0.0, steps=1)(model, (x, y)), clean)
    with pytest.raises(ValueError, match="eps"):
        adversarial_loss(eps=-1.0, steps=1)
    with pytest.raises(ValueError, match="steps"):
        adversarial_loss(eps=0.1, steps=0)


def test_multilabel_loss_is_binary_cross_entropy():
    torch.manual_seed(0)
    model, x = mlp(4, [5], 3), torch.rand(6, 4)
    y = torch.randint(0, 2, (6, 3)).float()
    torch.testing.assert_close(multilabel_loss(model, (x, y)),
                               nn.functional.binary_cross_entropy_with_logits(model(x), y))


def test_explainer_reuses_the_same_noise_draws():
    torch.manual_seed(0)
    model = cnn(1, 3, channels=(4,), image_size=8).double()
    x, t = torch.rand(2, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 2])
    fixed = explainer(smoothgrad, model, samples=3, generator=lambda: torch.Generator().manual_seed(5))
    torch.testing.assert_close(fixed(x, t), fixed(x, t), atol=0, rtol=0)
    torch.testing.assert_close(
        fixed(x, t), smoothgrad(model, x, t, samples=3, generator=torch.Generator().manual_seed(5)), atol=0, rtol=0)
    torch.testing.assert_close(explainer(saliency, model)(x, t), saliency(model, x, t))
    with pytest.raises(TypeError, match="method"):
        explainer(None, model)
    with pytest.raises(TypeError, match="generator"):
        explainer(smoothgrad, model, generator=5)


def test_explainer_with_one_generator_draws_fresh_noise_at_every_call():
    torch.manual_seed(0)
    model = cnn(1, 3, channels=(4,), image_size=8).double()
    x, t = torch.rand(2, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 2])
    fresh = explainer(smoothgrad, model, samples=3, generator=torch.Generator().manual_seed(5))
    first, second = fresh(x, t), fresh(x, t)
    assert not torch.equal(first, second)
    stream = torch.Generator().manual_seed(5)
    torch.testing.assert_close(first, smoothgrad(model, x, t, samples=3, generator=stream), atol=0, rtol=0)
    torch.testing.assert_close(second, smoothgrad(model, x, t, samples=3, generator=stream), atol=0, rtol=0)


def test_own_digit_rate_oracle_and_wrong_canvas():
    canvas = two_digit_canvas(6, seed=0)

    def oracle(model, x, target, *, layer):  # the mask of the digit whose class is asked for
        j = (canvas.labels == target[:, None]).float().argmax(1)
        return canvas.masks[torch.arange(len(x)), j]

    assert own_digit_rate(oracle, nn.Identity(), canvas, layer=nn.Identity()) == 1.0
    assert own_digit_rate(lambda m, x, t, *, layer: torch.ones(len(x), 16, 16), nn.Identity(), canvas,
                          layer=nn.Identity()) == 0.0  # equal mass on both squares is not "more"
    with pytest.raises(TypeError, match="canvas"):
        own_digit_rate(oracle, nn.Identity(), canvas.images, layer=nn.Identity())


def test_diffroar_ranks_by_the_predicted_class_and_is_frozen():
    torch.manual_seed(0)
    x_tr, y_tr = torch.rand(30, 6), torch.randint(0, 2, (30,))
    x_te, y_te = torch.rand(10, 6), torch.randint(0, 2, (10,))
    model = mlp(6, [8], 2).eval()
    seen = []

    def explain(m, x, target):
        seen.append(target.clone())
        return saliency(m, x, target)

    result = diffroar(model, lambda x, y: model, x_tr, y_tr, x_te, y_te, fractions=(0.5,), explain=explain)
    assert isinstance(result, DiffRoar) and result.fractions == [0.5]
    assert result.diff == [result.bottom[0] - result.top[0]]
    torch.testing.assert_close(seen[0], model(x_tr).argmax(1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.top = []
    with pytest.raises(TypeError, match="train"):
        diffroar(model, None, x_tr, y_tr, x_te, y_te, fractions=(0.5,))


def test_gini_index_and_instability_extremes():
    flat, peak = torch.ones(1, 16), torch.zeros(1, 16)
    peak[0, 3] = -2.0
    torch.testing.assert_close(gini_index(flat), torch.zeros(1))
    torch.testing.assert_close(gini_index(peak), torch.tensor([1 - 1 / 16]))
    a = torch.randn(3, 1, 4, 4)
    torch.testing.assert_close(instability(a, a), torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(instability(a, -a), torch.full((3,), 2.0))
    with pytest.raises(ValueError, match="shape"):
        instability(a, a[:2])
    with pytest.raises(TypeError, match="maps"):
        gini_index(torch.ones(4, dtype=torch.long))


def test_results_are_frozen_and_unpack_as_before():
    torch.manual_seed(0)
    model = cnn(1, 3, channels=(4, 4), image_size=8).double()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    result = layer_activation_and_grad(model, x, 1, layer=model[2])
    a, g, s = result
    assert isinstance(result, LayerGrad) and result.activations is a and result.gradient is g and result.scores is s
    torch.testing.assert_close(grad_cam(model, x, 1, layer=model[2], upsample=False, relu=False),
                               (g.mean(dim=(2, 3), keepdim=True) * a).sum(1))
    curve = deletion_curve(model, x, saliency(model, x, 1), 1, steps=4)
    assert isinstance(curve, Curve)
    for frozen in (curve, RoarResult([0.5], [1.0], "top")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            frozen.order = "bottom"
