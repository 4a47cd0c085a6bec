"""DevNet's deviation head and the deviation step that ADL builds on, on frozen features.

G. Pang, C. Shen, A. van den Hengel. *Deep Anomaly Detection with Deviation Networks.* KDD 2019 (DevNet);
the soft deviation and the reweighting are ADL's (A. S. Das, G. Pang, M. Bhuyan, arXiv:2411.09558).

This module owns what DevNet and ADL share. :func:`deviation_step` is one minibatch's loss of the top-K
deviation head (with ADL's classification head and instance weights as switches);
:func:`adlkit.methods.adl.adl_step` is this step plus the segmentation head's focal loss. The import
runs adl -> deviation, in the order the notebooks teach (02 deviation, 03 reweighting, then 04 ADL).

The step, from the head's outputs (:func:`deviation_step`):

1. s = TopKScoreHead(f) (eq. 2);  (mu_R, sigma_R) from m reference draws (eq. 3);  z = (s - mu_R) / sigma_R
2. l_dev = deviation_loss(z, y) (eq. 4), or with ``soft``: soft_deviation_loss(z, p) (eq. 5) in every
   epoch (Algorithm 1), p = sigmoid(ClassificationHead(f)) detached; ``hard_burn_in`` (the authors' code):
   eq. 4 during burn-in, eq. 5 after it
3. l_bce = BCE(ClassificationHead(f), target) when there is a target (the labels, here)
4. weights per minibatch: uniform during burn-in, then ``instance_weights`` of l_dev and of l_bce
   separately (eqs. 8-10), normalised over the whole minibatch (eqs. 7 and 11); ``within_label=True`` is
   adlkit's option to weigh each label's samples among themselves (``adlkit.reweight.weights_within_labels``);
   loss = sum_i w_i l_dev,i + sum_i v_i l_bce,i

With its defaults (no classification head, uniform weights) the step is DevNet's loss.

The heads-only experiments of notebooks 02 and 03 (:func:`train_deviation_heads`): the backbone is frozen
and its features are computed once, so the effect of each loss and of reweighting can be studied in
seconds on a CPU. An epoch is one pass over a seeded permutation of the features, in minibatches, with
the labels as the BCE target. ``history`` records, per epoch, the mean losses and the mean weight (times
the batch size, so 1 = uniform) that each sample group received - e.g. clean normals vs contaminated
anomalies.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import MVTecLike, cache_tensors, contaminate
from ..losses import deviation_loss, reference_stats, soft_deviation_loss, z_score
from ..models.backbone import concat_levels
from ..models.heads import ClassificationHead, TopKScoreHead
from ..reweight import batch_weights

__all__ = ["CLEAN", "CONTAMINATED", "PSEUDO", "REWEIGHTS", "STEP_SWITCHES", "Config", "DeviationConfig",
           "DeviationHeads", "backbone_features", "deviation_step", "deviation_weights", "feature_split",
           "score_deviation", "train_deviation_heads"]

REWEIGHTS = ("uniform", "kl", "reverse_kl", "alpha")  # the instance weights after burn-in (eqs. 8-10, or none)
STEP_SWITCHES = ("margin", "soft", "reweight", "lam", "alpha", "within_label", "hard_burn_in")  # deviation_step's


@dataclass
class DeviationConfig:
    """The heads-only run of notebooks 02 and 03: :data:`STEP_SWITCHES` are :func:`deviation_step`'s
    switches (ADL sets the same ones from its own config), the rest is the training loop's."""

    margin: float = 5.0  # gamma of eq. 4 (paper 5, authors' code 10)
    topk_ratio: float = 0.1  # K = 10% of the patches (eq. 2)
    m: int = 5000  # reference draws (eq. 3)
    soft: bool = False  # soft deviation (eq. 5) in every epoch (Algorithm 1)
    reweight: str = "uniform"  # "uniform", "kl", "reverse_kl" or "alpha" after burn-in
    lam: float = 0.1
    alpha: float = 0.1
    burn_in: int = 5  # epochs with uniform weights (Algorithm 1, lines 7-10)
    hard_burn_in: bool = False  # True (authors' code): eq. 4 with the labels during burn-in, eq. 5 after it
    within_label: bool = False  # True (adlkit's option): weigh normal- and anomaly-labelled samples separately
    epochs: int = 30
    batch_size: int = 48
    lr: float = 2e-3
    seed: int = 0

    def __post_init__(self):
        if self.reweight not in REWEIGHTS:
            raise ValueError(f"reweight must be one of {REWEIGHTS}; got {self.reweight!r}. Fix: "
                             "DeviationConfig(reweight='alpha') (eq. 10) or 'uniform' (no reweighting)")
        if self.lam <= 0:
            raise ValueError(f"lam (lambda of eqs. 8-10) must be > 0; got {self.lam}. Fix: lam=0.1 (the paper)")
        if not 0 < self.topk_ratio <= 1:
            raise ValueError(f"topk_ratio must be in (0, 1]; got {self.topk_ratio}. Fix: topk_ratio=0.1 (eq. 2)")
        if self.m < 2:
            raise ValueError(f"m (reference draws, eq. 3) must be at least 2; got {self.m}. Fix: m=5000")
        if self.margin <= 0:
            raise ValueError(f"margin (gamma of eq. 4) must be > 0; got {self.margin}. Fix: margin=5.0 (the paper)")
        if self.epochs < 1 or self.batch_size < 1 or self.burn_in < 0:
            raise ValueError(f"epochs and batch_size must be at least 1 and burn_in at least 0; got epochs="
                             f"{self.epochs}, batch_size={self.batch_size}, burn_in={self.burn_in}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0; got {self.lr}. Fix: lr=2e-3")


