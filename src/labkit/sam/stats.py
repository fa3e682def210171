"""How much a toy-scale comparison can say: sampling noise of test accuracies and bootstrap intervals of Kendall tau.

* :func:`binomial_se`: the standard error of an error rate measured on ``n`` test images.
* :func:`paired_se`: the standard error of the difference of two accuracies on the *same* test images
  (McNemar: only the images the two models disagree on count); used to judge "SAM beats SGD" (Foret et al.,
  2021, Table 4) and "SAM beats SGD" in SAM-ON's regime (Mueller et al., 2023) beyond test-set noise.
* :func:`bootstrap_tau`: Kendall's tau-b with a percentile bootstrap interval, resampling the runs of a family
  and, when given a correctness matrix, the test images too (Andriushchenko et al., 2023, arXiv:2302.07011,
  judge sharpness by rank correlation with test error over families of models).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from labkit import checks
from labkit.autograd import check_generator


def binomial_se(error: float, n: int) -> float:
    """``sqrt(error (1 - error) / n)``: the standard error of an error rate measured on ``n`` test images."""
    error = checks.number(error, "error", low=0, high=1)
    n = checks.positive_int(n, "n")
    return math.sqrt(error * (1 - error) / n)


def _correct(values: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(values, torch.Tensor) or values.dtype != torch.bool or values.dim() != 1 or not len(values):
        raise TypeError(f"{name} must be a non-empty 1-D bool tensor (one entry per test image), got {values!r}")
    return values


def paired_se(correct_a: torch.Tensor, correct_b: torch.Tensor) -> float:
    """Standard error of ``accuracy(a) - accuracy(b)`` when both models are scored on the same ``n`` images.

    With ``b`` the images only model a gets right and ``c`` those only model b gets right, the per-image
    differences are +1, -1 or 0 and ``SE = sqrt(b + c - (b - c)**2 / n) / n`` (their sample standard deviation,
    the normal approximation behind McNemar's test). Images both models get right or wrong add no noise.
    """
    a, b = _correct(correct_a, "correct_a"), _correct(correct_b, "correct_b")
    if a.shape != b.shape:
        raise ValueError(f"correct_a and correct_b must score the same images, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    n = len(a)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    return math.sqrt(max(only_a + only_b - (only_a - only_b) ** 2 / n, 0.0)) / n


def kendall_tau_b(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Kendall's tau-b of the rows of ``x`` and ``y`` (shape ``(..., n)``), batched; a row without a ranking
    (all ties) gives 0, as :func:`labkit.sam.kendall_tau` does."""
    if x.shape != y.shape or x.dim() < 1 or x.shape[-1] < 2:
        raise ValueError(f"x and y must have the same shape (..., n) with n >= 2, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    n = x.shape[-1]
    upper = torch.triu(torch.ones(n, n, dtype=torch.bool, device=x.device), diagonal=1)
    sx = torch.sign(x.unsqueeze(-1) - x.unsqueeze(-2))[..., upper]
    sy = torch.sign(y.unsqueeze(-1) - y.unsqueeze(-2))[..., upper]
    pairs = upper.sum()
    denominator = torch.sqrt((pairs - (sx == 0).sum(-1)).double() * (pairs - (sy == 0).sum(-1)).double())
    tau = (sx * sy).sum(-1).double() / denominator
    return torch.where(denominator > 0, tau, torch.zeros_like(tau))


@dataclass(frozen=True)
class TauInterval:
    """Kendall's tau of the whole family and its percentile bootstrap interval ``[low, high]`` at ``level``."""

    tau: float
    low: float
    high: float
    level: float
    resamples: int

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in ``[low, high]``."""
        return self.low <= value <= self.high


def bootstrap_tau(
    x: Sequence[float] | torch.Tensor,
    y: Sequence[float] | torch.Tensor,
    *,
    resamples: int = 2000,
    level: float = 0.9,
    generator: torch.Generator | None = None,
) -> TauInterval:
    """Kendall's tau-b of ``x`` (one value per run) with ``y`` and a percentile bootstrap interval.

    ``y`` is either one number per run (a hyperparameter: only the runs are resampled) or a boolean matrix of
    shape ``(runs, test images)`` saying which test images each run classifies correctly: then ``tau`` is taken
    with the test *error*, and every resample draws the runs and, independently, the test images with
    replacement, so the interval carries both the choice of runs and the test-set noise.
    """
    check_generator(generator)
    checks.integer(resamples, "resamples", low=100)
    level = checks.number(level, "level", low=0, high=1, low_open=True, high_open=True)
    xs = torch.as_tensor(x, dtype=torch.float64).flatten()
    if not torch.isfinite(xs).all():
        raise ValueError("x must be finite")
    k = len(xs)
    y = torch.as_tensor(y)
    if y.dtype == torch.bool:
        if y.dim() != 2 or y.shape[0] != k or y.shape[1] < 1:
            raise ValueError(f"a correctness matrix y must have shape ({k}, test images), got {tuple(y.shape)}")
        wrong = (~y).double()
        ys = wrong.mean(1)
    else:
        ys = y.double().flatten()
        if ys.shape != xs.shape or not torch.isfinite(ys).all():
            raise ValueError(f"y must hold {k} finite values (one per run), got shape {tuple(y.shape)}")
        wrong = None
    if k < 2:
        raise ValueError(f"need at least 2 runs, got {k}")
    runs = torch.randint(k, (resamples, k), generator=generator)
    if wrong is None:
        y_boot = ys[runs]
    else:
        n = wrong.shape[1]
        images = torch.randint(n, (resamples, n), generator=generator)
        counts = torch.zeros(resamples, n, dtype=torch.float64).scatter_add_(1, images, torch.ones_like(
            images, dtype=torch.float64))                                   # how often each image is drawn
        errors = counts @ wrong.T / n                                        # (resamples, runs)
        y_boot = torch.gather(errors, 1, runs)
    taus = kendall_tau_b(xs[runs], y_boot)
    tail = (1 - level) / 2
    low, high = torch.quantile(taus, torch.tensor([tail, 1 - tail], dtype=taus.dtype)).tolist()
    return TauInterval(tau=float(kendall_tau_b(xs, ys)), low=low, high=high, level=level, resamples=resamples)


__all__ = ["TauInterval", "binomial_se", "bootstrap_tau", "kendall_tau_b", "paired_se"]
