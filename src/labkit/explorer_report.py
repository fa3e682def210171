"""The explorers report of ``labkit reproduce --explorers``: per notebook, what each control recomputes, whether
moving it changed the figure, and the median response time (a benchmark on the machine that ran it)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from labkit.runner import explorer_probe_path

_PREFIX = "labkit."


def _short(qualified: str) -> str:
    """``labkit.attributions.gradients.integrated_gradients`` -> ``attributions.integrated_gradients``."""
    parts = qualified.removeprefix(_PREFIX).split(".")
    return f"{parts[0]}.{parts[-1]}" if len(parts) > 2 else ".".join(parts)


def notebook_problems(probes: list[dict]) -> list[str]:
    """What the harness found wrong with one notebook's explorers (empty when every control works and every
    explorer has a control that computes with labkit)."""
    if not probes:
        return ["no explorer was created (labkit.widgets.explore)"]
    problems = [p for e in probes for p in e["problems"]]
    problems += [f"explorer {e['index']}: no control calls labkit when it moves (the explorer replays precomputed "
                 "values)" for e in probes if not e["live_controls"]]
    return problems


def write_explorer_report(out_dir: Path, names: list[str]) -> tuple[str, bool]:
    """Write ``out_dir/explorers.md`` from the probes of ``names``; return (text, every explorer fine)."""
    rows, ok, medians = [], True, []
    for name in names:
        path = explorer_probe_path(out_dir, name)
        probes = json.loads(path.read_text()) if path.exists() else []
        problems = notebook_problems(probes) if path.exists() else ["not exercised (the notebook did not finish)"]
        ok &= not problems
        for e in probes:
            medians.append(e["median_seconds"])
            for c in e["controls"]:
                computes = ", ".join(_short(f) for f in c["computes"]) or "(replays)"
                times = f"{statistics.median(c['seconds']):.2f}" if c["seconds"] else "-"
                changed = "yes" if c["data_changed"] else "NO"
                rows.append(f"| {name} | {e['index']} ({e['mode']}) | {c['control']} | {computes} | {changed} | "
                            f"{times} | {e['median_seconds']:.2f} |")
        rows += [f"| {name} | | | PROBLEM: {p} | | | |" for p in problems]
    head = ["# Explorers: what each control recomputes and how fast it answers", "",
            "Seconds are medians of the re-draws for a new setting (the harness moves each control to two other "
            "values, the first under a profiler, then back, which is not counted); they depend on the machine "
            "and its load.", "",
            "| notebook | explorer | control | recomputes (labkit calls) | data changed | median s | explorer s |",
            "|---|---|---|---|---|---|---|"]
    overall = f"median over explorers {statistics.median(medians):.2f} s, slowest {max(medians):.2f} s" \
        if medians else "no explorer measured"
    verdict = ("EVERY EXPLORER COMPUTES AND REDRAWS" if ok else "SOME EXPLORERS FAILED") + f": {overall}"
    text = "\n".join([*head, *rows, "", verdict, ""])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "explorers.md").write_text(text)
    return text, ok
