"""The executed series as a static site a reader opens without running anything (``make book``).

Three parts:

* **Executed copies** (``book/notebooks/NN_*.ipynb``): each notebook of ``notebooks/`` run top to bottom in full
  mode, its plots kept (PNG outputs re-encoded as palette PNGs: :func:`compress_images`), and stamped with the
  SHA-256 of its source's cells (``metadata.adlkit.source_sha256``), the mode, the date, the commit and the wall
  time. ``notebooks/`` stays stripped for students; GitHub and nbviewer render these copies as they are.
* **Freshness** (``python -m adlkit book --check``, run by ``make test``): a copy whose source changed since it was
  executed is *stale*, and the check fails naming the command that refreshes it. A notebook that has no copy yet
  is listed as *missing* and does not fail the check (executing the series takes about 100 CPU minutes here;
  copies are added notebook by notebook). ``python -m adlkit book --refresh`` re-executes the stale and missing
  ones only (or the notebooks named), so a change to one notebook costs one notebook's run, and a change to its
  markdown alone costs none while the committed results it reads are the ones it ran on: the new text goes into
  the copy beside the run's own outputs (:func:`prose_update`, :func:`results_hash`; the stamp records both
  dates; ``--execute`` runs it anyway).
* **The site** (``python -m adlkit book`` -> ``build/book/``): a landing page made from ``README.md``, one page per
  executed notebook (nbconvert's HTML, images embedded), every ``docs/*.md`` page and ``figures/REPORT.md``,
  with links between them rewritten to the pages, and every other repository file a page links to (figures,
  result files) copied beside it, so the site works from disk (``file://``) and on any static host.

Why nbconvert and a small index rather than jupyter-book or mkdocs: nbconvert and mistune are already installed
with Jupyter (no new dependency, nothing fetched at build time, offline CI), they render an executed notebook
exactly as Jupyter shows it, and the whole site is about 200 lines a reader can follow. The site is checked in a
real browser by ``tests/test_book.py`` (headless Chromium: every page loads without a script error, every image
decodes, every internal link resolves).
"""
from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import re
import shutil
import time
from pathlib import Path

__all__ = ["BOOK_NOTEBOOKS", "Browser", "browse", "build", "check", "chromium", "compress_images", "refresh",
           "source_hash", "status"]

BOOK_NOTEBOOKS = Path("book") / "notebooks"
_MARKER = ".adlkit-book"  # in a site's folder: this command wrote it and may replace it
_LINK = re.compile(r'(href|src)="([^"#:?]+)(#[^"]*)?"')  # relative links only (no scheme, no bare anchor)


# ----------------------------------------------------------------------------- executed copies
def _cell_text(cell: dict) -> str:
    """A cell's source as one string (a notebook file may store it as a list of lines)."""
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def source_hash(path: str | Path) -> str:
    """SHA-256 of a notebook's cells as a reader edits them (type and source; outputs, ids and metadata ignored),
    so stripping or executing a notebook does not change it and editing one character does."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    cells = [[c["cell_type"], _cell_text(c)] for c in nb["cells"]]
    return hashlib.sha256(json.dumps(cells, ensure_ascii=False).encode()).hexdigest()


def status(root: str | Path = ".") -> dict[str, str]:
    """``{notebook file name: "current" | "stale" | "missing"}`` for every ``notebooks/NN_*.ipynb``."""
    root = Path(root)
    out = {}
    for src in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        copy = root / BOOK_NOTEBOOKS / src.name
        if not copy.exists():
            out[src.name] = "missing"
            continue
        stamp = json.loads(copy.read_text(encoding="utf-8")).get("metadata", {}).get("adlkit", {})
        out[src.name] = "current" if stamp.get("source_sha256") == source_hash(src) else "stale"
    return out


def check(root: str | Path = ".") -> list[str]:
    """The stale executed copies (empty: the book is current). Prints each notebook's state."""
    states = status(root)
    for name, state in states.items():
        print(f"{name:40s} {state}")
    stale = [n for n, s in states.items() if s == "stale"]
    missing = [n for n, s in states.items() if s == "missing"]
    if missing:
        print(f"{len(missing)} notebook(s) not executed into the book yet (python -m adlkit book --refresh adds them)")
    if stale:
        print("stale: their sources changed after they were executed; run "
              f"`python -m adlkit book --refresh {' '.join(n[:2] for n in stale)}` and commit book/notebooks/")
    return stale


