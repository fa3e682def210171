"""The notebook x seed grid on local processes and on Dask (a LocalCluster, and a scheduler + worker started
as separate processes on 127.0.0.1), with the robustness report written by the client."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from labkit.cli import main
from labkit.sweep import parse_seeds, verdict


def tiny_notebook(root: Path, stem: str, holds: str = "True", *, body: str | None = None) -> None:
    """A notebook with one claim whose outcome is the Python expression ``holds`` (SEED is in scope) and one check,
    or whose code after ``labkit.start`` is ``body``."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('SEED: int = 0\nSCALE: str = "teach"\nDEVICE: str = "auto"')
    params.metadata["tags"] = ["parameters"]
    body = body or (f"labkit.check_claims([labkit.Claim('c', 's', measured=SEED, criterion='x', holds={holds}),\n"
                    "                     labkit.Check('k', 's', measured=0, criterion='= 0', holds=True)], run=run)")
    nb.cells = [params, nbformat.v4.new_code_cell(
        "import labkit\nrun = labkit.start(seed=SEED, scale=SCALE, device='cpu')\n" + body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["labkit"] = dict(pillar="sam", title=stem, authors="A", year=2024, url="https://arxiv.org/abs/1",
                                 claim="c")
    path = root / "notebooks" / "sam" / f"{stem}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


@pytest.fixture
def workbook(tmp_path):
    tiny_notebook(tmp_path / "wb", "01_always", "True")
    tiny_notebook(tmp_path / "wb", "02_seed_one_fails", "SEED != 1")
    return tmp_path / "wb"


def check_report(out: Path) -> None:
    report = json.loads((out / "robustness.json").read_text())
    assert report["seeds"] == [0, 1] and report["scale"] == "teach" and not report["ok"]
    entries = {(c["notebook"], c["name"]): c for c in report["claims"]}
    assert entries[("sam/01_always", "c")]["holds"] == [True, True]
    assert entries[("sam/01_always", "c")]["verdict"] == "robust"
    assert entries[("sam/02_seed_one_fails", "c")]["holds"] == [True, False]
    assert entries[("sam/02_seed_one_fails", "c")]["measured"] == [0, 1]
    assert entries[("sam/02_seed_one_fails", "c")]["verdict"] == "fragile"
    assert entries[("sam/01_always", "k")]["kind"] == "check"
    text = (out / "robustness.md").read_text()
    assert "checks (identities, by construction): 2" in text and "fragile" in text
    assert (out / "seed-1" / "sam" / "02_seed_one_fails.ipynb").exists()
    runs = {(r["notebook"], r["seed"]): r for r in report["runs"]}
    assert len(runs) == 4 and runs[("sam/02_seed_one_fails", 1)]["ok"] is False
    assert report["wall_seconds"] >= max(r["seconds"] for r in runs.values()) > 0
    assert "Wall time of the sweep" in text and "seconds per seed" in text


def test_parse_seeds():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4] and parse_seeds("0,2, 5") == [0, 2, 5]
    assert parse_seeds("0-1,7") == [0, 1, 7] and verdict([False, False]) == "not reproduced"
    for bad in ("", "3-1", "a", "-1", "1,1"):
        with pytest.raises(ValueError, match="seeds must"):
            parse_seeds(bad)


@pytest.mark.notebook
def test_dask_local_cluster_runs_the_grid_and_the_client_writes_the_report(workbook, tmp_path):
    out = tmp_path / "report"
    code = main(["reproduce", "--root", str(workbook), "--seeds", "0-1", "--executor", "dask", "--jobs", "2",
                 "--device", "cpu", "--out", str(out)])
    assert code == 1  # an expected claim fails on seed 1
    check_report(out)


@pytest.mark.notebook
def test_dask_scheduler_and_worker_processes_at_an_address(workbook, tmp_path):
    dask = Path(sys.executable).parent / "dask"
    scheduler_file = tmp_path / "scheduler.json"
    env = {**os.environ, "LABKIT_PROGRESS": "0"}
    procs = [subprocess.Popen([str(dask), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(scheduler_file)], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)]
    try:
        deadline = time.time() + 60
        while not scheduler_file.exists() and time.time() < deadline:
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        procs.append(subprocess.Popen([str(dask), "worker", address, "--nthreads", "1", "--nworkers", "1",
                                       "--host", "127.0.0.1", "--no-dashboard"], env=env, cwd=tmp_path,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        out = tmp_path / "report"
        code = subprocess.run([sys.executable, "-m", "labkit", "reproduce", "--root", str(workbook), "--seeds", "0-1",
                               "--executor", "dask", "--address", address, "--device", "cpu", "--out", str(out)],
                              env=env, capture_output=True, text=True, timeout=300)
        assert code.returncode == 1, code.stdout + code.stderr
        check_report(out)
    finally:
        for proc in reversed(procs):  # only the processes this test started, by PID
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.notebook
def test_process_executor_gives_the_same_report(workbook, tmp_path):
    out = tmp_path / "report"
    assert main(["reproduce", "--root", str(workbook), "--seeds", "0,1", "--jobs", "2", "--device", "cpu",
                 "--out", str(out)]) == 1
    check_report(out)


def test_sweep_options_are_validated(workbook, capsys):
    assert main(["reproduce", "--root", str(workbook), "--seeds", "4-1"]) == 2
    assert main(["reproduce", "--root", str(workbook), "--seeds", "0-1", "--explorers"]) == 2
    assert main(["reproduce", "--root", str(workbook), "--address", "tcp://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "--seeds" in err and "--explorers" in err and "--address needs --executor dask" in err


def test_merge_into_replaces_only_the_swept_notebooks_rows(workbook, tmp_path, capsys):
    """`make robustness NOTEBOOKS=...`: a sweep of one notebook updates its rows in the published sweep, keeps the
    others' rows, and drops rows of notebooks the workbook no longer has."""
    published = tmp_path / "ROBUSTNESS.json"
    args = ["reproduce", "--root", str(workbook), "--seeds", "0,1", "--device", "cpu", "--merge-into", str(published)]
    assert main([*args, "--out", str(tmp_path / "all")]) == 1  # 02 fails on seed 1: published all the same
    full = json.loads(published.read_text())
    assert {c["notebook"] for c in full["claims"]} == {"sam/01_always", "sam/02_seed_one_fails"}
    assert published.with_suffix(".md").read_text() == (tmp_path / "all" / "robustness.md").read_text()

    tiny_notebook(workbook, "02_seed_one_fails", "True")  # fixed: sweep only this notebook again
    tiny_notebook(workbook, "03_new", "True")
    one = ["--notebook", str(workbook / "notebooks/sam/02_seed_one_fails.ipynb"),
           "--notebook", str(workbook / "notebooks/sam/03_new.ipynb")]
    assert main([*args, *one, "--out", str(tmp_path / "two")]) == 0
    merged = json.loads(published.read_text())
    rows = {(c["notebook"], c["name"]): c for c in merged["claims"]}
    assert rows[("sam/02_seed_one_fails", "c")]["holds"] == [True, True] and merged["ok"]
    assert rows[("sam/01_always", "c")] == next(c for c in full["claims"] if c["notebook"] == "sam/01_always"
                                                and c["name"] == "c")
    assert [r["notebook"] for r in merged["runs"]] == ["sam/01_always"] * 2 + ["sam/02_seed_one_fails"] * 2 + \
        ["sam/03_new"] * 2
    assert [p["notebooks"] for p in merged["parts"]] == [["sam/01_always"], ["sam/02_seed_one_fails", "sam/03_new"]]
    assert "Merged from sweeps of part of the notebooks" in published.with_suffix(".md").read_text()

    (workbook / "notebooks/sam/03_new.ipynb").unlink()  # a notebook removed from the workbook leaves the sweep
    assert main([*args, *one[:2], "--out", str(tmp_path / "three")]) == 0
    after = json.loads(published.read_text())
    assert "sam/03_new" not in {c["notebook"] for c in after["claims"]}
    assert [p["notebooks"] for p in after["parts"]] == [["sam/01_always"], ["sam/02_seed_one_fails"]]

    capsys.readouterr()
    assert main(["reproduce", "--root", str(workbook), "--merge-into", str(published)]) == 2
    assert main([*args[:-1], str(tmp_path / "x.md"), "--out", str(tmp_path / "four")]) == 2
    err = capsys.readouterr().err
    assert "--merge-into needs --seeds" in err and "must name a robustness .json" in err
    wrong_seeds = ["reproduce", "--root", str(workbook), "--seeds", "0", "--device", "cpu", "--merge-into",
                   str(published), "--out", str(tmp_path / "five")]
    assert main(wrong_seeds) == 2 and "cannot merge a sweep with seeds [0]" in capsys.readouterr().err


@pytest.mark.notebook
def test_reproduce_resume_continues_from_the_notebooks_checkpoints(tmp_path):
    """A notebook cut off in `labkit reproduce` resumes its long runs (Run.checkpoint inside --out) with
    --resume; a run without --resume starts afresh. The notebook counts its executions in a checkpoint file and holds
    on the second."""
    tiny_notebook(tmp_path / "wb", "01_resumable", body=(
        "p = run.checkpoint('long run')\np.parent.mkdir(parents=True, exist_ok=True)\n"
        "n = (int(p.read_text()) if p.exists() else 0) + 1\np.write_text(str(n))\n"
        "labkit.check_claims([labkit.Claim('c', 's', measured=n, criterion='second run', holds=n >= 2)], run=run)"))
    out = tmp_path / "report"
    args = ["reproduce", "--root", str(tmp_path / "wb"), "--device", "cpu", "--out", str(out)]
    record = out / "claims" / "sam_01_resumable.json"
    assert main(args) == 1 and json.loads(record.read_text())["claims"][0]["measured"] == 1
    assert (out / "checkpoints" / "sam_01_resumable" / "seed0-teach" / "long_run.pt").exists()
    assert main(args + ["--resume"]) == 0 and json.loads(record.read_text())["claims"][0]["measured"] == 2
    assert main(args) == 1 and json.loads(record.read_text())["claims"][0]["measured"] == 1  # fresh: cleared
