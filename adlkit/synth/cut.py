"""Rectangle pseudo-anomalies, batched: CutMix (a patch from another image) and CutPaste (from the same one).

CutPaste (C.-L. Li, K. Sohn, J. Yoon, T. Pfister, *CutPaste: Self-Supervised Learning for Anomaly
Detection and Localization*, CVPR 2021, §3.1): cut a rectangle from a random place of a normal
image, jitter its colours a little and paste it back at another random place. The seam and the
out-of-place content make a small, local "defect" that is still made of the object's own texture.

CutMix (S. Yun, D. Han, S. J. Oh, S. Chun, J. Choe, Y. Yoo, *CutMix: Regularization Strategy to
Train Strong Classifiers with Localizable Features*, ICCV 2019): a rectangle of an image is replaced
by the *same* rectangle of another image of the batch. Used here as a pseudo-anomaly: foreign
content in a normal image.

Both draw, per sample, a rectangle area (a fraction of the image, uniform in ``area``) and an aspect
ratio width/height (log-uniform in ``aspect``, as the official CutPaste code, so 1/3 and 3 are equally
likely): h = round(sqrt(area·H·W / aspect)), w = round(sqrt(area·H·W · aspect)).

Upstream code cuts and pastes one PIL image at a time. Here a whole batch is one set of tensor
operations: every output pixel computes *where it reads from* (its own position, or for a pixel in
the pasted rectangle the matching position of the source rectangle) and one ``gather`` fetches it.
"""

from __future__ import annotations

import math

import torch

from .perlin import _device, _rand, _randint
from .pseudo import _hue_saturation

__all__ = ["cutmix", "cutpaste", "derangement", "rectangles"]


def _check(images: torch.Tensor, area, aspect, name: str) -> None:
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"{name} expects float images [B, C, H, W] in [0, 1]; got {images.dtype} "
                         f"{tuple(images.shape)}. Convert with images.float() / 255.")
    lo, hi = area
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"area must be (lo, hi) fractions of the image with 0 < lo <= hi <= 1; got {area}")
    lo, hi = aspect
    if not 0 < lo <= hi:
        raise ValueError(f"aspect must be (lo, hi) width/height ratios with 0 < lo <= hi, e.g. (0.3, 3.3); "
                         f"got {aspect}")


