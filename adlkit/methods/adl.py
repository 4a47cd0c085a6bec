"""ADL: adaptive deviation learning under training-set contamination (Algorithm 1).

A. S. Das, G. Pang, M. Bhuyan. *Adaptive Deviation Learning for Visual Anomaly Detection with Data
Contamination.* arXiv:2411.09558, 2024 (WACV 2025).

Model: backbone levels 2-4 (ResNet-18: 128 + 256 + 512 = 896 channels) upsampled to 1/8 resolution
and concatenated, with three heads on top (:class:`ADLHeads`):

* score head       1x1 conv -> |.| -> mean of the top-K patches (eq. 2)          -> s
* classification   GAP(level 4) -> linear -> sigmoid                             -> p
* segmentation     1x1 conv-BN-ReLU -> 1x1 conv to 2 channels, upsampled to the input -> anomaly map

Algorithm 1, as :func:`train_adl` runs it. Each step takes a batch of n normal-labelled training
images (clean or, unknown to the learner, contaminated) and n Perlin pseudo-anomalies with their
masks (:func:`sample_batch`), then :func:`adl_step` computes (steps 1-4 and the first two sums of 6 are
DevNet's deviation step with ADL's switches, :func:`adlkit.methods.deviation.deviation_step`; ADL adds 5):

1. z = (s - mu_R) / sigma_R with (mu_R, sigma_R) from m reference draws r ~ N(0, 1)   (eq. 3)
2. l_soft = soft deviation (eq. 5) with p = sigmoid(classification logit), detached, in *every* epoch
   (Algorithm 1, line 6); rows without soft deviation use the deviation loss l_dev (eq. 4) with the labels
3. l_bce = BCE(p, target); the target (:func:`bce_target`) alternates step by step between the labels
   and k-means(2) labels of the batch's scores (eq. 6)
4. instance weights w (for l_soft) and v (for l_bce), each normalised over the whole minibatch (eqs. 7-11)
5. l_seg = focal loss (gamma = 2) of the segmentation head against the Perlin masks
6. loss = sum_i w_i l_soft,i + sum_i v_i l_bce,i + mean(l_seg)   (eq. 11)

Burn-in (Algorithm 1, lines 7-10) changes *only the weights*: in the first ``burn_in`` epochs w and v are
uniform (1 / batch size), afterwards eqs. 8-10. The losses are the same in and after burn-in; in the
first steps p is an untrained head's (about 0.5), so l_soft then pulls every score towards the band
between 0 and gamma, and sharpens as the classification head learns. The paper gives no burn-in length;
the authors' code uses 6% of the iterations (``int(0.06 * total_iter)``). adlkit counts it in epochs, as
Algorithm 1 does, and takes ``burn_in = 2``: the smallest whole number of epochs that covers the code's 6%
of the paper's 25 epochs (1.5 epochs), so the weights start from losses of a model trained for as long as
the authors' was.

The rows of Table 2 (:data:`ABLATIONS`) are the paper's six, with the terms its table ticks:

=============  =========  ======  ===========  =====
row            reweight   l_bce   l_soft       l_seg
=============  =========  ======  ===========  =====
DL                                (l_dev)
Wt-DL          yes                (l_dev)
DL-CE                     yes     (l_dev)
SoftDL-CE                 yes     yes
Wt-SoftDL-CE   yes        yes     yes
Proposed       yes        yes     yes          yes
=============  =========  ======  ===========  =====

Table 2 ticks l_dev for "Proposed" too; Algorithm 1 uses l_soft throughout. The authors' code runs l_dev
(l_soft with p = y) during burn-in and l_soft after it, which may be what that tick records (the code does
so for every row with l_soft, the table ticks l_dev only for "Proposed"). adlkit's default is Algorithm 1;
the code's schedule is the option ``hard_burn_in``.

Departures, each a named option recorded in every result row's config (``ADLConfig.authors_code()`` turns
on the authors' code's; the CLI's ``--variant authors`` writes ``variant: "authors"`` in the rows):

* ``margin = 10`` (the code) instead of gamma = 5 (the paper, section 4.1);
* ``bce_target = "kmeans_or_labels"`` (the code: max(k-means, y) with probability 0.6, else y) instead of
  alternating y and k-means labels;
* ``hard_burn_in = True`` (the code): during burn-in the deviation loss is eq. 4 with the labels and the
  BCE target is y; l_soft and the k-means target only after burn-in;
* ``within_label = True`` (adlkit's earlier choice, not the paper's nor the code's): eqs. 8-10 normalised
  within each label's samples, each label keeping its share of the batch
  (:func:`adlkit.reweight.weights_within_labels`);
* ``train_backbone = False``: the CPU setting below.

Not reproduced from the authors' code: the iteration-exact burn-in (adlkit counts epochs), gradient
clipping at norm 1, weight decay 1e-5, the step learning-rate schedule (x0.1 every 10 epochs) and the
extra 1 / batch size the code's ``mean(w * l)`` puts on the weighted terms after burn-in.

Every term can be switched off for the ablation (Table 2). Inputs are images in [0, 1]; the backbone
normalises them itself (the authors' code feeds [0, 1] without ImageNet normalisation:
``normalize_input=False`` reproduces that).

Four settings (``ADLConfig.training``, from ``train_backbone`` and ``shared``; every result row records it):

* ``"end-to-end"`` (``train_backbone=True``, the paper): the backbone is fine-tuned end to end;
  pseudo-anomalies are synthesised for every batch.
* ``"frozen"`` (``train_backbone=False``): the backbone is frozen, the training images are featurised
  once, and the pseudo-anomalies come from a seeded pool (:func:`pseudo_pool`) synthesised and
  featurised once. Only the three heads train. Everything else in Algorithm 1 is unchanged. The
  heads share no parameters here, so the segmentation head cannot move the image score: with a
  frozen backbone, the image-level results with and without ``use_seg`` are identical (a test checks).
  Likewise the classification head reaches the score only through p in l_soft: frozen, "DL-CE" scores
  exactly as "DL" and "Proposed" as "Wt-SoftDL-CE" (tests check both).
* ``"neck"`` and ``"top-stage"`` (``train_backbone=False, shared=...``): the frozen setting's caches, plus a
  shared trainable part between the cached levels and the heads (:mod:`adlkit.models.shared`): a small
  neck all three heads read, or a copy of the backbone's last stage trained on that stage's cached input.
  Every loss then trains features the score head reads, as in the paper, at a CPU's cost (notebook 04,
  section 6b; ``benchmarks/bench_adl.py``).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import metrics, modelfile, training
from ..config import cache_dir
from ..data import ImageDataset, cache_tensors, protocol_split
from ..features import backbone_key, features, featurize, images_key, remember
from ..losses import focal_loss, reference_stats
from ..models.backbone import BACKBONES, STRIDES, conv1x1_on_levels
from ..models.backbone import backbone as make_backbone
from ..models.heads import ClassificationHead, TopKScoreHead
from ..models.shared import SHARED_PARTS, SharedNeck, TopStage
from ..synth import PseudoAnomaly
from .deviation import REWEIGHTS, deviation_step

__all__ = ["ADLConfig", "ABLATIONS", "BCE_TARGETS", "ADLHeads", "ADLModel", "ADLData", "PseudoPool", "featurize",
           "pseudo_pool", "prepare_data", "sample_batch", "bce_target", "adl_step", "kmeans_labels", "train_adl",
           "score_adl", "run_contaminated", "load_checkpoint",
           "Config", "fit", "predict", "save", "load", "run", "model_state", "model_from_state"]

BCE_TARGETS = ("alternate", "labels", "kmeans_or_labels")  # the classification head's target (bce_target)


@dataclass
class ADLConfig:
    """The paper's defaults, with a switch for every ablation row and the authors'-code variants."""

    # model
    backbone: str = "auto"  # the paper: resnet18; auto = ResNet-18 when its ImageNet weights are here, else Lite0
    pretrained: object = "auto"
    layers: tuple = (2, 3, 4)
    normalize_input: bool = True
    image_size: int = 256
    train_backbone: bool = True  # False: frozen backbone, features cached once, a pseudo-anomaly pool
    shared: str = "none"  # frozen backbone only: "neck" | "top-stage", a trainable part all heads read (see below)
    neck_width: int = 64  # shared="neck": channels of the shared map
    top_stage_bn: str = "eval"  # shared="top-stage": "eval" keeps ImageNet's BN statistics, "train" updates them
    pool_size: int = 1000  # frozen setting: pseudo-anomalies synthesised and featurised once
    # losses (eqs. 2-5)
    margin: float = 5.0  # gamma; the authors' code uses 10
    topk_ratio: float = 0.1
    m: int = 5000
    focal_gamma: float = 2.0
    seg_loss_size: int = 0  # the focal loss's resolution (masks max-pooled to it); 0 = the input's
    # reweighting (eqs. 8-10)
    reweight: str = "alpha"
    lam: float = 0.1
    alpha: float = 0.1
    within_label: bool = False  # eqs. 7-11: one normalisation over the minibatch; True: within each label (adlkit)
    burn_in: int = 2  # epochs with uniform weights (Algorithm 1, lines 7-10); see the module docstring
    hard_burn_in: bool = False  # True (authors' code): l_dev with the labels and BCE against y during burn-in
    # ablation switches (Table 2; default: "Proposed")
    use_reweight: bool = True
    use_bce: bool = True
    use_soft: bool = True
    use_seg: bool = True
    # BCE target: "alternate" (labels / k-means by step), "labels", or "kmeans_or_labels" (authors' code)
    bce_target: str = "alternate"
    kmeans_probability: float = 0.6  # for "kmeans_or_labels"
    # optimisation (Algorithm 1)
    epochs: int = 25
    steps_per_epoch: int = 20
    n_normal: int = 24
    n_pseudo: int = 24
    lr: float = 2e-4
    beta_range: tuple = (0.1, 1.0)
    sources: str | None = None  # texture folder for pseudo-anomalies (DTD); None: ADLKIT_TEXTURES or built-in
    amp: bool = True  # bf16 autocast on CUDA
    seed: int = 0

    def __post_init__(self):
        """Every field checked once, here, with the fix (the model, the step and the loop then trust them)."""
        if self.shared not in SHARED_PARTS:
            raise ValueError(f"shared must be one of {SHARED_PARTS}; got {self.shared!r}")
        if self.shared != "none" and self.train_backbone:
            raise ValueError(f"shared={self.shared!r} is a frozen-backbone setting; with train_backbone=True the whole "
                             "backbone already trains. Fix: train_backbone=False (CLI: --training "
                             f"{self.shared}) or shared='none'")
        _check_model_fields(self)
        _check_loss_fields(self)
        _check_loop_fields(self)

    @property
    def training(self) -> str:
        """Which parameters train: "frozen" (heads only), "neck", "top-stage" or "end-to-end"."""
        return "end-to-end" if self.train_backbone else ("frozen" if self.shared == "none" else self.shared)

    @classmethod
    def authors_code(cls, **changes):
        """The variant the authors' code runs: gamma = 10, k-means labels OR-ed with y (p = 0.6), and during
        burn-in the hard deviation loss (eq. 4) with BCE against the labels. Weights are normalised over the
        whole minibatch there too (the default)."""
        return cls(**{"margin": 10.0, "bce_target": "kmeans_or_labels", "hard_burn_in": True, **changes})

    def ablation(self, name: str):
        """This config with the switches of a Table 2 row (:data:`ABLATIONS`).

        Derived in notebook 04, §6 (Ablation (Table 2), at 10% contamination)."""
        if name not in ABLATIONS:
            raise ValueError(f"unknown ablation {name!r}; rows: {list(ABLATIONS)}")
        return replace(self, **ABLATIONS[name])

    def ablation_name(self) -> str | None:
        """The Table 2 row these switches make, or None when they match no row."""
        switches = {k: getattr(self, k) for k in ("use_reweight", "use_bce", "use_soft", "use_seg")}
        return next((name for name, row in ABLATIONS.items() if row == switches), None)


def _check_model_fields(c: ADLConfig) -> None:
    """What building the model checks (the backbone, TopStage), checked before anything is built."""
    if c.backbone != "auto" and c.backbone not in BACKBONES:
        raise ValueError(f"backbone must be 'auto' or one of {BACKBONES}; got {c.backbone!r}. Fix: "
                         "backbone='efficientnet_lite0' (CPU) or 'resnet18' (the paper)")
    if c.pretrained not in (True, False, "auto"):
        raise ValueError(f"pretrained must be True, False or 'auto'; got {c.pretrained!r}")
    levels = tuple(sorted({int(level) for level in c.layers}))
    if not levels or not set(levels) <= set(STRIDES):
        raise ValueError(f"layers must be backbone levels among {tuple(STRIDES)}; got {c.layers!r}. Fix: layers=(2, 3, 4)")
    if c.top_stage_bn not in ("eval", "train"):
        raise ValueError(f"top_stage_bn must be 'eval' (ImageNet's running statistics) or 'train'; got "
                         f"{c.top_stage_bn!r}")
    if c.shared == "top-stage" and levels[-2:] != (3, 4):
        raise ValueError(f"shared='top-stage' needs the backbone's last two levels to be 3 and 4; got layers "
                         f"{c.layers!r}. Fix: layers=(2, 3, 4)")
    if c.neck_width < 1 or c.image_size < 1:
        raise ValueError(f"neck_width and image_size must be at least 1; got {c.neck_width}, {c.image_size}")


def _check_loss_fields(c: ADLConfig) -> None:
    """What the losses, the weights and the BCE target check where they are used."""
    if not 0 < c.topk_ratio <= 1:
        raise ValueError(f"topk_ratio must be in (0, 1]; got {c.topk_ratio}. Fix: topk_ratio=0.1 (eq. 2)")
    if c.m < 2:
        raise ValueError(f"m (reference draws, eq. 3) must be at least 2; got {c.m}. Fix: m=5000")
    if c.margin <= 0:
        raise ValueError(f"margin (gamma of eqs. 4-5) must be > 0; got {c.margin}. Fix: margin=5.0 (the paper)")
    if c.focal_gamma < 0 or c.seg_loss_size < 0:
        raise ValueError(f"focal_gamma and seg_loss_size must be >= 0; got {c.focal_gamma}, {c.seg_loss_size}")
    if c.reweight not in REWEIGHTS:
        raise ValueError(f"reweight must be one of {REWEIGHTS}; got {c.reweight!r}. Fix: reweight='alpha' (eq. 10), "
                         "or use_reweight=False for uniform weights")
    if c.lam <= 0:
        raise ValueError(f"lam (lambda of eqs. 8-10) must be > 0; got {c.lam}. Fix: lam=0.1 (the paper)")
    if c.bce_target not in BCE_TARGETS:
        raise ValueError(f"bce_target must be one of {BCE_TARGETS}; got {c.bce_target!r}. Fix: bce_target='alternate' "
                         "(the paper) or 'kmeans_or_labels' (the authors' code)")
    if not 0 <= c.kmeans_probability <= 1:
        raise ValueError(f"kmeans_probability must be in [0, 1]; got {c.kmeans_probability}. Fix: 0.6 (authors' code)")


def _check_loop_fields(c: ADLConfig) -> None:
    """What the training loop and the pseudo-anomaly synthesis check where they are used."""
    if c.epochs < 1 or c.steps_per_epoch < 1 or c.n_normal < 1 or c.n_pseudo < 1 or c.pool_size < 1:
        raise ValueError(f"epochs, steps_per_epoch, n_normal, n_pseudo and pool_size must be at least 1; got "
                         f"{c.epochs}, {c.steps_per_epoch}, {c.n_normal}, {c.n_pseudo}, {c.pool_size}")
    if c.burn_in < 0:
        raise ValueError(f"burn_in must be at least 0 epochs; got {c.burn_in}. Fix: burn_in=2 (module docstring)")
    if c.lr <= 0:
        raise ValueError(f"lr must be > 0; got {c.lr}. Fix: lr=2e-4 (the paper)")
    lo, hi = c.beta_range
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"beta_range must satisfy 0 <= low <= high <= 1; got {c.beta_range}. Fix: (0.1, 1.0) (ADL)")


# Table 2 (its columns, left to right): the switches of each row, as the paper's table ticks them.
# With use_soft off the deviation loss is l_dev (eq. 4); with it on, l_soft (eq. 5, which needs the BCE head's p).
ABLATIONS = {
    "DL": dict(use_reweight=False, use_bce=False, use_soft=False, use_seg=False),
    "Wt-DL": dict(use_reweight=True, use_bce=False, use_soft=False, use_seg=False),
    "DL-CE": dict(use_reweight=False, use_bce=True, use_soft=False, use_seg=False),
    "SoftDL-CE": dict(use_reweight=False, use_bce=True, use_soft=True, use_seg=False),
    "Wt-SoftDL-CE": dict(use_reweight=True, use_bce=True, use_soft=True, use_seg=False),
    "Proposed": dict(use_reweight=True, use_bce=True, use_soft=True, use_seg=True),
}


# ----------------------------------------------------------------------------- model
class ADLHeads(nn.Module):
    """The three heads on a backbone's levels (a list of [B, C_l, h_l, w_l], level 2 first).

    The score head and the segmentation head's first layer are 1x1 convolutions of the concatenated,
    upsampled levels; they are computed level by level (``conv1x1_on_levels``, the same numbers).

    Derived in notebook 04, §1 (The model, piece by piece).
    """

    def __init__(self, channels: list[int], topk_ratio: float = 0.1, seg_hidden: int = 64):
        super().__init__()
        c = sum(channels)
        self.score_head = TopKScoreHead(c, topk_ratio)
        self.cls_head = ClassificationHead(channels[-1])
        self.seg_in = nn.Conv2d(c, seg_hidden, 1)
        self.seg_out = nn.Sequential(nn.BatchNorm2d(seg_hidden), nn.ReLU(inplace=True), nn.Conv2d(seg_hidden, 2, 1))

    def forward(self, maps: list[torch.Tensor], size, seg: bool = True) -> dict:
        """``seg=False`` skips the segmentation head (a run that does not train it)."""
        score, patch = self.score_head(maps)  # [B], [B, 1, H/8, W/8]
        out = {"score": score, "patch": patch, "logit": self.cls_head(maps[-1])}
        if seg:
            logits = self.seg_out(conv1x1_on_levels(self.seg_in, maps))  # [B, 2, H/8, W/8]
            out["seg"] = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)  # [B, 2, H, W]
        return out


class ADLModel(nn.Module):
    """Backbone + :class:`ADLHeads`; ``forward(images [B, 3, H, W] in [0, 1])`` -> score, patch, logit, seg.

    ``history``: the training history, once :func:`fit` (or :func:`load`) has attached it.

    Derived in notebook 04, §1 (The model, piece by piece).
    """

    def __init__(self, config: ADLConfig):
        super().__init__()
        self.config = config
        self.history: dict | None = None
        self.backbone = make_backbone(config.backbone, pretrained=config.pretrained, layers=config.layers,
                                      normalize=config.normalize_input)
        self.frozen = not config.train_backbone
        if self.frozen:
            self.backbone.requires_grad_(False)
        # the shared trainable part (frozen backbone only): None, a neck, or a copy of the top stage
        self.shared = None
        if config.shared == "neck":
            self.shared = SharedNeck(self.backbone.channels, config.neck_width)
        elif config.shared == "top-stage":
            self.shared = TopStage(self.backbone, config.top_stage_bn)
        self.heads = ADLHeads(self.shared.channels if self.shared is not None else self.backbone.channels,
                              config.topk_ratio)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:  # a frozen backbone keeps its BatchNorm statistics
            self.backbone.eval()
        return self

    def shared_levels(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        """The levels the heads read: the backbone's, or the shared trainable part's output on them."""
        return levels if self.shared is None else self.shared(levels)

    def from_levels(self, levels: list[torch.Tensor], size, seg: bool = True) -> dict:
        """The heads' outputs from the backbone's levels (cached ones in the frozen settings)."""
        return self.heads(self.shared_levels(levels), size, seg)

    def forward(self, x: torch.Tensor, seg: bool = True, seg_size=None) -> dict:
        """``seg_size``: the anomaly map's size (default: the input's)."""
        return self.from_levels(self.backbone(x), seg_size or x.shape[-2:], seg)


# ----------------------------------------------------------------------------- frozen setting: a pseudo-anomaly pool
# (the features of images are computed once, by adlkit.features)
@dataclass
class PseudoPool:
    """Frozen setting: ``size`` pseudo-anomalies, their masks (bool [P, 1, S, S]) and backbone levels."""

    features: list[torch.Tensor]
    masks: torch.Tensor
    source_kind: str

    def __len__(self) -> int:
        return self.masks.shape[0]


def pseudo_pool(config: ADLConfig, net, images: torch.Tensor, device=None, chunk: int = 64) -> PseudoPool:
    """``config.pool_size`` pseudo-anomalies on bases drawn from ``images`` (uint8 [N, 3, S, S]), made
    with their own generators (seeded from ``config.seed``, so the training stream does not depend on
    whether the pool was remembered), featurised by the frozen ``net`` once.

    Kept in memory for the process and on disk under ``ADLKIT_CACHE/pools`` (keyed by the backbone and
    its weights, the pool's settings and the base images), so a notebook reuses a CLI grid's pools.
    """
    device = torch.device(device) if device is not None else next(net.parameters()).device
    pseudo = PseudoAnomaly(config.image_size, sources=config.sources, beta_range=config.beta_range, device=device)
    key = (backbone_key(net), "pool", config.pool_size, config.seed, config.image_size, tuple(config.beta_range),
           pseudo.source_kind, images_key(images))

    def compute():
        path = cache_dir() / "pools" / f"{hashlib.sha1(repr(key).encode()).hexdigest()[:20]}.pt"
        if path.exists():  # made by an earlier process (a CLI grid, a notebook) with the same settings
            saved = torch.load(path, map_location=device, weights_only=True)
            return PseudoPool(saved["features"], saved["masks"], saved["source_kind"])
        pool = make()
        training.save_atomic({"features": pool.features, "masks": pool.masks, "source_kind": pool.source_kind}, path)
        return pool

    def make():
        g_pick = torch.Generator().manual_seed(config.seed + 2)
        g_synth = torch.Generator(device=device).manual_seed(config.seed + 3)
        bases = torch.randint(len(images), (config.pool_size,), generator=g_pick)
        net.eval()  # a frozen backbone keeps its BatchNorm statistics
        feats, masks = [], []
        for idx in bases.split(chunk):
            fake, mask, _ = pseudo(images[idx].to(device).float() / 255, g_synth)
            feats.append(features(net, fake))
            masks.append(mask.bool())
        return PseudoPool([torch.cat(level) for level in zip(*feats)], torch.cat(masks), pseudo.source_kind)

    return remember(key, compute)


# ----------------------------------------------------------------------------- data and batches
@dataclass
class ADLData:
    """What Algorithm 1 samples from: the normal-labelled training images (uint8; end to end) or their
    frozen features (a list of levels; frozen setting), and the frozen setting's pseudo-anomaly pool."""

    normal: torch.Tensor | list[torch.Tensor]
    contaminated: torch.Tensor  # bool [N]: ground truth, only for the history of weights
    pool: PseudoPool | None
    pseudo: PseudoAnomaly | None  # end to end: synthesises each batch's pseudo-anomalies
    backbone: nn.Module | None = None  # frozen: the backbone that made the features

    def __len__(self) -> int:
        return len(self.contaminated)

    def take(self, index: torch.Tensor):
        """Model inputs for these normal images: float images in [0, 1], or their levels."""
        if isinstance(self.normal, list):
            return [level[index] for level in self.normal]
        return self.normal[index].float() / 255


def prepare_data(config: ADLConfig, model: ADLModel, train: ImageDataset, device,
                 pool_from: ImageDataset | None = None) -> ADLData:
    """Decode the training set once; in the frozen setting also featurise it and build the pool.

    ``pool_from``: the images the pool's pseudo-anomalies are made on (default: the normal-labelled
    training images). :func:`run_contaminated` passes the uncontaminated training set, so every
    contamination level of a seed trains on the same pseudo-anomalies (a controlled comparison, and
    one pool to featurise instead of one per level); contamination still enters through the
    normal-labelled images, as in the paper.

    Derived in notebook 04, §3 (The training loop).
    """
    if train.image_size != config.image_size:
        raise ValueError(f"dataset image_size {train.image_size} != config.image_size {config.image_size}")
    cache = cache_tensors(train, device)
    normal = torch.nonzero(cache.labels == 0)[:, 0]
    if len(normal) == 0:
        raise ValueError("the training set has no normal-labelled images")
    images = cache.images[normal]
    contaminated = (cache.anomalous[normal] == 1).cpu()
    if not config.train_backbone:
        bases = images
        if pool_from is not None:
            base_cache = cache_tensors(pool_from, device)
            bases = base_cache.images[base_cache.labels == 0]
        return ADLData(featurize(model.backbone, images), contaminated, pseudo_pool(config, model.backbone, bases),
                       None, model.backbone)
    pseudo = PseudoAnomaly(config.image_size, sources=config.sources, beta_range=config.beta_range, device=device)
    return ADLData(images, contaminated, None, pseudo)


def _cat(a, b):
    return [torch.cat([x, y]) for x, y in zip(a, b)] if isinstance(a, list) else torch.cat([a, b])


def sample_batch(data: ADLData, config: ADLConfig, gens: dict) -> dict:
    """n_normal normal-labelled images (label 0, empty masks) + n_pseudo pseudo-anomalies (label 1, Perlin masks).

    End to end, the pseudo-anomalies are made now on other normal-labelled images; frozen, they are
    drawn from the pool. Returns ``inputs`` (images or levels), ``masks``, ``labels`` and ``normal_index``.

    Derived in notebook 04, §3 (The training loop, step 1).
    """
    if data.pool is not None:
        normal_index = torch.randint(len(data), (config.n_normal,), generator=gens["cpu"])
        fake_index = torch.randint(len(data.pool), (config.n_pseudo,), generator=gens["cpu"])
        fake = [level[fake_index] for level in data.pool.features]
        fake_masks = data.pool.masks[fake_index] if config.use_seg else None  # only the focal loss needs them
    else:
        pick = torch.randint(len(data), (config.n_normal + config.n_pseudo,), generator=gens["cpu"])
        normal_index = pick[:config.n_normal]
        fake, fake_masks, _ = data.pseudo(data.take(pick[config.n_normal:]), gens["device"])
    inputs = _cat(data.take(normal_index), fake)
    masks = None if fake_masks is None else torch.cat([fake_masks.new_zeros(config.n_normal, *fake_masks.shape[1:]),
                                                       fake_masks]).float()
    if masks is not None and config.seg_loss_size and config.seg_loss_size != masks.shape[-1]:
        masks = F.adaptive_max_pool2d(masks, config.seg_loss_size)  # a cell with any defect pixel is a defect
    labels = torch.cat([torch.zeros(config.n_normal), torch.ones(config.n_pseudo)]).to(fake[0].device if
                                                                                         isinstance(fake, list) else fake.device)
    return {"inputs": inputs, "masks": masks, "labels": labels, "normal_index": normal_index}


def forward(model: ADLModel, inputs, size: int, seg: bool = True) -> dict:
    """The model on a batch's inputs: images (end to end) or cached levels (frozen: the heads only);
    the anomaly map comes out at ``size`` x ``size``.

    Derived in notebook 04, §3 (The training loop, step 2)."""
    return model.from_levels(inputs, (size, size), seg) if isinstance(inputs, list) else model(inputs, seg, (size, size))


# ----------------------------------------------------------------------------- one step of Algorithm 1
def kmeans_labels(scores: torch.Tensor, iters: int = 10) -> torch.Tensor:
    """k-means with k = 2 on 1-D scores (initialised at min and max): 1 for the high cluster."""
    s = scores.detach().float().flatten()
    lo, hi = s.min(), s.max()
    if hi - lo < 1e-12:
        return torch.zeros_like(s)
    for _ in range(iters):
        assign = (s - hi).abs() < (s - lo).abs()
        if assign.all() or (~assign).all():
            break
        lo, hi = s[~assign].mean(), s[assign].mean()
    return ((s - hi).abs() < (s - lo).abs()).float()


def bce_target(config: ADLConfig, step: int, scores: torch.Tensor, labels: torch.Tensor,
               generator: torch.Generator | None = None, after_burn_in: bool = True) -> torch.Tensor | None:
    """The classification head's target at a global ``step`` (None when the head is off).

    ``"labels"``: y. ``"alternate"`` (adlkit's reading of the paper): y on even steps, k-means(2) labels
    of the batch's scores on odd steps. ``"kmeans_or_labels"`` (authors' code): max(k-means, y) with
    probability ``kmeans_probability`` (one draw from ``generator``), else y. With ``hard_burn_in``
    (authors' code) the target is y during burn-in (``after_burn_in=False``).

    Derived in notebook 04, §3 (The training loop, step 4); the targets are §2's item 3 (eq. 6).
    """
    if not config.use_bce:
        return None
    y = labels.float()
    if config.hard_burn_in and not after_burn_in:
        return y
    if config.bce_target == "labels":
        return y
    if config.bce_target == "alternate":
        return y if step % 2 == 0 else kmeans_labels(scores)
    # "kmeans_or_labels" (ADLConfig checks that bce_target is one of BCE_TARGETS)
    draw = torch.rand((), generator=generator, device=generator.device if generator is not None else "cpu")
    return torch.maximum(kmeans_labels(scores), y) if draw.item() < config.kmeans_probability else y


def adl_step(out: dict, labels: torch.Tensor, masks: torch.Tensor, mu_r: torch.Tensor, sd_r: torch.Tensor,
             target: torch.Tensor | None, config: ADLConfig, after_burn_in: bool,
             seg_rows: torch.Tensor | None = None) -> dict:
    """The loss terms of one step of Algorithm 1, from given inputs (nothing random happens here).

    ``out``: the model's ``score`` [B], ``logit`` [B] and ``seg`` [B, 2, H, W]; ``labels`` [B] (0 normal-
    labelled, 1 pseudo-anomaly); ``masks`` [B, 1, H, W]; ``mu_r``, ``sd_r``: reference statistics (eq. 3);
    ``target``: the BCE target (:func:`bce_target`). ``after_burn_in``: weights by eqs. 8-10 (else uniform);
    with ``hard_burn_in`` also l_soft instead of l_dev. Returns ``dev``, ``bce``, ``seg`` (scalars, 0 when
    switched off), ``total`` (what is optimised), and per sample ``l_dev``, its weights ``w_dev`` and ``l_bce``
    (None when the BCE head is off).
    ``seg_rows`` (bool [B], default all): the rows whose masks the focal loss learns from (multi-cue ADL leaves
    out labelled anomalies that carry image labels only).

    Eqs. 3-5 and 7-11 are DevNet's deviation step with ADL's switches
    (:func:`adlkit.methods.deviation.deviation_step`): l_soft needs the classification head's p, so rows
    without BCE use l_dev; weights are uniform unless ``use_reweight``. ADL adds the focal loss.

    Derived in notebook 04, §2 (One training step of Algorithm 1, Exercise 1: the loss of one step).
    """
    if config.use_bce and target is None:
        raise ValueError("use_bce is on: pass the BCE target (adlkit.methods.adl.bce_target)")
    terms = deviation_step(out["score"], out["logit"], labels, mu_r, sd_r, target if config.use_bce else None,
                           after_burn_in, **_deviation_switches(config))  # eqs. 3-5, 7-11
    terms["seg"] = out["score"].new_zeros(())
    if config.use_seg:
        seg, target_masks = out["seg"].float(), masks
        if seg_rows is not None and not bool(seg_rows.all()):
            rows = seg_rows.to(seg.device)
            seg, target_masks = seg[rows], masks[rows]
        terms["seg"] = focal_loss(seg, target_masks, gamma=config.focal_gamma, reduction="mean")
    terms["total"] = terms["total"] + terms["seg"]  # eq. 11 plus the focal term
    return terms


def _deviation_switches(config: ADLConfig) -> dict:
    """ADL's Table 2 switches as the deviation step's (:data:`adlkit.methods.deviation.STEP_SWITCHES`)."""
    return {"margin": config.margin, "soft": config.use_soft and config.use_bce,  # eq. 5 needs the BCE head's p
            "reweight": config.reweight if config.use_reweight else "uniform", "lam": config.lam,
            "alpha": config.alpha, "within_label": config.within_label, "hard_burn_in": config.hard_burn_in}


def _contaminated_weight(terms: dict, batch: dict, data: ADLData, n_batch: int) -> tuple[float, int, float, int]:
    """Sum and count of the weights (x batch size, so 1 = uniform) of contaminated and clean normal-labelled images."""
    cont = data.contaminated[batch["normal_index"]]
    w = terms["w_dev"][:len(cont)].detach().cpu() * n_batch
    return float(w[cont].sum()), int(cont.sum()), float(w[~cont].sum()), int((~cont).sum())


# ----------------------------------------------------------------------------- training (Algorithm 1)
def train_adl(config: ADLConfig, train: ImageDataset, device=None, checkpoint_dir: str | Path | None = None,
              resume: bool = False, overwrite: bool = False, progress: bool = False,
              stop_after_epoch: int | None = None, sample=sample_batch, pool_from: ImageDataset | None = None
              ) -> tuple[ADLModel, dict]:
    """Train ADL on ``train`` (normal-labelled images, possibly contaminated). Returns (model, history).

    ``sample(data, config, gens)`` makes each batch (default :func:`sample_batch`; multi-cue ADL passes
    its own, which mixes in labelled anomalies). ``pool_from``: see :func:`prepare_data`.
    ``checkpoint_dir``: ``last.pt`` after every epoch, never replacing an existing one unless
    ``overwrite`` or ``resume``; a resumed run equals an uninterrupted one.
    ``history``: per-epoch mean losses and the mean weight (x batch size) given to contaminated vs clean
    normal-labelled images, plus the training time. :func:`fit` returns the model with the history attached.

    Derived in notebook 04, §3 (The training loop: three steps written out equal these, parameter for
    parameter) and §6b (A shared trainable part: the same loop in the neck and top-stage settings).
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    gens = training.generators(config.seed, device)  # cpu: batches, reference draws, coins; device: synthesis
    with training.seeded(config.seed):
        model = ADLModel(config).to(device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    data = prepare_data(config, model, train, device, pool_from)
    ckpt = Path(checkpoint_dir) / "last.pt" if checkpoint_dir is not None else None
    states = {"model": model, "optimizer": optimizer}
    start, history = training.start_or_resume(ckpt, config, states, gens, resume=resume, overwrite=overwrite)
    history = history or training.new_history("loss", "dev", "bce", "seg", "weight_clean", "weight_contaminated",
                                              backbone=model.backbone.name, weights=model.backbone.weights,
                                              train_backbone=config.train_backbone, training=config.training)
    t0 = time.perf_counter() - history["seconds"]
    use_amp = config.amp and device.type == "cuda"
    seg_size = config.seg_loss_size or config.image_size
    model.train()
    for epoch in _epochs(start, config, progress):
        after = epoch >= config.burn_in  # burn-in: uniform weights (and hard labels with hard_burn_in)
        sums = dict.fromkeys(("total", "dev", "bce", "seg", "w_cont", "n_cont", "w_clean", "n_clean"), 0.0)
        for step in range(config.steps_per_epoch):
            batch = sample(data, config, gens)  # 1. n normal-labelled images + n (pseudo-)anomalies
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                out = forward(model, batch["inputs"], seg_size, config.use_seg)  # 2. s, p, anomaly map
            mu_r, sd_r = reference_stats(config.m, generator=gens["cpu"], device=device)  # 3. r ~ N(0, 1), eq. 3
            target = bce_target(config, epoch * config.steps_per_epoch + step, out["score"], batch["labels"],
                                gens["cpu"], after)  # 4. labels or k-means labels
            terms = adl_step(out, batch["labels"], batch["masks"], mu_r, sd_r, target, config, after,
                             batch.get("seg_rows"))  # 5. eqs. 4-10
            training.check_finite(terms["total"], f"epoch {epoch}, step {step}",
                                  f"lower the learning rate (now {config.lr}) or check the data for NaN")
            optimizer.zero_grad(set_to_none=True)  # 6. one Adam step on the weighted sum
            terms["total"].backward()
            optimizer.step()
            for k in ("total", "dev", "bce", "seg"):
                sums[k] += float(terms[k].detach())
            for k, v in zip(("w_cont", "n_cont", "w_clean", "n_clean"), _contaminated_weight(terms, batch, data,
                                                                                            len(batch["labels"]))):
                sums[k] += v
        means = {("loss" if k == "total" else k): sums[k] / config.steps_per_epoch for k in ("total", "dev", "bce", "seg")}
        training.log_epoch(history, epoch, t0, **means, weight_clean=sums["w_clean"] / max(sums["n_clean"], 1),
                           weight_contaminated=sums["w_cont"] / sums["n_cont"] if sums["n_cont"] else None)
        if ckpt is not None:
            training.save_checkpoint(ckpt, config, states, epoch, history, gens)
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            break
    model.eval()
    return model, history


def _epochs(start: int, config: ADLConfig, progress: bool):
    if not progress:
        return range(start, config.epochs)
    from tqdm.auto import tqdm

    return tqdm(range(start, config.epochs), desc="ADL", initial=start, total=config.epochs)


def load_checkpoint(path: str | Path, device="cpu", config_class=ADLConfig) -> dict:
    """A checkpoint of :func:`train_adl`: the rebuilt ``model``, ``config``, ``epoch``, ``history``."""
    payload = training.load_checkpoint(path, device)
    config = training.config_from_json(config_class, payload["config"])
    model = ADLModel(replace(config, pretrained=False)).to(device)
    model.load_state_dict(payload["states"]["model"])
    return {"model": model.eval(), "config": config, "epoch": payload["epoch"], "history": payload["history"]}


# ----------------------------------------------------------------------------- scoring
def score_adl(model: ADLModel, test: ImageDataset, device=None, batch_size: int = 32) -> dict:
    """Image scores (the deviation score s) and anomaly maps, with the metrics they support.

    Maps come from the segmentation head when it was trained (``use_seg``), else from the score head's
    patch scores upsampled to the input (``maps_from`` says which; :func:`predict` makes both). Pixel
    metrics are computed over the whole test set when it has masks.

    Derived in notebook 04, §4 (Clean vs contaminated, and what reweighting does).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    cache = cache_tensors(test, device)
    out = predict(model, cache.images, batch_size)
    result = metrics.evaluate(out["score"], out["maps"], cache.anomalous.cpu().numpy(), cache.masks[:, 0].cpu())
    result["maps_from"] = "segmentation head" if model.config.use_seg else "patch scores"
    return result


def run_contaminated(config: ADLConfig, train: ImageDataset, test: ImageDataset, ratio: float, device=None,
                     leaky: bool = False, **train_kwargs) -> dict:
    """ADL's protocol end to end: contaminate (seeded by ``config.seed``), train, score what is left.

    Returns :func:`score_adl`'s result plus ``model`` (its ``history`` attached, as :func:`fit` returns it),
    ``history``, ``split`` (the :class:`adlkit.data.ProtocolSplit`: reports, contaminated images, the test set
    that was scored).

    Derived in notebook 04, §4 (Clean vs contaminated, and what reweighting does).
    """
    split = protocol_split(train, test, ratio, seed=config.seed, leaky=leaky)
    model = fit(config, split.train, device, pool_from=train, **train_kwargs)  # train_adl, history attached
    result = score_adl(model, split.test, device)
    result.update(model=model, history=model.history, split=split)
    return result


# ---- the common surface: Config, fit, predict, save, load, run
Config = ADLConfig
run = run_contaminated


def fit(config: ADLConfig, train: ImageDataset, device=None, **kw) -> ADLModel:
    """Train ADL on ``train`` (:func:`train_adl`, keyword arguments passed on) and return the trained model,
    in eval mode, with :func:`train_adl`'s history as ``model.history``."""
    model, history = train_adl(config, train, device, **kw)
    model.history = history
    return model


@torch.no_grad()
def predict(model: ADLModel, images: torch.Tensor, batch_size: int = 32) -> dict:
    """The model on uint8 or [0, 1] float images [N, 3, S, S]; frozen models reuse remembered features.

    Returns CPU float tensors: ``scores`` [N] (the deviation score s: higher = more anomalous), ``maps``
    [N, S, S] (as :func:`score_adl` makes them: the segmentation head's softmax when ``use_seg``, else the
    patch scores upsampled to the input), and the model's own outputs ``score`` [N] (= ``scores``),
    ``patch`` [N, 1, S/8, S/8], ``logit`` [N] and ``seg`` [N, 2, S, S].
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [N, 3, S, S] (uint8, or float in [0, 1]); got {tuple(images.shape)}")
    model.eval()
    device = next(model.parameters()).device
    outs = []
    for chunk in images.split(batch_size):
        x = (chunk.float() / 255 if chunk.dtype == torch.uint8 else chunk.float()).to(device)
        maps = featurize(model.backbone, chunk) if model.frozen else model.backbone(x)
        out = model.from_levels(maps, x.shape[-2:])
        outs.append({k: v.float().cpu() for k, v in out.items()})
    if not outs:
        raise ValueError("predict needs at least one image")
    out = {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
    out["scores"] = out["score"]
    if model.config.use_seg:
        out["maps"] = out["seg"].softmax(1)[:, 1]
    else:
        out["maps"] = F.interpolate(out["patch"], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return out


def save(model: ADLModel, path: str | Path, overwrite: bool = False, tags: dict | None = None) -> Path:
    """Write the trained model to one file (:mod:`adlkit.modelfile`); an existing file is refused unless
    ``overwrite``. ``state`` and ``meta`` are :func:`model_state`'s."""
    if type(model.config) is not ADLConfig:
        raise TypeError(f"adl.save writes ADL models; this one's config is a {type(model.config).__name__}: save it "
                        "with its own method's save (the state is adl.model_state's)")
    state, meta = model_state(model)
    return modelfile.write(path, "adl", model.config, state, meta, overwrite, tags)


def load(path: str | Path, device=None) -> ADLModel:
    """The model :func:`save` wrote, in eval mode on ``device`` (default CPU), its history attached: its
    predictions equal the saved model's. A frozen ImageNet backbone is rebuilt from its name (its weights
    must be available here, as for training; a checksum tells a different network apart)."""
    config, state, meta = modelfile.read(path, "adl", ADLConfig, device)
    return model_from_state(config, state, meta, path, device)


def model_state(model: ADLModel) -> tuple[dict, dict]:
    """(state, meta) of a model file: ``state`` = ``heads`` (the three heads' state dict), ``shared`` (the neck
    or the top stage's copy, when ``config.shared``) and ``backbone`` (when it was fine-tuned end to end, or
    has random weights that no name rebuilds); ``meta`` = the backbone's name, weights and checksum
    (:func:`adlkit.modelfile.backbone_meta`) and ``history`` (``model.history``)."""
    net = model.backbone
    state = {"heads": modelfile.cpu_state(model.heads)}
    if model.shared is not None:
        state["shared"] = modelfile.cpu_state(model.shared)
    state.update({"backbone": modelfile.cpu_state(net)} if not model.frozen else modelfile.backbone_state(net))
    return state, {**modelfile.backbone_meta(net), "history": model.history}


def model_from_state(config: ADLConfig, state: dict, meta: dict, path="the model file", device=None) -> ADLModel:
    """The :class:`ADLModel` that :func:`model_state` describes, in eval mode on ``device`` (default CPU)."""
    with torch.random.fork_rng(devices=[]):  # random inits that are overwritten: the global RNG is left alone
        model = ADLModel(modelfile.rebuild_config(config, meta, stored="backbone" in state))
    model.config = config
    modelfile.restore_backbone(model.backbone, state.get("backbone"), meta, path)
    if model.shared is not None:
        model.shared.load_state_dict(state["shared"])
    model.heads.load_state_dict(state["heads"])
    model.history = meta.get("history")
    return model.to(device if device is not None else "cpu").eval()
