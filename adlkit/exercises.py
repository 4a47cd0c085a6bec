"""Generate the student versions of the notebooks (``exercises/``) from ``notebooks/``.

In a notebook, the code a student must write sits between nbgrader's markers::

    # Hint: count pairs where the anomaly scores higher; ties count one half.
    ### BEGIN SOLUTION
    ...reference answer...
    ### END SOLUTION

The generator replaces each region by ``raise NotImplementedError("Exercise: <hint>")`` at the
region's indentation (the hint is the nearest ``# Hint:`` comment above the region), clears all
outputs and execution counts, and leaves everything else byte-for-byte identical. It never
edits ``notebooks/``; the same input always gives the same output, so CI can check that
``exercises/`` is current (``python -m adlkit exercises --check``).
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

__all__ = ["BEGIN", "END", "ExerciseError", "generate", "make_exercise", "strip_solutions"]

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
_HINT = re.compile(r"^\s*#\s*Hint:\s*(.+?)\s*$", re.IGNORECASE)


class ExerciseError(ValueError):
    """A malformed solution region (unclosed, nested, or END without BEGIN)."""


def strip_solutions(source: str, where: str = "cell") -> tuple[str, int]:
    """Replace every solution region in ``source``; return (new source, number of regions)."""
    out: list[str] = []
    hint = None
    inside = False
    regions = 0
    for lineno, line in enumerate(source.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith(BEGIN):
            if inside:
                raise ExerciseError(f"{where}, line {lineno}: {BEGIN} inside another solution region")
            inside, regions = True, regions + 1
            indent = line[: len(line) - len(line.lstrip())]
            message = f"Exercise: {hint}" if hint else "Exercise: write your solution here"
            out.append(f"{indent}raise NotImplementedError({message!r})")
            continue
        if stripped.startswith(END):
            if not inside:
                raise ExerciseError(f"{where}, line {lineno}: {END} without {BEGIN}")
            inside = False
            continue
        if inside:
            continue
        m = _HINT.match(line)
        if m:
            hint = m.group(1)
        out.append(line)
    if inside:
        raise ExerciseError(f"{where}: {BEGIN} is never closed by {END}")
    text = "\n".join(out)
    if source.endswith("\n"):
        text += "\n"
    return text, regions


def make_exercise(nb: nbformat.NotebookNode, name: str = "notebook") -> tuple[nbformat.NotebookNode, int]:
    """A copy of ``nb`` with solutions removed and outputs cleared; returns (notebook, regions)."""
    ex = nbformat.from_dict(nbformat.reads(nbformat.writes(nb), as_version=4))
    total = 0
    for i, cell in enumerate(ex.cells):
        if cell.cell_type != "code":
            continue
        cell.source, n = strip_solutions(cell.source, where=f"{name}, cell {i}")
        total += n
        cell.outputs = []
        cell.execution_count = None
    return ex, total


def _serialise(nb) -> str:
    return nbformat.writes(nb) + "\n"


def generate(notebooks: str | Path = "notebooks", out: str | Path = "exercises", check: bool = False) -> list[str]:
    """Write ``out/NN_*.ipynb`` for every ``notebooks/NN_*.ipynb``.

    With ``check=True`` nothing is written: the return value lists the exercise files that are
    missing, stale or orphaned (empty when ``exercises/`` is current).
    """
    notebooks, out = Path(notebooks), Path(out)
    sources = sorted(notebooks.glob("[0-9][0-9]_*.ipynb"))
    if not sources:
        raise FileNotFoundError(f"no notebooks named NN_*.ipynb in {notebooks.resolve()}")
    problems = []
    expected = set()
    for src in sources:
        nb = nbformat.read(src, as_version=4)
        ex, _ = make_exercise(nb, name=src.name)
        text = _serialise(ex)
        target = out / src.name
        expected.add(target.name)
        current = target.read_text() if target.is_file() else None
        if current == text:
            continue
        problems.append(f"{target} is {'missing' if current is None else 'out of date'}")
        if not check:
            out.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    for orphan in sorted(out.glob("*.ipynb")) if out.is_dir() else []:
        if orphan.name not in expected:
            problems.append(f"{orphan} has no notebook in {notebooks} (delete it)")
    return problems
