"""Multi-cue ADL: few labelled anomalies, three fused cues, gradient localization.

A. S. Das, M. Bhuyan. *Multi-Cue Anomaly Detection and Localization under Data Contamination.*
arXiv:2601.22913, 2026. It builds on ADL (Das, Pang & Bhuyan, 2024, arXiv:2411.09558). The text of the
paper available to adlkit lost its equations; where a form or a constant is missing there, adlkit takes it
from the authors' code (github.com/anindyasdas/multicue_ad_localization) and says so.

Training (:func:`train_multicue`, paper §4.1) is ADL's Algorithm 1 with n labelled real anomalies per
class: every batch, ``shots_per_batch`` of them take the place of as many pseudo-anomalies
(:func:`sample_batch`). The shots carry image labels: they enter the deviation loss (eq. 3) and the
classification loss (eq. 4). The segmentation head learns from the synthetic Perlin masks only ("trained
using a focal loss against synthetic anomaly masks", §4.1), so its focal loss covers the normal-labelled
images and the pseudo-anomalies, not the shots. ``shot_masks=True`` is the authors' code: the shots'
real masks train the segmentation head too (it needs data with masks; ELPV has image labels only).

Scoring (§4.2). From one forward pass, three cues per image:

* deviation      s = the top-K deviation score (eq. 2)
* uncertainty    u = ln(1 + H(p)), H the binary entropy of the classification probability p   (eq. 7)
* segmentation   g = mean of the top 10% of the segmentation head's anomaly map                 (eq. 8)

Each cue is mapped to [0, 1] by the deterministic, monotone eq. 9,
phi(x; c, D) = ln(1 + clip(x, 0, D) / c) / ln(1 + D / c), and the image score is the weighted geometric
mean of the three (eq. 10) with weights (0.55, 0.10, 0.35). The form of phi, its constants
(:data:`FIXED_NORMALIZERS`), the square root the authors' code takes of g before phi (``seg_sqrt``) and
the weights are the authors' code's (``statfree_scale``, ``transform_scores``). ``normalization="fitted"``
is adlkit's earlier choice, c and D fitted on the training data (:func:`fit_normalizers`).

Localization (§4.3, :func:`localize`): gradients of each cue with respect to the input image and to the
last encoder block (eq. 11), |.| summed over channels, each map divided by its 99th percentile, upsampled
to the input (eq. 12), averaged over the six maps and Gaussian-smoothed (eq. 13; sigma = 8 at 256 px,
scaled with the size). With a frozen backbone the gradients still flow through it to the input: only
its weights are fixed.

Evaluation (§5.1.4): pixel metrics of the gradient maps (``pixel_*``) and of the segmentation head's maps
(``seg_pixel_*``) are computed over all test images, as every other adlkit method and the MVTec AD
protocol report them (:func:`adlkit.metrics.evaluate`). The authors' code (``multicue_localization.py``)
instead averages each anomalous test image's own pixel AUROC and AUPR; that variant is reported beside them
as ``per_anomalous_image_pixel_*`` and ``seg_per_anomalous_image_pixel_*`` (:func:`per_image_pixel_metrics`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import metrics, modelfile
from ..data import ImageDataset, TensorCache, cache_tensors
from ..losses import top_k_mean
from ..maps import gaussian_smooth
from . import adl

__all__ = ["CUE_WEIGHTS", "CUES", "FIXED_NORMALIZERS", "NORMALIZATIONS", "MultiCueConfig", "sample_batch",
           "train_multicue", "binary_entropy", "uncertainty", "segmentation_cue", "cues", "phi_inputs",
           "normalize_cue", "fuse", "fit_normalizers", "localize", "per_image_pixel_metrics", "score_multicue",
           "run_multicue", "Config", "fit", "predict", "save", "load", "run"]

CUE_WEIGHTS = (0.55, 0.10, 0.35)  # deviation, uncertainty, segmentation (eq. 10; the authors' code)
CUES = ("deviation", "uncertainty", "segmentation")
_U_MAX = math.log1p(math.log(2))  # the largest uncertainty ln(1 + ln 2), at p = 0.5
# eq. 9's (c, D) per cue, fixed: the authors' code (transform_scores); the segmentation cue enters as sqrt(g)
FIXED_NORMALIZERS = {"deviation": (0.05, 1.0), "uncertainty": (_U_MAX / 10, _U_MAX), "segmentation": (0.05, 1.0)}
NORMALIZATIONS = ("fixed", "fitted")


@dataclass
class MultiCueConfig(adl.ADLConfig):
    """ADL's configuration plus what multi-cue ADL adds. Defaults: the paper; where its text is silent, the
    authors' code (eq. 9's constants and square root, eq. 10's weights)."""

    shots_per_batch: int = 4  # labelled real anomalies replacing pseudo-anomalies in each batch
    shot_masks: bool = False  # True (authors' code): the shots' real masks also train the segmentation head
    cue_weights: tuple = CUE_WEIGHTS
    normalization: str = "fixed"  # eq. 9's (c, D): "fixed" (FIXED_NORMALIZERS) or "fitted" (fit_normalizers)
    seg_sqrt: bool = True  # the authors' code maps sqrt(g), not g, through eq. 9
    sigma: float = 8.0  # Gaussian smoothing of the gradient maps at 256 px (scaled with the size)

    def __post_init__(self):
        super().__post_init__()  # ADL's own checks
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS} (eq. 9's (c, D): the authors' constants, "
                             f"or fitted on training data); got {self.normalization!r}")
        w = tuple(self.cue_weights)
        if len(w) != len(CUES) or any(x < 0 for x in w) or sum(w) <= 0:
            raise ValueError(f"cue_weights must be {len(CUES)} non-negative weights, not all zero, one per cue {CUES} "
                             f"(eq. 10; the authors' code: {CUE_WEIGHTS}); got {self.cue_weights!r}")
        if self.shots_per_batch < 0:
            raise ValueError(f"shots_per_batch must be >= 0 (0 = no labelled anomaly in the batches); got "
                             f"{self.shots_per_batch}")

    @classmethod
    def authors_code(cls, **changes):
        """ADL's authors'-code variant plus multi-cue's: the shots' masks train the segmentation head."""
        return super().authors_code(**{"shot_masks": True, **changes})


