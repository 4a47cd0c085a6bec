"""The book (adlkit.book): executed copies that know when they are stale, a site whose links resolve, and the
whole site opened in headless Chromium."""
import base64
import io
import json
import os
from pathlib import Path

import pytest

from adlkit import book

REPO = Path(__file__).resolve().parents[1]


def _nb(cells, outputs=None, metadata=None):
    return {"cells": [{"cell_type": t, "id": str(i), "metadata": {}, "source": s,
                       **({"outputs": outputs or [], "execution_count": None} if t == "code" else {})}
                      for i, (t, s) in enumerate(cells)],
            "metadata": metadata or {}, "nbformat": 4, "nbformat_minor": 5}


def _png(size=(64, 48), colour=(200, 30, 30)):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_source_hash_follows_the_cells_a_reader_edits_and_nothing_else(tmp_path):
    a, b, c = tmp_path / "a.ipynb", tmp_path / "b.ipynb", tmp_path / "c.ipynb"
    cells = [("markdown", "# Title"), ("code", "x = 1")]
    a.write_text(json.dumps(_nb(cells)))
    executed = _nb(cells, outputs=[{"output_type": "stream", "name": "stdout", "text": "1\n"}],
                   metadata={"kernelspec": {"name": "python3"}})
    b.write_text(json.dumps(executed))
    c.write_text(json.dumps(_nb([("markdown", "# Title"), ("code", "x = 2")])))
    assert book.source_hash(a) == book.source_hash(b)  # outputs and metadata do not count
    assert book.source_hash(a) != book.source_hash(c)  # one character of source does


def test_check_fails_on_a_stale_copy_and_lists_missing_ones(tmp_path, capsys):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / book.BOOK_NOTEBOOKS).mkdir(parents=True)
    for name, src in (("00_a.ipynb", "x = 1"), ("01_b.ipynb", "y = 1"), ("02_c.ipynb", "z = 1")):
        (tmp_path / "notebooks" / name).write_text(json.dumps(_nb([("code", src)])))
    stamp = {"adlkit": {"source_sha256": book.source_hash(tmp_path / "notebooks" / "00_a.ipynb")}}
    (tmp_path / book.BOOK_NOTEBOOKS / "00_a.ipynb").write_text(json.dumps(_nb([("code", "x = 1")], metadata=stamp)))
    (tmp_path / book.BOOK_NOTEBOOKS / "01_b.ipynb").write_text(json.dumps(_nb([("code", "y = 1")], metadata=stamp)))
    assert book.status(tmp_path) == {"00_a.ipynb": "current", "01_b.ipynb": "stale", "02_c.ipynb": "missing"}
    assert book.check(tmp_path) == ["01_b.ipynb"]
    out = capsys.readouterr().out
    assert "python -m adlkit book --refresh 01" in out and "1 notebook(s) not executed into the book yet" in out
    with pytest.raises(ValueError, match=r"no notebook \['07'\]"):
        book.refresh(tmp_path, ["07"])


