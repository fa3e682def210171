import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from labkit.catalog import PILLARS, discover, read_info, repo_root, update_readme
from labkit.cli import main

ROOT = repo_root()
NOTEBOOKS = sorted(p for p in (ROOT / "notebooks").glob("*/*.ipynb"))


def test_every_notebook_has_complete_metadata_in_its_pillar_folder():
    infos = discover(ROOT)
    assert len(infos) == len(NOTEBOOKS) >= 1
    for info in infos:
        assert info.path.parent.name == info.pillar
        assert info.path.stem[:2].isdigit() and info.path.stem[2] == "_"
        assert info.url.startswith("https://") and 1990 < int(info.year) < 2100


def test_readme_index_is_up_to_date():
    assert update_readme(ROOT / "README.md", discover(ROOT), write=False, root=ROOT), \
        "README notebook index is stale: run `python -m labkit index --write`"


def test_list_prints_every_notebook(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for info in discover(ROOT):
        assert info.name in out and info.title in out


def test_bad_metadata_is_a_clear_error(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["labkit"] = {"pillar": "astrology", "title": "t"}
    path = tmp_path / "01_x.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(ValueError, match="lacks"):
        read_info(path)
    nb.metadata["labkit"] = dict(pillar="astrology", title="t", authors="a", year=2020, url="https://x", claim="c")
    nbformat.write(nb, path)
    with pytest.raises(ValueError, match="pillar must be one of"):
        read_info(path)


@pytest.mark.parametrize("args, message", [
    (["reproduce", "--notebook", "notebooks/nope.ipynb"], "does not exist"),
    (["reproduce", "--pillar", "astrology"], "invalid choice"),
    (["reproduce", "--scale", "huge"], "invalid choice"),
    (["reproduce", "--jobs", "0"], "--jobs must be at least 1"),
    (["reproduce", "--seed", "-1"], "--seed must be a non-negative integer"),
    (["reproduce", "--device", "tpu"], "--device: device must be"),
    (["reproduce", "--timeout", "0"], "--timeout must be at least 1"),
    (["reproduce", "--root", "/nonexistent"], "has no notebooks/ folder"),
    (["reproduce", "--max-minutes", "0"], "--max-minutes must be a positive number"),
    (["reproduce", "--max-minutes", "nan"], "--max-minutes must be a positive number"),
    (["cost", "--from", "/nonexistent"], "holds no summary.json"),
    (["notebooks"], "the following arguments are required: dest"),
])
def test_bad_options_are_usage_errors_before_any_kernel_starts(args, message, tmp_path):
    """Exit code 2, a message naming the option, and no report written (nothing ran)."""
    proc = subprocess.run([sys.executable, "-m", "labkit", *args, *(["--out", str(tmp_path / "r")] if
                          args[0] == "reproduce" else [])], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr + proc.stdout
    assert not (tmp_path / "r").exists()


@pytest.mark.notebook
def test_cost_is_recorded_from_a_report_and_max_minutes_skips_what_is_over_budget(tmp_path, capsys):
    """`labkit cost --write` puts the measured time into the notebook's metadata; `--max-minutes` then skips
    (and lists) a notebook whose recorded time is over budget instead of passing it silently."""
    import json

    path = tiny_workbook(tmp_path / "wb", "")
    root, out = tmp_path / "wb", tmp_path / "out"
    base = ["reproduce", "--root", str(root), "--out", str(out), "--device", "cpu"]
    assert main(base) == 0
    assert main(["cost", "--root", str(root), "--from", str(out)]) == 0  # a dry run writes nothing
    assert read_info(path).cost == {}
    assert main(["cost", "--root", str(root), "--from", str(out), "--write"]) == 0
    seconds = read_info(path).cost["teach"]["cpu"]
    assert seconds > 0 and "grokking/01_tiny" in capsys.readouterr().out
    assert main([*base, "--max-minutes", str(2 * seconds / 60)]) == 0  # within budget: it runs
    assert "ok    grokking/01_tiny" in capsys.readouterr().out
    assert main([*base, "--max-minutes", str(seconds / 120)]) == 0  # over budget: skipped and listed
    printed = capsys.readouterr().out
    assert "skipped: needs ~" in printed and "CPU at SCALE='teach'" in printed and "ok    grokking" not in printed
    assert "SKIPPED by --max-minutes" in (out / "claims.md").read_text()
    assert json.loads((out / "summary.json").read_text())["notebooks"][0]["skipped"].startswith("skipped: needs")
    assert main([*base, "--scale", "paper", "--max-minutes", "0.001"]) == 0  # never measured at paper: it runs
    assert "ok    grokking/01_tiny" in capsys.readouterr().out


def test_help_documents_the_exit_codes():
    proc = subprocess.run([sys.executable, "-m", "labkit", "reproduce", "--help"], capture_output=True, text=True)
    assert "exit codes:" in proc.stdout and "2  a usage error" in proc.stdout


def test_notebooks_command_copies_without_overwriting(tmp_path, capsys):
    assert main(["notebooks", str(tmp_path / "course"), "--pillar", "grokking"]) == 0
    copied = sorted(p.relative_to(tmp_path / "course").as_posix() for p in (tmp_path / "course").rglob("*.ipynb"))
    assert copied == sorted(f"grokking/{i.path.name}" for i in discover(ROOT, pillar="grokking"))
    assert main(["notebooks", str(tmp_path / "course"), "--pillar", "grokking"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["notebooks", str(tmp_path / "course"), "--pillar", "grokking", "--force"]) == 0


def tiny_workbook(root: Path, source: str) -> Path:
    """A workbook root with one notebook whose second cell runs ``source`` and checks one claim."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('SEED: int = 0\nSCALE: str = "teach"\nDEVICE: str = "auto"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "import labkit\nrun = labkit.start(seed=SEED, scale=SCALE, device='cpu')\n" + source +
        "\nlabkit.check_claims([labkit.Claim('c', 's', measured=1, criterion='x', holds=True)], run=run)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["labkit"] = dict(pillar="grokking", title="Tiny", authors="A", year=2024, url="https://arxiv.org/abs/1",
                                 claim="c")
    path = root / "notebooks" / "grokking" / "01_tiny.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


@pytest.mark.notebook
def test_resume_reruns_failed_and_changed_notebooks_and_skips_finished_ones(tmp_path, capsys):
    flag = tmp_path / "fail-once"
    flag.write_text("x")
    source = f"import pathlib\nflag = pathlib.Path({str(flag)!r})\nif flag.exists():\n    flag.unlink()\n" \
             "    raise RuntimeError('first run fails')"
    tiny_workbook(tmp_path / "wb", source)
    args = ["reproduce", "--root", str(tmp_path / "wb"), "--out", str(tmp_path / "out"), "--device", "cpu"]
    assert main(args) == 1  # the first run fails
    assert main([*args, "--resume"]) == 0  # resume runs the failed notebook again (and it passes now)
    out = capsys.readouterr().out
    assert "ok    grokking/01_tiny" in out
    assert main([*args, "--resume"]) == 0
    assert "skip  grokking/01_tiny" in capsys.readouterr().out
    assert main([*args, "--resume", "--seed", "1"]) == 0  # another seed is another input
    assert "ok    grokking/01_tiny" in capsys.readouterr().out


@pytest.mark.notebook
def test_installed_wheel_lists_its_notebooks_outside_the_checkout(tmp_path):
    """A wheel carries the notebooks: `labkit list` works from any folder."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("labkit-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp_path / "site"),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    env.pop("LABKIT_ROOT", None)
    proc = subprocess.run([sys.executable, "-m", "labkit", "list"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert str(tmp_path / "site") in subprocess.run(
        [sys.executable, "-c", "import labkit; print(labkit.__file__)"], cwd=tmp_path, env=env, capture_output=True,
        text=True).stdout
    for info in discover(ROOT):
        assert info.name in proc.stdout


def test_pillars_cover_the_notebook_folders():
    assert {p.name for p in (ROOT / "notebooks").iterdir() if p.is_dir()} <= set(PILLARS)


def test_write_report_marks_failures(tmp_path):
    from labkit.runner import RunResult, write_report

    claims = tmp_path / "claims"
    claims.mkdir()
    record = {"notebook": "sam/01_x", "seed": "0", "scale": "teach", "claims": [
        {"name": "c", "statement": "s", "measured": 1.0, "criterion": "> 2", "holds": False, "paper_value": None,
         "expected": True, "verdict": "NOT REPRODUCED"}]}
    (claims / "sam_01_x.json").write_text(json.dumps(record))
    text, ok = write_report(tmp_path, [RunResult("sam/01_x", 1.0, False, "ClaimNotReproduced"),
                                       RunResult("sam/02_y", 2.0, False, "NameError: x")], seed=0, scale="teach")
    assert not ok and "NOT REPRODUCED" in text and "NameError" in text
    assert text.rstrip().endswith("0 reproduced, 0 not reproduced (known at this scale), 1 NOT REPRODUCED")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [n["ok"] for n in summary["notebooks"]] == [False, False]
    assert Path(tmp_path / "claims.md").exists()


def test_write_report_counts_known_failures_without_hiding_them(tmp_path):
    from labkit.runner import RunResult, write_report

    claims = tmp_path / "claims"
    claims.mkdir()
    common = {"statement": "s", "measured": 1.0, "criterion": "> 0", "paper_value": None}
    record = {"notebook": "sam/01_x", "seed": "0", "scale": "teach", "claims": [
        common | {"name": "holds", "holds": True, "expected": True},
        common | {"name": "known", "holds": False, "expected": False}]}
    (claims / "sam_01_x.json").write_text(json.dumps(record))
    text, ok = write_report(tmp_path, [RunResult("sam/01_x", 1.0, True, None)], seed=0, scale="teach")
    assert ok
    last = text.rstrip().splitlines()[-1]
    assert last == "EVERY EXPECTED CLAIM REPRODUCED: 1 reproduced, 1 not reproduced (known at this scale)"


@pytest.mark.notebook
def test_explorers_option_moves_every_control_after_the_run_and_fails_a_replaying_explorer(tmp_path, capsys):
    """`--explorers` appends the harness cell: one kernel, one execution, a report of what each control computes."""
    explorer = ("import ipywidgets as W\nfrom labkit.viz import line_curves\nfrom labkit.widgets import explore\n"
                "from labkit.autograd import flatten\nimport torch\n"
                "ex = explore(lambda k: line_curves({'y': [0.0, float(flatten([torch.ones(2) * k]).sum())]}),\n"
                "             k=W.IntSlider(value=1, min=0, max=4))")
    tiny_workbook(tmp_path / "wb", explorer)
    args = ["reproduce", "--root", str(tmp_path / "wb"), "--out", str(tmp_path / "out"), "--device", "cpu"]
    assert main([*args, "--explorers"]) == 0
    out = capsys.readouterr().out
    assert "EVERY EXPLORER COMPUTES AND REDRAWS" in out
    report = (tmp_path / "out" / "explorers.md").read_text()
    assert "| grokking/01_tiny | 0 (live) | k | autograd.flatten | yes |" in report
    executed = nbformat.read(tmp_path / "out" / "grokking" / "01_tiny.ipynb", as_version=4)
    assert executed.cells[-1].metadata.tags == ["labkit-harness"]
    assert main(["reproduce", "--seeds", "0-1", "--explorers", "--root", str(tmp_path / "wb")]) == 2

    tiny_workbook(tmp_path / "wb2", explorer.replace("float(flatten([torch.ones(2) * k]).sum())", "[1.0, 2.0][k % 2]"))
    assert main(["reproduce", "--root", str(tmp_path / "wb2"), "--out", str(tmp_path / "out2"), "--device", "cpu",
                 "--explorers"]) == 1
    assert "no control calls labkit" in (tmp_path / "out2" / "explorers.md").read_text()