# ----------------------------------------------------------------------------- training (paper §4.1)
def sample_batch(data: adl.ADLData, config: MultiCueConfig, gens: dict, shots: TensorCache | None = None) -> dict:
    """ADL's batch (:func:`adlkit.methods.adl.sample_batch`) with its last ``shots_per_batch``
    pseudo-anomalies replaced by labelled real anomalies (drawn with replacement, label 1).

    ``seg_rows`` (bool [B]) marks the rows whose masks train the segmentation head: the normal-labelled
    images and the pseudo-anomalies, and the shots only with ``shot_masks`` (authors' code; their masks then
    stand in ``masks``). Without it a shot's mask row is empty and unused. Frozen setting: the shots are
    featurised once (remembered) by the same frozen backbone.
    """
    batch = adl.sample_batch(data, config, gens)
    n = min(config.shots_per_batch, config.n_pseudo) if shots is not None and len(shots) else 0
    batch["seg_rows"] = torch.ones(len(batch["labels"]), dtype=torch.bool)
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
        if not config.shot_masks:
            real_masks = torch.zeros_like(real_masks)  # image labels only: not a target of the focal loss
        if real_masks.shape[-2:] != batch["masks"].shape[-2:]:  # the focal loss's resolution (seg_loss_size)
            real_masks = F.adaptive_max_pool2d(real_masks, batch["masks"].shape[-2:])
        batch["masks"] = torch.cat([batch["masks"][:keep], real_masks])
    batch["seg_rows"][keep:] = config.shot_masks
    return batch


