"""Figure builders shared by the notebooks: curves over steps, grids of maps, 2-D scatters, bars."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]

TEMPLATE = go.layout.Template(
    layout=go.Layout(
        font=dict(family="Inter, Helvetica, Arial, sans-serif", size=13),
        colorway=PALETTE,
        plot_bgcolor="white",
        paper_bgcolor="white",
        xaxis=dict(showgrid=True, gridcolor="#eeeeee", zeroline=False, linecolor="#444", ticks="outside"),
        yaxis=dict(showgrid=True, gridcolor="#eeeeee", zeroline=False, linecolor="#444", ticks="outside"),
        legend=dict(bgcolor="rgba(255,255,255,0.8)"),
        margin=dict(l=60, r=20, t=60, b=50),
        hovermode="x unified",
    )
)


def to_numpy(values: Any) -> np.ndarray:
    """Tensors (any device, with or without grad), lists and arrays to a float NumPy array."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=float)


def _finish(fig: go.Figure, title: str | None, x_title: str | None, y_title: str | None,
            height: int | None = None) -> go.Figure:
    fig.update_layout(template=TEMPLATE, title=title, height=height)
    if x_title is not None:
        fig.update_xaxes(title_text=x_title)
    if y_title is not None:
        fig.update_yaxes(title_text=y_title)
    return fig


def line_curves(
    curves: Mapping[str, Any],
    *,
    title: str | None = None,
    x_title: str | None = None,
    y_title: str | None = None,
    log_x: bool = False,
    log_y: bool = False,
    markers: bool = False,
    dashed: Sequence[str] = (),
    height: int | None = 380,
) -> go.Figure:
    """One line per entry: ``{label: y}`` or ``{label: (x, y)}`` (x defaults to 0..len(y)-1)."""
    fig = go.Figure()
    for label, curve in curves.items():
        if isinstance(curve, tuple) and len(curve) == 2:
            x, y = to_numpy(curve[0]), to_numpy(curve[1])
        else:
            y = to_numpy(curve)
            x = np.arange(len(y))
        if x.shape != y.shape:
            raise ValueError(f"curve {label!r}: x and y must have the same shape, got {x.shape} and {y.shape}")
        fig.add_trace(go.Scatter(x=x, y=y, name=str(label), mode="lines+markers" if markers else "lines",
                                 line=dict(dash="dash" if label in dashed else None)))
    fig.update_xaxes(type="log" if log_x else None)
    fig.update_yaxes(type="log" if log_y else None)
    return _finish(fig, title, x_title, y_title, height)


def history_figure(history: Any, columns: Sequence[str], *, labels: Mapping[str, str] | None = None,
                   title: str | None = None, x_title: str = "step", y_title: str | None = None,
                   log_x: bool = False, log_y: bool = False) -> go.Figure:
    """Curves of ``columns`` of a :class:`labkit.training.History` against its evaluation steps."""
    labels = dict(labels or {})
    steps = history.steps
    curves = {labels.get(c, c): (steps, history[c]) for c in columns}
    return line_curves(curves, title=title, x_title=x_title, y_title=y_title, log_x=log_x, log_y=log_y)