def test_a_prose_edit_updates_the_text_and_keeps_the_outputs_a_code_edit_does_not(tmp_path, monkeypatch):
    quick_before = os.environ.get("ADLKIT_QUICK")
    (tmp_path / "notebooks").mkdir()
    (tmp_path / book.BOOK_NOTEBOOKS).mkdir(parents=True)
    src, copy = tmp_path / "notebooks" / "00_a.ipynb", tmp_path / book.BOOK_NOTEBOOKS / "00_a.ipynb"
    out = [{"output_type": "stream", "name": "stdout", "text": "0.968\n"}]  # the full run's output
    (tmp_path / "figures" / "results").mkdir(parents=True)
    (tmp_path / "figures" / "results" / "cli_knn.json").write_text("[]")
    stamp = {"adlkit": {"source_sha256": "old", "executed": "2026-01-01", "wall_time_s": 400.0,
                        "results_sha256": book.results_hash(tmp_path)}}
    copy.write_text(json.dumps(_nb([("markdown", "# A"), ("code", "x = 1"), ("markdown", "Reads 0.95.")], out, stamp)))
    # the reading restated, a paragraph added: the code cells are the same, in order
    src.write_text(json.dumps(_nb([("markdown", "# A"), ("markdown", "New."), ("code", "x = 1"),
                                   ("markdown", "Reads 0.968.")])))
    monkeypatch.setattr("adlkit.notebooks.execute_notebook", lambda *a, **k: pytest.fail("executed a prose edit"))
    assert book.refresh(tmp_path, ["00"])[0][1].startswith("prose")
    got = json.loads(copy.read_text())
    assert ["".join(c["source"]) for c in got["cells"]] == ["# A", "New.", "x = 1", "Reads 0.968."]
    assert [("".join(o["text"]), o["name"]) for o in got["cells"][2]["outputs"]] == [("0.968\n", "stdout")]  # kept
    assert got["metadata"]["adlkit"]["executed"] == "2026-01-01" and "prose" in got["metadata"]["adlkit"]
    assert book.status(tmp_path) == {"00_a.ipynb": "current"}
    # new committed results: the same prose edit now needs a run (here the run fails, and the old copy is kept)
    monkeypatch.setattr("adlkit.notebooks.execute_notebook", lambda *a, **k: (None, 0.0, "error: no kernel here"))
    before = copy.read_text()
    src.write_text(json.dumps(_nb([("markdown", "# A"), ("code", "x = 1"), ("markdown", "Reads 0.97.")])))
    (tmp_path / "figures" / "results" / "cli_knn.json").write_text('[{"seed": 1}]')
    assert book.refresh(tmp_path, ["00"]) == [("00_a.ipynb", "error: no kernel here")]
    assert copy.read_text() == before
    # a code edit is not prose: the notebook must run again
    src.write_text(json.dumps(_nb([("markdown", "# A"), ("code", "x = 2")])))
    assert book.prose_update(json.loads(src.read_text()), got) is None
    assert book.refresh(tmp_path, ["00"]) == [("00_a.ipynb", "error: no kernel here")]
    assert json.loads(copy.read_text()) == got
    # and execute=True runs even a prose-only change
    src.write_text(json.dumps(_nb([("markdown", "# B"), ("code", "x = 1"), ("markdown", "Reads 0.968.")])))
    assert book.refresh(tmp_path, ["00"], execute=True) == [("00_a.ipynb", "error: no kernel here")]
    assert os.environ.get("ADLKIT_QUICK") == quick_before  # full mode was for the run only, not for the caller


def test_compress_images_keeps_the_picture_and_never_grows_it():
    from PIL import Image

    nb = _nb([("code", "plot()")], outputs=[{"output_type": "display_data", "metadata": {},
                                              "data": {"image/png": _png((300, 200))}}])
    before, after = book.compress_images(nb)
    assert 0 < after <= before
    png = base64.b64decode(nb["cells"][0]["outputs"][0]["data"]["image/png"])
    im = Image.open(io.BytesIO(png)).convert("RGB")
    assert im.size == (300, 200) and im.getpixel((10, 10)) == (200, 30, 30)


def test_build_turns_links_into_pages_and_copies_what_they_point_at(tmp_path):
    root = tmp_path / "repo"
    for d in ("docs", "notebooks", "figures/results", book.BOOK_NOTEBOOKS):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "README.md").write_text("# Demo\n\n[guide](docs/guide.md), [nb](notebooks/00_a.ipynb), "
                                    "![fig](figures/f.png) [raw](figures/results/r.json) [gone](docs/none.md)\n")
    (root / "docs" / "guide.md").write_text("# Guide\n\n[home](../README.md) [report](../figures/REPORT.md#x)\n")
    (root / "figures" / "REPORT.md").write_text("# Report\n")
    (root / "figures" / "f.png").write_bytes(base64.b64decode(_png()))
    (root / "figures" / "results" / "r.json").write_text("[]")
    src = _nb([("markdown", "See [the guide](../docs/guide.md)."), ("code", "1")])
    (root / "notebooks" / "00_a.ipynb").write_text(json.dumps(src))
    stamp = {"adlkit": {"source_sha256": book.source_hash(root / "notebooks" / "00_a.ipynb"), "mode": "full",
                        "executed": "2026-12-06", "commit": "abc", "wall_time_s": 1.0}}
    (root / book.BOOK_NOTEBOOKS / "00_a.ipynb").write_text(json.dumps(_nb(
        [("markdown", "See [the guide](../docs/guide.md)."), ("code", "1")],
        outputs=[{"output_type": "display_data", "metadata": {}, "data": {"image/png": _png()}},
                 {"output_type": "display_data", "metadata": {}, "data": {  # a widget: needs a live kernel
                     "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2,
                                                                  "version_minor": 0},
                     "text/plain": "interactive(children=(FloatSlider(...),))"}}], metadata=stamp)))
    index = book.build(root, tmp_path / "site")
    site = tmp_path / "site"
    home = index.read_text()
    assert 'href="docs/guide.html"' in home and 'href="notebooks/00_a.html"' in home  # pages, not sources
    assert 'src="figures/f.png"' in home and (site / "figures" / "f.png").exists()
    assert 'href="figures/results/r.json"' in home and (site / "figures" / "results" / "r.json").exists()
    assert 'href="docs/none.md"' in home  # a link to nothing stays as it is (the browser test reports it)
    guide = (site / "docs" / "guide.html").read_text()
    assert 'href="../index.html"' in guide and 'href="../figures/REPORT.html#x"' in guide
    page = (site / "notebooks" / "00_a.html").read_text()
    assert 'href="../docs/guide.html"' in page and "data:image/png;base64" in page
    assert "Executed in full mode on 2026-12-06 (commit abc" in page and (site / "notebooks" / "00_a.ipynb").exists()
    assert "open the notebook in Jupyter to use it" in page and "widget-view" not in page
    book.build(root, site)  # its own earlier output is replaced ...
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="did not write"):  # ... a folder of someone else's never
        book.build(root, mine)
    assert (mine / "notes.txt").read_text() == "mine"