class DeviationHeads(nn.Module):
    """DevNet's score head (1x1 conv -> |.| -> top-K mean, eq. 2) and ADL's classification head (GAP ->
    linear -> one logit) on one feature map [B, C, h, w].

    Derived in notebook 02, §4 (Scores from image features: one training step, written out).
    """

    def __init__(self, in_channels: int, topk_ratio: float = 0.1):
        super().__init__()
        self.score = TopKScoreHead(in_channels, topk_ratio)
        self.cls = ClassificationHead(in_channels)


# ----------------------------------------------------------------------------- the deviation step (DevNet, ADL)
def deviation_weights(losses: torch.Tensor, labels: torch.Tensor, reweight: str, lam: float, alpha: float,
                      within_label: bool, after_burn_in: bool) -> torch.Tensor:
    """Instance weights of per-sample losses (eqs. 7-11): uniform during burn-in (Algorithm 1, lines 7-10),
    then ``reweight``'s closed form, normalised over the minibatch (or within each label).

    Derived in notebook 03, §5 (Reweighting while training: whole minibatch (eqs. 7, 11) or within each label)."""
    method = reweight if after_burn_in else "uniform"
    return batch_weights(losses.float(), labels, method, lam, alpha, within_label)


def deviation_step(score: torch.Tensor, logit: torch.Tensor | None, labels: torch.Tensor, mu_r: torch.Tensor,
                   sd_r: torch.Tensor, target: torch.Tensor | None, after_burn_in: bool, *, margin: float = 5.0,
                   soft: bool = False, reweight: str = "uniform", lam: float = 0.1, alpha: float = 0.1,
                   within_label: bool = False, hard_burn_in: bool = False) -> dict:
    """The loss terms of one minibatch of the deviation head (nothing random happens here).

    ``score`` [B] (eq. 2), ``logit`` [B] the classification head's (None: DevNet, no head), ``labels`` [B]
    (0 normal-labelled, 1 anomaly), ``mu_r``, ``sd_r``: reference statistics (eq. 3), ``target`` [B]: the BCE
    target (None: no BCE term), ``after_burn_in``: weights by ``reweight`` (else uniform) and, with
    ``hard_burn_in``, l_soft instead of l_dev. The keyword switches are :data:`STEP_SWITCHES`.

    1. z = (s - mu_R) / sigma_R (eq. 3)
    2. l_dev = soft deviation (eq. 5) with p = sigmoid(logit), detached, when ``soft`` (every epoch, or after
       burn-in with ``hard_burn_in``); else the deviation loss (eq. 4) with the labels
    3. w = weights of l_dev (eqs. 8-10; uniform in burn-in), normalised over the minibatch (eqs. 7, 11)
    4. with a target: l_bce = BCE(logit, target), weighted by its own v

    Returns ``dev`` = sum_i w_i l_dev,i, ``bce`` = sum_i v_i l_bce,i (0 without a target), ``total`` = dev + bce,
    and per sample ``l_dev``, its weights ``w_dev`` and ``l_bce`` (None without a target).

    Derived in notebook 02, §4 (Scores from image features: eq. 4 on one minibatch, written out) and
    notebook 04, §2 (One training step of Algorithm 1, Exercise 1: it is ``adl_step`` without the focal loss).
    """
    y = labels.float()
    z = z_score(score.float(), mu_r, sd_r)  # eq. 3
    if soft and (after_burn_in or not hard_burn_in):
        if logit is None:
            raise ValueError("soft=True needs the classification head's logit (p of eq. 5); pass logit or soft=False")
        l_dev = soft_deviation_loss(z, torch.sigmoid(logit.float()), margin)  # eq. 5 (p is detached inside)
    else:
        l_dev = deviation_loss(z, y, margin)  # eq. 4
    w_dev = deviation_weights(l_dev, labels, reweight, lam, alpha, within_label, after_burn_in)  # eqs. 7-10
    terms = {"dev": (w_dev * l_dev).sum(), "l_dev": l_dev.detach(), "w_dev": w_dev, "bce": score.new_zeros(()),
             "l_bce": None}
    if target is not None:
        if logit is None:
            raise ValueError("a BCE target needs the classification head's logit; pass logit or target=None")
        l_bce = F.binary_cross_entropy_with_logits(logit.float(), target.float(), reduction="none")
        terms["bce"] = (deviation_weights(l_bce, labels, reweight, lam, alpha, within_label, after_burn_in)
                        * l_bce).sum()  # eq. 11's second sum
        terms["l_bce"] = l_bce.detach()
    terms["total"] = terms["dev"] + terms["bce"]
    return terms


