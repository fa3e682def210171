"""Drive a notebook's explorers headless: change every control, check the figure's data changed, time it.

Run after a notebook executed (``labkit reproduce --explorers`` appends a cell calling :func:`exercise_all`), so
testing the explorers never executes a notebook again. For every control the harness records which labkit
functions a change calls (what the control recomputes; an explorer that only looks up precomputed arrays calls
none) and the seconds each re-draw took (a benchmark, reported, never asserted).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ipywidgets as W
from plotly.io.json import to_json_plotly

from labkit.widgets.explorer import Explorer, explorers

# Presentation layers and the run's configuration: calling them is drawing or looking up, not computing.
_NOT_COMPUTING = ("labkit.viz", "labkit.widgets", "labkit.exercises", "labkit.repro", "labkit.checks",
                  "labkit.runtime")


@dataclass(frozen=True)
class ControlProbe:
    """One control moved through ``values``: did the figure's data change, what ran, how long each move to a new
    setting took (``seconds``; the first move runs under the profiler, so it is timed pessimistically) and how long
    the move back to the original value took (``return_seconds``; an explorer may answer it from a cache)."""

    control: str
    values: tuple[str, ...]
    data_changed: bool
    computes: tuple[str, ...]
    seconds: tuple[float, ...]
    return_seconds: tuple[float, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class ExplorerProbe:
    """Every control of one explorer."""

    index: int
    mode: str
    controls: tuple[ControlProbe, ...]

    @property
    def median_seconds(self) -> float:
        """The median response to a new setting (returns to a setting already seen are left out)."""
        times = [s for c in self.controls for s in c.seconds]
        return statistics.median(times) if times else float("nan")

    @property
    def live_controls(self) -> tuple[str, ...]:
        return tuple(c.control for c in self.controls if c.computes)

    @property
    def problems(self) -> list[str]:
        out = [f"explorer {self.index}, control {c.control!r}: {c.error}" for c in self.controls if c.error]
        out += [f"explorer {self.index}, control {c.control!r}: moving it through {list(c.values)} never changed "
                f"the figure's data" for c in self.controls if not c.error and not c.data_changed]
        return out


def _other_values(control: W.ValueWidget, count: int) -> list[Any]:
    """Up to ``count`` values different from the current one, nearest first (what a reader tries next)."""
    value = control.value
    if isinstance(control, (W.Checkbox, W.ToggleButton)):
        return [not value]
    if hasattr(control, "options") and not isinstance(control, (W.SelectMultiple,)):
        options = list(control._options_values)  # the values behind (label, value) pairs
        here = next((i for i, o in enumerate(options) if o == value), 0)
        order = sorted(range(len(options)), key=lambda i: (abs(i - here), -i))
        return [options[i] for i in order if i != here][:count]
    if isinstance(control, W.FloatLogSlider):
        out = []
        for k in (1, -1, 2, -2):
            exponent = math.log10(value) + k * control.step
            if control.min - 1e-9 <= exponent <= control.max + 1e-9:
                out.append(control.base ** exponent)
        return out[:count]
    if all(hasattr(control, a) for a in ("min", "max", "step")):
        out = []
        for k in (1, -1, 2, -2):
            candidate = value + k * control.step
            if control.min <= candidate <= control.max:
                out.append(type(value)(candidate))
        return out[:count]
    raise TypeError(f"the harness cannot choose values for a {type(control).__name__} control")


def _data_key(explorer: Explorer) -> str:
    traces = [{k: v for k, v in t.to_plotly_json().items() if k != "uid"} for t in explorer.figure.data]
    return to_json_plotly(traces)


@contextmanager
def _calls_into_labkit(seen: set[str]) -> Iterator[None]:
    """Record the labkit functions (outside presentation modules) called from code outside labkit."""

    def computing(module: str) -> bool:
        return module.startswith("labkit.") and not module.startswith(_NOT_COMPUTING)

    def profile(frame, event, _arg):
        if event == "call" and not frame.f_code.co_name.startswith("__"):  # constructors and dunders set up
            module = frame.f_globals.get("__name__", "")
            if computing(module):
                caller = frame.f_back.f_globals.get("__name__", "") if frame.f_back else ""
                if not computing(caller):
                    seen.add(f"{module}.{frame.f_code.co_qualname}")

    previous = sys.getprofile()
    sys.setprofile(profile)
    threading.setprofile(profile)  # a button-mode explorer computes in a thread started inside this block
    try:
        yield
    finally:
        sys.setprofile(previous)
        threading.setprofile(None)


def _apply(explorer: Explorer, control: W.ValueWidget, value: Any) -> None:
    control.value = value  # live mode re-draws here (and raises what draw raised)
    if explorer.button_label is not None:
        explorer.start()
        explorer.wait()


def exercise(explorer: Explorer, *, index: int = 0, changes: int = 2) -> ExplorerProbe:
    """Move each control to ``changes`` other values and back; the first move is profiled (what it computes),
    every move timed. The explorer ends on its original values."""
    probes = []
    for name, control in explorer.controls.items():
        original = control.value
        before = _data_key(explorer)
        values = _other_values(control, changes)
        seen: set[str] = set()
        seconds: list[float] = []
        back: list[float] = []
        changed, error = False, None
        try:
            for k, value in enumerate(values):
                n = len(explorer.timings)
                if k == 0:
                    with _calls_into_labkit(seen):
                        _apply(explorer, control, value)
                else:
                    _apply(explorer, control, value)
                seconds += explorer.timings[n:]
                changed = changed or _data_key(explorer) != before
            n = len(explorer.timings)
            _apply(explorer, control, original)
            back += explorer.timings[n:]
        except Exception as exc:  # noqa: BLE001 - reported per control, the harness goes on with the next
            error = f"{type(exc).__name__}: {exc}"
        probes.append(ControlProbe(name, tuple(map(str, values)), changed, tuple(sorted(seen)), tuple(seconds),
                                   tuple(back), error))
    return ExplorerProbe(index, "live" if explorer.button_label is None else f"button {explorer.button_label!r}",
                         tuple(probes))


def exercise_all(*, changes: int = 2) -> list[ExplorerProbe]:
    """:func:`exercise` every explorer this process created (a notebook's, when run as its last cell)."""
    return [exercise(e, index=i, changes=changes) for i, e in enumerate(explorers())]


def write_probes(probes: list[ExplorerProbe], path: str | Path) -> Path:
    """The probes as JSON (read back by the reproduce report and the notebook tests)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = [{**asdict(p), "median_seconds": p.median_seconds, "live_controls": list(p.live_controls),
                "problems": p.problems} for p in probes]
    path.write_text(json.dumps(payload, indent=1))
    return path
