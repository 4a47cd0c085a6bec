"""The notebooks as nbgrader assignments: source, release (what ``exercises/`` is) and autograding.

Each notebook of ``notebooks/`` is one assignment. Its fill-in exercises are already written with nbgrader's
markers: the code a student writes sits between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` in a cell that
defines one function, and the next code cell checks it (``check_<...>(fn)``, adlkit's visible checker). This
module adds what nbgrader needs and nothing else, without editing ``notebooks/``:

* **source** (``build/assignments/source/<NN_name>/<NN_name>.ipynb``): the notebook with nbgrader's cell
  metadata: the solution cell is an autograded answer whose ``grade_id`` is the function's name; the checker
  cell becomes a locked, graded test cell (``test_<grade_id>``, the points named in its hidden test) with
  ``assignments/hidden/<grade_id>.py`` appended between ``### BEGIN HIDDEN TESTS`` and
  ``### END HIDDEN TESTS``;
* **release** (``nbgrader generate_assignment``, here through :class:`nbgrader.apps.NbGraderAPI`): solutions
  replaced by nbgrader's stub (the ``# Hint:`` line above each region stays), hidden tests removed, outputs
  cleared, checksums recorded. ``exercises/`` is this release, one notebook per assignment;
  ``python -m adlkit assignments --check`` fails when it is not current with ``notebooks/``;
* **autograding** (:func:`autograde`): nbgrader's ``autograde`` on a student's notebook (the graded cells put
  back from the source, hidden tests included, the notebook run in quick mode), then each exercise's score
  read from the gradebook.

Why nbgrader rather than otter-grader: the notebooks already carry nbgrader's solution markers, nbgrader is
what JupyterHub courses use to distribute and collect (its exchange, ``nbgrader collect``, the formgrader for
the open questions), and its autograder runs the whole notebook as the student ran it. otter-grader's
``# BEGIN SOLUTION`` / ``# BEGIN QUESTION`` format would mean rewriting every exercise cell.

Hidden tests tell a student's own implementation from a call to the one adlkit ships with
:func:`adlkit.grading.own_work` (``docs/teaching.md`` says why detection rather than a hidden reference).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import nbformat

__all__ = ["Exercise", "autograde", "build", "exercises_of", "source_notebook", "student_bundle"]

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"  # nbgrader's markers, as the notebooks write them
HIDDEN = Path("assignments") / "hidden"
_DEF = re.compile(r"^def (\w+)\(", re.M)
_POINTS = re.compile(r"^#\s*points:\s*(\d+)\s*$", re.M)
_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
# what a student bundle holds besides the release notebooks (no notebooks/, book/ or assignments/: solutions)
BUNDLE_FILES = ("adlkit", "pyproject.toml", "README.md", "LICENSE", "docs/students.md")


@dataclass(frozen=True)
class Exercise:
    """One fill-in exercise: the function a student writes (``grade_id``), its cells and its points."""

    notebook: str  # file name, e.g. "02_deviation_losses.ipynb"
    grade_id: str  # the function's name
    solution_cell: int  # index of the cell with the solution region
    test_cell: int  # index of the checker cell after it
    points: int
    hidden: Path  # assignments/hidden/<grade_id>.py


def _hidden_points(path: Path) -> int:
    m = _POINTS.search(path.read_text(encoding="utf-8"))
    if not m:
        raise ValueError(f"{path}: the first line must say how many points the exercise is worth, e.g. '# points: 2'")
    return int(m.group(1))


def exercises_of(nb: nbformat.NotebookNode, name: str, root: str | Path = ".") -> list[Exercise]:
    """The fill-in exercises of one notebook, in order; a clear error for a malformed one."""
    out = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or BEGIN not in cell.source:
            continue
        lines = [ln.strip() for ln in cell.source.splitlines() if ln.strip().startswith(("### BEGIN", "### END"))]
        if lines != [BEGIN, END]:
            raise ValueError(f"{name}, cell {i}: a solution cell holds one region, {BEGIN} then {END}; it has {lines}")
        fns = _DEF.findall(cell.source)
        if len(fns) != 1:
            raise ValueError(f"{name}, cell {i}: a solution cell must define exactly one top-level function (the "
                             f"exercise's grade id); it defines {fns or 'none'}")
        later = [j for j in range(i + 1, len(nb.cells)) if nb.cells[j].cell_type == "code"]
        if not later or f"({fns[0]})" not in nb.cells[later[0]].source:
            raise ValueError(f"{name}, cell {i}: the next code cell must check {fns[0]} (e.g. check_...({fns[0]})); "
                             "it is the cell the hidden tests are added to")
        hidden = Path(root) / HIDDEN / f"{fns[0]}.py"
        if not hidden.is_file():
            raise FileNotFoundError(f"{name}: exercise {fns[0]} has no hidden tests: write {hidden}")
        out.append(Exercise(name, fns[0], i, later[0], _hidden_points(hidden), hidden))
    return out


def source_notebook(nb: nbformat.NotebookNode, exercises: list[Exercise]) -> nbformat.NotebookNode:
    """nbgrader's source version of a notebook: solution and graded test cells marked, hidden tests appended."""
    src = nbformat.from_dict(nbformat.reads(nbformat.writes(nb), as_version=4))
    for ex in exercises:
        src.cells[ex.solution_cell].metadata["nbgrader"] = {
            "grade": False, "grade_id": ex.grade_id, "locked": False, "schema_version": 3, "solution": True,
            "task": False}
        test = src.cells[ex.test_cell]
        hidden = ex.hidden.read_text(encoding="utf-8").rstrip("\n")
        test.source = f"{test.source.rstrip()}\n\n### BEGIN HIDDEN TESTS\n{hidden}\n### END HIDDEN TESTS"
        test.metadata["nbgrader"] = {
            "grade": True, "grade_id": f"test_{ex.grade_id}", "locked": True, "points": ex.points,
            "schema_version": 3, "solution": False, "task": False}
    for cell in src.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return src


