"""The trace of a symmetric operator from products with random probes: Hutchinson's estimator with its
standard error (Hutchinson 1989), or Hutch++ (Meyer, Musco, Musco and Woodruff, SOSA 2021)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from labkit import checks
from labkit.autograd import check_generator, rademacher, randn
from labkit.hessian.lanczos import product
from labkit.hessian.protocol import Operator, as_operator


@dataclass(frozen=True)
class TraceResult:
    """A trace estimate with its standard error (``samples`` probe vectors; ``values`` their estimates)."""

    estimate: float
    stderr: float
    samples: int
    values: torch.Tensor
    method: str

    def __float__(self) -> float:
        return self.estimate


def _probes(shape: tuple[int, int], *, distribution: str, generator: torch.Generator | None,
            device: torch.device) -> torch.Tensor:
    """Float64 probes on ``device``, drawn on the generator's device (the core's generator rule)."""
    if distribution == "rademacher":
        return rademacher(shape, generator=generator, device=device, dtype=torch.float64)
    return randn(shape, generator=generator, device=device, dtype=torch.float64)


def hutchinson_trace(
    op: Operator,
    *,
    samples: int = 100,
    method: str = "hutchinson",
    distribution: str = "rademacher",
    generator: torch.Generator | None = None,
) -> TraceResult:
    """Estimate ``trace(op)`` from ``samples`` products with random probes, with a standard error.

    ``method="hutchinson"``: the mean of ``z^T H z`` over Rademacher (or Gaussian) probes ``z``
    (Hutchinson 1989). ``method="hutch++"``: a third of the products sketch the top of the spectrum
    exactly (``trace(Q^T H Q)``) and the rest estimate the remainder, which has a far smaller
    variance when a few large eigenvalues dominate (Meyer, Musco, Musco and Woodruff, SOSA 2021).
    ``stderr`` is the standard error of the stochastic part.
    """
    op = as_operator(op)
    n = int(op.numel)
    checks.integer(samples, "samples", low=2)
    checks.choice(method, "method", ("hutchinson", "hutch++"))
    checks.choice(distribution, "distribution", ("rademacher", "gaussian"))
    check_generator(generator)
    device = op.device

    if method == "hutchinson":
        z = _probes((samples, n), distribution=distribution, generator=generator, device=device)
        values = torch.stack([z[i] @ product(op, z[i]) for i in range(samples)]).cpu()
        exact_part = 0.0
    else:
        if samples < 6:
            raise ValueError(f"hutch++ needs samples >= 6 (a third sketch, two thirds probes), got {samples}")
        m = min(samples // 3, n)
        s = _probes((n, m), distribution=distribution, generator=generator, device=device)
        y = torch.stack([product(op, s[:, j]) for j in range(m)], dim=1)
        q, _ = torch.linalg.qr(y)
        exact_part = float(sum(q[:, j] @ product(op, q[:, j]) for j in range(q.shape[1])))
        probes = max(samples - 2 * m, 2)
        z = _probes((probes, n), distribution=distribution, generator=generator, device=device)
        vals = []
        for i in range(probes):
            zi = z[i] - q @ (q.T @ z[i])
            vals.append(zi @ (product(op, zi)))
        values = torch.stack(vals).cpu()
    est = exact_part + float(values.mean())
    stderr = float(values.std(unbiased=True) / math.sqrt(len(values)))
    return TraceResult(estimate=est, stderr=stderr, samples=samples, values=values + exact_part, method=method)


__all__ = ["TraceResult", "hutchinson_trace"]