def heatmap_grid(
    maps: Sequence[Any],
    *,
    titles: Sequence[str] | None = None,
    cols: int | None = None,
    title: str | None = None,
    colorscale: str = "RdBu_r",
    symmetric: bool = True,
    shared_scale: bool = False,
    height_per_row: int = 220,
) -> go.Figure:
    """A grid of 2-D maps (attributions, CAMs, images). ``symmetric`` centres the colour scale at 0."""
    arrays = [to_numpy(m) for m in maps]
    if not arrays:
        raise ValueError("maps must hold at least one 2-D map")
    for i, a in enumerate(arrays):
        if a.ndim != 2:
            raise ValueError(f"maps[{i}] must be 2-D, got shape {a.shape}")
    if titles is not None and len(titles) != len(arrays):
        raise ValueError(f"titles must have one entry per map ({len(arrays)}), got {len(titles)}")
    cols = cols or min(len(arrays), 6)
    rows = math.ceil(len(arrays) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(titles) if titles else None,
                        horizontal_spacing=0.02, vertical_spacing=0.08 if titles else 0.02)
    global_lim = max(float(np.nanmax(np.abs(a))) for a in arrays) or 1.0
    for i, a in enumerate(arrays):
        lim = global_lim if shared_scale else (float(np.nanmax(np.abs(a))) or 1.0)
        zmin, zmax = (-lim, lim) if symmetric else (None, None)
        fig.add_trace(go.Heatmap(z=a[::-1], colorscale=colorscale, zmin=zmin, zmax=zmax,
                                 showscale=(i == len(arrays) - 1) and shared_scale),
                      row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(showticklabels=False, showgrid=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, scaleanchor=None)
    return _finish(fig, title, None, None, height=80 + rows * height_per_row)


def scatter_2d(points: Any, *, color: Any = None, symbol: Any = None, title: str | None = None,
               x_title: str | None = None, y_title: str | None = None, colorscale: str = "RdBu_r",
               names: Mapping[Any, str] | None = None, height: int | None = 420) -> go.Figure:
    """Points (N, 2). ``color`` numeric values get a colour scale; ``symbol`` groups get one trace each."""
    pts = to_numpy(points)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {pts.shape}")
    fig = go.Figure()
    groups = np.zeros(len(pts), dtype=int) if symbol is None else np.asarray(to_numpy(symbol), dtype=int)
    colours = None if color is None else to_numpy(color)
    lim = float(np.nanmax(np.abs(colours))) if colours is not None and len(colours) else 1.0
    for k, g in enumerate(np.unique(groups)):
        sel = groups == g
        marker: dict[str, Any] = dict(size=7, symbol=["circle", "x", "diamond", "square"][k % 4],
                                      line=dict(width=0.5, color="#333"))
        if colours is not None:
            marker.update(color=colours[sel], colorscale=colorscale, cmin=-lim, cmax=lim, showscale=(k == 0))
        label = (names or {}).get(int(g), str(g)) if symbol is not None else "points"
        fig.add_trace(go.Scatter(x=pts[sel, 0], y=pts[sel, 1], mode="markers", name=label, marker=marker))
    fig.update_layout(hovermode="closest")
    return _finish(fig, title, x_title, y_title, height)


def bar_chart(values: Mapping[str, float], *, title: str | None = None, y_title: str | None = None,
              height: int | None = 340) -> go.Figure:
    """Bars for ``{label: value}`` (long labels get the room they need below the axis)."""
    fig = go.Figure(go.Bar(x=list(values), y=[float(v) for v in values.values()], marker_color=PALETTE[0]))
    longest = max((len(str(k)) for k in values), default=0)
    fig.update_xaxes(automargin=True)
    if height is not None and longest > 10:
        height += 5 * (longest - 10)  # rotated labels take about 5 px per character
    return _finish(fig, title, None, y_title, height)


def decision_map(u: Any, v: Any, values: Any, *, points: Any = None, point_color: Any = None,
                 point_symbol: Any = None, title: str | None = None, x_title: str | None = None,
                 y_title: str | None = None, colorscale: str = "RdBu_r", height: int | None = 460) -> go.Figure:
    """A classifier's score ``values`` (len(v), len(u)) on a 2-D grid, with optional points on top.

    Points (N, 2) are coloured by ``point_color`` (e.g. labels in {-1, +1}); ``point_symbol`` (bool)
    marks a subset with crosses (e.g. flipped labels).
    """
    z = to_numpy(values)
    uu, vv = to_numpy(u), to_numpy(v)
    if z.shape != (len(vv), len(uu)):
        raise ValueError(f"values must have shape (len(v), len(u)) = {(len(vv), len(uu))}, got {z.shape}")
    lim = float(np.nanmax(np.abs(z))) or 1.0
    fig = go.Figure(go.Heatmap(x=uu, y=vv, z=z, colorscale=colorscale, zmin=-lim, zmax=lim, opacity=0.75,
                               colorbar=dict(title="score"), name="score"))
    fig.add_trace(go.Contour(x=uu, y=vv, z=z, contours=dict(start=0, end=0, coloring="none"),
                             line=dict(color="black", width=2), showscale=False, name="decision boundary",
                             hoverinfo="skip"))
    if points is not None:
        pts = to_numpy(points)
        colours = np.zeros(len(pts)) if point_color is None else to_numpy(point_color)
        marks = np.zeros(len(pts), dtype=bool) if point_symbol is None else np.asarray(to_numpy(point_symbol), bool)
        for name, sel, symbol in (("points", ~marks, "circle"), ("marked", marks, "x")):
            fig.add_trace(go.Scatter(x=pts[sel, 0], y=pts[sel, 1], mode="markers", name=name,
                                     marker=dict(symbol=symbol, size=7, color=colours[sel], colorscale=colorscale,
                                                 cmin=-1, cmax=1, line=dict(width=0.6, color="#222"))))
    # the legend above the plot, so it never sits on the colour bar at the right
    fig.update_layout(hovermode="closest", legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="left", x=0))
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return _finish(fig, title, x_title, y_title, height)
