"""Recorded notebook costs and the --max-minutes budget (no kernel started here)."""

from pathlib import Path

import pytest

from labkit.catalog import NotebookInfo, readme_index
from labkit.costs import device_kind, format_minutes, recorded_seconds, split_by_budget
from labkit.sweep import TaskResult, write_robustness


def info(stem: str, cost: dict) -> NotebookInfo:
    return NotebookInfo(path=Path(f"/wb/notebooks/grokking/{stem}.ipynb"), pillar="grokking", title=stem,
                        authors="A", year=2024, url="https://arxiv.org/abs/1", claim="c", cost=cost)


def test_split_by_budget_skips_only_measured_notebooks_over_budget():
    slow = info("01_slow", {"paper": {"cpu": 4320.0, "cuda": 60.0}, "teach": {"cpu": 20.0}})
    fast, unmeasured = info("02_fast", {"paper": {"cpu": 300.0}}), info("03_new", {})
    run, skipped = split_by_budget([slow, fast, unmeasured], scale="paper", device="cpu", max_minutes=10)
    assert [i.name for i in run] == ["grokking/02_fast", "grokking/03_new"]
    assert [s.name for s in skipped] == ["grokking/01_slow"]
    assert "needs ~72 min on CPU at SCALE='paper'" in skipped[0].reason
    assert split_by_budget([slow], scale="paper", device="cuda:0", max_minutes=10)[1] == []  # 60 s on a GPU
    assert split_by_budget([slow], scale="teach", device="cpu", max_minutes=10)[1] == []
    assert split_by_budget([slow], scale="paper", device="cpu", max_minutes=None) == ([slow], [])


def test_small_helpers():
    assert device_kind("cuda:1") == "cuda" and device_kind("cpu") == "cpu"
    assert format_minutes(None) == "not measured" and format_minutes(45.2) == "45 s"
    assert format_minutes(4320) == "72 min" and format_minutes(139) == "2.3 min"  # never "~2 min" over a 2-min budget
    assert recorded_seconds(info("x", {"teach": {"cpu": 3}}), scale="teach", kind="cpu") == 3.0
    assert recorded_seconds(info("x", {}), scale="teach", kind="cpu") is None


def test_readme_index_shows_the_recorded_times():
    text = readme_index([info("01_slow", {"paper": {"cpu": 4320.0}, "teach": {"cpu": 20.0}})], root=Path("/wb"))
    assert "CPU time: teach / paper" in text and "| 20 s / 72 min |" in text


def test_robustness_report_lists_what_the_budget_skipped(tmp_path):
    result = TaskResult("grokking/02_fast", 0, True, 1.0, None,
                        {"claims": [{"name": "c", "kind": "claim", "expected": True, "criterion": "x",
                                     "statement": "s", "holds": True, "measured": 1}]}, None)
    text, ok = write_robustness(tmp_path, [result], seeds=[0], scale="paper",
                                skipped={"grokking/01_slow": "skipped: needs ~72 min on CPU"})
    assert ok and "Notebooks skipped by --max-minutes" in text and "needs ~72 min" in text


@pytest.mark.parametrize("bad", [{"paper": 3}, [1]])
def test_bad_cost_metadata_is_a_clear_error(tmp_path, bad):
    import nbformat

    from labkit.catalog import read_info

    nb = nbformat.v4.new_notebook()
    nb.metadata["labkit"] = dict(pillar="sam", title="t", authors="a", year=2020, url="https://x", claim="c",
                                 cost=bad)
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(ValueError, match="metadata.labkit.cost must map"):
        read_info(path)


def test_a_run_that_reached_its_reproduction_check_is_timed_even_if_a_claim_failed():
    from labkit.costs import ran_to_the_end

    assert ran_to_the_end({"error": None, "claims": []})
    assert ran_to_the_end({"error": "  - c: measured 1, needed x", "claims": [{"verdict": "NOT REPRODUCED"}]})
    assert ran_to_the_end({"error": "  - k: measured 1, needed x", "claims": [{"verdict": "CHECK FAILED"}]})
    assert not ran_to_the_end({"error": "KeyError: 'no evaluation at step None'", "claims": []})
    assert not ran_to_the_end({"error": None, "skipped": "skipped: needs ~72 min", "claims": []})
