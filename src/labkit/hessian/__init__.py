"""Curvature of the loss: Hessian/GGN operators, exact Hessians, spectra and loss landscapes.

``HessianOperator(model, loss_fn, data)`` is the Hessian of the mean loss as a matrix-free operator;
``top_eigenvalues``, ``hutchinson_trace`` and ``spectral_density`` work on any such operator;
``exact_hessian`` materialises it for small models; ``loss_surface_1d/2d`` plot the landscape.
"""

from labkit.hessian.alignment import alignment_penalties, spurious_domain
from labkit.hessian.exact import exact_hessian
from labkit.hessian.landscape import (
    Surface1D,
    Surface2D,
    filter_normalized_direction,
    interpolation_direction,
    loss_surface_1d,
    loss_surface_2d,
    random_direction,
)
from labkit.hessian.newton import (
    NewtonRun,
    regularized_newton,
    softmax_regression_hessian,
    softmax_regression_hessian_diagonal,
)
from labkit.hessian.operator import (
    BACKENDS,
    CurvatureOperator,
    GGNOperator,
    HessianOperator,
    flatten,
    unflatten,
)
from labkit.hessian.scalar import ScalarNetwork, gfs_sharpness, gradient_flow_solution
from labkit.hessian.spectrum import (
    DensityResult,
    EigenResult,
    TraceResult,
    hutchinson_trace,
    lanczos,
    outlier_count,
    spectral_density,
    subspace_fraction,
    top_eigenvalues,
)

__all__ = [
    "BACKENDS",
    "alignment_penalties",
    "spurious_domain",
    "CurvatureOperator",
    "DensityResult",
    "EigenResult",
    "GGNOperator",
    "HessianOperator",
    "NewtonRun",
    "ScalarNetwork",
    "Surface1D",
    "Surface2D",
    "TraceResult",
    "exact_hessian",
    "filter_normalized_direction",
    "flatten",
    "gfs_sharpness",
    "gradient_flow_solution",
    "hutchinson_trace",
    "interpolation_direction",
    "lanczos",
    "loss_surface_1d",
    "loss_surface_2d",
    "outlier_count",
    "subspace_fraction",
    "random_direction",
    "regularized_newton",
    "softmax_regression_hessian",
    "softmax_regression_hessian_diagonal",
    "spectral_density",
    "top_eigenvalues",
    "unflatten",
]
