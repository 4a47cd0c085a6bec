"""A procedural, seeded, multi-class industrial-inspection dataset in the MVTec AD folder layout.

Why: MVTec AD and VisA cannot be downloaded here (and students may not have them), but every
method needs images, several classes and pixel masks. :func:`synthetic` writes such a dataset
to disk *in MVTec AD's layout*, so the real loader (:class:`adlkit.data.MVTecLike`) is the code
path every notebook exercises.

Five classes, two kinds, deliberately unequal in how hard they are to model:

==============  =======  ====================================  ======================================
class           kind     normal look (with natural variation)  defects (none is a Perlin blend)
==============  =======  ====================================  ======================================
``fabric``      texture  woven threads, colour/angle/pitch      hole, stain, cut, thread
``metal_plate`` texture  brushed metal, light gradient          scratch, dent, rust, crack
``tile``        texture  4x4 ceramic tiles with grout           crack, chip, stain, particle
``washer``      object   metal ring on a dark belt              missing_part, scratch, particle, crack
``capsule``     object   two-tone capsule with a print          crack, poke, contamination, faulty_print
==============  =======  ====================================  ======================================

Every image is drawn from its own seed ``(seed, class, split, index)``, so the dataset is
deterministic and any single image can be regenerated. A manifest (``adlkit_synthetic.json``)
records the generator version and parameters; re-running with the same parameters reuses the
folder and a folder made with other parameters is never overwritten.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from ..config import cache_dir

__all__ = ["SYNTHETIC_CLASSES", "SYNTHETIC_VERSION", "render_image", "synthetic"]

SYNTHETIC_VERSION = 1
MANIFEST = "adlkit_synthetic.json"

SYNTHETIC_CLASSES: dict[str, tuple[str, ...]] = {
    "fabric": ("hole", "stain", "cut", "thread"),
    "metal_plate": ("scratch", "dent", "rust", "crack"),
    "tile": ("crack", "chip", "stain", "particle"),
    "washer": ("missing_part", "scratch", "particle", "crack"),
    "capsule": ("crack", "poke", "contamination", "faulty_print"),
}
_SPLIT_ID = {"train": 0, "test": 1}


# ----------------------------------------------------------------------------- drawing helpers
def _coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1): (y, x), each [S, S]."""
    t = (np.arange(size) + 0.5) / size
    return np.meshgrid(t, t, indexing="ij")


def _fbm(rng: np.random.Generator, size: int, sigmas=(1.0, 3.0, 8.0), weights=(0.2, 0.35, 0.45),
         aniso: float = 1.0) -> np.ndarray:
    """Fractal-ish smooth noise in roughly [-1, 1]: a sum of Gaussian-filtered white noises.

    ``aniso > 1`` stretches the noise along x (brushed metal).
    """
    out = np.zeros((size, size))
    for s, w in zip(sigmas, weights):
        n = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma=(s * size / 128, s * aniso * size / 128),
                                    mode="wrap")
        out += w * n / (n.std() + 1e-8)
    return out / 2.0


def _soft_blob(rng: np.random.Generator, size: int, cy: float, cx: float, radius: float,
               wobble: float = 0.3, edge: float = 0.015, aspect: float = 1.0, angle: float = 0.0) -> np.ndarray:
    """An irregular filled blob as a soft alpha map in [0, 1] (radius in image fractions)."""
    radius = max(radius, 1.5 / size)  # at least a few pixels, whatever the image size
    yy, xx = _coords(size)
    dy, dx = yy - cy, xx - cx
    ca, sa = np.cos(angle), np.sin(angle)
    u, v = ca * dx + sa * dy, (-sa * dx + ca * dy) * aspect
    theta = np.arctan2(v, u)
    r_theta = np.ones_like(theta)
    for k in (2, 3, 5):
        r_theta += wobble / k * rng.uniform(0.5, 1.0) * np.sin(k * theta + rng.uniform(0, 2 * np.pi))
    d = np.hypot(u, v)
    return np.clip((radius * r_theta - d) / edge, 0.0, 1.0)


