"""The assignments (adlkit.assignments, assignments/hidden/, adlkit.grading): every hidden test passes the
notebook's own answer and fails a wrong answer and one that calls adlkit's reference; nbgrader's release keeps
neither solutions nor hidden tests; autograding a filled-in release notebook scores each exercise."""
import zipfile
from pathlib import Path

import nbformat
import pytest
import torch
from assignment_cases import CASES

from adlkit import assignments
from adlkit.grading import ReferenceCallError, own_work

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
EXERCISES = {ex.grade_id: ex for p in NOTEBOOKS
             for ex in assignments.exercises_of(nbformat.read(p, as_version=4), p.name, ROOT)}


def _solution(grade_id: str) -> str:
    """The notebook's own answer: its solution cell, markers and all (they are comments)."""
    ex = EXERCISES[grade_id]
    return nbformat.read(ROOT / "notebooks" / ex.notebook, as_version=4).cells[ex.solution_cell].source


def _run_hidden(grade_id: str, answer: str) -> None:
    """The answer then the hidden tests, in one namespace, as nbgrader runs them after the notebook's cells."""
    ns: dict = {}
    exec(CASES[grade_id]["setup"], ns)
    exec(answer, ns)
    exec(EXERCISES[grade_id].hidden.read_text(), ns)


def test_every_exercise_has_hidden_tests_points_and_cases():
    assert sorted(EXERCISES) == sorted(CASES)
    assert len(EXERCISES) == 13 and all(ex.points >= 2 for ex in EXERCISES.values())
    assert all(CASES[g]["notebook"] == ex.notebook for g, ex in EXERCISES.items())


@pytest.mark.parametrize("grade_id", sorted(CASES))
def test_hidden_tests_pass_the_notebooks_own_answer(grade_id):
    _run_hidden(grade_id, _solution(grade_id))


@pytest.mark.parametrize("grade_id", sorted(CASES))
def test_hidden_tests_fail_a_subtly_wrong_answer(grade_id):
    with pytest.raises(AssertionError) as err:
        _run_hidden(grade_id, CASES[grade_id]["wrong"])
    assert not isinstance(err.value, ReferenceCallError)  # failed on its values, not on what it called


@pytest.mark.parametrize("grade_id", sorted(CASES))
def test_hidden_tests_fail_an_answer_that_calls_adlkits_reference(grade_id):
    with pytest.raises(ReferenceCallError, match="calls adlkit's own"):
        _run_hidden(grade_id, CASES[grade_id]["cheat"])


def test_own_work_sees_the_reference_under_any_name_and_lets_other_functions_through():
    from adlkit import losses

    alias = losses.deviation_loss

    def via_alias(z, y):
        return alias(z, y)

    def via_wrapper(z, y):
        return (lambda a, b: losses.deviation_loss(a, b))(z, y)

    def own(z, y):
        return torch.where(y > 0, torch.clamp(5 - z, min=0), z.abs())

    z, y = torch.tensor([1.0, -2.0]), torch.tensor([1.0, 0.0])
    for fn in (via_alias, via_wrapper):
        with pytest.raises(ReferenceCallError, match="deviation_loss"):
            own_work(fn, z, y, forbidden=[losses.deviation_loss])
    assert torch.equal(own_work(own, z, y, forbidden=[losses.deviation_loss]), torch.tensor([4.0, 2.0]))
    # torch's own functions are not forbidden, and the hook is gone afterwards
    import sys
    assert sys.getprofile() is None


def _stub_notebook(tmp_path, source, hidden=None):
    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    (root / assignments.HIDDEN).mkdir(parents=True)
    if hidden is not None:
        (root / assignments.HIDDEN / "f.py").write_text(hidden)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source), nbformat.v4.new_code_cell("check(f)")])
    return root, nb


@pytest.mark.parametrize("source,hidden,error,match", [
    ("def f():\n    ### BEGIN SOLUTION\n    pass\n    ### END SOLUTION\n", None, FileNotFoundError, "no hidden tests"),
    ("def f():\n    ### BEGIN SOLUTION\n    pass\n    ### END SOLUTION\n", "assert True\n", ValueError, "points"),
    ("def f():\n    ### BEGIN SOLUTION\n    pass\n", "# points: 1\n", ValueError, "one region"),
    ("def f():\n    ### BEGIN SOLUTION\n    pass\n    ### END SOLUTION\ndef g():\n    pass\n", "# points: 1\n",
     ValueError, "exactly one top-level function"),
])
def test_a_malformed_exercise_is_a_clear_error(tmp_path, source, hidden, error, match):
    root, nb = _stub_notebook(tmp_path, source, hidden)
    with pytest.raises(error, match=match):
        assignments.exercises_of(nb, "00_x.ipynb", root)


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """The nbgrader course built from this repository (about 15 s)."""
    out = tmp_path_factory.mktemp("course")
    problems = assignments.build(ROOT, out, exercises="exercises", check=True)
    assert problems == []  # exercises/ is nbgrader's current release
    return out