# nbgrader's settings for this course, in one place: the API calls here and the course's nbgrader_config.py
_SETTINGS = {("ClearSolutions", "code_stub"): {"python": _STUB},
             ("Execute", "timeout"): 1800,  # a notebook's longest cell, in seconds (quick mode: well under a minute)
             ("Execute", "allow_errors"): True}  # a failing test cell scores 0 instead of stopping the run


def _config(course: Path, timeout: int = 1800):
    from traitlets.config import Config

    c = Config()
    c.CourseDirectory.root = str(course)
    c.CourseDirectory.db_url = f"sqlite:///{course / 'gradebook.db'}"
    for (section, key), value in _SETTINGS.items():
        c[section][key] = value
    c.Execute.timeout = timeout
    return c


_CONFIG_FILE = ("# nbgrader's configuration for the adlkit course (written by `python -m adlkit assignments`).\n"
                "# Autograde runs each notebook in quick mode: export ADLKIT_QUICK=1 before `nbgrader autograde`.\n"
                "c = get_config()  # noqa: F821\n"
                'c.CourseDirectory.db_url = "sqlite:///gradebook.db"\n'
                + "".join(f"c.{section}.{key} = {value!r}\n" for (section, key), value in _SETTINGS.items()))


def _environment(**values: str):
    """:func:`adlkit.config.environment` with this Python's ``bin/`` first on ``PATH``: nbgrader's gradebook runs
    the ``alembic`` command, which sits beside this Python (a virtualenv's ``bin/``) whether or not that is on
    ``PATH``."""
    from .config import environment

    values.setdefault("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return environment(**values)


def _api(course: Path, timeout: int = 1800):
    import logging

    from nbgrader.apps import NbGraderAPI

    api = NbGraderAPI(config=_config(course, timeout))
    api.log.setLevel(logging.ERROR)
    return api


def _normalise(path: Path) -> str:
    """A release notebook as committed: nbformat's own serialisation, a final newline (stable for --check)."""
    return nbformat.writes(nbformat.read(path, as_version=4)) + "\n"


def build(root: str | Path = ".", out: str | Path = "build/assignments", exercises: str | Path | None = "exercises",
          check: bool = False) -> list[str]:
    """Write the nbgrader course directory ``out`` (source, release, gradebook, ``nbgrader_config.py``) and copy
    the release into ``exercises`` (``None``: leave it). With ``check=True`` ``exercises`` is compared, not
    written: the return value lists what is missing, stale or orphaned there (empty: current)."""
    root, out = Path(root).resolve(), Path(out).resolve()
    sources = sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if not sources:
        raise FileNotFoundError(f"no notebooks named NN_*.ipynb in {root / 'notebooks'}")
    if out.exists() and any(out.iterdir()) and not (out / "nbgrader_config.py").exists():
        raise FileExistsError(f"{out} exists and is not a course directory this command wrote: choose another --out")
    live = [d for d in ("submitted", "autograded", "feedback") if (out / d).is_dir() and any((out / d).iterdir())]
    if live:  # rebuilding would replace the gradebook that holds their grades
        raise FileExistsError(f"{out} holds students' work ({', '.join(live)}/): it is a course in use; build into "
                              "another --out (or copy the course elsewhere before rebuilding)")
    for sub in ("source", "release"):
        shutil.rmtree(out / sub, ignore_errors=True)
    (out / "gradebook.db").unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "nbgrader_config.py").write_text(_CONFIG_FILE)
    for path in sources:
        nb = nbformat.read(path, as_version=4)
        target = out / "source" / path.stem / path.name
        target.parent.mkdir(parents=True)
        nbformat.write(source_notebook(nb, exercises_of(nb, path.name, root)), target)
    api = _api(out)
    for path in sources:
        with _environment():
            result = api.generate_assignment(path.stem, force=True, create=True)
        if not result["success"]:
            raise RuntimeError(f"nbgrader generate_assignment {path.stem} failed:\n{result['log']}\n{result['error']}")
    problems = []
    if exercises is not None:
        exercises = Path(root / exercises)
        expected = set()
        for path in sources:
            text = _normalise(out / "release" / path.stem / path.name)
            target = exercises / path.name
            expected.add(path.name)
            current = target.read_text(encoding="utf-8") if target.is_file() else None
            if current != text:
                problems.append(f"{target} is {'missing' if current is None else 'out of date'}")
                if not check:
                    exercises.mkdir(parents=True, exist_ok=True)
                    target.write_text(text, encoding="utf-8")
        for orphan in sorted(exercises.glob("*.ipynb")) if exercises.is_dir() else []:
            if orphan.name not in expected:
                problems.append(f"{orphan} has no notebook in {root / 'notebooks'} (delete it)")
    return problems


