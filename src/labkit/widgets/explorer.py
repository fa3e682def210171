"""Bind ipywidgets controls to a plotly ``FigureWidget``: every change re-draws the figure in place.

Works headless (papermill, nbval, plain Python): the widgets are created and updated even when no
front end displays them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import ipywidgets as W
import plotly.graph_objects as go


class Explorer(W.VBox):
    """A ``VBox`` of controls above a ``FigureWidget``; ``draw(**values)`` builds each new figure."""

    def __init__(self, draw: Callable[..., go.Figure], controls: Mapping[str, W.ValueWidget], *,
                 caption: str | None = None):
        if not controls:
            raise ValueError("controls must name at least one ipywidgets control")
        for name, control in controls.items():
            if not isinstance(control, W.ValueWidget):
                raise TypeError(f"control {name!r} must be an ipywidgets value widget, got {type(control).__name__}")
            if hasattr(control, "continuous_update"):
                control.continuous_update = False
            if not control.description:
                control.description = name
        self.draw = draw
        self.controls = dict(controls)
        self.figure = go.FigureWidget(self._build())
        self.status = W.HTML(caption or "")
        box = W.HBox(list(self.controls.values()), layout=W.Layout(flex_flow="row wrap"))
        super().__init__([box, self.figure, self.status])
        for control in self.controls.values():
            control.observe(self._on_change, names="value")

    @property
    def values(self) -> dict[str, Any]:
        return {name: c.value for name, c in self.controls.items()}

    def _build(self) -> go.Figure:
        fig = self.draw(**self.values)
        if not isinstance(fig, go.Figure):
            raise TypeError(f"draw must return a plotly Figure, got {type(fig).__name__}")
        return fig

    def update(self) -> None:
        """Re-draw with the current control values (also called on every control change)."""
        new = self._build()
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

    def _on_change(self, _change: Any) -> None:
        try:
            self.status.value = ""
            self.update()
        except Exception as exc:  # show the problem under the figure instead of losing it in the log
            self.status.value = f"<span style='color:#cf222e'>{type(exc).__name__}: {exc}</span>"
            raise


def explore(draw: Callable[..., go.Figure], *, caption: str | None = None, **controls: W.ValueWidget) -> Explorer:
    """``explore(draw, step=IntSlider(...), noise=FloatSlider(...))``: an :class:`Explorer` to display."""
    return Explorer(draw, controls, caption=caption)
