"""In-context learning: transformers that run gradient descent in their forward pass.

Regression prompts (``prompts``), one layer of linear self-attention with its training and its reading as a
GD step (``attention``), the reference predictors it is compared with (``predictors``), the icl/01
experiment (``experiments``), the gradient-flow theory of one layer (``flow``) and deeper linear transformers
with their GD and ridge baselines (``deep``).

References: Mahankali, Hashimoto, Ma (2023) https://arxiv.org/abs/2307.03576; Zhang, Frei, Bartlett (2023)
https://arxiv.org/abs/2306.09927; von Oswald et al. (2023) https://arxiv.org/abs/2212.07677.
"""

from labkit.icl.attention import (
    OPTIMIZERS,
    SCHEDULES,
    GDMatch,
    LinearSelfAttention,
    gd_attention,
    gd_equivalence,
    implied_preconditioner,
    train_icl,
)
from labkit.icl.deep import (
    LinearTransformer,
    NoisyPrompts,
    Tuned,
    adaptive_ridge_predict,
    estimated_noise,
    gd_predict,
    noisy_prompts,
    noisy_ridge_predict,
    oracle_ridge_predict,
    train_linear_transformer,
    tune_gd_step,
    tune_ridge,
    warmup_cosine,
)
from labkit.icl.experiments import OneStepGD, one_step_gd_experiment
from labkit.icl.flow import paper_initialization, prediction_error
from labkit.icl.predictors import (
    context_correlation,
    fit_preconditioner,
    fit_step_size,
    matrix_cosine,
    mse,
    off_identity_share,
    ols_predict,
    one_step_gd_predict,
    optimal_preconditioner,
    optimal_step_size,
    ridge_predict,
)
from labkit.icl.prompts import TASKS, Prompts, anisotropic_cov, check_prompts, regression_prompts, tokens

__all__ = [
    "GDMatch", "LinearSelfAttention", "OPTIMIZERS", "OneStepGD", "Prompts", "SCHEDULES", "TASKS", "anisotropic_cov",
    "check_prompts", "context_correlation", "fit_preconditioner", "fit_step_size", "gd_attention", "gd_equivalence",
    "implied_preconditioner", "matrix_cosine", "mse", "off_identity_share", "ols_predict", "one_step_gd_experiment",
    "one_step_gd_predict", "optimal_preconditioner", "optimal_step_size", "regression_prompts", "ridge_predict",
    "tokens", "train_icl",
    "LinearTransformer", "NoisyPrompts", "Tuned", "adaptive_ridge_predict", "estimated_noise", "gd_predict",
    "noisy_prompts", "noisy_ridge_predict", "oracle_ridge_predict", "train_linear_transformer", "tune_gd_step",
    "tune_ridge", "warmup_cosine", "paper_initialization", "prediction_error",
]
