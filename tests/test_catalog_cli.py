import json
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
])
def test_reproduce_rejects_unknown_notebook_pillar_and_scale(args, message):
    proc = subprocess.run([sys.executable, "-m", "labkit", *args], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout


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
