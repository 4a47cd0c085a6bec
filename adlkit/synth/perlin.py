"""Perlin gradient noise, thresholded masks and the pseudo-anomaly blend of DRAEM - batched.

DRAEM (V. Zavrtanik, M. Kristan, D. Skočaj, *DRAEM - A Discriminatively Trained Reconstruction
Embedding for Surface Anomaly Detection*, ICCV 2021, §3.3) makes a simulated anomaly by
thresholding Perlin noise into a mask M and blending a texture I_s into the normal image I inside it:

    I_p = (1 - M) ⊙ I + β (M ⊙ I_s) + (1 - β)(M ⊙ I)         (ADL eq. 1; Das, Pang & Bhuyan, 2024)

Perlin noise (Perlin 1985/2002) on a lattice of ``res = (ry, rx)`` cells: every lattice corner
gets a random unit gradient g = (cos θ, sin θ); a pixel at fractional position (ty, tx) inside
its cell takes the dot product of each corner's gradient with the offset from that corner,
and the four products are interpolated with the fade curve f(t) = 6t⁵ − 15t⁴ + 10t³:

    n = √2 · lerp(lerp(n00, n10, f(ty)), lerp(n01, n11, f(ty)), f(tx))

Upstream code makes one map at a time in NumPy, only for sizes divisible by the lattice. Here
every sample of a batch has its own lattice ``(2^a, 2^b)``, any height and width work, and the
whole batch is one set of tensor operations on any device, driven by an explicit generator.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = ["fade", "interpolate_corners", "perlin_noise", "perlin_masks", "rotate", "blend", "sample_beta", "PerlinMasks"]

MAX_LOG2_RES = 5  # DRAEM: lattice resolutions 2^0 .. 2^5 per axis


def fade(t: torch.Tensor) -> torch.Tensor:
    """Perlin's quintic fade 6t⁵ − 15t⁴ + 10t³: f(0)=0, f(1)=1, f' and f'' vanish at both ends.

    Derived in notebook 01, §2 (the fade curve)."""
    return t * t * t * (t * (t * 6 - 15) + 10)


def interpolate_corners(n00, n10, n01, n11, ty, tx):
    """The last step of Perlin noise: fade the fractional position, interpolate the four corner values.

    ``n_ab`` is the dot product at corner (y + a, x + b); ``ty``, ``tx`` in [0, 1) are the pixel's
    position inside its cell. Returns √2 · lerp(lerp(n00, n10, f(ty)), lerp(n01, n11, f(ty)), f(tx)).
    (√2 scales the range of 2-D Perlin noise, ±√½, to ±1.)

    Derived in notebook 01, §1 (from random values to gradient noise).
    """
    fy, fx = fade(ty), fade(tx)
    return math.sqrt(2) * torch.lerp(torch.lerp(n00, n10, fy), torch.lerp(n01, n11, fy), fx)


def _rand(shape, generator, device, dtype=torch.float32):
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, device=gen_device, dtype=dtype).to(device)


def _randint(low, high, shape, generator, device):
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.randint(low, high, shape, generator=generator, device=gen_device).to(device)


def _device(device, generator) -> torch.device:
    """The device asked for, else the generator's, else the CPU."""
    if device is not None:
        return torch.device(device)
    return generator.device if generator is not None else torch.device("cpu")


def _as_res(res, batch: int, generator, device) -> torch.Tensor:
    """[B, 2] integer lattice resolutions (ry, rx)."""
    if res is None:  # DRAEM: 2^a, 2^b with a, b uniform in {0, ..., 5}, per sample
        return 2 ** _randint(0, MAX_LOG2_RES + 1, (batch, 2), generator, device)
    r = torch.as_tensor(res, device=device, dtype=torch.long)
    if r.ndim == 0:
        r = r.repeat(2)
    if r.ndim == 1:
        r = r.expand(batch, 2)
    if r.shape != (batch, 2) or (r < 1).any():
        raise ValueError(f"res must be an int, a pair (ry, rx) or a [B, 2] tensor of positive ints; got {res!r}")
    return r