def train_multicue(config: MultiCueConfig, train: ImageDataset, shots: ImageDataset | None, device=None,
                   checkpoint_dir: str | Path | None = None, resume: bool = False, overwrite: bool = False,
                   progress: bool = False, stop_after_epoch: int | None = None,
                   pool_from: ImageDataset | None = None) -> tuple[adl.ADLModel, dict]:
    """ADL's Algorithm 1, run by :func:`adlkit.methods.adl.train_adl` itself, with labelled anomalies mixed
    into every batch (:func:`sample_batch`). The focal loss of the segmentation head covers the batch's
    ``seg_rows`` only: the Perlin pseudo-anomalies and the normal-labelled images (paper §4.1), plus the shots
    with ``shot_masks`` (authors' code). Without shots this is :func:`adlkit.methods.adl.train_adl` exactly (a
    test checks). Returns (model, history)."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    shot_cache = cache_tensors(shots, device) if shots is not None and len(shots) else None
    if config.shot_masks and config.use_seg and shot_cache is not None and not shot_cache.masks.flatten(1).any(1).all():
        raise ValueError("shot_masks=True trains the segmentation head on the labelled anomalies' masks, but some "
                         "have none (a dataset with image labels only, e.g. ELPV): run with shot_masks=False (the "
                         "paper: the segmentation head learns from the Perlin masks)")
    return adl.train_adl(config, train, device, checkpoint_dir, resume=resume, overwrite=overwrite,
                         progress=progress, stop_after_epoch=stop_after_epoch, pool_from=pool_from,
                         sample=lambda data, cfg, gens: sample_batch(data, cfg, gens, shot_cache))


# ----------------------------------------------------------------------------- the three cues (paper §4.2)
def binary_entropy(p: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """H(p) = -p ln p - (1 - p) ln(1 - p) in nats: 0 at p in {0, 1}, ln 2 at p = 0.5."""
    p = p.clamp(0.0, 1.0)
    return -(p * torch.log(p.clamp_min(eps)) + (1 - p) * torch.log((1 - p).clamp_min(eps)))


def uncertainty(p: torch.Tensor) -> torch.Tensor:
    """u = ln(1 + H(p)) (eq. 7): the classification head's uncertainty."""
    return torch.log1p(binary_entropy(p))


def segmentation_cue(seg_logits: torch.Tensor, ratio: float = 0.1) -> torch.Tensor:
    """g = mean of the top ``ratio`` of the anomaly map (eq. 8; softmax channel 1 of the segmentation head)."""
    return top_k_mean(seg_logits.float().softmax(1)[:, 1], ratio)


def cues(out: dict) -> dict:
    """The three raw cues, [B] each, from one forward pass of an ADL model."""
    return {"deviation": out["score"].float(), "uncertainty": uncertainty(torch.sigmoid(out["logit"].float())),
            "segmentation": segmentation_cue(out["seg"])}


def phi_inputs(raw: dict, seg_sqrt: bool = True) -> dict:
    """What eq. 9 maps: the raw cues, with sqrt(g) for the segmentation cue when ``seg_sqrt`` (the authors'
    code, ``statfree_scale(..., pre='sqrt')``: it spreads the small values g takes on most images).

    Explained in notebook 05, §2 · Normalising and fusing."""
    return {k: (torch.as_tensor(v).clamp_min(0).sqrt() if k == "segmentation" and seg_sqrt else torch.as_tensor(v))
            for k, v in raw.items()}


def normalize_cue(x, c: float, D: float):
    """phi(x; c, D) = ln(1 + clip(x, 0, D) / c) / ln(1 + D / c) (eq. 9): 0 at 0, 1 at (and beyond) D, increasing.

    Derived in notebook 05, §2 · Normalising and fusing (Exercise 1 · Normalise and fuse)."""
    if c <= 0 or D <= 0:
        raise ValueError(f"normalize_cue needs c > 0 and D > 0; got c={c}, D={D}")
    x = torch.as_tensor(x, dtype=torch.float32)
    return torch.log1p(x.clamp(0.0, D) / c) / math.log1p(D / c)


