"""Plotly figure builders with one theme. Figures only: widgets live in ``labkit.widgets``."""

from labkit.viz.figures import (
    TEMPLATE,
    bar_chart,
    decision_map,
    heatmap_grid,
    history_figure,
    line_curves,
    scatter_2d,
    to_numpy,
)

__all__ = [
    "TEMPLATE", "bar_chart", "decision_map", "heatmap_grid", "history_figure", "line_curves", "scatter_2d", "to_numpy",
]
