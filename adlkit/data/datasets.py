"""Datasets in the MVTec AD layout (and VisA, ELPV), as lists of :class:`Sample` records.

Every dataset here is an :class:`ImageDataset`: a list of samples plus how to load them. An
item is a dict::

    image      float tensor [3, S, S] in [0, 1] (grayscale files become 3 channels)
    mask       float tensor [1, S, S], 1 on defect pixels (all 0 for good images / no masks)
    label      0 normal, 1 anomalous - the label the *learner* sees (contaminated images: 0)
    anomalous  the ground truth (contaminated images: 1)
    defect     "good" or the defect type;  class_name;  path (str);  index

Expected folder layout (MVTec AD; the synthetic dataset and any folder "in MVTec layout")::

    <root>/<category>/train/good/*.png
    <root>/<category>/test/good/*.png
    <root>/<category>/test/<defect>/NNN.png
    <root>/<category>/ground_truth/<defect>/NNN_mask.png
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = ["EXPECTED_TREE", "ImageDataset", "MTD_EXPECTED_TREE", "MVTecLike", "Sample", "categories", "elpv",
           "magnetic_tile", "visa_from_split_csv"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".JPG", ".PNG"}

EXPECTED_TREE = """Expected layout (MVTec AD):
  <root>/
    <category>/                 e.g. bottle
      train/good/000.png ...
      test/good/000.png ...
      test/<defect>/000.png ...  e.g. test/broken_large/000.png
      ground_truth/<defect>/000_mask.png ...
"""


@dataclass(frozen=True)
class Sample:
    """One image record. ``label`` is what training sees; ``anomalous`` is the ground truth."""

    path: Path
    label: int
    class_name: str
    defect: str = "good"
    mask_path: Path | None = None
    anomalous: int | None = None  # None: same as label
    noise_seed: int | None = None  # contaminated images get seeded Gaussian noise (ADL protocol)
    noise_std: float = 0.0  # on the 0-255 scale
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def truth(self) -> int:
        return self.label if self.anomalous is None else self.anomalous


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in IMAGE_SUFFIXES)


def categories(root: str | Path) -> list[str]:
    """The categories under ``root``: sub-folders that contain ``train/good``."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "train" / "good").is_dir())


def _open_image(path: Path, mode: str) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert(mode)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"image file {path} is missing (was it moved after the dataset was listed?)") from err
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise OSError(f"cannot read image {path}: {err}. Is the file truncated or not an image? "
                      "Replace or delete it.") from err


