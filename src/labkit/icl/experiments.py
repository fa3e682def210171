"""The experiment of the icl/01 notebook: train one layer of linear self-attention on regression prompts and
compare it with the best one-step GD, ridge and least squares on fresh prompts.

Mahankali, Hashimoto, Ma, *One Step of Gradient Descent is Provably the Optimal In-Context Learner with One
Layer of Linear Self-Attention*, 2023, arXiv 2307.03576.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from labkit.autograd import check_generator
from labkit.history import History
from labkit.icl.attention import GDMatch, LinearSelfAttention, gd_equivalence, train_icl
from labkit.icl.predictors import (
    fit_preconditioner,
    fit_step_size,
    mse,
    ols_predict,
    one_step_gd_predict,
    optimal_preconditioner,
    optimal_step_size,
    ridge_predict,
)
from labkit.icl.prompts import Prompts, regression_prompts


class OneStepGD(NamedTuple):
    """A trained linear attention read as one GD step.

    ``optimum``: the best preconditioner ``Γ*`` (closed form for the linear task, fitted on ``n_fit`` prompts for
    ``tanh``); ``eta_star`` the best plain step; ``precond_error`` ``‖Γ − Γ*‖_F / ‖Γ*‖_F``; ``cosine_to_optimum``
    the cosine between the attention's predictions and those of one GD step with ``Γ*`` on the test prompts;
    ``errors`` the test MSE of the attention and of the reference predictors."""

    model: LinearSelfAttention
    history: History
    test: Prompts
    match: GDMatch
    optimum: torch.Tensor
    eta_star: float
    precond_error: float
    cosine_to_optimum: float
    errors: dict[str, float]


def one_step_gd_experiment(*, d: int, n_ctx: int, cov: torch.Tensor | None = None, w_cov: torch.Tensor | None = None,
                           noise: float = 0.0, task: str = "linear", steps: int, batch: int, lr: float = 0.02,
                           merged: bool = False, init_scale: float = 0.1, n_test: int = 4096, n_fit: int = 50_000,
                           init_generator: torch.Generator | None = None, generator: torch.Generator | None = None,
                           progress: bool | None = None, stop_when: Callable[[History], bool] | None = None,
                           desc: str = "icl training") -> OneStepGD:
    """Train a :class:`LinearSelfAttention` (weights from ``init_generator``) with :func:`train_icl` (Adam, cosine
    schedule, prompts from ``generator``), then compare it on ``n_test`` fresh prompts with one GD step at the
    optimal preconditioner and step size, ridge (``λ = noise²``) and least squares."""
    check_generator(init_generator, "init_generator")
    model = LinearSelfAttention(d, merged=merged, init_scale=init_scale, generator=init_generator)
    history = train_icl(model, steps=steps, batch=batch, d=d, n_ctx=n_ctx, cov=cov, w_cov=w_cov, noise=noise,
                        task=task, lr=lr, schedule="cosine", generator=generator, progress=progress,
                        stop_when=stop_when, desc=desc)
    test = regression_prompts(n_test, d=d, n_ctx=n_ctx, cov=cov, w_cov=w_cov, noise=noise, task=task,
                              generator=generator)
    if task == "linear":
        optimum = optimal_preconditioner(d, n_ctx=n_ctx, cov=cov, w_cov=w_cov, noise=noise)
        eta_star = optimal_step_size(d, n_ctx=n_ctx, cov=cov, w_cov=w_cov, noise=noise)
    else:
        big = regression_prompts(n_fit, d=d, n_ctx=n_ctx, cov=cov, w_cov=w_cov, noise=noise, task=task,
                                 generator=generator)
        optimum, eta_star = fit_preconditioner(big), fit_step_size(big)
    match = gd_equivalence(model, test)
    with torch.no_grad():
        f = model(test.to(match.precond.device)).double().cpu()
    g = one_step_gd_predict(test, precond=optimum).double()
    errors = {
        "trained attention": mse(f.float(), test),
        "one GD step, best Γ": mse(g.float(), test),
        "one GD step, best η": mse(one_step_gd_predict(test, eta=eta_star), test),
        f"ridge λ={noise**2:g}": mse(ridge_predict(test, lam=noise**2), test),
        "least squares": mse(ols_predict(test), test),
    }
    return OneStepGD(
        model, history, test, match, optimum, eta_star,
        float((match.precond - optimum).norm() / optimum.norm()),
        float((f @ g) / (f.norm() * g.norm()).clamp_min(1e-300)), errors)
