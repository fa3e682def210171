"""Diffusion guidance on toys with known answers: exact Gaussian mixtures (scores, denoisers, noisy
classifiers at any noise level), EDM schedules, ODE / DDIM / DDPM samplers, guidance policies (CFG,
CFG rescale, classifier guidance, guidance interval, adaptive guidance), distribution metrics and
tiny trained conditional denoisers.

Noise convention everywhere: ``x = x0 + sigma * eps``; a denoiser is ``D(x, sigma[, label])``.
"""

from labkit.diffusion.guidance import (
    CFG,
    AdaptiveGuidance,
    ClassifierGuidance,
    GuidanceOutput,
    GuidancePolicy,
    cfg,
    cfg_rescale,
    classifier_gradient,
    cosine,
    make_guidance,
)
from labkit.diffusion.linear import (
    CFGDecomposition,
    cfg_decomposition,
    contrastive_components,
    gaussian_denoise,
    gaussian_teleport,
    wiener_gain,
)
from labkit.diffusion.metrics import mmd2, mode_mass, precision_recall, sliced_wasserstein
from labkit.diffusion.mixtures import GaussianMixture, ring_mixture
from labkit.diffusion.samplers import SampleResult, initial_noise, sample_ddim, sample_ddpm, sample_ode
from labkit.diffusion.schedules import ddpm_sigmas, karras_sigmas
from labkit.diffusion.training import denoising_loss, train_denoiser, train_noisy_classifier

__all__ = [
    "CFG",
    "CFGDecomposition",
    "cfg_decomposition",
    "contrastive_components",
    "gaussian_denoise",
    "gaussian_teleport",
    "wiener_gain",
    "AdaptiveGuidance",
    "ClassifierGuidance",
    "GaussianMixture",
    "GuidanceOutput",
    "GuidancePolicy",
    "SampleResult",
    "cfg",
    "cfg_rescale",
    "classifier_gradient",
    "cosine",
    "ddpm_sigmas",
    "denoising_loss",
    "initial_noise",
    "karras_sigmas",
    "make_guidance",
    "mmd2",
    "mode_mass",
    "precision_recall",
    "ring_mixture",
    "sample_ddim",
    "sample_ddpm",
    "sample_ode",
    "sliced_wasserstein",
    "train_denoiser",
    "train_noisy_classifier",
]
