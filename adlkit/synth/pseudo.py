"""Anomaly sources, their augmentation, the batched :class:`PseudoAnomaly` and elastic warps.

DRAEM's recipe per pseudo-anomaly (Zavrtanik, Kristan & Skočaj, ICCV 2021): pick a texture (DTD:
Cimpoi et al., *Describing Textures in the Wild*, CVPR 2014), apply 3 of its colour/geometry
augmentations chosen at random, threshold a Perlin map into a mask, blend with opacity β.
Upstream does this per sample in data-loader workers with imgaug (which no longer imports with
current NumPy). Here it is one batched call on the device of the images: every sample still gets
its own texture, its own 3 augmentations with their own parameters, its own mask and β.

Why not ``torchvision.transforms.v2`` transforms objects? Called on a batch, a v2 transform draws
*one* set of random parameters for the whole batch, so 64 pseudo-anomalies would share one
augmentation. The operations below follow torchvision's / PIL's definitions (auto-contrast and
equalisation exactly so; tests compare) but draw their parameters per sample.
"""

from __future__ import annotations

import functools
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import config
from ..maps import gaussian_smooth
from .perlin import _rand, _randint, blend, perlin_masks, rotate, sample_beta

__all__ = ["load_texture_sources", "builtin_sources", "histograms", "augment_sources", "PseudoAnomaly", "elastic_anomalies",
           "AUGMENTATIONS", "PER_VALUE"]

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


_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64)
_FROM_YIQ = torch.linalg.inv(_TO_YIQ)


@functools.lru_cache(maxsize=None)
def _yiq(device, dtype):
    """The RGB -> YIQ matrix and its inverse on ``device`` (made once per device and dtype)."""
    return _TO_YIQ.to(device, dtype), _FROM_YIQ.to(device, dtype)


def _hue_saturation(x, hue_deg, sat):
    """Rotate hue in YIQ space by ``hue_deg`` and scale saturation by ``sat``, per sample.

    Hue is the angle of the (I, Q) chroma vector and saturation its length, so the whole operation
    is one linear colour map per sample: RGB -> YIQ, rotate and scale (I, Q), back to RGB.
    """
    a = hue_deg.to(x.dtype) * (math.pi / 180)
    c, s, k = sat * torch.cos(a), sat * torch.sin(a), torch.ones_like(a)
    z = torch.zeros_like(a)
    chroma = torch.stack([torch.stack([k, z, z], -1), torch.stack([z, c, -s], -1), torch.stack([z, s, c], -1)], 1)
    to_yiq, from_yiq = _yiq(x.device, x.dtype)
    matrix = from_yiq @ chroma @ to_yiq  # [n, 3, 3]
    return (matrix @ x.flatten(2)).view_as(x)


def _span(u, lo, hi):
    """Uniforms ``u`` [n] in [0, 1) mapped to [lo, hi), shaped [n, 1, 1, 1] to scale images."""
    return (lo + (hi - lo) * u).view(-1, 1, 1, 1)


def _autocontrast(x, present=None):
    """Per channel, stretch [min, max] to [0, 1] (torchvision's ``autocontrast``; a flat channel is kept).

    ``present`` [n, 3, L] (bool) is for a lookup table: then ``x`` [n, 3, 1, L] holds the value of each
    source level and the minimum and maximum are taken over the levels that occur in the image.
    """
    if present is None:
        lo, hi = x.amin((-2, -1), keepdim=True), x.amax((-2, -1), keepdim=True)
    else:
        lo = torch.where(present, x[:, :, 0], math.inf).amin(-1)[..., None, None]
        hi = torch.where(present, x[:, :, 0], -math.inf).amax(-1)[..., None, None]
    flat = hi == lo
    return torch.where(flat, x, (x - lo) / torch.where(flat, 1.0, hi - lo)).clamp(0, 1)