def _chromium():
    found = book.chromium()
    if found is None:
        if os.environ.get("ADLKIT_REQUIRE_BROWSER") == "1":  # CI installs Chromium: there a skip would hide a failure
            pytest.fail("ADLKIT_REQUIRE_BROWSER=1 but no Chromium: install it (apt-get install chromium)")
        pytest.skip("no Chromium here (apt-get install chromium): the book's browser test needs one")
    return found


def test_a_broken_page_is_reported_by_the_browser(tmp_path):
    _chromium()
    page = tmp_path / "p.html"
    page.write_text('<!doctype html><html><body><img src="nope.png"><a href="gone.html">x</a>'
                    '<a href="p.html">self</a><script>notDefined()</script></body></html>')
    with book.Browser() as b:
        problems = b.visit(page)
    assert any(p.startswith("image did not load: nope.png") for p in problems)
    assert any(p.startswith("broken link:") and p.endswith("gone.html") for p in problems)
    assert any("notDefined" in p for p in problems)
    assert not any(p.endswith("p.html") for p in problems if p.startswith("broken link"))


def test_the_book_opens_in_headless_chromium_without_a_missing_image_a_broken_link_or_a_script_error(tmp_path):
    """The real site: README, every docs page, the report and every executed notebook committed in book/notebooks/
    (in a checkout with none yet, notebook 09 executed here in quick mode stands in, so a notebook page is tested)."""
    _chromium()
    executed = REPO / book.BOOK_NOTEBOOKS
    if not list(executed.glob("[0-9][0-9]_*.ipynb")):
        from adlkit.notebooks import execute_notebook

        os.environ["ADLKIT_QUICK"] = "1"
        executed = tmp_path / "executed"
        _, _, state = execute_notebook(REPO / "notebooks" / "09_reproduction_report.ipynb", executed)
        assert state == "ok", state
    index = book.build(REPO, tmp_path / "site", notebooks_dir=executed)
    problems = book.browse(index.parent)
    assert problems == {}, json.dumps(problems, indent=1)[:4000]
    pages = {p.relative_to(index.parent).as_posix() for p in index.parent.rglob("*.html")}
    assert {"index.html", "docs/results.html", "figures/REPORT.html"} <= pages
    assert any(p.startswith("notebooks/") for p in pages)


def test_book_command_builds_the_site_and_screenshots_its_landing_page(tmp_path, capsys):
    _chromium()
    from PIL import Image

    from adlkit import cli

    shot = tmp_path / "landing.png"
    assert cli.main(["book", "--root", str(REPO), "--out", str(tmp_path / "site"), "--screenshot", str(shot)]) == 0
    assert (tmp_path / "site" / "index.html").exists() and Image.open(shot).size[0] == 1280
    assert "problems" not in capsys.readouterr().out  # the landing page loaded cleanly