class ImageDataset(torch.utils.data.Dataset):
    """A list of :class:`Sample` loaded as tensors resized to ``image_size`` (None: keep size)."""

    def __init__(self, samples: Sequence[Sample], image_size: int | None = 256, name: str = "dataset"):
        self.samples = list(samples)
        self.image_size = image_size
        self.name = name

    # -- basic protocol
    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        n_anom = sum(s.truth for s in self.samples)
        n_cont = sum(1 for s in self.samples if s.truth and not s.label)
        classes = sorted({s.class_name for s in self.samples})
        extra = f", {n_cont} contaminated" if n_cont else ""
        return (f"{type(self).__name__}({self.name!r}: {len(self)} images, {n_anom} anomalous{extra}, "
                f"classes={classes}, image_size={self.image_size})")

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)

    @property
    def truths(self) -> np.ndarray:
        return np.array([s.truth for s in self.samples], dtype=np.int64)

    @property
    def class_names(self) -> list[str]:
        return [s.class_name for s in self.samples]

    def subset(self, indices: Iterable[int], name: str | None = None) -> ImageDataset:
        return ImageDataset([self.samples[i] for i in indices], self.image_size, name or self.name)

    def with_samples(self, samples: Sequence[Sample], name: str | None = None) -> ImageDataset:
        return ImageDataset(samples, self.image_size, name or self.name)

    # -- loading
    def _resize(self, im: Image.Image, resample) -> Image.Image:
        if self.image_size is None or im.size == (self.image_size, self.image_size):
            return im
        return im.resize((self.image_size, self.image_size), resample)

    def load_image(self, sample: Sample) -> torch.Tensor:
        """uint8 tensor [3, S, S] (contamination noise applied)."""
        im = self._resize(_open_image(sample.path, "RGB"), Image.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
        if sample.noise_seed is not None and sample.noise_std > 0:
            rng = np.random.default_rng(sample.noise_seed)
            arr = np.clip(arr + rng.normal(0.0, sample.noise_std, arr.shape), 0, 255).round().astype(np.uint8)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1)

    def load_mask(self, sample: Sample, image_hw: tuple[int, int] | None = None) -> torch.Tensor:
        """bool tensor [1, S, S]."""
        if sample.mask_path is None:
            s = self.image_size
            h, w = (s, s) if s is not None else image_hw
            return torch.zeros(1, h, w, dtype=torch.bool)
        m = _open_image(sample.mask_path, "L")
        with Image.open(sample.path) as im:
            if im.size != m.size:
                raise ValueError(
                    f"mask {sample.mask_path} is {m.size[0]}x{m.size[1]} but its image {sample.path} is "
                    f"{im.size[0]}x{im.size[1]}: a mask must have its image's size. Re-export the mask at the "
                    "image's resolution."
                )
        threshold = sample.meta.get("mask_threshold", 0)  # MVTec masks are 0/255; magnetic tile's are soft-edged
        binary = Image.fromarray((np.asarray(m) > threshold).astype(np.uint8) * 255)
        resized = self._resize(binary, Image.BILINEAR)
        return torch.from_numpy(np.asarray(resized) > 127).unsqueeze(0)

    def __getitem__(self, index: int) -> dict:
        s = self.samples[index]
        image = self.load_image(s)
        mask = self.load_mask(s, tuple(image.shape[-2:]))
        return {
            "image": image.float() / 255.0,
            "mask": mask.float(),
            "label": s.label,
            "anomalous": s.truth,
            "defect": s.defect,
            "class_name": s.class_name,
            "path": str(s.path),
            "index": index,
        }


def _category_samples(root: Path, category: str, split: str) -> list[Sample]:
    base = root / category
    if not (base / "train" / "good").is_dir():
        raise FileNotFoundError(f"{base} has no train/good folder.\n{EXPECTED_TREE}")
    if split == "train":
        files = _list_images(base / "train" / "good")
        if not files:
            raise FileNotFoundError(f"{base / 'train' / 'good'} holds no images ({sorted(IMAGE_SUFFIXES)}).")
        return [Sample(p, 0, category) for p in files]
    test = base / "test"
    if not test.is_dir():
        raise FileNotFoundError(f"{base} has no test folder.\n{EXPECTED_TREE}")
    samples = []
    for defect_dir in sorted(p for p in test.iterdir() if p.is_dir()):
        defect = defect_dir.name
        for p in _list_images(defect_dir):
            if defect == "good":
                samples.append(Sample(p, 0, category))
                continue
            mask = base / "ground_truth" / defect / f"{p.stem}_mask.png"
            if not mask.is_file():
                alternatives = sorted((base / "ground_truth" / defect).glob(f"{p.stem}*")) if (
                    base / "ground_truth" / defect).is_dir() else []
                hint = f" (found {[a.name for a in alternatives]})" if alternatives else ""
                raise FileNotFoundError(
                    f"defect image {p} has no mask: expected {mask}{hint}. Every test/<defect>/NNN.png needs "
                    f"ground_truth/<defect>/NNN_mask.png.\n{EXPECTED_TREE}"
                )
            samples.append(Sample(p, 1, category, defect, mask))
    if not samples:
        raise FileNotFoundError(f"{test} holds no images.\n{EXPECTED_TREE}")
    return samples


class MVTecLike(ImageDataset):
    """MVTec AD, or any folder in its layout (the synthetic dataset included).

    ``category`` is one name, a list of names, or ``"all"`` (every category, mixed: the
    multi-class setting of CADA). ``split`` is ``"train"`` or ``"test"``.
    """

    def __init__(self, root: str | Path, category: str | Sequence[str] = "all", split: str = "train",
                 image_size: int | None = 256):
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"dataset root {root} does not exist (or is not a folder).\n{EXPECTED_TREE}")
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
        available = categories(root)
        if not available:
            raise FileNotFoundError(
                f"{root} contains no category folder with train/good inside; is this the dataset root?\n{EXPECTED_TREE}"
            )
        wanted = available if category == "all" else ([category] if isinstance(category, str) else list(category))
        missing = [c for c in wanted if c not in available]
        if missing:
            raise ValueError(f"category {missing[0]!r} is not in {root}; available categories: {available}")
        samples = [s for c in wanted for s in _category_samples(root, c, split)]
        name = f"{root.name}/{category if isinstance(category, str) else '+'.join(wanted)}/{split}"
        super().__init__(samples, image_size, name)
        self.root, self.categories, self.split = root, wanted, split


