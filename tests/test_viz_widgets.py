import ipywidgets as W
import plotly.graph_objects as go
import pytest
import torch

from labkit.training import History
from labkit.viz import bar_chart, decision_map, heatmap_grid, history_figure, line_curves, scatter_2d
from labkit.widgets import explore


def test_line_curves_take_tensors_and_pairs():
    fig = line_curves({"a": torch.arange(4.0), "b": ([1, 2, 3], torch.tensor([3.0, 2.0, 1.0]))}, title="t", log_y=True)
    assert [t.name for t in fig.data] == ["a", "b"]
    assert list(fig.data[0].x) == [0, 1, 2, 3] and fig.layout.yaxis.type == "log"
    with pytest.raises(ValueError, match="same shape"):
        line_curves({"bad": ([1, 2], [1, 2, 3])})


def test_history_figure_uses_eval_steps():
    h = History()
    for s in (0, 10, 20):
        h.record(s, {"acc": s / 20})
    fig = history_figure(h, ["acc"], labels={"acc": "accuracy"})
    assert list(fig.data[0].x) == [0, 10, 20] and fig.data[0].name == "accuracy"


def test_heatmap_grid_and_errors():
    maps = [torch.randn(8, 8, requires_grad=True) for _ in range(3)]
    fig = heatmap_grid(maps, titles=["a", "b", "c"], cols=2)
    assert len(fig.data) == 3 and all(isinstance(t, go.Heatmap) for t in fig.data)
    assert fig.data[0].zmin == -fig.data[0].zmax  # symmetric colour scale, never min-max scaled data
    with pytest.raises(ValueError, match="2-D"):
        heatmap_grid([torch.zeros(2, 2, 2)])
    with pytest.raises(ValueError, match="titles"):
        heatmap_grid(maps, titles=["only one"])


def test_scatter_decision_map_and_bars():
    fig = scatter_2d(torch.randn(10, 2), color=torch.randn(10), symbol=torch.arange(10) % 2, names={0: "x", 1: "y"})
    assert [t.name for t in fig.data] == ["x", "y"]
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        scatter_2d(torch.randn(5, 3))
    u = torch.linspace(-1, 1, 5)
    v = torch.linspace(-1, 1, 4)
    fig = decision_map(u, v, torch.randn(4, 5), points=torch.randn(6, 2), point_color=torch.ones(6),
                       point_symbol=torch.tensor([True, False] * 3))
    assert isinstance(fig.data[0], go.Heatmap)
    with pytest.raises(ValueError, match="values must have shape"):
        decision_map(u, v, torch.randn(5, 5))
    assert list(bar_chart({"a": 1, "b": 2}).data[0].y) == [1.0, 2.0]


def test_explorer_redraws_figure_in_place_when_a_control_moves():
    def draw(k, name):
        return line_curves({name: [i ** k for i in range(4)]}, title=f"k = {k}")

    ex = explore(draw, k=W.IntSlider(value=1, min=0, max=3), name=W.Dropdown(options=["a", "b"]))
    figure = ex.figure
    assert figure.layout.title.text == "k = 1" and list(figure.data[0].y) == [0, 1, 2, 3]
    ex.controls["k"].value = 2
    assert ex.figure is figure  # updated in place, not replaced
    assert figure.layout.title.text == "k = 2" and list(figure.data[0].y) == [0, 1, 4, 9]
    ex.controls["name"].value = "b"
    assert figure.data[0].name == "b"
    assert ex.controls["k"].continuous_update is False


def test_explorer_handles_a_changing_number_of_traces_and_reports_errors():
    def draw(n):
        if n < 0:
            raise RuntimeError("negative")
        return line_curves({f"c{i}": [i, i + 1] for i in range(n)})

    ex = explore(draw, n=W.IntSlider(value=1, min=-1, max=3))
    ex.controls["n"].value = 3
    assert len(ex.figure.data) == 3
    with pytest.raises(RuntimeError):
        ex.controls["n"].value = -1
    assert "negative" in ex.status.value
    with pytest.raises(ValueError, match="at least one"):
        explore(draw)
    with pytest.raises(TypeError, match="value widget"):
        explore(draw, n=W.Button())
    with pytest.raises(TypeError, match="plotly Figure"):
        explore(lambda n: None, n=W.IntSlider())


