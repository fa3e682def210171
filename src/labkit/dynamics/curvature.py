"""Batch size and curvature: the top Hessian eigenvalue of mini-batch losses and the largest stable learning rate.

Granziol, Zohren and Roberts, *Learning Rates as a Function of Batch Size: A Random Matrix Theory Approach to
Neural Network Training* (arXiv 2006.09092): the batch Hessian is the full-data Hessian plus a noise matrix whose
size shrinks with the batch, so its extremal eigenvalues are larger than the full-data ones and fall towards them
as the batch grows (for an outlier, ``lambda_B ~ lambda_full + c / B``). Since gradient descent on a quadratic is
stable only for ``lr < 2 / lambda``, the largest stable SGD learning rate grows with the batch size, about linearly
while the ``c / B`` term dominates; for Adam the paper derives a square-root law.

* :func:`batch_top_eigenvalue`: the top eigenvalue of ``batches`` random mini-batch Hessians of size
  ``batch_size`` (Lanczos from :mod:`labkit.hessian`), next to the full-batch one (:class:`EigenStats`).
* :func:`inverse_batch_fit`: the least-squares fit ``lambda_B = a + c / B`` with its R^2.
* :func:`max_stable_lr`: the largest learning rate of a grid whose run does not diverge (criterion stated in
  :class:`StableLR`), and :func:`loglog_slope` for its scaling with the batch size.
* :func:`spiked_regression`, :func:`regression_mlp` and :func:`regression_train_fn`: the toy problem of the
  notebook ``dynamics/01_lr_vs_batch_size`` (inputs with a spiked covariance, so the Hessian has an outlier).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from labkit import checks
from labkit.autograd import as_pair, check_generator, check_module, preserve_model, randn, randperm
from labkit.hessian import HessianOperator, top_eigenvalues

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

__all__ = [
    "CurvatureSweep", "EigenStats", "InverseBatchFit", "StableLR", "StableLRSweep", "curvature_sweep",
    "stable_lr_sweep", "batch_top_eigenvalue", "inverse_batch_fit", "loglog_slope",
    "max_stable_lr", "RegressionBank", "regression_mlp", "regression_train_fn", "spiked_regression",
]


@dataclass(frozen=True)
class EigenStats:
    """Top Hessian eigenvalues of mini-batch losses.

    ``values`` (batches,): the top eigenvalue of each mini-batch Hessian; ``mean`` and ``std`` (unbiased, 0 for
    one batch) over them; ``full_batch``: the top eigenvalue of the Hessian of the mean loss over all of
    ``data``; ``batch_size``; ``converged``: whether every Lanczos run met its tolerance; ``matvecs`` spent;
    ``indices`` (batches, batch_size): the examples of each mini-batch.
    """

    mean: float
    std: float
    values: torch.Tensor
    full_batch: float
    batch_size: int
    converged: bool
    matvecs: int
    indices: torch.Tensor


def _top(model: nn.Module, loss_fn: LossFn, batch: tuple[torch.Tensor, torch.Tensor], *, tol: float,
         generator: torch.Generator | None, params: Sequence[nn.Parameter] | None) -> tuple[float, bool, int]:
    op = HessianOperator(model, loss_fn, batch, params=params)
    res = top_eigenvalues(op, 1, tol=tol, generator=generator)
    return float(res.eigenvalues[0]), bool(res.converged), int(res.matvecs)


def batch_top_eigenvalue(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    *,
    batch_size: int,
    batches: int,
    generator: torch.Generator | None = None,
    tol: float = 1e-4,
    params: Sequence[nn.Parameter] | None = None,
) -> EigenStats:
    """The top Hessian eigenvalue of ``batches`` mini-batch losses of ``batch_size`` examples, and of the full loss.

    ``loss_fn(outputs, targets)`` is the mean loss of a batch (as for :class:`labkit.hessian.HessianOperator`);
    ``data`` is ``(inputs, targets)``. Each mini-batch is drawn without replacement from ``data`` with
    ``generator`` (a CPU generator or one on the data's device; the Lanczos start vectors come from it too).
    The Hessians are taken in eval mode and the model is left as found. Granziol et al. (arXiv 2006.09092):
    the mini-batch values exceed the full-batch one and fall towards it as ``batch_size`` grows.
    """
    check_module(model)
    x, y = as_pair(data)
    n = len(x)
    batch_size = checks.positive_int(batch_size, "batch_size")
    batches = checks.positive_int(batches, "batches")
    if batch_size > n:
        raise ValueError(f"batch_size must be at most the number of examples in data ({n}), got {batch_size}")
    checks.number(tol, "tol", low=0, low_open=True)
    check_generator(generator)
    values, converged, matvecs, drawn = [], True, 0, []
    with preserve_model(model):
        for _ in range(batches):
            idx = randperm(n, generator=generator, device=x.device)[:batch_size]
            drawn.append(idx.cpu())
            lam, ok, mv = _top(model, loss_fn, (x[idx], y[idx]), tol=tol, generator=generator, params=params)
            values.append(lam)
            converged, matvecs = converged and ok, matvecs + mv
        full, ok, mv = _top(model, loss_fn, (x, y), tol=tol, generator=generator, params=params)
    t = torch.tensor(values, dtype=torch.float64)
    return EigenStats(mean=float(t.mean()), std=float(t.std()) if batches > 1 else 0.0, values=t, full_batch=full,
                      batch_size=batch_size, converged=converged and ok, matvecs=matvecs + mv,
                      indices=torch.stack(drawn))


@dataclass(frozen=True)
class InverseBatchFit:
    """Least-squares fit ``lambda_B = intercept + slope / B``; ``r2`` its coefficient of determination."""

    intercept: float
    slope: float
    r2: float

    def predict(self, batch_sizes: Sequence[float] | torch.Tensor) -> torch.Tensor:
        b = torch.as_tensor(batch_sizes, dtype=torch.float64)
        return self.intercept + self.slope / b


def _pairs(xs: Any, ys: Any, xname: str, yname: str, *, positive_y: bool = False) -> tuple[torch.Tensor, ...]:
    x = torch.as_tensor(xs, dtype=torch.float64).reshape(-1)
    y = torch.as_tensor(ys, dtype=torch.float64).reshape(-1)
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"{xname} and {yname} must have the same length, at least 2, got {len(x)} and {len(y)}")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ValueError(f"{xname} and {yname} must be finite")
    if (x <= 0).any():
        raise ValueError(f"{xname} must be positive")
    if positive_y and (y <= 0).any():
        raise ValueError(f"{yname} must be positive")
    return x, y


def inverse_batch_fit(batch_sizes: Sequence[float] | torch.Tensor,
                      values: Sequence[float] | torch.Tensor) -> InverseBatchFit:
    """Fit ``values ~ a + c / batch_sizes`` by least squares (Granziol et al., arXiv 2006.09092: the outlier of
    the batch Hessian is the full-data one plus a term proportional to ``1 / B``)."""
    b, v = _pairs(batch_sizes, values, "batch_sizes", "values")
    design = torch.stack([torch.ones_like(b), 1.0 / b], dim=1)
    coef = torch.linalg.lstsq(design, v.unsqueeze(1)).solution.reshape(-1)
    resid = v - design @ coef
    total = ((v - v.mean()) ** 2).sum()
    r2 = float(1.0 - (resid ** 2).sum() / total) if total > 0 else 1.0
    return InverseBatchFit(intercept=float(coef[0]), slope=float(coef[1]), r2=r2)


def loglog_slope(xs: Sequence[float] | torch.Tensor, ys: Sequence[float] | torch.Tensor) -> float:
    """The least-squares slope of ``log y`` against ``log x`` (1: linear scaling, 0.5: square-root scaling)."""
    x, y = _pairs(xs, ys, "xs", "ys", positive_y=True)
    lx, ly = x.log(), y.log()
    lx = lx - lx.mean()
    if float((lx ** 2).sum()) == 0:
        raise ValueError("xs must not all be equal")
    return float((lx * (ly - ly.mean())).sum() / (lx ** 2).sum())


@dataclass(frozen=True)
class StableLR:
    """The largest stable learning rate of a grid.

    ``lr``: the largest learning rate of ``lrs`` such that it and every smaller one in the grid did not diverge;
    ``lrs`` (ascending) and ``diverged`` (one flag each) the scan; ``final`` the last loss of each run relative to
    its first; ``batch_size``; ``criterion`` in words.
    """

    lr: float
    lrs: tuple[float, ...]
    diverged: tuple[bool, ...]
    final: tuple[float, ...]
    batch_size: int
    criterion: str


def _diverged(losses: torch.Tensor, threshold: float) -> tuple[bool, float]:
    if len(losses) < 2:
        raise ValueError(f"train_fn must return at least two losses per run (before and after training), "
                         f"got {len(losses)}")
    finite = bool(torch.isfinite(losses).all())
    bad = not finite or bool(losses[-1] > threshold * losses[0])
    return bad, float(losses[-1] / losses[0]) if finite and losses[0] > 0 else math.inf


def max_stable_lr(
    train_fn: Callable[..., Any],
    lrs: Sequence[float],
    *,
    batch_size: int,
    threshold: float = 1.0,
    vectorized: bool = False,
) -> StableLR:
    """The largest learning rate in ``lrs`` whose run does not diverge.

    ``train_fn(lr, batch_size)`` trains a fresh model and returns its loss curve (at least the loss before
    training and after it; the full-data training loss is the clearest). With ``vectorized=True``,
    ``train_fn(lrs, batch_size)`` trains one model per learning rate (ascending) at once and returns a
    ``(len(lrs), T)`` tensor of curves (:func:`regression_train_fn`). A run *diverges* when a loss is not finite
    or its last loss exceeds ``threshold`` times its first. The result is the learning rate just below the
    smallest divergent one (stability is taken to be contiguous from the smallest learning rate; a sequential scan
    stops at the first divergent run). A grid whose smallest learning rate already diverges is a ``ValueError``;
    a grid with no divergent run returns its largest learning rate (``StableLR.diverged`` says so: extend it).
    """
    if not callable(train_fn):
        raise TypeError("train_fn must be callable as train_fn(lr, batch_size) -> losses, "
                        f"got {type(train_fn).__name__}")
    if isinstance(lrs, torch.Tensor):
        lrs = lrs.tolist()
    if not isinstance(lrs, Sequence) or len(lrs) == 0:
        raise ValueError("lrs must be a non-empty sequence of positive learning rates")
    grid = sorted(checks.number(lr, "lrs", low=0, low_open=True) for lr in lrs)
    batch_size = checks.positive_int(batch_size, "batch_size")
    threshold = checks.number(threshold, "threshold", low=0, low_open=True)
    if not isinstance(vectorized, bool):
        raise TypeError(f"vectorized must be a bool, got {type(vectorized).__name__}")
    criterion = (f"diverged: a non-finite loss or a last loss above {threshold:g} x the first; the stable lr is the "
                 f"largest of the grid below the smallest divergent one")
    diverged: list[bool] = []
    final: list[float] = []
    if vectorized:
        curves = torch.as_tensor(train_fn(tuple(grid), batch_size), dtype=torch.float64)
        if curves.ndim != 2 or curves.shape[0] != len(grid):
            raise ValueError(f"a vectorized train_fn must return a ({len(grid)}, T) tensor, got {tuple(curves.shape)}")
        for row in curves:
            bad, ratio = _diverged(row, threshold)
            diverged.append(bad)
            final.append(ratio)
    else:
        for lr in grid:
            bad, ratio = _diverged(torch.as_tensor(train_fn(lr, batch_size), dtype=torch.float64).reshape(-1),
                                   threshold)
            diverged.append(bad)
            final.append(ratio)
            if bad:
                break
    if diverged[0]:
        raise ValueError(f"the smallest learning rate {grid[0]:g} already diverges at batch size {batch_size}: "
                         f"extend lrs downwards")
    first_bad = diverged.index(True) if True in diverged else len(diverged)
    return StableLR(lr=grid[first_bad - 1], lrs=tuple(grid[:len(diverged)]), diverged=tuple(diverged),
                    final=tuple(final), batch_size=batch_size, criterion=criterion)


# --- the notebook's toy problem ---------------------------------------------------------------------------------


def spiked_regression(n: int, d: int, *, spike: float = 10.0, noise: float = 0.1,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Regression data ``(x, y)``: ``x`` (n, d) Gaussian with covariance ``I + (spike - 1) e1 e1^T`` (one large
    direction, so the loss Hessian has an outlier, the spiked model of Granziol et al.) and ``y`` (n, 1) from a
    random two-layer tanh teacher plus ``noise`` times a standard normal."""
    n, d = checks.positive_int(n, "n"), checks.positive_int(d, "d")
    spike = checks.number(spike, "spike", low=0, low_open=True)
    noise = checks.number(noise, "noise", low=0)
    check_generator(generator)
    x = randn((n, d), generator=generator)
    x[:, 0] *= math.sqrt(spike)
    w1 = randn((d, 8), generator=generator) / math.sqrt(d)
    w2 = randn((8, 1), generator=generator) / math.sqrt(8)
    y = torch.tanh(x @ w1) @ w2 + noise * randn((n, 1), generator=generator)
    return x, y


def regression_mlp(d: int, *, width: int = 32, generator: torch.Generator | None = None) -> nn.Sequential:
    """A ``d -> width -> 1`` tanh MLP with PyTorch's default initialisation drawn from ``generator``."""
    d, width = checks.positive_int(d, "d"), checks.positive_int(width, "width")
    check_generator(generator)
    model = nn.Sequential(nn.Linear(d, width), nn.Tanh(), nn.Linear(width, 1))
    with torch.no_grad():
        for layer in (model[0], model[2]):
            bound = 1.0 / math.sqrt(layer.in_features)
            layer.weight.copy_((torch.rand(layer.weight.shape, generator=generator) * 2 - 1) * bound)
            layer.bias.copy_((torch.rand(layer.bias.shape, generator=generator) * 2 - 1) * bound)
    return model


class RegressionBank(nn.Module):
    """``len(scales)`` copies of a ``d -> width -> 1`` tanh MLP (``regression_mlp``'s shape) evaluated together:
    ``bank(x)`` is ``(copies, N, 1)``. Copy ``i``'s weights are ``scales[i] * phi_i``, with ``phi`` the trained
    (stacked) parameters, built so that every copy starts at ``model``'s weights.

    The scales give each copy its own learning rate under one optimizer with ``lr=1``: plain SGD on ``phi`` moves
    ``theta_i`` by ``scales[i]**2`` times its gradient (so ``scales = sqrt(lrs)``), and Adam, which is invariant to
    the gradient's scale, by ``scales[i]`` times its Adam direction (so ``scales = lrs``; exact up to Adam's
    ``eps``, which the scale divides: keep it tiny).
    """

    def __init__(self, model: nn.Sequential, scales: Sequence[float]):
        super().__init__()
        first, last = model[0], model[2]
        s = torch.as_tensor(list(scales), dtype=first.weight.dtype, device=first.weight.device)
        self.register_buffer("scales", s)
        k = len(s)

        def stacked(t: torch.Tensor) -> nn.Parameter:
            t = t.detach().unsqueeze(0).expand(k, *t.shape)
            return nn.Parameter(t / s.reshape(-1, *([1] * (t.ndim - 1))))

        self.w1, self.b1 = stacked(first.weight.T), stacked(first.bias.unsqueeze(0))
        self.w2, self.b2 = stacked(last.weight.T), stacked(last.bias.unsqueeze(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scales.reshape(-1, 1, 1)
        return torch.tanh(x @ (s * self.w1) + s * self.b1) @ (s * self.w2) + s * self.b2


def _is_regression_mlp(model: nn.Module) -> bool:
    return (isinstance(model, nn.Sequential) and len(model) == 3 and isinstance(model[0], nn.Linear)
            and isinstance(model[1], nn.Tanh) and isinstance(model[2], nn.Linear) and model[2].out_features == 1)


def regression_train_fn(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], *, optimizer: str = "sgd",
                        steps: int = 100, seed: int = 0,
                        blowup: float = 100.0) -> Callable[[Sequence[float], int], torch.Tensor]:
    """A vectorised ``train_fn(lrs, batch_size)`` for :func:`max_stable_lr`: trains one copy of ``model`` (a
    :func:`regression_mlp`; the caller's model is never touched) per learning rate, all on the same mini-batches
    (:func:`labkit.training.fit`, ``steps`` steps in the order of ``seed``), on the mean squared error with
    ``optimizer`` ("sgd" or "adam"), and returns a ``(len(lrs), 2)`` tensor: each copy's full-data loss before and
    after training (``inf`` for a copy whose mini-batch loss stopped being finite or exceeded ``blowup`` times the
    starting loss; that copy is then frozen so it cannot disturb the others)."""
    from labkit.training import fit

    check_module(model)
    if not _is_regression_mlp(model):
        raise TypeError("model must be a regression_mlp: nn.Sequential(nn.Linear(d, width), nn.Tanh(), "
                        "nn.Linear(width, 1))")
    x, y = as_pair(data)
    checks.choice(optimizer, "optimizer", ("sgd", "adam"))
    steps = checks.positive_int(steps, "steps")
    blowup = checks.number(blowup, "blowup", low=1)

    def train_fn(lrs: Sequence[float], batch_size: int) -> torch.Tensor:
        lr = torch.as_tensor(list(lrs), dtype=torch.float64)
        bank = RegressionBank(model, (lr.sqrt() if optimizer == "sgd" else lr).tolist())
        with torch.no_grad():
            start = ((bank(x) - y) ** 2).mean(dim=(1, 2))
        alive = torch.ones(len(lrs), dtype=torch.bool, device=x.device)

        def loss_fn(net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            losses = ((net(batch[0]) - batch[1]) ** 2).mean(dim=(1, 2))
            with torch.no_grad():
                alive.mul_(torch.isfinite(losses) & (losses <= blowup * start))
            # each copy's loss depends on its own parameters only: the sum trains every copy on its own loss
            return torch.where(alive, losses, torch.zeros_like(losses)).sum()

        opt = (torch.optim.SGD(bank.parameters(), lr=1.0) if optimizer == "sgd"
               else torch.optim.Adam(bank.parameters(), lr=1.0, eps=1e-16))
        fit(bank, loss_fn, (x, y), optimizer=opt, steps=steps, batch_size=batch_size, eval_every=steps,
            seed=seed, progress=False, on_nonfinite="stop")
        with torch.no_grad():
            end = ((bank(x) - y) ** 2).mean(dim=(1, 2))
        end = torch.where(alive & torch.isfinite(end), end, torch.full_like(end, math.inf))
        return torch.stack([start, end], dim=1).double().cpu()

    return train_fn


# --- the notebook's experiments ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CurvatureSweep:
    """:func:`batch_top_eigenvalue` over batch sizes: ``stats`` (one :class:`EigenStats` each), ``means`` (B,),
    ``full_batch`` and the fit ``lambda_B = a + c / B`` (:class:`InverseBatchFit`)."""

    batch_sizes: tuple[int, ...]
    stats: tuple[EigenStats, ...]
    means: torch.Tensor
    full_batch: float
    fit: InverseBatchFit


def curvature_sweep(model: nn.Module, loss_fn: LossFn, data: Any, *, batch_sizes: Sequence[int], batches: int,
                    generator: torch.Generator | None = None, tol: float = 1e-3) -> CurvatureSweep:
    """The top mini-batch Hessian eigenvalue at each of ``batch_sizes`` (ascending) and the ``a + c / B`` fit."""
    sizes = tuple(sorted(checks.positive_int(b, "batch_sizes") for b in batch_sizes))
    if len(sizes) < 2:
        raise ValueError("batch_sizes must hold at least two batch sizes")
    stats = tuple(batch_top_eigenvalue(model, loss_fn, data, batch_size=b, batches=batches, generator=generator,
                                       tol=tol) for b in sizes)
    means = torch.tensor([s.mean for s in stats], dtype=torch.float64)
    return CurvatureSweep(batch_sizes=sizes, stats=stats, means=means, full_batch=stats[-1].full_batch,
                          fit=inverse_batch_fit(sizes, means))


@dataclass(frozen=True)
class StableLRSweep:
    """:func:`max_stable_lr` over batch sizes for one optimizer: ``scans`` (one :class:`StableLR` each) and
    ``max_lrs`` (B,)."""

    optimizer: str
    batch_sizes: tuple[int, ...]
    scans: tuple[StableLR, ...]
    max_lrs: torch.Tensor

    def slope(self, *, max_batch: int | None = None) -> float:
        """The log-log slope of the largest stable learning rate against the batch size (batch sizes up to
        ``max_batch``): 1 for linear scaling, 0.5 for square-root scaling."""
        keep = [i for i, b in enumerate(self.batch_sizes) if max_batch is None or b <= max_batch]
        return loglog_slope([self.batch_sizes[i] for i in keep], self.max_lrs[keep])


def stable_lr_sweep(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], *, batch_sizes: Sequence[int],
                    lrs: Sequence[float], optimizer: str = "sgd", steps: int = 60, seed: int = 0,
                    threshold: float = 1.0) -> StableLRSweep:
    """The largest stable learning rate of ``optimizer`` at each of ``batch_sizes`` (:func:`max_stable_lr` with
    :func:`regression_train_fn`: every learning rate of ``lrs`` trained at once from ``model``'s weights)."""
    sizes = tuple(sorted(checks.positive_int(b, "batch_sizes") for b in batch_sizes))
    if not sizes:
        raise ValueError("batch_sizes must not be empty")
    train_fn = regression_train_fn(model, data, optimizer=optimizer, steps=steps, seed=seed)
    scans = tuple(max_stable_lr(train_fn, lrs, batch_size=b, threshold=threshold, vectorized=True) for b in sizes)
    return StableLRSweep(optimizer=optimizer, batch_sizes=sizes, scans=scans,
                         max_lrs=torch.tensor([s.lr for s in scans], dtype=torch.float64))
