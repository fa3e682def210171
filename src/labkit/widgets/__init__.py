"""ipywidgets explorers: controls bound to a plotly FigureWidget re-drawn in place, and the harness that drives
them headless."""

from labkit.widgets.explorer import Explorer, Progress, explore, explorers

__all__ = ["Explorer", "Progress", "explore", "explorers"]