def student_bundle(root: str | Path = ".", out: str | Path = "build/assignments/adlkit-student.zip") -> Path:
    """The zip a student installs and opens: the release notebooks (``exercises/``) and the library, its
    ``pyproject.toml``, README, licence and the students' page; no ``notebooks/`` (the solutions), ``book/``
    or ``assignments/`` (hidden tests, the key)."""
    root, out = Path(root).resolve(), Path(out).resolve()
    if out.exists() and out.suffix != ".zip":
        raise FileExistsError(f"{out} is not a .zip this command wrote: choose another path")
    out.parent.mkdir(parents=True, exist_ok=True)
    files = sorted((root / "exercises").glob("*.ipynb"))
    if not files:
        raise FileNotFoundError(f"no release notebooks in {root / 'exercises'}: run python -m adlkit assignments first")
    for name in BUNDLE_FILES:
        p = root / name
        if not p.exists():
            raise FileNotFoundError(f"{p} is missing: the student bundle needs it")
        files += sorted(f for f in p.rglob("*") if f.is_file() and "__pycache__" not in f.parts) if p.is_dir() else [p]
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for f in files:
            z.write(f, Path("adlkit-course") / f.relative_to(root))
    return out


def autograde(submission: str | Path, root: str | Path = ".", course: str | Path | None = None,
              student: str = "student", timeout: int = 1800) -> dict[str, tuple[float, float]]:
    """nbgrader's autograde of one student notebook: ``{grade_id: (score, max_score)}`` per exercise.

    The submission is a release notebook of ``exercises/`` the student filled in (its file name says which
    assignment). nbgrader puts the graded cells back from the source (the hidden tests with them), runs the
    notebook top to bottom in quick mode (``ADLKIT_QUICK=1``) and scores each test cell: its points when it
    runs without an error, 0 otherwise. ``course`` is a course directory written by :func:`build` (default: a
    temporary one, built for this call)."""
    from nbgrader.api import Gradebook

    submission = Path(submission).resolve()
    name = submission.name
    if not submission.is_file():
        raise FileNotFoundError(f"{submission}: no such notebook")
    if not (Path(root) / HIDDEN).is_dir() or not (Path(root) / "notebooks").is_dir():
        raise FileNotFoundError(f"{Path(root).resolve()} has no notebooks/ or {HIDDEN}/: grading needs the "
                                "instructor's repository (a student bundle has neither); run it there")
    if not re.match(r"^\d\d_.+\.ipynb$", name):
        raise ValueError(f"{submission}: a submission keeps its release name (e.g. 02_deviation_losses.ipynb)")
    with tempfile.TemporaryDirectory() as tmp:
        course = Path(course).resolve() if course else Path(tmp) / "course"
        if not (course / "source" / submission.stem / name).is_file():
            build(root, course, exercises=None)
        dest = course / "submitted" / student / submission.stem
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        shutil.copy(submission, dest / name)
        with _environment(ADLKIT_QUICK="1"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nbgrader's own SQLAlchemy deprecation warnings, not the student's
            result = _api(course, timeout).autograde(submission.stem, student, force=True, create=True)
            if not result["success"]:
                raise RuntimeError(f"nbgrader autograde failed:\n{result['log']}\n{result['error']}")
            with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
                nb = gb.find_submission_notebook(submission.stem, submission.stem, student)
                return {g.name.removeprefix("test_"): (float(g.score), float(g.max_score)) for g in nb.grades}
