"""Reproduction over several seeds: the notebook x seed grid on local processes or on a Dask cluster.

Each task carries the notebook's text, runs it with papermill in a temporary folder of the worker and returns
its claim record and executed notebook as its result, so workers need no shared file system. The client
writes the report: ``robustness.md`` / ``robustness.json`` with, per claim, one verdict and one measured value
per seed and an overall verdict (robust on every seed, fragile on some, not reproduced on any).

``executor="dask"`` starts a ``dask.distributed.LocalCluster`` of single-thread worker processes, or connects to
a running scheduler at ``address``: the same code runs on a laptop and on a cluster. A task sets environment
variables for its kernel, so two tasks never share a process (one thread per worker).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.catalog import NotebookInfo
from labkit.repro import slugify, write_json_atomic
from labkit.runner import checkpoint_folder, kernel_environment

EXECUTORS = ("process", "dask")


@dataclass(frozen=True)
class Task:
    """One notebook at one seed, self-contained (the notebook travels as text)."""

    name: str
    filename: str
    source: str
    seed: int
    scale: str
    device: str
    timeout: int
    checkpoints: str | None = None  # the notebook's checkpoint folder (Run.checkpoint), on the worker's filesystem


@dataclass(frozen=True)
class TaskResult:
    name: str
    seed: int
    ok: bool
    seconds: float
    error: str | None
    record: dict[str, Any] | None
    executed: str | None


def parse_seeds(text: str) -> list[int]:
    """``"0-4"`` -> [0, 1, 2, 3, 4]; ``"0,2,5"`` -> [0, 2, 5]; ranges and lists combine (``"0-2,7"``)."""
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(p) for p in part.split("-", 1))
                if lo > hi:
                    raise ValueError
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise ValueError(f"seeds must look like '0-4' or '0,2,5' (non-negative integers), got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct non-negative integers, got {text!r}")
    return seeds


def run_task(task: Task) -> TaskResult:
    """Run one notebook at one seed in a temporary folder; return its record and executed notebook."""
    import papermill as pm

    with tempfile.TemporaryDirectory(prefix="labkit-task-") as tmp:
        folder = Path(tmp)
        source = folder / "notebooks" / task.filename
        source.parent.mkdir(parents=True)
        source.write_text(task.source)
        results, target = folder / "claims", folder / "executed.ipynb"
        env = dict(LABKIT_RESULTS_DIR=str(results), LABKIT_NOTEBOOK=task.name, LABKIT_SEED=str(task.seed),
                   LABKIT_SCALE=task.scale, LABKIT_PROGRESS="0")
        if task.checkpoints is not None:  # a task cut off (timeout, lost worker) resumes its long runs when re-run
            env["LABKIT_CHECKPOINTS"] = task.checkpoints
        start, error = time.perf_counter(), None
        with kernel_environment(env):  # one task per process at a time: the kernel inherits these
            try:
                pm.execute_notebook(str(source), str(target), cwd=str(source.parent), progress_bar=False,
                                    parameters={"SEED": task.seed, "SCALE": task.scale, "DEVICE": task.device},
                                    execution_timeout=task.timeout, kernel_name="python3")
            except Exception as exc:  # papermill re-raises the notebook's error: keep its last line
                lines = str(exc).strip().splitlines()
                error = lines[-1] if lines else repr(exc)
        seconds = time.perf_counter() - start
        record_file = results / f"{slugify(task.name)}.json"
        record = json.loads(record_file.read_text()) if record_file.exists() else None
        executed = target.read_text() if target.exists() else None
    return TaskResult(task.name, task.seed, error is None, seconds, error, record, executed)


def make_tasks(infos: Sequence[NotebookInfo], seeds: Sequence[int], *, scale: str, device: str,
               timeout: int, out_dir: Path | None = None) -> list[Task]:
    """One task per notebook and seed; with ``out_dir`` each notebook keeps its long runs' checkpoints in the
    same folder as under ``labkit reproduce`` (:func:`labkit.runner.checkpoint_folder`; seed and scale are part of
    the file names)."""
    return [Task(i.name, f"{i.pillar}/{i.path.name}", i.path.read_text(), s, scale, device, timeout,
                 None if out_dir is None else str(checkpoint_folder(out_dir, i.name).resolve()))
            for i in infos for s in seeds]


def execute(tasks: Sequence[Task], *, executor: str = "process", jobs: int = 1, address: str | None = None,
            echo: Callable[[str], None] = print) -> list[TaskResult]:
    """Run the tasks on local processes or on Dask; results come back in completion order."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    results: list[TaskResult] = []

    def report(r: TaskResult) -> None:
        results.append(r)
        status = "ok  " if r.ok else "FAIL"
        echo(f"  {status}  {r.name}  seed {r.seed}  {r.seconds:6.1f} s" + (f"  ({r.error})" if r.error else ""))

    if executor == "process":
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for r in pool.map(run_task, tasks):
                report(r)
        return results

    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if address is None:
        cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, dashboard_address=None,
                               host="127.0.0.1")
    try:
        with Client(address or cluster) as client:
            futures = [client.submit(run_task, t, pure=False, key=f"{slugify(t.name)}-seed{t.seed}-{i}")
                       for i, t in enumerate(tasks)]
            for future in as_completed(futures):
                report(future.result())
    finally:
        if cluster is not None:
            cluster.close()
    return results


