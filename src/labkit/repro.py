"""The reproduction verdict of a notebook: a list of claims, each compared with a criterion.

``check_claims`` shows the claims as a table (HTML in Jupyter, text elsewhere), writes a JSON record
when ``LABKIT_RESULTS_DIR`` is set (``labkit reproduce`` collects these into its report) and raises
``ClaimNotReproduced`` when a claim that is expected to hold does not.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from labkit.runtime import Run


class ClaimNotReproduced(AssertionError):
    """Raised by :func:`check_claims` when at least one expected claim does not hold."""

    def __init__(self, failed: Sequence[Claim]):
        self.failed = list(failed)
        lines = [f"{len(self.failed)} claim(s) not reproduced:"]
        lines += [f"  - {c.name}: measured {format_value(c.measured)}, needed {c.criterion}" for c in self.failed]
        super().__init__("\n".join(lines))


@dataclass
class Claim:
    """One checked claim of a paper.

    ``statement`` is the paper's claim in words, ``paper_value`` the paper's number where it gives
    one, ``measured`` our value, ``criterion`` the test as text (e.g. ``"gap < 1%"``), ``holds`` its
    outcome. ``expected=False`` marks a claim known not to reproduce at this scale: it is reported
    as "not reproduced" without failing the notebook (keep the check honest, explain in the notebook).
    """

    name: str
    statement: str
    measured: Any
    criterion: str
    holds: bool
    paper_value: Any = None
    expected: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("Claim name must be a non-empty string")
        if not isinstance(self.criterion, str) or not self.criterion:
            raise ValueError(f"Claim {self.name!r}: criterion must be a non-empty string")
        self.holds = to_bool(self.holds, what=f"Claim {self.name!r}: holds")
        self.measured = to_plain(self.measured)
        self.paper_value = to_plain(self.paper_value)

    kind = "claim"

    @property
    def verdict(self) -> str:
        if self.holds:
            return "reproduced" if self.expected else "reproduced (unexpectedly)"
        return "NOT REPRODUCED" if self.expected else "not reproduced (known at this scale)"

    @property
    def failed(self) -> bool:
        return self.expected and not self.holds


class Check(Claim):
    """An identity or a property that holds by construction (completeness of integrated gradients, a count
    fixed by the schedule, an implementation invariant). It is recorded and shown like a claim but counted
    apart: it verifies the code, it is not evidence for the paper. A failing check always fails the notebook."""

    kind = "check"

    def __init__(self, name: str, statement: str, measured: Any, criterion: str, holds: bool,
                 paper_value: Any = None) -> None:
        super().__init__(name, statement, measured, criterion, holds, paper_value, True)

    @property
    def verdict(self) -> str:
        return "check passed" if self.holds else "CHECK FAILED"


def claim_from_record(entry: dict[str, Any]) -> Claim:
    """A :class:`Claim` or :class:`Check` back from its JSON record."""
    fields = {k: v for k, v in entry.items() if k not in ("verdict", "kind")}
    if entry.get("kind") == "check":
        fields.pop("expected", None)
        return Check(**fields)
    return Claim(**fields)


def to_bool(value: Any, *, what: str) -> bool:
    """Turn a Python/NumPy/torch boolean scalar into ``bool``; anything else is a ``TypeError``."""
    if hasattr(value, "item") and getattr(value, "numel", lambda: 1)() == 1:
        value = value.item()
    if isinstance(value, bool):
        return value
    if type(value).__name__ == "bool_":  # numpy.bool_
        return bool(value)
    raise TypeError(f"{what} must be a boolean, got {type(value).__name__}")


def to_plain(value: Any) -> Any:
    """Tensors / NumPy scalars to plain Python numbers so the record is JSON-serialisable."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return value.tolist()
    return value


def format_value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


