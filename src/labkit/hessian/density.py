"""The eigenvalue density of a symmetric operator by stochastic Lanczos quadrature (SLQ): Ghorbani,
Krishnan and Xiao, *An Investigation into Neural Net Optimization via Hessian Eigenvalue Density*,
ICML 2019; Yao et al., *PyHessian*, 2020; Lin, Saad and Yang, SIAM Review 2016."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from labkit import checks
from labkit.autograd import check_generator, rademacher
from labkit.hessian.lanczos import lanczos
from labkit.hessian.protocol import Operator, as_operator


@dataclass(frozen=True)
class DensityResult:
    """A smoothed spectral density on ``grid`` (integrates to 1) and the quadrature behind it.

    ``nodes`` / ``weights`` have shape (vectors, steps): Ritz values and their weights for each probe;
    ``weights`` sum to 1 per probe. ``mean`` is the quadrature estimate of ``trace / P``.
    """

    grid: torch.Tensor
    density: torch.Tensor
    nodes: torch.Tensor
    weights: torch.Tensor
    sigma: float

    @property
    def mean(self) -> float:
        return float((self.nodes * self.weights).sum(dim=1).mean())

    def integral(self) -> float:
        """The trapezoid integral of ``density`` over ``grid`` (about 1 when the grid covers the spectrum)."""
        return float(torch.trapezoid(self.density, self.grid))


def _grid(grid: torch.Tensor | int | None, lo: float, hi: float, sigma: float) -> torch.Tensor:
    if grid is None or (isinstance(grid, int) and not isinstance(grid, bool)):
        points = 1000 if grid is None else grid
        if points < 2:
            raise ValueError(f"grid must have at least 2 points, got {points}")
        return torch.linspace(lo - 5 * sigma, hi + 5 * sigma, points, dtype=torch.float64)
    if isinstance(grid, torch.Tensor):
        if grid.ndim != 1 or len(grid) < 2:
            raise ValueError(f"grid must be a 1-D tensor with at least 2 points, got shape {tuple(grid.shape)}")
        checks.tensor(grid, "grid")
        if grid.is_complex() or grid.dtype == torch.bool:
            raise TypeError(f"grid must be a real tensor, got dtype {grid.dtype}")
        return grid.detach().to(torch.float64).cpu()
    raise TypeError(f"grid must be a tensor, an int or None, got {type(grid).__name__}")


def spectral_density(
    op: Operator,
    *,
    vectors: int = 10,
    steps: int = 80,
    grid: torch.Tensor | int | None = None,
    sigma: float | None = None,
    generator: torch.Generator | None = None,
) -> DensityResult:
    """The eigenvalue density of ``op`` by stochastic Lanczos quadrature (SLQ).

    For each of ``vectors`` random unit probes, ``steps`` Lanczos steps (full reorthogonalisation)
    give Ritz values ``theta_j`` and weights ``tau_j`` (squared first components of the tridiagonal's
    eigenvectors); the density ``mean_probe sum_j tau_j N(t; theta_j, sigma^2)`` is evaluated on
    ``grid`` in one vectorised step. ``grid`` is a tensor or a number of points (default 1000) over
    the spectrum's range widened by ``5 sigma``; ``sigma`` defaults to 1% of that range. Its mean is
    an unbiased estimate of ``trace / P`` (Ghorbani et al. 2019; Lin, Saad and Yang, SIAM Rev. 2016).
    """
    op = as_operator(op)
    n = int(op.numel)
    checks.positive_int(vectors, "vectors")
    checks.positive_int(steps, "steps")
    if steps > n:
        raise ValueError(f"steps={steps} is larger than the operator dimension {n}")
    if sigma is not None:
        checks.number(sigma, "sigma", low=0, low_open=True)
    if grid is not None and not isinstance(grid, (int, torch.Tensor)) or isinstance(grid, bool):
        raise TypeError(f"grid must be a tensor, an int or None, got {type(grid).__name__}")
    check_generator(generator)
    nodes = torch.zeros(vectors, steps, dtype=torch.float64)
    weights = torch.zeros(vectors, steps, dtype=torch.float64)
    filled = torch.zeros(vectors, steps, dtype=torch.bool)
    for i in range(vectors):
        v0 = rademacher((n,), generator=generator, device=op.device, dtype=torch.float64)
        theta, s = lanczos(op, v0, steps).ritz()
        m = len(theta)
        nodes[i, :m] = theta
        weights[i, :m] = s[0] ** 2  # an early stop (invariant subspace) leaves zero-weight padding
        filled[i, :m] = True
    lo, hi = float(nodes[filled].min()), float(nodes[filled].max())
    span = max(hi - lo, 1e-12 * max(abs(lo), abs(hi), 1.0))
    sigma = float(sigma) if sigma is not None else 0.01 * span
    grid = _grid(grid, lo, hi, sigma)
    gauss = torch.exp(-0.5 * ((grid[:, None] - nodes.reshape(1, -1)) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    density = gauss @ weights.reshape(-1) / vectors
    return DensityResult(grid=grid, density=density, nodes=nodes, weights=weights, sigma=sigma)


__all__ = ["DensityResult", "spectral_density"]
