"""Reference in-context predictors: one (preconditioned) gradient-descent step, ridge and least squares.

The one-step GD predictor is the algorithm that a trained one-layer linear self-attention implements
(Mahankali, Hashimoto, Ma, *One Step of Gradient Descent is Provably the Optimal In-Context Learner with One
Layer of Linear Self-Attention*, 2023, arXiv 2307.03576, Theorems 1 and 2); :func:`optimal_preconditioner`
is the preconditioner of the pre-training loss's global minimum for Gaussian inputs.
"""

from __future__ import annotations

import torch

from labkit.icl.prompts import Prompts, check_cov, check_prompts


def _finite_float(value: object, name: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or abs(value) == float("inf"):
        raise ValueError(f"{name} must be a finite float, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return float(value)


def context_correlation(prompts: Prompts) -> torch.Tensor:
    """``h = (1/n_ctx) Σ_i y_i x_i``, shape ``(n, d)``: minus the gradient of the in-context loss at ``w = 0``."""
    p = check_prompts(prompts)
    return torch.einsum("nk,nkd->nd", p.y_ctx, p.x_ctx) / p.n_ctx


def one_step_gd_predict(prompts: Prompts, *, eta: float | None = None,
                        precond: torch.Tensor | None = None) -> torch.Tensor:
    """The query prediction ``x_queryᵀ Γ (1/n_ctx) Σ_i y_i x_i`` (shape ``(n,)``) of one gradient-descent step
    from ``w = 0`` on the in-context loss ``L(w) = (1/2 n_ctx) Σ_i (y_i − wᵀx_i)²``, preconditioned by
    ``Γ = precond`` (a ``(d, d)`` matrix) or ``Γ = eta·I`` (``eta = 1`` when neither is given)."""
    p = check_prompts(prompts)
    if eta is not None and precond is not None:
        raise ValueError("give eta (a step size) or precond (a (d, d) preconditioner), not both")
    h = context_correlation(p)
    if precond is None:
        step = 1.0 if eta is None else _finite_float(eta, "eta")
        return step * (p.x_query * h).sum(-1)
    if not isinstance(precond, torch.Tensor):
        raise TypeError(f"precond must be a (d, d) torch.Tensor, got {type(precond).__name__}")
    if precond.shape != (p.d, p.d):
        raise ValueError(f"precond must have shape ({p.d}, {p.d}), got {tuple(precond.shape)}")
    if not torch.isfinite(precond).all():
        raise ValueError("precond has non-finite entries")
    return torch.einsum("nd,de,ne->n", p.x_query, precond.to(h), h)


def ridge_predict(prompts: Prompts, *, lam: float) -> torch.Tensor:
    """The query prediction of ridge regression on each prompt's context: ``w = (XᵀX + lam·I)⁻¹ Xᵀy``
    (unnormalised sums, ``lam >= 0``; ``lam = noise²`` is the Bayes posterior mean for ``w ~ N(0, I)``)."""
    p = check_prompts(prompts)
    lam = _finite_float(lam, "lam")
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    x, y = p.x_ctx.double(), p.y_ctx.double()
    gram = x.transpose(1, 2) @ x + lam * torch.eye(p.d, dtype=x.dtype, device=x.device)
    w = torch.linalg.solve(gram, (x.transpose(1, 2) @ y.unsqueeze(-1)).squeeze(-1))
    return (p.x_query.double() * w).sum(-1).to(p.x_query.dtype)


def ols_predict(prompts: Prompts) -> torch.Tensor:
    """The query prediction of least squares on each prompt's context (the minimum-norm solution
    ``w = X⁺y`` when ``n_ctx < d``)."""
    p = check_prompts(prompts)
    x, y = p.x_ctx.double(), p.y_ctx.double()
    w = (torch.linalg.pinv(x) @ y.unsqueeze(-1)).squeeze(-1)
    return (p.x_query.double() * w).sum(-1).to(p.x_query.dtype)


def optimal_preconditioner(d: int, *, n_ctx: int, cov: torch.Tensor | None = None, noise: float = 0.0,
                           w_cov: torch.Tensor | None = None) -> torch.Tensor:
    """The ``Γ*`` minimising the expected query error of :func:`one_step_gd_predict` over the prompts of
    :func:`regression_prompts` (``task="linear"``, ``x ~ N(0, Σ)``, ``w ~ N(0, W)``, ``n = n_ctx``):

    ``Γ* = W Σ M⁻¹`` with ``M = E[h hᵀ] = (1 + 1/n) Σ W Σ + (tr(WΣ) + noise²)/n · Σ``.

    ``Σ = W = I`` gives ``n / (n + d + 1 + noise²) · I``; ``W = Σ⁻¹`` (Mahankali et al.'s non-isotropic
    setting) gives ``n / (n + d + 1 + noise²) · Σ⁻¹``; ``W = I`` gives ``((1 + 1/n) Σ + (tr Σ + noise²)/n · I)⁻¹``,
    which tends to ``Σ⁻¹`` as ``n → ∞``. This is the preconditioner of the pre-training loss's global minimum
    for one layer of linear self-attention (Mahankali, Hashimoto, Ma 2023, arXiv 2307.03576; the derivation
    is in the icl/01 notebook)."""
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ValueError(f"d must be a positive int, got {d!r}")
    if isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < 1:
        raise ValueError(f"n_ctx must be a positive int, got {n_ctx!r}")
    noise = _finite_float(noise, "noise")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    eye = torch.eye(d, dtype=torch.float64)
    sigma = eye if check_cov(cov, d) is None else cov.detach().double().cpu()
    w = eye if check_cov(w_cov, d, name="w_cov") is None else w_cov.detach().double().cpu()
    m = (1 + 1 / n_ctx) * sigma @ w @ sigma + (torch.trace(w @ sigma) + noise**2) / n_ctx * sigma
    out = w @ sigma @ torch.linalg.inv(m)  # symmetric when W commutes with Σ (W = I or Σ⁻¹), not in general
    like = cov if cov is not None else w_cov
    if like is None:
        return out.to(torch.get_default_dtype())
    return out.to(dtype=like.dtype, device=like.device)


def mse(pred: torch.Tensor, prompts: Prompts) -> float:
    """Mean squared error of query predictions ``pred (n,)`` against ``prompts.y_query``."""
    p = check_prompts(prompts)
    if not isinstance(pred, torch.Tensor) or pred.shape != p.y_query.shape:
        raise ValueError(f"pred must be a tensor of shape {tuple(p.y_query.shape)}, got "
                         f"{tuple(pred.shape) if isinstance(pred, torch.Tensor) else type(pred).__name__}")
    return float(((pred.detach().to(p.y_query) - p.y_query) ** 2).mean())


def _square(t: object, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.ndim != 2 or t.shape[0] != t.shape[1]:
        raise ValueError(f"{name} must be a square matrix tensor, got "
                         f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
    return t.detach().double().cpu()


def matrix_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """The cosine ``⟨A, B⟩_F / (‖A‖_F ‖B‖_F)`` of two square matrices: 1 when ``A ∝ B`` (positive factor)."""
    a, b = _square(a, "a"), _square(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-300))


def off_identity_share(precond: torch.Tensor) -> float:
    """``‖Γ − (tr Γ / d) I‖_F / ‖Γ‖_F``: the share of ``Γ`` that is not a multiple of the identity
    (0 for ``ηI``)."""
    g = _square(precond, "precond")
    d = g.shape[0]
    return float((g - torch.trace(g) / d * torch.eye(d, dtype=g.dtype)).norm() / g.norm().clamp_min(1e-300))


def optimal_step_size(d: int, *, n_ctx: int, cov: torch.Tensor | None = None, noise: float = 0.0,
                      w_cov: torch.Tensor | None = None) -> float:
    """The best plain step ``η*`` (``Γ = ηI``) for the prompts of :func:`regression_prompts` (linear task):
    ``η* = tr(Σ² W) / tr(Σ M)`` with ``M`` as in :func:`optimal_preconditioner`; ``n / (n + d + 1 + noise²)``
    for ``Σ = W = I`` (Mahankali et al. 2023, arXiv 2307.03576, the isotropic case)."""
    optimal_preconditioner(d, n_ctx=n_ctx, cov=cov, noise=noise, w_cov=w_cov)  # checks the arguments
    eye = torch.eye(d, dtype=torch.float64)
    sigma = eye if cov is None else cov.detach().double().cpu()
    w = eye if w_cov is None else w_cov.detach().double().cpu()
    m = (1 + 1 / n_ctx) * sigma @ w @ sigma + (torch.trace(w @ sigma) + noise**2) / n_ctx * sigma
    return float(torch.trace(sigma @ sigma @ w) / torch.trace(sigma @ m))


def fit_preconditioner(prompts: Prompts) -> torch.Tensor:
    """The ``(d, d)`` preconditioner whose one-step GD predictions fit ``prompts.y_query`` best in least squares
    (the prediction ``x_queryᵀ Γ h`` is linear in ``Γ``): the empirical optimum, for any task (``tanh`` too)."""
    p = check_prompts(prompts)
    h = context_correlation(p).double()
    feats = torch.einsum("na,nb->nab", p.x_query.double(), h).reshape(p.n, -1)
    if p.n < feats.shape[1]:
        raise ValueError(f"fit_preconditioner needs at least d² = {feats.shape[1]} prompts, got {p.n}")
    sol = torch.linalg.lstsq(feats.cpu(), p.y_query.double().cpu().unsqueeze(-1)).solution
    return sol.reshape(p.d, p.d).to(p.x_query.dtype)


def fit_step_size(prompts: Prompts) -> float:
    """The plain step ``η`` whose one-step GD predictions fit ``prompts.y_query`` best in least squares."""
    p = check_prompts(prompts)
    f = one_step_gd_predict(p, eta=1.0).double()
    return float((f @ p.y_query.double()) / (f @ f).clamp_min(1e-300))