def fuse(normalized: dict | list, weights=CUE_WEIGHTS, eps: float = 1e-6) -> torch.Tensor:
    """Weighted geometric mean prod_k x_k^(w_k / sum w) of cues in [0, 1] (eq. 10; ``eps`` keeps log finite).

    Derived in notebook 05, §2 · Normalising and fusing (Exercise 1 · Normalise and fuse)."""
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


def _fit(normal: dict, pool: dict) -> dict:
    fitted = {}
    for k in CUES:
        c = float(normal[k].median().clamp_min(1e-6))
        D = float(torch.quantile(pool[k], 0.99).clamp_min(c * 1.01))
        fitted[k] = (c, D)
    return fitted


def _training_cues(model, train: ImageDataset, shots: ImageDataset | None, device) -> tuple[dict, dict]:
    """Raw cues of the normal-labelled training images, and of those plus the labelled anomalies."""
    normal = _raw_cues(model, cache_tensors(train, device))
    if shots is None or not len(shots):
        return normal, normal
    return normal, {k: torch.cat([normal[k], v]) for k, v in _raw_cues(model, cache_tensors(shots, device)).items()}


def fit_normalizers(model, train: ImageDataset, shots: ImageDataset | None = None, device=None,
                    seg_sqrt: bool = True) -> dict:
    """``normalization="fitted"`` (adlkit's earlier choice, not the paper's deterministic eq. 9): (c, D) per cue
    from training data, on what eq. 9 maps (:func:`phi_inputs`). c = median of the cue on normal-labelled
    training images (its typical normal value), D = the 99th percentile over those images and the labelled
    anomalies, so a typical normal maps low and the strongest training evidence maps to 1."""
    device = device or next(model.parameters()).device
    normal, pool = _training_cues(model, train, shots, device)
    return _fit(phi_inputs(normal, seg_sqrt), phi_inputs(pool, seg_sqrt))


# ----------------------------------------------------------------------------- localization (paper §4.3)
def localize(model, images: torch.Tensor, sigma_at_256: float = 8.0) -> tuple[torch.Tensor, dict]:
    """Gradient localization maps [B, H, W] for images [B, 3, H, W] in [0, 1] (eqs. 11-13), and the forward
    pass's outputs (detached). One forward pass and one backward pass per cue, for the whole batch.

    Derived in notebook 05, §3 · Where is the anomaly? Gradient localization, written out."""
    model.eval()
    x = images.detach().clone().requires_grad_(True)
    maps_l = model.shared_levels(model.backbone(x))  # the levels the heads read; the last is the last encoder block
    block = maps_l[-1]  # (with a shared neck: its output; with a trainable top stage: that stage's output)
    out = model.heads(maps_l, x.shape[-2:])
    values = cues(out)
    h, w = x.shape[-2:]
    maps = []
    for i, name in enumerate(CUES):  # eq. 11: d cue / d input and d cue / d last block
        grads = torch.autograd.grad(values[name].sum(), [x, block], retain_graph=i < len(CUES) - 1, allow_unused=True)
        for g in grads:
            if g is None:  # a cue that does not depend on this tensor contributes nothing
                continue
            m = g.abs().sum(1, keepdim=True)  # eq. 12: |gradient| summed over channels: [B, 1, h', w']
            m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
            q = torch.quantile(m.flatten(1), 0.99, dim=1).clamp_min(1e-12)  # each map / its 99th percentile
            maps.append(m / q[:, None, None])
    # eq. 13: the mean of the six maps, smoothed
    amap = gaussian_smooth(torch.stack(maps).mean(0), sigma_at_256 * h / 256, truncate=3.0).detach()
    return amap, {k: v.detach() for k, v in out.items()}


