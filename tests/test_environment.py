"""The environment a reproduction needs: the lock, the pins, the Makefile's JupyterLab token."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)", line)
        if m:
            found[m.group(1).lower().replace("_", "-")] = m.group(2)
    return found


def test_lock_pins_every_direct_requirement_at_the_same_version():
    direct, lock = pins(ROOT / "requirements.txt"), pins(ROOT / "requirements-lock.txt")
    assert direct["torch"] == "2.13.0" and lock["torch"] == "2.13.0"
    for name, version in direct.items():
        assert lock.get(name) == version, f"{name}: requirements.txt pins {version}, the lock {lock.get(name)}"
    assert len(lock) > 3 * len(direct), "the lock must pin the transitive dependencies too"


def test_pyproject_declares_what_the_package_imports():
    text = (ROOT / "pyproject.toml").read_text()
    for name in ("torch>=2.13", "numpy", "scipy", "scikit-learn", "plotly", "ipywidgets", "ipykernel", "papermill"):
        assert f'"{name}' in text, name


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_lab_prints_the_token_it_passes():
    out = subprocess.run(["make", "-n", "-o", ".venv/.labkit-installed", "lab"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    shown = re.search(r"token=([0-9a-f]{32})", out)
    passed = re.search(r"IdentityProvider\.token=([0-9a-f]{32})", out)
    assert shown and passed and shown.group(1) == passed.group(1), out


def test_jupyterlab_news_prompt_is_switched_off():
    import json

    settings = json.loads((ROOT / "jupyter" / "overrides.json").read_text())
    assert settings["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"
