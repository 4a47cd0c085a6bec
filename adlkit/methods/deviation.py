"""Deviation learning on frozen features: DevNet's head, ADL's soft deviation and instance reweighting.

The heads-only version of ADL used by notebooks 02 and 03: the backbone is frozen and its features
are computed once, so the effect of each loss and of reweighting can be studied in seconds on a CPU.
One training step is ADL's (:func:`adlkit.methods.adl.adl_step`, Algorithm 1) without the backbone and
the segmentation head, with the labels as the BCE target:

1. s = TopKScoreHead(f) (eq. 2);  (mu_R, sigma_R) from m reference draws (eq. 3);  z = (s - mu_R) / sigma_R
2. l_dev = deviation_loss(z, y) (eq. 4), or with ``soft``: soft_deviation_loss(z, p) (eq. 5) in every
   epoch (Algorithm 1), p = sigmoid(ClassificationHead(f)) detached; ``hard_burn_in`` (the authors' code):
   eq. 4 during burn-in, eq. 5 after it
3. l_bce = BCE(ClassificationHead(f), y)
4. weights per minibatch: uniform during burn-in, then ``instance_weights`` of l_dev and of l_bce
   separately (eqs. 8-10), normalised over the whole minibatch (eqs. 7 and 11); ``within_label=True`` is
   adlkit's option to weigh each label's samples among themselves (``adlkit.reweight.weights_within_labels``);
   loss = sum_i w_i l_dev,i + sum_i v_i l_bce,i

``history`` records, per epoch, the mean losses and the mean weight (times the batch size, so 1 =
uniform) that each sample group received - e.g. clean normals vs contaminated anomalies.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..losses import reference_stats
from ..models.backbone import concat_levels
from ..models.heads import ClassificationHead, TopKScoreHead
from .adl import ADLConfig, adl_step

__all__ = ["CLEAN", "CONTAMINATED", "PSEUDO", "DeviationConfig", "DeviationHeads", "backbone_features", "feature_split",
           "score_deviation", "train_deviation_heads"]


@dataclass
class DeviationConfig:
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


    def as_adl(self) -> ADLConfig:
        """The same losses as ADL's switches: no segmentation head, BCE against the labels."""
        return ADLConfig(margin=self.margin, topk_ratio=self.topk_ratio, m=self.m, use_soft=self.soft, use_bce=True,
                         use_seg=False, use_reweight=self.reweight != "uniform",
                         reweight=self.reweight if self.reweight != "uniform" else "alpha", lam=self.lam,
                         alpha=self.alpha, within_label=self.within_label, hard_burn_in=self.hard_burn_in,
                         burn_in=self.burn_in, bce_target="labels", seed=self.seed)


class DeviationHeads(nn.Module):
    def __init__(self, in_channels: int, topk_ratio: float = 0.1):
        super().__init__()
        self.score = TopKScoreHead(in_channels, topk_ratio)
        self.cls = ClassificationHead(in_channels)


def train_deviation_heads(features: torch.Tensor, labels: torch.Tensor, config: DeviationConfig,
                          groups: torch.Tensor | None = None) -> tuple[DeviationHeads, dict]:
    """Train the heads on precomputed ``features`` [N, C, h, w] with training labels [N] (0/1).

    ``groups`` [N] (ints) only label samples for the history (e.g. 0 clean, 1 contaminated, 2 pseudo-anomaly).
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
    step_config = config.as_adl()
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
            s, _ = heads.score(f)
            mu, sigma = reference_stats(config.m, generator=g, device=device)
            logit = heads.cls(f)
            terms = adl_step({"score": s, "logit": logit}, y, None, mu, sigma, y, step_config, after_burn_in)
            loss, l_dev, w_dev = terms["total"], terms["l_dev"], terms["w_dev"]
            l_bce = F.binary_cross_entropy_with_logits(logit.detach(), y, reduction="none")  # for the history
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch}: lower lr (now {config.lr})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums.index_add_(0, groups[idx], w_dev.detach() * len(idx))
            counts.index_add_(0, groups[idx], torch.ones_like(w_dev))
            l_dev_sum += l_dev.sum().item()
            l_bce_sum += l_bce.sum().item()
        history["epoch"].append(epoch)
        history["l_dev"].append(l_dev_sum / len(labels))
        history["l_bce"].append(l_bce_sum / len(labels))
        history["weight_by_group"].append((sums / counts.clamp_min(1)).tolist())
    history["seconds"] = time.perf_counter() - t0
    return heads, history


@torch.no_grad()
def score_deviation(heads: DeviationHeads, features: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Image anomaly scores (the top-K mean of eq. 2) for precomputed features."""
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
    """
    from ..data import MVTecLike, cache_tensors, contaminate

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
