"""Training dynamics: how gradient descent moves through training.

Batch size and curvature (:mod:`labkit.dynamics.curvature`: the top Hessian eigenvalue of mini-batch losses
next to the full-batch one, the largest stable learning rate per batch size; Granziol et al., *Learning Rates
as a Function of Batch Size: A Random Matrix Theory Approach to Neural Network Training*, arXiv 2006.09092),
outliers with opposing signals (:mod:`labkit.dynamics.opposing`), incremental learning in matrix sensing
(:mod:`labkit.dynamics.sensing`) and gradient surgery (:mod:`labkit.dynamics.surgery`).
"""

from labkit.dynamics.curvature import (
    CurvatureSweep,
    EigenStats,
    InverseBatchFit,
    RegressionBank,
    StableLR,
    StableLRSweep,
    batch_top_eigenvalue,
    curvature_sweep,
    inverse_batch_fit,
    loglog_slope,
    max_stable_lr,
    regression_mlp,
    regression_train_fn,
    spiked_regression,
    stable_lr_sweep,
)
from labkit.dynamics.opposing import (
    OpposingData,
    OpposingGroups,
    OpposingRun,
    antiphase_correlation,
    find_opposing_groups,
    opposing_loss,
    opposing_mlp,
    opposing_signals_data,
    train_opposing,
)
from labkit.dynamics.sensing import (
    SensingProblem,
    SensingRun,
    incremental_learning_times,
    matrix_sensing,
    sensing_gd,
    sensing_gradient,
    sensing_loss,
)
from labkit.dynamics.surgery import (
    BloopStep,
    SurgeryComparison,
    SurgeryLoss,
    SurgeryProblem,
    TwoLossRun,
    bloop_direction,
    compare_surgery,
    pcgrad,
    project_out,
    surgery_problem,
    train_two_losses,
)

__all__ = [
    "OpposingData", "OpposingGroups", "OpposingRun", "antiphase_correlation", "find_opposing_groups", "opposing_loss",
    "opposing_mlp", "opposing_signals_data", "train_opposing",
    "SensingProblem", "SensingRun", "incremental_learning_times", "matrix_sensing", "sensing_gd", "sensing_gradient",
    "sensing_loss",
    "BloopStep", "SurgeryComparison", "SurgeryLoss", "SurgeryProblem", "TwoLossRun", "bloop_direction",
    "compare_surgery", "pcgrad", "project_out", "surgery_problem", "train_two_losses",
    "CurvatureSweep", "EigenStats", "InverseBatchFit", "RegressionBank", "StableLR", "StableLRSweep",
    "batch_top_eigenvalue", "curvature_sweep", "inverse_batch_fit", "loglog_slope", "max_stable_lr",
    "regression_mlp", "regression_train_fn", "spiked_regression", "stable_lr_sweep",
]