def compress_images(nb: dict) -> tuple[int, int]:
    """Re-encode every PNG output of an executed notebook as a 256-colour palette PNG (median cut, no dithering:
    plots keep their flat colours; about a third of the bytes on this series' figures), keeping the original
    when that is smaller; returns (bytes before, bytes after)."""
    from PIL import Image

    before = after = 0
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "image/png" not in data:
                continue
            raw = base64.b64decode(data["image/png"])
            buf = io.BytesIO()
            Image.open(io.BytesIO(raw)).convert("RGB").quantize(
                colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(buf, format="PNG",
                                                                                           optimize=True)
            new = buf.getvalue() if len(buf.getvalue()) < len(raw) else raw
            before, after = before + len(raw), after + len(new)
            data["image/png"] = base64.b64encode(new).decode()
    return before, after


def results_hash(root: str | Path = ".") -> str:
    """SHA-256 of the committed CLI result files (``figures/results/cli_*``, the kept maps included): the data the
    notebooks read in full mode. An executed copy records it, so a prose-only refresh can tell that its outputs
    were computed from the results that are committed now."""
    results = Path(root) / "figures" / "results"
    h = hashlib.sha256()
    for f in sorted(p for p in results.glob("cli_*") if p.is_file()) + sorted(results.glob("cli_*/**/*")):
        if f.is_file():
            h.update(f.relative_to(results).as_posix().encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def prose_update(source: dict, copy: dict) -> dict | None:
    """The executed ``copy`` with ``source``'s text cells, when the two differ in text cells only: the code cells,
    in order, have the same source (markdown cells may be edited, added or removed). None when any code changed.

    A prose edit cannot change an output, so the outputs of the full-mode run are kept as they are; the stamp says
    when the run and when the prose were taken (``refresh`` with ``execute=False``, the default). ``refresh``
    uses it only when the committed results are also the ones the run read (:func:`results_hash`): a restated
    reading over new numbers needs the new numbers, that is, a run."""
    code = [c for c in copy["cells"] if c["cell_type"] == "code"]
    if [_cell_text(c) for c in code] != [_cell_text(c) for c in source["cells"] if c["cell_type"] == "code"]:
        return None
    run = iter(code)
    out = dict(copy)
    # code cells: the run's (outputs included) under the source's id, so ids stay the source's and stay unique
    out["cells"] = [{**next(run), **({"id": c["id"]} if "id" in c else {})} if c["cell_type"] == "code" else c
                    for c in source["cells"]]
    return out


def refresh(root: str | Path = ".", names: list[str] | None = None, timeout: int = 1800,
            execute: bool = False) -> list[tuple[str, str]]:
    """Execute notebooks in full mode into ``book/notebooks/``: the ones named (``"04"`` or a file name), else the
    stale and missing ones. A copy whose source changed in markdown only takes the new text and keeps its outputs
    (``prose_update``; ``execute=True`` runs it anyway). A copy is replaced only by a run that finished; a failed
    run leaves the old copy and is reported. Returns (name, "ok, N KB", "prose, N KB" or the error) per
    notebook."""
    import nbformat

    from .config import environment, git_commit
    from .notebooks import execute_notebook

    root = Path(root).resolve()
    states = status(root)
    if names:
        chosen = [n for n in states if any(n == x or n.startswith(f"{x}_") for x in names)]
        unknown = [x for x in names if not any(n == x or n.startswith(f"{x}_") for n in states)]
        if unknown:
            raise ValueError(f"no notebook {unknown} in {root / 'notebooks'}; they are {list(states)}")
    else:
        chosen = [n for n, s in states.items() if s != "current"]
    dest = root / BOOK_NOTEBOOKS
    dest.mkdir(parents=True, exist_ok=True)
    scratch = root / "build" / "book-run"
    report = []
    data = results_hash(root)  # the committed results every run below reads (no notebook writes cli_* files)
    for name in chosen:
        src = root / "notebooks" / name
        copy = json.loads((dest / name).read_text(encoding="utf-8")) if (dest / name).exists() else None
        same_data = copy is not None and copy.get("metadata", {}).get("adlkit", {}).get("results_sha256") == data
        if not execute and same_data:
            updated = prose_update(json.loads(src.read_text(encoding="utf-8")), copy)
            if updated is not None:
                stamp = dict(copy.get("metadata", {}).get("adlkit", {}))
                stamp.update(source_sha256=source_hash(src), prose=time.strftime("%Y-%m-%d"), prose_commit=git_commit())
                updated.setdefault("metadata", {})["adlkit"] = stamp
                nbformat.write(nbformat.from_dict(updated), dest / name)
                size = (dest / name).stat().st_size
                report.append((name, f"prose, {size // 1024} KB"))
                print(f"{name}: markdown only changed: new text, the outputs of the run of {stamp.get('executed')} kept")
                continue
        digest, commit = source_hash(src), git_commit()  # what runs (an edit made during the run leaves it stale)
        # full mode, plots into the outputs (Agg shows none); the caller's environment is left as it was
        with environment(ADLKIT_QUICK="0", MPLBACKEND="module://matplotlib_inline.backend_inline"):
            _, seconds, state = execute_notebook(src, scratch, timeout=timeout)
        if state != "ok":
            report.append((name, state))
            print(f"{name}: {state} (the committed copy, if any, is kept)")
            continue
        nb = nbformat.read(scratch / name, as_version=4)
        before, after = compress_images(nb)
        nb.metadata["adlkit"] = {"source_sha256": digest, "mode": "full", "wall_time_s": round(seconds, 1),
                                 "executed": time.strftime("%Y-%m-%d"), "commit": commit,
                                 "results_sha256": data}
        nbformat.write(nb, dest / name)
        size = (dest / name).stat().st_size
        report.append((name, f"ok, {size // 1024} KB"))
        print(f"{name}: {seconds:.0f} s, images {before // 1024} -> {after // 1024} KB, copy {size // 1024} KB")
    return report


# ----------------------------------------------------------------------------- the site
_CSS = """
body { font: 16px/1.55 system-ui, sans-serif; margin: 0; color: #1d1d1f; }
nav { position: fixed; top: 0; left: 0; bottom: 0; width: 15rem; overflow-y: auto; padding: 1rem;
      background: #f5f5f7; border-right: 1px solid #ddd; font-size: 14px; }
nav a { display: block; color: #0b57d0; text-decoration: none; padding: 0.12rem 0; }
nav h2 { font-size: 13px; text-transform: uppercase; color: #666; margin: 1rem 0 0.3rem; }
main { margin-left: 17rem; padding: 1rem 2rem 4rem; max-width: 62rem; }
img { max-width: 100%; height: auto; }
table { border-collapse: collapse; font-size: 14px; } td, th { border: 1px solid #ccc; padding: 0.2rem 0.5rem; }
pre { background: #f6f8fa; padding: 0.6rem; overflow-x: auto; }
.stamp { color: #666; font-size: 13px; }
"""


def _page(title: str, body: str, nav: str, depth: int) -> str:
    up = "../" * depth
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)} · adlkit"
            f"</title><link rel=\"stylesheet\" href=\"{up}book.css\"></head>\n<body><nav>{nav.replace('{up}', up)}"
            f"</nav><main>\n{body}\n</main></body></html>\n")


