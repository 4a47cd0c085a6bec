"""Execute notebooks headless in the current Python environment (``make run``, ``make figures``).

``python -m adlkit execute [notebooks/NN_*.ipynb ...] [--full] [--out build/notebooks]`` runs each
notebook top to bottom in a fresh kernel, in order, writes the executed copy to ``--out`` (the
sources are never touched) and prints each notebook's wall time. Quick mode unless ``--full``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

__all__ = ["current_env_kernel_manager", "execute_notebooks"]


def current_env_kernel_manager():
    """A Jupyter kernel manager that starts *this* interpreter's ipykernel, whatever kernelspecs exist."""
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import KernelManager

    class _HereSpecs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                              display_name="adlkit (current env)", language="python")

    return KernelManager(kernel_name="python3", kernel_spec_manager=_HereSpecs())


def execute_notebooks(paths, out_dir: str | Path = "build/notebooks", full: bool = False,
                      save_figures: bool = False, timeout: int = 1800) -> list[tuple[str, float, str]]:
    """Run each notebook; return (name, seconds, "ok" or the error) per notebook."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ["ADLKIT_QUICK"] = "0" if full else "1"
    if save_figures:
        os.environ["ADLKIT_SAVE_FIGURES"] = "1"
    results = []
    for path in map(Path, paths):
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(nb, km=current_env_kernel_manager(), timeout=timeout,
                                resources={"metadata": {"path": str(path.parent.resolve())}})
        t0 = time.perf_counter()
        status = "ok"
        try:
            client.execute()
        except CellExecutionError as err:
            status = f"FAILED: {str(err).strip().splitlines()[-1] if str(err).strip() else err!r}"
        seconds = time.perf_counter() - t0
        nbformat.write(nb, out_dir / path.name)
        print(f"{path.name:40s} {seconds:8.1f} s  {status}", flush=True)
        results.append((path.name, seconds, status))
    return results
