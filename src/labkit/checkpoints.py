"""Checkpoints of :func:`labkit.training.fit`: atomic saves, a fingerprint of what produced them, and an
in-memory copy of the last completed step so that Ctrl-C never loses it.

The fingerprint names the model's structure (class, parameter and buffer names, shapes and dtypes), the
optimizer's class and hyper-parameters as the caller built it, the scheduler's class, the data's size and
shapes, the batch size and the batch seed. Resuming from a checkpoint whose fingerprint differs is an error
that lists the differences, unless the caller passes ``force_resume=True``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn


class CheckpointMismatch(ValueError):
    """The checkpoint was written by a different configuration than the one resuming from it."""


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through a temporary file in the same folder, then an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _describe(value: Any) -> Any:
    """Hyper-parameter values as plain, comparable data (tensors by value, anything else by repr)."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, torch.Tensor):
        return value.tolist() if value.numel() <= 16 else f"tensor{tuple(value.shape)}"
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    return repr(value)


def fingerprint(model: nn.Module, optimizer: torch.optim.Optimizer, *, scheduler: Any = None,
                data: Sequence[torch.Tensor] | None = None, batch_size: int | None = None,
                seed: int = 0) -> dict[str, Any]:
    """What produced a run, as plain data: compare two with :func:`fingerprint_differences`."""
    groups = [{k: _describe(v) for k, v in sorted(g.items()) if k != "params"} | {"params": len(g["params"])}
              for g in optimizer.param_groups]
    return {
        "model": type(model).__name__,
        "state": [(k, tuple(v.shape), str(v.dtype)) for k, v in model.state_dict().items()],
        "optimizer": type(optimizer).__name__,
        "param_groups": groups,
        "scheduler": None if scheduler is None else type(scheduler).__name__,
        "data": None if data is None else [(tuple(t.shape), str(t.dtype)) for t in data],
        "batch_size": batch_size,
        "seed": seed,
    }


def fingerprint_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two fingerprints (empty when they agree)."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if _plain(a) != _plain(b):
            if key == "state":
                a = f"{len(a or [])} tensors" if a else a
                b = f"{len(b or [])} tensors" if b else b
                out.append(f"model structure differs ({a} saved, {b} now, or other names/shapes)")
            else:
                out.append(f"{key}: checkpoint has {a!r}, this run has {b!r}")
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _copy_tree(src: Any, dst: Any) -> Any:
    """A copy of a nested state (dicts, lists, tensors) that reuses ``dst``'s tensors when shapes match."""
    if isinstance(src, torch.Tensor):
        if isinstance(dst, torch.Tensor) and dst.shape == src.shape and dst.dtype == src.dtype \
                and dst.device == src.device:
            return dst.copy_(src)
        return src.detach().clone()
    if isinstance(src, Mapping):
        old = dst if isinstance(dst, Mapping) else {}
        return {k: _copy_tree(v, old.get(k)) for k, v in src.items()}
    if isinstance(src, (list, tuple)):
        old = dst if isinstance(dst, (list, tuple)) and len(dst) == len(src) else [None] * len(src)
        return type(src)(_copy_tree(v, o) for v, o in zip(src, old, strict=True))
    return src


class StepSnapshot:
    """The model, optimizer, scheduler and RNG state at the last completed step, kept in memory.

    ``take()`` refreshes it in place (tensor copies into buffers it already holds, cheap for the small
    models of the workbook); ``restore()`` puts it back, so an interrupt in the middle of a step can
    save that step's starting point instead of a half-applied update.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any = None):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.state: dict[str, Any] | None = None

    def take(self) -> None:
        current = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": rng_state(),
        }
        self.state = _copy_tree(current, self.state)

    def restore(self) -> None:
        if self.state is None:
            return
        self.model.load_state_dict(self.state["model"])
        self.optimizer.load_state_dict(self.state["optimizer"])
        if self.scheduler is not None and self.state["scheduler"] is not None:
            self.scheduler.load_state_dict(self.state["scheduler"])
        set_rng_state(self.state["rng"])
