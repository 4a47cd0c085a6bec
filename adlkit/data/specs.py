"""``--data`` specs as the run commands take them: ``synthetic``, ``elpv``, ``visa:PATH``, ``mtd:PATH``,
``mvtec:PATH``, ``folder:PATH``; each resolved to (category, train, test) datasets, with the errors that name
what to pass instead."""
from __future__ import annotations

from pathlib import Path

from .datasets import ImageDataset, MVTecLike, categories, elpv, magnetic_tile, visa_categories, visa_from_split_csv
from .protocols import anomaly_types

__all__ = ["dataset_root", "category_list", "datasets", "extra_classes", "dataset_label", "typed_anomalies",
           "defect_types", "mixed_classes"]


def dataset_root(spec: str, image_size: int) -> Path:
    """The folder of an MVTec-layout ``spec`` (the built-in synthetic set is written on first use)."""
    from .synthetic import synthetic

    if spec == "synthetic":
        return synthetic(image_size=min(max(image_size, 64), 256))
    kind, _, path = spec.partition(":")
    if kind in ("mvtec", "folder") and path:
        return Path(path).expanduser()
    if kind in ("visa", "elpv", "mtd"):
        raise ValueError(f"--data {spec}: this command needs an MVTec-layout folder (mvtec:PATH or folder:PATH); "
                         "VisA, ELPV and the magnetic tile run with `run adl`, `multicue`, `ckaad`, `knn` (one bank per "
                         "category) and `ahl`; CADA adds the magnetic tile as one more class with --extra-class mtd:PATH")
    raise ValueError(f"--data must be 'synthetic', 'elpv', 'visa:PATH', 'mtd:PATH', 'mvtec:PATH' or 'folder:PATH'; "
                     f"got {spec!r}")


def category_list(root: Path, asked: list[str] | None, every: bool) -> list[str]:
    """The categories asked for (``asked``, or all with ``every``), checked against the folder ``root``."""
    available = categories(root)
    if not available:
        MVTecLike(root, "all")  # raises the error that shows the expected layout
    cats = available if every else (asked or [])
    if not cats:
        raise ValueError(f"name a --category (available: {available}) or pass --all-categories")
    missing = [c for c in cats if c not in available]
    if missing:
        raise ValueError(f"category {missing[0]!r} is not in {root}; available categories: {available}")
    return cats


def _magnetic_tile(spec: str, asked, image_size: int) -> list[tuple[str, ImageDataset, ImageDataset]]:
    path = spec.partition(":")[2]
    if not path:
        raise ValueError("--data mtd needs the dataset's folder: --data mtd:/path/to/Magnetic-tile-defect-datasets. "
                         "(the clone of github.com/abin24/Magnetic-tile-defect-datasets.)")
    if asked and asked != ["magnetic_tile"]:
        raise ValueError(f"the magnetic-tile set is one category, 'magnetic_tile'; got --category {asked}")
    root = Path(path).expanduser()
    return [("magnetic_tile", magnetic_tile(root, "train", image_size), magnetic_tile(root, "test", image_size))]


def _visa(spec: str, asked, every: bool, image_size: int) -> list[tuple[str, ImageDataset, ImageDataset]]:
    if not spec.partition(":")[2]:
        raise ValueError("--data visa needs the dataset's folder: --data visa:/path/to/VisA (holding split_csv/)")
    root = Path(spec.partition(":")[2]).expanduser()
    available = visa_categories(root)
    cats = available if every else (asked or [])
    unknown = [c for c in cats if c not in available]
    if not cats or unknown:
        raise ValueError((f"VisA has no category {unknown[0]!r}; " if unknown else "") + "name VisA categories "
                         f"with --category (available: {available}) or pass --all-categories")
    return [(c, visa_from_split_csv(root, c, "train", image_size), visa_from_split_csv(root, c, "test", image_size))
            for c in cats]


def datasets(spec: str, asked: list[str] | None, every: bool, image_size: int,
             root: Path | None = None) -> list[tuple[str, ImageDataset, ImageDataset]]:
    """(category, train, test) for every category asked for: MVTec-layout folders (the built-in synthetic set
    too, or the folder ``root`` when given), VisA (``visa:PATH``), the magnetic tile (``mtd:PATH``) or ELPV
    (``elpv``: its open-set protocol, normal = defect probability 0 split 75/25 once, anomaly = probability 1, image
    labels only; see :func:`adlkit.data.elpv`)."""
    kind = spec.partition(":")[0]
    if kind == "mtd":
        return _magnetic_tile(spec, asked, image_size)
    if spec == "elpv":
        if asked or every:
            raise ValueError("ELPV has no categories: drop --category/--all-categories (AHL's hard setting names "
                             "its seen classes, the cell types, with --seen-class mono poly, or all)")
        return [("elpv", *elpv(image_size, protocol="open_set"))]
    if kind == "visa":
        return _visa(spec, asked, every, image_size)
    root = root or dataset_root(spec, image_size)
    return [(c, MVTecLike(root, c, "train", image_size), MVTecLike(root, c, "test", image_size))
            for c in category_list(root, asked, every)]


def extra_classes(specs: list[str] | None) -> dict:
    """``--extra-class mtd:PATH``: the classes CADA adds beside ``--data``'s folder, by name, each a loader
    ``(split, image_size) -> ImageDataset`` (the magnetic tile as published: one class, ``magnetic_tile``)."""
    out = {}
    for spec in specs or []:
        kind, _, path = spec.partition(":")
        if kind != "mtd" or not path:
            raise ValueError(f"--extra-class {spec}: only the magnetic tile is supported, as mtd:PATH (the clone of "
                             "github.com/abin24/Magnetic-tile-defect-datasets.)")
        magnetic_tile(path, "train", 8)  # a wrong folder fails here, with the expected layout, before any training
        out["magnetic_tile"] = lambda split, size, path=path: magnetic_tile(path, split, size)
    return out


def mixed_classes(root: Path, cats: list[str], extra: dict, image_size: int) -> tuple[ImageDataset, ImageDataset]:
    """The train and test sets of ``cats`` (of the folder ``root``) and the ``extra`` classes, mixed (CADA)."""
    train, test = (MVTecLike(root, cats, split, image_size) for split in ("train", "test"))
    for load in extra.values():  # one more class each, beside the folder's
        train, test = (ImageDataset(a.samples + load(split, image_size).samples, image_size, f"{a.name}+{split}")
                       for a, split in ((train, "train"), (test, "test")))
    return train, test


def dataset_label(spec: str) -> str:
    """What a result row records as its dataset: ``--data`` as given, except the magnetic-tile set, recorded
    by name (``magnetic_tile``) and not by the folder it was read from on one machine."""
    return "magnetic_tile" if spec.partition(":")[0] == "mtd" else spec


def typed_anomalies(spec: str) -> bool:
    """Data whose test anomalies come in named types that AHL's hard setting holds out (ELPV, magnetic tile)."""
    return spec == "elpv" or spec.partition(":")[0] == "mtd"


def defect_types(test: ImageDataset) -> list[str | None]:
    """Each test image's defect type (None for a normal image), in the set's order: for per-type metrics."""
    return [s.defect if s.truth else None for s in test.samples]


def has_types(test: ImageDataset) -> bool:
    return len(anomaly_types(test)) > 1
