"""One layer of linear self-attention (LSA) for in-context regression, its training and its reading as GD.

The tokens are ``z_i = (x_i, y_i)`` for the context and ``z_q = (x_query, 0)`` for the query; the layer's
output at the query token is ``W_PV (1/n) Σ_i z_i (z_iᵀ W_KQ z_q)`` and its last entry is the prediction
(Mahankali, Hashimoto, Ma, *One Step of Gradient Descent is Provably the Optimal In-Context Learner with One
Layer of Linear Self-Attention*, 2023, arXiv 2307.03576, Sec. 2; von Oswald et al. 2023 give the weights that
make it one GD step). ``merged=True`` trains ``W_KQ`` and ``W_PV`` directly (the form of the papers'
analysis); ``merged=False`` trains keys, queries, values and a projection, ``W_KQ = W_Kᵀ W_Q``,
``W_PV = W_P W_V``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import torch
from torch import nn

from labkit.autograd import check_generator, preserve_model, randn
from labkit.history import History
from labkit.icl.predictors import one_step_gd_predict
from labkit.icl.prompts import Prompts, check_cov, check_prompts, regression_prompts
from labkit.training import fit


class LinearSelfAttention(nn.Module):
    """One linear self-attention layer predicting the query's label from a regression prompt.

    ``forward(prompts)`` or ``forward(x_ctx, y_ctx, x_query)`` returns predictions of shape ``(n,)``.
    Weights are drawn ``N(0, init_scale²)`` from ``generator`` (the global torch RNG when None).
    """

    def __init__(self, d: int, *, merged: bool = False, init_scale: float = 0.1,
                 generator: torch.Generator | None = None):
        super().__init__()
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ValueError(f"d must be a positive int, got {d!r}")
        if not isinstance(merged, bool):
            raise TypeError(f"merged must be a bool, got {type(merged).__name__}")
        if isinstance(init_scale, bool) or not isinstance(init_scale, (int, float)) or not 0 <= init_scale < math.inf:
            raise ValueError(f"init_scale must be a finite float >= 0, got {init_scale!r}")
        check_generator(generator)
        self.d, self.merged = d, merged
        names = ("w_kq", "w_pv") if merged else ("w_k", "w_q", "w_v", "w_p")
        for name in names:
            value = randn((d + 1, d + 1), generator=generator) * float(init_scale)
            self.register_parameter(name, nn.Parameter(value))

    def extra_repr(self) -> str:
        return f"d={self.d}, merged={self.merged}"

    def merged_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W_KQ, W_PV)``, each ``(d + 1, d + 1)``: the products the prediction depends on."""
        if self.merged:
            return self.w_kq, self.w_pv
        return self.w_k.T @ self.w_q, self.w_p @ self.w_v

    def set_merged(self, w_kq: torch.Tensor, w_pv: torch.Tensor) -> None:
        """Set the weights so that ``merged_weights()`` equals ``(w_kq, w_pv)`` (the full form puts them in
        ``W_Q`` and ``W_V`` with ``W_K = W_P = I``)."""
        shape = (self.d + 1, self.d + 1)
        for name, t in (("w_kq", w_kq), ("w_pv", w_pv)):
            if not isinstance(t, torch.Tensor) or t.shape != shape:
                raise ValueError(f"{name} must be a tensor of shape {shape}")
        eye = torch.eye(self.d + 1)
        with torch.no_grad():
            if self.merged:
                self.w_kq.copy_(w_kq)
                self.w_pv.copy_(w_pv)
            else:
                self.w_k.copy_(eye)
                self.w_q.copy_(w_kq)
                self.w_p.copy_(eye)
                self.w_v.copy_(w_pv)

    def forward(self, prompts: Prompts | torch.Tensor, y_ctx: torch.Tensor | None = None,
                x_query: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(prompts, Prompts):
            if y_ctx is not None or x_query is not None:
                raise TypeError("pass either a Prompts or the tensors (x_ctx, y_ctx, x_query), not both")
            x_ctx, y_ctx, x_query = prompts.x_ctx, prompts.y_ctx, prompts.x_query
        else:
            x_ctx = prompts
            if not all(isinstance(t, torch.Tensor) for t in (x_ctx, y_ctx, x_query)):
                raise TypeError("forward takes a Prompts or three tensors x_ctx (n, n_ctx, d), y_ctx (n, n_ctx), "
                                "x_query (n, d)")
        if x_ctx.ndim != 3 or x_ctx.shape[-1] != self.d:
            raise ValueError(f"x_ctx must have shape (n, n_ctx, {self.d}), got {tuple(x_ctx.shape)}")
        n, n_ctx, _ = x_ctx.shape
        if y_ctx.shape != (n, n_ctx) or x_query.shape != (n, self.d):
            raise ValueError(f"y_ctx must have shape {(n, n_ctx)} and x_query {(n, self.d)}, got "
                             f"{tuple(y_ctx.shape)} and {tuple(x_query.shape)}")
        w_kq, w_pv = self.merged_weights()
        z = torch.cat([x_ctx, y_ctx.unsqueeze(-1)], dim=-1)               # (n, n_ctx, d+1)
        q = x_query @ w_kq[:, : self.d].T                                  # W_KQ z_q, z_q = (x_q, 0)
        scores = torch.einsum("nkc,nc->nk", z, q)                          # z_iᵀ W_KQ z_q
        pooled = torch.einsum("nk,nkc->nc", scores, z) / n_ctx             # (1/n) Σ z_i (z_iᵀ W_KQ z_q)
        return pooled @ w_pv[-1]                                           # last entry of W_PV · pooled


def gd_attention(d: int, *, precond: torch.Tensor | None = None, eta: float = 1.0, merged: bool = True
                 ) -> LinearSelfAttention:
    """The linear attention whose forward pass is one preconditioned GD step (von Oswald et al. 2023):
    ``W_KQ = [[Γᵀ, 0], [0, 0]]``, ``W_PV``'s last row ``(0, …, 0, 1)``, with ``Γ = precond`` or ``eta·I``."""
    gamma = eta * torch.eye(d) if precond is None else precond.detach().float().cpu()
    if gamma.shape != (d, d):
        raise ValueError(f"precond must have shape ({d}, {d}), got {tuple(gamma.shape)}")
    model = LinearSelfAttention(d, merged=merged, init_scale=0.0)
    w_kq = torch.zeros(d + 1, d + 1)
    w_kq[:d, :d] = gamma.T
    w_pv = torch.zeros(d + 1, d + 1)
    w_pv[-1, -1] = 1.0
    model.set_merged(w_kq, w_pv)
    return model


class GDMatch(NamedTuple):
    """How close a trained linear attention is to one preconditioned GD step.

    ``precond``: the implied ``Γ = W_PV[-1, -1] · W_KQ[:d, :d]ᵀ`` (the weights multiplying ``y_i x_iᵀ … x_q``);
    ``eta``: ``tr Γ / d`` (the best multiple of the identity); ``cosine`` and ``relative_error``: the model's
    predictions against ``one_step_gd_predict(prompts, precond=Γ)`` on the prompts given
    (``‖f − f_GD‖ / ‖f_GD‖``)."""

    precond: torch.Tensor
    eta: float
    cosine: float
    relative_error: float


def implied_preconditioner(model: LinearSelfAttention) -> torch.Tensor:
    """The ``(d, d)`` preconditioner ``Γ = W_PV[-1, -1] · W_KQ[:d, :d]ᵀ`` of the GD step that ``model``'s
    ``y``-linear term computes (the other terms vanish at the optimum, Mahankali et al. 2023, Theorem 1)."""
    if not isinstance(model, LinearSelfAttention):
        raise TypeError(f"model must be a labkit.icl.LinearSelfAttention, got {type(model).__name__}")
    with torch.no_grad():
        w_kq, w_pv = model.merged_weights()
        return (w_pv[-1, -1] * w_kq[: model.d, : model.d].T).detach().clone()


def gd_equivalence(model: LinearSelfAttention, prompts: Prompts) -> GDMatch:
    """Read the preconditioner implied by ``model`` and compare its predictions on ``prompts`` (fresh ones,
    not the training batches) with :func:`one_step_gd_predict` using that preconditioner."""
    gamma = implied_preconditioner(model)
    p = check_prompts(prompts)
    if p.d != model.d:
        raise ValueError(f"prompts have d={p.d} but model has d={model.d}")
    with preserve_model(model), torch.no_grad():
        model.eval()
        device = gamma.device
        p = p.to(device)
        f = model(p).double()
        g = one_step_gd_predict(p, precond=gamma).double()
    cosine = float((f @ g) / (f.norm() * g.norm()).clamp_min(1e-300))
    rel = float((f - g).norm() / g.norm().clamp_min(1e-300))
    return GDMatch(gamma.cpu(), float(torch.trace(gamma)) / model.d, cosine, rel)


OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cosine")


def train_icl(model: LinearSelfAttention, *, steps: int, batch: int, d: int, n_ctx: int,
              cov: torch.Tensor | None = None, noise: float = 0.0, task: str = "linear",
              w_cov: torch.Tensor | None = None, lr: float = 1e-2, optimizer: str = "adam",
              schedule: str = "constant", generator: torch.Generator | None = None,
              metrics: Mapping[str, Callable[[nn.Module], float]] | None = None,
              eval_every: int | Sequence[int] | None = None, progress: bool | None = None,
              stop_when: Callable[[History], bool] | None = None, desc: str = "icl training") -> History:
    """Train ``model`` in place on fresh prompts every step (``batch`` prompts of :func:`regression_prompts`
    with ``cov``, ``noise``, ``task``, ``w_cov``, drawn from ``generator``) to minimise the query's squared
    error ``mean (f(Z) − y_query)²``, through :func:`labkit.training.fit` with Adam or plain SGD at learning
    rate ``lr``, constant or (``schedule="cosine"``) annealed to 0 over the run (fresh prompts every step make
    the gradient noisy; annealing lets the weights settle at the minimum).

    ``model`` may be any module taking a :class:`Prompts` and returning ``(n,)`` predictions (deeper linear
    transformers too). Returns the :class:`History` (per-step loss, ``metrics`` at ``eval_every``)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module taking Prompts, got {type(model).__name__}")
    model_d = getattr(model, "d", d)
    if model_d != d:
        raise ValueError(f"d={d} does not match the model's d={model_d}")
    for name, value in (("steps", steps), ("batch", batch), ("n_ctx", n_ctx)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < math.inf:
        raise ValueError(f"lr must be a finite float > 0, got {lr!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    check_generator(generator)
    cov = check_cov(cov, d)
    w_cov = check_cov(w_cov, d, name="w_cov")
    # fail early on bad noise/task, before any training
    regression_prompts(1, d=d, n_ctx=1, noise=noise, task=task)
    params = list(model.parameters())
    if not params:
        raise ValueError("model has no parameters to train")
    device = params[0].device
    opt = (torch.optim.Adam(params, lr=lr) if optimizer == "adam" else torch.optim.SGD(params, lr=lr))

    def loss_fn(m: nn.Module, _batch: object) -> torch.Tensor:
        p = regression_prompts(batch, d=d, n_ctx=n_ctx, cov=cov, noise=noise, task=task, w_cov=w_cov,
                               generator=generator)
        p = p.to(device)
        return ((m(p) - p.y_query) ** 2).mean()

    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps) if schedule == "cosine" else None
    return fit(model, loss_fn, None, optimizer=opt, steps=steps, scheduler=scheduler, metrics=metrics,
               eval_every=eval_every, stop_when=stop_when, progress=progress, desc=desc)
