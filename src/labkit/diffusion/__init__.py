"""Diffusion guidance on toys with known answers: exact Gaussian mixtures (scores, denoisers, noisy
classifiers at any noise level), EDM schedules, samplers with one signature (Euler, Heun, DDIM, DDPM),
guidance policies (CFG, CFG rescale, classifier guidance, guidance interval, adaptive guidance),
distribution metrics, a tiny trained conditional denoiser and the notebooks' experiments.

Noise convention everywhere: ``x = x0 + sigma * eps``; a denoiser is ``D(x, sigma[, label])``.

Bad arguments (NaN or inf numbers and tensors, out-of-range options, labels outside a denoiser's classes,
another dtype than the model's, a wrong feature size, empty data, the ``meta`` device) are a ``ValueError``
or ``TypeError`` naming the argument. The measurements (samplers, guidance policies, the classifier
gradient, the experiments) run an ``nn.Module`` denoiser or classifier in eval mode and leave it as found.
"""

from labkit.diffusion.experiments import (
    DenoiserGaps,
    GuidedRun,
    TeleportRun,
    TrainedDenoiser,
    denoiser_gaps,
    guidance_sweep,
    guided_run,
    teleport_sweep,
    train_mixture_denoiser,
)
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
    Eigh,
    GaussianFit,
    LinearGaussianModel,
    cfg_decomposition,
    contrastive_components,
    gaussian_denoise,
    gaussian_fit,
    gaussian_teleport,
    wiener_gain,
)
from labkit.diffusion.metrics import PrecisionRecall, displacement, mmd2, mode_mass, precision_recall
from labkit.diffusion.mixtures import GaussianMixture, MixtureSample, ring_mixture
from labkit.diffusion.models import MLPDenoiser
from labkit.diffusion.samplers import (
    SAMPLERS,
    SampleResult,
    get_sampler,
    sample_ddim,
    sample_ddpm,
    sample_euler,
    sample_heun,
    sample_ode,
)
from labkit.diffusion.schedules import karras_sigmas
from labkit.diffusion.training import denoising_loss, train_denoiser

__all__ = [
    "CFG",
    "SAMPLERS",
    "AdaptiveGuidance",
    "CFGDecomposition",
    "ClassifierGuidance",
    "DenoiserGaps",
    "Eigh",
    "GaussianFit",
    "GaussianMixture",
    "GuidanceOutput",
    "GuidancePolicy",
    "GuidedRun",
    "LinearGaussianModel",
    "MLPDenoiser",
    "MixtureSample",
    "PrecisionRecall",
    "SampleResult",
    "TeleportRun",
    "TrainedDenoiser",
    "cfg",
    "cfg_decomposition",
    "cfg_rescale",
    "classifier_gradient",
    "contrastive_components",
    "cosine",
    "denoiser_gaps",
    "denoising_loss",
    "displacement",
    "gaussian_denoise",
    "gaussian_fit",
    "gaussian_teleport",
    "get_sampler",
    "guidance_sweep",
    "guided_run",
    "karras_sigmas",
    "make_guidance",
    "mmd2",
    "mode_mass",
    "precision_recall",
    "ring_mixture",
    "sample_ddim",
    "sample_ddpm",
    "sample_euler",
    "sample_heun",
    "sample_ode",
    "teleport_sweep",
    "train_denoiser",
    "train_mixture_denoiser",
    "wiener_gain",
]
