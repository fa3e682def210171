"""Deep linear transformers for in-context regression, and the baselines they are compared with.

The model is the linear transformer of *Linear Transformers are Versatile In-Context Learners*
(Vladymyrov, von Oswald, Sandler, Ge, 2024, arXiv 2402.14180, Sec. 2): tokens ``e_i = (x_i, y_i)`` and the
query ``e_q = (x_query, 0)`` in ``R^{d+1}``; layer ``l`` updates every token with a residual

    e_i <- e_i + P_l (1/n) Σ_j e_j e_jᵀ Q_l e_i        (j over the n context tokens)

and the prediction is the label entry of the query token after the last layer. One layer with the merged
key-query matrix ``Q = W^{KQ}`` and the projection-value matrix ``P = W^{PV}`` is the linear self-attention
of *Trained Transformers Learn Linear Models In-Context* (Zhang, Frei, Bartlett, 2023, arXiv 2306.09927,
Sec. 3.2), whose theory lives in :mod:`labkit.icl.flow`. (There the query token also enters the sum; with
the query's label 0 and the paper's initialization this changes nothing the prediction reads, see flow.)

Baselines for noisy regression with a noise level that varies from prompt to prompt (Vladymyrov et al.,
Sec. 5): ``k`` steps of plain gradient descent with a tuned step (:func:`gd_predict`, :func:`tune_gd_step`),
ridge regression with one tuned ``λ`` for all prompts (:func:`noisy_ridge_predict`, :func:`tune_ridge`), the
noise-adaptive ridge that estimates ``σ²`` from the least-squares residual (:func:`adaptive_ridge_predict`)
and the Bayes oracle that knows each prompt's ``σ`` (``λ = σ²``, the posterior mean for ``w ~ N(0, I)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import nn

from labkit.autograd import check_generator, rand, randn
from labkit.history import History
from labkit.icl.prompts import Prompts, check_prompts, regression_prompts, tokens
from labkit.training import fit


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _non_negative(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise ValueError(f"{name} must be a finite float >= 0, got {value!r}")
    return float(value)


# --- the model --------------------------------------------------------------------------------------


class LinearTransformer(nn.Module):
    """``layers`` layers of linear self-attention with full ``(d+1, d+1)`` matrices ``P_l`` and ``Q_l``
    (Vladymyrov et al. 2024, arXiv 2402.14180, Sec. 2, "FULL"); ``model(prompts) -> Tensor[n]``.

    Weights start as ``init_scale`` times standard normals drawn from ``generator`` (the labkit rule);
    ``init_scale=0`` starts at zero (a saddle: set the weights yourself, e.g. with
    :func:`labkit.icl.flow.paper_initialization`).
    """

    def __init__(self, d: int, *, layers: int = 1, init_scale: float = 0.02,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.d = _positive_int(d, "d")
        self.layers = _positive_int(layers, "layers")
        scale = _non_negative(init_scale, "init_scale")
        check_generator(generator)
        shape = (self.layers, self.d + 1, self.d + 1)
        self.P = nn.Parameter(scale * randn(shape, generator=generator))
        self.Q = nn.Parameter(scale * randn(shape, generator=generator))

    def forward_tokens(self, z: torch.Tensor, n_ctx: int, *, every_layer: bool = False) -> torch.Tensor:
        """Run the layers on tokens ``z (n, T, d+1)`` whose first ``n_ctx`` rows are the context; return the
        last row's label entry ``(n,)``, or ``(layers, n)`` after every layer with ``every_layer=True``.

        Every token of a prompt is multiplied by the same matrix ``A_l = I + P_l S_l Q_l`` with
        ``S_l = (1/n) Σ_j e_j e_jᵀ``, so the layers act on ``S`` (``S_{l+1} = A_l S_l A_lᵀ``) and on the query
        token alone: the cost does not grow with the prompt length, and the result is the token-by-token one.
        """
        if z.ndim != 3 or z.shape[-1] != self.d + 1:
            raise ValueError(f"tokens must have shape (n, T, {self.d + 1}), got {tuple(z.shape)}")
        n_ctx = _positive_int(n_ctx, "n_ctx")
        if n_ctx >= z.shape[1]:
            raise ValueError(f"n_ctx must leave the query as the last token, got n_ctx={n_ctx} of {z.shape[1]} tokens")
        ctx = z[:, :n_ctx]
        stats = ctx.transpose(1, 2) @ ctx / n_ctx
        query = z[:, -1].unsqueeze(-1)
        eye = torch.eye(self.d + 1, dtype=z.dtype, device=z.device)
        outs = []
        for layer in range(self.layers):
            a = eye + self.P[layer] @ stats @ self.Q[layer]
            stats = a @ stats @ a.transpose(1, 2)
            query = a @ query
            outs.append(query[:, -1, 0])
        return torch.stack(outs) if every_layer else outs[-1]

    def forward(self, prompts: Prompts, *, every_layer: bool = False) -> torch.Tensor:
        p = check_prompts(prompts)
        if p.d != self.d:
            raise ValueError(f"prompts have d={p.d} but the model was built for d={self.d}")
        z = tokens(p).to(dtype=self.P.dtype)
        return self.forward_tokens(z, p.n_ctx, every_layer=every_layer)


# --- noisy prompts ----------------------------------------------------------------------------------


class NoisyPrompts(NamedTuple):
    """Prompts whose labels carry noise of a per-prompt level ``sigma (n,)``; ``clean`` is ``wᵀx_query``."""

    prompts: Prompts
    sigma: torch.Tensor

    @property
    def clean(self) -> torch.Tensor:
        return (self.prompts.x_query * self.prompts.w).sum(-1)


def noisy_prompts(n: int, *, d: int, n_ctx: int, sigma_max: float | None = None,
                  sigmas: Sequence[float] | None = None, cov: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> NoisyPrompts:
    """``n`` linear-regression prompts with label noise ``σ_τ ε`` per prompt ``τ`` (context and query):
    ``σ_τ ~ U(0, sigma_max)`` (Vladymyrov et al. 2024, arXiv 2402.14180, Sec. 5) or drawn uniformly from the
    list ``sigmas`` (their categorical noise). Exactly one of the two must be given."""
    if (sigma_max is None) == (sigmas is None):
        raise ValueError("give exactly one of sigma_max (uniform noise levels) or sigmas (a list of levels)")
    clean = regression_prompts(n, d=d, n_ctx=n_ctx, cov=cov, generator=generator)
    if sigma_max is not None:
        sigma = _non_negative(sigma_max, "sigma_max") * rand((n,), generator=generator, device=clean.w.device)
    else:
        levels = torch.tensor([_non_negative(s, "sigmas[i]") for s in sigmas], dtype=clean.w.dtype)
        if levels.numel() == 0:
            raise ValueError("sigmas must hold at least one noise level")
        pick = (rand((n,), generator=generator) * levels.numel()).long().clamp(max=levels.numel() - 1)
        sigma = levels[pick].to(clean.w.device)
    eps = randn((n, n_ctx + 1), generator=generator, device=clean.w.device)
    y_ctx = clean.y_ctx + sigma[:, None] * eps[:, :n_ctx]
    y_query = clean.y_query + sigma * eps[:, n_ctx]
    return NoisyPrompts(Prompts(clean.x_ctx, y_ctx, clean.x_query, y_query, clean.w), sigma)


# --- training ---------------------------------------------------------------------------------------


def warmup_cosine(step: int, *, steps: int, warmup: float) -> float:
    """The factor on the peak learning rate at optimizer step ``step`` (0-based) of ``steps``: a linear ramp over
    the first ``warmup`` share of the run times a cosine from 1 at step 0 to 0 at step ``steps``."""
    steps = _positive_int(steps, "steps")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, (int, float)) or not 0 <= warmup < 1:
        raise ValueError(f"warmup must be a share of the steps in [0, 1), got {warmup!r}")
    ramp = max(1, round(warmup * steps))
    return min(1.0, (step + 1) / ramp) * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))


def train_linear_transformer(model: LinearTransformer, *, steps: int, batch: int, n_ctx: int,
                             sigma_max: float = 0.0, cov: torch.Tensor | None = None, lr: float = 1e-2,
                             optimizer: str = "adam", schedule: str = "cosine", warmup: float = 0.3,
                             betas: tuple[float, float] = (0.9, 0.99), target: str = "clean",
                             generator: torch.Generator | None = None,
                             metrics: dict[str, Callable[[nn.Module], float]] | None = None,
                             eval_every: int | None = None, stop_when: Callable[[History], bool] | None = None,
                             progress: bool | None = None, desc: str = "linear transformer") -> History:
    """Train ``model`` in place with :func:`labkit.training.fit` on fresh prompts every step (``batch``
    prompts, noise ``σ_τ ~ U(0, sigma_max)``, inputs ``N(0, cov)``), loss ``mean (ŷ - t)²`` with the target
    ``t = wᵀx_query`` (``target="clean"``, the default) or the noisy query label ``y_query`` (``"noisy"``). Both
    losses have the same minimiser: the query's noise is independent of the prompt, so
    ``E (ŷ - y_query)² = E (ŷ - wᵀx_query)² + E σ²``; the clean target only removes that noise from every
    gradient, which decides whether a 2-layer model leaves its plateau within a few thousand steps (with the
    noisy target and 256 prompts a batch, seed 3 of icl/03 stayed on it after 2000 steps, worse than two GD
    steps; the clean target, or 4x larger batches, got it off).

    ``optimizer="adam"`` (as Vladymyrov et al., with moment decays ``betas``) or ``"sgd"`` (plain gradient
    steps: the discretized gradient flow of Zhang et al.). ``schedule="cosine"`` (the default) raises the step
    linearly over the first ``warmup`` share of the run and then anneals it to 0 along a cosine;
    ``"constant"`` keeps ``lr``.

    Why these defaults: the output of ``L`` layers is a polynomial of degree ``2L`` in the weights and of high
    degree in the prompt statistics, so the loss of deep models is noisy from batch to batch and has plateaus.
    At a small constant step (``lr=2e-3``) a few hundred Adam steps leave a 2-layer model worse than one layer.
    A large peak step (``1e-2``) escapes the small-initialization saddle; a long warm-up (30% of the run) and a
    shorter second-moment memory (``β₂ = 0.99``) keep early steps from throwing the model into a plateau
    where its second layer stays unused (with a 5% warm-up and ``β₂ = 0.999`` about one run in ten ended
    there, worse than two GD steps); annealing to 0 lets the weights settle instead of jittering at the level
    of the gradient noise. Prompts come from ``generator``, so a seeded generator gives a reproducible run.
    """
    if not isinstance(model, LinearTransformer):
        raise TypeError(f"model must be a LinearTransformer, got {type(model).__name__}")
    steps, batch, n_ctx = _positive_int(steps, "steps"), _positive_int(batch, "batch"), _positive_int(n_ctx, "n_ctx")
    sigma_max = _non_negative(sigma_max, "sigma_max")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < float("inf"):
        raise ValueError(f"lr must be a positive float, got {lr!r}")
    check_generator(generator)
    if optimizer == "adam":
        if not (isinstance(betas, tuple) and len(betas) == 2 and all(0 <= b < 1 for b in betas)):
            raise ValueError(f"betas must be a pair of floats in [0, 1), got {betas!r}")
        opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=betas)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr)
    else:
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    if target not in ("clean", "noisy"):
        raise ValueError(f"target must be 'clean' or 'noisy', got {target!r}")
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, (int, float)) or not 0 <= warmup < 1:
        raise ValueError(f"warmup must be a share of the steps in [0, 1), got {warmup!r}")
    scheduler = None
    if schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: warmup_cosine(step, steps=steps, warmup=warmup))
    device = model.P.device

    def loss_fn(m: nn.Module, _batch: object) -> torch.Tensor:
        data = noisy_prompts(batch, d=model.d, n_ctx=n_ctx, sigma_max=sigma_max, cov=cov, generator=generator)
        p = data.prompts.to(device)
        label = data.clean.to(device) if target == "clean" else p.y_query
        return ((m(p) - label) ** 2).mean()

    return fit(model, loss_fn, None, optimizer=opt, steps=steps, scheduler=scheduler, metrics=metrics,
               eval_every=eval_every, stop_when=stop_when, progress=progress, desc=desc)


# --- baselines --------------------------------------------------------------------------------------


def _design(prompts: Prompts) -> tuple[torch.Tensor, torch.Tensor]:
    p = check_prompts(prompts)
    return p.x_ctx.double(), p.y_ctx.double()


def gd_predict(prompts: Prompts, *, steps: int, eta: float) -> torch.Tensor:
    """The query prediction after ``steps`` steps of gradient descent from ``w = 0`` with step ``eta`` on the
    in-context loss ``(1/2n) Σ (y_i - wᵀx_i)²`` (``steps=1`` is the one-step GD of von Oswald et al.)."""
    steps = _positive_int(steps, "steps")
    eta = _non_negative(eta, "eta")
    x, y = _design(prompts)
    n = x.shape[1]
    w = torch.zeros(x.shape[0], x.shape[2], dtype=x.dtype, device=x.device)
    for _ in range(steps):
        residual = y - torch.einsum("nkd,nd->nk", x, w)
        w = w + eta * torch.einsum("nkd,nk->nd", x, residual) / n
    return (prompts.x_query.double() * w).sum(-1).to(prompts.y_ctx.dtype)


def noisy_ridge_predict(prompts: Prompts, *, lam: float | torch.Tensor) -> torch.Tensor:
    """The query prediction of ridge regression ``argmin Σ (y_i - wᵀx_i)² + λ ||w||²`` (not divided by n: with
    ``w ~ N(0, I)`` and noise ``σ``, ``λ = σ²`` is the posterior mean). ``lam``: one float or one per prompt."""
    x, y = _design(prompts)
    n, _, d = x.shape
    lam_t = torch.as_tensor(lam, dtype=x.dtype, device=x.device)
    if lam_t.ndim == 0:
        lam_t = lam_t.expand(n)
    if lam_t.shape != (n,) or not torch.isfinite(lam_t).all() or (lam_t < 0).any():
        raise ValueError(f"lam must be a float >= 0 or a tensor of {n} finite values >= 0, "
                         f"got shape {tuple(lam_t.shape)}")
    gram = x.transpose(1, 2) @ x + lam_t[:, None, None] * torch.eye(d, dtype=x.dtype, device=x.device)
    w = torch.linalg.solve(gram, torch.einsum("nkd,nk->nd", x, y))
    return (prompts.x_query.double() * w).sum(-1).to(prompts.y_ctx.dtype)


def oracle_ridge_predict(data: NoisyPrompts) -> torch.Tensor:
    """Ridge with each prompt's true noise ``λ = σ_τ²``: the Bayes-optimal prediction for ``w ~ N(0, I)``."""
    if not isinstance(data, NoisyPrompts):
        raise TypeError(f"data must be NoisyPrompts (from noisy_prompts), got {type(data).__name__}")
    return noisy_ridge_predict(data.prompts, lam=data.sigma.double() ** 2)


