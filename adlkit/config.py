"""Run-time configuration: quick/full mode, device, seeds and paths.

Everything here is read from environment variables so that a notebook, the CLI and CI
all agree without passing flags around:

=======================  =========================================================  ==============
variable                 meaning                                                    default
=======================  =========================================================  ==============
``ADLKIT_QUICK``         ``1``: quick mode (tiny sizes, CPU-friendly); ``0``: full   ``1``
``ADLKIT_DEVICE``        ``cpu``, ``cuda``, ``cuda:1``, ``mps``                       best available
``ADLKIT_DATA``          where real datasets live (MVTec AD, VisA, ...)              ``~/data``
``ADLKIT_CACHE``         where generated data and caches go                          ``~/.cache/adlkit``
``ADLKIT_TEXTURES``      a folder of texture images (e.g. DTD's ``images/``): the    unset (built-in
                         anomaly sources of Perlin pseudo-anomalies                  sources)
``ADLKIT_SAVE_FIGURES``  ``1``: :func:`adlkit.viz.savefig` writes ``figures/``       ``0``
=======================  =========================================================  ==============
"""

from __future__ import annotations

import os
import random
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _env_flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}={raw!r} is not understood: use 1 (on) or 0 (off).")


def quick_mode() -> bool:
    """True in quick mode (the default): small images, few epochs, runs in minutes on a CPU.

    Set ``ADLKIT_QUICK=0`` (or ``make run FULL=1``) for full mode, the paper-style runs meant
    for a GPU.
    """
    return _env_flag("ADLKIT_QUICK", True)


def save_figures() -> bool:
    """True when ``ADLKIT_SAVE_FIGURES=1``: figures and result files are written to ``figures/``."""
    return _env_flag("ADLKIT_SAVE_FIGURES", False)


def device() -> torch.device:
    """The device to compute on: ``ADLKIT_DEVICE`` if set, else CUDA, then Apple MPS, then CPU.

    Asking for a device that is not there is an error, not a silent fallback, so a run that was
    meant for a GPU never quietly takes hours on a CPU.
    """
    requested = os.environ.get("ADLKIT_DEVICE", "").strip()
    if requested:
        try:
            dev = torch.device(requested)
        except RuntimeError as err:
            raise ValueError(
                f"ADLKIT_DEVICE={requested!r} is not a device name: use cpu, cuda, cuda:N or mps."
            ) from err
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError(
                    f"ADLKIT_DEVICE={requested!r} but PyTorch sees no CUDA GPU "
                    f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}). "
                    "Unset ADLKIT_DEVICE to use the CPU, or install a CUDA build of PyTorch on a GPU machine."
                )
            if dev.index is not None and dev.index >= torch.cuda.device_count():
                raise RuntimeError(
                    f"ADLKIT_DEVICE={requested!r} but only {torch.cuda.device_count()} CUDA device(s) exist."
                )
        elif dev.type == "mps" and not (
            getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
        ):
            raise RuntimeError(f"ADLKIT_DEVICE={requested!r} but Apple MPS is not available here.")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (all devices); return a CPU ``torch.Generator`` with that seed.

    adlkit's own random functions take an explicit generator; this only pins down the global
    state that third-party code (weight initialisation, dropout) draws from.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


def data_dir() -> Path:
    """Where real datasets live (``ADLKIT_DATA``, default ``~/data``). Nothing is downloaded there."""
    return Path(os.environ.get("ADLKIT_DATA", Path.home() / "data")).expanduser()


def cache_dir() -> Path:
    """Where adlkit writes generated data and caches (``ADLKIT_CACHE``, default ``~/.cache/adlkit``)."""
    path = Path(os.environ.get("ADLKIT_CACHE", Path.home() / ".cache" / "adlkit")).expanduser()
    return path


def textures_dir() -> Path | None:
    """The folder of texture images named by ``ADLKIT_TEXTURES`` (e.g. DTD's ``images/``), or None when unset.

    :class:`adlkit.synth.PseudoAnomaly` draws its anomaly sources from it; without it, from the
    built-in sources. A set but missing folder is an error, not a silent fallback.
    """
    raw = os.environ.get("ADLKIT_TEXTURES", "").strip()
    if not raw:
        return None
    path = Path(raw).expanduser()
    if not path.is_dir():
        raise ValueError(
            f"ADLKIT_TEXTURES={raw!r} is not a folder. Point it at a folder of texture images "
            "(e.g. DTD's images/ folder), or unset ADLKIT_TEXTURES to use the built-in anomaly sources."
        )
    return path


def repo_root() -> Path:
    """The repository root when adlkit runs from a checkout (the folder holding ``figures/``)."""
    return Path(__file__).resolve().parent.parent


def figures_dir() -> Path:
    """Where figures and result files go: ``ADLKIT_FIGURES`` or ``<repo>/figures``."""
    return Path(os.environ.get("ADLKIT_FIGURES", repo_root() / "figures")).expanduser()


@contextmanager
def environment(**values: str):
    """Set environment variables for a block, then put back what was there (unset ones are unset again)."""
    previous = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in previous.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def git_commit() -> str | None:
    """The checkout's commit (short hash), or None outside a git checkout.

    "+uncommitted changes" is appended when tracked *code* differs from the commit: anything outside
    ``figures/`` and ``book/`` (a run's own outputs: figures, result files, executed notebooks never count, so a
    grid that appends to a committed result file still records the clean commit that produced it).
    """
    import subprocess

    here = repo_root()
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5, cwd=here)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)figures",
                                ":(exclude)book"],
                               capture_output=True, text=True, timeout=5, cwd=here)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = head.stdout.strip()
    return (commit + ("+uncommitted changes" if dirty.stdout.strip() else "")) if commit else None