# ----------------------------------------------------------------------------- the heads-only loop (notebooks 02-03)
def train_deviation_heads(features: torch.Tensor, labels: torch.Tensor, config: DeviationConfig,
                          groups: torch.Tensor | None = None) -> tuple[DeviationHeads, dict]:
    """Train the heads on precomputed ``features`` [N, C, h, w] with training labels [N] (0/1): per epoch,
    one pass over a seeded permutation in minibatches, each one :func:`deviation_step` with the labels as
    the BCE target, then one Adam step.

    ``groups`` [N] (ints) only label samples for the history (e.g. 0 clean, 1 contaminated, 2 pseudo-anomaly).

    Derived in notebook 02, §5 (Clean, contaminated, soft) and notebook 03, §5 (Reweighting while training).
    """
    if features.shape[0] != labels.shape[0]:
        raise ValueError(f"{features.shape[0]} feature maps but {labels.shape[0]} labels")
    device = features.device
    g = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):  # seeded head initialisation, global RNG left as it was
        torch.manual_seed(config.seed)
        heads = DeviationHeads(features.shape[1], config.topk_ratio).to(device)
    opt = torch.optim.Adam(heads.parameters(), lr=config.lr)
    labels = labels.to(device).float()
    groups = torch.zeros_like(labels, dtype=torch.long) if groups is None else groups.to(device).long()
    n_groups = int(groups.max()) + 1
    switches = {k: getattr(config, k) for k in STEP_SWITCHES}
    history = {"epoch": [], "l_dev": [], "l_bce": [], "weight_by_group": [], "config": asdict(config)}
    t0 = time.perf_counter()
    for epoch in range(config.epochs):
        after_burn_in = epoch >= config.burn_in
        order = torch.randperm(len(labels), generator=g).to(device)
        sums = torch.zeros(n_groups, device=device)
        counts = torch.zeros(n_groups, device=device)
        l_dev_sum = l_bce_sum = 0.0
        for start in range(0, len(order), config.batch_size):
            idx = order[start:start + config.batch_size]
            f, y = features[idx], labels[idx]
            s, _ = heads.score(f)  # eq. 2
            mu, sigma = reference_stats(config.m, generator=g, device=device)  # eq. 3
            terms = deviation_step(s, heads.cls(f), y, mu, sigma, y, after_burn_in, **switches)  # eqs. 3-11
            loss = terms["total"]
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch}: lower lr (now {config.lr})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            w_dev = terms["w_dev"].detach()
            sums.index_add_(0, groups[idx], w_dev * len(idx))
            counts.index_add_(0, groups[idx], torch.ones_like(w_dev))
            l_dev_sum += terms["l_dev"].sum().item()
            l_bce_sum += terms["l_bce"].sum().item()
        history["epoch"].append(epoch)
        history["l_dev"].append(l_dev_sum / len(labels))
        history["l_bce"].append(l_bce_sum / len(labels))
        history["weight_by_group"].append((sums / counts.clamp_min(1)).tolist())
    history["seconds"] = time.perf_counter() - t0
    return heads, history


