"""Anomaly sources, their augmentation, the batched :class:`PseudoAnomaly` and elastic warps.

DRAEM's recipe per pseudo-anomaly: pick a texture (DTD), apply 3 of its colour/geometry
augmentations chosen at random, threshold a Perlin map into a mask, blend with opacity β.
Upstream does this per sample in data-loader workers with imgaug (which no longer imports with
current NumPy). Here it is one batched call on the device of the images: every sample still gets
its own texture, its own 3 augmentations with their own parameters, its own mask and β.

Why not ``torchvision.transforms.v2`` transforms objects? Called on a batch, a v2 transform draws
*one* set of random parameters for the whole batch, so 64 pseudo-anomalies would share one
augmentation. The parameter-free operations below (invert, auto-contrast, equalize) are
torchvision's ``transforms.v2.functional`` kernels; the parameterised ones are written out so that
each sample has its own parameter.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from .perlin import _rand, _randint, blend, perlin_masks, rotate, sample_beta

__all__ = ["load_texture_sources", "builtin_sources", "augment_sources", "PseudoAnomaly", "elastic_anomalies",
           "AUGMENTATIONS"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}


# ----------------------------------------------------------------------------- anomaly sources
def load_texture_sources(folder: str | Path, image_size: int, max_images: int | None = None,
                         seed: int = 0) -> torch.Tensor:
    """Texture images from a folder tree (e.g. DTD's ``images/``) as uint8 ``[N, 3, S, S]``.

    Each photo is centre-cropped to a square and resized (DRAEM resizes DTD images to the input
    size). ``max_images`` keeps a seeded random subset.
    """
    from PIL import Image

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"texture folder {folder} does not exist. Point it at DTD's images/ folder "
                                "(or any folder of texture photos), or use sources=None for the built-in ones.")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({sorted(IMAGE_SUFFIXES)}) under {folder}")
    if max_images is not None and len(files) > max_images:
        keep = np.random.default_rng(seed).choice(len(files), size=max_images, replace=False)
        files = [files[i] for i in sorted(keep)]
    out = []
    for p in files:
        try:
            with Image.open(p) as im:
                im = im.convert("RGB")
                side = min(im.size)
                left, top = (im.width - side) // 2, (im.height - side) // 2
                im = im.crop((left, top, left + side, top + side)).resize((image_size, image_size), Image.BILINEAR)
                out.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1))
        except OSError as err:
            raise OSError(f"cannot read texture image {p}: {err}") from err
    return torch.stack(out)


def builtin_sources(image_size: int, n: int = 64, seed: int = 0) -> torch.Tensor:
    """Anomaly sources without any download, uint8 ``[n, 3, S, S]``.

    Half are random crops of the two real photographs shipped with scikit-learn (a temple and a
    flower, CC BY 2.0 / public domain, see ``sklearn.datasets.load_sample_images``); half are
    procedural textures (coloured multi-octave Perlin noise, stripes, checkers).
    """
    from sklearn.datasets import load_sample_images

    from .perlin import perlin_noise

    g = torch.Generator().manual_seed(seed)
    photos = [torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in load_sample_images().images]
    n_photo = n // 2
    crops = []
    for k in range(n_photo):
        ph = photos[k % len(photos)]
        side = int(torch.randint(image_size // 2, min(ph.shape[1:]) + 1, (1,), generator=g))
        top = int(torch.randint(0, ph.shape[1] - side + 1, (1,), generator=g))
        left = int(torch.randint(0, ph.shape[2] - side + 1, (1,), generator=g))
        crop = ph[:, top:top + side, left:left + side][None].float()
        crops.append(F.interpolate(crop, size=(image_size, image_size), mode="bilinear", antialias=True,
                                   align_corners=False)[0])
    n_proc = n - n_photo
    noise = perlin_noise(3 * n_proc, image_size, image_size, octaves=3, generator=g).view(n_proc, 3, image_size,
                                                                                           image_size)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, image_size), torch.linspace(0, 1, image_size), indexing="ij")
    freq = torch.randint(3, 20, (n_proc, 1, 1, 1), generator=g).float()
    kind = torch.randint(0, 3, (n_proc, 1, 1, 1), generator=g)
    stripes = torch.sin(2 * math.pi * freq * (xx + 0.3 * yy))
    checks = torch.sign(torch.sin(2 * math.pi * freq * xx) * torch.sin(2 * math.pi * freq * yy))
    pattern = torch.where(kind == 0, noise, torch.where(kind == 1, stripes + 0.5 * noise, checks + 0.3 * noise))
    colour = torch.rand(n_proc, 3, 1, 1, generator=g)
    proc = (0.5 + 0.5 * pattern.clamp(-1, 1)) * colour + (1 - colour) * torch.rand(n_proc, 3, 1, 1, generator=g)
    return torch.cat([torch.stack(crops), 255 * proc.clamp(0, 1)]).round().clamp(0, 255).to(torch.uint8)


# ----------------------------------------------------------------------------- augmentations
def _blur3(x):
    """3x3 box blur (edges replicated): the smoothed image that sharpening pushes away from.

    Written as two 3-tap sums of shifted views: several times faster on a CPU than avg_pool2d.
    """
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    rows = p[..., :, :-2] + p[..., :, 1:-1] + p[..., :, 2:]
    return (rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]) / 9


def _hue_saturation(x, hue_deg, sat):
    """Rotate hue in YIQ space and scale saturation, per sample."""
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                          device=x.device, dtype=x.dtype)
    yiq = torch.einsum("ij,bjhw->bihw", to_yiq, x)
    a = hue_deg * math.pi / 180
    c, s = torch.cos(a).view(-1, 1, 1), torch.sin(a).view(-1, 1, 1)
    i, q = yiq[:, 1], yiq[:, 2]
    yiq = torch.stack([yiq[:, 0], sat.view(-1, 1, 1) * (c * i - s * q), sat.view(-1, 1, 1) * (s * i + c * q)], 1)
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(to_yiq), yiq)


def _u(lo, hi, n, g, dev):
    return lo + (hi - lo) * _rand((n,), g, dev)


# name -> (function of (x float [n,3,H,W] in [0,1], generator) -> x). DRAEM's imgaug list, in order.
AUGMENTATIONS = {
    "gamma_contrast": lambda x, g: x.clamp_min(1e-6) ** _u(0.5, 2.0, len(x), g, x.device).view(-1, 1, 1, 1),
    "multiply_add_brightness": lambda x, g: x * _u(0.8, 1.2, len(x), g, x.device).view(-1, 1, 1, 1)
    + _u(-30, 30, len(x), g, x.device).view(-1, 1, 1, 1) / 255,
    "sharpness": lambda x, g: x + _u(0.0, 2.0, len(x), g, x.device).view(-1, 1, 1, 1) * (x - _blur3(x)),
    "hue_saturation": lambda x, g: _hue_saturation(x, _u(-50, 50, len(x), g, x.device),
                                                   _u(0.5, 1.5, len(x), g, x.device)),
    "solarize": lambda x, g: torch.where(x > _u(32, 128, len(x), g, x.device).view(-1, 1, 1, 1) / 255, 1 - x, x),
    "posterize": lambda x, g: torch.floor(
        x * (levels := 2.0 ** _randint(4, 8, (len(x),), g, x.device).view(-1, 1, 1, 1).to(x.dtype))) / levels,
    "invert": lambda x, g: TF.invert(x),
    "autocontrast": lambda x, g: TF.autocontrast(x),
    "equalize": lambda x, g: TF.equalize((x.clamp(0, 1) * 255).round().to(torch.uint8)).to(x.dtype) / 255,
    "rotate": lambda x, g: rotate(x, _u(-45, 45, len(x), g, x.device), mode="bilinear"),
}


def augment_sources(x: torch.Tensor, k: int = 3, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply ``k`` distinct random augmentations (of :data:`AUGMENTATIONS`) to each image of ``x``.

    ``x`` float [B, 3, H, W] in [0, 1]. Each sample gets its own choice and its own parameters; an
    operation runs once on the sub-batch that chose it.
    """
    n_ops = len(AUGMENTATIONS)
    # k distinct ops per sample: the k smallest of n_ops random keys
    keys = _rand((x.shape[0], n_ops), generator, x.device)
    chosen = torch.zeros_like(keys, dtype=torch.bool).scatter_(1, keys.argsort(1)[:, :k], True)
    out = x.clone()
    for j, fn in enumerate(AUGMENTATIONS.values()):
        sel = chosen[:, j]
        if sel.any():
            out[sel] = fn(out[sel], generator).clamp(0, 1)
    return out


# ----------------------------------------------------------------------------- the pseudo-anomaly maker
class PseudoAnomaly:
    """Batched DRAEM-style pseudo-anomalies: ``images, masks, labels = PseudoAnomaly(...)(images, generator)``.

    Parameters
    ----------
    image_size : the side of the (square) images it will receive.
    sources : a folder of textures (e.g. DTD; ``../shared/data/dtd10`` in this repo's workplace), a
        uint8 tensor ``[N, 3, S, S]``, or None for :func:`builtin_sources`.
    beta_range : opacity range; ADL [0.1, 1] (default), DRAEM (0, 0.8).
    threshold : Perlin threshold (0.5).
    n_augment : augmentations per source (3).
    resample_empty : draw the mask again for samples whose mask came out empty (up to 10 times),
        so every output is a real anomaly; otherwise they come back with label 0.
    device : where sources live and synthesis runs (default: the images' device at the first call).
    """

    def __init__(self, image_size: int, sources=None, beta_range=(0.1, 1.0), threshold: float = 0.5,
                 n_augment: int = 3, resample_empty: bool = True, max_sources: int | None = 512, device=None):
        self.image_size, self.beta_range, self.threshold = image_size, beta_range, threshold
        self.n_augment, self.resample_empty = n_augment, resample_empty
        if sources is None:
            self.sources = builtin_sources(image_size)
            self.source_kind = "built-in (scikit-learn photos + procedural textures)"
        elif isinstance(sources, torch.Tensor):
            if sources.dtype != torch.uint8 or sources.ndim != 4 or sources.shape[1] != 3:
                raise ValueError(f"sources tensor must be uint8 [N, 3, H, W]; got {sources.dtype} {tuple(sources.shape)}")
            self.sources = sources
            self.source_kind = f"tensor of {len(sources)} images"
        else:
            self.sources = load_texture_sources(sources, image_size, max_images=max_sources)
            self.source_kind = f"folder {sources} ({len(self.sources)} images)"
        if self.sources.shape[-2:] != (image_size, image_size):
            self.sources = F.interpolate(self.sources.float(), size=(image_size, image_size), mode="bilinear",
                                         antialias=True, align_corners=False).round().clamp(0, 255).to(torch.uint8)
        if device is not None:
            self.sources = self.sources.to(device)
        self.last_empty_fraction = 0.0

    CPU_CHUNK_BYTES = 8 * 2**20

    def __repr__(self) -> str:
        return (f"PseudoAnomaly(image_size={self.image_size}, sources={self.source_kind}, beta_range={self.beta_range}, "
                f"threshold={self.threshold}, n_augment={self.n_augment})")

    def masks(self, batch: int, generator=None, device=None) -> torch.Tensor:
        """Perlin masks [B, 1, S, S]; empty ones drawn again when ``resample_empty``."""
        s = self.image_size
        out = perlin_masks(batch, s, s, threshold=self.threshold, generator=generator, device=device)
        masks, empty = out.masks, out.empty
        self.last_empty_fraction = out.empty_fraction
        for _ in range(10):
            if not (self.resample_empty and empty.any()):
                break
            idx = empty.nonzero()[:, 0]
            redo = perlin_masks(len(idx), s, s, threshold=self.threshold, generator=generator, device=device)
            masks[idx] = redo.masks
            empty = masks.flatten(1).amax(1) == 0
        return masks

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None):
        """``images`` float [B, 3, S, S] in [0, 1] -> (anomalous images, masks [B,1,S,S], labels [B])."""
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"expected images [B, 3, {self.image_size}, {self.image_size}]; got {tuple(images.shape)}")
        if self.sources.device != images.device:
            self.sources = self.sources.to(images.device)
        chunk = self._chunk_size(images)
        out = torch.empty_like(images)
        masks = torch.empty_like(images[:, :1])
        empty = 0.0
        for start in range(0, len(images), chunk):
            part = slice(start, start + chunk)
            masks[part] = self._synthesize(images[part], generator, out=out[part])
            empty += self.last_empty_fraction * len(images[part])
        self.last_empty_fraction = empty / len(images)  # before redrawing, over the whole batch
        labels = (masks.flatten(1).amax(1) > 0).long()
        return out, masks, labels

    def _chunk_size(self, images: torch.Tensor) -> int:
        """Samples per pass: the whole batch on a GPU; on a CPU, about ``CPU_CHUNK_BYTES`` of float image.

        On a CPU a batch of full-size float temporaries (50 MB each at 64 x 256 px) is memory-bound, and
        allocations that large are fresh pages every time (glibc maps anything over 32 MB anew), so
        small chunks that stay in cache and reuse freed memory are ~1.5-3x faster (benchmarks/bench_perlin.py).
        """
        if images.device.type != "cpu":
            return len(images)
        per_sample = images[:1].numel() * images.element_size()
        return max(1, self.CPU_CHUNK_BYTES // per_sample)

    def _synthesize(self, images: torch.Tensor, generator, out: torch.Tensor) -> torch.Tensor:
        """Blend pseudo-anomalies into ``images``, writing them to ``out``; return the masks."""
        device, b = images.device, images.shape[0]
        pick = _randint(0, len(self.sources), (b,), generator, device)
        src = augment_sources(self.sources[pick].to(images.dtype) / 255, self.n_augment, generator)
        masks = self.masks(b, generator, device).to(images.dtype)
        beta = sample_beta(b, self.beta_range, generator, device).to(images.dtype)
        blend(images, masks, src, beta, out=out)
        return masks


# ----------------------------------------------------------------------------- elastic warps (CKAAD)
def elastic_anomalies(images: torch.Tensor, alpha: float = 200.0, sigma: float = 5.0,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Elastically warped copies of ``images`` [B, C, H, W]: CKAAD's pseudo-anomalies for industrial data.

    The displacement is torchvision's ``ElasticTransform`` formula (uniform noise in [-1, 1],
    Gaussian-smoothed with ``sigma``, scaled by ``alpha / size``), drawn per sample from
    ``generator`` and applied with ``torchvision.transforms.v2.functional.elastic`` semantics
    (bilinear, zero fill) in one batched ``grid_sample``.
    """
    b, _, h, w = images.shape
    dx = _rand((b, 1, h, w), generator, images.device, images.dtype) * 2 - 1
    dy = _rand((b, 1, h, w), generator, images.device, images.dtype) * 2 - 1
    if sigma > 0:
        ks = int(8 * sigma + 1)
        ks += 1 - ks % 2
        dx = TF.gaussian_blur(dx, [ks, ks], [sigma, sigma])
        dy = TF.gaussian_blur(dy, [ks, ks], [sigma, sigma])
    displacement = torch.cat([dx * alpha / w, dy * alpha / h], 1).permute(0, 2, 3, 1)  # [B, H, W, 2]
    # identity grid in [-1, 1] (pixel centres), as torchvision's elastic kernel builds it
    ys = (torch.arange(h, device=images.device, dtype=images.dtype) + 0.5) * 2 / h - 1
    xs = (torch.arange(w, device=images.device, dtype=images.dtype) + 0.5) * 2 / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx, gy], -1)[None] + displacement
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
