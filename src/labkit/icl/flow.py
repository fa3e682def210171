"""Gradient flow on one linear self-attention layer: the paper's initialization and the prediction-error formula.

*Trained Transformers Learn Linear Models In-Context* (Ruiqi Zhang, Spencer Frei, Peter L. Bartlett, 2023,
arXiv 2306.09927; JMLR 25, 2024). One layer of linear self-attention with merged key-query ``W^{KQ}`` and
projection-value ``W^{PV}`` matrices, started at

    W^{PV}(0) = σ [[0, 0], [0, 1]],   W^{KQ}(0) = σ [[Θ Θᵀ, 0], [0, 0]],   ||Θ Θᵀ||_F = 1   (Sec. 3.3)

and trained by gradient flow on prompts with ``x ~ N(0, Λ)``, ``w ~ N(0, I)``, reaches the global minimum
where the prediction is ``x_qᵀ Γ* (1/N) Σ y_i x_i`` with ``Γ* = ((1 + 1/N) Λ + tr(Λ)/N · I)⁻¹`` (Theorem 4.1;
:func:`labkit.icl.optimal_preconditioner` computes it). Its error on prompts of another length ``M``, or with
other task or input distributions (Sec. 4.1-4.2), is the closed form of :func:`prediction_error`.
"""

from __future__ import annotations

import torch

from labkit.autograd import check_generator, randn
from labkit.icl.attention import LinearSelfAttention
from labkit.icl.prompts import check_cov


def paper_initialization(d: int, *, sigma: float = 0.1, generator: torch.Generator | None = None,
                         merged: bool = True) -> LinearSelfAttention:
    """A :class:`labkit.icl.LinearSelfAttention` at the initialization of Zhang, Frei, Bartlett (2023, arXiv
    2306.09927, Sec. 3.3): ``W^{PV} = σ [[0, 0], [0, 1]]``, ``W^{KQ} = σ [[ΘΘᵀ, 0], [0, 0]]`` with ``Θ`` a
    standard normal ``(d, d)`` matrix from ``generator`` scaled so that ``||ΘΘᵀ||_F = 1``."""
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ValueError(f"d must be a positive int, got {d!r}")
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0 < sigma < float("inf"):
        raise ValueError(f"sigma must be a finite float > 0, got {sigma!r}")
    check_generator(generator)
    theta = randn((d, d), generator=generator, dtype=torch.float64)
    gram = theta @ theta.T
    gram = gram / gram.norm()
    w_kq = torch.zeros(d + 1, d + 1)
    w_kq[:d, :d] = float(sigma) * gram.float()
    w_pv = torch.zeros(d + 1, d + 1)
    w_pv[d, d] = float(sigma)
    model = LinearSelfAttention(d, merged=merged, init_scale=0.0)
    model.set_merged(w_kq, w_pv)
    return model


def prediction_error(gamma: torch.Tensor, *, n_ctx: int, cov: torch.Tensor | None = None,
                     w_cov: torch.Tensor | None = None, noise: float = 0.0) -> float:
    """The expected squared error ``E (x_qᵀ Γ h − wᵀx_q)²`` of the one-step predictor ``x_qᵀ Γ h``,
    ``h = (1/M) Σ_i y_i x_i``, on prompts of length ``M = n_ctx`` with ``x ~ N(0, Λ = cov)``,
    ``w ~ N(0, W = w_cov)`` (identities when None) and label noise ``noise`` (against the noise-free label):

        tr(Γᵀ Λ Γ E[h hᵀ]) − 2 tr(Λ Γ Λ W) + tr(Λ W),
        E[h hᵀ] = (1 + 1/M) Λ W Λ + (tr(W Λ) + noise²)/M · Λ       (Isserlis' theorem for Gaussian x).

    With ``Γ = Γ*`` of the training length ``N`` this is the trained transformer's error as a function of the
    test length (Zhang, Frei, Bartlett 2023, arXiv 2306.09927, Sec. 4.1), and under shifted ``W`` or ``Λ`` its
    error under task or covariate shift (Sec. 4.2)."""
    if not isinstance(gamma, torch.Tensor) or gamma.ndim != 2 or gamma.shape[0] != gamma.shape[1]:
        raise ValueError(f"gamma must be a (d, d) tensor, got "
                         f"{tuple(gamma.shape) if isinstance(gamma, torch.Tensor) else type(gamma).__name__}")
    if not torch.isfinite(gamma).all():
        raise ValueError("gamma has non-finite entries")
    d = gamma.shape[0]
    if isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < 1:
        raise ValueError(f"n_ctx must be a positive int, got {n_ctx!r}")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise < float("inf"):
        raise ValueError(f"noise must be a finite float >= 0, got {noise!r}")
    eye = torch.eye(d, dtype=torch.float64)
    lam = eye if check_cov(cov, d) is None else cov.detach().double().cpu()
    w = eye if check_cov(w_cov, d, name="w_cov") is None else w_cov.detach().double().cpu()
    g = gamma.detach().double().cpu()
    m = n_ctx
    hh = (1 + 1 / m) * lam @ w @ lam + (torch.trace(w @ lam) + noise**2) / m * lam
    err = torch.trace(g.T @ lam @ g @ hh) - 2 * torch.trace(lam @ g @ lam @ w) + torch.trace(lam @ w)
    return float(err)


__all__ = ["paper_initialization", "prediction_error"]
