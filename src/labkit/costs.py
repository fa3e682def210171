"""What a notebook costs to run: measured seconds per scale and device kind, kept in its metadata.

``metadata.labkit.cost`` maps a scale to the seconds one run took, per device kind, e.g.
``{"teach": {"cpu": 14.2}, "paper": {"cpu": 455.0, "cuda": 31.0}}``. CPU times are measured on the workbook's
reference machine (2 cores, one notebook at a time per core). ``labkit cost --from build/report --write``
records them from a report of ``labkit reproduce``; ``labkit reproduce --max-minutes N`` skips, and lists,
the notebooks whose recorded time exceeds N minutes at the chosen scale and device.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from labkit.catalog import NotebookInfo
from labkit.repro import slugify
from labkit.runtime import SCALES

KINDS = ("cpu", "cuda")


def device_kind(device: str) -> str:
    """``"cuda"`` for ``cuda`` / ``cuda:N`` (and ``auto`` when a GPU is there), else ``"cpu"``."""
    device = str(device)
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if device.startswith("cuda") else "cpu"


def recorded_seconds(info: NotebookInfo, *, scale: str, kind: str) -> float | None:
    """The recorded time of one run of ``info`` at ``scale`` on ``kind``, or None when never measured."""
    value = info.cost.get(scale, {}).get(kind)
    return None if value is None else float(value)


def format_minutes(seconds: float | None) -> str:
    if seconds is None:
        return "not measured"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 600 else f"{seconds / 60:.0f} min"


@dataclass(frozen=True)
class Skipped:
    """A notebook left out by ``--max-minutes``, with the reason the report prints."""

    name: str
    seconds: float
    reason: str


def split_by_budget(infos: Sequence[NotebookInfo], *, scale: str, device: str,
                    max_minutes: float | None) -> tuple[list[NotebookInfo], list[Skipped]]:
    """The notebooks to run and those whose recorded time at ``scale`` exceeds ``max_minutes`` (never a silent
    pass: each skipped one says how long it needs). Notebooks never measured run."""
    if max_minutes is None:
        return list(infos), []
    kind = device_kind(device)
    run, skipped = [], []
    for info in infos:
        seconds = recorded_seconds(info, scale=scale, kind=kind)
        if seconds is not None and seconds > 60 * max_minutes:
            skipped.append(Skipped(info.name, seconds, f"skipped: needs ~{format_minutes(seconds)} on "
                                   f"{kind.upper()} at SCALE={scale!r}, over --max-minutes {max_minutes:g}"))
        else:
            run.append(info)
    return run, skipped


def measured_costs(report_dir: Path) -> tuple[str, dict[str, dict[str, float]]]:
    """Read a ``labkit reproduce`` report: its scale and, per notebook that ran to the end, the seconds and the
    device kind it ran on (from the claim record's device)."""
    summary_file = Path(report_dir) / "summary.json"
    if not summary_file.is_file():
        raise ValueError(f"--from {str(report_dir)!r} holds no summary.json (the folder `labkit reproduce` wrote)")
    summary = json.loads(summary_file.read_text())
    scale = summary.get("scale")
    if scale not in SCALES:
        raise ValueError(f"{summary_file}: scale must be one of {SCALES}, got {scale!r}")
    costs: dict[str, dict[str, float]] = {}
    for row in summary["notebooks"]:
        if not row.get("seconds") or not ran_to_the_end(row):
            continue  # resumed, skipped or crashed runs measure nothing
        record = Path(report_dir) / "claims" / f"{slugify(row['notebook'])}.json"
        device = json.loads(record.read_text()).get("device", "cpu") if record.is_file() else "cpu"
        costs[row["notebook"]] = {device_kind(str(device)): float(row["seconds"])}
    return scale, costs


def ran_to_the_end(row: dict) -> bool:
    """A report row whose notebook ran to its reproduction check: it passed, or only an expected claim failed
    there (a claim not reproduced at this scale still costs the whole experiment; the cheap cells after the
    check are not timed then)."""
    if row.get("skipped"):
        return False
    if row.get("error") is None:
        return True
    return any(c.get("verdict") in ("NOT REPRODUCED", "CHECK FAILED") for c in row.get("claims", []))


def record_costs(infos: Sequence[NotebookInfo], report_dir: Path, *, write: bool) -> list[str]:
    """Put the times of a report into the notebooks' ``metadata.labkit.cost``; return one line per notebook."""
    import nbformat

    scale, costs = measured_costs(report_dir)
    lines = []
    for info in infos:
        measured = costs.get(info.name)
        if not measured:
            continue
        for kind, seconds in measured.items():
            lines.append(f"{info.name:50s} {scale:6s} {kind:5s} {seconds:8.1f} s")
        if write:
            nb = nbformat.read(info.path, as_version=4)
            cost = dict(nb.metadata["labkit"].get("cost", {}))
            cost[scale] = dict(cost.get(scale, {})) | {k: round(v, 1) for k, v in measured.items()}
            nb.metadata["labkit"]["cost"] = {s: cost[s] for s in SCALES if s in cost}
            nbformat.write(nb, info.path)
    return lines
