"""The diffusion cases of the reliability issue (#12): each call that returned a silent wrong result or a
confusing torch error now raises a clear ValueError / TypeError naming the argument."""

import math

import pytest
import torch
from torch import nn

from labkit.diffusion import (
    CFG,
    ClassifierGuidance,
    GaussianMixture,
    MLPDenoiser,
    cfg,
    classifier_gradient,
    denoising_loss,
    gaussian_denoise,
    guided_run,
    karras_sigmas,
    mmd2,
    mode_mass,
    ring_mixture,
    sample_heun,
    train_mixture_denoiser,
)

NAN = math.nan
MIX = ring_mixture(2, 3)
SIGMAS = karras_sigmas(4, sigma_max=80.0)
X = 80 * torch.randn(8, 2, generator=torch.Generator().manual_seed(0))


def test_karras_sigmas_refuses_a_nan_rho():
    with pytest.raises(ValueError, match="rho must be a finite number, got nan"):
        karras_sigmas(5, rho=NAN)
    with pytest.raises(TypeError, match="dtype must be a floating"):
        karras_sigmas(5, dtype=torch.int64)


def test_cfg_refuses_a_nan_weight_like_the_cfg_policy():
    with pytest.raises(ValueError, match="w must be a finite number, got nan"):
        cfg(torch.ones(2, 2), torch.zeros(2, 2), NAN)
    with pytest.raises(ValueError, match="w must be a finite number"):
        CFG(NAN)


def test_gaussian_mixture_refuses_nan_means():
    with pytest.raises(ValueError, match="means contains NaN or infinite values"):
        GaussianMixture(torch.tensor([[NAN, 0.0]]), torch.ones(1), torch.ones(1))


def test_nan_covariances_are_reported_as_nan_not_as_asymmetric():
    with pytest.raises(ValueError, match="covariances contains NaN or infinite values"):
        GaussianMixture(torch.zeros(1, 2), torch.tensor([[[NAN, 0.0], [0.0, 1.0]]]), torch.ones(1))
    with pytest.raises(ValueError, match="cov contains NaN"):
        gaussian_denoise(torch.zeros(3, 2), 1.0, torch.zeros(2), torch.full((2, 2), NAN))


def test_mmd2_refuses_a_nan_bandwidth():
    x, y = torch.randn(5, 2), torch.randn(5, 2)
    with pytest.raises(ValueError, match=r"bandwidths\[0\] must be a finite number, got nan"):
        mmd2(x, y, bandwidths=(NAN,))
    with pytest.raises(ValueError, match="at least one bandwidth"):
        mmd2(x, y, bandwidths=())


def test_mode_mass_refuses_samples_with_nan():
    """Before: every NaN sample was assigned to component 0 and the masses summed to 1."""
    with pytest.raises(ValueError, match="samples contains NaN or infinite values"):
        mode_mass(torch.full((4, 2), NAN), MIX)


@pytest.mark.parametrize("denoiser", ["mixture", "mlp"])
def test_a_guidance_label_out_of_range_names_label_and_the_number_of_classes(denoiser):
    model = MIX if denoiser == "mixture" else MLPDenoiser(2, 2, hidden=8, depth=1)
    with pytest.raises(ValueError, match=r"label must be a class index in \[0, 2\) \(the denoiser has 2 classes\)"):
        sample_heun(model, X, SIGMAS, label=5, guidance=CFG(2.0))
    with pytest.raises(ValueError, match=r"label must be a class index in \[0, 2\)"):
        sample_heun(model, X, SIGMAS, label=5, guidance=ClassifierGuidance(MIX.classifier, 2.0))
    with pytest.raises(ValueError, match=r"label must be a class index in \[0, 2\) \(the mixture has 2 classes\)"):
        guided_run(MIX, X, SIGMAS, CFG(2.0), label=7)


def test_the_classifier_names_its_number_of_classes():
    with pytest.raises(ValueError, match=r"label must be a class index in \[0, 2\) \(the classifier has 2 classes\)"):
        classifier_gradient(MIX.classifier, X, torch.ones(8), torch.full((8,), 3))


def test_the_null_class_is_not_a_sampling_label():
    """``label = num_classes`` is the model's null class (label dropout): sampling asks ``label=None``."""
    model = MLPDenoiser(2, 2, hidden=8, depth=1)
    with pytest.raises(ValueError, match=r"label must be a class index in \[0, 2\)"):
        sample_heun(model, X, SIGMAS, label=2, guidance=CFG(2.0))
    assert sample_heun(model, X, SIGMAS).samples.shape == X.shape  # unconditional


def test_a_model_of_another_dtype_or_feature_size_is_named():
    model = MLPDenoiser(2, 2, hidden=8, depth=1)
    with pytest.raises(TypeError, match="x has dtype torch.float64 but the model's parameters are torch.float32"):
        sample_heun(model, X.double(), SIGMAS)
    with pytest.raises(TypeError, match="x0 has dtype torch.float64"):
        denoising_loss(model, X.double(), torch.zeros(8, dtype=torch.long))
    with pytest.raises(ValueError, match="x0 must have 2 features per sample"):
        denoising_loss(model, torch.zeros(8, 3), torch.zeros(8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels must hold class indices in \[0, 2\)"):
        denoising_loss(model, X, torch.full((8,), 2))

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, x, sigma):
            return self.lin(x)
    with pytest.raises(ValueError, match=r"x has shape \(8, 2\), which does not fit the classifier"):
        classifier_gradient(Classifier(), X, torch.ones(8), 0)


def test_meta_tensors_and_diverging_denoisers_are_clear_errors():
    with pytest.raises(ValueError, match="x is on the 'meta' device"):
        sample_heun(MIX, X.to("meta"), SIGMAS)
    with pytest.raises(ValueError, match="sigmas is on the 'meta' device"):
        sample_heun(MIX, X, SIGMAS.to("meta"))
    with pytest.raises(ValueError, match="denoiser returned NaN or infinite values"):
        sample_heun(lambda x, s: x * NAN, X, SIGMAS)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(n=1), ValueError, "n must be >= 2"),
    (dict(lr=NAN), ValueError, "lr must be a finite number"),
    (dict(steps=0), ValueError, "steps must be >= 1"),
    (dict(p_std=-1.0), ValueError, "p_std must be >= 0"),
    (dict(batch_size=0), ValueError, "batch_size must be a positive int"),
])
def test_train_mixture_denoiser_refuses_bad_options_before_training(kwargs, error, match):
    with pytest.raises(error, match=match):
        train_mixture_denoiser(MIX, **{"n": 50, "steps": 2, "hidden": 4, "depth": 1, "progress": False, **kwargs})
