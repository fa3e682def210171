"""The SAM notebooks' experiments: optimizer factory, training runs over :func:`labkit.training.fit`, sharpness
at matched training loss, the four sharpness measures of a trained network and their rank correlations.

* :func:`make_optimizer`: SGD, SAM (Foret et al., 2021, arXiv:2010.01412), ASAM (Kwon et al., 2021,
  arXiv:2102.11600) and norm-only SAM "SAM-ON" (Mueller et al., 2023, arXiv:2306.04226) by name, beside
  ``labkit.grokking.make_optimizer``.
* :func:`train_from`: train a copy of an initial network (the caller's stays untouched) with one of those
  optimizers and record the training loss and the test accuracy.
* :func:`snapshot_top_eigenvalue` and :func:`matched_loss_sharpness`: ``lambda_max`` of a kept snapshot,
  and GD against SAM at the same training loss (Foret et al., 2021, Fig. 3; Cohen et al., 2021).
* :func:`sharpness_measures` and :func:`kendall_tau`: the measures and the rank correlation of
  Andriushchenko et al. (2023, arXiv:2302.07011).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from labkit import checks
from labkit.autograd import check_generator, check_module
from labkit.sam._inputs import (
    check_data,
    check_loss_fn,
    check_options,
    optimizer_defaults,
    optional_number,
    optional_positive_int,
)
from labkit.sam.optim import SAM, norm_only_sam
from labkit.sam.sharpness import TopEigenvalue, hessian_top_eigenvalue, hessian_trace, worst_case_sharpness
from labkit.training import History, accuracy, fit, fit_loss

Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: The optimizers :func:`make_optimizer` builds (names are case-insensitive).
OPTIMIZERS = ("sgd", "sam", "asam", "sam-on", "asam-on")
#: The names of the four measures of :func:`sharpness_measures`, in the order of its fields.
MEASURES = ("λ_max", "trace", "worst-case", "adaptive worst-case")
DEFAULT_RHO = 0.05  # Foret et al.'s default radius


def make_optimizer(
    model: nn.Module,
    kind: str = "sam",
    *,
    lr: float,
    rho: float | None = None,
    base: type[torch.optim.Optimizer] = torch.optim.SGD,
    **base_kwargs: Any,
) -> torch.optim.Optimizer:
    """The optimizer ``kind`` over every trainable parameter of ``model``.

    ``"sgd"``: the base optimizer itself (``base``, default ``torch.optim.SGD``); ``"sam"`` / ``"asam"``:
    :class:`labkit.sam.SAM` around it (ASAM: ``adaptive=True``); ``"sam-on"`` / ``"asam-on"``: norm-only SAM
    (:func:`labkit.sam.norm_only_sam`). ``rho`` is the radius (default 0.05; must be 0 or None for
    ``"sgd"``); SAM's BatchNorm policy is applied to ``model``. Other keywords (``momentum``,
    ``weight_decay``, ...) go to the base optimizer.
    """
    check_module(model)
    if not isinstance(kind, str) or kind.lower() not in OPTIMIZERS:
        raise ValueError(f"kind must be one of {OPTIMIZERS}, got {kind!r}")
    lr = checks.number(lr, "lr", low=0, low_open=True)
    rho = optional_number(rho, "rho", low=0)
    if not (isinstance(base, type) and issubclass(base, torch.optim.Optimizer)):
        raise TypeError(f"base must be a torch.optim.Optimizer subclass such as torch.optim.SGD, got {base!r}")
    kind = kind.lower()
    params = [p for p in model.parameters() if p.requires_grad]
    floating = [p for p in params if p.is_floating_point()]
    check_options({"lr": lr, **base_kwargs}, reference=optimizer_defaults(base),
                  dtype=floating[0].dtype if floating else None)
    if kind == "sgd":
        if rho not in (None, 0.0):
            raise ValueError(f"rho is a SAM radius; kind='sgd' takes none, got rho={rho!r}")
        return base(params, lr=lr, **base_kwargs)
    radius = DEFAULT_RHO if rho is None else rho
    adaptive = kind.startswith("asam")
    if kind.endswith("-on"):
        return norm_only_sam(model, base, rho=radius, adaptive=adaptive, lr=lr, **base_kwargs)
    return SAM(params, base, rho=radius, adaptive=adaptive, model=model, lr=lr, **base_kwargs)


class Trained(NamedTuple):
    """A finished run of :func:`train_from`: the trained copy and its :class:`labkit.training.History`."""

    model: nn.Module
    history: History


def _loss_metric(loss_fn: Criterion, x: torch.Tensor, y: torch.Tensor) -> Callable[[nn.Module], float]:
    @torch.no_grad()
    def train_loss(model: nn.Module) -> float:
        return float(loss_fn(model(x), y))

    return train_loss


def train_from(
    init: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor],
    *,
    kind: str = "sam",
    rho: float | None = None,
    lr: float,
    steps: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    schedule: str | None = None,
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
    eval_every: int | Sequence[int] | None = None,
    snapshots: Sequence[int] = (),
    stop_loss: float | None = None,
    stop_when: Callable[[History], bool] | None = None,
    train_loss: bool = True,
    loss_fn: Criterion = F.cross_entropy,
    seed: int = 0,
    base: type[torch.optim.Optimizer] = torch.optim.SGD,
    progress: bool | None = None,
    desc: str | None = None,
    **base_kwargs: Any,
) -> Trained:
    """Train a copy of ``init`` on ``data = (inputs, targets)`` with :func:`make_optimizer` ``(kind, rho, lr)``.

    Give ``steps`` or ``epochs`` (then ``steps = epochs * ceil(N / batch_size)`` and evaluation every
    epoch unless ``eval_every`` says otherwise). ``batch_size=None`` is full-batch; mini-batches follow
    ``seed`` (:func:`labkit.training.fit`). ``schedule="cosine"`` anneals the learning rate to zero over
    the run. The history records ``"train loss"`` (``loss_fn`` on all of ``data``; ``train_loss=False``
    saves that pass) and, with ``test``, ``"test accuracy"``; ``snapshots`` keeps the weights at those
    steps; ``stop_loss`` ends the run at the first evaluation whose training loss is at most that value
    (matched-loss families, Andriushchenko et al., 2023); ``stop_when(history)``, called after every
    evaluation, ends it too (an explorer's Stop button: ``stop_when=lambda h: progress(h.steps[-1], steps)``).
    ``init`` is left untouched, so every run of a comparison starts from the same weights.
    """
    check_module(init, "init")
    check_loss_fn(loss_fn)
    x, y = check_data(init, data, loss_fn=loss_fn)
    optional_positive_int(batch_size, "batch_size")
    if (steps is None) == (epochs is None):
        raise ValueError(f"give exactly one of steps and epochs, got steps={steps!r}, epochs={epochs!r}")
    if epochs is not None:
        checks.positive_int(epochs, "epochs")
        per_epoch = -(-len(x) // (batch_size or len(x)))
        steps = epochs * per_epoch
        eval_every = per_epoch if eval_every is None else eval_every
    checks.positive_int(steps, "steps")
    if schedule not in (None, "cosine"):
        raise ValueError(f"schedule must be None or 'cosine', got {schedule!r}")
    stop_loss = optional_number(stop_loss, "stop_loss")
    if stop_when is not None and not callable(stop_when):
        raise TypeError(f"stop_when must be None or a callable history -> bool, got {type(stop_when).__name__}")
    if test is not None:
        check_data(init, test, "test", classes=True)
    model = copy.deepcopy(init)
    optimizer = make_optimizer(model, kind, lr=lr, rho=rho, base=base, **base_kwargs)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps) if schedule == "cosine" else None
    if stop_loss is not None and not train_loss:
        raise ValueError("stop_loss needs the training loss: leave train_loss=True")
    metrics: dict[str, Callable[[nn.Module], float]] = {}
    if train_loss:
        metrics["train loss"] = _loss_metric(loss_fn, x, y)
    if test is not None:
        x_test, y_test = test
        metrics["test accuracy"] = lambda m: accuracy(m, x_test, y_test)
    asked = stop_when

    def stop(h: History) -> bool:
        return (stop_loss is not None and h["train loss"][-1] <= stop_loss) or (asked is not None and bool(asked(h)))
    history = fit(model, fit_loss(loss_fn), (x, y), optimizer=optimizer, steps=steps, batch_size=batch_size,
                  scheduler=scheduler, metrics=metrics, eval_every=eval_every, snapshots=snapshots,
                  stop_when=stop if stop_loss is not None or asked is not None else None, seed=seed, progress=progress,
                  desc=desc or f"{kind} rho={rho}")
    return Trained(model, history)


def snapshot_top_eigenvalue(
    init: nn.Module,
    history: History,
    step: int,
    data: tuple[torch.Tensor, torch.Tensor],
    *,
    loss_fn: Criterion = F.cross_entropy,
    generator: torch.Generator | None = None,
) -> TopEigenvalue:
    """``lambda_max`` of the loss at the weights ``history.snapshots[step]`` (loaded into a copy of ``init``)."""
    check_module(init, "init")
    checks.integer(step, "step", low=0)
    if not isinstance(history, History):
        raise TypeError(f"history must be a labkit.training.History, got {type(history).__name__}")
    if step not in history.snapshots:
        raise ValueError(f"history keeps no snapshot at step {step!r}; it has {sorted(history.snapshots)} "
                         "(ask fit/train_from for snapshots=[...])")
    net = copy.deepcopy(init)
    net.load_state_dict(history.snapshots[step])
    return hessian_top_eigenvalue(net, loss_fn, data, generator=generator)


@dataclass(frozen=True)
class MatchedSharpness:
    """GD against SAM at the same training loss: SAM's final loss ``target``, the first GD step ``gd_step``
    reaching it (GD's last step if it never does), and ``lambda_max`` of both there."""

    target: float
    gd_step: int
    gd: TopEigenvalue
    sam: TopEigenvalue

    @property
    def ratio(self) -> float:
        """``lambda_max(SAM) / lambda_max(GD)``."""
        return float(self.sam) / float(self.gd)


def matched_loss_sharpness(
    init: nn.Module,
    gd: History,
    sam: History,
    data: tuple[torch.Tensor, torch.Tensor],
    *,
    loss_fn: Criterion = F.cross_entropy,
    generator: torch.Generator | None = None,
) -> MatchedSharpness:
    """Compare ``lambda_max`` of a GD run and a SAM run at matched training loss (Foret et al., 2021).

    Comparing the final weights would favour the run that fitted less; so take SAM's final ``"train loss"``
    and the first GD snapshot with a loss at most that. Both histories need snapshots at their evaluation
    steps (``train_from(..., snapshots=...)``).
    """
    for name, h in (("gd", gd), ("sam", sam)):
        if not isinstance(h, History) or not h.rows:
            raise TypeError(f"{name} must be a labkit.training.History with recorded 'train loss', got {h!r}")
    for name, h in (("gd", gd), ("sam", sam)):
        if "train loss" not in h.rows[-1]:
            raise ValueError(f"{name} has no 'train loss' column (train_from(..., train_loss=True) records it)")
    target = sam["train loss"][-1]
    if not math.isfinite(target):
        raise ValueError(f"sam's final 'train loss' is {target}: the SAM run diverged, there is no loss to match")
    gd_step = gd.first_step("train loss", lambda v: v <= target)
    gd_step = gd.steps[-1] if gd_step is None else gd_step
    return MatchedSharpness(
        target=target, gd_step=gd_step,
        gd=snapshot_top_eigenvalue(init, gd, gd_step, data, loss_fn=loss_fn, generator=generator),
        sam=snapshot_top_eigenvalue(init, sam, sam.steps[-1], data, loss_fn=loss_fn, generator=generator),
    )


@dataclass(frozen=True)
class SharpnessMeasures:
    """The four sharpness measures of Andriushchenko et al. (2023) of one network."""

    lambda_max: float
    trace: float
    worst_case: float
    adaptive_worst_case: float

    def as_dict(self) -> dict[str, float]:
        """``{"λ_max": ..., "trace": ..., "worst-case": ..., "adaptive worst-case": ...}`` (see ``MEASURES``)."""
        values = (self.lambda_max, self.trace, self.worst_case, self.adaptive_worst_case)
        return dict(zip(MEASURES, values, strict=True))


def sharpness_measures(
    model: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor],
    *,
    loss_fn: Criterion = F.cross_entropy,
    trace_samples: int = 100,
    rho: float = 0.1,
    adaptive_rho: float = 0.5,
    ascent_steps: int = 20,
    m: int | None = None,
    generator: torch.Generator | None = None,
) -> SharpnessMeasures:
    """``lambda_max`` and ``trace`` of the Hessian, worst-case sharpness at radius ``rho`` and adaptive
    worst-case sharpness at ``adaptive_rho`` (both ``ascent_steps`` of ascent, averaged over batches of
    ``m`` examples: m-sharpness). ``generator`` seeds the Lanczos start and the Hutchinson probes."""
    check_generator(generator)
    check_module(model)
    check_loss_fn(loss_fn)
    checks.integer(trace_samples, "trace_samples", low=2)
    checks.number(rho, "rho", low=0)
    checks.number(adaptive_rho, "adaptive_rho", low=0)
    checks.positive_int(ascent_steps, "ascent_steps")
    optional_positive_int(m, "m")
    ascent = dict(steps=ascent_steps, batch_size=m)
    return SharpnessMeasures(
        lambda_max=float(hessian_top_eigenvalue(model, loss_fn, data, generator=generator)),
        trace=hessian_trace(model, loss_fn, data, samples=trace_samples, generator=generator),
        worst_case=worst_case_sharpness(model, loss_fn, data, rho=rho, **ascent),
        adaptive_worst_case=worst_case_sharpness(model, loss_fn, data, rho=adaptive_rho, adaptive=True, **ascent),
    )


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's rank correlation (tau-b, ``scipy.stats.kendalltau``) of two equally long sequences; a constant
    sequence has no ranking and counts as 0 (scipy gives NaN)."""
    from scipy.stats import kendalltau

    a, b = list(a), list(b)
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"a and b must have the same length >= 2, got {len(a)} and {len(b)}")
    a = [checks.number(v, f"a[{i}]") for i, v in enumerate(a)]
    b = [checks.number(v, f"b[{i}]") for i, v in enumerate(b)]
    value = float(kendalltau(a, b).statistic)
    return 0.0 if math.isnan(value) else value


__all__ = ["MEASURES", "OPTIMIZERS", "MatchedSharpness", "SharpnessMeasures", "Trained", "kendall_tau",
           "make_optimizer", "matched_loss_sharpness", "sharpness_measures", "snapshot_top_eigenvalue",
           "train_from"]