def verdict(holds: Sequence[bool]) -> str:
    if all(holds):
        return "robust"
    return "fragile" if any(holds) else "not reproduced"


def write_robustness(out_dir: Path, results: Sequence[TaskResult], *, seeds: Sequence[int],
                     scale: str, wall_seconds: float | None = None,
                     skipped: dict[str, str] | None = None) -> tuple[str, bool]:
    """Write ``robustness.json`` / ``.md`` and each task's record and executed notebook under ``out_dir``;
    return (markdown, every expected claim held on every seed and every notebook ran)."""
    by_key: dict[tuple[str, str], dict[str, Any]] = {}
    failures = []
    for r in sorted(results, key=lambda r: (r.name, r.seed)):
        seed_dir = out_dir / f"seed-{r.seed}"
        if r.record is not None:
            write_json_atomic(seed_dir / "claims" / f"{slugify(r.name)}.json", r.record)
        if r.executed is not None:
            path = seed_dir / f"{r.name}.ipynb"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(r.executed)
        verdicts = [c.get("verdict") for c in (r.record or {}).get("claims", [])]
        claim_failed = "NOT REPRODUCED" in verdicts or "CHECK FAILED" in verdicts
        if not r.ok and not claim_failed:  # a crash, not a claim that failed its check (that is in the table)
            failures.append(f"{r.name} (seed {r.seed}): {r.error or 'no claim record'}")
        for c in (r.record or {}).get("claims", []):
            entry = by_key.setdefault((r.name, c["name"]), {
                "notebook": r.name, "name": c["name"], "kind": c.get("kind", "claim"),
                "expected": c.get("expected", True), "criterion": c["criterion"], "statement": c["statement"],
                "paper_value": c.get("paper_value"), "seeds": [], "holds": [], "measured": []})
            entry["seeds"].append(r.seed)
            entry["holds"].append(bool(c["holds"]))
            entry["measured"].append(c["measured"])
    claims = list(by_key.values())
    for c in claims:
        missing = len(seeds) - len(c["holds"])
        c["verdict"] = verdict(c["holds"]) if not missing else f"{verdict(c['holds'])} ({missing} seed(s) missing)"
    bad = [c for c in claims if c["expected"] and c["kind"] == "claim" and not all(c["holds"])]
    ok = not bad and not failures and all(len(c["holds"]) == len(seeds) for c in claims) and bool(results)
    runs = [{"notebook": r.name, "seed": r.seed, "seconds": round(r.seconds, 1), "ok": r.ok}
            for r in sorted(results, key=lambda r: (r.name, r.seed))]
    payload = {"seeds": list(seeds), "scale": scale, "ok": ok, "failures": failures,
               "wall_seconds": None if wall_seconds is None else round(wall_seconds, 1), "runs": runs,
               "skipped": dict(skipped or {}),
               "claims": claims}
    write_json_atomic(out_dir / "robustness.json", payload)
    text = robustness_markdown(payload)
    (out_dir / "robustness.md").write_text(text)
    return text, ok


def merge_robustness(base: dict[str, Any], update: dict[str, Any], *, keep: Sequence[str]) -> dict[str, Any]:
    """The published sweep ``base`` with every row of the notebooks ``update`` swept replaced by ``update``'s, and
    rows of notebooks no longer in ``keep`` (the workbook's notebooks) dropped. Both must share seeds and scale;
    ``wall_seconds`` becomes the sum of the wall times of the sweeps whose rows remain (``parts`` lists each
    sweep's notebooks and wall time)."""
    for key in ("seeds", "scale"):
        if base[key] != update[key]:
            raise ValueError(f"cannot merge a sweep with {key} {update[key]} into one with {key} {base[key]}")
    swept = {r["notebook"] for r in update["runs"]} | set(update.get("skipped", {}))
    kept = set(keep) - swept

    def rows(payload: dict[str, Any], field: str) -> list[Any]:
        return [r for r in payload[field] if r["notebook"] in kept]

    claims = rows(base, "claims") + update["claims"]
    runs = rows(base, "runs") + update["runs"]
    failures = [f for f in base["failures"] if f.split(" (seed")[0] in kept] + update["failures"]
    skipped = {k: v for k, v in base.get("skipped", {}).items() if k in kept} | dict(update.get("skipped", {}))
    order = {name: i for i, name in enumerate(keep)}
    claims.sort(key=lambda c: order.get(c["notebook"], len(order)))
    runs.sort(key=lambda r: (order.get(r["notebook"], len(order)), r["seed"]))
    n = len(base["seeds"])
    bad = [c for c in claims if c["expected"] and c["kind"] == "claim" and not all(c["holds"])]
    ok = not bad and not failures and all(len(c["holds"]) == n for c in claims)
    # each part: the notebooks whose rows come from one sweep, and that sweep's wall time
    legacy = [{"notebooks": sorted({r["notebook"] for r in base["runs"]}), "wall_seconds": base.get("wall_seconds")}]
    parts = [{**p, "notebooks": [n for n in p["notebooks"] if n in kept]} for p in base.get("parts", legacy)]
    parts = [p for p in parts if p["notebooks"]]
    parts.append({"notebooks": sorted(swept), "wall_seconds": update.get("wall_seconds")})
    wall = sum(p["wall_seconds"] or 0.0 for p in parts)
    return {"seeds": base["seeds"], "scale": base["scale"], "ok": ok, "failures": failures,
            "wall_seconds": round(wall, 1), "parts": parts, "runs": runs, "skipped": skipped, "claims": claims}


