import json

import numpy as np
import pytest
import torch

from labkit.repro import Claim, ClaimNotReproduced, check_claims, claims_table_html, claims_table_text


def make(holds, expected=True, name="c"):
    return Claim(name, "the paper says so", measured=0.5, criterion="x > 0.4", holds=holds, expected=expected)


def test_passing_claims_print_a_table_and_return(capsys):
    assert check_claims([make(True, name="first"), make(False, expected=False, name="second")]) is None
    text = capsys.readouterr().out
    assert "first" in text and "reproduced" in text and "not reproduced (known at this scale)" in text


def test_failing_claim_raises_listing_every_failure(capsys):
    with pytest.raises(ClaimNotReproduced) as info:
        check_claims([make(False, name="a"), make(True, name="b"), make(False, name="c")])
    assert [c.name for c in info.value.failed] == ["a", "c"]
    assert "a:" in str(info.value) and "c:" in str(info.value) and "b:" not in str(info.value)


def test_json_record_is_written_when_results_dir_is_set(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("LABKIT_SEED", "3")
    with pytest.raises(ClaimNotReproduced):
        check_claims([make(True, name="ok"), make(False, name="bad")], notebook="pillar/01_demo")
    record = json.loads((tmp_path / "pillar_01_demo.json").read_text())
    assert record["seed"] == 3
    assert [c["verdict"] for c in record["claims"]] == ["reproduced", "NOT REPRODUCED"]


def test_claim_accepts_tensor_and_numpy_values_and_rejects_non_booleans():
    c = Claim("t", "s", measured=torch.tensor(0.25), criterion="<1", holds=torch.tensor(True))
    assert c.holds is True and c.measured == 0.25
    c = Claim("n", "s", measured=np.float64(2.0), criterion="<1", holds=np.bool_(False), expected=False)
    assert c.holds is False and not c.failed
    with pytest.raises(TypeError, match="holds must be a boolean"):
        Claim("x", "s", measured=1, criterion="c", holds="yes")
    with pytest.raises(ValueError, match="criterion"):
        Claim("x", "s", measured=1, criterion="", holds=True)


def test_check_claims_rejects_empty_and_wrong_types():
    with pytest.raises(ValueError, match="at least one"):
        check_claims([])
    with pytest.raises(TypeError, match="Claim objects"):
        check_claims([("name", True)])


def test_tables_escape_and_show_values():
    c = Claim("a<b", "x & y", measured=[0.123456, 2], criterion="gap < 1%", holds=True, paper_value=0.9)
    assert "a&lt;b" in claims_table_html([c])
    assert "[0.1235, 2]" in claims_table_text([c])


def test_checks_are_recorded_and_counted_apart_from_claims(tmp_path, monkeypatch):
    from labkit.repro import Check, claim_from_record
    from labkit.runner import RunResult, summary_line, write_report

    check = Check("sum rule", "attributions add up", measured=1e-7, criterion="|gap| < 1e-5", holds=True)
    assert check.kind == "check" and check.expected and check.verdict == "check passed"
    assert Check("broken", "s", measured=1, criterion="c", holds=False).failed
    monkeypatch.setenv("LABKIT_RESULTS_DIR", str(tmp_path / "claims"))
    check_claims([make(True, name="a claim"), check], notebook="sam/01_x")
    record = json.loads((tmp_path / "claims" / "sam_01_x.json").read_text())
    assert [c["kind"] for c in record["claims"]] == ["claim", "check"]
    assert isinstance(claim_from_record(record["claims"][1]), Check)
    text, ok = write_report(tmp_path, [RunResult("sam/01_x", 1.0, True)], seed=0, scale="teach")
    assert ok and text.rstrip().endswith("1 reproduced, 0 not reproduced (known at this scale); checks: 1 passed")
    assert "FAILED" in summary_line([Check("b", "s", measured=1, criterion="c", holds=False)], False)


def _sweep_payload():
    return {"seeds": [0, 1], "scale": "teach", "claims": [
        {"notebook": "p/01_a", "name": "gap", "kind": "claim", "expected": True, "criterion": "gap < 1",
         "seeds": [0, 1], "holds": [True, False], "measured": [0.5, 1.25], "verdict": "fragile"},
        {"notebook": "p/02_b", "name": "other", "kind": "check", "expected": True, "criterion": "x == 0",
         "seeds": [0, 1], "holds": [True, True], "measured": [0, 0], "verdict": "robust"}]}


def test_seed_table_shows_one_notebook_of_the_sweep(tmp_path):
    from labkit.repro import seed_table

    path = tmp_path / "ROBUSTNESS.json"
    path.write_text(json.dumps(_sweep_payload()))
    table = seed_table("p/01_a", path=path)
    text = str(table)
    assert "gap" in text and "other" not in text
    assert "1.25 ✗" in text and "seed 1" in text and "fragile" in text
    html_text = table._repr_html_()
    assert "<table>" in html_text and "1.25 ✗" in html_text and "make robustness" in html_text


def test_seed_table_says_when_the_sweep_lacks_the_notebook(tmp_path):
    from labkit.repro import seed_table

    path = tmp_path / "ROBUSTNESS.json"
    path.write_text(json.dumps(_sweep_payload()))
    assert "no rows" in str(seed_table("p/03_new", path=path))
    assert "no rows" in str(seed_table("p/03_new", path=tmp_path / "absent.json"))
    with pytest.raises(ValueError, match="notebook"):
        seed_table("01_a", path=path)


def test_seed_table_reads_the_sweep_of_the_runs_scale(tmp_path):
    """At SCALE="paper" a notebook shows the paper-scale sweep's rows, or says it was judged on seed 0 only."""
    from labkit.repro import SWEEP_FILES, committed_sweep, seed_table

    assert SWEEP_FILES == {"teach": "ROBUSTNESS.json", "paper": "ROBUSTNESS-paper.json"}
    paper = _sweep_payload() | {"scale": "paper"}
    path = tmp_path / "ROBUSTNESS-paper.json"
    path.write_text(json.dumps(paper))
    assert "1.25 ✗" in str(seed_table("p/01_a", scale="paper", path=path))
    absent = str(seed_table("p/03_new", scale="paper", path=tmp_path / "absent.json"))
    assert "paper-scale sweep" in absent and "seed 0 only" in absent and "SCALE=paper" in absent
    with pytest.raises(ValueError, match="scale must be one of"):
        committed_sweep(scale="huge")
