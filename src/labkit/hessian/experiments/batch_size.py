"""Small- vs large-batch minima seen through 1D loss curves (Li, Xu, Taylor, Studer and Goldstein, *Visualizing the
Loss Landscape of Neural Nets*, NeurIPS 2018, arXiv:1712.09913, Sec. 5 "The sharp vs flat dilemma", Fig. 2-3).

The paper trains the same network with SGD at batch 128 and 8192 and compares the minima: along filter-normalized
random directions the small-batch curves are wider (Fig. 3), while un-normalized plots mostly reflect the scale of
the weights, which batch size and weight decay change (Fig. 2). :func:`batch_size_minima` trains copies of one
initialisation at several batch sizes to the same training loss (through :func:`labkit.training.fit`);
:func:`loss_rise` measures the mean loss rise at a fixed distance along several random directions.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from labkit import checks
from labkit.autograd import check_generator, check_module, resolve_params
from labkit.hessian.experiments.landscapes import DIRECTIONS
from labkit.hessian.landscape import loss_surface_1d
from labkit.training import cross_entropy, fit


@dataclass(frozen=True)
class BatchMinimum:
    """A network trained at ``batch_size`` (None: full batch) for ``steps`` SGD steps (``epochs`` passes over the
    data), ending at full training loss ``train_loss``; ``reached`` says whether it went below the target."""

    batch_size: int | None
    model: nn.Module
    steps: int
    epochs: float
    train_loss: float
    reached: bool
    weight_norm: float


@dataclass(frozen=True)
class LossRise:
    """``rises[k, j]``: loss at ``theta + alphas[j] * d_k`` minus the loss at ``theta`` for direction ``k``;
    ``mean`` is their average (the flatness summary: a smaller rise is a wider, flatter curve)."""

    alphas: torch.Tensor
    rises: torch.Tensor
    mean: float


def weight_norm(model: nn.Module) -> float:
    """Euclidean norm of the weights with at least two dimensions (the filters; biases left out, as in the
    "ignore biasbn" directions)."""
    check_module(model, "model")
    weights = [p.detach().reshape(-1) for p in model.parameters() if p.dim() > 1]
    if not weights:
        raise ValueError("model has no weight with at least two dimensions")
    return float(torch.cat(weights).double().norm())


def batch_size_minima(
    model: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor],
    *,
    batch_sizes: Sequence[int | None],
    lr: float,
    target_loss: float,
    max_epochs: int,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    batch_seed: int = 0,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
) -> dict[int | None, BatchMinimum]:
    """Li et al. (2018), Sec. 5: train a copy of ``model`` (the same initialisation) with SGD (``lr``, ``momentum``,
    ``weight_decay``) at each batch size (None: the full training set) until the full training loss is below
    ``target_loss``, checked every half epoch (every 5 steps at full batch), or ``max_epochs`` passes over the
    data; mini-batches are seeded by ``batch_seed``. ``model`` itself is not trained."""
    check_module(model, "model")
    if not batch_sizes:
        raise ValueError("batch_sizes must hold at least one batch size")
    for i, b in enumerate(batch_sizes):
        if b is not None:
            checks.positive_int(b, f"batch_sizes[{i}]")
    checks.number(lr, "lr", low=0, low_open=True)
    checks.number(target_loss, "target_loss", low=0, low_open=True)
    checks.positive_int(max_epochs, "max_epochs")
    checks.number(momentum, "momentum", low=0, high=1, high_open=True)
    checks.number(weight_decay, "weight_decay", low=0)
    if isinstance(batch_seed, bool) or not isinstance(batch_seed, int) or batch_seed < 0:
        raise ValueError(f"batch_seed must be a non-negative int, got {batch_seed!r}")
    x, y = data
    n = len(x)

    def full_loss(net: nn.Module) -> float:
        with torch.no_grad():
            return float(criterion(net(x), y))

    out: dict[int | None, BatchMinimum] = {}
    for b in batch_sizes:
        net = copy.deepcopy(model)
        per_epoch = 1 if b is None or b >= n else -(-n // b)
        every = 5 if per_epoch == 1 else max(1, per_epoch // 2)
        history = fit(net, cross_entropy, (x, y),
                      optimizer=torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay),
                      steps=max_epochs * per_epoch, batch_size=b, seed=batch_seed % 2**32,
                      metrics={"train loss": full_loss}, eval_every=every,
                      stop_when=lambda h: h.rows[-1]["train loss"] < target_loss,
                      desc=f"batch {b if b is not None else 'full'}")
        final = full_loss(net)
        out[b] = BatchMinimum(batch_size=b, model=net, steps=len(history.loss), epochs=len(history.loss) / per_epoch,
                              train_loss=final, reached=final < target_loss, weight_norm=weight_norm(net))
    return out


def loss_rise(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    data: tuple[torch.Tensor, torch.Tensor],
    *,
    distance: float,
    directions: int,
    kind: str = "filter-normalized",
    generator: torch.Generator | None = None,
) -> LossRise:
    """Li et al. (2018), Fig. 3 read as a number: the loss rise ``L(theta + alpha d) - L(theta)`` at
    ``alpha = -distance`` and ``+distance`` along ``directions`` random directions of ``kind`` ("filter-normalized"
    or "raw Gaussian", drawn in turn from ``generator``), and its mean. The model is not changed."""
    if kind not in DIRECTIONS:
        raise ValueError(f"kind must be one of {list(DIRECTIONS)}, got {kind!r}")
    checks.number(distance, "distance", low=0, low_open=True)
    checks.positive_int(directions, "directions")
    generator = check_generator(generator)
    resolve_params(model, None)
    alphas = torch.tensor([-float(distance), 0.0, float(distance)], dtype=torch.float64)
    rows = []
    for _ in range(directions):
        d = DIRECTIONS[kind](model, generator=generator)
        losses = loss_surface_1d(model, loss_fn, data, d, alphas=alphas).losses
        rows.append(torch.stack([losses[0] - losses[1], losses[2] - losses[1]]))
    rises = torch.stack(rows)
    return LossRise(alphas=alphas[[0, 2]], rises=rises, mean=float(rises.mean()))


__all__ = ["BatchMinimum", "LossRise", "batch_size_minima", "loss_rise", "weight_norm"]