def _stroke(size: int, points: np.ndarray, width: float) -> np.ndarray:
    """An anti-aliased polyline (points in image fractions, [N, 2] as (y, x)) as an alpha map."""
    ss = 4  # supersampling factor
    canvas = Image.new("L", (size * ss, size * ss), 0)
    draw = ImageDraw.Draw(canvas)
    pts = [(float(x * size * ss), float(y * size * ss)) for y, x in points]
    w = max(1, int(round(width * ss)))
    draw.line(pts, fill=255, width=w, joint="curve")
    for x, y in (pts[0], pts[-1]):  # round caps
        draw.ellipse([x - w / 2, y - w / 2, x + w / 2, y + w / 2], fill=255)
    small = canvas.resize((size, size), Image.BOX)
    return np.asarray(small, dtype=np.float64) / 255.0


def _walk(rng: np.random.Generator, start, n: int, step: float, angle: float, turn: float) -> np.ndarray:
    """A random walk of ``n`` steps: the skeleton of cracks and threads."""
    pts = [np.asarray(start, dtype=np.float64)]
    for _ in range(n):
        angle += rng.normal(0, turn)
        pts.append(pts[-1] + step * np.array([np.sin(angle), np.cos(angle)]))
    return np.clip(np.stack(pts), 0.02, 0.98)


def _paint(img: np.ndarray, alpha: np.ndarray, colour) -> np.ndarray:
    """Alpha-composite a colour (RGB in [0, 1], or an [S, S, 3] image) over ``img``."""
    a = alpha[..., None]
    return img * (1 - a) + np.asarray(colour, dtype=np.float64) * a


def _shade(img: np.ndarray, alpha: np.ndarray, factor) -> np.ndarray:
    """Multiply brightness inside ``alpha`` by ``factor`` (scalar or [S, S])."""
    f = 1 + (np.asarray(factor) - 1) * alpha
    return img * (f[..., None] if np.ndim(f) == 2 else f)


def _lighting(rng: np.random.Generator, size: int, strength: float) -> np.ndarray:
    """A smooth illumination gradient around 1 (uneven lighting across a production line)."""
    yy, xx = _coords(size)
    a = rng.uniform(0, 2 * np.pi)
    return 1 + strength * rng.uniform(0.3, 1.0) * (np.cos(a) * (xx - 0.5) + np.sin(a) * (yy - 0.5))


def _random_point(rng: np.random.Generator, where: np.ndarray | None, margin: float = 0.15) -> tuple[float, float]:
    """A random (y, x) in image fractions, inside the boolean map ``where`` if given."""
    if where is None:
        return tuple(rng.uniform(margin, 1 - margin, size=2))
    ys, xs = np.nonzero(where)
    i = rng.integers(len(ys))
    size = where.shape[0]
    return (ys[i] + 0.5) / size, (xs[i] + 0.5) / size


# ----------------------------------------------------------------------------- normal images
def _fabric(rng, size):
    yy, xx = _coords(size)
    ang = np.deg2rad(rng.normal(0, 4))
    u, v = np.cos(ang) * xx + np.sin(ang) * yy, -np.sin(ang) * xx + np.cos(ang) * yy
    pitch = rng.uniform(22, 28)  # threads across the image
    warp, weft = np.sin(2 * np.pi * pitch * u), np.sin(2 * np.pi * pitch * v)
    over = np.sign(np.sin(np.pi * pitch * u) * np.sin(np.pi * pitch * v))  # which thread is on top
    relief = 0.5 + 0.25 * np.where(over > 0, warp, weft) + 0.08 * _fbm(rng, size, sigmas=(0.7, 2.0), weights=(0.6, 0.4))
    base = np.array([0.23, 0.32, 0.52]) + rng.normal(0, 0.025, 3)  # denim blue, dyed slightly differently per lot
    img = base * (0.55 + 0.9 * relief[..., None])
    img *= _lighting(rng, size, 0.25)[..., None]
    return img, None


def _metal_plate(rng, size):
    brushed = _fbm(rng, size, sigmas=(0.4, 1.5, 6.0), weights=(0.4, 0.4, 0.2), aniso=12.0)
    grey = rng.uniform(0.55, 0.68)
    img = grey + 0.09 * brushed[..., None] + np.array([0.0, 0.01, 0.03])
    img = img * _lighting(rng, size, 0.35)[..., None]
    for _ in range(rng.integers(0, 4)):  # harmless machining marks: faint, long, straight, horizontal
        y = rng.uniform(0.05, 0.95)
        img = _shade(img, _stroke(size, np.array([[y, 0.0], [y + rng.normal(0, 0.01), 1.0]]), 0.6), 1.04)
    return img, None


