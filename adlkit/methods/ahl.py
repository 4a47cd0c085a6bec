"""AHL: anomaly heterogeneity learning for open-set supervised anomaly detection, on cached features.

J. Zhu, C. Ding, Y. Tian, G. Pang. *Anomaly Heterogeneity Learning for Open-set Supervised Anomaly
Detection.* CVPR 2024 (arXiv:2310.12790).

A few labelled anomalies ("seen") and many normal images train a detector that must also catch anomaly
types it never saw. DevNet fits the seen anomalies' distribution; AHL instead learns from many
*heterogeneous* simulated anomaly distributions and weighs what each teaches:

* base model phi(x; theta) (DevNet, section 3.1): patch scores |1x1 conv(f)|, image score s = mean of the
  top 10%; z = (s - mu_R) / sigma_R against N(0, 1) reference draws;
  l_dev = (1 - y)|z| + y max(0, gamma - z)                                                 (DevNet)
* HADG (section 3.2): k-means (C clusters) of the normal features; one task per ordered pair (a, b),
  T = C(C - 1): support normals from cluster a, query normals from cluster b; the seen anomalies split in
  disjoint halves; pseudo-anomalies (CutMix, CutPaste, Perlin) from a different generator in support and
  query; each normal swapped for its pseudo-anomalous copy with probability 0.5.
* base models (section 3.3, eq. 1): every meta-iteration sets theta_i <- theta_g and trains it on its
  support set D_i^s: ``base_steps`` Adam steps (lr ``base_lr`` = 2e-4, section 4.1) on the *summed*
  deviation loss L_phi_i = sum_j l_dev(phi_i(x_j; theta_i), y_j) of a balanced support batch (eq. 1). The
  relative drift ||theta_i - theta_g|| / ||theta_g|| is recorded per task and epoch (``history["drift"]``):
  if theta_i never leaves theta_g, CDL and psi have nothing to act on.
* CDL (section 3.3): theta_g <- Adam (lr alpha = ``outer_lr`` = 2e-3) on
  L_cdl^+ = sum_i w_i sum_j l_dev(phi_i(x_j; theta_i(theta_g)), y_j) over the query sets D_i^q
  (eqs. 2-4), the gradient through the base models' training.
* importance (eqs. 5-7): psi - a two-layer BiLSTM (hidden 6), a fully-connected layer of 12 and the
  prediction layer (section 4.1, Adam lr 2e-3) - predicts each query sample's next scores under the T base
  models from its last K epochs (MSE, eq. 5); r_i = mean_j c_j (s_hat_ji - y_j)^2 over D'_i (eq. 6), with
  c_j = 1 for anomalies phi_i never trained on and 0.5 otherwise; w = softmax(-r) (eq. 7).
* inference: phi(x; theta_g) alone (section 3.1); the w-weighted ensemble of the adapted models is an
  extra row.

CPU design: the backbone is frozen (ImageNet EfficientNet-Lite0, level 4: 320 channels at stride 32) and
every image - training normals, their pseudo-anomalous copies (one per generator, synthesised once with
``pool_seed``), the test set - is featurised once and cached on disk. The base model is a 1x1 conv: the T
task models are one [T, C + 1] tensor and a meta-iteration is a few batched tensor products, with no
per-task loop. The paper fine-tunes a ResNet-18 DevNet first (448 px, two scales); adlkit does not.
Because the head is piecewise linear in theta, its gradient is locally constant, so d theta_i / d theta_g = I
almost everywhere - for SGD and for Adam steps alike: the second-order meta-gradient equals the first-order
one here (a test checks the general formula on a quadratic loss, and the equality on the head).

Names: the paper has no beta; its learning rate "for learning heterogeneous T base models" (section 4.1) is
``base_lr`` here (MAML's beta; ``inner_lr`` before). "base_lr = 0" (the row "AHL (no base training)") means
no base-model training: CDL becomes a w-weighted DevNet on the query batches.

Declared departures (the result rows carry the config): ``base_optimizer="sgd"`` and ``base_loss="mean"``
are the official code's base-model training (plain SGD steps p - 2e-4 grad on DevNet's batch-mean loss);
``psi_fc=0`` is its psi (BiLSTM -> ReLU -> prediction layer, no FC layer of 12); ``variant="authors"``
(AUTHORS_VARIANT) uses all three, and its training loop is kept apart (section "the authors' variant").

The rows one run reports are :data:`ROWS` (what :func:`fit` trains for each, as switches) and
:data:`ABLATIONS` (each row in words).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from torch import nn

from .. import metrics, modelfile
from ..config import cache_dir
from ..data import cache_tensors, open_set_split
from ..losses import deviation_loss, reference_stats, top_k_mean
from ..models.backbone import BACKBONES, STRIDES
from ..models.backbone import backbone as make_backbone
from ..synth import PseudoAnomaly, cutmix, cutpaste
from ..training import check_finite, save_atomic

__all__ = ["ABLATIONS", "AUTHORS_VARIANT", "GENERATORS", "ROWS", "AHLConfig", "Episodes", "FeatureBank",
           "ImportanceLSTM", "PsiSamples", "adapt", "authors_epoch", "authors_query_groups", "build_features",
           "cdl_epoch", "devnet_loss", "drift", "fit", "fit_psi", "hadg", "importance_weights",
           "importance_weights_authors", "init_theta", "meta_step", "meta_step_authors", "phi_scores",
           "psi_samples", "run_ahl", "sample_balanced", "score", "task_losses", "task_weights", "token_bank",
           "tokens", "train_ahl", "train_devnet",
           "Config", "AHLModel", "predict", "save", "load", "run"]

GENERATORS = ("cutmix", "cutpaste", "perlin")
NORMAL, SEEN, PSEUDO = 0, 1, 2  # sample groups of a balanced batch (1/3 each)


@dataclass
class AHLConfig:
    # features
    backbone: str = "efficientnet_lite0"
    pretrained: str = "auto"
    layer: int = 4  # Lite0 level 4: 320 channels, stride 32 (8 x 8 at 256 px)
    image_size: int = 256
    pool_seed: int = 0  # the pseudo-anomalous copies (one per normal image and generator): synthesised once
    sources: str | None = None  # Perlin textures (DTD); None: ADLKIT_TEXTURES or built-in
    # base model (DevNet)
    topk_ratio: float = 0.1
    margin: float = 5.0  # gamma of l_dev
    m: int = 5000  # reference draws
    # HADG
    n_clusters: int = 3  # C: T = C(C - 1) tasks
    swap_probability: float = 0.5  # a normal replaced by its pseudo-anomalous copy (code)
    # CDL
    init: str = "devnet"  # theta_g starts from the DevNet baseline's weights (the paper builds AHL on a trained
    # DevNet); "random": PyTorch's default initialisation
    base_lr: float = 2e-4  # the base models' learning rate (section 4.1; MAML's beta); 0: theta_i = theta_g
    base_steps: int = 10  # optimiser steps from theta_g per meta-iteration (eq. 1; the paper gives no count)
    base_optimizer: str = "adam"  # "adam": section 4.1; "sgd": the official code (theta - base_lr grad)
    base_loss: str = "sum"  # "sum": eq. 1's sum over the support batch; "mean": the official code (DevNet's mean)
    second_order: bool = False  # the graph of the inner steps: the head is piecewise linear (zero Hessian), so
    # the first-order meta-gradient is exact here (tested) and twice as fast; True for a head with curvature
    outer_lr: float = 2e-3  # alpha (Adam)
    steps_per_epoch: int = 20  # meta-iterations (outer steps) per epoch, DevNet's 20 batches per epoch
    batch_size: int = 48  # balanced: 1/3 normal, 1/3 seen, 1/3 pseudo (DevNet: 1/2 normal, 1/2 seen)
    epochs: int = 30
    # importance (psi)
    importance: bool = True  # False: uniform w ("AHL, uniform w")
    history_k: int = 5  # K epochs of scores in psi's input
    psi_hidden: int = 6  # the BiLSTM's hidden size (section 4.1)
    psi_fc: int = 12  # the fully-connected layer before the prediction layer (section 4.1); 0: the official code
    psi_lr: float = 2e-3
    psi_steps: int = 50  # full-batch Adam steps on psi per epoch
    c_unseen: float = 1.0  # c_j of eq. 6 for anomalies phi_i did not train on
    c_seen: float = 0.5  # ... and for everything else
    variant: str = "paper"  # "authors": the official code's training (AUTHORS_VARIANT below)
    authors_inner_steps: int = 40  # "authors": first-order steps after the one second-order step
    authors_query_batches: int = 20  # "authors": query batches whose losses are summed
    seed: int = 0

    def __post_init__(self):
        if self.variant not in ("paper", "authors"):
            raise ValueError(f"variant must be 'paper' or 'authors'; got {self.variant!r}")
        if self.init not in ("devnet", "random"):
            raise ValueError(f"init must be 'devnet' or 'random'; got {self.init!r}")
        if self.n_clusters < 2:
            raise ValueError(f"n_clusters must be at least 2 (T = C(C - 1) tasks); got {self.n_clusters}")
        if self.batch_size < 3:
            raise ValueError(f"batch_size must be at least 3 (a third normal, seen, pseudo); got {self.batch_size}")
        if self.base_optimizer not in ("adam", "sgd"):
            raise ValueError(f"base_optimizer must be 'adam' or 'sgd'; got {self.base_optimizer!r}")
        if self.base_loss not in ("sum", "mean"):
            raise ValueError(f"base_loss must be 'sum' or 'mean'; got {self.base_loss!r}")
        if self.history_k < 1 or self.base_steps < 0 or self.epochs < 1 or self.steps_per_epoch < 1:
            raise ValueError("history_k, epochs and steps_per_epoch must be at least 1 and base_steps at least 0")
        # what building the backbone, the losses and psi check where they are used, checked here once
        if self.backbone != "auto" and self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be 'auto' or one of {BACKBONES}; got {self.backbone!r}. Fix: "
                             "backbone='efficientnet_lite0' (section 'CPU design')")
        if self.pretrained not in (True, False, "auto"):
            raise ValueError(f"pretrained must be True, False or 'auto'; got {self.pretrained!r}")
        if self.layer not in STRIDES:
            raise ValueError(f"layer must be a backbone level among {tuple(STRIDES)}; got {self.layer!r}. Fix: layer=4")
        if not 0 < self.topk_ratio <= 1:
            raise ValueError(f"topk_ratio must be in (0, 1]; got {self.topk_ratio}. Fix: topk_ratio=0.1 (DevNet)")
        if self.m < 2:
            raise ValueError(f"m (reference draws) must be at least 2; got {self.m}. Fix: m=5000")
        if self.margin <= 0:
            raise ValueError(f"margin (gamma of l_dev) must be > 0; got {self.margin}. Fix: margin=5.0")
        if not 0 <= self.swap_probability <= 1:
            raise ValueError(f"swap_probability must be in [0, 1]; got {self.swap_probability}. Fix: 0.5 (the code)")
        if self.base_lr < 0 or self.outer_lr <= 0 or self.psi_lr <= 0:
            raise ValueError(f"base_lr must be >= 0 and outer_lr, psi_lr > 0; got {self.base_lr}, {self.outer_lr}, "
                             f"{self.psi_lr}")
        if self.psi_hidden < 1 or self.psi_fc < 0 or self.psi_steps < 1:
            raise ValueError(f"psi_hidden and psi_steps must be at least 1 and psi_fc at least 0; got "
                             f"{self.psi_hidden}, {self.psi_steps}, {self.psi_fc}")
        if self.authors_inner_steps < 0 or self.authors_query_batches < 1:
            raise ValueError(f"authors_inner_steps must be >= 0 and authors_query_batches >= 1; got "
                             f"{self.authors_inner_steps}, {self.authors_query_batches}")

    @property
    def n_tasks(self) -> int:
        return self.n_clusters * (self.n_clusters - 1)

    def ablation(self, name: str) -> AHLConfig:
        """The config :func:`fit` trains row ``name`` of :data:`ROWS` with (its AHLConfig switches applied)."""
        if name not in ROWS:
            raise ValueError(f"unknown AHL row {name!r}; rows: {list(ROWS)}")
        return dataclasses.replace(self, **_config_switches(ROWS[name]))


AUTHORS_VARIANT = """What ``variant="authors"`` changes (the official code, github.com/mala-lab/AHL, main.py):
1. a "cluster" of n images is the first n normal images of the list, not the cluster's members (nested sets);
2. the query's seen anomalies are the other half plus two of the support's, and support and query use the
   same pseudo-anomaly generator;
