"""Static checks of every committed notebook, and each notebook run through `labkit reproduce` (seed 1).

The notebooks also run as shipped under ``pytest --nbval-lax notebooks`` (see the Makefile).
"""

import json
import os
import re

import pytest

from labkit.catalog import discover, repo_root

ROOT = repo_root()
INFOS = discover(ROOT)
IDS = [i.name for i in INFOS]


@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_notebook_is_clean_and_follows_the_anatomy(info):
    nb = json.loads(info.path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert not any(c.get("outputs") for c in code), "committed with outputs: run nbstripout"
    assert not any(c.get("execution_count") for c in code), "committed with execution counts: run nbstripout"
    assert "widgets" not in nb["metadata"], "committed with widget state: run nbstripout"
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "needs exactly one cell tagged 'parameters'"
    source = "".join(params[0]["source"])
    for line in ('SEED: int = 0', 'SCALE: str = "teach"', 'DEVICE: str = "auto"'):
        assert line in source, f"parameters cell lacks {line!r}"
    everything = "\n".join("".join(c["source"]) for c in code)
    assert "check_claims(" in everything, "no reproduction check"
    assert re.search(r"\bexplore\(|interact", everything), "no ipywidgets explorer"
    assert "setup(SEED" in everything, "the notebook must seed through labkit.runtime.setup"
    assert ".cuda()" not in everything, "notebooks must stay device-agnostic"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


@pytest.mark.notebook
@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_reproduce_notebook(info, tmp_path):
    """The reproduce runner (papermill) with a different seed than the shipped one: claims must hold."""
    from labkit.runner import run_notebook, write_report

    result = run_notebook(info, tmp_path, seed=1, scale="teach", device=os.environ.get("LABKIT_DEVICE", "auto"))
    text, ok = write_report(tmp_path, [result], seed=1, scale="teach")
    print(f"{info.name}: {result.seconds:.1f} s")
    assert result.ok and ok, text
