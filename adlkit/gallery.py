"""A few test images with a run's anomaly maps, kept beside its results so a reader sees what a method found
without training it again (``python -m adlkit run ... --save-maps``; notebooks 00 and 04-07 show them with
:func:`adlkit.viz.gallery_figure`).

Which images: per (class, defect type) the test image with the largest defect (the one a reader sees best),
plus per class the highest-scoring normal image (the method's worst false alarm) and the median-scoring one. The maps
keep the run's own colour scale (``vmin``/``vmax``: the 1st and 99.9th percentile of every test pixel's map
value), so a faint map stays faint; each image also carries its score's rank among the test set's scores.

Stored small (one ``.npz`` per run, images and maps at ``size`` px, maps in float16): a magnetic-tile run's
seven images take about 0.3 MB.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data import ImageDataset

SIZE = 128


def pick(dataset: ImageDataset, scores, per_type: int = 1, normals: int = 2) -> list[int]:
    """Indices into ``dataset`` (a run's scored test set, ``scores`` [N] in its order): per (class, defect type)
    the ``per_type`` anomalies with the largest mask (the first in the set's order without masks), then per class
    the highest- and, with ``normals`` >= 2, the median-scoring normal image. Deterministic for given scores."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) != len(dataset):
        raise ValueError(f"{len(scores)} scores for {len(dataset)} test images: pass the scores of this test set, in "
                         "its order")
    groups: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for i, s in enumerate(dataset.samples):
        if s.truth:
            area = int(dataset.load_mask(s, (dataset.image_size or SIZE,) * 2).sum()) if s.mask_path else 0
            groups.setdefault((s.class_name, s.defect), []).append((-area, i))
    chosen = [i for key in sorted(groups) for _, i in sorted(groups[key])[:per_type]]
    for cls in sorted({s.class_name for s in dataset.samples}) if normals else []:  # per class (CADA: several)
        normal = [i for i, s in enumerate(dataset.samples) if not s.truth and s.class_name == cls]
        if normal:
            by_score = sorted(normal, key=lambda i: (-scores[i], i))
            extra = [by_score[0]] + ([by_score[len(by_score) // 2]] if normals >= 2 else [])
            chosen += [i for i in dict.fromkeys(extra) if i not in chosen]
    return chosen


def spread(n: int, k: int) -> torch.Tensor:
    """``min(n, k)`` indices spread evenly over ``range(n)``, first and last included, in integer arithmetic (a
    float32 linspace rounds past ``n - 1`` once ``n`` exceeds 2**24, e.g. 678 maps of 256 x 256)."""
    k = min(n, k)
    return torch.arange(k, dtype=torch.int64) * (n - 1) // max(k - 1, 1)


def colour_scale(maps) -> tuple[float, float]:
    """(vmin, vmax) of maps [N, H, W]: the 1st and 99.9th percentile of every value (of every N-th, evenly spread,
    past 2 M: torch.quantile takes at most 16 M), one scale for all of them, so a faint map stays faint."""
    flat = torch.as_tensor(maps).float().flatten()
    sample = flat[spread(len(flat), 2_000_000)]
    vmin, vmax = (float(v) for v in torch.quantile(sample, torch.tensor([0.01, 0.999])))
    return vmin, vmax


def ranks(scores) -> np.ndarray:
    """Each score's rank among ``scores`` [N], 0 = the highest (ties in the given order)."""
    scores = np.asarray(scores)
    rank = np.empty(len(scores), dtype=np.int64)
    rank[np.argsort(-scores, kind="stable")] = np.arange(len(scores))
    return rank


def meta(path: str | Path) -> dict:
    """A saved gallery's ``meta`` alone (the images and maps stay compressed on disk)."""
    with np.load(path, allow_pickle=False) as z:
        return json.loads(str(z["meta"]))


def _resize(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, size, size] (nearest for masks, area for images and maps)."""
    return x if x.shape[-1] == size and x.shape[-2] == size else F.interpolate(x, size=(size, size), mode=mode)


def save(path: str | Path, dataset: ImageDataset, indices: list[int], scores, maps, meta: dict,
         size: int = SIZE) -> Path:
    """Write the images ``indices`` of ``dataset`` with their maps ([N, H, W] for the whole test set) and scores
    to ``path`` (``.npz``); ``meta``: what produced them (method, row, data, seed, ... as JSON). Grayscale images
    (three equal channels) are stored with one."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"gallery files end in .npz; got {path}")
    maps = torch.as_tensor(maps).float()
    scores = np.asarray(scores, dtype=np.float64)
    if maps.ndim != 3 or len(maps) != len(scores) or len(scores) != len(dataset):
        raise ValueError(f"maps {tuple(maps.shape)} and scores [{len(scores)}] must cover the {len(dataset)} test "
                         "images, maps as [N, H, W]")
    vmin, vmax = colour_scale(maps)
    images = torch.stack([dataset.load_image(dataset.samples[i]) for i in indices]).float()
    masks = torch.stack([dataset.load_mask(dataset.samples[i], tuple(images.shape[-2:])) for i in indices]).float()
    images = _resize(images, size, "area").round().to(torch.uint8)
    if bool((images[:, :1] == images).all()):
        images = images[:, :1]
    masks = _resize(masks, size, "nearest") > 0.5
    kept = _resize(maps[indices][:, None], size, "area")[:, 0]
    rank = ranks(scores)
    samples = [dataset.samples[i] for i in indices]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".part.npz")
    np.savez_compressed(
        tmp, images=images.permute(0, 2, 3, 1).numpy(), maps=kept.numpy().astype(np.float16),
        masks=masks[:, 0].numpy(), scores=scores[indices].astype(np.float32),
        rank=rank[indices], anomalous=np.array([s.truth for s in samples], dtype=np.int8),
        defects=np.array([s.defect for s in samples]), classes=np.array([s.class_name for s in samples]),
        names=np.array([Path(s.path).name for s in samples]),
        meta=np.array(json.dumps({**meta, "n_test": len(scores), "n_anomalous": int(sum(s.truth for s in dataset.samples)),
                                  "vmin": vmin, "vmax": vmax})))
    tmp.replace(path)  # whole files only
    return path


def load(path: str | Path) -> dict:
    """What :func:`save` wrote: arrays (``images`` [n, S, S, C] uint8, ``maps`` [n, S, S] float32, ``masks``,
    ``scores``, ``rank``, ``anomalous``, ``defects``, ``classes``, ``names``) and ``meta`` (a dict)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no saved maps there; write them with `python -m adlkit run ... --out "
                                "RESULTS.json --save-maps` (they go to RESULTS_maps/)")
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    out["maps"] = out["maps"].astype(np.float32)
    out["meta"] = json.loads(str(out["meta"]))
    return out


def maps_dir(results_file: str | Path) -> Path:
    """Where ``run ... --out RESULTS.json --save-maps`` writes its galleries: ``RESULTS_maps/``."""
    results_file = Path(results_file)
    return results_file.with_name(results_file.stem + "_maps")


def file_name(*parts) -> str:
    """A run's gallery file name from its grid coordinates, e.g. ``("adl", "DL", "magnetic_tile", 0.1, 0)`` ->
    ``adl_DL_magnetic_tile_c0.1_s0.npz``: letters, digits, ``.``, ``-`` and ``_`` only."""
    text = "_".join(str(p) for p in parts if p not in (None, ""))
    return "".join(c if c.isalnum() or c in ".-_" else "_" for c in text.replace("+", "plus")) + ".npz"


def find(results_file: str | Path, **where) -> dict[str, dict]:
    """The galleries saved beside ``results_file`` (``run ... --save-maps``) whose ``meta`` has these values,
    e.g. ``find(RESULTS / "cli_ckaad_mtd.json", seed=0, ablation="+patch")``; ``{file stem: gallery}`` in name
    order, {} when there are none."""
    folder = maps_dir(results_file)
    found = {}
    for path in sorted(folder.glob("*.npz")) if folder.is_dir() else []:
        if path.name.endswith(".part.npz"):
            continue
        saved = meta(path)  # only the matching galleries are decompressed
        if all(saved.get(k) == v for k, v in where.items()):
            found[path.stem] = load(path)
    return found


def subset(g: dict, class_name: str) -> dict:
    """The images of one class of a gallery (CADA's unified model keeps every class's in one file), with their
    ranks among the whole mixed test set, as the one threshold sees them."""
    keep = g["classes"] == class_name
    if not keep.any():
        raise ValueError(f"no image of class {class_name!r} in this gallery; it holds {sorted(set(g['classes']))}")
    return {k: (v[keep] if isinstance(v, np.ndarray) and v.ndim and len(v) == len(keep) else v) for k, v in g.items()}


def contrast(g: dict) -> dict[str, float]:
    """For each kept anomalous image (by defect type; several of a type are averaged): the map's mean inside the
    defect minus its mean outside, on the run's colour scale (``vmin`` -> 0, ``vmax`` -> 1). Near 0: the map does
    not single the defect out; about 1: the defect is as bright as the run's brightest pixels and the rest dark.
    A reading of the few images kept, not a metric of the test set (that is pixel AUROC and AUPRO)."""
    meta = g["meta"]
    span = max(meta["vmax"] - meta["vmin"], 1e-12)
    found: dict[str, list[float]] = {}
    for i in np.flatnonzero(g["anomalous"]):
        mask = g["masks"][i].astype(bool)
        if not mask.any() or mask.all():
            continue
        m = (g["maps"][i] - meta["vmin"]) / span
        found.setdefault(str(g["defects"][i]), []).append(float(m[mask].mean() - m[~mask].mean()))
    return {k: float(np.mean(v)) for k, v in found.items()}