@torch.no_grad()
def score_deviation(heads: DeviationHeads, features: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Image anomaly scores (the top-K mean of eq. 2) for precomputed features.

    Derived in notebook 02, §5 (Clean, contaminated, soft)."""
    out = [heads.score(features[i:i + batch_size])[0] for i in range(0, len(features), batch_size)]
    return torch.cat(out).cpu().numpy()


# ----------------------------------------------------------------------------- data for the heads-only experiments
CLEAN, CONTAMINATED, PSEUDO = 0, 1, 2  # sample groups of the training set


@torch.no_grad()
def backbone_features(net, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Frozen-backbone features at its first returned level: every level upsampled there and concatenated."""
    return torch.cat([concat_levels(net(chunk)) for chunk in images.split(batch_size)])


def feature_split(root, category: str, net, pseudo, image_size: int, ratio: float, seed: int = 0,
                  device="cpu") -> dict:
    """Features for one class under ADL's protocol, ready for :func:`train_deviation_heads`.

    Training set: the normal training images (group CLEAN, label 0), ``ratio`` contamination of test
    anomalies (group CONTAMINATED, label 0, leak-free), and one pseudo-anomaly per normal image made
    by ``pseudo`` (an ``adlkit.synth.PseudoAnomaly``; group PSEUDO, label 1). Test set: what is left.

    Derived in notebook 02, §4 (Scores from image features); notebook 03, §1 uses it too.
    """
    train, test = MVTecLike(root, category, "train", image_size), MVTecLike(root, category, "test", image_size)
    c_train, c_test, report = contaminate(train, test, ratio, seed=seed)
    tr, te = cache_tensors(c_train, device), cache_tensors(c_test, device)
    images = tr.images.float() / 255
    gen = torch.Generator(device=device).manual_seed(seed)
    fake, _, _ = pseudo(images[:len(train)], gen)
    n_clean, n_cont = len(train), len(c_train) - len(train)
    return {
        "train_features": backbone_features(net, torch.cat([images, fake])),
        "train_labels": torch.cat([torch.zeros(len(images)), torch.ones(len(fake))]),
        "train_groups": torch.cat([torch.full((n_clean,), CLEAN), torch.full((n_cont,), CONTAMINATED),
                                   torch.full((len(fake),), PSEUDO)]).long(),
        "test_features": backbone_features(net, te.images.float() / 255),
        "test_labels": te.anomalous.cpu().numpy(),
        "report": report,
    }


# ---- the common surface: Config (fit, predict, save, load: see below)
Config = DeviationConfig
# The heads here train on precomputed features, not images: they have no image-level fit/predict/save/load.
# :mod:`adlkit.methods.adl` has the whole surface for the model these heads are part of.