def _gradient_noise(batch, height, width, res: torch.Tensor, generator, device, dtype,
                    degrees: torch.Tensor | None = None) -> torch.Tensor:
    """One octave of Perlin noise, [B, H, W], each sample on its own lattice res[b].

    With ``degrees`` [B], the noise field is rotated about the image centre: each output pixel
    evaluates the noise at the point the rotation brings there, and pixels whose source lies outside
    the image are 0 (imgaug's ``cval=0``). That is DRAEM's "rotate the noise image", computed exactly
    instead of resampling a rasterised map.
    """
    r = int(res.max())  # cells per axis of the largest lattice in the batch; smaller ones use a corner of it
    theta = 2 * math.pi * _rand((batch, r + 1, r + 1), generator, device, dtype)  # angles at the corners
    gy, gx = torch.cos(theta), torch.sin(theta)  # gradient components (DRAEM: (cos θ, sin θ) along (y, x))
    # Per cell (i, j), the gradients at its corners (i, j), (i+1, j), (i, j+1), (i+1, j+1): y parts then
    # x parts, [B, 8, r*r]. A pixel then needs one lookup by its cell for all eight numbers.
    shifts = ((0, 0), (1, 0), (0, 1), (1, 1))
    table = torch.stack([g[:, a:a + r, b:b + r] for g in (gy, gx) for a, b in shifts], 1).reshape(batch, 8, r * r)

    # Where each output pixel reads the noise, in pixels: itself, or with a rotation about the image
    # centre (cy, cx) the point R(-angle)(pixel - centre) + centre. Rotated: [B,H,W]; else [1,H,1], [1,1,W].
    y = torch.arange(height, device=device, dtype=dtype).view(1, -1, 1)
    x = torch.arange(width, device=device, dtype=dtype).view(1, 1, -1)
    inside = None
    if degrees is not None:
        rad = degrees.to(device=device, dtype=dtype).view(-1, 1, 1) * (math.pi / 180)
        cos, sin = torch.cos(rad), torch.sin(rad)
        cy, cx = (height - 1) / 2, (width - 1) / 2
        sy = (cy + cos * (y - cy)) + sin * (x - cx)  # one full-size add per axis
        sx = (cx - sin * (y - cy)) + cos * (x - cx)
        # points that left the image read 0; a thousandth of a pixel of slack for float error at the edges
        y, x = sy.clamp(0, height - 1), sx.clamp(0, width - 1)
        inside = (sy - y).abs_().add_((sx - x).abs_()) <= 1e-3
    # Lattice coordinates p = pixel * res / size (no divisibility needed): cell index and position in it.
    ry, rx = res[:, 0].to(dtype).view(-1, 1, 1), res[:, 1].to(dtype).view(-1, 1, 1)
    py, px = y * (ry / height), x * (rx / width)
    fy, fx = py.floor(), px.floor()
    ty, tx = py - fy, px - fx  # position inside the cell, [0, 1)
    cell = torch.add(fx, fy, alpha=r).long()  # fy * r + fx
    cell = cell.expand(batch, height, width).reshape(batch, 1, -1)
    g = table.gather(2, cell.expand(batch, 8, cell.shape[-1])).view(batch, 8, height, width)

    # dot(gradient at corner (a, b), offset from it) = gy (ty - a) + gx (tx - b), for the 4 corners at once
    dots = torch.addcmul(g[:, :4] * ty[:, None], g[:, 4:], tx[:, None])  # [B, 4, H, W]: 00, 10, 01, 11
    dots[:, 1] -= g[:, 1]  # corner (1, 0): ty - 1
    dots[:, 2] -= g[:, 6]  # corner (0, 1): tx - 1
    dots[:, 3] -= g[:, 3] + g[:, 7]  # corner (1, 1)
    noise = interpolate_corners(dots[:, 0], dots[:, 1], dots[:, 2], dots[:, 3], ty, tx)
    return noise if inside is None else noise * inside


def perlin_noise(batch: int, height: int, width: int, *, res=None, octaves: int = 1, persistence: float = 0.5,
                 degrees: torch.Tensor | None = None, generator: torch.Generator | None = None, device=None,
                 dtype=torch.float32, return_res: bool = False):
    """Batched Perlin noise ``[B, H, W]`` (values roughly in [-1, 1]).

    ``res``: None draws a lattice (2^a, 2^b), a, b ∈ {0..5}, per sample (DRAEM); or an int, a pair,
    or a [B, 2] tensor. ``octaves > 1`` adds octaves k = 1.. at lattice res·2^k with amplitude
    ``persistence^k`` (fractal noise, DRAEM's ``rand_perlin_2d_octaves``). ``degrees`` [B] rotates
    each sample's noise about the image centre (0 outside, as DRAEM's rotation). With ``return_res``
    the base lattice per sample is returned too.

    Derived in notebook 01, §3 (octaves and lattice resolution).
    """
    if batch < 1 or height < 1 or width < 1:
        raise ValueError(f"batch, height and width must be positive; got {batch}, {height}, {width}")
    if octaves < 1:
        raise ValueError(f"octaves must be at least 1; got {octaves}")
    device = _device(device, generator)
    res = _as_res(res, batch, generator, device)
    noise = _gradient_noise(batch, height, width, res, generator, device, dtype, degrees)
    for k in range(1, octaves):
        layer = _gradient_noise(batch, height, width, res * 2**k, generator, device, dtype, degrees)
        noise.add_(layer, alpha=persistence**k)
    return (noise, res) if return_res else noise


