"""The attributions cases of issue 12, each as the exact call that misbehaved: each now raises a clear
``ValueError``/``TypeError`` naming the argument (silent wrong results and confusing torch errors before)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from labkit.attributions import (
    deletion_curve,
    grad_cam,
    infidelity,
    integrated_gradients,
    max_sensitivity,
    noise_scale,
    pgd_perturb,
    remove_features,
    roar,
    saliency,
    smoothgrad,
)
from labkit.attributions.experiments import diffroar, explainer, fit_classifier, train_mlp
from labkit.models import cnn

NAN = float("nan")


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return cnn(1, 4, channels=(3, 4), image_size=6)


X = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(0))
T = torch.tensor([0, 3, 1])


# --- silent wrong results -----------------------------------------------------------------------------

def test_integrated_gradients_refuses_a_nan_number_baseline():
    with pytest.raises(ValueError, match="baseline must be a finite number"):
        integrated_gradients(tiny_cnn(), X, 0, baseline=NAN)
    with pytest.raises(ValueError, match="baseline"):
        integrated_gradients(tiny_cnn(), X, 0, baseline=math.inf)
    with pytest.raises(ValueError, match="baseline.*NaN"):  # a NaN tensor baseline was already refused
        integrated_gradients(tiny_cnn(), X, 0, baseline=torch.full_like(X, NAN))


def test_noise_scale_refuses_a_negative_noise():
    with pytest.raises(ValueError, match="noise must be >= 0"):
        noise_scale(X, noise=-1)
    with pytest.raises(ValueError, match="noise"):
        noise_scale(X, noise=NAN)
    assert bool((noise_scale(X, noise=0.2) >= 0).all())


def test_deletion_curve_and_remove_features_refuse_nan_fill_values():
    model = tiny_cnn()
    with pytest.raises(ValueError, match="baseline must be a finite number"):
        deletion_curve(model, X, X, T, baseline=NAN)
    with pytest.raises(ValueError, match="baseline contains NaN"):
        deletion_curve(model, X, X, T, baseline=torch.full_like(X, NAN))
    with pytest.raises(ValueError, match="fill must be a finite number"):
        remove_features(X, X, 0.5, fill=NAN)
    with pytest.raises(ValueError, match="fill"):
        remove_features(X, X, 0.5, fill=1e39)  # overflows float32
    with pytest.raises(TypeError, match="fraction"):
        remove_features(X, X, True)


def test_pgd_refuses_an_empty_clamp_range():
    with pytest.raises(ValueError, match=r"clamp must be a range \(low, high\) with low < high"):
        pgd_perturb(tiny_cnn(), X, T, eps=0.1, clamp=(1, 0))
    with pytest.raises(ValueError, match="clamp"):
        pgd_perturb(tiny_cnn(), X, T, eps=0.1, clamp=(0.5, 0.5))
    with pytest.raises(ValueError, match=r"clamp\[1\]"):
        pgd_perturb(tiny_cnn(), X, T, eps=0.1, clamp=(0, NAN))
    with pytest.raises(TypeError, match="clamp"):
        pgd_perturb(tiny_cnn(), X, T, eps=0.1, clamp=1.0)


# --- confusing errors ---------------------------------------------------------------------------------

def test_input_dtype_differing_from_the_model_names_x():
    with pytest.raises(TypeError, match=r"x has dtype torch.float64 but the model's parameters are torch.float32"):
        saliency(tiny_cnn(), X.double(), 0)
    with pytest.raises(TypeError, match="x has dtype"):
        integrated_gradients(tiny_cnn(), X.double(), 0)
    with pytest.raises(TypeError, match="x has dtype"):
        pgd_perturb(tiny_cnn(), X.double(), T, eps=0.1)


def test_wrong_feature_size_names_x():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    with pytest.raises(ValueError, match=r"model could not be applied to x of shape \(3, 7\)") as err:
        saliency(mlp, torch.rand(3, 7), 0)
    assert "mat1 and mat2" in str(err.value)  # torch's words are kept, after ours
    with pytest.raises(ValueError, match=r"x of shape \(3, 2, 6, 6\)"):  # two channels, one expected
        smoothgrad(tiny_cnn(), torch.rand(3, 2, 6, 6), 0, samples=2)
    with pytest.raises(ValueError, match=r"x of shape \(3, 2, 6, 6\)"):
        integrated_gradients(tiny_cnn(), torch.rand(3, 2, 6, 6), 0, steps=3)


def test_grad_cam_without_a_channel_dimension():
    model = tiny_cnn()
    with pytest.raises(ValueError, match=r"x must be a batch of images of shape \(N, C, H, W\).*unsqueeze\(1\)"):
        grad_cam(model, X[:, 0], 0, layer=model[0])
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):  # one image: torch would read it as unbatched
        grad_cam(model, X[:1, 0], 0, layer=model[0])


def test_pgd_label_out_of_range_names_y():
    with pytest.raises(ValueError, match="y must be < number of classes C=4, got 9"):
        pgd_perturb(tiny_cnn(), X, torch.tensor([0, 9, 1]), eps=0.1)
    with pytest.raises(ValueError, match="y must be a non-negative class index"):
        pgd_perturb(tiny_cnn(), X, torch.tensor([0, -1, 1]), eps=0.1)


def test_metric_handed_an_explainer_of_the_wrong_signature():
    with pytest.raises(TypeError, match=r"explain must be a callable explain\(x, target\).*saliency\(model, x, target"):
        max_sensitivity(saliency, X, T)  # the method, not an explainer
    with pytest.raises(TypeError, match="explain must be a callable"):
        max_sensitivity(lambda x: x, X, T)
    with pytest.raises(TypeError, match=r"method must be a callable method\(model, x, target"):
        explainer(saliency, tiny_cnn(), samples=3)  # saliency takes no samples
    with pytest.raises(TypeError, match=r"explain must be a callable explain\(model, x, target\)"):
        diffroar(tiny_cnn(), lambda x, y: tiny_cnn(), X, T, X, T, fractions=[0.5], explain=lambda x, t: x)
    with pytest.raises(TypeError, match=r"train must be a callable train\(x, y\)"):
        roar(lambda x: x, X, T, X, T, X, X)


def test_training_labels_out_of_range_name_y_or_classes():
    with pytest.raises(ValueError, match=r"y must hold class indices in \[0, 4\)"):
        fit_classifier(tiny_cnn(), X, torch.tensor([0, 4, 1]), steps=1, progress=False)
    with pytest.raises(ValueError, match="classes=2 but y holds labels up to 3"):
        train_mlp(X.flatten(1), T, hidden=[4], classes=2, steps=1)
    with pytest.raises(ValueError, match="lr=1e[+]38 is too large"):
        fit_classifier(tiny_cnn(), X, T, steps=1, lr=1e38, progress=False)

    def nan_gradient(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        s = model(batch[0]).abs().sum()
        return (s - s).sqrt()  # a finite loss (0) whose gradient is NaN: the parameters become NaN

    with pytest.raises(ValueError, match="training diverged.*lower lr"):
        fit_classifier(tiny_cnn(), X, T, steps=1, loss=nan_gradient, progress=False)


def test_meta_tensors_are_refused_by_name():
    model = tiny_cnn()
    meta = X.to("meta")
    with pytest.raises(ValueError, match="x is on the 'meta' device"):
        saliency(model, meta, 0)
    with pytest.raises(ValueError, match="target is on the 'meta' device"):
        saliency(model, X, T.to("meta"))
    with pytest.raises(ValueError, match="baseline is on the 'meta' device"):
        integrated_gradients(model, X, 0, baseline=meta)
    with pytest.raises(ValueError, match="attributions is on the 'meta' device"):
        infidelity(model, X, meta, 0)
    with pytest.raises(ValueError, match="model has parameters on the 'meta' device"):
        saliency(tiny_cnn().to("meta"), X, 0)


# --- smoothgrad's chunk size ------------------------------------------------------------------------

def test_smoothgrad_chunk_size_changes_results_only_up_to_float_rounding():
    """The noise draws are the same for every chunk size; the sums are grouped differently, so "auto" and 1
    differ by float rounding (about 3e-8 in float32), not more."""
    model = tiny_cnn()

    def run(chunk: int | str) -> torch.Tensor:
        return smoothgrad(model, X, T, samples=8, kind="square", generator=torch.Generator().manual_seed(3),
                          chunk_size=chunk)

    auto = run("auto")
    for chunk in (1, 2, 5):
        torch.testing.assert_close(run(chunk), auto, rtol=1e-5, atol=1e-6)
    assert "up to float rounding" in " ".join(smoothgrad.__doc__.split())
