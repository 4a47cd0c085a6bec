"""Multi-cue ADL: few labelled anomalies, three fused cues, gradient localization.

A. S. Das, M. Bhuyan. *Multi-Cue Anomaly Detection and Localization under Data Contamination.*
arXiv:2601.22913, 2026. It builds on ADL (Das, Pang & Bhuyan, 2024, arXiv:2411.09558).

Training is ADL's Algorithm 1 (:func:`adlkit.methods.adl.train_adl`) with n labelled real anomalies
per class: every batch, ``shots_per_batch`` of them (with their masks) take the place of as many
pseudo-anomalies (:func:`sample_batch`). From one forward pass, three cues per image:

* deviation      s = the top-K deviation score (ADL eq. 2)
* uncertainty    u = ln(1 + H(p)), H the binary entropy of the classification probability p
* segmentation   g = mean of the top 10% of the segmentation head's anomaly map

Each cue is mapped to [0, 1] by phi(x; c, D) = ln(1 + clip(x, 0, D) / c) / ln(1 + D / c) and the
image score is their weighted geometric mean with weights (0.55, 0.10, 0.35) - the forms the authors'
code uses (the paper's text lost its equations). c and D are fitted per cue on the training data
(adlkit's choice, documented in :func:`fit_normalizers`).

Localization (:func:`localize`): gradients of each cue with respect to the input image and to the
last encoder block, |.| summed over channels, each map divided by its 99th percentile, upsampled to
the input, averaged over the six maps, Gaussian-smoothed (sigma = 8 at 256 px, scaled with the size).
With a frozen backbone the gradients still flow through it to the input: only its weights are fixed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from .. import metrics
from ..data import ImageDataset, TensorCache, cache_tensors
from ..losses import top_k_mean
from ..models.rd import gaussian_smooth
from . import adl

__all__ = ["CUE_WEIGHTS", "CUES", "MultiCueConfig", "sample_batch", "train_multicue", "binary_entropy", "uncertainty",
           "segmentation_cue", "cues", "normalize_cue", "fuse", "fit_normalizers", "localize", "score_multicue",
           "run_multicue"]

CUE_WEIGHTS = (0.55, 0.10, 0.35)  # deviation, uncertainty, segmentation (authors' code)
CUES = ("deviation", "uncertainty", "segmentation")


@dataclass
class MultiCueConfig(adl.ADLConfig):
    """ADL's configuration plus what multi-cue ADL adds."""

    shots_per_batch: int = 4  # labelled real anomalies replacing pseudo-anomalies in each batch
    cue_weights: tuple = CUE_WEIGHTS
    sigma: float = 8.0  # Gaussian smoothing of the gradient maps at 256 px (scaled with the size)


# ----------------------------------------------------------------------------- training
def sample_batch(data: adl.ADLData, config: MultiCueConfig, gens: dict, shots: TensorCache | None = None) -> dict:
    """ADL's batch (:func:`adlkit.methods.adl.sample_batch`) with its last ``shots_per_batch``
    pseudo-anomalies replaced by labelled real anomalies and their masks (drawn with replacement).
    Frozen setting: the shots are featurised once (remembered) by the same frozen backbone."""
    batch = adl.sample_batch(data, config, gens)
    n = min(config.shots_per_batch, config.n_pseudo) if shots is not None and len(shots) else 0
    if not n:
        return batch
    pick = torch.randint(len(shots), (n,), generator=gens["cpu"])
    keep = len(batch["labels"]) - n
    if data.backbone is not None:  # frozen: levels of the shots
        real = [level[pick] for level in adl.featurize(data.backbone, shots.images)]
        batch["inputs"] = [torch.cat([a[:keep], b]) for a, b in zip(batch["inputs"], real)]
    else:
        batch["inputs"] = torch.cat([batch["inputs"][:keep], shots.images[pick].float() / 255])
    if batch["masks"] is not None:
        real_masks = shots.masks[pick].to(batch["masks"])
        if real_masks.shape[-2:] != batch["masks"].shape[-2:]:  # the focal loss's resolution (seg_loss_size)
            real_masks = F.adaptive_max_pool2d(real_masks, batch["masks"].shape[-2:])
        batch["masks"] = torch.cat([batch["masks"][:keep], real_masks])
    return batch


def train_multicue(config: MultiCueConfig, train: ImageDataset, shots: ImageDataset | None, device=None,
                   **train_kwargs):
    """ADL's Algorithm 1 with labelled anomalies mixed into every batch. Returns (model, history)."""
    cache = cache_tensors(shots, device or "cpu") if shots is not None and len(shots) else None
    return adl.train_adl(config, train, device, sample=partial(sample_batch, shots=cache), **train_kwargs)