# ----------------------------------------------------------------------------- scoring and evaluation
def _cues_and_maps(model, images: torch.Tensor, sigma_at_256: float, batch_size: int = 16) -> tuple[dict, torch.Tensor,
                                                                                                   torch.Tensor]:
    """One forward pass per batch of images [N, 3, S, S] (uint8, or float in [0, 1]) gives the raw cues {cue: [N]},
    the gradient maps [N, S, S] (eq. 13) and the segmentation head's maps [N, S, S], all on the CPU."""
    device = next(model.parameters()).device
    raw, grad_maps, seg_maps = {k: [] for k in CUES}, [], []
    for chunk in images.split(batch_size):
        x = chunk.to(device)
        maps, out = localize(model, x.float().div_(255.0) if x.dtype == torch.uint8 else x.float(), sigma_at_256)
        grad_maps.append(maps.cpu())
        seg_maps.append(out["seg"].float().softmax(1)[:, 1].cpu())
        for k, v in cues(out).items():
            raw[k].append(v.cpu())
    return {k: torch.cat(v) for k, v in raw.items()}, torch.cat(grad_maps), torch.cat(seg_maps)


def per_image_pixel_metrics(maps, masks, labels, prefix: str = "") -> dict:
    """The authors' code's localization protocol: each anomalous test image's own pixel AUROC and AUPR,
    averaged (images whose mask is empty or full are skipped). ``{prefix}per_anomalous_image_pixel_AUROC`` and
    ``_AUPR``, or {} when no anomalous image has a mask (image labels only)."""
    maps, masks = torch.as_tensor(maps), torch.as_tensor(masks).bool()
    aurocs, auprs = [], []
    for i in np.flatnonzero(np.asarray(labels)):
        m = masks[i]
        if m.any() and not m.all():
            aurocs.append(metrics.pixel_auroc(maps[i], m))
            auprs.append(metrics.pixel_aupr(maps[i], m))
    if not aurocs:
        return {}
    return {f"{prefix}per_anomalous_image_pixel_AUROC": float(np.mean(aurocs)),
            f"{prefix}per_anomalous_image_pixel_AUPR": float(np.mean(auprs))}


def _option(model, name: str, value, default):
    """An explicit argument, else the model's MultiCueConfig field, else the default."""
    return value if value is not None else getattr(model.config, name, default)


