"""Multi-cue ADL (seed 001): few labelled anomalies, three fused cues, gradient localization.

Training is ADL (:mod:`adlkit.methods.adl`) with n labelled real anomalies per class mixed into the
batches (``train_adl(..., shots=...)``). From one forward pass, three cues per image:

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
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from .. import metrics
from ..data import ImageDataset, cache_tensors
from ..losses import top_k_mean

__all__ = ["CUE_WEIGHTS", "binary_entropy", "uncertainty", "segmentation_cue", "cues", "normalize_cue", "fuse",
           "fit_normalizers", "localize", "score_multicue"]

CUE_WEIGHTS = (0.55, 0.10, 0.35)  # deviation, uncertainty, segmentation (authors' code)
CUES = ("deviation", "uncertainty", "segmentation")


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
    model.eval()
    out = {k: [] for k in CUES}
    for batch in cache.batches(batch_size):
        for k, v in cues(model(batch["image"])).items():
            out[k].append(v.cpu())
    return {k: torch.cat(v) for k, v in out.items()}


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


def localize(model, images: torch.Tensor, sigma_at_256: float = 8.0) -> torch.Tensor:
    """Gradient localization maps [B, H, W] for images [B, 3, H, W] in [0, 1] (batched, model in eval mode)."""
    return _localize(model, images, sigma_at_256)[0]


def _localize(model, images: torch.Tensor, sigma_at_256: float = 8.0) -> tuple[torch.Tensor, dict, dict]:
    """:func:`localize`, plus the forward pass it ran (detached) and the cues of it: (maps, out, cues)."""
    model.eval()
    x = images.detach().clone().requires_grad_(True)
    out = model(x)
    block = out["last_block"]
    h, w = x.shape[-2:]
    maps = []
    values = cues(out)
    for i, name in enumerate(CUES):
        g_x, g_f = torch.autograd.grad(values[name].sum(), [x, block], retain_graph=i < len(CUES) - 1,
                                       allow_unused=True)
        for g in (g_x, g_f):
            if g is None:  # a cue that does not depend on this tensor contributes nothing
                continue
            m = g.abs().sum(1, keepdim=True)  # [B, 1, h', w']
            m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
            q = torch.quantile(m.flatten(1), 0.99, dim=1).clamp_min(1e-12)
            maps.append(m / q[:, None, None])
    amap = torch.stack(maps).mean(0)
    sigma = sigma_at_256 * h / 256
    size = 2 * math.ceil(3 * sigma) + 1
    amap = TF.gaussian_blur(amap[:, None], [size, size], [sigma, sigma])[:, 0].detach()
    return amap, {k: v.detach() for k, v in out.items()}, {k: v.detach() for k, v in values.items()}


def score_multicue(model, test: ImageDataset, device=None, train: ImageDataset | None = None,
                   shots: ImageDataset | None = None, normalizers: dict | None = None, weights=CUE_WEIGHTS,
                   batch_size: int = 16) -> dict:
    """Per-cue and fused image scores, gradient and segmentation maps, and their metrics.

    The cue normalisers come from ``normalizers`` or are fitted on ``train`` (+ ``shots``) with
    :func:`fit_normalizers` - never on the test set.
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
        maps, out, values = _localize(model, batch["image"])
        grad_maps.append(maps.cpu())
        seg_maps.append(out["seg"].float().softmax(1)[:, 1].cpu())
        for k in CUES:
            raw[k].append(values[k].cpu())
    raw = {k: torch.cat(v) for k, v in raw.items()}
    grad_maps, seg_maps = torch.cat(grad_maps), torch.cat(seg_maps)
    normed = {k: normalize_cue(raw[k], *normalizers[k]) for k in CUES}
    fused = fuse(normed, weights)
    labels = cache.anomalous.cpu().numpy()
    masks = cache.masks[:, 0].cpu()
    result = {"raw": raw, "normalized": normed, "fused": fused.numpy(), "grad_maps": grad_maps, "seg_maps": seg_maps,
              "labels": labels, "masks": masks, "normalizers": normalizers, "scores": fused.numpy()}
    if 0 < labels.sum() < len(labels):
        for k in CUES:
            result[f"{k}_AUROC"] = metrics.image_auroc(raw[k], labels)
            result[f"{k}_AUPR"] = metrics.image_aupr(raw[k], labels)
        result["image_AUROC"] = result["fused_AUROC"] = metrics.image_auroc(fused, labels)
        result["image_AUPR"] = result["fused_AUPR"] = metrics.image_aupr(fused, labels)
        anomalous = np.flatnonzero(labels)  # pixel metrics over the anomalous test images (seed 001)
        if masks[anomalous].any():
            for name, maps in (("grad", grad_maps), ("seg", seg_maps)):
                result[f"{name}_pixel_AUROC"] = metrics.pixel_auroc(maps[anomalous], masks[anomalous])
                result[f"{name}_pixel_AUPR"] = metrics.pixel_aupr(maps[anomalous], masks[anomalous])
                result[f"{name}_AUPRO"] = metrics.aupro(maps[anomalous], masks[anomalous])
    return result
