"""ipywidgets explorers: controls bound to a plotly FigureWidget re-drawn in place."""

from labkit.widgets.explorer import Explorer, explore

__all__ = ["Explorer", "explore"]