def test_button_mode_runs_in_a_thread_reports_progress_and_stops_early():
    import threading

    from labkit.widgets import Progress

    started, release = threading.Event(), threading.Event()

    def draw(n, progress):
        assert isinstance(progress, Progress)
        done = 0
        for i in range(n):
            if progress(i + 1, n):
                break
            done = i + 1
            if n == 1000:  # the long run waits inside so the test can press Stop while it runs
                started.set()
                release.wait(5)
        return line_curves({"done": [float(done), float(done)]}, title=f"{done} of {n}")

    ex = explore(draw, n=W.IntSlider(value=3, min=1, max=1000), button="Train")
    assert list(ex.figure.data[0].y) == [3.0, 3.0] and ex.progress_bar.value == 1.0
    ex.controls["n"].value = 5
    assert list(ex.figure.data[0].y) == [3.0, 3.0]  # a control only marks the figure stale in button mode
    assert "press <b>Train</b>" in ex.status.value
    ex.start()
    ex.wait(10)
    assert list(ex.figure.data[0].y) == [5.0, 5.0] and ex.status.value.startswith("done in")
    assert not ex.run_button.disabled and ex.stop_button.disabled
    ex.controls["n"].value = 1000
    ex.start()
    assert started.wait(10)
    ex.stop()  # what the Stop button does
    release.set()
    ex.wait(10)
    assert list(ex.figure.data[0].y) == [1.0, 1.0] and ex.status.value.startswith("stopped early")


def test_button_mode_shows_errors_and_wait_reraises_them():
    def draw(n):
        if n > 1:
            raise RuntimeError("too many")
        return line_curves({"a": [0.0, 1.0]})

    ex = explore(draw, n=W.IntSlider(value=1, min=0, max=3), button="Run")
    ex.controls["n"].value = 2
    ex.start()
    with pytest.raises(RuntimeError, match="too many"):
        ex.wait(10)
    assert "too many" in ex.status.value and not ex.run_button.disabled
    with pytest.raises(ValueError, match="button must be None"):
        explore(draw, n=W.IntSlider(), button="  ")


def test_harness_moves_every_control_and_finds_what_computes():
    from labkit.autograd import flatten
    from labkit.widgets import explorers
    from labkit.widgets.harness import exercise

    def computing(k, name):  # calls into labkit when k moves
        total = float(flatten([torch.ones(3) * k]).sum())
        return line_curves({name: [0.0, total]})

    ex = explore(computing, k=W.IntSlider(value=1, min=0, max=3), name=W.Dropdown(options=["a", "b", "c"]))
    assert ex in explorers()
    probe = exercise(ex)
    k, name = probe.controls
    assert k.control == "k" and k.values == ("2", "0") and k.data_changed and "labkit.autograd.flatten" in k.computes
    assert name.values == ("b", "c") and name.data_changed
    assert probe.live_controls == ("k", "name") and not probe.problems
    assert len(k.seconds) == 2 and len(k.return_seconds) == 1 and probe.median_seconds >= 0
    assert ex.values == {"k": 1, "name": "a"}  # left as found

    table = {0.5: [1.0, 2.0], 1.0: [1.0, 2.0], 2.0: [3.0, 4.0]}
    replay = explore(lambda s, log: line_curves({"y": table[s]}, title=f"{s} {log}"),
                     s=W.SelectionSlider(options=list(table), value=1.0), log=W.Checkbox(value=False))
    probe = exercise(replay)
    assert probe.live_controls == ()  # a lookup in precomputed values computes nothing
    assert any("never changed the figure's data" in p and "'log'" in p for p in probe.problems)  # title only
    ex.close()
    replay.close()
    assert ex not in explorers() and replay not in explorers()


def test_harness_records_an_error_instead_of_stopping():
    from labkit.widgets.harness import exercise

    def draw(x):
        if x > 0.11:
            raise ValueError("x too large")
        return line_curves({"y": [0.0, x]})

    probe = exercise(explore(draw, x=W.FloatLogSlider(value=0.1, base=10, min=-2, max=0, step=0.1)))
    (c,) = probe.controls
    assert c.error == "ValueError: x too large" and probe.problems
