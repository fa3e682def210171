"""Real-browser tests, one notebook per pillar: JupyterLab on 127.0.0.1 with a token, the notebook run in
headless Chromium, its explorer's control moved as a reader would, and the plotly figure's data checked to have
changed. ``LABKIT_SCREENSHOTS=DIR`` keeps a screenshot of each explorer."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from labkit.catalog import repo_root

CHROMIUM = "/usr/bin/chromium"
NOTEBOOKS = repo_root() / "notebooks"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"JupyterLab did not answer at {url} within {timeout} s")


# One notebook per pillar: the explorer control moved in the browser (its keyword in explore(...)).
BROWSER_CASES = {
    "attributions": ("attributions/01_integrated_gradients.ipynb", "steps"),
    "hessian": ("hessian/04_edge_of_stability.ipynb", "fraction"),
    "grokking": ("grokking/01_benign_overfitting_xor.ipynb", "step"),
    "diffusion": ("diffusion/03_guidance_interval.ipynb", "w"),
    "sam": ("sam/01_sharpness_aware_minimization.ipynb", "m"),
    "influence": ("influence/01_influence_functions.ipynb", "query"),
    "dynamics": ("dynamics/03_incremental_learning.ipynb", "lr"),
    "icl": ("icl/01_one_step_gd.ipynb", "n_ctx"),
}


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory):
    """One JupyterLab serving copies of the browser-tested notebooks (so autosave never touches the repository);
    yields a function from a notebook's relative path to its URL."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    tmp_path = tmp_path_factory.mktemp("jupyterlab")
    work = tmp_path / "lab"
    for relative, _control in BROWSER_CASES.values():
        (work / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(NOTEBOOKS / relative, work / relative)
    # render every cell (JupyterLab's default windowing drops off-screen outputs from the DOM) and no news pop-up
    settings = tmp_path / "settings"
    for plugin, values in {"notebook-extension/tracker": '{"windowingMode": "none"}',
                           "apputils-extension/notification": '{"fetchNews": "false"}'}.items():
        target = settings / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(values)
    port, token = _free_port(), "labkit-browser-test"
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"), LABKIT_PROGRESS="0")
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
           f"--LabApp.user_settings_dir={settings}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp_path / "jupyterlab.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", proc)
        # a workspace per notebook: JupyterLab restores no tab of an earlier test
        yield lambda relative: (f"http://127.0.0.1:{port}/lab/workspaces/{Path(relative).stem}/tree/{relative}"
                                f"?reset&token={token}")
    finally:
        proc.terminate()  # stop the server (and its kernels) by its PID
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _wait_for_idle_kernel(page, settle: float = 3.0, timeout: float = 120.0) -> None:
    """Wait until the notebook's kernel reports idle and stays so for ``settle`` seconds: JupyterLab may start
    a second kernel right after opening a notebook and drop the first one, with Run All sent to the dead one."""
    indicator = page.locator(".jp-Notebook-ExecutionIndicator").first
    deadline, idle_since = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        if indicator.get_attribute("data-status") == "idle":
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since >= settle:
                return
        else:
            idle_since = None
        time.sleep(0.25)
    raise AssertionError(f"the kernel did not settle to idle within {timeout:.0f} s")


def _run_all_cells(page) -> None:
    """Run > Run All Cells, retried until the first code cell (the parameters cell, instant to run) shows an
    execution number: a '*' alone can belong to a kernel that JupyterLab is about to replace."""
    first_prompt = page.locator(".jp-CodeCell .jp-InputPrompt").first
    for _ in range(5):
        _wait_for_idle_kernel(page)
        page.locator(".lm-MenuBar-item", has_text="Run").first.click()
        page.locator(".lm-Menu-item", has_text="Run All Cells").first.click()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(ch.isdigit() for ch in (first_prompt.text_content() or "")):
                return
            time.sleep(0.5)
        page.keyboard.press("Escape")
    raise AssertionError("JupyterLab did not run the notebook's first cell after five Run All attempts")


_PLOT_DATA = "el => JSON.stringify(el.data.map(t => [t.x, t.y, t.z, t.marker && t.marker.color]))"


def _move(page, explorer, control: str) -> None:
    """Move one explorer control as a reader would: a slider's handle one step right with the keyboard, a
    dropdown to its next option, a toggle to its next button; in button mode, then press the Run button."""
    box = explorer.locator(f".labkit-control-{control}").first
    box.scroll_into_view_if_needed()
    if box.locator(".noUi-handle").count():
        handle = box.locator(".noUi-handle").first
        handle.focus()
        page.keyboard.press("ArrowRight")
    elif box.locator("select").count():
        select = box.locator("select").first
        options = select.locator("option")
        current = select.evaluate("el => el.selectedIndex")
        select.select_option(index=(current + 1) % options.count())
    elif box.locator("button").count() > 1:
        buttons = box.locator("button")
        classes = [buttons.nth(i).get_attribute("class") or "" for i in range(buttons.count())]
        active = next(i for i, c in enumerate(classes) if "mod-active" in c)
        buttons.nth((active + 1) % buttons.count()).click()
    else:
        raise AssertionError(f"control {control!r} is neither a slider, a dropdown nor toggle buttons")
    run = explorer.locator(".labkit-run")
    if run.count():
        run.first.click()


@pytest.mark.parametrize("pillar", list(BROWSER_CASES))
def test_explorer_redraws_in_jupyterlab_when_a_control_moves(pillar, jupyterlab, tmp_path):
    """Run All in JupyterLab (headless Chromium), move the explorer's control, see the plot's data redraw."""
    from playwright.sync_api import sync_playwright

    relative, control = BROWSER_CASES[pillar]
    shots = Path(os.environ.get("LABKIT_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(jupyterlab(relative))
            page.wait_for_selector(".jp-NotebookPanel .jp-CodeCell", timeout=90_000)
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=90_000)
            _run_all_cells(page)

            explorer = page.locator(".jp-OutputArea .labkit-explorer").first
            plot = explorer.locator(".js-plotly-plot").first
            plot.wait_for(state="attached", timeout=300_000)
            _wait_for_idle_kernel(page, timeout=300)  # every cell ran, so the move is all the kernel does
            before = plot.evaluate(_PLOT_DATA)
            _move(page, explorer, control)
            deadline = time.monotonic() + 60
            while plot.evaluate(_PLOT_DATA) == before:
                assert time.monotonic() < deadline, f"moving {control!r} did not redraw the plot within 60 s"
                time.sleep(0.25)
            _wait_for_idle_kernel(page, settle=1.0, timeout=120)
            tracebacks = page.locator(".jp-OutputArea-output", has_text="Traceback (most recent call last)")
            assert tracebacks.count() == 0
            explorer.screenshot(path=str(shots / f"{pillar}-explorer.png"))
        except BaseException:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()
