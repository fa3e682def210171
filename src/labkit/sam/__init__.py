"""Sharpness-aware minimization: SAM, ASAM, norm-only SAM (``optim``), sharpness measures (``sharpness``),
label noise (``noise``), test-set noise and bootstrap intervals (``stats``) and the notebooks' experiments
(``experiments``).

References: Foret et al. (2021) https://arxiv.org/abs/2010.01412; Kwon et al. (2021)
https://arxiv.org/abs/2102.11600; Mueller et al. (2023) https://arxiv.org/abs/2306.04226;
Andriushchenko et al. (2023) https://arxiv.org/abs/2302.07011.
"""

from labkit.sam.experiments import (
    MEASURES,
    OPTIMIZERS,
    MatchedSharpness,
    SharpnessMeasures,
    Trained,
    kendall_tau,
    make_optimizer,
    matched_loss_sharpness,
    sharpness_measures,
    snapshot_top_eigenvalue,
    train_from,
)
from labkit.sam.noise import noisy_labels
from labkit.sam.optim import NORM_LAYER_TYPES, SAM, frozen_running_stats, norm_only_sam, norm_parameters
from labkit.sam.sharpness import (
    TopEigenvalue,
    TraceEstimate,
    hessian_top_eigenvalue,
    hessian_trace,
    worst_case_sharpness,
)
from labkit.sam.stats import TauInterval, binomial_se, bootstrap_tau, kendall_tau_b, paired_se

__all__ = [
    "MEASURES", "NORM_LAYER_TYPES", "OPTIMIZERS", "SAM", "MatchedSharpness", "SharpnessMeasures", "TopEigenvalue",
    "TauInterval", "TraceEstimate", "Trained", "binomial_se", "bootstrap_tau", "kendall_tau_b", "paired_se",
    "frozen_running_stats", "hessian_top_eigenvalue", "hessian_trace", "kendall_tau",
    "make_optimizer", "matched_loss_sharpness", "noisy_labels", "norm_only_sam", "norm_parameters",
    "sharpness_measures", "snapshot_top_eigenvalue", "train_from", "worst_case_sharpness",
]
