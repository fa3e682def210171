"""Shared test set-up: quiet progress bars, one thread, notebook grouping for xdist, notebook timings."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import pytest

os.environ.setdefault("LABKIT_PROGRESS", "0")
ROOT = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark nbval items (notebook cells) as ``notebook``; ``--dist loadfile`` keeps one notebook's cells
    on one xdist worker (they share one kernel)."""
    for item in items:
        if str(item.path).endswith(".ipynb"):
            item.add_marker(pytest.mark.notebook)


def _notebook_key(report: pytest.TestReport) -> tuple[str, str] | None:
    path = report.nodeid.split("::")[0]
    if path.endswith(".ipynb"):
        return "nbval (as shipped)", path.split("@")[0]
    if "test_reproduce_notebook[" in report.nodeid:
        return "labkit reproduce (seed 1)", report.nodeid.split("[", 1)[1].rstrip("]").split("@")[0]
    return None


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001
    """Print each notebook's run time (summed over its cells for nbval)."""
    totals: dict[tuple[str, str], float] = defaultdict(float)
    failed: set[tuple[str, str]] = set()
    for reports in terminalreporter.stats.values():
        for rep in reports:
            if not isinstance(rep, pytest.TestReport):
                continue
            key = _notebook_key(rep)
            if key is None:
                continue
            totals[key] += rep.duration
            if rep.failed:
                failed.add(key)
    if not totals:
        return
    terminalreporter.section("notebook run times")
    for (kind, name), seconds in sorted(totals.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        mark = "FAILED" if (kind, name) in failed else "ok"
        terminalreporter.write_line(f"{seconds:7.1f} s  {mark:6s}  {kind:26s}  {name}")
