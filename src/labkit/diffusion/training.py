"""Training tiny conditional denoisers (with label dropout) through :func:`labkit.training.fit`."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from labkit import checks
from labkit.autograd import check_module
from labkit.diffusion._checks import samples
from labkit.training import History, fit


def _check_data(model: nn.Module, x: torch.Tensor, labels: torch.Tensor | None, *, name: str = "x",
                min_n: int = 2) -> None:
    dim = getattr(model, "dim", None)
    samples(x, name, min_n=min_n, model=model, dim=dim if isinstance(dim, int) and not isinstance(dim, bool) else None)
    if labels is None:
        return
    checks.tensor(labels, "labels")
    if labels.shape != (x.shape[0],) or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor of shape ({x.shape[0]},), got {labels.dtype} "
                         f"{tuple(labels.shape)}")
    null = getattr(model, "num_classes", None)
    if not isinstance(null, int) or isinstance(null, bool) or null < 1:
        raise TypeError("a conditional loss needs a model with a num_classes attribute >= 1 (its null class)")
    checks.class_indices(labels, null, "labels")


def _check_options(p_mean: float, p_std: float, label_dropout: float) -> None:
    checks.number(p_mean, "p_mean")
    checks.number(p_std, "p_std", low=0)
    checks.number(label_dropout, "label_dropout", low=0, high=1, high_open=True)


def sample_training_sigmas(
    n: int, *, p_mean: float, p_std: float, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """EDM's log-normal training noise levels, ``log sigma ~ N(p_mean, p_std^2)`` (global RNG)."""
    checks.integer(n, "n", low=0)
    p_mean, p_std = checks.number(p_mean, "p_mean"), checks.number(p_std, "p_std", low=0)
    sigma = (p_mean + p_std * torch.randn(n, device=device, dtype=dtype)).exp()
    if not bool(torch.isfinite(sigma).all()) or bool((sigma == 0).any()):
        raise ValueError(f"p_mean={p_mean} and p_std={p_std} draw noise levels exp(p_mean + p_std z) that overflow or "
                         f"underflow {dtype}: choose smaller values")
    return sigma


def denoising_loss(
    model: nn.Module,
    x0: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    label_dropout: float = 0.1,
) -> torch.Tensor:
    """The EDM denoising loss ``lambda(sigma) |D(x0 + sigma eps, sigma, y) - x0|^2`` with weight
    ``lambda = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2`` (Karras et al., 2022, eq. 8); a share
    ``label_dropout`` of the labels is replaced by the null class (Ho & Salimans, 2022). A loss for
    training: it runs ``model`` in its current mode and draws from torch's global generator."""
    check_module(model)
    _check_data(model, x0, labels, name="x0", min_n=1)
    _check_options(p_mean, p_std, label_dropout)
    n = x0.shape[0]
    sigma = sample_training_sigmas(n, p_mean=p_mean, p_std=p_std, device=x0.device, dtype=x0.dtype)
    noisy = x0 + sigma.reshape(-1, *([1] * (x0.ndim - 1))) * torch.randn_like(x0)
    lab = None
    if labels is not None:
        null = model.num_classes
        drop = torch.rand(n, device=x0.device) < label_dropout
        lab = torch.where(drop, torch.full_like(labels, null), labels)
    sd = float(getattr(model, "sigma_data", 1.0))
    weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
    err = (model(noisy, sigma, lab) - x0).flatten(1).pow(2).mean(dim=1)
    return (weight * err).mean()


def train_denoiser(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    steps: int = 2000,
    batch_size: int = 512,
    lr: float = 2e-3,
    label_dropout: float = 0.1,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    metrics: Mapping | None = None,
    eval_every: int | None = None,
    seed: int = 0,
    progress: bool | None = None,
) -> History:
    """Train a (conditional) denoiser on data ``x`` (with ``labels``) with :func:`denoising_loss`,
    Adam and a cosine learning-rate decay; returns the :class:`labkit.training.History`."""
    check_module(model)
    _check_data(model, x, labels)
    _check_options(p_mean, p_std, label_dropout)
    lr = checks.number(lr, "lr", low=0, low_open=True)
    checks.positive_int(steps, "steps")
    if labels is not None and label_dropout == 0.0:
        raise ValueError("label_dropout must be > 0 for a conditional model to learn the unconditional branch")
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * 0.05)
    data = (x,) if labels is None else (x, labels)

    def loss_fn(m: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return denoising_loss(
            m,
            batch[0],
            batch[1] if len(batch) > 1 else None,
            p_mean=p_mean,
            p_std=p_std,
            label_dropout=label_dropout,
        )

    history = fit(
        model,
        loss_fn,
        data,
        optimizer=opt,
        steps=steps,
        batch_size=batch_size,
        scheduler=sched,
        metrics=metrics,
        eval_every=eval_every,
        seed=seed,
        progress=progress,
        desc="denoiser",
    )
    model.eval()
    return history