def test_the_release_has_no_solution_and_no_hidden_test_and_locks_the_graded_cells(course):
    for path in NOTEBOOKS:
        source = nbformat.read(course / "source" / path.stem / path.name, as_version=4)
        release = nbformat.read(course / "release" / path.stem / path.name, as_version=4)
        assert len(release.cells) == len(source.cells)
        for ex in (e for e in EXERCISES.values() if e.notebook == path.name):
            answer, test = release.cells[ex.solution_cell], release.cells[ex.test_cell]
            body = source.cells[ex.solution_cell].source.split(assignments.BEGIN)[1].split(assignments.END)[0]
            assert body.strip() and body.strip() not in answer.source  # the solution is gone ...
            assert "raise NotImplementedError()" in answer.source and "# Hint:" in answer.source  # ... the hint stays
            assert answer.metadata.nbgrader["grade_id"] == ex.grade_id and answer.metadata.nbgrader["solution"]
            assert "### BEGIN HIDDEN TESTS" in source.cells[ex.test_cell].source
            assert "HIDDEN TESTS" not in test.source and "own_work" not in test.source
            assert test.metadata.nbgrader["locked"] and test.metadata.nbgrader["points"] == ex.points
        assert all(not c.get("outputs") for c in release.cells if c.cell_type == "code")


def _filled(course, notebook, answers, tmp_path):
    """A release notebook with the given answers typed into its solution cells, saved under its own name."""
    stem = Path(notebook).stem
    nb = nbformat.read(course / "release" / stem / notebook, as_version=4)
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if cell.metadata.get("nbgrader", {}).get("solution") and grade_id in answers:
            cell.source = answers[grade_id]
    path = tmp_path / stem / notebook
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def test_autograding_gives_the_reference_full_marks_and_wrong_or_borrowed_answers_none(course, tmp_path):
    nb = "02_deviation_losses.ipynb"
    right = {g: _solution(g).replace(assignments.BEGIN, "").replace(assignments.END, "")
             for g in ("deviation_loss", "top_k_mean")}
    one = _filled(course, nb, {"deviation_loss": right["deviation_loss"], "top_k_mean": CASES["top_k_mean"]["wrong"]},
                  tmp_path / "a")
    assert assignments.autograde(one, ROOT, course=course) == {"deviation_loss": (2.0, 2.0), "top_k_mean": (0.0, 2.0)}
    two = _filled(course, nb, {"deviation_loss": CASES["deviation_loss"]["cheat"], "top_k_mean": right["top_k_mean"]},
                  tmp_path / "b")
    assert assignments.autograde(two, ROOT, course=course) == {"deviation_loss": (0.0, 2.0), "top_k_mean": (2.0, 2.0)}


def test_rebuilding_refuses_a_course_that_holds_students_work(tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    (live / "nbgrader_config.py").write_text("")
    (live / "submitted" / "alice").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="students' work"):
        assignments.build(ROOT, live, exercises=None)
    assert (live / "submitted" / "alice").is_dir()


def test_grading_needs_the_instructors_repository(tmp_path):
    sub = tmp_path / "02_deviation_losses.ipynb"
    sub.write_text("{}")
    with pytest.raises(FileNotFoundError, match="instructor's repository"):
        assignments.autograde(sub, tmp_path)


def test_the_student_bundle_holds_the_release_and_the_library_and_no_solutions(tmp_path):
    path = assignments.student_bundle(ROOT, tmp_path / "bundle.zip")
    names = zipfile.ZipFile(path).namelist()
    top = {n.split("/")[1] for n in names}
    assert {"exercises", "adlkit", "pyproject.toml", "README.md", "LICENSE", "docs"} == top
    assert sum(n.startswith("adlkit-course/exercises/") for n in names) == len(NOTEBOOKS)
    assert not any(n.startswith(("adlkit-course/notebooks/", "adlkit-course/assignments/", "adlkit-course/book/"))
                   for n in names)
    assert "adlkit-course/docs/students.md" in names and "adlkit-course/adlkit/grading.py" in names


def test_the_adl_loss_hidden_test_catches_devnets_shared_step_too():
    """ADL's step is DevNet's deviation step with ADL's switches: calling that one is calling the reference."""
    cheat = '''
from adlkit import losses
from adlkit.methods.adl import _deviation_switches
from adlkit.methods.deviation import deviation_step


def adl_loss(out, labels, masks, mu_r, sd_r, target, config, after_burn_in):
    terms = deviation_step(out["score"], out["logit"], labels, mu_r, sd_r, target if config.use_bce else None,
                           after_burn_in, **_deviation_switches(config))
    total = terms["total"]
    if config.use_seg:
        total = total + losses.focal_loss(out["seg"].float(), masks, gamma=config.focal_gamma, reduction="mean")
    return total
'''
    with pytest.raises(ReferenceCallError, match="calls adlkit's own"):
        _run_hidden("adl_loss", cheat)