def estimated_noise(prompts: Prompts) -> torch.Tensor:
    """Per-prompt noise variance ``σ̂² = ||y - X ŵ_LS||² / (n - d)`` from the least-squares residual (n > d)."""
    x, y = _design(prompts)
    n, d = x.shape[1], x.shape[2]
    if n <= d:
        raise ValueError(f"estimating the noise needs more context points than dimensions, got n_ctx={n}, d={d}")
    w = torch.linalg.lstsq(x, y.unsqueeze(-1)).solution.squeeze(-1)
    residual = y - torch.einsum("nkd,nd->nk", x, w)
    return (residual**2).sum(-1) / (n - d)


def adaptive_ridge_predict(prompts: Prompts) -> torch.Tensor:
    """Noise-adaptive ridge: ``λ = σ̂²`` from :func:`estimated_noise` (no oracle knowledge of ``σ``)."""
    return noisy_ridge_predict(prompts, lam=estimated_noise(prompts))


class Tuned(NamedTuple):
    """The best value of a grid and the mean squared error of every grid value."""

    value: float
    grid: list[float]
    errors: list[float]


def _tune(predict: Callable[[float], torch.Tensor], target: torch.Tensor, grid: Sequence[float]) -> Tuned:
    grid = [float(g) for g in grid]
    if not grid:
        raise ValueError("the grid to tune over is empty")
    errors = [float(((predict(g).double() - target.double()) ** 2).mean()) for g in grid]
    finite = [(e, g) for e, g in zip(errors, grid, strict=True) if e == e and e < float("inf")]
    if not finite:
        raise ValueError("every grid value gave a non-finite error")
    return Tuned(min(finite)[1], grid, errors)


def tune_gd_step(data: NoisyPrompts, *, steps: int, etas: Sequence[float] | None = None) -> Tuned:
    """The step ``eta`` for ``steps`` GD steps with the least error against the clean query labels."""
    etas = etas if etas is not None else torch.linspace(0.05, 1.5, 59).tolist()
    return _tune(lambda eta: gd_predict(data.prompts, steps=steps, eta=eta), data.clean, etas)


def tune_ridge(data: NoisyPrompts, *, lams: Sequence[float] | None = None) -> Tuned:
    """The one ``λ`` (shared by all prompts) with the least error against the clean query labels."""
    lams = lams if lams is not None else torch.logspace(-3, 2, 51).tolist()
    return _tune(lambda lam: noisy_ridge_predict(data.prompts, lam=lam), data.clean, lams)


__all__ = [
    "LinearTransformer", "NoisyPrompts", "Tuned", "adaptive_ridge_predict", "estimated_noise", "gd_predict",
    "noisy_prompts", "noisy_ridge_predict", "oracle_ridge_predict", "train_linear_transformer", "tune_gd_step",
    "tune_ridge", "warmup_cosine",
]
