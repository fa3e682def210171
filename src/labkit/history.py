"""The record of a training run: per-step loss, metric rows at evaluation steps, model snapshots."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch


class History:
    """Per-step training loss plus metric rows recorded at evaluation steps.

    ``history["test_acc"]`` is that metric's column, ``history.steps`` the evaluation steps,
    ``history.loss`` the training loss of every step, ``history.snapshots`` the model state (on CPU)
    at the steps asked for with ``fit(..., snapshots=[...])``.
    """

    def __init__(self, rows: list[dict[str, float]] | None = None, loss: list[float] | None = None,
                 snapshots: dict[int, dict[str, torch.Tensor]] | None = None):
        self.rows: list[dict[str, float]] = rows or []
        self.loss: list[float] = loss or []
        self.snapshots: dict[int, dict[str, torch.Tensor]] = snapshots or {}

    def record(self, step: int, values: Mapping[str, float]) -> None:
        self.rows.append({"step": step, **{k: float(v) for k, v in values.items()}})

    @property
    def steps(self) -> list[int]:
        return [int(r["step"]) for r in self.rows]

    def __getitem__(self, name: str) -> list[float]:
        if not self.rows or name not in self.rows[-1]:
            known = sorted(self.rows[-1]) if self.rows else []
            raise KeyError(f"no metric {name!r} in history; recorded: {known}")
        return [r.get(name, math.nan) for r in self.rows]

    def last(self, name: str) -> float:
        return self[name][-1]

    def at(self, step: int) -> dict[str, float]:
        """The metric row recorded at ``step``."""
        for r in self.rows:
            if r["step"] == step:
                return r
        raise KeyError(f"no evaluation at step {step}; evaluated at {self.steps}")

    def first_step(self, name: str, predicate: Callable[[float], bool]) -> int | None:
        """The first evaluation step whose ``name`` satisfies ``predicate`` (None if never)."""
        for r in self.rows:
            if name in r and predicate(r[name]):
                return int(r["step"])
        return None

    def truncate(self, step: int) -> None:
        """Forget everything recorded after ``step`` (losses, evaluation rows, snapshots)."""
        del self.loss[step:]
        self.rows = [r for r in self.rows if r["step"] <= step]
        self.snapshots = {s: v for s, v in self.snapshots.items() if s <= step}

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "loss": self.loss, "snapshots": self.snapshots}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> History:
        return cls([dict(r) for r in state["rows"]], list(state["loss"]), dict(state.get("snapshots", {})))

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        cols = sorted(self.rows[-1]) if self.rows else []
        return f"History({len(self.loss)} steps, {len(self.rows)} evaluations, columns={cols})"
