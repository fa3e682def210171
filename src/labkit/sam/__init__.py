"""Sharpness-aware minimization: SAM, ASAM, norm-only SAM (``optim``) and sharpness measures (``sharpness``).

References: Foret et al. (2021) https://arxiv.org/abs/2010.01412; Kwon et al. (2021)
https://arxiv.org/abs/2102.11600; Mueller et al. (2023) https://arxiv.org/abs/2306.04226;
Andriushchenko et al. (2023) https://arxiv.org/abs/2302.07011.
"""

from labkit.sam.optim import NORM_LAYER_TYPES, SAM, frozen_running_stats, norm_only_sam, norm_parameters
from labkit.sam.sharpness import hessian_top_eigenvalue, hessian_trace, worst_case_sharpness

__all__ = [
    "NORM_LAYER_TYPES", "SAM", "frozen_running_stats", "hessian_top_eigenvalue", "hessian_trace",
    "norm_only_sam", "norm_parameters", "worst_case_sharpness",
]
