"""`python -m adlkit execute` holds one kernel at a time: each notebook's kernel is gone before the next starts."""
import os
import time

import nbformat

from adlkit import notebooks


def _gone(pid: int, within: float = 5.0) -> bool:
    """True once no process has ``pid`` (polled for up to ``within`` seconds)."""
    deadline = time.monotonic() + within
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # the pid was reused by another user's process: ours is gone
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _kernel_pid(executed: nbformat.NotebookNode) -> int:
    text = "".join(o.get("text", "") for o in executed.cells[0].outputs if o.output_type == "stream")
    return int(text.split("pid=")[1].split()[0])


def test_each_kernel_is_gone_before_the_next_notebook_starts(tmp_path, monkeypatch):
    monkeypatch.setenv("ADLKIT_QUICK", "1")  # execute_notebooks sets it; monkeypatch restores it afterwards
    src = tmp_path / "src"
    src.mkdir()
    paths = []
    for k in range(3):
        cells = [nbformat.v4.new_code_cell("import os\nprint(f'pid={os.getpid()}')")]
        if k == 1:  # a notebook whose cell fails: its kernel must go too
            cells.append(nbformat.v4.new_code_cell("raise RuntimeError('this notebook fails')"))
        path = src / f"{k:02d}_tiny.ipynb"
        nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
        paths.append(path)

    out = tmp_path / "out"
    finished = []  # (name, kernel pid, gone before the next notebook started)
    run_one = notebooks.execute_notebook

    def checked(path, out_dir, **kwargs):
        result = run_one(path, out_dir, **kwargs)
        pid = _kernel_pid(nbformat.read(out / path.name, as_version=4))
        finished.append((path.name, pid, _gone(pid)))
        return result

    monkeypatch.setattr(notebooks, "execute_notebook", checked)
    results = notebooks.execute_notebooks(paths, out, timeout=60)

    assert [(name, status.split(":")[0]) for name, _, status in results] == [
        ("00_tiny.ipynb", "ok"), ("01_tiny.ipynb", "FAILED"), ("02_tiny.ipynb", "ok")]
    assert "this notebook fails" in results[1][2]
    assert len({pid for _, pid, _ in finished}) == 3, "every notebook gets a fresh kernel"
    alive = [(name, pid) for name, pid, gone in finished if not gone]
    assert not alive, f"kernels still running after their notebook finished: {alive}"


def test_a_timed_out_notebook_is_reported_and_its_kernel_stopped(tmp_path, monkeypatch):
    monkeypatch.setenv("ADLKIT_QUICK", "1")
    path = tmp_path / "slow.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import os\nprint(f'pid={os.getpid()}', flush=True)"),
        nbformat.v4.new_code_cell("import time\ntime.sleep(60)")]), path)
    name, _, status = notebooks.execute_notebook(path, tmp_path / "out", timeout=1)
    assert name == "slow.ipynb" and status.startswith("FAILED") and "timeout" in status
    assert _gone(_kernel_pid(nbformat.read(tmp_path / "out" / name, as_version=4)))