def merge_into(published: Path, update: dict[str, Any], *, keep: Sequence[str]) -> tuple[str, bool]:
    """Merge a sweep into the published ``robustness.json`` at ``published`` (written there with its ``.md``)."""
    base = json.loads(published.read_text()) if published.exists() else None
    payload = update if base is None else merge_robustness(base, update, keep=keep)
    write_json_atomic(published, payload)
    text = robustness_markdown(payload)
    published.with_suffix(".md").write_text(text)
    return text, payload["ok"]


def _fmt(value: Any) -> str:
    from labkit.repro import format_value

    return format_value(value)


def robustness_markdown(payload: dict[str, Any]) -> str:
    claims = [c for c in payload["claims"] if c["kind"] == "claim"]
    checks = [c for c in payload["claims"] if c["kind"] == "check"]
    seeds = ", ".join(str(s) for s in payload["seeds"])
    lines = [f"# labkit robustness report (seeds {seeds}, scale {payload['scale']})", ""]
    expected = [c for c in claims if c["expected"]]
    robust = sum(c["verdict"] == "robust" for c in expected)
    lines.append(f"Claims: {len(claims)} ({len(expected)} expected to hold: {robust} robust over every seed, "
                 f"{len(expected) - robust} not); claims known not to reproduce: {len(claims) - len(expected)}; "
                 f"checks (identities, by construction): {len(checks)}.")
    if payload.get("wall_seconds") is not None:
        lines.append(f"Wall time of the sweep: {payload['wall_seconds'] / 60:.1f} min "
                     f"({len(payload.get('runs', []))} notebook runs).")
    if len(payload.get("parts", [])) > 1:
        sizes = [f"{len(p['notebooks'])} notebooks in {(p['wall_seconds'] or 0) / 60:.1f} min"
                 for p in payload["parts"]]
        lines.append("Merged from sweeps of part of the notebooks: " + "; ".join(sizes) + ".")
    lines.append("")
    lines.append("| notebook | claim | kind | expected | criterion | measured per seed | verdict |")
    lines.append("|---|---|---|---|---|---|---|")
    for c in payload["claims"]:
        measured = "; ".join(f"{s}: {_fmt(m)}{'' if h else ' ✗'}"
                             for s, m, h in zip(c["seeds"], c["measured"], c["holds"], strict=True))
        lines.append(f"| {c['notebook']} | {c['name']} | {c['kind']} | {'yes' if c['expected'] else 'no'} | "
                     f"{c['criterion']} | {measured} | {c['verdict']} |".replace("\n", " "))
    if payload.get("runs"):
        lines += ["", "| notebook | seconds per seed |", "|---|---|"]
        times: dict[str, list[str]] = {}
        for r in payload["runs"]:
            times.setdefault(r["notebook"], []).append(f"{r['seed']}: {r['seconds']:.0f}{'' if r['ok'] else ' ✗'}")
        lines += [f"| {name} | {'; '.join(t)} |" for name, t in times.items()]
    if payload.get("skipped"):
        lines += ["", "Notebooks skipped by --max-minutes (not judged):",
                  *[f"- {name}: {why}" for name, why in payload["skipped"].items()]]
    if payload["failures"]:
        lines += ["", "Notebooks that failed:", *[f"- {f}" for f in payload["failures"]]]
    lines += ["", "EVERY EXPECTED CLAIM ROBUST OVER ALL SEEDS" if payload["ok"] else
              "SOME EXPECTED CLAIMS NOT REPRODUCED ON EVERY SEED, OR NOTEBOOKS FAILED"]
    return "\n".join(lines) + "\n"
