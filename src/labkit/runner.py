"""Run paper notebooks headless with papermill and collect their claims into a report."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from labkit.catalog import NotebookInfo
from labkit.repro import Claim, claim_from_record, claims_table_text, slugify, write_json_atomic


@dataclass
class RunResult:
    name: str
    seconds: float
    ok: bool
    error: str | None = None
    skipped: bool = False
    skip_reason: str | None = None  # left out by --max-minutes (never run, never counted as reproduced)


def record_path(results_dir: Path, name: str) -> Path:
    return results_dir / f"{slugify(name)}.json"


def sources_digest() -> str:
    """A hash of every labkit source file (what a notebook's result depends on besides itself)."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def run_inputs(info: NotebookInfo, *, seed: int, scale: str, device: str,
               explorers: bool = False) -> dict[str, object]:
    """What a notebook run depends on: the notebook, the labkit sources, seed, scale and device (and whether
    its explorers were exercised after it ran)."""
    inputs: dict[str, object] = {"notebook": hashlib.sha256(info.path.read_bytes()).hexdigest(),
                                 "labkit": sources_digest(), "seed": seed, "scale": scale, "device": device}
    if explorers:
        inputs["explorers"] = True
    return inputs


def state_path(out_dir: Path, name: str) -> Path:
    return out_dir / "runs" / f"{slugify(name)}.json"


def is_done(info: NotebookInfo, out_dir: Path, *, seed: int, scale: str, device: str = "auto",
            explorers: bool = False) -> bool:
    """A finished, successful run of this notebook from the same inputs (notebook, labkit sources, seed,
    scale, device) whose record and executed copy are still there. A failed run is never done."""
    state, record = state_path(out_dir, info.name), record_path(out_dir / "claims", info.name)
    executed = out_dir / info.pillar / info.path.name
    if not (state.exists() and record.exists() and executed.exists()):
        return False
    saved = json.loads(state.read_text())
    return bool(saved.get("ok")) and saved.get("inputs") == run_inputs(info, seed=seed, scale=scale, device=device,
                                                                       explorers=explorers)


def _claims_hold(record: Path) -> bool:
    if not record.exists():
        return False
    return not any(c["verdict"] == "NOT REPRODUCED" for c in json.loads(record.read_text())["claims"])


