"""Gaussian mixtures with exact noisy densities, scores, denoisers and class posteriors.

With data ``x0 ~ sum_k w_k N(mu_k, S_k)`` and ``x = x0 + sigma * eps`` (the EDM / variance-exploding
convention of Karras et al., 2022), the noisy density is again a mixture,
``p_sigma(x) = sum_k w_k N(x; mu_k, S_k + sigma^2 I)``, so every quantity a guidance method needs is
available in closed form: the score ``grad log p_sigma``, the posterior mean ``E[x0 | x]`` (Tweedie:
``x + sigma^2 * score``) and the exact noisy classifier ``p(y | x, sigma)``. Each covariance is stored
through its eigendecomposition ``S_k = U_k diag(l_k) U_k^T``, which makes every noise level (also a
different one per sample) cost the same as the clean density.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch

from labkit import checks
from labkit.autograd import check_generator, generator_device, randn
from labkit.diffusion._checks import labels_for

Label = int | torch.Tensor | None


class MixtureSample(NamedTuple):
    """Samples (n, D) and the index of the component each came from (n,)."""

    samples: torch.Tensor
    components: torch.Tensor


def _real(value: object, name: str) -> torch.Tensor:
    """``value`` as a real tensor (a tensor not on ``meta``, or numbers torch can read), bools and complex refused."""
    if isinstance(value, torch.Tensor):
        checks.tensor(value, name, finite=False)
    try:
        t = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be a tensor or nested lists of numbers, got {type(value).__name__}") from err
    if t.is_complex() or (t.dtype == torch.bool and name != "labels"):
        raise TypeError(f"{name} must hold real numbers, got dtype {t.dtype}")
    return t


def as_sigma(sigma: float | torch.Tensor, n: int, *, like: torch.Tensor, allow_zero: bool = True) -> torch.Tensor:
    """Noise levels as a float tensor of shape (n,) on ``like``'s device; validates the range."""
    if isinstance(sigma, torch.Tensor):
        checks.tensor(sigma, "sigma", finite=False)
        if sigma.dtype == torch.bool or sigma.is_complex():
            raise TypeError(f"sigma must hold real numbers, got dtype {sigma.dtype}")
    else:
        checks.number(sigma, "sigma")
    s = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    if s.ndim == 0:
        s = s.expand(n)
    elif s.ndim == 1 and s.shape[0] == n:
        pass
    elif s.ndim == 1 and s.shape[0] == 1:
        s = s.expand(n)
    else:
        raise ValueError(f"sigma must be a scalar or a tensor of shape ({n},), got shape {tuple(s.shape)}")
    if not torch.isfinite(s).all():
        raise ValueError("sigma must be finite")
    if (s < 0).any() or (not allow_zero and (s == 0).any()):
        raise ValueError(f"sigma must be {'>= 0' if allow_zero else '> 0'}, got min {float(s.min()):.4g}")
    return s


