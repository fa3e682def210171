"""Bind ipywidgets controls to a plotly ``FigureWidget``: every change re-draws the figure in place.

Two modes. Live (the default): moving a control calls ``draw`` at once (sliders report on release), for
computations that answer within about a second. Button (``button="Train"``): controls only mark the figure as
stale and a button runs ``draw`` in a background thread with a progress bar and a Stop button, for heavier
work such as a short training run.

Works headless (papermill, nbval, plain Python): the widgets are created and updated even when no front end
displays them; :mod:`labkit.widgets.harness` drives every explorer a notebook created.
"""

from __future__ import annotations

import inspect
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import ipywidgets as W
import plotly.graph_objects as go

_CREATED: list[weakref.ref[Explorer]] = []


def explorers() -> list[Explorer]:
    """Every explorer created in this process that is still alive and not closed, oldest first."""
    alive = [e for e in (ref() for ref in _CREATED) if e is not None and e.comm is not None]
    _CREATED[:] = [weakref.ref(e) for e in alive]
    return alive


class Progress:
    """What a ``draw(..., progress=...)`` callback receives: ``progress(done, total)`` moves the bar and
    returns True once the user pressed Stop (pass it to ``fit(stop_when=...)`` to end a run early)."""

    def __init__(self, bar: W.FloatProgress, stop: threading.Event):
        self._bar, self._stop = bar, stop

    def __call__(self, done: float, total: float) -> bool:
        if total > 0:
            self._bar.value = min(1.0, max(0.0, float(done) / float(total)))
        return self._stop.is_set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()


class Explorer(W.VBox):
    """Controls above a ``FigureWidget``; ``draw(**values)`` builds each new figure.

    ``button`` (e.g. ``"Train"``) switches to button mode (see the module docstring). A ``draw`` with a
    ``progress`` parameter receives a :class:`Progress` callback in either mode. ``timings`` lists the seconds
    of every re-draw (the response time a reader waits), ``error`` the last exception raised by ``draw``.
    """

    def __init__(self, draw: Callable[..., go.Figure], controls: Mapping[str, W.ValueWidget], *,
                 caption: str | None = None, button: str | None = None):
        if not controls:
            raise ValueError("controls must name at least one ipywidgets control")
        if not callable(draw):
            raise TypeError(f"draw must be a callable returning a plotly Figure, got {type(draw).__name__}")
        if button is not None and (not isinstance(button, str) or not button.strip()):
            raise ValueError(f"button must be None (live mode) or a non-empty label such as 'Train', got {button!r}")
        for name, control in controls.items():
            if not isinstance(control, W.ValueWidget):
                raise TypeError(f"control {name!r} must be an ipywidgets value widget, got {type(control).__name__}")
            if hasattr(control, "continuous_update"):
                control.continuous_update = False
            if not control.description:
                control.description = name
            if len(control.description) > 8 and hasattr(control.style, "description_width"):
                control.style.description_width = "initial"  # show the whole label, not "λ / mean …"
            control.add_class("labkit-control")
            control.add_class(f"labkit-control-{name}")
        self.draw = draw
        self.controls = dict(controls)
        self.button_label = button
        self.timings: list[float] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._wants_progress = "progress" in inspect.signature(draw).parameters
        self.progress_bar = W.FloatProgress(value=0.0, min=0.0, max=1.0, layout=W.Layout(width="200px"))
        self.status = W.HTML(caption or "")
        self.figure = go.FigureWidget(self._build())
        box = W.HBox(list(self.controls.values()), layout=W.Layout(flex_flow="row wrap"))
        rows: list[W.Widget] = [box]
        if button is not None:
            self.run_button = W.Button(description=button, button_style="primary", icon="play")
            self.stop_button = W.Button(description="Stop", icon="stop", disabled=True)
            self.run_button.add_class("labkit-run")
            self.stop_button.add_class("labkit-stop")
            self.run_button.on_click(lambda _b: self.start())
            self.stop_button.on_click(lambda _b: self.stop())
            rows.append(W.HBox([self.run_button, self.stop_button, self.progress_bar]))
        super().__init__([*rows, self.figure, self.status])
        self.add_class("labkit-explorer")
        self._caption = caption or ""
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        _CREATED.append(weakref.ref(self))

    @property
    def values(self) -> dict[str, Any]:
        return {name: c.value for name, c in self.controls.items()}

    @property
    def running(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def _build(self) -> go.Figure:
        kwargs = self.values
        if self._wants_progress:
            kwargs["progress"] = Progress(self.progress_bar, self._stop)
        fig = self.draw(**kwargs)
        if not isinstance(fig, go.Figure):
            raise TypeError(f"draw must return a plotly Figure, got {type(fig).__name__}")
        return fig

    def update(self) -> None:
        """Re-draw with the current control values, in this thread (live mode calls it on every change)."""
        began = time.perf_counter()
        self.error = None
        try:
            new = self._build()
        except BaseException as exc:
            self.error = exc
            self.status.value = f"<span style='color:#cf222e'>{type(exc).__name__}: {exc}</span>"
            raise
        same_shape = len(new.data) == len(self.figure.data) and all(
            a.type == b.type for a, b in zip(new.data, self.figure.data, strict=True))
        with self.figure.batch_update():
            if same_shape:
                for old_trace, new_trace in zip(self.figure.data, new.data, strict=True):
                    old_trace.update(new_trace.to_plotly_json(), overwrite=True)
            self.figure.update_layout(new.layout.to_plotly_json(), overwrite=True)
        if not same_shape:
            self.figure.data = ()
            self.figure.add_traces(list(new.data))
        self.timings.append(time.perf_counter() - began)

    def start(self) -> None:
        """Button mode: run ``draw`` in a background thread (the kernel stays free for the Stop button)."""
        if self.running:
            return
        self._stop.clear()
        self.progress_bar.value = 0.0
        self.run_button.disabled, self.stop_button.disabled = True, False
        self.status.value = "running…"
        self._worker = threading.Thread(target=self._work, name="labkit-explorer", daemon=True)
        self._worker.start()

    def _work(self) -> None:
        try:
            self.update()
            stopped = self._stop.is_set()
            self.status.value = (f"stopped early after {self.timings[-1]:.1f} s: the figure shows the run so far"
                                 if stopped else f"done in {self.timings[-1]:.1f} s")
        except BaseException:  # noqa: BLE001 - shown under the figure by update(); a thread has no caller to raise to
            pass
        finally:
            self.run_button.disabled, self.stop_button.disabled = False, True

    def stop(self) -> None:
        """Ask a running ``draw`` to stop: its ``progress(...)`` returns True from now on."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> None:
        """Block until a button-mode run finishes; re-raise its error, if any."""
        if self._worker is not None:
            self._worker.join(timeout)
        if self.error is not None:
            raise self.error

    def _on_change(self, _change: Any) -> None:
        if self.button_label is not None:
            self.status.value = f"settings changed: press <b>{self.button_label}</b> to recompute"
            return
        self.status.value = self._caption
        self.update()


def explore(draw: Callable[..., go.Figure], *, caption: str | None = None, button: str | None = None,
            **controls: W.ValueWidget) -> Explorer:
    """``explore(draw, step=IntSlider(...), noise=FloatSlider(...))``: an :class:`Explorer` to display.

    Live by default; ``button="Train"`` puts heavy work behind a Run button with a progress bar and Stop."""
    return Explorer(draw, controls, caption=caption, button=button)