def claims_table_text(claims: Sequence[Claim]) -> str:
    """A plain-text table of claims (what the terminal and the report print)."""
    rows = [("claim", "paper", "measured", "criterion", "verdict")]
    rows += [(c.name, format_value(c.paper_value), format_value(c.measured), c.criterion, c.verdict) for c in claims]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    line = lambda r: "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([line(rows[0]), line(tuple("-" * w for w in widths))] + [line(r) for r in rows[1:]])


def claims_table_html(claims: Sequence[Claim]) -> str:
    names = ("claim", "paper says", "paper", "measured", "criterion", "verdict")
    head = "".join(f"<th style='text-align:left'>{h}</th>" for h in names)
    body = []
    for c in claims:
        colour = "#1a7f37" if c.holds else ("#cf222e" if c.expected else "#9a6700")
        cells = (c.name, c.statement, format_value(c.paper_value), format_value(c.measured), c.criterion)
        tds = "".join(f"<td style='text-align:left'>{html.escape(str(x))}</td>" for x in cells)
        body.append(f"<tr>{tds}<td style='color:{colour};font-weight:bold'>{html.escape(c.verdict)}</td></tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with the workbook
        return False
    shell = get_ipython()
    return shell is not None and shell.__class__.__name__ == "ZMQInteractiveShell"


def slugify(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "notebook"


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to ``path`` through a temporary file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=2)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def claim_record(claims: Sequence[Claim], *, run: Run | None = None, notebook: str | None = None) -> dict[str, Any]:
    """The JSON record of a notebook's claims: what produced them (from ``run``) and each claim's verdict.

    Without a ``run`` the seed and scale come from ``LABKIT_SEED`` / ``LABKIT_SCALE`` (set by
    ``labkit reproduce``) and are None elsewhere.
    """
    if run is not None:
        produced = run.record()
        produced["notebook"] = notebook or produced["notebook"] or "notebook"
    else:
        seed = os.environ.get("LABKIT_SEED")
        produced = {"notebook": notebook or os.environ.get("LABKIT_NOTEBOOK") or "notebook",
                    "seed": int(seed) if seed and seed.isdigit() else None,
                    "scale": os.environ.get("LABKIT_SCALE")}
    return produced | {"claims": [asdict(c) | {"kind": c.kind, "verdict": c.verdict} for c in claims]}


def check_claims(claims: Sequence[Claim], *, run: Run | None = None, notebook: str | None = None) -> None:
    """Show the claims, record them for ``labkit reproduce`` and raise if an expected one fails.

    ``run`` (the notebook's :class:`labkit.runtime.Run`) puts its seed, scale, device, versions and git
    commit into the record, which is written to ``$LABKIT_RESULTS_DIR/<notebook>.json`` when that
    variable is set, whoever runs the notebook (``labkit reproduce``, plain papermill, JupyterLab).
    ``notebook`` names the record; by default the run's notebook, else ``LABKIT_NOTEBOOK``.
    """
    claims = list(claims)
    if not claims:
        raise ValueError("claims must hold at least one Claim")
    for c in claims:
        if not isinstance(c, Claim):
            raise TypeError(f"claims must be Claim objects, got {type(c).__name__}")
    if run is not None and not isinstance(run, Run):
        raise TypeError(f"run must be the labkit.runtime.Run of the notebook (labkit.start(...)), "
                        f"got {type(run).__name__}")
    if in_notebook():
        from IPython.display import HTML, display

        display(HTML(claims_table_html(claims)))
    else:
        print(claims_table_text(claims))

    results_dir = os.environ.get("LABKIT_RESULTS_DIR")
    if results_dir:
        record = claim_record(claims, run=run, notebook=notebook)
        write_json_atomic(Path(results_dir) / f"{slugify(record['notebook'])}.json", record)

    failed = [c for c in claims if c.failed]
    if failed:
        raise ClaimNotReproduced(failed)


SWEEP_FILE = "ROBUSTNESS.json"
SWEEP_FILES = {"teach": SWEEP_FILE, "paper": "ROBUSTNESS-paper.json"}  # the committed sweep of each scale


def committed_sweep(path: str | Path | None = None, *, scale: str = "teach") -> dict[str, Any] | None:
    """The seed sweep of ``scale`` committed next to the notebooks (``notebooks/ROBUSTNESS.json`` for teach,
    ``notebooks/ROBUSTNESS-paper.json`` for paper, written by ``make robustness [SCALE=paper]``), or the sweep at
    ``path``; None when there is none."""
    if scale not in SWEEP_FILES:
        raise ValueError(f"scale must be one of {sorted(SWEEP_FILES)}, got {scale!r}")
    if path is None:
        path = Path(__file__).resolve().parent / "notebooks" / SWEEP_FILES[scale]
    path = Path(path)
    if not path.is_file():
        return None
    return json.loads(path.read_text())


class SeedTable:
    """The rows of one notebook in a sweep: per claim, its value and verdict on every seed (HTML in Jupyter)."""

    def __init__(self, notebook: str, payload: dict[str, Any] | None, *, scale: str = "teach"):
        self.notebook = notebook
        self.seeds = list(payload["seeds"]) if payload else []
        self.scale = payload.get("scale", scale) if payload else scale
        self.rows = [c for c in (payload or {}).get("claims", []) if c["notebook"] == notebook]

    def _cells(self) -> list[tuple[str, ...]]:
        out = []
        for c in self.rows:
            per_seed = {s: (m, h) for s, m, h in zip(c["seeds"], c["measured"], c["holds"], strict=True)}
            values = tuple(format_value(per_seed[s][0]) + ("" if per_seed[s][1] else " ✗") if s in per_seed else "—"
                           for s in self.seeds)
            kind = c["kind"] if c["expected"] else "claim (known not to reproduce)"
            out.append((c["name"], kind, c["criterion"], *values, c["verdict"]))
        return out

    def _header(self) -> tuple[str, ...]:
        return ("claim", "kind", "criterion", *(f"seed {s}" for s in self.seeds), "verdict")

    def _empty(self) -> str:
        if self.scale == "paper":
            return (f"{self.notebook}: not in the committed paper-scale sweep (notebooks/{SWEEP_FILES['paper']}): "
                    "its claims were judged on seed 0 only at this scale; `make robustness SCALE=paper "
                    f'NOTEBOOKS="notebooks/{self.notebook}.ipynb"` sweeps it')
        return (f"{self.notebook}: no rows in the last committed sweep (notebooks/{SWEEP_FILE}); "
                "run `make robustness` to regenerate it")

    def __str__(self) -> str:
        if not self.rows:
            return self._empty()
        rows = [self._header(), *self._cells()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        if not self.rows:
            return f"<p><i>{html.escape(self._empty())}</i></p>"
        head = "".join(f"<th style='text-align:left'>{html.escape(h)}</th>" for h in self._header())
        body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{html.escape(x)}</td>" for x in r) + "</tr>"
                       for r in self._cells())
        caption = (f"Seeds {', '.join(map(str, self.seeds))} at SCALE=&quot;{html.escape(str(self.scale))}&quot; "
                   f"(generated by <code>make robustness</code>; ✗ marks a seed where the criterion failed)")
        return f"<table><caption style='text-align:left'>{caption}</caption><thead><tr>{head}</tr></thead>" \
               f"<tbody>{body}</tbody></table>"


def seed_table(notebook: str, *, scale: str = "teach", path: str | Path | None = None) -> SeedTable:
    """The spread of ``notebook``'s claims over seeds at ``scale``, read from the committed sweep of that scale
    (never typed by hand); a notebook passes ``scale=run.scale``.

    ``notebook`` is ``"<pillar>/<stem>"``, e.g. ``"sam/01_sharpness_aware_minimization"``.
    """
    if not isinstance(notebook, str) or notebook.count("/") != 1:
        raise ValueError(f"notebook must look like 'pillar/NN_name', got {notebook!r}")
    return SeedTable(notebook, committed_sweep(path, scale=scale), scale=scale)