def _markdown(text: str) -> str:
    import mistune

    return mistune.create_markdown(escape=False, plugins=["table", "strikethrough"])(text)


def _relink(body: str, page: Path, pages: dict[Path, Path], root: Path, copied: set) -> str:
    """Rewrite the relative links of a page made from ``page`` (a repository path): to another page's HTML, or to
    a copy of the linked repository file in the site; links to nothing are left as they are (the browser test
    reports them)."""
    def fix(m):
        attr, target, anchor = m.group(1), m.group(2), m.group(3) or ""
        repo_path = (root / page.parent / target).resolve()
        try:
            rel = repo_path.relative_to(root)
        except ValueError:  # outside the repository: leave it
            return m.group(0)
        here = pages[page].parent
        if rel in pages:
            new = Path(_relpath(pages[rel], here))
        elif repo_path.is_file():
            copied.add(rel)
            new = Path(_relpath(rel, here))
        else:
            return m.group(0)
        return f'{attr}="{new.as_posix()}{anchor}"'

    return _LINK.sub(fix, body)


_WIDGET = "application/vnd.jupyter.widget-view+json"


def _static(nb):
    """An executed notebook as a page can show it: a widget's view needs a live kernel (and its script throws
    without one), so it becomes a line saying so; the widgets' saved state goes too."""
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if _WIDGET in data:
                del data[_WIDGET]
                data.pop("text/html", None)
                data["text/plain"] = "[an interactive widget: open the notebook in Jupyter to use it]"
    nb.metadata.pop("widgets", None)
    return nb


