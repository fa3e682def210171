"""A static site of the workbook, built offline with Sphinx + MyST-NB from a report of ``labkit reproduce``.

Nothing is executed: the pages are the executed notebooks of the report, its claims table, the syllabus
(notebooks/COURSE.md) and the five-seed robustness report (notebooks/ROBUSTNESS.md). Plotly figures render
with the plotly.js that ships in the plotly package and formulas with the MathJax 3 of ``sphinx-mathjax-offline``
(both copied into the site, so it works without a network). Explorers need a kernel: their output is replaced
by a note that says so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat

PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
EXPLORER_NOTE = ("<p><em>Interactive explorer: it recomputes with labkit when a control moves, so it needs a running "
                 "kernel. Open this notebook in JupyterLab (<code>make lab</code>) to use it.</em></p>")

CONF = """\
project = "labkit"
extensions = ["myst_nb", "sphinx-mathjax-offline"]
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath"]
html_theme = "alabaster"
html_static_path = ["_static"]
html_js_files = ["plotly.min.js"]
exclude_patterns = ["_build"]
suppress_warnings = ["mystnb.unknown_mime_type", "myst.header", "misc.highlighting_failure"]
"""


def static_pages(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Outputs a static page can show: plotly figures as HTML divs (plotly.js is loaded once per page by the
    site), explorers (widget views) replaced by a note."""
    import plotly.io as pio

    nb.metadata.pop("widgets", None)  # saved widget state would pull the widget manager from a CDN
    runner_cells = {"injected-parameters", "labkit-harness"}  # papermill's parameters, the explorer harness
    nb.cells = [c for c in nb.cells if not runner_cells & set(c.get("metadata", {}).get("tags", []))]
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_MIME in data:
                outputs.append(nbformat.v4.new_output("display_data", data={"text/html": EXPLORER_NOTE}))
                continue
            if PLOTLY_MIME in data:
                figure = pio.from_json(json.dumps(data[PLOTLY_MIME]), skip_invalid=True)
                html = pio.to_html(figure, include_plotlyjs=False, full_html=False)
                out = nbformat.v4.new_output("display_data", data={"text/html": html})
            outputs.append(out)
        cell.outputs = outputs
    return nb


def _index(report: Path, notebooks: list[str], extra: list[str]) -> str:
    summary = json.loads((report / "summary.json").read_text())
    lines = ["# labkit: the workbook", "",
             "One executed notebook per paper: the idea, the method by hand next to labkit, the experiment and the "
             f"paper's claims checked at `SCALE=\"{summary['scale']}\"` (seed {summary['seed']}). Pages are the "
             "notebooks as `make reproduce` executed them; open them in JupyterLab to use the explorers.", ""]
    toc = ["```{toctree}", ":maxdepth: 1", ":caption: Overview", "", "claims", *extra, "```", "",
           "```{toctree}", ":maxdepth: 1", ":caption: Notebooks", "", *notebooks, "```", ""]
    return "\n".join(lines + toc)


def build_site(report: Path, out: Path, *, root: Path, quiet: bool = True) -> Path:
    """Build the site from ``report`` (a ``labkit reproduce`` folder) into ``out``; return ``out/index.html``."""
    report, out = Path(report), Path(out)
    if not (report / "summary.json").is_file():
        raise ValueError(f"--from {str(report)!r} holds no summary.json: run `make reproduce` first")
    summary = json.loads((report / "summary.json").read_text())
    with tempfile.TemporaryDirectory(prefix="labkit-site-") as tmp:
        src = Path(tmp)
        pages = []
        for row in summary["notebooks"]:
            name = row["notebook"]
            pillar, stem = name.split("/", 1)
            executed = report / pillar / f"{stem}.ipynb"
            if not executed.is_file():
                continue
            target = src / pillar / f"{stem}.ipynb"
            target.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(static_pages(nbformat.read(executed, as_version=4)), target)
            pages.append(f"{pillar}/{stem}")
        if not pages:
            raise ValueError(f"{report} holds no executed notebooks (expected {report}/<pillar>/<notebook>.ipynb)")
        claims = (report / "claims.md").read_text() if (report / "claims.md").exists() else "no claims report"
        (src / "claims.md").write_text("# Claims of this run\n\n```text\n" + claims + "\n```\n")
        extra = []
        for page, filename in (("course", "COURSE.md"), ("robustness", "ROBUSTNESS.md")):
            path = root / "notebooks" / filename
            if path.is_file():
                text = path.read_text()
                if page == "course":  # notebook links point at the pages, not at the .ipynb files
                    text = text.replace(".ipynb)", ")")
                (src / f"{page}.md").write_text(text)
                extra.append(page)
        (src / "index.md").write_text(_index(report, pages, extra))
        (src / "conf.py").write_text(CONF)
        static = src / "_static"
        static.mkdir()
        _copy_assets(static)
        cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-j", "1", *(["-q"] if quiet else []), str(src), str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"sphinx-build failed:\n{proc.stderr[-4000:]}")
    return out / "index.html"


def _copy_assets(static: Path) -> None:
    import plotly

    plotly_js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    shutil.copyfile(plotly_js, static / "plotly.min.js")
