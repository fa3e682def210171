"""The course edition: exercise checks, student copies (nbgrader), the syllabus and the static site."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
import torch

from labkit.catalog import discover, repo_root
from labkit.course import (
    exercise_count,
    leaked_solutions,
    learning_goals,
    student_notebook,
    syllabus,
    update_course,
)
from labkit.exercises import ExerciseIncorrect, ExerciseNotDone, check, compare

ROOT = repo_root()


def exercise_notebook(pillar: str = "sam", stem: str = "01_tiny", *,
                      course: dict | None = None) -> nbformat.NotebookNode:
    """A notebook with one claim, then one graded exercise (solution cell + locked check cell)."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('SEED: int = 0\nSCALE: str = "teach"\nDEVICE: str = "auto"')
    params.metadata["tags"] = ["parameters"]
    intro = nbformat.v4.new_markdown_cell("# Tiny\n\n**You will learn to**\n- double a number;\n- check it.\n")
    body = nbformat.v4.new_code_cell(
        "import labkit\nimport plotly.graph_objects as go\nrun = labkit.start(seed=SEED, scale=SCALE, device='cpu')\n"
        "go.Figure(go.Scatter(x=[0, 1, 2], y=[1, 3, 2])).show()\n"
        "labkit.check_claims([labkit.Claim('c', 's', measured=1, criterion='x', holds=True, "
        "paper_value='Fig. 1')], run=run)")
    solution = nbformat.v4.new_code_cell(
        "def double(x):\n    ### BEGIN SOLUTION\n    y = 2 * x  # the secret line\n    return y\n    ### END SOLUTION")
    solution.metadata["nbgrader"] = {"solution": True, "grade": False, "locked": False,
                                     "grade_id": "ex1-solution", "schema_version": 3}
    checker = nbformat.v4.new_code_cell(
        "from labkit.exercises import check\ncheck('Exercise 1: double', lambda: double(3.0), expected=6.0)")
    checker.metadata["nbgrader"] = {"solution": False, "grade": True, "locked": True, "points": 1,
                                    "grade_id": "ex1-check", "schema_version": 3}
    nb.cells = [intro, params, body, solution, checker]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["labkit"] = dict(pillar=pillar, title=stem, authors="A", year=2024, url="https://arxiv.org/abs/1",
                                 claim="c", cost={"teach": {"cpu": 12.0}, "paper": {"cpu": 300.0, "cuda": 20.0}},
                                 course=course or {"session": 1, "session_title": "Basics", "prerequisites": [],
                                                   "maths": ["arithmetic"]})
    return nb


# --- exercise checks -------------------------------------------------------------------------------------------

def test_check_accepts_a_right_answer_and_returns_it(capsys):
    assert check("Ex", lambda: torch.tensor([1.0, 2.0]), expected=torch.tensor([1.0, 2.0 + 1e-7])).shape == (2,)
    assert "Ex: correct." in capsys.readouterr().out
    assert check("Ex", lambda: "b", test=lambda v: None if v == "b" else "not b") == "b"


def test_check_says_when_the_exercise_is_not_done():
    def scaffold():
        raise NotImplementedError()

    with pytest.raises(ExerciseNotDone, match="Ex 2 is not solved yet.*YOUR CODE HERE"):
        check("Ex 2", scaffold, expected=1.0)


@pytest.mark.parametrize("answer, expected, message", [
    (torch.ones(3), torch.ones(2), "expected shape \\(2,\\), got shape \\(3,\\)"),
    (torch.tensor([1.0, float("nan")]), torch.ones(2), "NaN or inf"),
    (torch.tensor([1.0, 2.5]), torch.tensor([1.0, 2.0]), "largest difference 0.5"),
    ("x", 1.0, "expected a tensor or number"),
    ("x", "y", "expected 'y', got 'x'"),
])
def test_check_names_what_is_wrong(answer, expected, message):
    with pytest.raises(ExerciseIncorrect, match=f"Ex: not yet right: .*{message}.*Hint: think"):
        check("Ex", lambda: answer, expected=expected, hint="think")


def test_check_refuses_bad_arguments():
    with pytest.raises(ValueError, match="name"):
        check("", lambda: 1, expected=1)
    with pytest.raises(TypeError, match="answer must be a zero-argument callable"):
        check("Ex", 1, expected=1)
    with pytest.raises(ValueError, match="atol"):
        check("Ex", lambda: 1, expected=1, atol=float("nan"))
    assert compare(2, 2.0) is None and compare([1, 2], [1.0, 2.0]) is None


# --- student copies --------------------------------------------------------------------------------------------

def test_student_copy_has_scaffolds_locked_checks_and_no_solution():
    nb = exercise_notebook()
    student = student_notebook(nb)
    assert exercise_count(nb) == 1
    sources = [c.source for c in student.cells]
    assert "raise NotImplementedError()" in sources[3] and "secret" not in "".join(sources)
    assert student.cells[4].metadata["editable"] is False and student.cells[4].metadata["deletable"] is False
    assert [c.source for i, c in enumerate(student.cells) if i != 3] == [c.source for i, c in enumerate(nb.cells)
                                                                        if i != 3]  # every other cell unchanged
    assert leaked_solutions(nb, student) == []


def test_a_solution_outside_a_solution_cell_is_refused():
    nb = exercise_notebook()
    del nb.cells[3].metadata["nbgrader"]
    with pytest.raises(Exception, match="(?i)solution"):
        student_notebook(nb)