def _relpath(target: Path, start: Path) -> str:
    import os

    return os.path.relpath(target, start if str(start) else ".")


def build(root: str | Path = ".", out: str | Path = "build/book", notebooks_dir: str | Path | None = None) -> Path:
    """Write the site to ``out`` and return its landing page. ``out`` is replaced whole when this function wrote
    it before (its marker file says so); a folder holding anything else is refused."""
    import nbformat
    from nbconvert import HTMLExporter

    root = Path(root).resolve()
    out = Path(out).resolve()
    nb_dir = Path(notebooks_dir).resolve() if notebooks_dir else root / BOOK_NOTEBOOKS
    if out.exists() and any(out.iterdir()):  # replaced whole, but only a site this function wrote
        if not (out / _MARKER).exists():
            raise FileExistsError(f"{out} holds files this command did not write; it replaces its output folder whole, "
                                  "so choose another --out (or empty that folder yourself)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / _MARKER).write_text("a site written by `python -m adlkit book`; replaced whole on the next build\n")
    # repository path -> site path, for every page
    pages: dict[Path, Path] = {Path("README.md"): Path("index.html")}
    for md in sorted((root / "docs").glob("*.md")):
        pages[md.relative_to(root)] = Path("docs") / (md.stem + ".html")
    if (root / "figures" / "REPORT.md").exists():
        pages[Path("figures/REPORT.md")] = Path("figures/REPORT.html")
    executed = sorted(nb_dir.glob("[0-9][0-9]_*.ipynb"))
    for nb in executed:  # a link to notebooks/NN.ipynb (the stripped source) opens the executed page
        pages[Path("notebooks") / nb.name] = Path("notebooks") / (nb.stem + ".html")
    nav = ["<a href=\"{up}index.html\"><b>adlkit</b></a>", "<h2>Notebooks (executed, full mode)</h2>"]
    nav += [f"<a href=\"{{up}}notebooks/{nb.stem}.html\">{html.escape(nb.stem.replace('_', ' '))}</a>"
            for nb in executed] or ["<span>none executed yet</span>"]
    nav += ["<h2>Guides</h2>"] + [f"<a href=\"{{up}}{site.as_posix()}\">{html.escape(src.stem)}</a>"
                                  for src, site in pages.items() if src.parts[0] == "docs"]
    if Path("figures/REPORT.md") in pages:
        nav.append("<a href=\"{up}figures/REPORT.html\">reproduction report</a>")
    nav = "\n".join(nav)
    copied: set[Path] = set()
    exporter = HTMLExporter(template_name="basic")
    for src, site in pages.items():
        depth = len(site.parts) - 1
        if src.suffix == ".md":
            text = (root / src).read_text(encoding="utf-8")
            body = _markdown(text)
            title = next((line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#")), src.stem)
        else:
            nb = _static(nbformat.read(nb_dir / src.name, as_version=4))
            stamp = nb.metadata.get("adlkit", {})
            body, _ = exporter.from_notebook_node(nb)
            note = (f"<p class=\"stamp\">Executed in {stamp.get('mode', '?')} mode on {stamp.get('executed', '?')} "
                    f"(commit {stamp.get('commit', '?')}, {stamp.get('wall_time_s', '?')} s)"
                    + (f"; its text updated on {stamp['prose']} (commit {stamp.get('prose_commit', '?')}), the code "
                       "and outputs unchanged" if stamp.get("prose") else "") + ". Source: "
                    f"<a href=\"{_relpath(src, site.parent)}\">{src.as_posix()}</a></p>") if stamp else ""
            body, title = note + body, src.stem
            copied.add(src)  # the stripped source, for "open in Jupyter"
        body = _relink(body, src, pages, root, copied)
        (out / site).parent.mkdir(parents=True, exist_ok=True)
        (out / site).write_text(_page(title, body, nav, depth), encoding="utf-8")
    for rel in copied:
        if (root / rel).is_file():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, out / rel)
    (out / "book.css").write_text(_CSS, encoding="utf-8")
    return out / "index.html"


# ----------------------------------------------------------------------------- a real browser
def chromium() -> str | None:
    """The Chromium (or Chrome) on this machine's PATH, or None."""
    return next((found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))),
                None)


