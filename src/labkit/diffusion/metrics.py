"""Distribution metrics for generated samples against exact ones: per-mode mass, k-NN precision /
recall (coverage), kernel MMD and the mean displacement between two runs from the same start."""

from __future__ import annotations

from typing import NamedTuple

import torch

from labkit import checks
from labkit.diffusion._checks import samples as check_samples
from labkit.diffusion.mixtures import GaussianMixture


def _check_pair(
    x: torch.Tensor, y: torch.Tensor, names: tuple[str, str] = ("x", "y")
) -> tuple[torch.Tensor, torch.Tensor]:
    for t, name in zip((x, y), names, strict=True):
        check_samples(t, name, min_n=2)
    x, y = x.flatten(1), y.flatten(1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same feature size, got {x.shape[1]} and {y.shape[1]}"
        )
    centre = torch.cat([x, y]).double().mean(0)  # centring keeps float32 distances accurate
    return (x.double() - centre).float(), (y.double() - centre).float()


def mode_mass(
    samples: torch.Tensor, mixture: GaussianMixture, *, label: int | None = None, soft: bool = False
) -> torch.Tensor:
    """Share of ``samples`` in each component of ``mixture`` (K,), summing to 1.

    Each sample goes to its most probable clean component (``soft=True``: the responsibilities are
    averaged instead, an unbiased estimate of the weights for exact samples). With ``label`` only that
    class's components compete (the others get 0), so overlapping classes do not bias a class's shares.
    Samples with NaN or inf are refused (they would all be counted in component 0).
    """
    if not isinstance(mixture, GaussianMixture):
        raise TypeError(f"mixture must be a GaussianMixture, got {type(mixture).__name__}")
    check_samples(samples, "samples", ndim=2, dim=mixture.dim)  # NaN samples would all land in component 0
    if not isinstance(soft, bool):
        raise TypeError(f"soft must be a bool, got {type(soft).__name__}")
    sigma = 0.0 if (mixture.evals > 0).all() else 1e-3
    resp = mixture.responsibilities(samples, sigma, label=label)
    if soft:
        return resp.mean(dim=0)
    comp = resp.argmax(dim=1)
    return torch.bincount(comp, minlength=mixture.num_components).to(resp.dtype) / samples.shape[0]


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T).clamp_min(0.0)


def mmd2(x: torch.Tensor, y: torch.Tensor, *, bandwidths: tuple[float, ...] | None = None) -> float:
    """Unbiased squared MMD with a sum of Gaussian kernels (Gretton et al., 2012, JMLR).

    ``bandwidths`` (a non-empty sequence of finite numbers > 0) default to (0.5, 1, 2) times the median
    pairwise distance of (up to 500 of) the pooled samples. Distances and kernels are evaluated in float32
    on centred data; samples with NaN or inf are refused.
    """
    x, y = _check_pair(x, y)
    if bandwidths is not None:
        if isinstance(bandwidths, (str, bytes)) or not hasattr(bandwidths, "__iter__"):
            raise TypeError(f"bandwidths must be a sequence of positive numbers (e.g. (1.0,)) or None, got "
                            f"{type(bandwidths).__name__}")
        bandwidths = tuple(checks.number(b, f"bandwidths[{i}]", low=0, low_open=True)
                           for i, b in enumerate(bandwidths))
        for i, b in enumerate(bandwidths):
            if b < 1e-18:  # -1 / (2 b^2) must stay finite in float32
                raise ValueError(f"bandwidths[{i}] must be > 1e-18 (float32 kernels), got {b}")
        if not bandwidths:
            raise ValueError("bandwidths must hold at least one bandwidth (or be None for the median heuristic)")
    else:
        pooled = torch.cat([x[:250], y[:250]])
        med = _sq_dists(pooled, pooled).sqrt().median().clamp_min(1e-12).item()
        bandwidths = (0.5 * med, med, 2.0 * med)
    n, m = x.shape[0], y.shape[0]
    dxx, dyy, dxy = (_sq_dists(a, b) for a, b in ((x, x), (y, y), (x, y)))
    total = 0.0
    for b in bandwidths:
        g = -1.0 / (2 * b * b)
        kxx = torch.exp(dxx * g).sum().item() - n  # the diagonal terms are exp(0) = 1
        kyy = torch.exp(dyy * g).sum().item() - m
        kxy = torch.exp(dxy * g).sum().item()
        total += kxx / (n * (n - 1)) + kyy / (m * (m - 1)) - 2 * kxy / (n * m)
    return total


def displacement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean per-sample Euclidean distance ``mean_i |a_i - b_i|`` between two runs from the same start
    (how far a cheaper sampler moved the samples of a reference one)."""
    check_samples(a, "a")
    check_samples(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must be tensors of the same shape (N, ...), got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    return (a - b).flatten(1).norm(dim=1).mean().item()


class PrecisionRecall(NamedTuple):
    """Improved precision (fidelity) and recall (coverage); unpacks as ``precision, recall``."""

    precision: float
    recall: float


def precision_recall(real: torch.Tensor, fake: torch.Tensor, *, k: int = 3) -> PrecisionRecall:
    """Improved precision and recall (Kynkäänniemi et al., 2019, https://arxiv.org/abs/1904.06991):
    precision = share of ``fake`` inside some real sample's k-NN ball (fidelity); recall = share of
    ``real`` inside some fake sample's k-NN ball (coverage / diversity)."""
    real, fake = _check_pair(real, fake, ("real", "fake"))
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if k < 1 or k >= min(real.shape[0], fake.shape[0]):
        raise ValueError(f"k must be a positive int smaller than both sample sizes, got {k!r}")

    def radii(a: torch.Tensor) -> torch.Tensor:  # squared distance to the k-th neighbour (self excluded)
        return _sq_dists(a, a).topk(k + 1, dim=1, largest=False).values[:, k]

    def inside(points: torch.Tensor, centres: torch.Tensor, r: torch.Tensor) -> float:
        return (_sq_dists(points, centres) <= r[None]).any(dim=1).double().mean().item()

    return PrecisionRecall(inside(fake, real, radii(real)), inside(real, fake, radii(fake)))