def _tile(rng, size):
    yy, xx = _coords(size)
    n = 4
    off = rng.uniform(-0.02, 0.02, 2)
    gy, gx = (yy + off[0]) * n, (xx + off[1]) * n
    fy, fx = gy - np.floor(gy), gx - np.floor(gx)
    grout_w = rng.uniform(0.05, 0.07)
    grout = np.clip((np.minimum.reduce([fy, 1 - fy, fx, 1 - fx]) - grout_w / 2) / 0.02, 0, 1)
    cell = (np.floor(gy).astype(int) % n) * n + (np.floor(gx).astype(int) % n)
    shades = rng.normal(0, 0.03, n * n)
    tile_col = np.array([0.86, 0.82, 0.74]) + rng.normal(0, 0.015, 3)
    speckle = 0.04 * _fbm(rng, size, sigmas=(0.5, 1.2), weights=(0.7, 0.3))
    img = (tile_col + (shades[cell] + speckle)[..., None]) * grout[..., None] + np.array([0.45, 0.43, 0.40]) * (
        1 - grout[..., None])
    img *= _lighting(rng, size, 0.15)[..., None]
    return img, grout > 0.5


def _washer(rng, size):
    yy, xx = _coords(size)
    cy, cx = 0.5 + rng.normal(0, 0.02, 2)
    r_out, r_in = rng.uniform(0.36, 0.39), rng.uniform(0.17, 0.19)
    d = np.hypot(yy - cy, xx - cx)
    ring = np.clip((r_out - d) / 0.008, 0, 1) * np.clip((d - r_in) / 0.008, 0, 1)
    theta = np.arctan2(yy - cy, xx - cx)
    light = rng.uniform(0, 2 * np.pi)
    metal = 0.62 + 0.16 * np.cos(theta - light) + 0.05 * np.cos(2 * theta) + 0.04 * _fbm(rng, size)
    bevel = 1 - 0.25 * np.exp(-(((d - r_out) / 0.03) ** 2)) - 0.2 * np.exp(-(((d - r_in) / 0.025) ** 2))
    belt = 0.16 + 0.03 * _fbm(rng, size, sigmas=(0.8, 3.0), weights=(0.5, 0.5))
    img = belt[..., None] * np.array([1.0, 1.0, 1.05]) * (1 - ring[..., None]) + (metal * bevel)[..., None] * np.array(
        [0.97, 0.97, 1.0]) * ring[..., None]
    return img, ring > 0.5


def _capsule_shape(size, cy, cx, length, radius, angle):
    yy, xx = _coords(size)
    ca, sa = np.cos(angle), np.sin(angle)
    u, v = ca * (xx - cx) + sa * (yy - cy), -sa * (xx - cx) + ca * (yy - cy)
    # distance to a segment of half-length `length` along u: a stadium (capsule) shape
    du = np.clip(np.abs(u) - length, 0, None)
    dist = np.hypot(du, v)
    return np.clip((radius - dist) / 0.008, 0, 1), u, v


def _capsule(rng, size):
    cy, cx = 0.5 + rng.normal(0, 0.015, 2)
    angle = rng.normal(0, 0.06)
    length, radius = rng.uniform(0.22, 0.25), rng.uniform(0.14, 0.155)
    body, u, v = _capsule_shape(size, cy, cx, length, radius, angle)
    left = np.array([0.72, 0.16, 0.14]) + rng.normal(0, 0.02, 3)  # red cap
    right = np.array([0.93, 0.90, 0.84]) + rng.normal(0, 0.01, 3)  # cream body
    colour = np.where((u < rng.normal(0, 0.005))[..., None], left, right)
    gloss = 1 + 0.35 * np.exp(-(((v + 0.05) / 0.035) ** 2)) - 0.35 * (np.abs(v) / 0.16) ** 2
    img = colour * gloss[..., None]
    # the print "A1" stand-in: two short dark bars on the cream half
    prt = np.zeros((size, size))
    for k in range(3):
        prt = np.maximum(prt, ((np.abs(u - (0.06 + 0.045 * k)) < 0.012) & (np.abs(v) < 0.05)).astype(float))
    prt = ndimage.gaussian_filter(prt, 0.6)
    img = _paint(img, prt * 0.85, [0.15, 0.15, 0.2])
    bg = 0.80 + 0.02 * _fbm(rng, size, sigmas=(2.0, 6.0), weights=(0.5, 0.5))
    img = img * body[..., None] + (bg[..., None] * np.array([0.95, 0.97, 1.0])) * (1 - body[..., None])
    img *= _lighting(rng, size, 0.1)[..., None]
    return img, body > 0.5, dict(u=u, v=v, print=prt > 0.3, bg=bg)


