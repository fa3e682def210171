"""In-context learning: transformers that run gradient descent in their forward pass.

Regression prompts (``prompts``), one layer of linear self-attention with its training and its reading as a
GD step (``attention``), and the reference predictors it is compared with (``predictors``).

References: Mahankali, Hashimoto, Ma (2023) https://arxiv.org/abs/2307.03576; Zhang, Frei, Bartlett (2023)
https://arxiv.org/abs/2306.09927; von Oswald et al. (2023) https://arxiv.org/abs/2212.07677.
"""

from labkit.icl.attention import (
    OPTIMIZERS,
    GDMatch,
    LinearSelfAttention,
    gd_attention,
    gd_equivalence,
    implied_preconditioner,
    train_icl,
)
from labkit.icl.predictors import (
    context_correlation,
    matrix_cosine,
    mse,
    off_identity_share,
    ols_predict,
    one_step_gd_predict,
    optimal_preconditioner,
    ridge_predict,
)
from labkit.icl.prompts import TASKS, Prompts, anisotropic_cov, check_prompts, regression_prompts, tokens

__all__ = [
    "OPTIMIZERS", "TASKS", "GDMatch", "LinearSelfAttention", "Prompts", "anisotropic_cov", "check_prompts",
    "context_correlation", "gd_attention", "gd_equivalence", "implied_preconditioner", "matrix_cosine", "mse",
    "off_identity_share", "ols_predict", "one_step_gd_predict", "optimal_preconditioner", "regression_prompts",
    "ridge_predict", "tokens", "train_icl",
]
