"""A real-browser test: JupyterLab on 127.0.0.1 with a token, the exemplar notebook run in headless Chromium,
a widget moved with the keyboard, and the plotly figure checked to have changed."""

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
EXEMPLAR = repo_root() / "notebooks" / "grokking" / "01_benign_overfitting_xor.ipynb"
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


@pytest.fixture
def jupyterlab(tmp_path):
    """JupyterLab serving a copy of the exemplar (so autosave never touches the repository)."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    work = tmp_path / "lab"
    work.mkdir()
    shutil.copy(EXEMPLAR, work / EXEMPLAR.name)
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
        yield f"http://127.0.0.1:{port}/lab/tree/{EXEMPLAR.name}?token={token}"
    finally:
        proc.terminate()  # stop the server by its PID
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


def test_exemplar_runs_in_jupyterlab_and_its_widget_redraws_the_figure(jupyterlab, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(jupyterlab)
            page.wait_for_selector(".jp-NotebookPanel .jp-CodeCell", timeout=90_000)
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=90_000)
            _run_all_cells(page)

            title = page.locator(".jp-OutputArea .js-plotly-plot .gtitle", has_text="step 1:").first
            title.wait_for(state="attached", timeout=300_000)
            before = title.text_content()

            handle = page.locator(".jp-OutputArea .widget-slider .noUi-handle").first
            handle.scroll_into_view_if_needed()
            handle.focus()
            page.keyboard.press("ArrowRight")

            changed = page.locator(".jp-OutputArea .js-plotly-plot .gtitle", has_text="step 2:").first
            changed.wait_for(state="attached", timeout=60_000)
            after = changed.text_content()
            assert before != after and after.startswith("step 2:")
            tracebacks = page.locator(".jp-OutputArea-output", has_text="Traceback (most recent call last)")
            assert tracebacks.count() == 0
        except BaseException:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()