def rotate(x: torch.Tensor, degrees: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Rotate each map of ``x`` [B, C, H, W] by its own angle about the centre; outside is 0 (imgaug's cval)."""
    rad = degrees.to(x.dtype) * (math.pi / 180)
    cos, sin = torch.cos(rad), torch.sin(rad)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1)  # [B,2,3]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


class PerlinMasks(NamedTuple):
    masks: torch.Tensor  # [B, 1, H, W], 0/1
    noise: torch.Tensor  # [B, H, W], the (rotated) noise that was thresholded
    res: torch.Tensor  # [B, 2], lattice resolution per sample
    empty: torch.Tensor  # [B] bool, masks that came out empty

    @property
    def empty_fraction(self) -> float:
        return float(self.empty.float().mean())


def perlin_masks(batch: int, height: int, width: int, *, threshold: float = 0.5, res=None, rotate_degrees=90.0,
                 octaves: int = 1, generator: torch.Generator | None = None, device=None) -> PerlinMasks:
    """Binary Perlin masks as in DRAEM: noise → rotate by U(−90°, 90°) → ``noise > threshold``.

    Returns a :class:`PerlinMasks` with ``masks`` [B, 1, H, W] (float 0/1), the noise, the lattice
    per sample and which masks came out empty (``.empty_fraction`` reports how often).
    ``rotate_degrees=0`` switches rotation off.

    Derived in notebook 01, §4 (from noise to masks).
    """
    device = _device(device, generator)
    res = _as_res(res, batch, generator, device)
    angles = (2 * _rand((batch,), generator, device) - 1) * rotate_degrees if rotate_degrees else None
    noise = perlin_noise(batch, height, width, res=res, octaves=octaves, degrees=angles, generator=generator,
                         device=device)
    masks = (noise > threshold).to(noise.dtype)[:, None]
    empty = masks.flatten(1).amax(1) == 0
    return PerlinMasks(masks, noise, res, empty)


def sample_beta(batch: int, beta_range=(0.1, 1.0), generator=None, device=None) -> torch.Tensor:
    """Opacity β per sample, uniform in ``beta_range``: ADL's [0.1, 1]; DRAEM's code weights the *image* by 0.8·U(0,1)
    inside the mask, so its texture opacity here is 1 − 0.8·U(0,1), the range (0.2, 1] (notebook 01, section 5)."""
    lo, hi = beta_range
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"beta_range must satisfy 0 <= low <= high <= 1; got {beta_range}")
    return lo + (hi - lo) * _rand((batch,), generator, device if device is not None else "cpu")


def blend(images: torch.Tensor, masks: torch.Tensor, sources: torch.Tensor, beta,
          out: torch.Tensor | None = None) -> torch.Tensor:
    """I_p = (1 − M) ⊙ I + β (M ⊙ I_s) + (1 − β)(M ⊙ I)  (ADL eq. 1 / DRAEM eq. 1).

    ``images``, ``sources`` [B, C, H, W]; ``masks`` [B, 1, H, W] (or [B, H, W]); ``beta`` a float or a
    [B] tensor. Inside the mask the result is β·source + (1 − β)·image; outside it is the image.
    ``out`` (optional) receives the result.

    Derived in notebook 01, §5 (the blend, eq. 1).
    """
    if masks.ndim == 3:
        masks = masks[:, None]
    if images.shape != sources.shape or masks.shape[0] != images.shape[0] or masks.shape[-2:] != images.shape[-2:]:
        raise ValueError(f"blend needs images and sources of one shape and a mask per image: images "
                         f"{tuple(images.shape)}, sources {tuple(sources.shape)}, masks {tuple(masks.shape)}")
    beta = torch.as_tensor(beta, dtype=images.dtype, device=images.device)
    if beta.ndim == 1:
        beta = beta.view(-1, 1, 1, 1)
    # Expanding the equation: I - M I + β M I_s + M I - β M I = I + β M (I_s - I). One fused
    # multiply-add instead of five full-size temporaries; equal up to float rounding (tests check).
    return torch.addcmul(images, masks * beta, sources - images, out=out)