def rectangles(batch: int, height: int, width: int, generator: torch.Generator | None = None,
               area: tuple[float, float] = (0.02, 0.15), aspect: tuple[float, float] = (0.3, 3.3),
               device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample a rectangle size: (h, w), two long tensors [B].

    area fraction ~ U(area), aspect = w / h log-uniform in ``aspect``; h and w are rounded and kept
    in [1, height] and [1, width] (so a very elongated rectangle may be cut off by the image border).
    """
    device = _device(device, generator)
    u = _rand((batch, 2), generator, device)
    frac = area[0] + (area[1] - area[0]) * u[:, 0]
    ratio = torch.exp(math.log(aspect[0]) + (math.log(aspect[1]) - math.log(aspect[0])) * u[:, 1])
    pixels = frac * height * width
    h = torch.sqrt(pixels / ratio).round().long().clamp(1, height)
    w = torch.sqrt(pixels * ratio).round().long().clamp(1, width)
    return h, w


def _corner(size: torch.Tensor, full: int, generator, device) -> torch.Tensor:
    """A top (or left) coordinate per sample, uniform in [0, full - size] so the rectangle fits."""
    return (_rand(size.shape, generator, device) * (full - size + 1)).floor().long().clamp(min=0)


def _inside(top, left, h, w, height, width, device) -> torch.Tensor:
    """Bool masks [B, 1, H, W]: True in the rectangle [top, top + h) x [left, left + w) of each sample."""
    ys = torch.arange(height, device=device).view(1, -1, 1)
    xs = torch.arange(width, device=device).view(1, 1, -1)
    t, lft, h, w = (v.view(-1, 1, 1) for v in (top, left, h, w))
    return ((ys >= t) & (ys < t + h) & (xs >= lft) & (xs < lft + w)).unsqueeze(1)


def derangement(n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """A random permutation of ``range(n)`` with no fixed point (n >= 2; for n = 1: ``[0]``).

    A random order p of the batch, and each sample takes the one k places further along it (k drawn
    in 1..n-1): perm[p[i]] = p[(i + k) mod n]. Not every derangement is equally likely (the result is
    one cycle of k-steps), but no image ever mixes with itself and the seed decides everything.
    """
    device = _device(device, generator)
    if n < 2:
        return torch.zeros(n, dtype=torch.long, device=device)
    keys = _rand((n,), generator, device)
    p = keys.argsort()  # a random order (randperm has no generator on every device; argsort of uniforms does)
    k = int(_randint(1, n, (1,), generator, device))
    perm = torch.empty_like(p)
    perm[p] = p.roll(-k)
    return perm


def cutmix(images: torch.Tensor, generator: torch.Generator | None = None, area: tuple[float, float] = (0.02, 0.15),
           aspect: tuple[float, float] = (0.3, 3.3)) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix pseudo-anomalies: ``out, masks = cutmix(images, generator)``.

    ``images`` float [B, C, H, W] in [0, 1]. For each image a random rectangle (see :func:`rectangles`)
    is replaced by the same rectangle of another image of the batch, ``images[derangement(B)]``.
    ``masks`` float [B, 1, H, W], 1 on the replaced rectangle. A batch of one image has no other
    image to mix with: it is returned unchanged with an empty mask. Everything random comes from
    ``generator`` (same seed, same output); tensors stay on the images' device.
    """
    _check(images, area, aspect, "cutmix")
    b, _, height, width = images.shape
    device = images.device
    if b < 2:
        return images.clone(), torch.zeros_like(images[:, :1])
    perm = derangement(b, generator, device)
    h, w = rectangles(b, height, width, generator, area, aspect, device)
    top, left = _corner(h, height, generator, device), _corner(w, width, generator, device)
    inside = _inside(top, left, h, w, height, width, device)
    return torch.where(inside, images[perm], images), inside.to(images.dtype)


def _jitter(x: torch.Tensor, inside: torch.Tensor, strength: float, generator) -> torch.Tensor:
    """Colour jitter of the pasted patch, per sample (as torchvision's ``ColorJitter(s, s, s, s)``).

    Brightness, contrast and saturation factors uniform in [1 - s, 1 + s], hue shifted by up to
    ± s of a full turn (± 36° for s = 0.1, CutPaste's value). Contrast pulls towards the mean grey of
    the patch (``inside``), hue and saturation are one linear colour map (see ``_hue_saturation``).
    """
    b = x.shape[0]
    u = _rand((b, 4), generator, x.device, x.dtype) * 2 - 1  # in [-1, 1)
    bright, contrast, sat = (1 + strength * u[:, j].view(-1, 1, 1, 1) for j in range(3))
    x = (x * bright).clamp(0, 1)
    grey = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    mean = (grey * inside).sum((2, 3), keepdim=True) / inside.sum((2, 3), keepdim=True).clamp(min=1)
    x = (mean + contrast * (x - mean)).clamp(0, 1)
    return _hue_saturation(x, 360 * strength * u[:, 3], sat.view(-1)).clamp(0, 1)


def cutpaste(images: torch.Tensor, generator: torch.Generator | None = None, area: tuple[float, float] = (0.02, 0.15),
             aspect: tuple[float, float] = (0.3, 3.3), jitter: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """CutPaste pseudo-anomalies: ``out, masks = cutpaste(images, generator)``.

    ``images`` float [B, C, H, W] in [0, 1]. For each image a random rectangle (see :func:`rectangles`)
    is cut at a random place of the image, colour-jittered by ``jitter`` (CutPaste's 0.1; 0 = an exact
    copy; needs C = 3) and pasted at another random place of the *same* image. ``masks`` float
    [B, 1, H, W], 1 on the pasted rectangle. The two places are drawn independently (as in CutPaste),
    so they may overlap. Everything random comes from ``generator``; tensors stay on the images' device.

    How it is batched: a pixel (y, x) inside the pasted rectangle at (top, left) reads the source
    pixel (y - top + src_top, x - left + src_left); every other pixel reads itself. Those read
    positions, as flat indices y·W + x, go to one ``gather`` over the whole batch.
    """
    _check(images, area, aspect, "cutpaste")
    if jitter and images.shape[1] != 3:
        raise ValueError(f"cutpaste's colour jitter needs RGB images [B, 3, H, W]; got {images.shape[1]} channels. "
                         "Pass jitter=0 for other images.")
    if not 0 <= jitter < 1:
        raise ValueError(f"jitter must be in [0, 1) (CutPaste uses 0.1); got {jitter}")
    b, c, height, width = images.shape
    device = images.device
    h, w = rectangles(b, height, width, generator, area, aspect, device)
    src_top, src_left = _corner(h, height, generator, device), _corner(w, width, generator, device)
    top, left = _corner(h, height, generator, device), _corner(w, width, generator, device)
    inside = _inside(top, left, h, w, height, width, device)  # [B, 1, H, W], where the patch lands
    ys = torch.arange(height, device=device).view(1, 1, -1, 1)
    xs = torch.arange(width, device=device).view(1, 1, 1, -1)
    read_y = torch.where(inside, ys - top.view(-1, 1, 1, 1) + src_top.view(-1, 1, 1, 1), ys)
    read_x = torch.where(inside, xs - left.view(-1, 1, 1, 1) + src_left.view(-1, 1, 1, 1), xs)
    index = (read_y * width + read_x).flatten(1)  # [B, H*W], in range everywhere: the source rectangle fits
    moved = images.flatten(2).gather(2, index.unsqueeze(1).expand(b, c, -1)).view_as(images)
    if jitter:
        moved = _jitter(moved, inside, jitter, generator)
    return torch.where(inside, moved, images), inside.to(images.dtype)