def _visa_rows(root: Path, split_csv: str | Path | None) -> tuple[Path, list[dict]]:
    split_csv = Path(split_csv) if split_csv else root / "split_csv" / "1cls.csv"
    if not split_csv.is_file():
        raise FileNotFoundError(
            f"VisA split file {split_csv} not found. Download VisA and its split_csv folder (see the VisA "
            "repository), or pass split_csv=... ."
        )
    with open(split_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    needed = {"object", "split", "label", "image", "mask"}
    if not rows or not needed <= set(rows[0]):
        raise ValueError(f"{split_csv} must have the columns {sorted(needed)}; found {sorted(rows[0]) if rows else []}")
    return split_csv, rows


def visa_categories(root: str | Path, split_csv: str | Path | None = None) -> list[str]:
    """The objects (categories) of VisA's split file, sorted."""
    return sorted({r["object"] for r in _visa_rows(Path(root).expanduser(), split_csv)[1]})


def visa_from_split_csv(root: str | Path, category: str, split: str = "train", image_size: int | None = 256,
                        split_csv: str | Path | None = None) -> ImageDataset:
    """VisA after its official split: ``split_csv/1cls.csv`` (columns object, split, label, image, mask).

    Paths in the csv are relative to the VisA root. Anomalous images keep the csv's ``mask``;
    their defect type is ``"anomaly"`` (VisA's csv does not name one).
    """
    root = Path(root).expanduser()
    split_csv, rows = _visa_rows(root, split_csv)
    available = sorted({r["object"] for r in rows})
    if category not in available:
        raise ValueError(f"category {category!r} is not in {split_csv}; available categories: {available}")
    samples = []
    for r in rows:
        if r["object"] != category or r["split"] != split:
            continue
        anomalous = r["label"].strip().lower() == "anomaly"
        mask = root / r["mask"] if anomalous and r["mask"] else None
        samples.append(Sample(root / r["image"], int(anomalous), category, "anomaly" if anomalous else "good", mask))
    if not samples:
        raise ValueError(f"no rows for category {category!r} and split {split!r} in {split_csv}")
    return ImageDataset(samples, image_size, f"visa/{category}/{split}")


ELPV_OPEN_SET_SEED = 0  # the one fixed split of ELPV's normal cells for protocol="open_set" (not a run's seed)


def elpv(image_size: int | None = 256, threshold: float = 0.5, cell_type: str | None = None,
         protocol: str = "threshold") -> ImageDataset | tuple[ImageDataset, ImageDataset]:
    """The ELPV solar-cell electroluminescence dataset (2,624 cells, 300x300 grayscale).

    Needs ``pip install 'adlkit[elpv]'`` (the ``elpv-dataset`` package, CC BY-NC-SA 4.0).
    Image-level labels only; every cell's expert defect probability (0, 1/3, 2/3 or 1) is kept in
    ``meta["defect_probability"]`` and its type (``mono`` or ``poly``) in ``meta["cell_type"]``.

    ``protocol="threshold"`` (default): one :class:`ImageDataset` of all cells; a cell is anomalous
    when its probability is >= ``threshold``; ``class_name`` is the cell type, ``cell_type`` keeps
    one type only.

    ``protocol="open_set"``: ``(train, test)`` as in the open-set papers (DRA: Ding, Pang & Shen,
    CVPR 2022; AHL: Zhu, Ding, Tian & Pang, CVPR 2024). Normal = probability 0 (1,508 cells),
    anomaly = probability 1 (715: 313 mono, 402 poly); the 401 uncertain cells (1/3, 2/3) are
    dropped. An anomaly's ``defect`` is its cell type, so the two cell types are the two anomaly
    types of :func:`~adlkit.data.open_set_split` (``"hard"``, ``seen_class="mono"`` or ``"poly"``);
    normal cells have ``defect="good"``. All cells share ``class_name="elpv"`` (one category). The
    normal cells are split 75/25 once, with the fixed seed :data:`ELPV_OPEN_SET_SEED` (not the run's
    seed, so every run tests on the same cells), within each cell type: 1,131 train (441 mono, 690
    poly), 377 test; all 715 anomalies are in the test set. The papers do not publish their split,
    so the cells (not the counts) may differ from theirs. ``threshold`` and ``cell_type`` do not
    apply here and raise: the cell type *is* the anomaly type (filter it with ``open_set_split``).
    """
    if protocol not in ("threshold", "open_set"):
        raise ValueError(f"unknown ELPV protocol {protocol!r}; use 'threshold' (one dataset, anomalous when the "
                         "defect probability >= threshold) or 'open_set' ((train, test) for open-set splits).")
    if cell_type not in (None, "mono", "poly"):
        raise ValueError(f"cell_type must be None, 'mono' or 'poly'; got {cell_type!r}")
    if protocol == "open_set" and cell_type is not None:
        raise ValueError(f"cell_type={cell_type!r} does not apply to protocol='open_set': there the cell type is the "
                         "anomaly type. Load both and pick with open_set_split(train, test, 'hard', "
                         f"seen_class={cell_type!r}).")
    if protocol == "open_set" and threshold != 0.5:
        raise ValueError(f"threshold={threshold} does not apply to protocol='open_set' (normal = probability 0, "
                         "anomaly = probability 1, the rest dropped). Drop threshold, or use protocol='threshold'.")
    try:
        import elpv_dataset
    except ImportError as err:
        raise ImportError(
            "ELPV needs the 'elpv-dataset' package: pip install 'adlkit[elpv]' (or pip install elpv-dataset)."
        ) from err
    labels_csv = Path(elpv_dataset.__file__).parent / "data" / "labels.csv"
    if not labels_csv.is_file():
        raise FileNotFoundError(f"the elpv-dataset package is installed but {labels_csv} is missing; reinstall it.")
    rows = []  # (path, defect probability, cell type)
    for line in labels_csv.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            rows.append((labels_csv.parent / parts[0], float(parts[1]), parts[2]))
    if protocol == "open_set":
        return _elpv_open_set(rows, image_size)
    samples = []
    for path, prob, kind in rows:
        if cell_type and kind != cell_type:
            continue
        anomalous = int(prob >= threshold)
        samples.append(Sample(path, anomalous, kind, "defective" if anomalous else "good",
                              meta={"defect_probability": prob, "cell_type": kind}))
    return ImageDataset(samples, image_size, f"elpv{'/' + cell_type if cell_type else ''}")


def _elpv_open_set(rows: list[tuple[Path, float, str]], image_size: int | None) -> tuple[ImageDataset, ImageDataset]:
    """ELPV's open-set (train, test): see :func:`elpv`."""
    def sample(path, prob, kind, anomalous):
        return Sample(path, anomalous, "elpv", kind if anomalous else "good",
                      meta={"defect_probability": prob, "cell_type": kind})

    normal = [r for r in rows if r[1] == 0.0]
    anomalies = [sample(*r, 1) for r in rows if r[1] == 1.0]
    rng = np.random.default_rng(ELPV_OPEN_SET_SEED)
    in_train = set()
    for kind in ("mono", "poly"):  # 75/25 within each cell type, so train and test share the mono/poly mix
        idx = [i for i, r in enumerate(normal) if r[2] == kind]
        in_train |= set(rng.choice(idx, size=round(0.75 * len(idx)), replace=False).tolist())
    train = [sample(*r, 0) for i, r in enumerate(normal) if i in in_train]
    test = [sample(*r, 0) for i, r in enumerate(normal) if i not in in_train] + anomalies
    return ImageDataset(train, image_size, "elpv/open_set/train"), ImageDataset(test, image_size, "elpv/open_set/test")


MTD_EXPECTED_TREE = """Expected layout (Magnetic Tile Defects, as published on GitHub by its authors):
  <root>/
    MT_Free/Imgs/<stem>.jpg  (+ <stem>.png, an empty mask)   952 defect-free tiles
    MT_Blowhole/Imgs/<stem>.jpg + <stem>.png                 defects with their masks; also
    MT_Break/  MT_Crack/  MT_Fray/  MT_Uneven/               (same layout)
Get it with: git clone https://github.com/abin24/Magnetic-tile-defect-datasets.
"""
MTD_TYPES = ("blowhole", "break", "crack", "fray", "uneven")
MTD_SPLIT_SEED = 0  # the one fixed split of the defect-free tiles (not a run's seed: every run tests on the same images)
MTD_TRAIN_FRACTION = 0.7
MTD_MASK_THRESHOLD = 127  # the masks are anti-aliased (values 1-254 on their edges): a pixel is a defect above half


def magnetic_tile(root: str | Path, split: str = "train", image_size: int | None = 256,
                  train_fraction: float = MTD_TRAIN_FRACTION) -> ImageDataset:
    """The Magnetic Tile Defects dataset (Y. Huang, C. Qiu, K. Yuan, *Surface defect saliency of magnetic
    tile*, The Visual Computer 36, 2020), read in its published layout (:data:`MTD_EXPECTED_TREE`).

    1,344 grayscale tiles of varying size: 952 defect-free (``MT_Free``) and 392 with one of five defect
    types (blowhole 115, break 85, crack 57, fray 32, uneven 103), each with a same-stem ``.png`` mask
    (binarised at :data:`MTD_MASK_THRESHOLD`: the masks' edges are anti-aliased; four uneven masks are
    empty in the source and stay anomalous images with an empty mask). Images are resized to
    ``image_size`` (aspect not kept, as for MVTec AD) and become 3 channels; ``defect`` is the type from
    the folder name, ``class_name`` is ``"magnetic_tile"`` (one category).

    The dataset publishes no split. This one is fixed, seeded once with :data:`MTD_SPLIT_SEED` (not the
    run's seed, so every run and method tests on the same images, as MVTec AD's fixed test set): 70% of
    the defect-free tiles train (666), the other 30% (286) and all 392 defect tiles test. 70% keeps the
    training set near MVTec AD's typical size while the test set keeps 286 normals, enough that the
    contamination protocol can move up to 20% of the training count (133) out of the defects.
    """
    root = Path(root).expanduser()
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be in (0, 1); got {train_fraction}")
    if not root.is_dir():
        raise FileNotFoundError(f"magnetic-tile root {root} does not exist (or is not a folder).\n{MTD_EXPECTED_TREE}")
    folders = {"good": root / "MT_Free" / "Imgs", **{t: root / f"MT_{t.capitalize()}" / "Imgs" for t in MTD_TYPES}}
    missing = [str(f.relative_to(root)) for f in folders.values() if not f.is_dir()]
    if missing:
        raise FileNotFoundError(f"{root} is not the magnetic-tile layout: missing {', '.join(missing)}.\n"
                                f"{MTD_EXPECTED_TREE}")
    images = {kind: sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".jpg")
              for kind, folder in folders.items()}
    if not images["good"]:
        raise FileNotFoundError(f"{folders['good']} holds no .jpg images.\n{MTD_EXPECTED_TREE}")
    meta = {"mask_threshold": MTD_MASK_THRESHOLD}
    good = [Sample(p, 0, "magnetic_tile", meta=dict(meta)) for p in images["good"]]
    rng = np.random.default_rng(MTD_SPLIT_SEED)
    in_train = set(rng.choice(len(good), size=round(train_fraction * len(good)), replace=False).tolist())
    if split == "train":
        return ImageDataset([s for i, s in enumerate(good) if i in in_train], image_size, "magnetic_tile/train")
    samples = [s for i, s in enumerate(good) if i not in in_train]
    for kind in MTD_TYPES:
        for p in images[kind]:
            mask = p.with_suffix(".png")
            if not mask.is_file():
                raise FileNotFoundError(f"defect image {p} has no mask: expected {mask} (same stem, .png) beside it.\n"
                                        f"{MTD_EXPECTED_TREE}")
            samples.append(Sample(p, 1, "magnetic_tile", kind, mask, meta=dict(meta)))
    return ImageDataset(samples, image_size, "magnetic_tile/test")


def relabel(sample: Sample, **changes) -> Sample:
    """A copy of ``sample`` with fields changed (samples are immutable)."""
    return replace(sample, **changes)