class GaussianMixture:
    """A labelled Gaussian mixture in ``D`` dimensions with exact quantities at any noise level.

    ``means`` (K, D); ``covariances`` (K, D, D) full, (K, D) diagonal or (K,) isotropic variances;
    ``weights`` (K,) non-negative (normalised here); ``labels`` (K,) class of each component (default:
    each component its own class). Noise convention: ``x = x0 + sigma * eps`` (Karras et al., 2022).
    """

    def __init__(
        self,
        means: torch.Tensor,
        covariances: torch.Tensor,
        weights: torch.Tensor,
        *,
        labels: torch.Tensor | list[int] | None = None,
    ):
        means = _real(means, "means")
        if not means.is_floating_point():
            means = means.float()
        if means.ndim != 2 or means.numel() == 0:
            raise ValueError(f"means must have shape (K, D) with K, D >= 1, got {tuple(means.shape)}")
        checks.tensor(means, "means")  # finite
        k, d = means.shape
        cov = _real(covariances, "covariances").to(dtype=means.dtype, device=means.device)
        if cov.shape == (k,):
            cov = torch.diag_embed(cov[:, None].expand(k, d))
        elif cov.shape == (k, d):
            cov = torch.diag_embed(cov)
        elif cov.shape != (k, d, d):
            raise ValueError(
                f"covariances must have shape ({k}, {d}, {d}), ({k}, {d}) or ({k},), got {tuple(cov.shape)}"
            )
        checks.tensor(cov, "covariances")  # NaN or inf named as such, not as an asymmetry
        if not torch.allclose(cov, cov.transpose(-1, -2), atol=1e-6, rtol=1e-5):
            raise ValueError("covariances must be symmetric")
        w = _real(weights, "weights").to(dtype=means.dtype, device=means.device)
        if w.shape != (k,):
            raise ValueError(f"weights must have shape ({k},), got {tuple(w.shape)}")
        if (w < 0).any() or not torch.isfinite(w).all() or w.sum() <= 0:
            raise ValueError("weights must be finite, non-negative and not all zero")
        if labels is None:
            lab = torch.arange(k, device=means.device)
        else:
            lab = _real(labels, "labels").to(means.device)
            if lab.shape != (k,) or lab.is_floating_point() or lab.dtype == torch.bool or (lab < 0).any():
                raise ValueError(f"labels must be {k} non-negative integers, got {labels!r}")
        # diagonal covariances (the common case) skip the rotations: eigenvectors = identity
        self.diagonal = bool((cov == torch.diag_embed(cov.diagonal(dim1=-2, dim2=-1))).all())
        if self.diagonal:
            evals, evecs = cov.diagonal(dim1=-2, dim2=-1).clone(), None
        else:
            evals, evecs = torch.linalg.eigh(cov)
        if (evals < -1e-6 * evals.abs().max().clamp_min(1.0)).any():
            raise ValueError("covariances must be positive semi-definite")
        self.means, self.covariances, self.weights = means, cov, w / w.sum()
        self.labels = lab.long()
        self.evals, self.evecs = evals.clamp_min(0.0), evecs
        self.isotropic = self.diagonal and bool((self.evals == self.evals[:, :1]).all())
        self._mean_sq = (means * means).sum(1)

    # ----------------------------------------------------------------- basic properties
    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1

    @property
    def device(self) -> torch.device:
        return self.means.device

    def __repr__(self) -> str:
        return (
            f"GaussianMixture(components={self.num_components}, dim={self.dim}, "
            f"classes={self.num_classes}, device={self.device})"
        )

    def to(self, device: str | torch.device) -> GaussianMixture:
        return GaussianMixture(
            self.means.to(device),
            self.covariances.to(device),
            self.weights.to(device),
            labels=self.labels.to(device),
        )

    def mean(self) -> torch.Tensor:
        """The mixture's mean (D,)."""
        return self.weights @ self.means

    def covariance(self) -> torch.Tensor:
        """The mixture's covariance (D, D): within-component plus between-component spread."""
        mu = self.mean()
        centred = self.means - mu
        return torch.einsum("k,kij->ij", self.weights, self.covariances) + torch.einsum(
            "k,ki,kj->ij", self.weights, centred, centred
        )

    def gaussian_approximation(self) -> GaussianMixture:
        """The single Gaussian with the mixture's mean and covariance (Wang & Vastola, 2024)."""
        return GaussianMixture(
            self.mean()[None],
            self.covariance()[None],
            torch.ones(1, device=self.device, dtype=self.means.dtype),
            labels=torch.zeros(1, dtype=torch.long, device=self.device),
        )

    def conditional(self, label: int) -> GaussianMixture:
        """The mixture of the components with class ``label`` (weights renormalised, labels kept)."""
        if not isinstance(label, int) or isinstance(label, bool):
            raise TypeError(f"label must be an int, got {type(label).__name__}")
        keep = self.labels == label
        if not keep.any():
            raise ValueError(f"label must be one of {sorted(set(self.labels.tolist()))}, got {label}")
        return GaussianMixture(self.means[keep], self.covariances[keep], self.weights[keep], labels=self.labels[keep])

    def class_prior(self) -> torch.Tensor:
        """p(y) for y = 0..num_classes-1."""
        return torch.zeros(self.num_classes, dtype=self.weights.dtype, device=self.device).index_add_(
            0, self.labels, self.weights
        )

    # ----------------------------------------------------------------- sampling
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        sigma: float = 0.0,
        return_components: bool = False,
    ) -> torch.Tensor:
        """``n`` samples (n, D) of the data (``sigma=0``) or of the noisy marginal at ``sigma``.

        Numbers are drawn on the generator's device (the CPU by default) and moved to the mixture's
        (labkit's generator rule). ``return_components=True`` is deprecated: use
        :meth:`sample_components`, which also returns each sample's component.
        """
        if return_components:
            warnings.warn("sample(..., return_components=True) is deprecated; use sample_components(...)",
                          DeprecationWarning, stacklevel=2)
            return self.sample_components(n, generator=generator, sigma=sigma)  # type: ignore[return-value]
        return self.sample_components(n, generator=generator, sigma=sigma).samples

    def sample_components(
        self, n: int, *, generator: torch.Generator | None = None, sigma: float = 0.0
    ) -> MixtureSample:
        """``n`` samples and the component each came from: ``x, comp = mixture.sample_components(n)``;
        ``mixture.labels[comp]`` are their classes."""
        checks.positive_int(n, "n")
        sigma = checks.number(sigma, "sigma", low=0)
        check_generator(generator)
        weights = self.weights.to(generator_device(generator))
        comp = torch.multinomial(weights, n, replacement=True, generator=generator).to(self.device)
        z = randn((n, self.dim), generator=generator, device=self.device, dtype=self.means.dtype)
        if self.diagonal:
            x = self.means[comp] + self.evals[comp].sqrt() * z
        else:
            scale = self.evecs[comp] * self.evals[comp].sqrt()[:, None, :]
            x = self.means[comp] + torch.einsum("nij,nj->ni", scale, z)
        if sigma > 0:
            x = x + sigma * randn((n, self.dim), generator=generator, device=self.device, dtype=x.dtype)
        return MixtureSample(x, comp)

    # ----------------------------------------------------------------- exact noisy quantities
    def _check_x(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 2 or x.shape[1] != self.dim or x.shape[0] < 1:
            raise ValueError(f"x must have shape (N, {self.dim}) with N >= 1, got {tuple(x.shape)}")
        checks.tensor(x, "x")
        if x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"x must hold real numbers, got dtype {x.dtype}")
        return x.to(self.means.dtype) if x.dtype != self.means.dtype else x

    def _label_mask(self, label: Label, n: int) -> torch.Tensor | None:
        """(n, K) bool mask of components allowed by ``label`` (None: all)."""
        if label is None:
            return None
        lab = labels_for(label, n, num_classes=self.num_classes, of="mixture", device=self.device)
        return lab[:, None] == self.labels[None, :]

    def _terms(self, x: torch.Tensor, sigma: float | torch.Tensor, label: Label, *, allow_zero: bool = True,
               checked: bool = False):
        """Per-component log joint (N, K) and whitened residuals for the score (``checked``: x already is)."""
        x = x if checked else self._check_x(x)
        n = x.shape[0]
        s = as_sigma(sigma, n, like=x, allow_zero=allow_zero)
        if n > 1 and bool((s == s[0]).all()):  # one noise level (the samplers' case): per-component work once
            s = s[:1]
        s2 = s[:, None, None] ** 2
        if self.isotropic:  # (N, K) work only: squared distances through one matrix product
            lam = self.evals[None, :, 0] + s2[:, :, 0]  # (N, K)
            if (lam <= 0).any():
                raise ValueError("sigma must be > 0 for a mixture with singular covariances")
            sq = ((x * x).sum(1)[:, None] + self._mean_sq[None] - 2 * x @ self.means.T).clamp_min(0.0)
            log_norm = -0.5 * (sq / lam + self.dim * (lam.log() + math.log(2 * math.pi)))
            log_joint = self.weights.log()[None] + log_norm
            mask = self._label_mask(label, n)
            if mask is not None:
                log_joint = log_joint.masked_fill(~mask, -math.inf)
            return x, log_joint, None, lam
        lam = self.evals[None] + s2  # (N, K, D)
        if (lam <= 0).any():
            raise ValueError("sigma must be > 0 for a mixture with singular covariances")
        z = x[:, None, :] - self.means[None]
        if not self.diagonal:
            z = torch.einsum("kji,nkj->nki", self.evecs, z)  # U^T (x - mu)
        log_det = lam.log().sum(-1)
        log_norm = -0.5 * ((z**2 / lam).sum(-1) + log_det + self.dim * math.log(2 * math.pi))
        log_joint = self.weights.log()[None] + log_norm  # (N, K)
        mask = self._label_mask(label, n)
        if mask is not None:
            log_joint = log_joint.masked_fill(~mask, -math.inf)
        return x, log_joint, z, lam

    def log_prob(self, x: torch.Tensor, sigma: float | torch.Tensor = 0.0, *, label: Label = None) -> torch.Tensor:
        """log p_sigma(x) (N,); with ``label`` the class-conditional density log p_sigma(x | y)."""
        _, log_joint, _, _ = self._terms(x, sigma, label)
        out = torch.logsumexp(log_joint, dim=1)
        if label is not None:
            mask = self._label_mask(label, x.shape[0])
            out = out - torch.logsumexp(self.weights.log()[None].masked_fill(~mask, -math.inf), dim=1)
        return out

    def responsibilities(
        self, x: torch.Tensor, sigma: float | torch.Tensor = 0.0, *, label: Label = None
    ) -> torch.Tensor:
        """Posterior over components p(k | x, sigma[, y]) (N, K)."""
        _, log_joint, _, _ = self._terms(x, sigma, label)
        return torch.softmax(log_joint, dim=1)

    def score(self, x: torch.Tensor, sigma: float | torch.Tensor, *, label: Label = None) -> torch.Tensor:
        """grad_x log p_sigma(x [| y]) (N, D), exactly."""
        return self._score(self._check_x(x), sigma, label)

    def _score(self, x: torch.Tensor, sigma: float | torch.Tensor, label: Label) -> torch.Tensor:
        x, log_joint, z, lam = self._terms(x, sigma, label, checked=True)
        resp = torch.softmax(log_joint, dim=1)  # (N, K)
        if z is None:  # isotropic: -sum_k r_k (x - mu_k) / lam_k
            rl = resp / lam
            return rl @ self.means - x * rl.sum(1, keepdim=True)
        scaled = z / lam
        if self.diagonal:  # sum_k r_k * (-(x - mu_k) / lam_k) without forming a rotation
            return -torch.einsum("nk,nki->ni", resp, scaled)
        comp_scores = -torch.einsum("kij,nkj->nki", self.evecs, scaled)  # -S_sigma^-1 (x - mu)
        return torch.einsum("nk,nki->ni", resp, comp_scores)

    def denoise(self, x: torch.Tensor, sigma: float | torch.Tensor, label: Label = None) -> torch.Tensor:
        """The posterior mean E[x0 | x, sigma[, y]] = x + sigma^2 * score (Tweedie's formula).

        The signature ``(x, sigma, label=None)`` is the denoiser interface of the samplers.
        """
        x = self._check_x(x)
        s = as_sigma(sigma, x.shape[0], like=x, allow_zero=False)
        return x + s[:, None] ** 2 * self._score(x, s, label)

    __call__ = denoise

    def log_class_posterior(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """log p(y | x, sigma) (N, num_classes): the exact noisy classifier's log-probabilities."""
        _, log_joint, _, _ = self._terms(x, sigma, None)
        log_post = log_joint - torch.logsumexp(log_joint, dim=1, keepdim=True)
        out = torch.full((x.shape[0], self.num_classes), -math.inf, dtype=log_post.dtype, device=log_post.device)
        for c in range(self.num_classes):
            sel = self.labels == c
            if sel.any():
                out[:, c] = torch.logsumexp(log_post[:, sel], dim=1)
        return out

    def class_posterior(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """p(y | x, sigma) (N, num_classes), exactly."""
        return self.log_class_posterior(x, sigma).exp()

    def classifier(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """The exact noisy classifier as logits (= log-posteriors), the interface of classifier guidance."""
        return self.log_class_posterior(x, sigma)

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable component of each clean sample (N,) (for per-mode mass)."""
        return self.responsibilities(x, 0.0 if (self.evals > 0).all() else 1e-3).argmax(dim=1)


def ring_mixture(
    num_classes: int = 2,
    modes_per_class: int = 3,
    *,
    radius: float = 4.0,
    std: float = 0.35,
    spread: float = 1.2,
    device: str | torch.device = "cpu",
) -> GaussianMixture:
    """A 2-D teaching mixture: each class owns ``modes_per_class`` equal-weight isotropic modes.

    Class ``c`` owns the ray at angle ``2 pi c / num_classes``; its modes sit on that ray at distances
    ``radius + (j - (m - 1) / 2) * spread`` from the origin, so mode ``j = 0`` is the class's "inner"
    mode, nearest the other classes: the mode that strong guidance starves first.
    """
    checks.positive_int(num_classes, "num_classes")
    checks.positive_int(modes_per_class, "modes_per_class")
    radius = checks.number(radius, "radius", low=0, low_open=True)
    std = checks.number(std, "std", low=0, low_open=True)
    spread = checks.number(spread, "spread", low=0)
    means, labels = [], []
    for c in range(num_classes):
        base = 2 * math.pi * c / num_classes
        for j in range(modes_per_class):
            offset = (j - (modes_per_class - 1) / 2) * spread
            r = radius + offset
            means.append([r * math.cos(base), r * math.sin(base)])
            labels.append(c)
    k = len(means)
    return GaussianMixture(
        torch.tensor(means, device=device),
        torch.full((k,), std**2, device=device),
        torch.ones(k, device=device),
        labels=torch.tensor(labels, device=device),
    )