3. adaptation: SGD on the batch-mean loss (``base_lr``), one step from theta_g with its graph, then
   ``authors_inner_steps`` first-order steps (psi as ``psi_fc=0``: no FC layer of 12); the query loss is
   summed over ``authors_query_batches`` batches and weighted (0.5 + 0.5 w_i) once psi is trained (1/T
   before);
4. eq. 6 on raw scores: r_i = 0.5 e_normal + 0.5 e_pseudo + 1.0 e_seen, each e the per-query-set MSE means
   summed over the sets and divided by the group's total count; nothing excluded;
5. one outer Adam step per epoch, made at the start of the next epoch (the last epoch's is never made), the
   gradient clipped to norm 1, StepLR (x 0.1 every 10 epochs)."""


ABLATIONS = {  # the rows one run reports (same features, same episodes' data), in words; ROWS: as switches
    "DevNet": "seen anomalies only, balanced batches",
    "DevNet + pseudo": "seen anomalies and the pseudo-anomalies of every generator",
    "AHL (uniform w)": "CDL without psi: w_i = 1/T",
    "AHL (no base training)": "no base-model training (base_lr = 0, eq. 1 skipped): psi's w on a w-weighted DevNet",
    "AHL": "CDL with psi's importance weights; scored by theta_g (section 3.1)",
    "AHL ensemble": "the w-weighted adapted models theta_i of the last epoch",
}

# What fit trains for each row: ``train`` = "devnet" (train_devnet) or "ahl" (train_ahl); ``pseudo``: DevNet's batches
# also hold the pseudo-anomalies; ``ensemble``: no training, the "AHL" row's w-weighted theta_i scored;
# ``variants``: the variants that report the row; every other key is an AHLConfig field (AHLConfig.ablation).
ROWS = {
    "DevNet": {"train": "devnet"},
    "DevNet + pseudo": {"train": "devnet", "pseudo": True},
    "AHL (uniform w)": {"train": "ahl", "importance": False},
    # with variant="authors" base_steps is not used (authors_inner_steps is): the row would be "AHL" again
    "AHL (no base training)": {"train": "ahl", "base_steps": 0, "variants": ("paper",)},
    "AHL": {"train": "ahl"},
    "AHL ensemble": {"train": "ahl", "ensemble": True},
}
_ROW_KEYS = ("train", "pseudo", "ensemble", "variants")  # the keys of a ROWS entry that are not config fields


def _config_switches(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in _ROW_KEYS}


# ----------------------------------------------------------------------------- features (cached once)
@dataclass
class FeatureBank:
    """Frozen features: ``normal`` [N, C, h, w] (training images), ``pseudo`` [G, N, C, h, w] (copy g of
    normal n, generator ``GENERATORS[g]``), ``test`` [N_test, C, h, w] in the order of ``test_paths``."""

    normal: torch.Tensor
    pseudo: torch.Tensor
    test: torch.Tensor
    test_paths: list[str]
    info: dict = field(default_factory=dict)

    def rows_of(self, dataset) -> torch.Tensor:
        """Indices into ``test`` of a dataset's samples (shots, test split, seen remainder)."""
        where = {p: i for i, p in enumerate(self.test_paths)}
        missing = [str(s.path) for s in dataset.samples if str(s.path) not in where]
        if missing:
            raise ValueError(f"{len(missing)} image(s) (e.g. {missing[0]}) are not in the featurised test set; "
                             "build the FeatureBank from the same test dataset the split came from")
        return torch.tensor([where[str(s.path)] for s in dataset.samples], dtype=torch.long)


def _pseudo_copies(images: torch.Tensor, config: AHLConfig, gen: torch.Generator, pseudo) -> list[torch.Tensor]:
    """The three generators on a float batch in [0, 1]: CutMix, CutPaste, a Perlin blend (DRAEM)."""
    return [cutmix(images, gen)[0], cutpaste(images, gen)[0], pseudo(images, gen)[0]]


def build_features(config: AHLConfig, train, test, device="cpu", cache: bool = True, progress: bool = False
                   ) -> FeatureBank:
    """Featurise the normal training images, their pseudo-anomalous copies and the test set once.

    With ``cache`` the bank is saved under ``adlkit.config.cache_dir() / "features"``, keyed by the images
    (paths), size, backbone and weights, ``pool_seed`` and texture source; an existing file is read,
    never overwritten.

    Derived in notebook 08, §2 (Features once, pseudo-anomalies once).
    """
    if train.image_size != config.image_size or test.image_size != config.image_size:
        raise ValueError(f"dataset image sizes ({train.image_size}, {test.image_size}) != config.image_size "
                         f"{config.image_size}; build the datasets with image_size={config.image_size}")
    if any(s.label for s in train.samples):
        raise ValueError("AHL's training set must hold normal images only (the labelled anomalies come from "
                         "data.open_set_split); got labelled anomalies in train")
    net = make_backbone(config.backbone, config.pretrained, layers=(config.layer,), frozen=True).to(device)
    pseudo = PseudoAnomaly(config.image_size, sources=config.sources, device=device)
    key = json.dumps({"train": [str(s.path) for s in train.samples], "test": [str(s.path) for s in test.samples],
                      "size": config.image_size, "backbone": net.name, "weights": net.weights, "layer": config.layer,
                      "pool_seed": config.pool_seed, "sources": pseudo.source_kind, "generators": GENERATORS})
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    path = cache_dir() / "features" / f"ahl-{digest}.pt"
    info = {"backbone": net.name, "weights": net.weights, "layer": config.layer, "image_size": config.image_size,
            "texture_source": pseudo.source_kind, "pool_seed": config.pool_seed, "cache": str(path.name)}
    if cache and path.exists():
        saved = torch.load(path, map_location=device, weights_only=True)
        return FeatureBank(saved["normal"].float(), saved["pseudo"].float(), saved["test"].float(),
                           [str(s.path) for s in test.samples], {**info, "cached": True})
    t0 = time.perf_counter()
    gen = torch.Generator(device=device).manual_seed(config.pool_seed)

    @torch.no_grad()
    def feats(x):
        return net(x)[0].float()

    normal, copies = [], [[] for _ in GENERATORS]
    train_images = cache_tensors(train, device).images
    with torch.no_grad():
        for chunk in train_images.split(32):
            x = chunk.float() / 255
            normal.append(feats(x))
            for g, fake in enumerate(_pseudo_copies(x, config, gen, pseudo)):
                copies[g].append(feats(fake.clamp(0, 1)))
        test_feats = [feats(chunk.float() / 255) for chunk in cache_tensors(test, device).images.split(32)]
    bank = FeatureBank(torch.cat(normal), torch.stack([torch.cat(c) for c in copies]), torch.cat(test_feats),
                       [str(s.path) for s in test.samples],
                       {**info, "cached": False, "seconds": round(time.perf_counter() - t0, 2)})
    if progress:
        print(f"featurised {len(train)} normal images x (1 + {len(GENERATORS)}) and {len(test)} test images in "
              f"{bank.info['seconds']:.0f} s")
    if cache and not path.exists():  # half precision on disk; never replaces a file
        save_atomic({"normal": bank.normal.half(), "pseudo": bank.pseudo.half(), "test": bank.test.half(),
                     "key": key}, path)
    return bank


# ----------------------------------------------------------------------------- the base model phi (DevNet)
def init_theta(channels: int, seed: int) -> torch.Tensor:
    """theta = (1x1 conv weight [C], bias): PyTorch's Conv2d default initialisation, seeded.

    Derived in notebook 08, §3 (DevNet fits the anomalies it has seen)."""
    g = torch.Generator().manual_seed(seed)
    bound = 1 / channels ** 0.5
    return (torch.rand(channels + 1, generator=g) * 2 - 1) * bound


def tokens(f: torch.Tensor) -> torch.Tensor:
    """Feature maps [N, C, h, w] as patch tokens [N, h*w, C] (contiguous): a 1x1 conv is then one matmul.

    Derived in notebook 08, §3 (DevNet fits the anomalies it has seen)."""
    return f.flatten(2).transpose(1, 2).contiguous()


def phi_scores(theta: torch.Tensor, f: torch.Tensor, topk_ratio: float = 0.1) -> torch.Tensor:
    """Image scores of T models: theta [T, C + 1] on patch tokens f [T, B, P, C] (a batch per model) or
    [B, P, C] (one batch for every model) -> s [T, B].

    Patch scores |w . f_p + b| (DevNet's 1x1 conv), image score = mean of the top ``topk_ratio`` patches.
    With a batch per model (training) the top-k patches are found without a graph and only they are
    scored again with one: the same values and gradients (nothing else reaches the mean), k/P of the
    backward pass.

    Derived in notebook 08, §3 (DevNet fits the anomalies it has seen: phi written out, both paths checked)."""
    w, b = theta[:, :-1], theta[:, -1]
    f = f.float()  # the bank is stored in half precision
    if f.ndim == 3:  # [B, P, C] @ [C, T] -> [B, P, T]
        patch = (f @ w.T).permute(2, 0, 1) + b[:, None, None]
        return top_k_mean(patch.abs().flatten(0, 1), topk_ratio).view(patch.shape[0], patch.shape[1])
    T, B, P, C = f.shape
    k = max(1, int(topk_ratio * P))  # as top_k_mean
    with torch.no_grad():  # [T, B, P, C] . [T, 1, 1, C] (multiply-and-sum: faster than a batched gemv on a CPU)
        top = ((f * w[:, None, None, :]).sum(-1) + b[:, None, None]).abs().topk(k, dim=2).indices  # [T, B, k]
    picked = f.gather(2, top[..., None].expand(T, B, k, C))  # [T, B, k, C]
    return ((picked * w[:, None, None, :]).sum(-1) + b[:, None, None]).abs().mean(2)


def devnet_loss(s: torch.Tensor, y: torch.Tensor, config: AHLConfig, gen: torch.Generator) -> torch.Tensor:
    """l_dev of every sample, [T, B]: z from fresh N(0, 1) reference draws (DevNet).

    Derived in notebook 08, §5 (CDL: one meta-iteration from scratch, ``dev_loss``)."""
    mu, sigma = reference_stats(config.m, generator=gen, device=s.device)
    return deviation_loss((s - mu) / sigma, y, config.margin)


def task_losses(bank: torch.Tensor, config: AHLConfig, gen: torch.Generator, reduction: str | None = None):
    """``loss_fn(theta [T, C + 1], (indices [T, B], labels [T, B])) -> [T]``: each task's l_dev under its own
    model, summed over the batch (eq. 1's L_phi_i; ``reduction`` defaults to ``config.base_loss``) or its mean
    (the official code), for :func:`adapt`."""
    reduction = reduction or config.base_loss

    def loss_fn(theta, batch):
        idx, y = batch
        dev = devnet_loss(phi_scores(theta, bank[idx], config.topk_ratio), y, config, gen)
        return dev.sum(1) if reduction == "sum" else dev.mean(1)

    return loss_fn


def adapt(theta_g: torch.Tensor, loss_fn, batches, lr: float, create_graph: bool = True, optimizer: str = "sgd",
          betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> torch.Tensor:
    """Train the base models on eq. 1 from theta_g: one optimiser step per batch.

    ``optimizer="sgd"`` (MAML's step and the official code's): theta <- theta - lr g.
    ``optimizer="adam"`` (section 4.1; what :func:`meta_step` uses by default, ``base_optimizer``): Adam with
    fresh moments, written out so that it stays differentiable, m <- b1 m + (1 - b1) g,
    v <- b2 v + (1 - b2) g^2, theta <- theta - lr m_hat / (sqrt(v_hat) + eps) (bias-corrected); each
    coordinate moves by about ``lr`` per step whatever the loss's scale.

    ``loss_fn(theta, batch)`` returns one loss per task [T] (their sum is differentiated, so each task's
    rows get their own gradient). With ``create_graph`` the result stays a differentiable function of
    theta_g (second order); without, the inner gradients are constants (first order).

    Derived in notebook 08, §5 (CDL: one meta-iteration from scratch; Exercise 1, one MAML step)."""
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd'; got {optimizer!r}")
    theta = theta_g
    m = v = None
    for step, batch in enumerate(batches, start=1):
        loss = loss_fn(theta, batch)
        (grad,) = torch.autograd.grad(loss.sum(), theta, create_graph=create_graph)
        if optimizer == "sgd":
            theta = theta - lr * grad
            continue
        m = (1 - betas[0]) * grad if m is None else betas[0] * m + (1 - betas[0]) * grad
        v = (1 - betas[1]) * grad ** 2 if v is None else betas[1] * v + (1 - betas[1]) * grad ** 2
        m_hat, v_hat = m / (1 - betas[0] ** step), v / (1 - betas[1] ** step)
        theta = theta - lr * m_hat / (v_hat.sqrt() + eps)
    return theta


def drift(theta_i: torch.Tensor, theta_g: torch.Tensor) -> torch.Tensor:
    """||theta_i - theta_g|| / ||theta_g|| per base model [T]: how far eq. 1 moved each from the unified model."""
    theta_g = theta_g.detach().reshape(1, -1)
    return (theta_i.detach() - theta_g).norm(dim=1) / theta_g.norm().clamp_min(1e-12)


# ----------------------------------------------------------------------------- HADG: heterogeneous tasks
@dataclass
class Episodes:
    """T tasks over one index space ("the bank"): rows [0, N) normal features, [N + g N, N + (g + 1) N) the
    copies by generator g, then the M seen anomalies. Each set is three padded index lists (normal, seen,
    pseudo) with their lengths: ``support[group]`` = (indices [T, L], lengths [T])."""

    support: list[tuple[torch.Tensor, torch.Tensor]]
    query: list[tuple[torch.Tensor, torch.Tensor]]
    pairs: list[tuple[int, int]]  # (support cluster a, query cluster b)
    generators: list[tuple[str, str]]  # (support generator, query generator)
    clusters: np.ndarray  # k-means label of every normal image
    shot_halves: list[tuple[list[int], list[int]]]  # (support shots, query shots) per task
    n_normal: int
    n_shots: int

    @property
    def n_tasks(self) -> int:
        return len(self.pairs)

    def members(self, which: str, task: int) -> list[int]:
        """Every bank index of a task's support or query set."""
        sets = self.support if which == "support" else self.query
        return sorted({int(i) for idx, n in sets for i in idx[task, :n[task]].tolist()})


def _padded(lists: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(x) for x in lists])
    out = torch.zeros(len(lists), max(1, int(lengths.max())), dtype=torch.long)
    for t, x in enumerate(lists):
        out[t, :len(x)] = torch.tensor(x, dtype=torch.long)
    return out, lengths


def hadg(normal: torch.Tensor, n_shots: int, config: AHLConfig, seed: int) -> Episodes:
    """Section 3.2: C k-means clusters of the globally pooled normal features, one task per ordered pair
    (a, b) of clusters; support = normals of a, query = normals of b, the seen anomalies split in disjoint
    halves (one shot: in both), each normal swapped for a pseudo-anomalous copy with probability
    ``swap_probability``, by a different generator in support and query.

    Derived in notebook 08, §4 (HADG: heterogeneous tasks)."""
    n, c = len(normal), config.n_clusters
    if n < 2 * c:
        raise ValueError(f"{n} normal images cannot fill {c} clusters with two each; lower n_clusters")
    if n_shots < 1:
        raise ValueError(f"AHL needs at least one labelled anomaly; got {n_shots}")
    rng = np.random.default_rng(seed)
    pooled = normal.mean(dim=(2, 3)).double().cpu().numpy()
    clusters = KMeans(c, n_init=10, random_state=seed).fit_predict(pooled)
    pairs = [(a, b) for a in range(c) for b in range(c) if a != b]
    gen_pairs = [(a, b) for a in range(len(GENERATORS)) for b in range(len(GENERATORS)) if a != b]
    order = rng.permutation(len(gen_pairs))
    gens = [gen_pairs[order[i % len(gen_pairs)]] for i in range(len(pairs))]
    first_shot = n * (1 + len(GENERATORS))

    authors = config.variant == "authors"

    def one_set(cluster: int, generator: int, shots: list[int]) -> list[list[int]]:
        members = np.flatnonzero(clusters == cluster)
        if authors:  # the code's bug: the first n images of the list, n the cluster's size
            members = np.arange(len(members))
        swap = rng.random(len(members)) < config.swap_probability
        if swap.all():  # keep both groups non-empty (a balanced batch needs both)
            swap[0] = False
        if not swap.any():
            swap[-1] = True
        return [members[~swap].tolist(), [first_shot + j for j in shots],
                [n + generator * n + int(i) for i in members[swap]]]

    support, query, halves = [], [], []
    for (a, b), (gs, gq) in zip(pairs, gens):
        perm = rng.permutation(n_shots).tolist()
        half_s, half_q = (perm, perm) if n_shots == 1 else (perm[:n_shots // 2], perm[n_shots // 2:])
        if authors:  # the query also gets two of the support's shots; one generator for both sets
            half_q = list(dict.fromkeys(half_q + half_s[:2]))
            gq = gs
        support.append(one_set(a, gs, sorted(half_s)))
        query.append(one_set(b, gq, sorted(half_q)))
        halves.append((sorted(half_s), sorted(half_q)))
        gens[len(halves) - 1] = (gs, gq)
    return Episodes([_padded([s[k] for s in support]) for k in range(3)],
                    [_padded([q[k] for q in query]) for k in range(3)], pairs,
                    [(GENERATORS[a], GENERATORS[b]) for a, b in gens], clusters, halves, n, n_shots)


def sample_balanced(groups, batch_size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A balanced batch per task from padded groups [(indices [T, L], lengths [T]), ...]: the same number
    from each group, with replacement. Returns bank indices [T, B] and labels [T, B] (group 0 normal).

    Derived in notebook 08, §5 (CDL: one meta-iteration from scratch)."""
    per = batch_size // len(groups)
    idx, labels = [], []
    for k, (padded, lengths) in enumerate(groups):
        pos = (torch.rand(padded.shape[0], per, generator=gen) * lengths[:, None]).long()
        idx.append(padded.gather(1, pos))
        labels.append(torch.full_like(idx[-1], int(k != NORMAL), dtype=torch.float32))
    return torch.cat(idx, 1), torch.cat(labels, 1)


def token_bank(features: FeatureBank, shots: torch.Tensor) -> torch.Tensor:
    """The episodes' index space as patch tokens [N (1 + G) + M, P, C]: normals, copies, seen anomalies.

    Kept in half precision (as the disk cache): a training step gathers about 1,000 maps from it, and
    that copy, not the arithmetic, is most of a step's time; ``phi_scores`` computes in float32.

    Derived in notebook 08, §5 (CDL: one meta-iteration from scratch)."""
    return tokens(torch.cat([features.normal, features.pseudo.flatten(0, 1), features.test[shots]])).half()


# ----------------------------------------------------------------------------- psi: importance of each task
class ImportanceLSTM(nn.Module):
    """psi (eq. 5, section 4.1): a two-layer bidirectional LSTM (hidden 6, so 12 outputs) -> ReLU -> a
    fully-connected layer of ``fc`` = 12 nodes -> ReLU -> the prediction layer Linear(12, T). It reads a
    sample's scores under the T base models over the last K epochs [B, K, T] and predicts the next [B, T].
    ``fc=0``: the official code's psi, BiLSTM -> ReLU -> prediction layer.

    Derived in notebook 08, §6 (Which tasks to trust: psi and the importance weights)."""

    def __init__(self, n_tasks: int, hidden: int = 6, fc: int = 12):
        super().__init__()
        self.lstm = nn.LSTM(n_tasks, hidden, num_layers=2, bidirectional=True, batch_first=True)
        self.hidden = nn.Linear(2 * hidden, fc) if fc else None
        self.fc = nn.Linear(fc or 2 * hidden, n_tasks)  # the prediction layer

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(seq)
        h = F.relu(out[:, -1])
        if self.hidden is not None:
            h = F.relu(self.hidden(h))
        return self.fc(h)


def importance_weights(predicted: torch.Tensor, y: torch.Tensor, c: torch.Tensor, keep: torch.Tensor,
                       margin: float = 5.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Eqs. 6-7: r_i = mean over D'_i of c_ji (clip(s_hat_ji / gamma, 0, 1) - y_j)^2 and w = softmax(-r).

    ``predicted`` [J, T] psi's next scores, ``y`` [J] labels, ``c`` [J, T] the weights c_j per task,
    ``keep`` [J, T] bool: sample j is in D'_i. Scores are divided by gamma (the deviation margin) and
    clipped to [0, 1] so that an anomaly scored far past the margin is not punished. Returns (w, r).

    Derived in notebook 08, §6 (Which tasks to trust: psi and the importance weights; Exercise 2, eqs. 6-7)."""
    err = c * ((predicted / margin).clamp(0, 1) - y[:, None]) ** 2
    keep = keep.float()
    r = (err * keep).sum(0) / keep.sum(0).clamp_min(1)
    return torch.softmax(-r, dim=0), r


@dataclass
class PsiSamples:
    """psi's samples and eq. 6's targets: every query set's members (bank indices ``index`` [J], labels ``y``
    [J]), and per task i the weights ``c`` [J, T] (c_ji = ``c_unseen`` for anomalies task i never trained on,
    else ``c_seen``) and ``keep`` [J, T] (j in D'_i: the query samples without task i's own support normals)."""

    index: torch.Tensor
    y: torch.Tensor
    c: torch.Tensor
    keep: torch.Tensor
    row: dict  # bank index -> its row in ``index``


def psi_samples(episodes: Episodes, config: AHLConfig, device) -> PsiSamples:
    """psi's targets (eqs. 5-6): the samples whose next-epoch scores psi predicts, their labels, and each
    task's c_ji and D'_i (:class:`PsiSamples`)."""
    T = episodes.n_tasks
    pool = sorted({j for t in range(T) for j in episodes.members("query", t)})
    index = torch.tensor(pool, dtype=torch.long, device=device)
    keep = torch.ones(len(pool), T, dtype=torch.bool, device=device)
    c = torch.full((len(pool), T), config.c_seen, device=device)
    row = {j: k for k, j in enumerate(pool)}
    for t in range(T):
        support = set(episodes.members("support", t))
        for j in episodes.support[NORMAL][0][t, :episodes.support[NORMAL][1][t]].tolist():
            if j in row:
                keep[row[j], t] = False
        for j, k in row.items():
            if j >= episodes.n_normal and j not in support:
                c[k, t] = config.c_unseen
    return PsiSamples(index, (index >= episodes.n_normal).float(), c, keep, row)


def fit_psi(psi: ImportanceLSTM, optimizer: torch.optim.Optimizer, past: list[torch.Tensor], config: AHLConfig
            ) -> float:
    """psi's fit (eq. 5): ``psi_steps`` full-batch steps on the MSE between psi's prediction from the K epochs
    before the last (``past``: one [J, T] of scores per epoch) and the last epoch's scores. Returns the last MSE."""
    seq = torch.stack(past[-config.history_k - 1:-1], 1)  # [J, K, T]
    target = past[-1]
    for _ in range(config.psi_steps):
        optimizer.zero_grad(set_to_none=True)
        mse = F.mse_loss(psi(seq), target)
        mse.backward()
        optimizer.step()
    return float(mse.detach())


@torch.no_grad()
def task_weights(psi: ImportanceLSTM, past: list[torch.Tensor], samples: PsiSamples, config: AHLConfig,
                 authors_groups: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Eqs. 6-7 on psi's prediction of the next epoch from the last K: (w, r). ``authors_groups``
    (:func:`authors_query_groups`): the authors' eq. 6 instead (AUTHORS_VARIANT 4)."""
    predicted = psi(torch.stack(past[-config.history_k:], 1))
    if authors_groups is not None:
        return importance_weights_authors(predicted, samples.y, *authors_groups)
    return importance_weights(predicted, samples.y, samples.c, samples.keep, config.margin)


# ----------------------------------------------------------------------------- CDL: one meta-iteration, one epoch
def meta_step(theta_g: torch.Tensor, bank: torch.Tensor, episodes: Episodes, w: torch.Tensor, config: AHLConfig,
              gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eqs. 1-4 for all T tasks at once: theta_i <- theta_g, ``base_steps`` steps of ``base_optimizer`` on
    support batches (eq. 1, ``base_loss``: summed), then the w-weighted query loss of the base models
    (eq. 4; each task's batch mean, so that alpha's scale does not depend on the batch size). Returns
    (L_cdl^+, query losses [T], theta_i [T, C + 1]); L_cdl^+.backward() puts the meta-gradient in theta_g.grad.

    Derived in notebook 08, §5 (CDL: one meta-iteration from scratch, checked against this with the same draws)."""
    T = episodes.n_tasks
    loss_fn = task_losses(bank, config, gen)
    supports = [sample_balanced(episodes.support, config.batch_size, gen) for _ in range(config.base_steps)]
    theta_i = adapt(theta_g.expand(T, -1), loss_fn, supports, config.base_lr, create_graph=config.second_order,
                    optimizer=config.base_optimizer)
    idx, y = sample_balanced(episodes.query, config.batch_size, gen)
    l_q = devnet_loss(phi_scores(theta_i, bank[idx], config.topk_ratio), y, config, gen).mean(1)  # [T]
    return (w * l_q).sum(), l_q, theta_i


def cdl_epoch(theta_g: torch.Tensor, optimizer: torch.optim.Optimizer, bank: torch.Tensor, episodes: Episodes,
              w: torch.Tensor, config: AHLConfig, gen: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One epoch of CDL: ``steps_per_epoch`` meta-iterations (:func:`meta_step`), each followed by an Adam step
    on theta_g. Returns the summed query losses [T], the summed drifts [T] (each before theta_g moves) and the
    last theta_i (detached)."""
    T = episodes.n_tasks
    losses = torch.zeros(T, device=bank.device)
    moved = torch.zeros(T, device=bank.device)
    for _ in range(config.steps_per_epoch):
        loss, l_q, theta_i = meta_step(theta_g, bank, episodes, w, config, gen)
        check_finite(loss, "a meta-iteration", f"lower outer_lr (now {config.outer_lr}) or base_lr")
        moved += drift(theta_i, theta_g)  # before theta_g moves
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses += l_q.detach()
    return losses, moved, theta_i.detach()


# ----------------------------------------------------------------------------- training: CDL with psi
def train_ahl(config: AHLConfig, features: FeatureBank, shots: torch.Tensor, progress: bool = False,
              theta0: torch.Tensor | None = None) -> dict:
    """Meta-train theta_g (CDL) with psi's importance weights; ``shots`` = indices into ``features.test`` of
    the seen anomalies. theta_g starts from ``theta0``, else (``init="devnet"``) from a DevNet trained on the
    same shots, else at random. Returns theta_g, the last adapted theta_i, w, the episodes, psi and a
    per-epoch history.

    Per epoch: CDL's meta-iterations with the current w (:func:`cdl_epoch`; ``variant="authors"``:
    :func:`authors_epoch`), the scores of psi's samples under the adapted models, then - once K epochs of
    scores exist - psi's fit (eq. 5, :func:`fit_psi`) and new weights w (eqs. 6-7, :func:`task_weights`).

    Derived in notebook 08, §5 (CDL: one meta-iteration from scratch) and §6 (psi and the importance weights).
    """
    gen = torch.Generator().manual_seed(config.seed)
    episodes = hadg(features.normal, len(shots), config, config.seed)
    bank = token_bank(features, shots)
    T, device = episodes.n_tasks, bank.device
    if theta0 is None:
        theta0 = (train_devnet(config, features, shots)["theta"] if config.init == "devnet"
                  else init_theta(bank.shape[-1], config.seed))
    theta_g = theta0.detach().clone().to(device).requires_grad_(True)
    opt = torch.optim.Adam([theta_g], lr=config.outer_lr)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed + 7)
        psi = ImportanceLSTM(T, config.psi_hidden, 0 if config.variant == "authors" else config.psi_fc).to(device)
    psi_opt = torch.optim.Adam(psi.parameters(), lr=config.psi_lr)
    samples = psi_samples(episodes, config, device)
    authors = config.variant == "authors"
    if authors:  # AUTHORS_VARIANT 4-5: the query sets' groups for eq. 6; StepLR
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.1)
        groups = authors_query_groups(episodes, samples)
    psi_ready = False
    w = torch.full((T,), 1 / T, device=device)
    past: list[torch.Tensor] = []  # scores of psi's samples under the adapted models, one [J, T] per epoch
    history = {"epoch": [], "query_loss": [], "task_query_loss": [], "w": [], "r": [], "psi_mse": [], "drift": [],
               "seconds": 0.0}
    t0 = time.perf_counter()
    for epoch in range(config.epochs):
        if authors:
            losses, moved, theta_i = authors_epoch(theta_g, opt, sched, bank, episodes, w if psi_ready else None,
                                                   config, gen)
        else:  # eqs. 1-4, steps_per_epoch times
            losses, moved, theta_i = cdl_epoch(theta_g, opt, bank, episodes, w, config, gen)
        with torch.no_grad():  # this epoch's scores of psi's samples under the T adapted models
            past.append(phi_scores(theta_i, bank[samples.index], config.topk_ratio).T)
        r = torch.zeros(T, device=device)
        mse = None
        if config.importance and len(past) > config.history_k:
            mse = fit_psi(psi, psi_opt, past, config)  # eq. 5: K epochs -> the next one
            w, r = task_weights(psi, past, samples, config, groups if authors else None)  # eqs. 6-7
            psi_ready = True
        past = past[-config.history_k - 1:]
        history["epoch"].append(epoch)
        history["query_loss"].append(float(losses.mean()) / config.steps_per_epoch)
        history["task_query_loss"].append((losses / config.steps_per_epoch).tolist())
        history["w"].append(w.tolist())
        history["r"].append(r.tolist())
        history["psi_mse"].append(mse)
        history["drift"].append((moved / config.steps_per_epoch).tolist())
        history["seconds"] = time.perf_counter() - t0
        if progress:
            print(f"epoch {epoch:3d}  query loss {history['query_loss'][-1]:.4f}  w {np.round(w.tolist(), 3)}  "
                  f"drift {np.round(history['drift'][-1], 4)}")
    return {"theta_g": theta_g.detach(), "theta_i": theta_i, "w": w, "episodes": episodes, "history": history,
            "psi": psi}


def train_devnet(config: AHLConfig, features: FeatureBank, shots: torch.Tensor, pseudo: bool = False) -> dict:
    """The DevNet baseline on the same features and head: Adam on balanced batches (half normal, half seen
    anomalies; with ``pseudo``, thirds: normal, seen, pseudo-anomalies of every generator), as many
    parameter updates as AHL's outer steps.

    Derived in notebook 08, §3 (DevNet fits the anomalies it has seen)."""
    gen = torch.Generator().manual_seed(config.seed)
    bank = token_bank(features, shots)
    n = len(features.normal)
    groups = [list(range(n)), list(range(n * (1 + len(GENERATORS)), len(bank)))]
    if pseudo:
        groups.append(list(range(n, n * (1 + len(GENERATORS)))))
    padded = [_padded([g]) for g in groups]
    theta = init_theta(bank.shape[-1], config.seed).to(bank.device).unsqueeze(0).requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=config.outer_lr)
    losses = []
    t0 = time.perf_counter()
    for _ in range(config.epochs):
        total = 0.0
        for _ in range(config.steps_per_epoch):
            idx, y = sample_balanced(padded, config.batch_size, gen)
            loss = devnet_loss(phi_scores(theta, bank[idx], config.topk_ratio), y, config, gen).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
        losses.append(total / config.steps_per_epoch)
    return {"theta": theta.detach()[0], "history": {"loss": losses, "seconds": time.perf_counter() - t0}}


# ----------------------------------------------------------------------------- the authors' variant (AUTHORS_VARIANT)
def meta_step_authors(theta_g: torch.Tensor, bank: torch.Tensor, episodes: Episodes, weights: torch.Tensor,
                      config: AHLConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The official code's meta-iteration (``AUTHORS_VARIANT`` 3): one adaptation step from theta_g with its
    graph, ``authors_inner_steps`` first-order steps, then the query loss summed over
    ``authors_query_batches`` batches, weighted by ``weights``."""
    T = episodes.n_tasks
    loss_fn = task_losses(bank, config, gen, reduction="mean")

    def batches(sets, n):
        return [sample_balanced(sets, config.batch_size, gen) for _ in range(n)]

    theta_i = adapt(theta_g.expand(T, -1), loss_fn, batches(episodes.support, 1), config.base_lr, create_graph=True,
                    optimizer="sgd")
    theta_i = adapt(theta_i, loss_fn, batches(episodes.support, config.authors_inner_steps), config.base_lr,
                    create_graph=False, optimizer="sgd")
    l_q = sum(loss_fn(theta_i, b) for b in batches(episodes.query, config.authors_query_batches))  # [T]
    return (weights * l_q).sum(), l_q, theta_i


def importance_weights_authors(predicted: torch.Tensor, y: torch.Tensor, group: torch.Tensor,
                               sets: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``AUTHORS_VARIANT`` 4: r_i = 0.5 e_normal + 0.5 e_pseudo + 1.0 e_seen on raw scores, where e_g sums the
    MSE of group g within each query set (``sets``: rows of ``predicted`` [J, T]) and divides by the group's
    total count; w = softmax(-r). ``group`` [J]: NORMAL, SEEN or PSEUDO."""
    T = predicted.shape[1]
    err = {g: torch.zeros(T, device=predicted.device) for g in (NORMAL, SEEN, PSEUDO)}
    count = dict.fromkeys(err, 0)
    for rows in sets:
        for g in err:
            sel = rows[group[rows] == g]
            if len(sel):
                err[g] += ((predicted[sel] - y[sel, None]) ** 2).mean(0)
                count[g] += len(sel)
    r = sum(c * err[g] / max(count[g], 1) for g, c in ((NORMAL, 0.5), (PSEUDO, 0.5), (SEEN, 1.0)))
    return torch.softmax(-r, dim=0), r


def authors_query_groups(episodes: Episodes, samples: PsiSamples) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``AUTHORS_VARIANT`` 4's inputs: the group (NORMAL, SEEN or PSEUDO) of each of psi's samples, and the rows
    of each task's query set among them."""
    first_pseudo, first_shot = episodes.n_normal, episodes.n_normal * (1 + len(GENERATORS))
    index = samples.index
    group = torch.where(index >= first_shot, SEEN, torch.where(index >= first_pseudo, PSEUDO, NORMAL))
    sets = [torch.tensor([samples.row[j] for j in episodes.members("query", t)], device=index.device)
            for t in range(episodes.n_tasks)]
    return group, sets


def authors_epoch(theta_g: torch.Tensor, optimizer: torch.optim.Optimizer, scheduler, bank: torch.Tensor,
                  episodes: Episodes, w: torch.Tensor | None, config: AHLConfig, gen: torch.Generator
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One epoch of the official code (``AUTHORS_VARIANT`` 3 and 5): the previous epoch's outer step made now
    (the last epoch's is never made), then one meta-iteration (:func:`meta_step_authors`) weighted by
    0.5 + 0.5 w once psi is trained (``w`` not None; 1/T before), its gradient clipped to norm 1. Returns the
    query losses and drifts scaled to ``steps_per_epoch`` (as :func:`cdl_epoch` sums them) and theta_i."""
    T = episodes.n_tasks
    optimizer.step()
    scheduler.step()
    weights = 0.5 + 0.5 * w if w is not None else torch.full((T,), 1 / T, device=bank.device)
    loss, l_q, theta_i = meta_step_authors(theta_g, bank, episodes, weights, config, gen)
    check_finite(loss, "an epoch", f"lower base_lr (now {config.base_lr})")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([theta_g], 1.0)
    losses = l_q.detach() * config.steps_per_epoch / config.authors_query_batches  # per batch
    moved = drift(theta_i, theta_g) * config.steps_per_epoch
    return losses, moved, theta_i.detach()


# ----------------------------------------------------------------------------- scoring and one whole run
@torch.no_grad()
def score(theta: torch.Tensor, f: torch.Tensor, topk_ratio: float = 0.1, w: torch.Tensor | None = None,
          batch_size: int = 512) -> np.ndarray:
    """Image scores of ``f`` [N, C, h, w]: theta [C + 1] (one model), or theta [T, C + 1] with ``w`` [T]
    (the w-weighted ensemble)."""
    theta = theta.unsqueeze(0) if theta.ndim == 1 else theta
    out = []
    for chunk in f.split(batch_size):
        s = phi_scores(theta, tokens(chunk), topk_ratio)  # [T, B]
        out.append(s[0] if w is None else (w[:, None] * s).sum(0))
    return torch.cat(out).cpu().numpy()


def fit(config: AHLConfig, features: FeatureBank, split, progress: bool = False) -> dict:
    """Every row of :data:`ROWS` on one open-set split (``data.open_set_split``): the trained parameters
    (``models``), each row's test scores and metrics (``rows``) and - in the hard setting - AUROC of the seen
    type's remaining anomalies against the test normals; ``model``: the "AHL" row as an :class:`AHLModel`
    (the common surface's model: :func:`predict`, :func:`save`).

    Unlike the other methods' ``fit(config, train)``, AHL's needs the cached features and a split with its
    labelled anomalies, and trains every row (they share the features and DevNet's start).

    Derived in notebook 08, §6 (Which tasks to trust: psi and the importance weights; the six rows on one split).
    """
    shots = features.rows_of(split.shots)
    test_rows = features.rows_of(split.test)
    labels = np.array([s.truth for s in split.test.samples])
    seen_rows = features.rows_of(split.seen_rest) if len(split.seen_rest) else None
    normal_rows = test_rows[torch.as_tensor(labels == 0)]
    models, params = {}, {}
    for name, row in ROWS.items():  # DevNet first: the AHL rows start from its theta (init="devnet")
        if config.variant not in row.get("variants", (config.variant,)):
            continue
        if row.get("ensemble"):  # no training: the "AHL" row's adapted models, w-weighted
            params[name] = (models["AHL"]["theta_i"], models["AHL"]["w"])
            continue
        if row["train"] == "devnet":
            models[name] = train_devnet(config, features, shots, pseudo=row.get("pseudo", False))
        else:
            theta0 = models["DevNet"]["theta"] if config.init == "devnet" else None  # the same start for every row
            models[name] = train_ahl(config.ablation(name), features, shots, progress=progress and name == "AHL",
                                     theta0=theta0)
        params[name] = (models[name].get("theta", models[name].get("theta_g")), None)
    rows = {}
    for name, (theta, w) in params.items():
        s = score(theta, features.test[test_rows], config.topk_ratio, w)
        row = {"scores": s, **metrics.image_metrics(s, labels)}
        if seen_rows is not None:
            both = torch.cat([normal_rows, seen_rows])
            y = np.r_[np.zeros(len(normal_rows)), np.ones(len(seen_rows))]
            row.update(metrics.image_metrics(score(theta, features.test[both], config.topk_ratio, w), y, "seen_"))
        rows[name] = row
    return {"rows": rows, "models": models, "labels": labels, "split": split,
            "model": AHLModel.from_training(config, models["AHL"], features.info)}


def run_ahl(config: AHLConfig, train, test, setting: str = "general", shots: int = 10, seen_class: str | None = None,
            device="cpu", features: FeatureBank | None = None, progress: bool = False) -> dict:
    """Split (``data.open_set_split``, seeded by ``config.seed``), featurise once (cached), train every row."""
    split = open_set_split(train, test, setting, shots, seed=config.seed, seen_class=seen_class)
    features = features or build_features(config, train, test, device, progress=progress)
    out = fit(config, features, split, progress=progress)
    out["features"] = features
    return out


# ---- the common surface: Config, fit, predict, save, load, run
Config = AHLConfig
run = run_ahl


@dataclass
class AHLModel:
    """A trained AHL: theta_g [C + 1] (the unified model, scored alone: section 3.1), the last adapted theta_i
    [T, C + 1] and w [T] (the "AHL ensemble" row), psi, and the frozen backbone's name and weights (rebuilt
    from its name for :func:`predict`; features of a random-weight backbone cannot be rebuilt).
    ``history``: :func:`train_ahl`'s."""

    config: AHLConfig
    theta_g: torch.Tensor
    theta_i: torch.Tensor | None = None
    w: torch.Tensor | None = None
    psi: ImportanceLSTM | None = None
    backbone: str | None = None
    weights: str | None = None
    history: dict | None = None
    net: nn.Module | None = None  # the frozen backbone, built when first needed
    checksum: float | None = None  # of the backbone that made the features (a loaded model checks its rebuild)

    @classmethod
    def from_training(cls, config: AHLConfig, trained: dict, info: dict) -> AHLModel:
        """From :func:`train_ahl`'s result and the features' ``info`` (its backbone and weights)."""
        return cls(config, trained["theta_g"], trained["theta_i"], trained["w"], trained["psi"], info.get("backbone"),
                   info.get("weights"), trained["history"])

    def backbone_net(self) -> nn.Module:
        """The frozen backbone that made the features (level ``config.layer``), rebuilt from its name."""
        if self.net is None:
            if self.backbone is None or self.weights in (None, "random"):
                raise ValueError(f"this model's features came from {self.backbone or 'an unknown backbone'} with "
                                 f"{self.weights or 'unknown'} weights, which no name rebuilds: score features of "
                                 "that backbone with ahl.score(model.theta_g, features), or train on ImageNet "
                                 "features (pretrained=True)")
            net = make_backbone(self.backbone, pretrained=True, layers=(self.config.layer,), frozen=True)
            if self.checksum is not None:  # a loaded model: the rebuilt network must be the one it was trained on
                modelfile.restore_backbone(net, None, {"backbone": self.backbone, "weights": self.weights,
                                                       "backbone_checksum": self.checksum}, "this AHL model file")
            self.net = net.to(self.theta_g.device)
        return self.net


@torch.no_grad()
def predict(model: AHLModel, images: torch.Tensor, batch_size: int = 32, ensemble: bool = False) -> dict:
    """Image scores of uint8 or [0, 1] float images [N, 3, S, S] (featurised as :func:`build_features` does):
    ``scores`` [N] (CPU float, higher = more anomalous) under theta_g (section 3.1), or with ``ensemble`` the
    w-weighted theta_i; ``maps`` is None (AHL scores images, it makes no maps)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [N, 3, S, S] (uint8, or float in [0, 1]); got {tuple(images.shape)}")
    if ensemble and (model.theta_i is None or model.w is None):
        raise ValueError("ensemble=True needs the adapted models theta_i and their w; this model has none")
    net = model.backbone_net()
    device = model.theta_g.device
    feats = [net((chunk.float() / 255 if chunk.dtype == torch.uint8 else chunk.float()).to(device))[0].float()
             for chunk in images.split(batch_size)]
    theta, w = (model.theta_i, model.w) if ensemble else (model.theta_g, None)
    s = score(theta, torch.cat(feats), model.config.topk_ratio, w)
    return {"scores": torch.as_tensor(s).float().cpu(), "maps": None}


def save(model: AHLModel, path: str | Path, overwrite: bool = False, tags: dict | None = None) -> Path:
    """Write the model to one file (:mod:`adlkit.modelfile`); an existing file is refused unless ``overwrite``.

    ``state`` = ``theta_g`` [C + 1], and when present ``theta_i`` [T, C + 1], ``w`` [T] and ``psi`` (its state
    dict); ``meta`` = ``backbone``, ``weights`` (the frozen backbone, rebuilt from its name), ``history``.
    """
    state = {"theta_g": model.theta_g.detach().cpu()}
    for key in ("theta_i", "w"):
        if getattr(model, key) is not None:
            state[key] = getattr(model, key).detach().cpu()
    if model.psi is not None:
        state["psi"] = modelfile.cpu_state(model.psi)
    meta = {"backbone": model.backbone, "weights": model.weights, "history": model.history}
    if model.weights not in (None, "random"):  # a checksum of the backbone, checked when a loaded model rebuilds it
        meta["backbone_checksum"] = model.checksum if model.checksum is not None else \
            modelfile.backbone_meta(model.backbone_net())["backbone_checksum"]
    return modelfile.write(path, "ahl", model.config, state, meta, overwrite, tags)


def load(path: str | Path, device=None) -> AHLModel:
    """The :class:`AHLModel` :func:`save` wrote, tensors on ``device`` (default CPU); its backbone is rebuilt
    from its name when :func:`predict` first needs it."""
    config, state, meta = modelfile.read(path, "ahl", AHLConfig, device)
    psi = None
    if "psi" in state:
        with torch.random.fork_rng(devices=[]):  # an init that is overwritten: the global RNG is left alone
            psi = ImportanceLSTM(state["theta_i"].shape[0], config.psi_hidden,
                                 0 if config.variant == "authors" else config.psi_fc)
        psi.load_state_dict(state["psi"])
        psi.to(device if device is not None else "cpu")
    return AHLModel(config, state["theta_g"], state.get("theta_i"), state.get("w"), psi, meta.get("backbone"),
                    meta.get("weights"), meta.get("history"), checksum=meta.get("backbone_checksum"))
