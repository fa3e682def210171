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

from labkit import checks
from labkit.diffusion._checks import samples
from labkit.diffusion.mixtures import GaussianMixture


def _check_cov(cov: torch.Tensor, name: str = "cov") -> torch.Tensor:
    checks.tensor(cov, name, floating=True, ndim=2, nonempty=True)
    if cov.shape[0] != cov.shape[1]:
        raise ValueError(f"{name} must be a square (D, D) matrix, got shape {tuple(cov.shape)}")
    if not torch.allclose(cov, cov.T, atol=1e-6, rtol=1e-5):
        raise ValueError(f"{name} must be symmetric (a covariance)")
    evals = torch.linalg.eigvalsh(0.5 * (cov + cov.T))
    if (evals < -1e-6 * evals.abs().max().clamp_min(1.0)).any():
        raise ValueError(f"{name} must be positive semi-definite (a covariance), got eigenvalue "
                         f"{float(evals.min()):.3g}")
    return cov


def _check_gaussian(mean: torch.Tensor, cov: torch.Tensor, name: str, names: tuple[str, str] = ("mean", "cov")
                    ) -> None:
    checks.tensor(mean, names[0], floating=True, ndim=1, nonempty=True)
    _check_cov(cov, names[1])
    if cov.shape != (mean.shape[0], mean.shape[0]):
        raise ValueError(f"{name}: {names[0]} must be (D,) and {names[1]} (D, D), got {tuple(mean.shape)} and "
                         f"{tuple(cov.shape)}")
    if cov.dtype != mean.dtype:
        raise TypeError(f"{names[0]} and {names[1]} must have the same dtype, got {mean.dtype} and {cov.dtype}")


def _check_x(x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    samples(x, "x", ndim=2, dim=mean.shape[0])
    if x.dtype != mean.dtype:
        raise TypeError(f"x has dtype {x.dtype} but the Gaussian is {mean.dtype}: convert one of them")
    return x


def wiener_gain(cov: torch.Tensor, sigma: float) -> torch.Tensor:
    """``W = S (S + sigma^2 I)^-1`` (D, D): the linear part of a Gaussian's posterior-mean denoiser."""
    _check_cov(cov)
    sigma = checks.number(sigma, "sigma", low=0, low_open=True)
    eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    return torch.linalg.solve(cov + sigma**2 * eye, cov).T  # S (S + s^2 I)^-1, both symmetric


def gaussian_denoise(x: torch.Tensor, sigma: float, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """The exact denoiser of ``N(mean, cov)``: ``mean + W (x - mean)`` for x (N, D)."""
    _check_gaussian(mean, cov, "gaussian_denoise")
    _check_x(x, mean)
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
        w = checks.number(w, "w")
        checks.tensor(cond, "cond", floating=True)
        if cond.shape != self.mean_shift.shape:
            raise ValueError(f"cond must have the decomposition's shape {tuple(self.mean_shift.shape)}, got "
                             f"{tuple(cond.shape)}")
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
    _check_gaussian(mean_c, cov_c, "class Gaussian", ("mean_c", "cov_c"))
    _check_gaussian(mean_u, cov_u, "unconditional Gaussian", ("mean_u", "cov_u"))
    if mean_u.shape != mean_c.shape or mean_u.dtype != mean_c.dtype:
        raise ValueError(f"mean_u and mean_c must have the same size and dtype, got {tuple(mean_u.shape)} "
                         f"{mean_u.dtype} and {tuple(mean_c.shape)} {mean_c.dtype}")
    _check_x(x, mean_c)
    sigma = checks.number(sigma, "sigma", low=0, low_open=True)
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
    _check_cov(cov_c, "cov_c")
    _check_cov(cov_u, "cov_u")
    if cov_c.shape != cov_u.shape or cov_c.dtype != cov_u.dtype:
        raise ValueError(f"cov_c and cov_u must have the same shape and dtype, got {tuple(cov_c.shape)} "
                         f"{cov_c.dtype} and {tuple(cov_u.shape)} {cov_u.dtype}")
    diff = cov_c - cov_u
    return Eigh(*torch.linalg.eigh(0.5 * (diff + diff.T)))


def gaussian_teleport(
    x: torch.Tensor, sigma_from: float, sigma_to: float, mean: torch.Tensor, cov: torch.Tensor
) -> torch.Tensor:
    """Solve the probability-flow ODE of ``N(mean, cov)`` exactly from ``sigma_from`` to ``sigma_to``:
    ``mean + U diag(sqrt((l + sigma_to^2) / (l + sigma_from^2))) U^T (x - mean)``.

    Wang & Vastola (2024, https://arxiv.org/abs/2412.09726) use it for "analytical teleportation":
    the early, nearly linear part of sampling is replaced by this closed form.
    """
    _check_gaussian(mean, cov, "gaussian_teleport")
    _check_x(x, mean)
    sigma_from = checks.number(sigma_from, "sigma_from", low=0, low_open=True)
    sigma_to = checks.number(sigma_to, "sigma_to", low=0)
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
    samples(x, "x", ndim=2, min_n=2)
    ridge = checks.number(ridge, "ridge", low=0)
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
        samples(x, "x", ndim=2, min_n=2)
        checks.tensor(labels, "labels")
        if labels.shape != (x.shape[0],) or labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"labels must be an integer tensor of shape ({x.shape[0]},)")
        if int(labels.min()) < 0:
            raise ValueError(f"labels must be class indices >= 0, got min {int(labels.min())}")
        counts = torch.bincount(labels)
        if (counts < 2).any():
            raise ValueError("every class 0..max(labels) needs at least two samples")
        fits = [gaussian_fit(x[labels == c], ridge=ridge) for c in range(len(counts))]
        self.unconditional = gaussian_fit(x, ridge=ridge)
        self.classes = GaussianMixture(torch.stack([f.mean for f in fits]), torch.stack([f.cov for f in fits]),
                                       counts.to(x.dtype))

    @property
    def num_classes(self) -> int:
        return self.classes.num_components

    def class_fit(self, label: int) -> GaussianFit:
        """The Gaussian of class ``label``."""
        checks.integer(label, "label", low=0, high=self.num_classes - 1)
        return GaussianFit(self.classes.means[label], self.classes.covariances[label])

    def __call__(
        self, x: torch.Tensor, sigma: float | torch.Tensor, label: int | torch.Tensor | None = None
    ) -> torch.Tensor:
        if label is not None:
            return self.classes.denoise(x, sigma, label)
        if isinstance(sigma, torch.Tensor):
            checks.tensor(sigma, "sigma")
        s = torch.as_tensor(sigma).reshape(-1)
        if s.numel() == 0:
            raise ValueError("sigma is empty")
        if not bool((s == s[0]).all()):
            raise ValueError("the unconditional linear denoiser takes one noise level per call")
        return gaussian_denoise(x, float(s[0]), *self.unconditional)

    def decomposition(self, x: torch.Tensor, sigma: float, label: int) -> CFGDecomposition:
        """:func:`cfg_decomposition` of class ``label`` against the unconditional Gaussian."""
        (mean_c, cov_c), (mean_u, cov_u) = self.class_fit(label), self.unconditional
        return cfg_decomposition(x, sigma, mean_c=mean_c, cov_c=cov_c, mean_u=mean_u, cov_u=cov_u)
