"""Anomaly maps and image scores: the bottom layer that every map-producing method shares.

Three operations, each a few tensor lines, used by kNN (PatchCore), multi-cue ADL, CADA, CKAAD and the
elastic warps of :mod:`adlkit.synth`:

* :func:`gaussian_smooth` - a Gaussian blur of a batch of maps [B, H, W] with mirrored borders (as
  ``scipy.ndimage.gaussian_filter(..., mode="mirror")``), as two batched matrix products (:func:`blur_matrix`);
* :func:`anomaly_map` - A = Gauss_sigma(sum_l up(1 - cos_ch(E_l, D_l))): the feature-reconstruction map of
  reverse distillation (H. Deng, X. Li, *Anomaly Detection via Reverse Distillation from One-Class Embedding*,
  CVPR 2022), CADA's A and CKAAD's eq. 14 (per level :func:`cosine_distance_maps`);
* :func:`image_score` - s_img, the mean of a map's top 1% pixels (CADA's image score).

This module imports torch only (nothing from adlkit), so anything in adlkit may use it.
:mod:`adlkit.models.rd` re-exports these names (``from adlkit.models.rd import gaussian_smooth`` keeps working).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["gaussian_smooth", "blur_matrix", "cosine_distance_maps", "anomaly_map", "image_score"]


def gaussian_smooth(maps: torch.Tensor, sigma: float, truncate: float = 4.0, radius: int | None = None) -> torch.Tensor:
    """Gaussian smoothing of a batch of maps [B, H, W] in one call, with mirrored borders (d c b | a b c d).

    Equal to ``scipy.ndimage.gaussian_filter(map, sigma, mode="mirror", truncate=truncate)`` applied to each
    map (kernel radius ``int(truncate * sigma + 0.5)``; torchvision's ``gaussian_blur`` for radii below the
    map's size). The blur is separable, and a 1-D blur with mirrored borders is a matrix K: the result is
    K_H A K_W^T, two batched matrix products (on a CPU about 30x faster than a 2-D convolution with the
    33 x 33 kernel of sigma = 4). ``radius`` overrides ``truncate``. ``sigma <= 0`` returns the maps unchanged.

    Derived in notebook 06, §2 · Reverse distillation, written out (scipy's ``gaussian_filter`` against it);
    notebook 05, §3 · Where is the anomaly? Gradient localization, written out (torchvision's ``gaussian_blur``
    against it).
    """
    if sigma <= 0:
        return maps
    if maps.ndim != 3:
        raise ValueError(f"expected maps [B, H, W]; got {tuple(maps.shape)}")
    h, w = maps.shape[-2:]
    dtype = maps.dtype if maps.is_floating_point() else torch.float32
    k_h = blur_matrix(h, sigma, truncate, maps.device, dtype, radius)
    k_w = k_h if w == h else blur_matrix(w, sigma, truncate, maps.device, dtype, radius)
    return k_h @ maps.to(dtype) @ k_w.T


def blur_matrix(n: int, sigma: float, truncate: float = 4.0, device=None, dtype=torch.float32,
                radius: int | None = None) -> torch.Tensor:
    """The [n, n] matrix of a 1-D Gaussian blur with mirrored borders: (K x)_i = sum_t g_t x_mirror(i + t),
    t in [-radius, radius] (default radius ``int(truncate * sigma + 0.5)``)."""
    radius = int(truncate * sigma + 0.5) if radius is None else int(radius)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()
    j = torch.arange(n)[:, None] + t.long()[None, :]  # [n, 2r + 1] source positions
    if n > 1:
        period = 2 * (n - 1)
        j = j % period
        j = torch.where(j > n - 1, period - j, j)  # mirror about the first and the last pixel
    else:
        j = torch.zeros_like(j)
    k = torch.zeros(n, n, dtype=torch.float64)
    k.index_put_((torch.arange(n)[:, None].expand_as(j), j), g.expand_as(j).clone(), accumulate=True)
    return k.to(device=device, dtype=dtype)


def cosine_distance_maps(encoded: list[torch.Tensor], decoded: list[torch.Tensor], size) -> torch.Tensor:
    """Per level 1 - cos over channels at each position, upsampled to ``size``: [B, L, H, W].

    Derived in notebook 06, §2 · Reverse distillation, written out; and notebook 07, §1 · Feature reconstruction,
    and why it over-generalises (the summands of :func:`anomaly_map`).
    """
    maps = [1 - F.cosine_similarity(e, d, dim=1)[:, None] for e, d in zip(encoded, decoded)]
    return torch.cat([F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps], dim=1)


def anomaly_map(encoded: list[torch.Tensor], decoded: list[torch.Tensor], size, sigma: float = 4.0) -> torch.Tensor:
    """A = Gauss_sigma(sum_l up(1 - cos_ch(E_l, D_l))): [B, H, W] at ``size`` (a sum over levels, as RD4AD).

    ``sigma`` is in pixels of ``size`` (RD4AD and CADA: 4 at 256 px; scale it with the size). CKAAD's eq. 14
    is the same map of a feature auto-encoder's reconstruction.

    Derived in notebook 06, §2 · Reverse distillation, written out; and notebook 07, §1 · Feature reconstruction,
    and why it over-generalises.
    """
    return gaussian_smooth(cosine_distance_maps(encoded, decoded, size).sum(1), sigma)


def image_score(maps: torch.Tensor, top_percent: float = 1.0) -> torch.Tensor:
    """s_img: the mean of the top ``top_percent``% pixels of each map [B, H, W] (0: the maximum).

    Derived in notebook 06, §2 · Reverse distillation, written out; notebook 06, §6 · Ablations: dropout and the
    image score (``top_percent`` from the maximum to 2%).
    """
    flat = maps.flatten(1)
    if top_percent <= 0:
        return flat.max(1).values
    if top_percent > 100:
        raise ValueError(f"top_percent must be in (0, 100] (or 0 for the maximum); got {top_percent}")
    k = max(1, int(round(flat.shape[1] * top_percent / 100)))
    return flat.topk(k, dim=1).values.mean(1)
