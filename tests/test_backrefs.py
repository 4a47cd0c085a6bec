"""Every "Derived in notebook NN, section S" in the library points at a section that exists (d2l's back-references:
from the code to its derivation in one hop; a renumbered notebook must not leave them pointing nowhere)."""
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REF = re.compile(r"Derived in notebook (\d\d),\s+(?:§|section\s+)(\d+[a-z]?)")


def _sections(notebook: Path) -> set[str]:
    found = set()
    for cell in json.loads(notebook.read_text())["cells"]:
        if cell["cell_type"] == "markdown":
            found |= set(re.findall(r"^##+ (\d+[a-z]?) ·", "".join(cell["source"]), re.MULTILINE))
    return found


def test_every_back_reference_names_an_existing_notebook_section():
    notebooks = {p.name[:2]: p for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    refs = [(path, nb, sec) for path in sorted((ROOT / "adlkit").rglob("*.py"))
            for nb, sec in REF.findall(re.sub(r"\s+", " ", path.read_text()))]
    assert len(refs) >= 25, "the library names the notebook sections that derive it"
    missing = [f"{path.relative_to(ROOT)}: notebook {nb} section {sec}" for path, nb, sec in refs
               if nb not in notebooks or sec not in _sections(notebooks[nb])]
    assert not missing, "back-references to sections that do not exist: " + "; ".join(missing)