def score_multicue(model, test: ImageDataset, device=None, train: ImageDataset | None = None,
                   shots: ImageDataset | None = None, normalizers: dict | None = None, weights=None,
                   sigma_at_256: float | None = None, normalization: str | None = None, seg_sqrt: bool | None = None,
                   batch_size: int = 16) -> dict:
    """Per-cue and fused image scores, gradient and segmentation maps, and their metrics.

    ``weights``, ``sigma_at_256`` (the config's ``sigma``), ``normalization`` and ``seg_sqrt`` default to the
    model's :class:`MultiCueConfig`. eq. 9's (c, D) come from ``normalizers``, else :data:`FIXED_NORMALIZERS`
    (``"fixed"``) or :func:`fit_normalizers` on ``train`` (+ ``shots``) (``"fitted"``) - never on the test set.

    Keys: ``scores`` (the fused score), ``raw``, ``phi_inputs`` (what eq. 9 maps: :func:`phi_inputs`) and
    ``normalized`` (per cue), ``grad_maps``, ``seg_maps``,
    ``labels``, ``masks``, ``normalizers``, ``maps_from``, and the metrics: ``image_*`` (fused) and
    ``pixel_*`` (gradient maps) over all test images (:func:`adlkit.metrics.evaluate`), ``cue_<name>_image_*``,
    ``seg_pixel_*`` (the segmentation head's maps, all test images), the authors' code's per-anomalous-image
    means ``per_anomalous_image_pixel_*`` and ``seg_per_anomalous_image_pixel_*``
    (:func:`per_image_pixel_metrics`), and, when ``train`` is given, ``fusion_<fixed|fitted>[_nosqrt]_image_AUROC``:
    the fused score's AUROC under each eq. 9 variant, from the same model (the cues do not change, only their map).
    """
    device = device or next(model.parameters()).device
    weights = _option(model, "cue_weights", weights, CUE_WEIGHTS)
    sigma_at_256 = _option(model, "sigma", sigma_at_256, 8.0)
    normalization = _option(model, "normalization", normalization, "fixed")
    seg_sqrt = _option(model, "seg_sqrt", seg_sqrt, True)
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}; got {normalization!r}")
    training_cues = None
    if train is not None:
        train = train.subset([i for i, s in enumerate(train.samples) if s.label == 0])
        training_cues = _training_cues(model, train, shots, device)
    if normalizers is None and normalization == "fitted":
        if training_cues is None:
            raise ValueError("normalization='fitted' needs normalizers= or the training data (train=, shots=) to fit "
                             "them; fitting them on the test set would leak its statistics")
        normalizers = _fit(*(phi_inputs(c, seg_sqrt) for c in training_cues))
    normalizers = normalizers or FIXED_NORMALIZERS
    cache = cache_tensors(test, device)
    raw, grad_maps, seg_maps = _cues_and_maps(model, cache.images, sigma_at_256, batch_size)
    inputs = phi_inputs(raw, seg_sqrt)
    normed = {k: normalize_cue(inputs[k], *normalizers[k]) for k in CUES}  # eq. 9
    fused = fuse(normed, weights).numpy()  # eq. 10
    labels = cache.anomalous.cpu().numpy()
    masks = cache.masks[:, 0].cpu()
    result = metrics.evaluate(fused, grad_maps, labels, masks)  # image_* and pixel_* over all test images
    result.update(raw=raw, phi_inputs=inputs, normalized=normed, grad_maps=grad_maps, seg_maps=seg_maps, masks=masks,
                  normalizers=normalizers, maps_from="gradients of the three cues (eq. 13)")
    for k in CUES:
        result.update(metrics.image_metrics(raw[k], labels, prefix=f"cue_{k}_"))
    result.update(metrics.pixel_metrics(seg_maps, masks, prefix="seg_"))
    result.update(per_image_pixel_metrics(grad_maps, masks, labels))
    result.update(per_image_pixel_metrics(seg_maps, masks, labels, prefix="seg_"))
    if training_cues is not None and 0 < labels.sum() < len(labels):
        for sqrt_ in (True, False):
            x = phi_inputs(raw, sqrt_)
            for name, nz in (("fixed", FIXED_NORMALIZERS), ("fitted", _fit(*(phi_inputs(c, sqrt_) for c in training_cues)))):
                score = fuse({k: normalize_cue(x[k], *nz[k]) for k in CUES}, weights)
                result[f"fusion_{name}{'' if sqrt_ else '_nosqrt'}_image_AUROC"] = metrics.image_auroc(score, labels)
    return result


def run_multicue(config: MultiCueConfig, train: ImageDataset, test: ImageDataset, ratio: float, n_shots: int,
                 device=None, leaky: bool = False, **train_kwargs) -> dict:
    """Multi-cue ADL's protocol end to end (paper §5.1.2-5.1.3): contaminate, take ``n_shots`` labelled anomalies
    per class out of the test set, train with them, score what is left. Returns :func:`score_multicue`'s result
    plus ``model``, ``history`` and ``split`` (:class:`adlkit.data.ProtocolSplit`)."""
    from ..data import protocol_split

    split = protocol_split(train, test, ratio, seed=config.seed, leaky=leaky, n_shots=n_shots)
    model, history = train_multicue(config, split.train, split.shots, device, pool_from=train, **train_kwargs)
    result = score_multicue(model, split.test, device, train=split.train, shots=split.shots)
    result.update(model=model, history=history, split=split)
    return result


# ---- the common surface: Config, fit, predict, save, load, run
Config = MultiCueConfig
run = run_multicue


