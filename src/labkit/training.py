"""One training loop for every pillar: progress bar, metric history, atomic checkpoints and resume.

``fit`` drives any ``torch.optim.Optimizer`` through a closure (so closure optimizers such as SAM work
unchanged). Mini-batches are a deterministic function of (seed, step), and the checkpoint stores the
model, optimizer, scheduler, history and torch's RNG state, so an interrupted run resumed from its
checkpoint continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from labkit.autograd import train_mode
from labkit.checkpoints import (
    CheckpointMismatch,
    StepSnapshot,
    fingerprint,
    fingerprint_differences,
    rng_state,
    save_atomic,
    set_rng_state,
)
from labkit.history import History

Batch = tuple[torch.Tensor, ...]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]
Metric = Callable[[nn.Module], float]
Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def fit_loss(criterion: Criterion = F.cross_entropy) -> LossFn:
    """The ``fit`` loss ``loss(model, (x, y)) = criterion(model(x), y)`` for a criterion on
    (outputs, targets) such as ``F.cross_entropy`` (the default) or ``F.mse_loss``."""
    if not callable(criterion):
        raise TypeError(f"criterion must be a callable (outputs, targets) -> loss, got {type(criterion).__name__}")

    def loss(model: nn.Module, batch: Batch) -> torch.Tensor:
        x, y = batch
        return criterion(model(x), y)

    loss.__name__ = f"fit_loss({getattr(criterion, '__name__', type(criterion).__name__)})"
    return loss


cross_entropy = fit_loss(F.cross_entropy)
cross_entropy.__doc__ = "The ``fit`` loss ``F.cross_entropy(model(x), y)`` of a batch ``(x, y)``."


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of correct predictions: argmax of (N, C) logits, or the sign of (N,) scores for y in {-1, +1}."""
    out = model(x)
    if out.ndim == 1 or out.shape[-1] == 1:
        return ((out.reshape(-1) * y.reshape(-1)) > 0).float().mean().item()
    return (out.argmax(dim=-1) == y).float().mean().item()


def progress_enabled(progress: bool | None) -> bool:
    """``progress=None`` follows ``LABKIT_PROGRESS`` (set to 0 by the headless runners)."""
    if progress is None:
        return os.environ.get("LABKIT_PROGRESS", "1") not in ("0", "false", "no")
    return bool(progress)


def _eval_schedule(eval_every: int | Sequence[int] | None, steps: int) -> Callable[[int], bool]:
    if eval_every is None:
        every = max(1, steps // 50)
        return lambda s: s % every == 0 or s == steps
    if isinstance(eval_every, int):
        if eval_every < 1:
            raise ValueError(f"eval_every must be a positive int or a list of steps, got {eval_every}")
        return lambda s: s % eval_every == 0 or s == steps
    wanted = {int(s) for s in eval_every}
    if any(s < 0 for s in wanted):
        raise ValueError("eval_every steps must be non-negative")
    return lambda s: s in wanted or s == steps


def _check_data(data: Batch | None) -> int:
    if data is None:
        return 0
    if not isinstance(data, (tuple, list)) or not data or not all(isinstance(t, torch.Tensor) for t in data):
        raise TypeError("data must be a tuple of tensors sharing their first dimension, or None")
    n = data[0].shape[0]
    if n == 0:
        raise ValueError("data is empty")
    if any(t.shape[0] != n for t in data):
        raise ValueError(f"data tensors must share their first dimension, got {[tuple(t.shape) for t in data]}")
    return n


def batch_at(data: Batch, step: int, batch_size: int, seed: int) -> Batch:
    """The mini-batch of ``step``: epoch-wise permutations seeded by (seed, epoch); a pure function.

    Any non-negative seed works, the 63-bit stream seeds of ``Run.seed_for`` included (reduced mod 2**64)."""
    n = data[0].shape[0]
    per_epoch = math.ceil(n / batch_size)
    epoch, index = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**64))
    idx = perm[index * batch_size:(index + 1) * batch_size].to(data[0].device)
    return tuple(t[idx] for t in data)


