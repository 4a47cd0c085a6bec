"""The notebook contract for every committed notebook: title and learning goals, a seeded setup cell,
one ``parameters`` cell, an exercise with its checker, Summary / Exercises / References, no outputs."""
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ is empty"


@pytest.mark.parametrize("path", NOTEBOOKS + sorted((ROOT / "exercises").glob("*.ipynb")), ids=lambda p: p.name)
def test_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    dirty = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; run nbstripout (pre-commit install does it for you)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_contract(path):
    nb = json.loads(path.read_text())
    cells = nb["cells"]
    src = ["".join(c["source"]) for c in cells]
    assert cells[0]["cell_type"] == "markdown" and src[0].startswith("# "), "starts with a title"
    assert "Learning goals" in src[0]
    setup = next(s for c, s in zip(cells, src) if c["cell_type"] == "code")
    assert "adlkit.seed_everything(" in setup and "adlkit.device()" in setup
    params = [s for c, s in zip(cells, src) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1 and "adlkit.quick_mode()" in params[0]
    markdown = "\n".join(s for c, s in zip(cells, src) if c["cell_type"] == "markdown")
    for heading in ("## Summary", "## Exercises", "## References"):
        assert heading in markdown
    code = "\n".join(s for c, s in zip(cells, src) if c["cell_type"] == "code")
    assert "### BEGIN SOLUTION" in code and "from adlkit.checks import" in code
