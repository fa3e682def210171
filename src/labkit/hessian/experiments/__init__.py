"""The experiments of the Hessian notebooks: training runs, spectra over widths and classes, gradient
subspaces, rescaled networks, edge-of-stability runs and domain-alignment heads.

Each function is one experiment of a notebook under ``notebooks/hessian`` (the paper is cited on it); the
notebooks keep the idea, the by-hand twins, the figures and the claims. Randomness comes in as explicit
seeds (``init_seed`` for a module's default initialisation, ``batch_seed`` for mini-batches) or
generators (``generator=``, CPU by default: see :mod:`labkit.autograd`), typically from a
:class:`labkit.runtime.Run`'s named streams. Numeric options are checked (finite, in range) with
:mod:`labkit.checks`.

One module per family: :mod:`~labkit.hessian.experiments.training` (seeded set-ups, ``train_network``),
:mod:`~labkit.hessian.experiments.curvature` (notebooks 01, 02, 04),
:mod:`~labkit.hessian.experiments.landscapes` and :mod:`~labkit.hessian.experiments.batch_size` (03) and
:mod:`~labkit.hessian.experiments.domains` (05); the approximate-Newton study (06) lives in
:mod:`labkit.hessian.newton` and the scalar networks in :mod:`labkit.hessian.scalar`.
"""

from labkit.hessian.experiments.batch_size import BatchMinimum, LossRise, batch_size_minima, loss_rise, weight_norm
from labkit.hessian.experiments.curvature import (
    SpectrumGrid,
    SubspaceRun,
    edge_of_stability_runs,
    gradient_subspace_runs,
    half_squared_error,
    sharpness,
    width_class_spectra,
)
from labkit.hessian.experiments.domains import (
    PENALTIES,
    AlignedHead,
    AlignmentTuning,
    binary_accuracy,
    logistic_loss,
    penalty_terms,
    train_aligned_heads,
    tune_alignment,
)
from labkit.hessian.experiments.landscapes import DIRECTIONS, rescaled_copy, rescaling_curves
from labkit.hessian.experiments.training import OPTIMIZERS, copy_generator, seeded_init, train_network

__all__ = [
    "AlignedHead",
    "BatchMinimum",
    "LossRise",
    "AlignmentTuning",
    "PENALTIES",
    "DIRECTIONS",
    "OPTIMIZERS",
    "SpectrumGrid",
    "SubspaceRun",
    "batch_size_minima",
    "binary_accuracy",
    "copy_generator",
    "edge_of_stability_runs",
    "gradient_subspace_runs",
    "half_squared_error",
    "logistic_loss",
    "loss_rise",
    "penalty_terms",
    "rescaled_copy",
    "rescaling_curves",
    "seeded_init",
    "sharpness",
    "train_aligned_heads",
    "tune_alignment",
    "train_network",
    "weight_norm",
    "width_class_spectra",
]
