"""Grokking: delayed generalization on modular arithmetic, its interventions and progress measures.

- ``modular_arithmetic`` / ``ModularSplit``, ``OneHotMLP``, ``OneLayerTransformer``: the task and models
  (Power et al., 2022, arXiv:2201.02177; Nanda et al., 2023, arXiv:2301.05217).
- ``xor_clusters``, ``TwoLayerReLU``, ``logistic_loss`` / ``xor_loss``, ``train_xor``: benign overfitting and
  grokking on XOR clusters (Xu et al., ICLR 2024, arXiv:2310.02541).
- ``stablemax``, ``stablemax_cross_entropy``, ``softmax_cross_entropy(dtype=float64)``: Prieto et al.
  (2025), *Grokking at the Edge of Numerical Stability*, arXiv:2501.04697.
- ``PerpGrad`` (⊥Grad) and ``GrokfastEMA`` optimizer wrappers (Prieto et al., 2025; Lee et al., 2024).
- ``grok_step``, ``softmax_collapse_fraction``, ``nlm_cosine``, ``fourier_concentration``,
  ``weight_norm``, ``parameter_drift``: progress measures and diagnostics.
- ``train_grokking`` / ``make_optimizer``: one full-batch AdamW (betas 0.9/0.98) run through
  :func:`labkit.training.fit` with these measures as history columns; ``fresh_model`` and ``modular_run``
  (fresh model + optimizer + run in one call) for the notebooks' experiments.
"""

from labkit.grokking.experiment import GrokRun, fresh_model, make_optimizer, modular_run, train_grokking
from labkit.grokking.models import OneHotMLP, OneLayerTransformer
from labkit.grokking.modular import ModularSplit, modular_arithmetic
from labkit.grokking.optim import GradientFilter, GrokfastEMA, PerpGrad, perpendicular_gradient
from labkit.grokking.progress import (
    GrokSummary,
    feature_purity,
    fourier_concentration,
    fourier_power,
    frequency_coverage,
    grok_step,
    key_frequencies,
    nlm_cosine,
    node_frequencies,
    node_spectra,
    parameter_drift,
    progress_lead,
    snapshot,
    softmax_collapse_fraction,
    weight_norm,
)
from labkit.grokking.stablemax import (
    classification_loss,
    log_stablemax,
    mse_one_hot_loss,
    softmax_cross_entropy,
    stable_s,
    stablemax,
    stablemax_cross_entropy,
)
from labkit.grokking.xor import (
    TwoLayerReLU,
    XorClusters,
    log_spaced_steps,
    logistic_loss,
    plane_decision_maps,
    train_xor,
    xor_clusters,
    xor_loss,
)

__all__ = [
    "GradientFilter", "GrokRun", "GrokSummary", "GrokfastEMA", "ModularSplit", "OneHotMLP",
    "OneLayerTransformer", "PerpGrad", "TwoLayerReLU", "XorClusters", "classification_loss",
    "feature_purity", "fourier_concentration", "fourier_power", "frequency_coverage", "fresh_model", "grok_step",
    "key_frequencies", "log_spaced_steps", "log_stablemax", "logistic_loss", "make_optimizer",
    "modular_arithmetic", "modular_run", "mse_one_hot_loss", "nlm_cosine", "node_frequencies",
    "node_spectra", "parameter_drift", "perpendicular_gradient", "plane_decision_maps", "progress_lead", "snapshot",
    "softmax_collapse_fraction", "softmax_cross_entropy", "stable_s", "stablemax",
    "stablemax_cross_entropy", "train_grokking", "train_xor", "weight_norm", "xor_clusters", "xor_loss",
]
