"""Spectra of curvature operators: top eigenpairs, trace and spectral density, matrix-free.

The algorithms live in their own modules and are re-exported here (their import path of the earlier
releases):

- ``top_eigenvalues`` (:mod:`labkit.hessian.eigen`): Lanczos with full reorthogonalisation (default) or
  power iteration with deflation.
- ``hutchinson_trace`` (:mod:`labkit.hessian.trace`): Hutchinson's estimator with its standard error, or
  Hutch++ (Meyer et al. 2021).
- ``spectral_density`` (:mod:`labkit.hessian.density`): stochastic Lanczos quadrature with Gaussian
  broadening (Ghorbani, Krishnan and Xiao, ICML 2019; Yao et al., *PyHessian*, 2020).
- ``lanczos`` (:mod:`labkit.hessian.lanczos`): the one Lanczos run both of them use.

Every function takes an :class:`~labkit.hessian.protocol.Operator` (``HessianOperator``,
``DenseOperator(matrix)``, ``LambdaOperator(fn, numel)``...). This module keeps the two small helpers
on spectra: ``outlier_count`` and ``subspace_fraction``.
"""

from __future__ import annotations

import torch

from labkit import checks
from labkit.hessian.density import DensityResult, spectral_density
from labkit.hessian.eigen import EigenResult, top_eigenvalues
from labkit.hessian.lanczos import LanczosResult, lanczos
from labkit.hessian.protocol import DenseOperator, LambdaOperator, Operator
from labkit.hessian.trace import TraceResult, hutchinson_trace


def outlier_count(eigenvalues: torch.Tensor, *, max_outliers: int = 30) -> int:
    """The number of outliers in a spectrum: the position of the largest ratio gap
    ``lambda_i / lambda_{i+1}`` among the top ``max_outliers + 1`` positive eigenvalues.

    Sagun et al. (2017, arXiv:1706.04454) and Papyan (2019) find about C such outliers for C classes
    (C - 1 for softmax cross-entropy, whose output Hessian has rank C - 1).
    """
    checks.positive_int(max_outliers, "max_outliers")
    try:
        ev = torch.as_tensor(eigenvalues).detach().to(torch.float64).flatten()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"eigenvalues must be a tensor or sequence of real numbers, got {type(eigenvalues).__name__}") \
            from exc
    checks.tensor(ev, "eigenvalues")
    ev = ev.sort(descending=True).values
    ev = ev[ev > 0][: max_outliers + 1]
    if len(ev) < 2:
        raise ValueError("eigenvalues must hold at least two positive values")
    return int((ev[:-1] / ev[1:]).argmax()) + 1


def subspace_fraction(vector: torch.Tensor, basis: torch.Tensor) -> float:
    """``||P v||^2 / ||v||^2``: the share of ``vector`` in the span of ``basis``'s orthonormal columns
    (Gur-Ari, Roberts and Dyer, *Gradient Descent Happens in a Tiny Subspace*, arXiv:1812.04754)."""
    checks.tensor(vector, "vector")
    checks.tensor(basis, "basis")
    if basis.ndim != 2 or vector.ndim != 1 or basis.shape[0] != vector.shape[0]:
        raise ValueError(f"basis must be (P, k) and vector (P,), got {tuple(basis.shape)} and {tuple(vector.shape)}")
    v = vector.detach().to(torch.float64)
    b = basis.detach().to(device=v.device, dtype=torch.float64)
    norm2 = float(v @ v)
    if norm2 == 0.0:
        raise ValueError("vector must be non-zero")
    return float((b.T @ v).pow(2).sum()) / norm2


__all__ = [
    "DenseOperator", "DensityResult", "EigenResult", "LambdaOperator", "LanczosResult", "Operator",
    "TraceResult", "hutchinson_trace", "lanczos", "outlier_count", "spectral_density", "subspace_fraction",
    "top_eigenvalues",
]