def check_optimizer(optimizer: object, model: nn.Module) -> torch.optim.Optimizer:
    """``optimizer`` must be a torch optimizer over ``model``'s parameters (not another model's)."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer built on model.parameters(), "
                        f"got {type(optimizer).__name__}")
    owned = {id(p) for p in model.parameters()}
    stepped = [p for g in optimizer.param_groups for p in g["params"]]
    foreign = sum(id(p) not in owned for p in stepped)
    if foreign:
        raise ValueError(f"optimizer updates {foreign} of its {len(stepped)} parameters that are not model's: "
                         "build the optimizer on this model's parameters (training would change nothing)")
    return optimizer


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    data: Batch | None = None,
    *,
    optimizer: torch.optim.Optimizer,
    steps: int,
    batch_size: int | None = None,
    scheduler: Any = None,
    metrics: Mapping[str, Metric] | None = None,
    eval_every: int | Sequence[int] | None = None,
    snapshots: Sequence[int] = (),
    stop_when: Callable[[History], bool] | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    force_resume: bool = False,
    on_nonfinite: str = "raise",
    seed: int = 0,
    progress: bool | None = None,
    desc: str = "training",
) -> History:
    """Train ``model`` for ``steps`` optimizer steps and return its :class:`History`.

    ``loss_fn(model, batch)`` returns a scalar loss; ``batch`` is ``data`` (full batch when
    ``batch_size`` is None) or a seeded mini-batch of it, or ``None`` when ``data`` is None.
    ``metrics`` maps names to ``fn(model) -> float``, evaluated in eval mode at step 0, every
    ``eval_every`` steps (or at the listed steps) and at the end; ``snapshots`` lists steps whose model
    state is kept in ``history.snapshots``. ``stop_when(history)`` ends early.

    With ``checkpoint`` (a file path) the run saves atomically every ``checkpoint_every`` steps, at the end
    and on Ctrl-C (the last completed step, also when the interrupt comes in the middle of a step or an
    evaluation), and resumes from that file when it exists. The checkpoint carries a fingerprint of what
    produced it (model structure, optimizer class and hyper-parameters, scheduler, data shapes, batch size,
    seed); resuming with a different one raises :class:`labkit.checkpoints.CheckpointMismatch` unless
    ``force_resume=True``. ``on_nonfinite``: "raise" or "stop".
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_optimizer(optimizer, model)
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be a callable (model, batch) -> scalar loss, got {type(loss_fn).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    if on_nonfinite not in ("raise", "stop"):
        raise ValueError(f"on_nonfinite must be 'raise' or 'stop', got {on_nonfinite!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int (the mini-batch order's seed), got {seed!r}")
    n = _check_data(data)
    metrics = dict(metrics or {})
    should_eval = _eval_schedule(eval_every, steps)
    if checkpoint_every is None:
        checkpoint_every = max(1, steps // 10)
    elif isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be a positive int, got {checkpoint_every!r}")

    history, start = History(), 0
    produced_by = fingerprint(model, optimizer, scheduler=scheduler, data=data, batch_size=batch_size, seed=seed)
    if checkpoint is not None and Path(checkpoint).exists():
        history, start = _resume(checkpoint, model, optimizer, scheduler, produced_by, force_resume)
    last_good = StepSnapshot(model, optimizer, scheduler) if checkpoint is not None else None

    def save(step: int) -> None:
        if checkpoint is None:
            return
        save_atomic({
            "step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "history": history.state_dict(), "rng": rng_state(), "fingerprint": produced_by,
        }, checkpoint)

    wanted_snapshots = {int(s) for s in snapshots}

    def evaluate(step: int) -> None:
        if step in wanted_snapshots:
            history.snapshots[step] = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        with train_mode(model, False):
            values = {name: fn(model) for name, fn in metrics.items()}
        if history.loss:
            values = {"loss": history.loss[-1], **values}
        history.record(step, values)

    if start == 0 and not history.rows:
        evaluate(0)
    if stop_when is not None and history.rows and stop_when(history):
        return history

    from tqdm.auto import tqdm

    bar = tqdm(total=steps, initial=start, desc=desc, disable=not progress_enabled(progress),
               dynamic_ncols=True, leave=False)
    step = done = start  # done: the last step whose update, evaluation and checkpoint are complete
    model.train()
    if last_good is not None:
        last_good.take()
    try:
        while step < steps:
            batch = None
            if data is not None:
                batch = tuple(data) if batch_size is None or batch_size >= n else batch_at(data, step, batch_size, seed)

            def closure(batch: Batch | None = batch) -> torch.Tensor:
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model, batch)
                if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                    raise ValueError("loss_fn must return a scalar tensor")
                loss.backward()
                return loss

            loss = optimizer.step(closure)
            if loss is None:
                raise TypeError("optimizer.step(closure) returned None; labkit's fit needs an optimizer that "
                                "calls the closure and returns the loss (all torch.optim optimizers do)")
            value = float(loss.detach())
            if not math.isfinite(value):
                if on_nonfinite == "raise":
                    raise FloatingPointError(f"training loss became {value} at step {step + 1}; lower the learning "
                                             "rate or pass on_nonfinite='stop'")
                step += 1
                history.loss.append(value)
                evaluate(step)
                break
            if scheduler is not None:
                scheduler.step()
            step += 1
            history.loss.append(value)
            bar.update(1)
            if should_eval(step) or step in wanted_snapshots:
                evaluate(step)
                bar.set_postfix({k: f"{v:.3g}" for k, v in list(history.rows[-1].items())[1:4]}, refresh=False)
                if stop_when is not None and stop_when(history):
                    bar.total = step  # a planned early stop: show a finished bar, not tqdm's red "interrupted" one
                    bar.refresh()
                    break
            if step % checkpoint_every == 0:
                save(step)
            if last_good is not None:
                last_good.take()  # this step is complete: an interrupt from here on saves it
            done = step
    except KeyboardInterrupt:
        bar.close()
        if last_good is not None:  # save the last completed step, never a half-applied one
            last_good.restore()
            history.truncate(done)
            save(done)
        raise
    bar.close()
    save(step)
    return history


def _resume(checkpoint: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
            produced_by: dict[str, Any], force: bool) -> tuple[History, int]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    saved = state.get("fingerprint")
    differences = ["the checkpoint has no fingerprint (written by an older labkit)"] if saved is None else \
        fingerprint_differences(saved, produced_by)
    if differences and not force:
        raise CheckpointMismatch(
            f"checkpoint {os.fspath(checkpoint)!r} was written by another configuration: " + "; ".join(differences)
            + ". Delete it to start afresh, pass another checkpoint path, or force_resume=True to resume anyway.")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return History.from_state_dict(state["history"]), int(state["step"])