def binary_entropy(p: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """H(p) = -p ln p - (1 - p) ln(1 - p) in nats: 0 at p in {0, 1}, ln 2 at p = 0.5."""
    p = p.clamp(0.0, 1.0)
    return -(p * torch.log(p.clamp_min(eps)) + (1 - p) * torch.log((1 - p).clamp_min(eps)))


def uncertainty(p: torch.Tensor) -> torch.Tensor:
    """u = ln(1 + H(p)): the classification head's uncertainty."""
    return torch.log1p(binary_entropy(p))


def segmentation_cue(seg_logits: torch.Tensor, ratio: float = 0.1) -> torch.Tensor:
    """g = mean of the top ``ratio`` of the anomaly map (softmax channel 1 of the segmentation head)."""
    return top_k_mean(seg_logits.float().softmax(1)[:, 1], ratio)


def cues(out: dict) -> dict:
    """The three raw cues, [B] each, from one forward pass of an ADL model."""
    return {"deviation": out["score"].float(), "uncertainty": uncertainty(torch.sigmoid(out["logit"].float())),
            "segmentation": segmentation_cue(out["seg"])}


def normalize_cue(x, c: float, D: float):
    """phi(x; c, D) = ln(1 + clip(x, 0, D) / c) / ln(1 + D / c): 0 at 0, 1 at (and beyond) D, increasing."""
    if c <= 0 or D <= 0:
        raise ValueError(f"normalize_cue needs c > 0 and D > 0; got c={c}, D={D}")
    x = torch.as_tensor(x, dtype=torch.float32)
    return torch.log1p(x.clamp(0.0, D) / c) / math.log1p(D / c)


def fuse(normalized: dict | list, weights=CUE_WEIGHTS, eps: float = 1e-6) -> torch.Tensor:
    """Weighted geometric mean prod_k x_k^(w_k / sum w) of cues in [0, 1] (``eps`` keeps log finite)."""
    values = list(normalized.values()) if isinstance(normalized, dict) else list(normalized)
    if len(values) != len(weights):
        raise ValueError(f"{len(values)} cues but {len(weights)} weights")
    w = torch.tensor(weights, dtype=torch.float32)
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be non-negative and not all zero; got {weights}")
    w = w / w.sum()
    logs = torch.stack([torch.log(torch.as_tensor(v, dtype=torch.float32).clamp_min(eps)) for v in values])
    return torch.exp((w[:, None] * logs).sum(0))


@torch.no_grad()
def _raw_cues(model, cache, batch_size: int = 32) -> dict:
    out = adl.predict(model, cache.images, batch_size)
    return {k: v.cpu() for k, v in cues(out).items()}


def fit_normalizers(model, train: ImageDataset, shots: ImageDataset | None = None, device=None) -> dict:
    """(c, D) per cue from training data: c = median of the cue on normal-labelled training images
    (its typical normal value), D = the 99th percentile over those images and the labelled anomalies,
    so a typical normal maps low and the strongest training evidence maps to 1. adlkit's choice: the
    authors' code fixes them by hand per dataset."""
    device = device or next(model.parameters()).device
    normal = _raw_cues(model, cache_tensors(train, device))
    pool = normal if shots is None or not len(shots) else {
        k: torch.cat([normal[k], v]) for k, v in _raw_cues(model, cache_tensors(shots, device)).items()}
    fitted = {}
    for k in CUES:
        c = float(normal[k].median().clamp_min(1e-6))
        D = float(torch.quantile(pool[k], 0.99).clamp_min(c * 1.01))
        fitted[k] = (c, D)
    return fitted


def localize(model, images: torch.Tensor, sigma_at_256: float = 8.0) -> tuple[torch.Tensor, dict]:
    """Gradient localization maps [B, H, W] for images [B, 3, H, W] in [0, 1], and the forward pass's
    outputs (detached). One forward pass and one backward pass per cue, for the whole batch."""
    model.eval()
    x = images.detach().clone().requires_grad_(True)
    maps_l = model.backbone(x)  # the backbone's levels; the last is the last encoder block
    block = maps_l[-1]
    out = model.heads(maps_l, x.shape[-2:])
    values = cues(out)
    h, w = x.shape[-2:]
    maps = []
    for i, name in enumerate(CUES):
        grads = torch.autograd.grad(values[name].sum(), [x, block], retain_graph=i < len(CUES) - 1, allow_unused=True)
        for g in grads:
            if g is None:  # a cue that does not depend on this tensor contributes nothing
                continue
            m = g.abs().sum(1, keepdim=True)  # |gradient| summed over channels: [B, 1, h', w']
            m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
            q = torch.quantile(m.flatten(1), 0.99, dim=1).clamp_min(1e-12)  # each map / its 99th percentile
            maps.append(m / q[:, None, None])
    amap = gaussian_smooth(torch.stack(maps).mean(0), sigma_at_256 * h / 256, truncate=3.0).detach()  # mean of six, smoothed
    return amap, {k: v.detach() for k, v in out.items()}


def score_multicue(model, test: ImageDataset, device=None, train: ImageDataset | None = None,
                   shots: ImageDataset | None = None, normalizers: dict | None = None, weights=CUE_WEIGHTS,
                   sigma_at_256: float = 8.0, batch_size: int = 16) -> dict:
    """Per-cue and fused image scores, gradient and segmentation maps, and their metrics.

    The cue normalisers come from ``normalizers`` or are fitted on ``train`` (+ ``shots``) with
    :func:`fit_normalizers` - never on the test set. Keys: ``scores`` (the fused score), ``raw`` and
    ``normalized`` (per cue), ``grad_maps``, ``seg_maps``, ``labels``, ``masks``, ``normalizers``, and the
    metrics ``image_*`` (fused), ``cue_<name>_image_*``, ``grad_pixel_*`` and ``seg_pixel_*`` (pixel metrics
    over the anomalous test images, as the paper reports them).
    """
    device = device or next(model.parameters()).device
    if normalizers is None:
        if train is None:
            raise ValueError("score_multicue needs normalizers= or the training data (train=, shots=) to fit them; "
                             "fitting them on the test set would leak its statistics")
        normalizers = fit_normalizers(model, train.subset([i for i, s in enumerate(train.samples) if s.label == 0]),
                                      shots, device)
    cache = cache_tensors(test, device)
    raw, grad_maps, seg_maps = {k: [] for k in CUES}, [], []
    for batch in cache.batches(batch_size):  # one forward pass per batch gives cues, gradient and segmentation maps
        maps, out = localize(model, batch["image"], sigma_at_256)
        grad_maps.append(maps.cpu())
        seg_maps.append(out["seg"].float().softmax(1)[:, 1].cpu())
        for k, v in cues(out).items():
            raw[k].append(v.cpu())
    raw = {k: torch.cat(v) for k, v in raw.items()}
    grad_maps, seg_maps = torch.cat(grad_maps), torch.cat(seg_maps)
    normed = {k: normalize_cue(raw[k], *normalizers[k]) for k in CUES}
    fused = fuse(normed, weights).numpy()
    labels = cache.anomalous.cpu().numpy()
    masks = cache.masks[:, 0].cpu()
    result = {"scores": fused, "raw": raw, "normalized": normed, "grad_maps": grad_maps, "seg_maps": seg_maps,
              "labels": labels, "masks": masks, "normalizers": normalizers}
    result.update(metrics.image_metrics(fused, labels))
    for k in CUES:
        result.update(metrics.image_metrics(raw[k], labels, prefix=f"cue_{k}_"))
    anomalous = np.flatnonzero(labels)  # pixel metrics over the anomalous test images (as the paper)
    for name, maps in (("grad", grad_maps), ("seg", seg_maps)):
        result.update(metrics.pixel_metrics(maps[anomalous], masks[anomalous], prefix=f"{name}_"))
    return result


def run_multicue(config: MultiCueConfig, train: ImageDataset, test: ImageDataset, ratio: float, n_shots: int,
                 device=None, leaky: bool = False, **train_kwargs) -> dict:
    """Multi-cue ADL's protocol end to end: contaminate, take ``n_shots`` labelled anomalies per class out of
    the test set, train with them, score what is left. Returns :func:`score_multicue`'s result plus
    ``model``, ``history`` and ``split`` (:class:`adlkit.data.ProtocolSplit`)."""
    from ..data import protocol_split

    split = protocol_split(train, test, ratio, seed=config.seed, leaky=leaky, n_shots=n_shots)
    model, history = train_multicue(config, split.train, split.shots, device, pool_from=train, **train_kwargs)
    result = score_multicue(model, split.test, device, train=split.train, shots=split.shots,
                            weights=config.cue_weights, sigma_at_256=config.sigma)
    result.update(model=model, history=history, split=split)
    return result
