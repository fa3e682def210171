"""Curvature of the loss: Hessian/GGN operators, exact Hessians, spectra and loss landscapes.

``HessianOperator(model, loss_fn, data)`` is the Hessian of the mean loss as a matrix-free operator;
``top_eigenvalues``, ``hutchinson_trace`` and ``spectral_density`` work on any :class:`Operator`
(``shape``, ``numel``, ``dtype``, ``device``, ``matvec``): ``HessianOperator``, ``GGNOperator``,
``DenseOperator(matrix)`` or ``LambdaOperator(fn, numel)``; ``lanczos`` is the one Lanczos run behind them;
``exact_hessian`` materialises it for small models; ``loss_surface_1d/2d`` plot the landscape;
``regularized_newton`` and its approximate Hessians (:mod:`labkit.hessian.newton`) and the scalar networks
(:mod:`labkit.hessian.scalar`) serve the optimisation notebooks. The notebooks' experiments live in the
submodule :mod:`labkit.hessian.experiments` (imported on demand: it trains networks).

Every function checks its inputs (:mod:`labkit.checks`): numeric options finite and in range, data finite, on
a real device and in the model's dtype, flat vectors floating; failures are a ``ValueError``/``TypeError``
naming the argument. Measurements leave the model as found (parameters, ``.grad``, ``requires_grad``, modes,
buffers, hooks): ``train_mode=True`` means batch statistics and active dropout, never updated running statistics.
"""

from labkit.hessian.alignment import (
    AlignmentPenalties,
    Domain,
    alignment_penalties,
    hessian_gradient_product,
    hgp_penalties,
    hutchinson_penalties,
    spurious_domain,
)
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
    DescentRun,
    HessianApproximation,
    NewtonRun,
    TunedDescent,
    approximate_newton_runs,
    contraction_rate,
    gradient_descent,
    hessian_approximations,
    regularized_newton,
    softmax_regression_hessian,
    softmax_regression_hessian_diagonal,
    softmax_regression_loss_grad,
    steps_to,
    tuned_gradient_descent,
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
from labkit.hessian.scalar import (
    ScalarNetwork,
    ScalarRun,
    gfs_sharpness,
    gradient_flow_solution,
    run_scalar,
    scalar_loss,
)
from labkit.hessian.spectrum import outlier_count, subspace_fraction
from labkit.hessian.trace import TraceResult, hutchinson_trace

__all__ = [
    "alignment_penalties",
    "AlignmentPenalties",
    "approximate_newton_runs",
    "BACKENDS",
    "contraction_rate",
    "CurvatureOperator",
    "DenseOperator",
    "DensityResult",
    "DescentRun",
    "Domain",
    "EigenResult",
    "exact_hessian",
    "filter_normalized_direction",
    "flatten",
    "gfs_sharpness",
    "GGNOperator",
    "gradient_descent",
    "gradient_flow_solution",
    "hessian_approximations",
    "HessianApproximation",
    "HessianOperator",
    "hessian_gradient_product",
    "hgp_penalties",
    "hutchinson_penalties",
    "hutchinson_trace",
    "interpolation_direction",
    "LambdaOperator",
    "lanczos",
    "LanczosResult",
    "loss_surface_1d",
    "loss_surface_2d",
    "NewtonRun",
    "Operator",
    "outlier_count",
    "random_direction",
    "regularized_newton",
    "run_scalar",
    "scalar_loss",
    "ScalarNetwork",
    "ScalarRun",
    "softmax_regression_hessian",
    "softmax_regression_hessian_diagonal",
    "softmax_regression_loss_grad",
    "spectral_density",
    "spurious_domain",
    "steps_to",
    "subspace_fraction",
    "Surface1D",
    "Surface2D",
    "top_eigenvalues",
    "TraceResult",
    "tuned_gradient_descent",
    "TunedDescent",
    "unflatten",
]
