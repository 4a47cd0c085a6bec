"""Execute notebooks headless in the current Python environment (``make run``, ``make figures``).

``python -m adlkit execute [notebooks/NN_*.ipynb ...] [--full] [--out build/notebooks]`` runs each
notebook top to bottom in a fresh kernel, in order, writes the executed copy to ``--out`` (the
sources are never touched) and prints each notebook's wall time. Quick mode unless ``--full``.

One kernel at a time: each notebook's kernel is shut down, and its process gone, before the next
notebook starts, whether the notebook passed or failed (a finished kernel otherwise keeps its
memory, often more than a gigabyte, for the rest of the run).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

__all__ = ["current_env_kernel_manager", "execute_notebook", "execute_notebooks"]


def current_env_kernel_manager():
    """A Jupyter kernel manager that starts *this* interpreter's ipykernel, whatever kernelspecs exist.

    An asynchronous one: with a blocking manager nbclient waits for the kernel's output without a
    time limit, so a cell's timeout never fires and a kernel that dies mid-cell hangs the run.
    """
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    class _HereSpecs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                              display_name="adlkit (current env)", language="python")

    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=_HereSpecs())


def execute_notebooks(paths, out_dir: str | Path = "build/notebooks", full: bool = False,
                      save_figures: bool = False, timeout: int = 1800) -> list[tuple[str, float, str]]:
    """Run each notebook; return (name, seconds, "ok" or the error) per notebook.

    Each runs in its own kernel, which is gone before the next notebook starts.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ["ADLKIT_QUICK"] = "0" if full else "1"
    if save_figures:
        os.environ["ADLKIT_SAVE_FIGURES"] = "1"
    results = []
    for path in map(Path, paths):
        name, seconds, status = execute_notebook(path, out_dir, timeout=timeout)
        print(f"{name:40s} {seconds:8.1f} s  {status}", flush=True)
        results.append((name, seconds, status))
    return results


def execute_notebook(path: str | Path, out_dir: str | Path, timeout: int = 1800) -> tuple[str, float, str]:
    """Run one notebook in a fresh kernel and write the executed copy to ``out_dir``.

    Returns (name, seconds, "ok" or "FAILED: ..."). When it returns, the kernel has been shut down
    and its process has exited, also when a cell failed or timed out or the kernel died.
    """
    import nbformat

    try:
        from nbclient import NotebookClient
        from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
    except ImportError as err:
        raise ImportError(f"executing notebooks needs nbclient and ipykernel ({err}): pip install 'adlkit[notebooks]'"
                          ) from None

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    km = current_env_kernel_manager()
    client = NotebookClient(nb, km=km, timeout=timeout,
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    t0 = time.perf_counter()
    status = "ok"
    try:
        # nbclient keeps a kernel it was handed (km=...) alive after execute(); cleanup_kc=True
        # makes it shut the kernel down (gracefully, killed after km.shutdown_wait_time) on the way out.
        client.execute(cleanup_kc=True)
    except CellExecutionError as err:
        lines = str(err).strip().splitlines()
        status = f"FAILED: {lines[-1] if lines else repr(err)}"
    except CellTimeoutError:
        status = f"FAILED: a cell ran longer than {timeout} s (timeout)"
    except DeadKernelError:
        status = "FAILED: the kernel died (out of memory?)"
    finally:
        _stop_kernel(km)
    seconds = time.perf_counter() - t0
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, Path(out_dir) / path.name)
    return path.name, seconds, status


def _stop_kernel(km) -> None:
    """Make sure the kernel of ``km`` is gone: kill it if it still runs, and wait for its process to exit."""
    from jupyter_core.utils import run_sync

    async def stop():
        if not km.has_kernel:  # the normal case: nbclient has shut it down already
            return
        try:
            if await km.is_alive():
                await km.shutdown_kernel(now=True)  # kills the process and waits for it
        finally:
            if km.has_kernel:
                await km.cleanup_resources()

    run_sync(stop)()