class Browser:
    """Headless Chromium driven over the DevTools protocol (``websocket-client``; no browser download): open a
    page, collect its script errors, failed loads and console errors, evaluate JavaScript, take a screenshot.
    ``with Browser() as b: problems = b.visit(path)``."""

    def __init__(self, executable: str | None = None, timeout: float = 30.0):
        import subprocess
        import tempfile

        self.executable = executable or chromium()
        if self.executable is None:
            raise FileNotFoundError("no Chromium found: install it (Debian: `apt-get install chromium`) to test the "
                                    "book in a browser")
        self.timeout = timeout
        self._profile = tempfile.TemporaryDirectory()
        self.proc = subprocess.Popen(
            [self.executable, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--remote-debugging-port=0", f"--user-data-dir={self._profile.name}", "--allow-file-access-from-files",
             "--window-size=1280,900", "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._id = 0
        self.ws = self._connect()

    def _connect(self):
        import urllib.request

        import websocket

        deadline = time.time() + self.timeout
        port = None
        while port is None and time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise RuntimeError(f"{self.executable} exited ({self.proc.returncode}) before it listened")
            m = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            port = int(m.group(1)) if m else None
        if port is None:
            raise TimeoutError(f"{self.executable} did not open its DevTools port in {self.timeout:.0f} s")
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=self.timeout))
        page = next(t for t in targets if t["type"] == "page")
        ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=self.timeout, suppress_origin=True)
        self.events: list[dict] = []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self._call(ws, f"{domain}.enable")
        return ws

    def _call(self, ws, method: str, **params) -> dict:
        self._id += 1
        ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(ws.recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def call(self, method: str, **params) -> dict:
        return self._call(self.ws, method, **params)

    def evaluate(self, expression: str):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return r.get("result", {}).get("value")

    def visit(self, path: str | Path) -> list[str]:
        """Open a local page and wait for it to load; return what went wrong: script exceptions, console errors,
        failed resource loads, images that did not decode, and local links to files that do not exist."""
        from urllib.parse import unquote, urlparse

        url = Path(path).resolve().as_uri()
        self.events = []
        self.call("Page.navigate", url=url)
        deadline = time.time() + self.timeout
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            if time.time() > deadline:
                return [f"{url}: did not finish loading in {self.timeout:.0f} s"]
            self.events.append(json.loads(self.ws.recv()))
        problems = []
        for e in self.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.exceptionThrown":
                problems.append(f"script error: {p['exceptionDetails'].get('text')} "
                                f"{p['exceptionDetails'].get('exception', {}).get('description', '')}"[:300])
            elif e.get("method") == "Log.entryAdded" and p["entry"]["level"] == "error":
                problems.append(f"console: {p['entry'].get('text')} {p['entry'].get('url', '')}"[:300])
            elif e.get("method") == "Network.loadingFailed" and not p.get("canceled"):
                problems.append(f"failed to load: {p.get('errorText')}")
        broken = self.evaluate("[...document.images].filter(i => !i.complete || i.naturalWidth === 0)"
                               ".map(i => i.getAttribute('src').slice(0, 120))")
        problems += [f"image did not load: {src}" for src in broken or []]
        for href in self.evaluate("[...document.querySelectorAll('a[href]')].map(a => a.href)") or []:
            parsed = urlparse(href)
            if parsed.scheme == "file" and not Path(unquote(parsed.path)).exists():
                problems.append(f"broken link: {unquote(parsed.path)}")
        return problems

    def screenshot(self, path: str | Path) -> Path:
        """The current page's viewport as a PNG at ``path``."""
        data = self.call("Page.captureScreenshot", format="png")["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except Exception:  # noqa: BLE001  (a browser that will not stop is killed)
                self.proc.kill()
            self._profile.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def browse(site: str | Path) -> dict[str, list[str]]:
    """Open every page of a built site in headless Chromium; ``{page: problems}`` for the pages with any."""
    site = Path(site)
    found = {}
    with Browser() as b:
        for page in sorted(site.rglob("*.html")):
            problems = b.visit(page)
            if problems:
                found[str(page.relative_to(site))] = problems
    return found