def test_no_solution_text_reaches_any_student_copy_of_the_workbook():
    for info in discover(ROOT):
        nb = nbformat.read(info.path, as_version=4)
        assert leaked_solutions(nb, student_notebook(nb)) == [], info.name


@pytest.mark.notebook
def test_student_copy_runs_until_the_first_exercise_and_fails_there_with_the_check_message(tmp_path):
    from labkit.cli import main

    root = tmp_path / "wb"
    path = root / "notebooks" / "sam" / "01_tiny.ipynb"
    path.parent.mkdir(parents=True)
    nbformat.write(exercise_notebook(), path)
    out = tmp_path / "out"
    assert main(["reproduce", "--root", str(root), "--out", str(out / "instructor"), "--device", "cpu"]) == 0
    assert main(["student", "--root", str(root), "--out", str(out / "student")]) == 0
    assert main(["student", "--root", str(root), "--out", str(out / "student")]) == 2  # no silent overwrite
    import papermill as pm

    with pytest.raises(pm.PapermillExecutionError) as info:
        pm.execute_notebook(str(out / "student" / "sam" / "01_tiny.ipynb"), str(tmp_path / "ran.ipynb"),
                            kernel_name="python3", progress_bar=False, cwd=str(tmp_path))
    assert info.value.ename == "ExerciseNotDone"
    assert "Exercise 1: double is not solved yet" in info.value.evalue
    ran = nbformat.read(tmp_path / "ran.ipynb", as_version=4)
    claims_cell = next(c for c in ran.cells if "check_claims(" in c.source)
    assert any("reproduced" in json.dumps(o) for o in claims_cell.outputs)  # the claims ran before it


# --- the syllabus ----------------------------------------------------------------------------------------------

def test_learning_goals_come_from_the_first_cell():
    assert learning_goals(exercise_notebook()) == ["double a number", "check it"]
    assert all(learning_goals(nbformat.read(i.path, as_version=4)) for i in discover(ROOT)), \
        "every notebook's first cell lists its goals under 'You will learn to'"


def _workbook(tmp_path: Path, courses: dict[str, dict]) -> Path:
    for stem, course in courses.items():
        path = tmp_path / "notebooks" / "sam" / f"{stem}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(exercise_notebook(stem=stem, course=course), path)
    return tmp_path


def test_syllabus_orders_sessions_and_lists_prerequisites_goals_and_time(tmp_path):
    root = _workbook(tmp_path, {
        "01_a": {"session": 1, "session_title": "Basics", "prerequisites": [], "maths": ["gradients"]},
        "02_b": {"session": 2, "session_title": "More", "prerequisites": ["sam/01_a"], "maths": []}})
    text = syllabus(discover(root))
    assert text.index("## Session 1: Basics") < text.index("## Session 2: More")
    assert "notebooks `sam/01_a`; maths: none" in text and "maths: gradients" in text
    assert "  - double a number" in text
    assert "Time at teach scale: 12 s; at paper scale: 5.0 min (GPU: 20 s); graded exercises: 1." in text
    course = root / "notebooks" / "COURSE.md"
    assert not update_course(course, discover(root), write=True) and update_course(course, discover(root), write=False)


@pytest.mark.parametrize("course, message", [
    ({"session": 1, "session_title": "t", "prerequisites": ["sam/09_nope"], "maths": []}, "is not a notebook"),
    ({"session": 1, "session_title": "t", "prerequisites": ["sam/03_late"], "maths": []}, "later session"),
    ({"session": 0, "session_title": "t", "prerequisites": [], "maths": []}, "positive integer"),
    ({"session": 1, "prerequisites": [], "maths": []}, "lacks \\['session_title'\\]"),
])
def test_syllabus_refuses_bad_course_metadata(tmp_path, course, message):
    root = _workbook(tmp_path, {"01_a": course, "03_late": {"session": 4, "session_title": "x", "prerequisites": [],
                                                             "maths": []}})
    with pytest.raises(ValueError, match=message):
        syllabus(discover(root))


def test_course_md_is_up_to_date():
    assert update_course(ROOT / "notebooks" / "COURSE.md", discover(ROOT), write=False), \
        "notebooks/COURSE.md is stale: run `python -m labkit course --write`"


# --- the site --------------------------------------------------------------------------------------------------

@pytest.mark.browser
def test_site_builds_offline_and_renders_a_notebook_page_in_a_real_browser(tmp_path):
    from test_browser import CHROMIUM, FLAGS

    from labkit.cli import main

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (make test installs it)")
    root = _workbook(tmp_path / "wb", {"01_a": {"session": 1, "session_title": "Basics", "prerequisites": [],
                                               "maths": []}})
    assert main(["course", "--root", str(root), "--write"]) == 0
    report, site = tmp_path / "report", tmp_path / "site"
    assert main(["reproduce", "--root", str(root), "--out", str(report), "--device", "cpu"]) == 0
    assert main(["site", "--root", str(root), "--from", str(report), "--out", str(site)]) == 0
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((site / "index.html").as_uri())
        assert page.locator("a[href='sam/01_a.html']").count() >= 1 and page.locator("a[href='course.html']").count()
        page.goto((site / "sam" / "01_a.html").as_uri())
        page.wait_for_selector("svg.main-svg", timeout=30_000)  # the plotly figure drew itself
        assert page.locator("table").count() >= 1 and "reproduced" in page.content()  # the claims table
        browser.close()
    assert errors == []