@contextlib.contextmanager
def kernel_environment(env: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the kernels started in the block (they inherit them), then restore them.
    Process-wide: never run two notebooks at once in one process."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


HARNESS_TAG = "labkit-harness"


def explorer_probe_path(out_dir: Path, name: str) -> Path:
    return out_dir / "explorers" / f"{slugify(name)}.json"


def with_explorer_harness(info: NotebookInfo, probe_path: Path):
    """The notebook with one more cell at the end that drives every explorer it created
    (:mod:`labkit.widgets.harness`) and writes the probes to ``probe_path``: explorers are tested in the same
    kernel, after the notebook ran, never by executing it again."""
    import nbformat

    nb = nbformat.read(info.path, as_version=4)
    source = ("from labkit.widgets.harness import exercise_all, write_probes\n"
              f"write_probes(exercise_all(), {str(probe_path.resolve())!r});")
    nb.cells.append(nbformat.v4.new_code_cell(source, metadata={"tags": [HARNESS_TAG]}))
    return nb


def checkpoint_folder(out_dir: Path, name: str) -> Path:
    """Where a notebook run into ``out_dir`` keeps its long runs' checkpoints (``Run.checkpoint``): a run cut off
    by a timeout or Ctrl-C resumes from there when ``labkit reproduce`` runs it again."""
    return Path(out_dir) / "checkpoints" / slugify(name)


def run_notebook(info: NotebookInfo, out_dir: Path, *, seed: int, scale: str, device: str = "auto",
                 timeout: int = 900, explorers: bool = False, resume: bool = False) -> RunResult:
    """Execute one notebook with papermill (parameters SEED, SCALE, DEVICE) into ``out_dir``; with
    ``explorers``, then move every control of its explorers (``out_dir/explorers/<notebook>.json``). The
    notebook's long runs checkpoint into :func:`checkpoint_folder`; ``resume`` keeps the checkpoints of an
    earlier, cut-off run (they are deleted otherwise, so a fresh run never reuses stale state)."""
    import shutil

    import papermill as pm

    results_dir = out_dir / "claims"
    results_dir.mkdir(parents=True, exist_ok=True)
    record_path(results_dir, info.name).unlink(missing_ok=True)
    state = state_path(out_dir, info.name)
    state.unlink(missing_ok=True)
    inputs = run_inputs(info, seed=seed, scale=scale, device=device, explorers=explorers)
    probes = explorer_probe_path(out_dir, info.name)
    probes.unlink(missing_ok=True)
    source = with_explorer_harness(info, probes) if explorers else str(info.path)
    if not resume:
        shutil.rmtree(checkpoint_folder(out_dir, info.name), ignore_errors=True)
    env = dict(LABKIT_RESULTS_DIR=str(results_dir.resolve()), LABKIT_NOTEBOOK=info.name,
               LABKIT_SEED=str(seed), LABKIT_SCALE=scale, LABKIT_PROGRESS="0",
               LABKIT_CHECKPOINTS=str(checkpoint_folder(out_dir, info.name).resolve()))
    target = out_dir / info.pillar / info.path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with kernel_environment(env):
        try:
            pm.execute_notebook(source, str(target), cwd=str(info.path.parent), execution_timeout=timeout,
                                parameters={"SEED": seed, "SCALE": scale, "DEVICE": device}, progress_bar=False,
                                kernel_name="python3")
        except Exception as exc:  # papermill re-raises the notebook's error: keep the last line readable
            message = str(exc).strip().splitlines()
            result = RunResult(info.name, time.perf_counter() - start, False, message[-1] if message else repr(exc))
        else:
            result = RunResult(info.name, time.perf_counter() - start, True)
    ok = result.ok and _claims_hold(record_path(results_dir, info.name))
    write_json_atomic(state, {"inputs": inputs, "ok": ok, "seconds": round(result.seconds, 2), "error": result.error})
    return result


def _run_one(args: tuple[NotebookInfo, Path, int, str, str, int, bool, bool]) -> RunResult:
    info, out_dir, seed, scale, device, timeout, explorers, resume = args
    return run_notebook(info, out_dir, seed=seed, scale=scale, device=device, timeout=timeout, explorers=explorers,
                        resume=resume)


def run_all(infos: list[NotebookInfo], out_dir: Path, *, seed: int, scale: str, device: str = "auto",
            jobs: int = 1, resume: bool = False, timeout: int = 900, explorers: bool = False,
            echo=print) -> list[RunResult]:
    """Run notebooks (``jobs`` at a time, each in its own process); ``resume`` skips finished ones;
    ``explorers`` drives every explorer after its notebook ran (see :func:`run_notebook`)."""
    todo, results = [], []
    for info in infos:
        if resume and is_done(info, out_dir, seed=seed, scale=scale, device=device, explorers=explorers):
            results.append(RunResult(info.name, 0.0, True, skipped=True))
            echo(f"  skip  {info.name} (already reproduced with seed {seed}, scale {scale})")
        else:
            todo.append(info)
    tasks = [(info, out_dir, seed, scale, device, timeout, explorers, resume) for info in todo]
    if jobs <= 1 or len(tasks) <= 1:
        outcomes = map(_run_one, tasks)
        pool = None
    else:
        pool = ProcessPoolExecutor(max_workers=jobs)
        outcomes = pool.map(_run_one, tasks)
    try:
        for result in outcomes:
            results.append(result)
            status = "ok  " if result.ok else "FAIL"
            detail = f"  ({result.error})" if result.error else ""
            echo(f"  {status}  {result.name}  {result.seconds:6.1f} s{detail}")
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return results


def collect_claims(results_dir: Path, names: list[str]) -> dict[str, list[Claim]]:
    """Read the JSON records written by ``check_claims`` for the given notebook names."""
    found = {}
    for name in names:
        path = record_path(results_dir, name)
        if path.exists():
            data = json.loads(path.read_text())
            found[name] = [claim_from_record(c) for c in data["claims"]]
    return found


def summary_line(claims: list[Claim], all_ok: bool) -> str:
    """The report's last line: the verdict with the count of each kind of outcome, so that claims known not to
    reproduce at this scale are never hidden behind an overall "all good"."""
    checks = [c for c in claims if c.kind == "check"]
    claims = [c for c in claims if c.kind != "check"]
    known = sum(not c.expected and not c.holds for c in claims)
    failed = sum(c.failed for c in claims)
    counts = f"{sum(c.holds for c in claims)} reproduced, {known} not reproduced (known at this scale)"
    if failed:
        counts += f", {failed} NOT REPRODUCED"
    if checks:
        broken = sum(not c.holds for c in checks)
        counts += f"; checks: {len(checks) - broken} passed" + (f", {broken} FAILED" if broken else "")
    head = "EVERY EXPECTED CLAIM REPRODUCED" if all_ok else "SOME CLAIMS NOT REPRODUCED OR NOTEBOOKS FAILED"
    return f"{head}: {counts}"


def write_report(out_dir: Path, results: list[RunResult], *, seed: int, scale: str) -> tuple[str, bool]:
    """Write ``claims.md`` and ``summary.json`` under ``out_dir``; return (table text, all reproduced)."""
    claims = collect_claims(out_dir / "claims", [r.name for r in results])
    sections, rows, all_ok = [], [], True
    for r in results:
        if r.skip_reason:
            sections.append(f"## {r.name}  ({r.skip_reason})")
            rows.append({"notebook": r.name, "seconds": None, "ok": None, "skipped": r.skip_reason, "claims": []})
            continue
        nb_claims = claims.get(r.name, [])
        failed = (not r.ok) or any(c.failed for c in nb_claims) or not nb_claims
        all_ok &= not failed
        time_text = "resumed" if r.skipped else f"{r.seconds:.1f} s"
        header = f"## {r.name}  ({time_text})"
        if nb_claims:
            body = claims_table_text(nb_claims)
        else:
            body = f"no claims recorded: {r.error or 'the notebook did not reach check_claims'}"
        if r.error and nb_claims:
            body += f"\nerror: {r.error}"
        sections.append(f"{header}\n{body}")
        rows.append({"notebook": r.name, "seconds": round(r.seconds, 2), "ok": not failed, "error": r.error,
                     "claims": [c.__dict__ | {"kind": c.kind, "verdict": c.verdict} for c in nb_claims]})
    verdict = summary_line([c for r in results if not r.skip_reason for c in claims.get(r.name, [])], all_ok)
    skipped = [r for r in results if r.skip_reason]
    if skipped:
        verdict += f"; {len(skipped)} notebook(s) SKIPPED by --max-minutes (not judged): " + \
            ", ".join(r.name for r in skipped)
    text = f"# labkit reproduction report (seed {seed}, scale {scale})\n\n" + "\n\n".join(sections) + f"\n\n{verdict}\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "claims.md").write_text(text)
    write_json_atomic(out_dir / "summary.json", {"seed": seed, "scale": scale, "ok": all_ok, "notebooks": rows})
    return text, all_ok
