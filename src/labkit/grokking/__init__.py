"""Grokking: delayed generalization on modular arithmetic, its interventions and progress measures.

- ``stablemax``, ``stablemax_cross_entropy``, ``softmax_cross_entropy(dtype=float64)``: Prieto et al.
  (2025), *Grokking at the Edge of Numerical Stability*, arXiv:2501.04697.
- ``PerpGrad`` (⊥Grad) and ``GrokfastEMA`` optimizer wrappers (Prieto et al., 2025; Lee et al., 2024).
- ``grok_step``, ``softmax_collapse_fraction``, ``nlm_cosine``, ``fourier_concentration``,
  ``weight_norm``, ``parameter_drift``: progress measures and diagnostics.
- ``train_grokking`` / ``make_optimizer``: one full-batch AdamW (betas 0.9/0.98) run through
  :func:`labkit.training.fit` with these measures as history columns.
"""

from labkit.grokking.experiment import GrokRun, make_optimizer, train_grokking
from labkit.grokking.optim import GradientFilter, GrokfastEMA, PerpGrad, perpendicular_gradient
from labkit.grokking.progress import (
    GrokSummary,
    feature_purity,
    fourier_concentration,
    fourier_power,
    grok_step,
    key_frequencies,
    nlm_cosine,
    node_frequencies,
    node_spectra,
    parameter_drift,
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

__all__ = [
    "GradientFilter", "GrokRun", "GrokSummary", "GrokfastEMA", "PerpGrad", "classification_loss",
    "feature_purity", "fourier_concentration", "fourier_power", "grok_step", "key_frequencies",
    "log_stablemax", "make_optimizer", "mse_one_hot_loss", "nlm_cosine", "node_frequencies",
    "node_spectra", "parameter_drift", "perpendicular_gradient", "snapshot",
    "softmax_collapse_fraction", "softmax_cross_entropy", "stable_s", "stablemax",
    "stablemax_cross_entropy", "train_grokking", "weight_norm",
]