# ----------------------------------------------------------------------------- defects
def _defect(cls: str, defect: str, rng, img, fg, extra, size):
    """Return (image, soft alpha of the defect). The ground-truth mask is ``alpha > 0.3``."""
    s = rng.uniform(0.5, 1.3)  # defect size factor (some are subtle, some obvious)
    c = rng.uniform(0.15, 1.0)  # defect contrast factor
    on = fg  # where defects go: the object's pixels, or anywhere (None) on a texture

    if defect in ("hole", "missing_part", "poke", "chip"):
        if cls == "washer":  # a notch bitten out of the ring
            cy, cx = _random_point(rng, on)
            a = _soft_blob(rng, size, cy, cx, 0.07 * s, wobble=0.4, edge=0.01) * (fg.astype(float))
            belt = 0.16 + 0.03 * _fbm(rng, size)
            return _paint(img, a, np.repeat(belt[..., None], 3, -1)), a
        if cls == "capsule":  # a poke hole near an end: the background shows through
            side = rng.choice([-1, 1])
            u = extra["u"]
            target = (np.abs(u) > 0.18) & (np.sign(u) == side) & fg
            cy, cx = _random_point(rng, target if target.any() else fg)
            a = _soft_blob(rng, size, cy, cx, 0.06 * s, wobble=0.3, edge=0.01) * fg
            return _paint(img, a, np.repeat(extra["bg"][..., None], 3, -1) * np.array([0.95, 0.97, 1.0])), a
        if cls == "tile":  # a chipped tile corner showing the darker body underneath
            cy, cx = _random_point(rng, fg)
            a = _soft_blob(rng, size, cy, cx, 0.045 * s, wobble=0.5, edge=0.01)
            return _paint(img, a, np.array([0.58, 0.52, 0.46]) * (1 - 0.2 * c)), a
        # fabric hole: dark backing visible, frayed edge
        cy, cx = _random_point(rng, None)
        a = _soft_blob(rng, size, cy, cx, 0.035 * s, wobble=0.6, edge=0.012)
        return _paint(img, a * (0.4 + 0.6 * c), [0.05, 0.05, 0.06]), a

    if defect in ("stain", "rust", "contamination"):
        if defect == "contamination":  # a few dark specks on the capsule
            a = np.zeros((size, size))
            for _ in range(rng.integers(2, 5)):
                cy, cx = _random_point(rng, fg)
                a = np.maximum(a, _soft_blob(rng, size, cy, cx, 0.012 * s, wobble=0.3, edge=0.006))
            return _paint(img, a * (0.6 + 0.4 * c), [0.2, 0.15, 0.1]), a
        cy, cx = _random_point(rng, on)
        a = _soft_blob(rng, size, cy, cx, 0.07 * s, wobble=0.5, edge=0.03, aspect=rng.uniform(0.7, 1.4),
                       angle=rng.uniform(0, np.pi))
        mottled = np.clip(a * (0.8 + 0.4 * _fbm(rng, size, sigmas=(1.0, 3.0), weights=(0.5, 0.5))), 0, 1)
        colour = {"rust": [0.55, 0.28, 0.12], "stain": [0.35, 0.28, 0.18]}[defect]
        return _paint(img, mottled * (0.2 + 0.5 * c), colour), a

    if defect in ("scratch", "cut"):
        start = _random_point(rng, on)
        ang = rng.uniform(0, 2 * np.pi)
        pts = _walk(rng, start, n=6, step=0.045 * s, angle=ang, turn=0.08)
        a = _stroke(size, pts, width=rng.uniform(0.9, 1.6) * size / 128)
        if on is not None:
            a = a * ndimage.binary_dilation(on, iterations=1)
        bright = 1 + 0.5 * c if defect == "scratch" else 1 - 0.6 * c
        return np.clip(_shade(img, a, bright), 0, 1.2), a

    if defect == "crack":
        start = _random_point(rng, on)
        pts = _walk(rng, start, n=int(8 * s) + 3, step=0.025, angle=rng.uniform(0, 2 * np.pi), turn=0.5)
        a = _stroke(size, pts, width=rng.uniform(1.0, 1.8) * size / 128)
        if on is not None:
            a = a * on
        return _shade(img, a, 0.45 - 0.25 * c), a

    if defect == "thread":  # a stray fibre of another colour lying on the fabric
        start = _random_point(rng, None)
        pts = _walk(rng, start, n=10, step=0.03 * s, angle=rng.uniform(0, 2 * np.pi), turn=0.35)
        a = _stroke(size, pts, width=rng.uniform(1.2, 2.0) * size / 128)
        return _paint(img, a * (0.3 + 0.6 * c), np.array([0.85, 0.75, 0.3])), a

    if defect == "dent":  # a shallow dent: light on one side, shadow on the other
        cy, cx = _random_point(rng, None)
        r = 0.06 * s
        yy, xx = _coords(size)
        a = _soft_blob(rng, size, cy, cx, r, wobble=0.15, edge=0.02)
        ang = rng.uniform(0, 2 * np.pi)
        shading = 1 + 0.3 * c * ((np.cos(ang) * (xx - cx) + np.sin(ang) * (yy - cy)) / r)
        return _shade(img, a, np.clip(shading, 0.4, 1.6)), a

    if defect == "particle":  # a foreign particle: small, dark or bright, with a faint shadow
        cy, cx = _random_point(rng, on)
        a = _soft_blob(rng, size, cy, cx, 0.022 * s, wobble=0.5, edge=0.008)
        colour = [0.1, 0.1, 0.1] if rng.random() < 0.5 else [0.95, 0.92, 0.7]
        shadow = ndimage.shift(a, (1.5, 1.5), order=1) * 0.4
        return _paint(_shade(img, shadow, 0.6), a, colour), a

    if defect == "faulty_print":  # print missing or smeared
        prt = extra["print"]
        if rng.random() < 0.5:
            a = ndimage.binary_dilation(prt, iterations=1).astype(float)
            keep = rng.uniform(0.3, 0.7)
            a = a * (extra["u"] > np.quantile(extra["u"][prt], keep))  # part of the print is missing
            return _paint(img, a, [0.93, 0.90, 0.84]), a
        smear = ndimage.gaussian_filter(prt.astype(float), 2.0 * s)
        a = np.clip(smear * 3, 0, 1) * fg
        return _paint(img, np.clip(smear, 0, 1) * 0.6, [0.2, 0.2, 0.3]), a

    raise ValueError(f"unknown defect {defect!r} for class {cls!r}")