def _equalize_lut(hist: torch.Tensor) -> torch.Tensor:
    """PIL's histogram-equalisation lookup table from 256-bin histograms ``hist`` [..., 256] (int).

    The same scheme as PIL and torchvision's ``equalize``: step = (pixels not at the top level) // 255,
    lut[k] = (cumhist[k-1] + step // 2) // step; a channel with step 0 is left as it is (lut = identity).
    """
    cum = hist.cumsum(-1)
    top = hist.gather(-1, cum.argmax(-1, keepdim=True))  # pixels at the highest level that occurs
    step = (cum[..., -1:] - top).div(255, rounding_mode="floor")
    lut = (cum[..., :-1] + step // 2).div(step.clamp(min=1), rounding_mode="floor").clamp(0, 255)
    lut = torch.cat([torch.zeros_like(lut[..., :1]), lut], -1)
    return torch.where(step == 0, torch.arange(256, device=hist.device), lut)


def _equalize(x, hist=None):
    """Histogram equalisation of the image quantised to 8 bits (torchvision's / PIL's ``equalize``).

    ``hist`` [n, 3, L] is for a lookup table: the count of each source level, ``x`` [n, 3, 1, L] its value.
    """
    q = (x.clamp(0, 1) * 255).round().long()
    if hist is None:
        hist = torch.zeros(*x.shape[:2], 256, dtype=torch.long, device=x.device)
        hist.scatter_add_(-1, q.flatten(2), hist.new_ones(1).expand_as(q.flatten(2)))
    else:  # the image's histogram after the lookup table so far: each source level's count moves to its value
        hist = torch.zeros_like(hist).scatter_add_(-1, q[:, :, 0], hist)
    return _equalize_lut(hist).gather(-1, q.flatten(2)).view_as(x).to(x.dtype) / 255


# name -> function of (x float [n, 3, H, W] in [0, 1], u [n, 2] uniform in [0, 1)) -> x: DRAEM's 10 imgaug
# augmenters, the parameters read from u. Those that map each channel value on its own come first (see below).
AUGMENTATIONS = {
    "gamma_contrast": lambda x, u: x.clamp_min(1e-6) ** _span(u[:, 0], 0.5, 2.0),
    "multiply_add_brightness": lambda x, u: x * _span(u[:, 0], 0.8, 1.2) + _span(u[:, 1], -30, 30) / 255,
    "solarize": lambda x, u: torch.where(x > _span(u[:, 0], 32, 128) / 255, 1 - x, x),
    "posterize": lambda x, u: torch.floor(x * (levels := 2.0 ** (4 + _span(u[:, 0], 0, 4).floor()))) / levels,  # 4-7 bits
    "invert": lambda x, u: 1 - x,
    "autocontrast": lambda x, u: _autocontrast(x),
    "equalize": lambda x, u: _equalize(x),
    "hue_saturation": lambda x, u: _hue_saturation(x, -50 + 100 * u[:, 0], 0.5 + u[:, 1]),
    "sharpness": lambda x, u: x + _span(u[:, 0], 0.0, 2.0) * (x - _blur3(x)),
    "rotate": lambda x, u: rotate(x, -45 + 90 * u[:, 0], mode="bilinear"),
}
# The first seven map each channel value on its own (given the image's statistics): a lookup table can do them.
PER_VALUE = tuple(AUGMENTATIONS)[:7]
assert PER_VALUE[-1] == "equalize" and "hue_saturation" not in PER_VALUE


def histograms(x: torch.Tensor) -> torch.Tensor:
    """Per-channel 256-bin histograms of uint8 images ``x`` [B, 3, H, W] -> [B, 3, 256] (int64)."""
    index = x.flatten(2).long()
    hist = torch.zeros(*x.shape[:2], 256, dtype=torch.long, device=x.device)
    return hist.scatter_add_(-1, index, hist.new_ones(1).expand_as(index))


def augment_sources(x: torch.Tensor, k: int = 3, generator: torch.Generator | None = None,
                    hist: torch.Tensor | None = None) -> torch.Tensor:
    """Apply ``k`` distinct random augmentations (of :data:`AUGMENTATIONS`) to each image of ``x``.

    Each sample gets its own choice and its own parameters; the chosen ones run in the order of
    :data:`AUGMENTATIONS` (DRAEM runs them in a random order), each followed by a clip to [0, 1].
    An operation runs once on the sub-batch that chose it. Returns float [B, 3, H, W] in [0, 1].

    ``x``: float [B, 3, H, W] in [0, 1], or uint8 [B, 3, H, W] (then it is read as x / 255). For
    uint8 images the :data:`PER_VALUE` operations are not run on the H·W pixels: a channel of a
    uint8 image takes only 256 values, so any chain of them is a 256-entry lookup table per sample
    and channel, built by running the same functions on the 256 values (with the image's histogram
    for auto-contrast and equalisation) and applied with one gather. Same result, a fraction of
    the memory traffic (tests check both paths agree). ``hist``: the images' :func:`histograms`, when
    known already (:class:`PseudoAnomaly` computes them once per source).
    """
    n_ops = len(AUGMENTATIONS)
    # k distinct ops per sample: the k smallest of n_ops random keys; and every op's parameters, per sample
    keys = _rand((x.shape[0], n_ops), generator, x.device)
    chosen = torch.zeros_like(keys, dtype=torch.bool).scatter_(1, keys.argsort(1)[:, :k], True)
    params = _rand((x.shape[0], n_ops, 2), generator, x.device)
    names = list(AUGMENTATIONS)
    if x.dtype == torch.uint8:
        b, c = x.shape[:2]
        hist = histograms(x) if hist is None else hist
        if hist.shape != (b, c, 256):
            raise ValueError(f"hist must be the images' histograms, [{b}, {c}, 256]; got {tuple(hist.shape)}")
        levels = torch.arange(256, device=x.device, dtype=torch.float32) / 255
        lut = levels.expand(b, c, 1, 256)  # [B, 3, 1, 256]: the value each source level has become
        for j, name in enumerate(PER_VALUE):  # on 256 values per channel: run for all, keep where chosen
            if name == "autocontrast":
                new = _autocontrast(lut, present=hist > 0)
            elif name == "equalize":
                new = _equalize(lut, hist=hist)
            else:
                new = AUGMENTATIONS[name](lut, params[:, j]).clamp(0, 1)
            lut = torch.where(chosen[:, j].view(-1, 1, 1, 1), new, lut)
        out = lut[:, :, 0].gather(-1, x.flatten(2).long()).view(x.shape)
        first = len(PER_VALUE)
    else:
        out, first = x.clone(), 0
    for j in range(first, n_ops):  # on the pixels: only the sub-batch that chose the op
        sel = chosen[:, j]
        if sel.any():
            out[sel] = AUGMENTATIONS[names[j]](out[sel], params[sel, j]).clamp(0, 1)
    return out


# ----------------------------------------------------------------------------- the pseudo-anomaly maker
class PseudoAnomaly:
    """Batched DRAEM-style pseudo-anomalies: ``images, masks, labels = PseudoAnomaly(...)(images, generator)``.

    Parameters
    ----------
    image_size : the side of the (square) images it will receive.
    sources : a folder of texture images (e.g. DTD's ``images/``), a uint8 tensor ``[N, 3, S, S]``,
        or None: the folder named by ``ADLKIT_TEXTURES`` when that is set
        (:func:`adlkit.config.textures_dir`), else :func:`builtin_sources`. ``source_kind`` says
        which was used.
    beta_range : the texture's opacity range; ADL [0.1, 1] (default); DRAEM's code (0.2, 1] (it draws 0.8·U(0,1) as the
        image's weight inside the mask).
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
        from_env = False
        if sources is None:
            sources = config.textures_dir()  # the ADLKIT_TEXTURES folder, or None when it is not set
            from_env = sources is not None
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
            env = ", ADLKIT_TEXTURES" if from_env else ""
            self.source_kind = f"folder '{Path(sources).name}' ({len(self.sources)} images{env})"
        if self.sources.shape[-2:] != (image_size, image_size):
            self.sources = F.interpolate(self.sources.float(), size=(image_size, image_size), mode="bilinear",
                                         antialias=True, align_corners=False).round().clamp(0, 255).to(torch.uint8)
        if device is not None:
            self.sources = self.sources.to(device)
        self.source_histograms = histograms(self.sources)  # [N, 3, 256], for the lookup-table augmentations
        self.last_empty_fraction = 0.0

    CPU_CHUNK_PIXELS = 4 * 256 * 256  # pixels per chunk on a CPU: four 256-px images

    def __repr__(self) -> str:
        return (f"PseudoAnomaly(image_size={self.image_size}, sources={self.source_kind}, beta_range={self.beta_range}, "
                f"threshold={self.threshold}, n_augment={self.n_augment})")

    def masks(self, batch: int, generator=None, device=None) -> torch.Tensor:
        """Perlin masks [B, 1, S, S]; empty ones drawn again when ``resample_empty``."""
        masks, empty = self._masks(batch, generator, device)
        self.last_empty_fraction = empty / batch
        return masks

    def _masks(self, batch: int, generator, device) -> tuple[torch.Tensor, int]:
        """The masks and how many came out empty at the first draw."""
        s = self.image_size
        out = perlin_masks(batch, s, s, threshold=self.threshold, generator=generator, device=device)
        masks, empty = out.masks, out.empty
        n_empty = int(empty.sum())
        for _ in range(10):
            if not (self.resample_empty and empty.any()):
                break
            idx = empty.nonzero()[:, 0]
            redo = perlin_masks(len(idx), s, s, threshold=self.threshold, generator=generator, device=device)
            masks[idx] = redo.masks
            empty = masks.flatten(1).amax(1) == 0
        return masks, n_empty

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None):
        """``images`` float [B, 3, S, S] in [0, 1] -> (anomalous images, masks [B,1,S,S], labels [B])."""
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"expected images [B, 3, {self.image_size}, {self.image_size}]; got {tuple(images.shape)}")
        if self.sources.device != images.device:
            self.sources = self.sources.to(images.device)
            self.source_histograms = self.source_histograms.to(images.device)
        out = torch.empty_like(images)
        masks = torch.empty_like(images[:, :1])
        if images.device.type != "cpu" or len(images) <= self._cpu_chunk():
            empty = self._synthesize(images, generator, out, masks)
        else:
            empty = self._synthesize_cpu(images, generator, out, masks)
        self.last_empty_fraction = empty / len(images)  # before redrawing
        labels = (masks.flatten(1).amax(1) > 0).long()
        return out, masks, labels

    def _synthesize_cpu(self, images, generator, out, masks) -> int:
        """The CPU path: chunks of ``CPU_CHUNK_PIXELS``, spread over ``torch.get_num_threads()`` threads.

        Every step of the synthesis is a pass over full-size tensors, so on a CPU it is bound by
        memory traffic: a chunk of a few images keeps its temporaries in the core's cache, and is
        faster per sample than a batch of 64 (benchmarks/bench_perlin.py). The threads work on
        different chunks, each single-threaded, instead of splitting every small operation in two.
        Each chunk draws from its own generator, seeded in order from ``generator``: the result does
        not depend on the number of threads or on which thread ran a chunk.
        """
        chunk = self._cpu_chunk()
        parts = [slice(i, i + chunk) for i in range(0, len(images), chunk)]
        seeds = _randint(0, 2**62, (len(parts),), generator, "cpu").tolist()

        def work(k: int) -> int:
            part = parts[k]
            return self._synthesize(images[part], torch.Generator().manual_seed(seeds[k]), out[part], masks[part])

        threads = min(torch.get_num_threads(), len(parts))
        if threads == 1:
            return sum(map(work, range(len(parts))))
        # torch.set_num_threads in a worker applies to that thread only (OpenMP's per-thread setting)
        with ThreadPoolExecutor(threads, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            return sum(pool.map(work, range(len(parts))))

    def _cpu_chunk(self) -> int:
        return max(1, self.CPU_CHUNK_PIXELS // self.image_size**2)

    def _synthesize(self, images: torch.Tensor, generator, out: torch.Tensor, masks: torch.Tensor) -> int:
        """Blend pseudo-anomalies into ``images``, writing them to ``out`` and the masks to ``masks``.

        Returns how many masks came out empty at the first draw.
        """
        device, b = images.device, images.shape[0]
        pick = _randint(0, len(self.sources), (b,), generator, device)
        src = augment_sources(self.sources[pick], self.n_augment, generator, self.source_histograms[pick])
        src = src.to(images.dtype)
        m, empty = self._masks(b, generator, device)
        masks.copy_(m)
        beta = sample_beta(b, self.beta_range, generator, device).to(images.dtype)
        blend(images, masks, src, beta, out=out)
        return empty


# ----------------------------------------------------------------------------- elastic warps (CKAAD)
def elastic_anomalies(images: torch.Tensor, alpha: float = 200.0, sigma: float = 5.0,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Elastically warped copies of ``images`` [B, C, H, W]: CKAAD's pseudo-anomalies for industrial data.

    CKAAD: Q. Fang, Q. Su, W. Lv, W. Xu, J. Yu. Boosting Fine-Grained Visual Anomaly Detection with
    Coarse-Knowledge-Aware Adversarial Learning. arXiv:2412.12850, 2024 (AAAI 2025).

    The displacement is torchvision's ``ElasticTransform`` formula (uniform noise in [-1, 1],
    Gaussian-smoothed with ``sigma``, scaled by ``alpha / size``), drawn per sample from
    ``generator`` and applied with ``torchvision.transforms.v2.functional.elastic`` semantics
    (bilinear, zero fill) in one batched ``grid_sample``.
    """
    b, _, h, w = images.shape
    dx = _rand((b, 1, h, w), generator, images.device, images.dtype) * 2 - 1
    dy = _rand((b, 1, h, w), generator, images.device, images.dtype) * 2 - 1
    if sigma > 0:  # torchvision's kernel (size int(8 sigma + 1), made odd) with mirrored borders, as matrix products
        radius = int(8 * sigma + 1) // 2
        dx = gaussian_smooth(dx[:, 0], sigma, radius=radius)[:, None]
        dy = gaussian_smooth(dy[:, 0], sigma, radius=radius)[:, None]
    displacement = torch.cat([dx * alpha / w, dy * alpha / h], 1).permute(0, 2, 3, 1)  # [B, H, W, 2]
    # identity grid in [-1, 1] (pixel centres), as torchvision's elastic kernel builds it
    ys = (torch.arange(h, device=images.device, dtype=images.dtype) + 0.5) * 2 / h - 1
    xs = (torch.arange(w, device=images.device, dtype=images.dtype) + 0.5) * 2 / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx, gy], -1)[None] + displacement
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
