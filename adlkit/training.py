"""What every method's training loop needs, written once: seeded generators, checkpoints that
resume exactly, per-epoch history, and result files that are written atomically.

No training framework: a method keeps its loop visible and calls these plain functions::

    gens = training.generators(config.seed, device)
    with training.seeded(config.seed):
        model = Model(config)
    start, history = training.start_or_resume(ckpt, config, {"model": model, "opt": opt}, gens,
                                              resume=resume, overwrite=overwrite)
    for epoch in range(start, config.epochs):
        ...                                          # the method's own steps
        training.log_epoch(history, epoch, loss=..., weight_clean=...)
        training.save_checkpoint(ckpt, config, {"model": model, "opt": opt}, epoch, history, gens)

Checkpoints hold plain state dicts and JSON text, so ``torch.load(weights_only=True)`` reads them.
Nothing a user made is replaced silently: checkpoints and result files refuse to overwrite unless told.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import tempfile
import time
from pathlib import Path

import torch

__all__ = ["generators", "seeded", "config_to_json", "config_from_json", "save_checkpoint", "load_checkpoint",
           "save_atomic", "start_or_resume", "new_history", "log_epoch", "check_finite", "write_json", "append_result",
           "read_results"]


# ----------------------------------------------------------------------------- randomness
def generators(seed: int, device="cpu") -> dict[str, torch.Generator]:
    """Two explicit generators: ``cpu`` (sampling, reference draws, coins) seeded with ``seed`` and
    ``device`` (synthesis on the compute device) seeded with ``seed + 1``."""
    device = torch.device(device)
    return {"cpu": torch.Generator().manual_seed(seed),
            "device": torch.Generator(device=device).manual_seed(seed + 1)}


@contextlib.contextmanager
def seeded(seed: int):
    """Run a block (e.g. building a model) with the global RNG seeded, and restore it afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# ----------------------------------------------------------------------------- configs as JSON
def config_to_json(config) -> str:
    return json.dumps(dataclasses.asdict(config), sort_keys=True, default=str)


def config_from_json(cls, text: str):
    """Rebuild a config dataclass from :func:`config_to_json` text (lists become tuples; unknown keys dropped)."""
    raw = json.loads(text)
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in raw.items() if k in known})


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: str | Path, config, states: dict, epoch: int, history: dict,
                    gens: dict[str, torch.Generator], overwrite: bool = True) -> Path:
    """Write ``states`` (name -> object with ``state_dict()``), the config, epoch, history and generator
    states to ``path``. Atomic: a crash mid-write never leaves a truncated checkpoint behind."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"checkpoint {path} exists; pass overwrite=True (CLI: --overwrite) to replace it, "
                              "or choose another --checkpoint folder")
    payload = {"states": {k: v.state_dict() for k, v in states.items()}, "config": config_to_json(config),
               "config_class": type(config).__name__, "epoch": epoch, "history": json.dumps(history),
               "generators": {k: g.get_state() for k, g in gens.items()}}
    return save_atomic(payload, path)


def save_atomic(obj, path: str | Path) -> Path:
    """``torch.save`` through a uniquely named temporary file in the same folder and a rename: readers never
    see a half-written file, and two processes writing the same path do not share a temporary file."""
    return _replace_atomically(Path(path), lambda tmp: torch.save(obj, tmp))


def _replace_atomically(path: Path, write) -> Path:
    """Call ``write(tmp)`` on a fresh temporary file beside ``path``, then rename it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, device="cpu") -> dict:
    """The raw payload of :func:`save_checkpoint` (state dicts, ``config`` JSON, epoch, history, generators)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    payload = torch.load(path, map_location=device, weights_only=True)
    payload["history"] = json.loads(payload["history"])
    return payload


def start_or_resume(path: str | Path | None, config, states: dict, gens: dict[str, torch.Generator], *,
                    resume: bool = False, overwrite: bool = False, may_change: tuple = ("epochs",)) -> tuple[int, dict | None]:
    """Where a run starts: ``(0, None)`` for a new run, or ``(epoch + 1, history)`` after loading ``path``.

    With a checkpoint at ``path``: ``resume`` loads the states and generators into ``states``/``gens``
    (the config must equal the saved one except for ``may_change``), ``overwrite`` starts again, and
    neither is an error, so an earlier run is never replaced by accident.
    """
    if path is None or not Path(path).exists():
        return 0, None
    if not resume:
        if overwrite:
            return 0, None
        raise FileExistsError(f"checkpoint {path} exists; pass resume=True to continue it or overwrite=True to "
                              "start again (CLI: --resume / --overwrite)")
    first = next(iter(gens.values()))
    payload = load_checkpoint(path, device=first.device if first.device.type != "cpu" else "cpu")
    saved, now = json.loads(payload["config"]), json.loads(config_to_json(config))
    differ = sorted(k for k in set(saved) | set(now) if k not in may_change and saved.get(k) != now.get(k))
    if differ:
        raise ValueError(f"{path} was written with another configuration ({', '.join(differ)} differ); resume with "
                         f"the same settings (only {', '.join(may_change)} may change) or use another --checkpoint folder")
    for name, obj in states.items():
        obj.load_state_dict(payload["states"][name])
    for name, g in gens.items():
        g.set_state(payload["generators"][name].cpu())  # generator states are CPU byte tensors
    return payload["epoch"] + 1, payload["history"]


# ----------------------------------------------------------------------------- history
def new_history(*keys: str, **info) -> dict:
    """A per-epoch history: ``epoch`` and one list per key, ``seconds`` of training, and fixed ``info``."""
    return {"epoch": [], **{k: [] for k in keys}, "seconds": 0.0, **info}


def log_epoch(history: dict, epoch: int, started: float, **values) -> None:
    """Append one epoch's values; ``started`` = ``time.perf_counter()`` at the start of training, minus
    the seconds of any run resumed (so ``seconds`` counts training time only)."""
    history["epoch"].append(epoch)
    for k, v in values.items():
        history[k].append(v)
    history["seconds"] = time.perf_counter() - started


def check_finite(loss: torch.Tensor, where: str, hint: str) -> None:
    """Stop with a message that names the step and the fix when a loss is NaN or infinite."""
    if not torch.isfinite(loss):
        raise FloatingPointError(f"the loss became {loss.item()} at {where}: {hint}")


# ----------------------------------------------------------------------------- result files
def _clean(value):
    """JSON-safe: NaN/inf become null, tensors and NumPy values plain numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def write_json(path: str | Path, obj, overwrite: bool = True) -> Path:
    """Write ``obj`` as JSON through a temporary file in the same folder and a rename (atomic)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it or choose another path")
    def write(tmp):
        with open(tmp, "w") as fh:
            json.dump(_clean(obj), fh, indent=2)
            fh.write("\n")

    return _replace_atomically(path, write)


def read_results(path: str | Path) -> list[dict]:
    """The runs in a result file (a JSON list); [] when it does not exist."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not a readable result file ({err}); move it away or choose another --out") from None
    return data if isinstance(data, list) else [data]


def append_result(path: str | Path, row: dict) -> Path:
    """Add one finished run to the JSON list at ``path`` (atomically: the file always holds whole runs)."""
    return write_json(path, read_results(path) + [row])