_RENDER = {"fabric": _fabric, "metal_plate": _metal_plate, "tile": _tile, "washer": _washer, "capsule": _capsule}


def render_image(cls: str, defect: str | None, seed: int, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Render one image of class ``cls`` (with ``defect`` or None for a good one).

    Returns ``(image uint8 [S, S, 3], mask bool [S, S])``. Deterministic in ``seed`` (a NumPy
    ``SeedSequence`` entropy: an int or a tuple of ints).
    """
    if cls not in SYNTHETIC_CLASSES:
        raise ValueError(f"unknown synthetic class {cls!r}; classes: {sorted(SYNTHETIC_CLASSES)}")
    rng = np.random.default_rng(seed)
    img, fg, *rest = _RENDER[cls](rng, size)
    extra = rest[0] if rest else None
    mask = np.zeros((size, size), dtype=bool)
    if defect is not None:
        if defect not in SYNTHETIC_CLASSES[cls]:
            raise ValueError(f"class {cls!r} has no defect {defect!r}; it has {SYNTHETIC_CLASSES[cls]}")
        for _ in range(10):  # a defect that happens to fall off the object is drawn again
            new, alpha = _defect(cls, defect, rng, img, fg, extra, size)
            mask = alpha > 0.3
            if mask.sum() >= 6:
                img = new
                break
        else:
            raise RuntimeError(f"could not place a {defect} on {cls} (seed {seed})")
    img = img + rng.normal(0, 0.012, img.shape)  # sensor noise
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), mask


# ----------------------------------------------------------------------------- writing the dataset
def _params(image_size, seed, n_train, n_test_good, n_test_defect, classes):
    return {
        "generator": "adlkit.data.synthetic",
        "version": SYNTHETIC_VERSION,
        "seed": seed,
        "image_size": image_size,
        "n_train": n_train,
        "n_test_good": n_test_good,
        "n_test_per_defect": n_test_defect,
        "classes": {c: list(SYNTHETIC_CLASSES[c]) for c in classes},
    }


def synthetic(root: str | os.PathLike | None = None, image_size: int = 128, seed: int = 0, *,
              n_train: int = 100, n_test_good: int = 25, n_test_per_defect: int = 10,
              classes: tuple[str, ...] | None = None, verbose: bool = True) -> Path:
    """Write (once) the procedural dataset in MVTec AD layout and return its root folder.

    Layout: ``<root>/<class>/train/good/000.png``, ``<root>/<class>/test/{good,<defect>}/000.png``,
    ``<root>/<class>/ground_truth/<defect>/000_mask.png``. Proportions follow MVTec AD (about
    2.5 training images per test image, 1/3 of the test set good). Default root:
    ``$ADLKIT_CACHE/synthetic_v<version>_s<seed>_<size>px``.

    Calling it again with the same parameters returns the existing folder at once. A folder
    that holds anything else (another version, other parameters, or not this dataset at all)
    is never overwritten: you get an error that says what is there.
    """
    if not 64 <= image_size <= 256:
        raise ValueError(f"image_size must be between 64 and 256 pixels; got {image_size}")
    classes = tuple(classes) if classes else tuple(SYNTHETIC_CLASSES)
    unknown = [c for c in classes if c not in SYNTHETIC_CLASSES]
    if unknown:
        raise ValueError(f"unknown synthetic classes {unknown}; available: {sorted(SYNTHETIC_CLASSES)}")
    params = _params(image_size, seed, n_train, n_test_good, n_test_per_defect, classes)
    if root is None:
        tag = "" if classes == tuple(SYNTHETIC_CLASSES) else "_" + "-".join(classes)
        counts = "" if (n_train, n_test_good, n_test_per_defect) == (100, 25, 10) else (
            f"_n{n_train}-{n_test_good}-{n_test_per_defect}")
        root = cache_dir() / f"synthetic_v{SYNTHETIC_VERSION}_s{seed}_{image_size}px{counts}{tag}"
    root = Path(root).expanduser()
    manifest = root / MANIFEST
    if manifest.is_file():
        existing = json.loads(manifest.read_text())
        found = {k: v for k, v in existing.items() if k in params}
        if found == params:
            return root
        diff = {k: (existing.get(k), v) for k, v in params.items() if existing.get(k) != v}
        raise FileExistsError(
            f"{root} already holds a synthetic dataset made with other settings "
            f"({', '.join(f'{k}: there {a!r}, asked {b!r}' for k, (a, b) in diff.items())}). It is not overwritten: "
            "pass another root (or root=None for a per-setting cache folder), or delete that folder yourself."
        )
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(
            f"{root} exists, is not empty and is not an adlkit synthetic dataset (no {MANIFEST}); "
            "refusing to write into it. Pass an empty or new folder."
        )

    t0 = time.perf_counter()
    tmp = root.with_name(f".{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for cls in classes:
        cid = list(SYNTHETIC_CLASSES).index(cls)
        jobs = [("train", "good", i) for i in range(n_train)]
        jobs += [("test", "good", i) for i in range(n_test_good)]
        jobs += [("test", d, i) for d in SYNTHETIC_CLASSES[cls] for i in range(n_test_per_defect)]
        for split, kind, i in jobs:
            defect_id = 0 if kind == "good" else 1 + SYNTHETIC_CLASSES[cls].index(kind)
            img, mask = render_image(cls, None if kind == "good" else kind,
                                     (seed, cid, _SPLIT_ID[split], defect_id, i), image_size)
            out = tmp / cls / split / kind
            out.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(out / f"{i:03d}.png")
            if kind != "good":
                gt = tmp / cls / "ground_truth" / kind
                gt.mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask.astype(np.uint8) * 255).save(gt / f"{i:03d}_mask.png")
    params["seconds_to_generate"] = round(time.perf_counter() - t0, 2)
    (tmp / MANIFEST).write_text(json.dumps(params, indent=2))
    root.parent.mkdir(parents=True, exist_ok=True)
    if root.exists():  # an empty folder the user made for us
        root.rmdir()
    os.replace(tmp, root)  # atomic: a half-written dataset is never mistaken for a finished one
    if verbose:
        print(f"adlkit: wrote the synthetic dataset ({len(classes)} classes, {image_size}px) to {root} "
              f"in {params['seconds_to_generate']:.1f} s")
    return root
