"""Classifier-free guidance in a linear-Gaussian model and its three-term decomposition.

With Gaussian class-conditional data ``N(mu_c, S_c)`` and a Gaussian unconditional model ``N(mu, S)``,
both denoisers are affine, ``D(x) = mu + W (x - mu)`` with ``W = S (S + sigma^2 I)^-1``, and the CFG
direction splits exactly into three terms (Li, Wang, Qu, *Towards Understanding the Mechanisms of
Classifier-Free Guidance*, 2025, https://arxiv.org/abs/2505.19210):

``D_c - D_u = (I - W_c)(mu_c - mu)  +  P_+ (x - mu)  -  P_- (x - mu)``

a mean shift towards the class mean, a positive contrastive-principal-component term (the part of
``W_c - W = P_+ - P_-`` with positive eigenvalues: directions where the class varies *more* than the
data, amplified) and a negative one (directions where the class varies less, suppressed). At high noise
``W_c - W ~ (S_c - S) / sigma^2``, so the eigenvectors are the contrastive principal components of
``S_c - S``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from labkit.diffusion.mixtures import GaussianMixture


def _check_gaussian(mean: torch.Tensor, cov: torch.Tensor, name: str) -> None:
    if mean.ndim != 1 or cov.shape != (mean.shape[0], mean.shape[0]):
        raise ValueError(f"{name}: mean must be (D,) and cov (D, D), got {tuple(mean.shape)} and {tuple(cov.shape)}")


def wiener_gain(cov: torch.Tensor, sigma: float) -> torch.Tensor:
    """``W = S (S + sigma^2 I)^-1`` (D, D): the linear part of a Gaussian's posterior-mean denoiser."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    return torch.linalg.solve(cov + sigma**2 * eye, cov).T  # S (S + s^2 I)^-1, both symmetric


def gaussian_denoise(x: torch.Tensor, sigma: float, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """The exact denoiser of ``N(mean, cov)``: ``mean + W (x - mean)`` for x (N, D)."""
    _check_gaussian(mean, cov, "gaussian_denoise")
    return mean + (x - mean) @ wiener_gain(cov, sigma).T


@dataclass(frozen=True)
class CFGDecomposition:
    """The three terms of the linear CFG direction ``D_c - D_u`` (each (N, D)) and the spectrum of
    ``W_c - W`` (``eigenvalues`` ascending, ``eigenvectors`` as columns)."""

    mean_shift: torch.Tensor
    positive_cpc: torch.Tensor
    negative_cpc: torch.Tensor
    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        """``D_c - D_u``: the sum of the three terms."""
        return self.mean_shift + self.positive_cpc + self.negative_cpc

    def guided_update(self, cond: torch.Tensor, w: float) -> torch.Tensor:
        """The CFG denoiser ``D_c + (w - 1)(D_c - D_u)`` (labkit's ``cfg(cond, uncond, w)``)."""
        return cond + (w - 1) * self.total


def cfg_decomposition(
    x: torch.Tensor,
    sigma: float,
    *,
    mean_c: torch.Tensor,
    cov_c: torch.Tensor,
    mean_u: torch.Tensor,
    cov_u: torch.Tensor,
) -> CFGDecomposition:
    """Split the linear-Gaussian CFG direction at noise level ``sigma`` into mean shift, positive and
    negative contrastive-principal-component terms (Li, Wang, Qu, 2025)."""
    _check_gaussian(mean_c, cov_c, "class Gaussian")
    _check_gaussian(mean_u, cov_u, "unconditional Gaussian")
    if x.ndim != 2 or x.shape[1] != mean_c.shape[0] or mean_u.shape != mean_c.shape:
        raise ValueError(f"x must be (N, {mean_c.shape[0]}) and both means of the same size")
    eye = torch.eye(mean_c.shape[0], dtype=x.dtype, device=x.device)
    w_c, w_u = wiener_gain(cov_c, sigma), wiener_gain(cov_u, sigma)
    delta = 0.5 * ((w_c - w_u) + (w_c - w_u).T)  # symmetric up to round-off
    evals, evecs = torch.linalg.eigh(delta)
    pos = evecs @ torch.diag(evals.clamp_min(0)) @ evecs.T
    neg = evecs @ torch.diag((-evals).clamp_min(0)) @ evecs.T
    centred = x - mean_u
    shift = ((eye - w_c) @ (mean_c - mean_u)).expand_as(x)
    # the symmetrised delta differs from w_c - w_u by round-off only; keep the exact residual in the shift
    shift = shift + centred @ ((w_c - w_u) - delta).T
    return CFGDecomposition(shift, centred @ pos.T, -(centred @ neg.T), evals, evecs)


class Eigh(NamedTuple):
    """Eigenvalues (ascending) and eigenvectors (columns) of a symmetric matrix."""

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor


def contrastive_components(cov_c: torch.Tensor, cov_u: torch.Tensor) -> Eigh:
    """Eigenvalues (ascending) and eigenvectors of ``S_c - S_u``: contrastive PCA (Abid et al., 2018)."""
    diff = cov_c - cov_u
    return Eigh(*torch.linalg.eigh(0.5 * (diff + diff.T)))


def gaussian_teleport(
    x: torch.Tensor, sigma_from: float, sigma_to: float, mean: torch.Tensor, cov: torch.Tensor
) -> torch.Tensor:
    """Solve the probability-flow ODE of ``N(mean, cov)`` exactly from ``sigma_from`` to ``sigma_to``:
    ``mean + U diag(sqrt((l + sigma_to^2) / (l + sigma_from^2))) U^T (x - mean)``.

    Wang & Vastola (2024, https://arxiv.org/abs/2311.10892) use it for "analytical teleportation":
    the early, nearly linear part of sampling is replaced by this closed form.
    """
    _check_gaussian(mean, cov, "gaussian_teleport")
    if not (sigma_from > 0 and sigma_to >= 0):
        raise ValueError(f"need sigma_from > 0 and sigma_to >= 0, got {sigma_from}, {sigma_to}")
    evals, evecs = torch.linalg.eigh(cov)
    gain = ((evals.clamp_min(0) + sigma_to**2) / (evals.clamp_min(0) + sigma_from**2)).sqrt()
    return mean + ((x - mean) @ evecs) * gain @ evecs.T


class GaussianFit(NamedTuple):
    """A Gaussian ``N(mean, cov)`` fitted to data; unpacks as ``mean, cov``."""

    mean: torch.Tensor
    cov: torch.Tensor


def gaussian_fit(x: torch.Tensor, *, ridge: float = 1e-3) -> GaussianFit:
    """The sample mean and covariance of ``x`` (N, D), plus ``ridge * I`` so that the covariance of
    a few images (N < D) is invertible: the "linear-Gaussian model" of Li, Wang & Qu (2025)."""
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"x must be a tensor of shape (N, D) with N >= 2, got {getattr(x, 'shape', type(x))}")
    if not ridge >= 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    return GaussianFit(x.mean(0), torch.cov(x.T) + ridge * eye)


