"""Curvature of the loss: Hessian/GGN operators, exact Hessians, spectra and loss landscapes.

``HessianOperator(model, loss_fn, data)`` is the Hessian of the mean loss as a matrix-free operator;
``top_eigenvalues``, ``hutchinson_trace`` and ``spectral_density`` work on any :class:`Operator`
(``shape``, ``numel``, ``dtype``, ``device``, ``matvec``): ``HessianOperator``, ``GGNOperator``,
``DenseOperator(matrix)`` or ``LambdaOperator(fn, numel)``; ``lanczos`` is the one Lanczos run behind them;
``exact_hessian`` materialises it for small models; ``loss_surface_1d/2d`` plot the landscape.
"""

from labkit.hessian.alignment import AlignmentPenalties, Domain, alignment_penalties, spurious_domain
from labkit.hessian.density import DensityResult, spectral_density
from labkit.hessian.eigen import EigenResult, top_eigenvalues
from labkit.hessian.exact import exact_hessian
from labkit.hessian.lanczos import LanczosResult, lanczos
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
from labkit.hessian.protocol import DenseOperator, LambdaOperator, Operator
from labkit.hessian.scalar import ScalarNetwork, gfs_sharpness, gradient_flow_solution
from labkit.hessian.spectrum import outlier_count, subspace_fraction
from labkit.hessian.trace import TraceResult, hutchinson_trace

__all__ = [
    "AlignmentPenalties",
    "BACKENDS",
    "DenseOperator",
    "Domain",
    "LambdaOperator",
    "LanczosResult",
    "Operator",
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
