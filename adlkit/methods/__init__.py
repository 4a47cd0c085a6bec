"""Methods, one file each, reading top to bottom like the paper's algorithm.

Every method offers the same surface, at the end of its file: ``Config`` (validated when built), ``fit(config,
train, device) -> model``, ``predict(model, images) -> {"scores", "maps", ...}``, ``save(model, path)`` /
``load(path, device)`` (one file, :mod:`adlkit.modelfile`) and ``run(...)`` (the paper's protocol end to end).
:func:`load_any` reads any method's model file.
"""
from __future__ import annotations

import importlib
from pathlib import Path

METHODS = ("adl", "multicue", "knn", "cada", "ckaad", "ahl")

__all__ = ["METHODS", "load_any", "method_of"]


def method_of(path: str | Path) -> str:
    """The method a model file holds (its ``"method"``), checked to be one of :data:`METHODS`."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--model {path}: no such file (write one with `python -m adlkit run ... --save-models` "
                                "or adlkit.methods.<method>.save(model, path))")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (not a torch file, or one holding more than tensors)
        raise ValueError(f"--model {path} is not an adlkit model file ({type(err).__name__}): write one with "
                         "adlkit.methods.<method>.save(model, path)") from err
    method = payload.get("method") if isinstance(payload, dict) and "adlkit_model" in payload else None
    if method not in METHODS:
        raise ValueError(f"--model {path} is not an adlkit model file (a training checkpoint is not one either): "
                         "write one with `run ... --save-models` or adlkit.methods.<method>.save(model, path)")
    return method


def load_any(path: str | Path, device=None):
    """(the method's module, the model) for any method's model file: ``module.predict(model, images)`` scores."""
    module = importlib.import_module(f"{__name__}.{method_of(path)}")
    return module, module.load(path, device)