class LinearGaussianModel:
    """A linear-Gaussian diffusion model of labelled data: one Gaussian per class (``classes``, a
    :class:`GaussianMixture` weighted by class counts) and one Gaussian of all the data
    (``unconditional``), each fitted with :func:`gaussian_fit`.

    Called as a sampler's denoiser ``model(x, sigma, label=None)``: the exact Gaussian denoisers, the
    unconditional one for ``label=None`` (Li, Wang, Qu, 2025, https://arxiv.org/abs/2505.19210).
    """

    def __init__(self, x: torch.Tensor, labels: torch.Tensor, *, ridge: float = 1e-3):
        if not isinstance(labels, torch.Tensor) or labels.shape != (x.shape[0],) or labels.is_floating_point():
            raise ValueError(f"labels must be an integer tensor of shape ({x.shape[0]},)")
        counts = torch.bincount(labels)
        if (counts < 2).any():
            raise ValueError("every class 0..max(labels) needs at least two samples")
        fits = [gaussian_fit(x[labels == c], ridge=ridge) for c in range(len(counts))]
        self.unconditional = gaussian_fit(x, ridge=ridge)
        self.classes = GaussianMixture(torch.stack([f.mean for f in fits]), torch.stack([f.cov for f in fits]),
                                       counts.to(x.dtype))

    def class_fit(self, label: int) -> GaussianFit:
        """The Gaussian of class ``label``."""
        return GaussianFit(self.classes.means[label], self.classes.covariances[label])

    def __call__(
        self, x: torch.Tensor, sigma: float | torch.Tensor, label: int | torch.Tensor | None = None
    ) -> torch.Tensor:
        if label is not None:
            return self.classes.denoise(x, sigma, label)
        s = torch.as_tensor(sigma).reshape(-1)
        if not bool((s == s[0]).all()):
            raise ValueError("the unconditional linear denoiser takes one noise level per call")
        return gaussian_denoise(x, float(s[0]), *self.unconditional)

    def decomposition(self, x: torch.Tensor, sigma: float, label: int) -> CFGDecomposition:
        """:func:`cfg_decomposition` of class ``label`` against the unconditional Gaussian."""
        (mean_c, cov_c), (mean_u, cov_u) = self.class_fit(label), self.unconditional
        return cfg_decomposition(x, sigma, mean_c=mean_c, cov_c=cov_c, mean_u=mean_u, cov_u=cov_u)