def fit(config: MultiCueConfig, train: ImageDataset, device=None, shots: ImageDataset | None = None,
        **kwargs) -> adl.ADLModel:
    """:func:`train_multicue` with ``shots`` (the labelled anomalies; its keywords: ``checkpoint_dir``, ``resume``,
    ``overwrite``, ``progress``, ``stop_after_epoch``, ``pool_from``), returning the trained model alone, with
    ``model.history`` and ``model.normalizers``: eq. 9's (c, D) per cue that :func:`predict` uses
    (:data:`FIXED_NORMALIZERS`, or with ``normalization="fitted"`` :func:`fit_normalizers` on the normal-labelled
    training images and the shots, as :func:`score_multicue` fits them)."""
    model, history = train_multicue(config, train, shots, device, **kwargs)
    model.history = history
    if config.normalization == "fitted":
        normal = train.subset([i for i, s in enumerate(train.samples) if s.label == 0])
        model.normalizers = fit_normalizers(model, normal, shots, device, config.seg_sqrt)
    else:
        model.normalizers = dict(FIXED_NORMALIZERS)
    return model


def predict(model: adl.ADLModel, images: torch.Tensor, batch_size: int = 16, normalizers: dict | None = None) -> dict:
    """The fused score and the gradient maps of images [N, 3, S, S] (uint8, or float in [0, 1]).

    ``scores`` [N]: eq. 10's weighted geometric mean of the three cues mapped by eq. 9 (with ``normalizers``, else
    ``model.normalizers`` from :func:`fit` or :func:`load`, else :data:`FIXED_NORMALIZERS`); ``maps`` [N, S, S] (CPU
    float): the gradient localization maps of eq. 13 (:func:`localize`). Also ``seg_maps`` (the segmentation
    head's), ``raw`` and ``normalized`` (per cue). The same numbers as :func:`score_multicue` on the same images.
    Gradients flow to the input, so this does not run under ``torch.no_grad``."""
    normalizers = normalizers or getattr(model, "normalizers", None)
    if normalizers is None:
        if _option(model, "normalization", None, "fixed") == "fitted":
            raise ValueError("normalization='fitted' needs eq. 9's fitted (c, D): train with multicue.fit (it stores "
                             "them as model.normalizers) or pass normalizers=")
        normalizers = FIXED_NORMALIZERS
    raw, grad_maps, seg_maps = _cues_and_maps(model, images, _option(model, "sigma", None, 8.0), batch_size)
    inputs = phi_inputs(raw, _option(model, "seg_sqrt", None, True))
    normed = {k: normalize_cue(inputs[k], *normalizers[k]) for k in CUES}  # eq. 9
    return {"scores": fuse(normed, _option(model, "cue_weights", None, CUE_WEIGHTS)), "maps": grad_maps,  # eq. 10
            "seg_maps": seg_maps, "raw": raw, "normalized": normed}


def save(model: adl.ADLModel, path: str | Path, overwrite: bool = False, tags: dict | None = None) -> Path:
    """One file (:mod:`adlkit.modelfile`) with ADL's layout (:func:`adlkit.methods.adl.model_state`): ``state`` =
    {"heads": the three heads' state dict} plus "shared" (the trainable neck or top stage, when there is one) and
    "backbone" (when it trained end to end, or its weights are random); ``meta`` = eq. 9's ``normalizers``, the
    history, the backbone and the image size. A frozen ImageNet backbone is rebuilt on load."""
    if getattr(model, "history", None) is None:  # trained by train_multicue, not fit: no history attached
        model.history = {}
    state, meta = adl.model_state(model)
    normalizers = getattr(model, "normalizers", None)
    meta.update(image_size=model.config.image_size,
                normalizers={k: list(v) for k, v in normalizers.items()} if normalizers else None)
    return modelfile.write(path, "multicue", model.config, state, meta, overwrite, tags)


def load(path: str | Path, device=None) -> adl.ADLModel:
    """The model that :func:`save` wrote, on ``device`` (default CPU), in eval mode, with ``history`` and
    ``normalizers``: the same scores and maps from :func:`predict`."""
    config, state, meta = modelfile.read(path, "multicue", MultiCueConfig, device)
    model = adl.model_from_state(config, state, meta, path, device)
    model.normalizers = {k: tuple(v) for k, v in meta["normalizers"].items()} if meta.get("normalizers") else None
    return model
