"""CADA: one model and one threshold for every class, without class labels.

J. Guo, H. Han, S. Lu, W. Zhang, H. Li, *Absolute-Unified Multi-Class Anomaly Detection via
Class-Agnostic Distribution Alignment*, arXiv:2404.00724, 2024. The authors released no training
code: this is a **reconstruction from the paper**.

The problem. A reverse-distillation model (H. Deng, X. Li, *Anomaly Detection via Reverse
Distillation from One-Class Embedding*, CVPR 2022) trained on all classes mixed scores each class on
its own scale: an easy class's anomalies can score below a hard class's normal images. Per class
the ranking is good; pooled over classes (one threshold for all, "absolute-unified") it is not.

The method, in two stages on one frozen encoder:

1. **Reverse distillation** (:func:`train_rd`) on every training image of every class, no class
   labels: L_RD = sum_l mean_b[1 - cos(vec E_l, vec D_l)]. Its map A = Gauss_sigma(sum_l up(1 - cos_ch))
   and image score s_img = mean of the top 1% of A (:mod:`adlkit.maps`).
2. **Distribution alignment.** With RD frozen, every training image's own normal statistics
   (u_img, gamma_img) = (mean A, max A) are targets (:func:`map_stats`); a regressor R on the
   bottleneck learns to predict them from the image (:func:`train_heads`), with the smooth-L1 loss
   of eqs. 3-4 (:func:`adlkit.losses.smooth_l1`). At test time (eq. 5) each map is rescaled by its
   own prediction, A_hat = (A - u_hat) / (gamma_hat - u_hat) (:func:`align`): a normal image of any
   class then spans about [0, 1], and one threshold serves every class.

Baselines from the same RD (:func:`score_cada` gives all five as ``VARIANTS``):

* ``unaligned``   - A itself (RD on all classes).
* ``class_aware`` - CaDA-A (eq. 1), an oracle: A_hat = (A - u_c) / (gamma_c - u_c) with the test image's
  true class c; u_c = mean of class c's training pixels, gamma_c = mean of its training maxima.
* ``classifier``  - CaDA-B (eq. 2): a classifier shaped like R, trained with cross-entropy on the
  classes, picks (u_c, gamma_c) by its argmax.
* ``cada``        - CADA (eqs. 3-5).
* ``cada_sigma``  - the (u, sigma) variant: sigma_img = std of A in the image, gamma = u + 3 sigma.

CPU design (the paper: WideResNet-50, 256 px, 5k iterations x 16 per stage on a GPU): a frozen
EfficientNet-Lite0 (levels 24/40/112 channels) whose features are computed once and cached; after
stage 1, the bottleneck features and the training maps' statistics are cached too, so the heads
train on small tensors. Fewer iterations where the time budget asks, recorded in every result.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import metrics, modelfile, training
from ..data import ImageDataset, cache_tensors
from ..features import featurize
from ..losses import cosine_reconstruction_loss, smooth_l1
from ..maps import anomaly_map, image_score
from ..models import backbone as make_backbone
from ..models.rd import DistributionHead, ReverseDistillation

__all__ = ["CADAConfig", "ABLATIONS", "VARIANTS", "HEADS", "CADAModel", "per_class_subset", "train_rd", "rd_outputs",
           "map_stats", "class_stats", "regression_loss", "train_heads", "align", "alignment", "score_cada",
           "unified_report", "fit", "run_cada", "load_model", "Config", "predict", "save", "load", "run"]

VARIANTS = ("unaligned", "class_aware", "classifier", "cada", "cada_sigma")
HEADS = ("regressor", "regressor_sigma", "classifier")  # the (u, gamma) and (u, sigma) regressors, CaDA-B's classifier
HEAD_INPUTS = ("bottleneck", "encoder")


@dataclass
class CADAConfig:
    """The paper's settings (Sec. 4.2), with the switches its ablations turn."""

    # encoder (frozen) and reverse distillation
    backbone: str = "efficientnet_lite0"  # the paper: wide_resnet50_2 (its weights need internet)
    pretrained: object = "auto"
    image_size: int = 256
    bottleneck: int = 0  # bottleneck channels; 0 = 2 x the encoder's level-3 channels (RD4AD)
    train_per_class: int = 0  # training images per class (first n of each); 0 = all
    # stage 1: RD on all classes mixed, AdamW
    rd_iters: int = 5000
    batch_size: int = 16
    rd_lr: float = 2e-3
    rd_weight_decay: float = 1e-5
    # stage 2: the regressor (and CaDA-B's classifier) on the frozen RD, SGD
    head_iters: int = 5000
    head_lr: float = 5e-2
    head_momentum: float = 0.9
    head_weight_decay: float = 1e-4
    classifier_lr: float = 1e-2  # CaDA-B's classifier; at the regressor's 5e-2 its cross-entropy diverged here
    head_kernel: int = 1  # the heads' conv (the paper does not give its size; 1x1 is 9x cheaper on a CPU than 3x3)
    n_conv: int = 1
    n_linear: int = 2
    hidden: int = 256
    dropout: float = 0.25
    regressor_input: str = "bottleneck"  # "bottleneck" (Sec. 4.2) or "encoder" (Sec. 3.3: the encoder's last level)
    sl1_alpha: float = 0.1  # alpha of the smooth-L1 loss (eqs. 3-4)
    # maps and scores
    sigma: float = 4.0  # Gaussian smoothing of A at 256 px (scaled with the image size)
    top_percent: float = 1.0  # s_img = mean of the top 1% pixels; 0 = the maximum
    n_sigma: float = 3.0  # (u, sigma) variant: gamma = u + n_sigma * sigma
    eps: float = 1e-3  # gamma_hat - u_hat is clamped to at least eps (counted in the report)
    log_every: int = 100  # iterations per history entry and checkpoint
    seed: int = 0

    def __post_init__(self):
        # the heads' settings fail here, before stage 1 trains, not when the heads are built after it
        if self.n_linear < 1:
            raise ValueError(f"n_linear must be at least 1 (the heads end in a linear layer; 'linear only' = 1); "
                             f"got {self.n_linear}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1) (the paper: 0.25; 0 = none); got {self.dropout}")
        if self.regressor_input not in HEAD_INPUTS:
            raise ValueError(f"regressor_input must be 'bottleneck' (Sec. 4.2) or 'encoder' (Sec. 3.3: the encoder's "
                             f"last level); got {self.regressor_input!r}")
        if not 0 <= self.top_percent <= 100:
            raise ValueError(f"top_percent must be in (0, 100] (or 0 for the maximum); got {self.top_percent}")

    def ablation(self, name: str) -> CADAConfig:
        if name not in ABLATIONS:
            raise ValueError(f"unknown CADA ablation {name!r}; choose one of {list(ABLATIONS)}")
        return replace(self, **ABLATIONS[name])

    def ablation_name(self) -> str | None:
        return next((n for n, ch in ABLATIONS.items() if all(getattr(self, k) == v for k, v in ch.items())), None)


# The rows the notebook and the CLI can name (`--ablation`); the paper's defaults first.
ABLATIONS = {
    "CADA": dict(regressor_input="bottleneck", dropout=0.25, n_conv=1, n_linear=2),
    "encoder input": dict(regressor_input="encoder", dropout=0.25, n_conv=1, n_linear=2),
    "no dropout": dict(regressor_input="bottleneck", dropout=0.0, n_conv=1, n_linear=2),
    "linear only": dict(regressor_input="bottleneck", dropout=0.25, n_conv=0, n_linear=1),
}

# the fields stage 1 depends on: an RD checkpoint is reused when only other fields change
RD_FIELDS = ("backbone", "pretrained", "image_size", "bottleneck", "train_per_class", "batch_size", "rd_lr",
             "rd_weight_decay", "log_every", "seed")


# ----------------------------------------------------------------------------- the model
@dataclass
class CADAModel:
    """Everything CADA scores with: the frozen encoder, the (frozen) RD, the heads and the class statistics."""

    config: CADAConfig
    encoder: torch.nn.Module
    rd: ReverseDistillation
    heads: dict = field(default_factory=dict)  # "regressor", "regressor_sigma", "classifier" -> DistributionHead
    classes: list[str] = field(default_factory=list)  # the training classes (only CaDA-A/B and reports use them)
    stats: torch.Tensor | None = None  # [n_classes, 2]: (u_c, gamma_c) of eq. 1
    history: dict = field(default_factory=dict)

    @property
    def sigma(self) -> float:
        return self.config.sigma * self.config.image_size / 256


def _sizes_check(config: CADAConfig, dataset: ImageDataset) -> None:
    if dataset.image_size != config.image_size:
        raise ValueError(f"dataset image_size {dataset.image_size} != config.image_size {config.image_size}: "
                         "load the dataset at the config's size")


def per_class_subset(dataset: ImageDataset, n: int) -> ImageDataset:
    """The first ``n`` images of each class (all when ``n`` is 0), in the dataset's order."""
    if n <= 0:
        return dataset
    seen, keep = {}, []
    for i, s in enumerate(dataset.samples):
        seen[s.class_name] = seen.get(s.class_name, 0) + 1
        if seen[s.class_name] <= n:
            keep.append(i)
    return dataset.subset(keep, name=f"{dataset.name} ({n} per class)")


def _class_ids(dataset: ImageDataset, classes: list[str] | None = None) -> tuple[torch.Tensor, list[str]]:
    names = dataset.class_names
    classes = classes or sorted(set(names))
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise ValueError(f"class {unknown[0]!r} has no training images (the model was trained on {classes}); "
                         "train on a set that holds every class you test")
    return torch.tensor([classes.index(c) for c in names]), classes


def _encoder(config: CADAConfig, device) -> torch.nn.Module:
    with training.seeded(config.seed):
        return make_backbone(config.backbone, config.pretrained, layers=(1, 2, 3), frozen=True).to(device)


# ----------------------------------------------------------------------------- stage 1: reverse distillation
def train_rd(config: CADAConfig, train: ImageDataset, device=None, checkpoint_dir: str | Path | None = None,
             resume: bool = False, overwrite: bool = False, progress: bool = False
             ) -> tuple[torch.nn.Module, ReverseDistillation, dict]:
    """Stage 1: reverse distillation on every training image of every class, no class labels.

    The encoder is frozen, so its three levels are computed once for all training images; each
    iteration draws ``batch_size`` of them and takes one AdamW step on L_RD. Returns (encoder, rd,
    history); ``checkpoint_dir/rd.pt`` after every ``log_every`` iterations (resumable exactly).

    Derived in notebook 06, §2 · Reverse distillation, written out (three iterations by hand, parameter by
    parameter against this).
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    _sizes_check(config, train)
    classes = sorted(set(train.class_names))
    if len(classes) < 2:
        raise ValueError(f"CADA aligns several classes; the training set holds only {classes}. "
                         "Pass two or more categories (CLI: --category A B or --all-categories)")
    encoder = _encoder(config, device)
    cache = cache_tensors(train, device)
    levels = featurize(encoder, cache.images)  # E_1, E_2, E_3 of every training image, once
    gens = training.generators(config.seed, device)
    with training.seeded(config.seed):
        rd = ReverseDistillation(encoder.channels, config.bottleneck or None).to(device)
    opt = torch.optim.AdamW(rd.parameters(), lr=config.rd_lr, weight_decay=config.rd_weight_decay)
    ckpt = Path(checkpoint_dir) / "rd.pt" if checkpoint_dir is not None else None
    states = {"rd": rd, "optimizer": opt}
    may_change = tuple(f.name for f in fields(config) if f.name not in RD_FIELDS)  # rd_iters and stage 2
    start, history = training.start_or_resume(ckpt, config, states, gens, resume=resume, overwrite=overwrite,
                                              may_change=may_change)
    history = history or training.new_history("iteration", "loss", backbone=encoder.name, weights=encoder.weights,
                                              n_train=len(train))
    t0 = time.perf_counter() - history["seconds"]
    n_chunks = -(-config.rd_iters // config.log_every)
    rd.train()
    for chunk in _progress(range(start, n_chunks), "RD", start, n_chunks, progress):
        total, steps = 0.0, range(chunk * config.log_every, min((chunk + 1) * config.log_every, config.rd_iters))
        for it in steps:
            idx = torch.randint(len(cache), (config.batch_size,), generator=gens["cpu"]).to(device)
            enc = [level[idx] for level in levels]  # [B, C_l, h_l, w_l]
            dec, _ = rd(enc)
            loss = cosine_reconstruction_loss(enc, dec)
            training.check_finite(loss, f"reverse distillation, iteration {it}",
                                  f"lower rd_lr (now {config.rd_lr}) or check the images for NaN")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
        training.log_epoch(history, chunk, t0, iteration=steps.stop, loss=total / len(steps))
        if ckpt is not None:
            training.save_checkpoint(ckpt, config, states, chunk, history, gens)
    rd.eval().requires_grad_(False)  # frozen before the heads train
    return encoder, rd, history


def _progress(it, desc, start, total, on):
    if not on:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, initial=start, total=total)


@torch.no_grad()
def rd_outputs(model: CADAModel, images: torch.Tensor, batch_size: int = 32) -> dict:
    """For uint8 images [N, 3, S, S]: the maps A [N, S, S], the bottleneck b and the encoder's last level
    (the two inputs a head may read), all on the CPU."""
    levels = featurize(model.encoder, images)
    size = images.shape[-2:]
    out = {"maps": [], "bottleneck": [], "encoder": []}
    model.rd.eval()
    for idx in torch.arange(len(images)).split(batch_size):
        enc = [level[idx] for level in levels]
        dec, b = model.rd(enc)
        out["maps"].append(anomaly_map(enc, dec, size, model.sigma).cpu())
        out["bottleneck"].append(b.cpu())
        out["encoder"].append(enc[-1].cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def map_stats(maps: torch.Tensor) -> dict:
    """Each map's own normal statistics: u = mean, gamma = max, sigma = standard deviation (maps [N, H, W])."""
    flat = maps.flatten(1)
    return {"u": flat.mean(1), "gamma": flat.max(1).values, "sigma": flat.std(1)}


def class_stats(stats: dict, class_ids: torch.Tensor, n_classes: int, classes: list[str] | None = None) -> torch.Tensor:
    """Eq. 1's (u_c, gamma_c) per class [n_classes, 2]: the mean of class c's training pixels (the mean of
    its images' means, all maps having the same size) and the mean of its training images' maxima.

    Derived in notebook 06, §3 · Every class on its own scale (checked against ``model.stats``)."""
    out = torch.zeros(n_classes, 2)
    for c in range(n_classes):
        sel = class_ids == c
        if not sel.any():
            name = classes[c] if classes else c
            raise ValueError(f"class {name!r} has no training images, so it has no (u_c, gamma_c)")
        out[c] = torch.stack([stats["u"][sel].mean(), stats["gamma"][sel].mean()])
    return out


# ----------------------------------------------------------------------------- stage 2: the heads
def regression_loss(pred: torch.Tensor, target: torch.Tensor, alpha: float = 0.1) -> torch.Tensor:
    """Eqs. 3-4: L = SL1(u_hat, u) + SL1(gamma_hat, gamma), each averaged over the batch.

    ``pred`` and ``target`` are [B, 2] (columns u, gamma; or u, sigma for the (u, sigma) variant).

    Derived in notebook 06, §4 · Alignment: CaDA-A, CaDA-B, CADA and (u, σ), Exercise 2 · The regressor's loss
    (eqs. 3–4).
    """
    return smooth_l1(pred[:, 0], target[:, 0], alpha) + smooth_l1(pred[:, 1], target[:, 1], alpha)


def train_heads(config: CADAConfig, inputs: torch.Tensor, stats: dict, class_ids: torch.Tensor, n_classes: int,
                device=None, names=HEADS) -> tuple[dict, dict]:
    """Stage 2 on cached tensors: the regressor (u, gamma), the (u, sigma) regressor and CaDA-B's
    classifier (or the heads in ``names``), each ``head_iters`` SGD steps of ``batch_size`` on ``inputs``
    [N, C, h, w] (bottleneck or encoder features of the training images, RD frozen). Each head has its
    own seeded stream, so training one alone gives the same head. Returns (heads, history of losses)."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    unknown = sorted(set(names) - set(HEADS))
    if unknown:
        raise ValueError(f"unknown head {unknown[0]!r}; heads: {HEADS}")
    inputs = inputs.to(device)
    targets = {"regressor": torch.stack([stats["u"], stats["gamma"]], 1),
               "regressor_sigma": torch.stack([stats["u"], stats["sigma"]], 1),
               "classifier": class_ids}
    heads, history = {}, {}
    for i, (name, target) in enumerate(targets.items()):
        if name in names:
            with training.seeded(config.seed + 10 + i):  # each head its own streams: init, batches and dropout
                heads[name], history[name] = _fit_head(config, name, inputs, target.to(device), n_classes, device,
                                                       torch.Generator().manual_seed(config.seed + 10 + i))
    return heads, history


def _fit_head(config: CADAConfig, name: str, inputs, target, n_classes: int, device, gen) -> tuple[DistributionHead, list]:
    """``head_iters`` SGD steps of one head: eqs. 3-4 for a regressor, cross-entropy for the classifier."""
    head = _head(config, inputs.shape[1], n_classes if name == "classifier" else 2, device)
    lr = config.classifier_lr if name == "classifier" else config.head_lr
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=config.head_momentum, weight_decay=config.head_weight_decay)
    losses = []
    head.train()
    for it in range(config.head_iters):
        idx = torch.randint(len(inputs), (config.batch_size,), generator=gen).to(device)
        pred = head(inputs[idx])  # dropout draws from the global stream, seeded by the caller
        loss = (F.cross_entropy(pred, target[idx]) if name == "classifier"
                else regression_loss(pred, target[idx], config.sl1_alpha))
        training.check_finite(loss, f"training the {name}, iteration {it}", f"lower the {name}'s learning rate (now {lr})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    k = config.log_every
    return head.eval().requires_grad_(False), [float(np.mean(losses[j:j + k])) for j in range(0, len(losses), k)]


# ----------------------------------------------------------------------------- alignment and scoring
def align(values: torch.Tensor, u: torch.Tensor, gamma: torch.Tensor, eps: float = 1e-3
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Eqs. 1 and 5: (values - u) / (gamma - u), with gamma - u clamped to at least ``eps``.

    ``values``: maps [N, H, W] or scores [N]; ``u``, ``gamma``: [N]. Returns (aligned, clamped [N] bool).
    A map aligned with its own (mean, max) has mean 0 and maximum 1.

    Derived in notebook 06, §4 · Alignment: CaDA-A, CaDA-B, CADA and (u, σ).
    """
    scale = gamma - u
    clamped = scale < eps
    scale = scale.clamp_min(eps)
    shape = (-1,) + (1,) * (values.ndim - 1)
    return (values - u.view(shape)) / scale.view(shape), clamped


@torch.no_grad()
def alignment(model: CADAModel, outputs: dict, class_ids: torch.Tensor | None = None) -> dict:
    """Each variant's per-image (u, gamma) [N, 2] for maps computed by :func:`rd_outputs`, plus the
    classifier's predicted classes. ``class_ids`` (the true classes) are needed for ``class_aware`` only."""
    x = outputs["encoder" if model.config.regressor_input == "encoder" else "bottleneck"]
    dev = next(model.heads["regressor"].parameters()).device
    x = x.to(dev)
    pred = model.heads["regressor"](x).cpu()  # (u_hat, gamma_hat)
    pred_s = model.heads["regressor_sigma"](x).cpu()  # (u_hat, sigma_hat)
    predicted = model.heads["classifier"](x).argmax(1).cpu()
    n = len(x)
    params = {"unaligned": torch.stack([torch.zeros(n), torch.ones(n)], 1),
              "classifier": model.stats[predicted],
              "cada": pred,
              "cada_sigma": torch.stack([pred_s[:, 0], pred_s[:, 0] + model.config.n_sigma * pred_s[:, 1]], 1)}
    if class_ids is not None:
        params["class_aware"] = model.stats[class_ids]
    return {"params": params, "predicted_class": predicted}


def score_cada(model: CADAModel, test: ImageDataset, device=None, batch_size: int = 32) -> dict:
    """Maps and image scores of every variant on ``test``, with what the report needs.

    Returns ``maps`` (A, [N, S, S]), ``masks``, ``labels``, ``classes`` (names per image), ``head_inputs``
    (what the heads read: bottleneck or encoder features),
    ``scores`` {variant: s_img(A_hat) [N]}, ``params`` {variant: (u, gamma) [N, 2]}, ``clamped``
    {variant: [N] bool}, ``predicted_class`` and ``classifier_accuracy``. By linearity the aligned
    score is the aligned raw score: s_img(A_hat) = (s_img(A) - u) / (gamma - u).
    """
    _sizes_check(model.config, test)
    device = torch.device(device) if device is not None else next(model.rd.parameters()).device
    class_ids, _ = _class_ids(test, model.classes)
    cache = cache_tensors(test, device)
    out = rd_outputs(model, cache.images, batch_size)
    al = alignment(model, out, class_ids)
    raw = image_score(out["maps"], model.config.top_percent)
    scores, clamped = {}, {}
    for v in VARIANTS:
        u, gamma = al["params"][v].unbind(1)
        scores[v], clamped[v] = align(raw, u, gamma, model.config.eps)
    return {"maps": out["maps"], "masks": cache.masks[:, 0].cpu(), "labels": cache.anomalous.cpu().numpy(),
            "head_inputs": out["encoder" if model.config.regressor_input == "encoder" else "bottleneck"],
            "classes": np.array(test.class_names), "class_ids": class_ids, "raw_scores": raw, "scores": scores,
            "params": al["params"], "clamped": clamped, "predicted_class": al["predicted_class"],
            "classifier_accuracy": float((al["predicted_class"] == class_ids).float().mean()),
            "eps": model.config.eps}


def unified_report(result: dict, variants=VARIANTS, pixel: bool = True) -> list[dict]:
    """Rows of image and pixel AUROC/AP per variant: ``pooled`` (absolute-unified: every test image, and
    every pixel, ranked together under one threshold), each class, and ``mean`` (of the classes).

    Each row also holds the variant's ``gap`` (mean of per-class image AUROC minus pooled image AUROC),
    ``clamped`` (how many images had gamma_hat - u_hat < eps) and the classifier's accuracy.

    Its two image AUROCs (pooled, and the mean of the per-class ones) are derived in notebook 06, §1 · The problem
    in one picture (the paper's Fig. 3), Exercise 1 · Pooled vs per-class AUROC.
    """
    labels, classes = result["labels"], result["classes"]
    names = sorted(set(classes.tolist()))
    rows = []
    for v in variants:
        u, gamma = result["params"][v].unbind(1)
        scores = result["scores"][v].numpy()
        maps = align(result["maps"], u, gamma, result["eps"])[0] if pixel else None
        per = {}
        for name in ["pooled"] + names:
            sel = np.ones(len(labels), bool) if name == "pooled" else classes == name
            row = metrics.image_metrics(scores[sel], labels[sel])
            if pixel:
                row.update(metrics.pixel_metrics(maps[sel], result["masks"][sel], with_aupro=False))
            per[name] = row
        keys = sorted({k for n in names for k in per[n]})
        per["mean"] = {k: float(np.mean([per[n][k] for n in names if k in per[n]])) for k in keys}
        gap = per["mean"].get("image_AUROC", np.nan) - per["pooled"].get("image_AUROC", np.nan)
        for name, row in per.items():
            rows.append({"method": f"cada:{v}", "variant": v, "category": name, **row, "gap": gap,
                         "clamped": int(result["clamped"][v].sum()), "n_test": int(len(labels) if name in ("pooled", "mean")
                                                                                 else (classes == name).sum()),
                         "classifier_accuracy": result["classifier_accuracy"]})
    return rows


# ----------------------------------------------------------------------------- the whole method
def fit(config: CADAConfig, train: ImageDataset, device=None, checkpoint_dir: str | Path | None = None,
        resume: bool = False, overwrite: bool = False, progress: bool = False) -> CADAModel:
    """Both stages: RD (``rd.pt``), then its frozen outputs on the training set, the class statistics and
    the heads (``heads.pt``). With ``resume`` a finished stage is loaded instead of trained again.

    Returns the trained :class:`CADAModel` alone (the common surface's ``fit``); ``model.history`` holds both
    stages' losses and the training maps' statistics (``train_stats``, ``train_class_ids``), which notebook 06
    reads."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    train = per_class_subset(train, config.train_per_class)
    encoder, rd, history = train_rd(config, train, device, checkpoint_dir, resume, overwrite, progress)
    class_ids, classes = _class_ids(train)
    model = CADAModel(config, encoder, rd, classes=classes, history={"rd": history})
    t0 = time.perf_counter()
    out = rd_outputs(model, cache_tensors(train, device).images)  # RD frozen: training maps and features, once
    stats = map_stats(out["maps"])
    model.stats = class_stats(stats, class_ids, len(classes), classes)
    x = out["encoder" if config.regressor_input == "encoder" else "bottleneck"]
    ckpt = Path(checkpoint_dir) / "heads.pt" if checkpoint_dir is not None else None
    if ckpt is not None and ckpt.exists() and not (resume or overwrite):
        raise FileExistsError(f"{ckpt} exists; pass resume=True to reuse it or overwrite=True to train again "
                              "(CLI: --resume / --overwrite)")
    if ckpt is not None and ckpt.exists() and resume and _heads_match(ckpt, config):
        saved = torch.load(ckpt, map_location=device, weights_only=True)
        heads = {k: _head(config, x.shape[1], len(classes) if k == "classifier" else 2, device) for k in saved["heads"]}
        for k, h in heads.items():
            h.load_state_dict(saved["heads"][k])
            h.eval().requires_grad_(False)
        head_history = json.loads(saved["history"])
    else:
        heads, head_history = train_heads(config, x, stats, class_ids, len(classes), device)
        if ckpt is not None:
            training.save_atomic({"heads": {k: h.state_dict() for k, h in heads.items()},
                                  "config": training.config_to_json(config),
                                  "history": json.dumps(head_history)}, ckpt)
    model.heads = heads
    model.history.update(heads=head_history, head_seconds=time.perf_counter() - t0,
                         train_stats={k: v.numpy() for k, v in stats.items()}, train_class_ids=class_ids.numpy())
    return model


def _head(config: CADAConfig, channels: int, out: int, device) -> DistributionHead:
    return DistributionHead(channels, out, config.n_conv, config.n_linear, config.hidden, config.dropout,
                            config.head_kernel).to(device)


def _heads_match(path: Path, config: CADAConfig) -> bool:
    """Whether ``heads.pt`` was trained on this very RD with these settings. A resumed RD trained for longer
    (``rd_iters`` changed) makes the saved heads stale: they are trained again. Any other difference is an
    error: resume with the same settings or use another checkpoint folder."""
    saved = json.loads(torch.load(path, map_location="cpu", weights_only=True)["config"])
    now = json.loads(training.config_to_json(config))
    differ = sorted(k for k in now if saved.get(k) != now[k] and k != "log_every")
    if differ == ["rd_iters"]:
        print(f"{path}: reverse distillation was trained further ({saved['rd_iters']} -> {now['rd_iters']} "
              "iterations), so the heads are trained again")
        return False
    if differ:
        raise ValueError(f"{path} was written with another configuration ({', '.join(differ)} differ); resume with "
                         "the same settings or use another --checkpoint folder")
    return True


def load_model(checkpoint_dir: str | Path, train: ImageDataset, device="cpu") -> CADAModel:
    """Rebuild a trained model from ``rd.pt`` and ``heads.pt`` (``train`` gives the class statistics)."""
    checkpoint_dir = Path(checkpoint_dir)
    payload = training.load_checkpoint(checkpoint_dir / "rd.pt", device)
    config = training.config_from_json(CADAConfig, payload["config"])
    return fit(config, train, device, checkpoint_dir, resume=True)


def run_cada(config: CADAConfig, train: ImageDataset, test: ImageDataset, device=None, **fit_kwargs) -> dict:
    """Train on ``train`` (every class mixed, no class labels), score ``test``; the report's rows included."""
    model = fit(config, train, device, **fit_kwargs)
    result = score_cada(model, test, device)
    result.update(model=model, rows=unified_report(result))
    return result


# ---- the common surface: Config, fit, predict, save, load, run
# (fit is both stages above: fit(config, train, device=None, checkpoint_dir=..., resume=..., ...) -> CADAModel)
Config = CADAConfig
run = run_cada


@torch.no_grad()
def predict(model: CADAModel, images: torch.Tensor, batch_size: int = 32) -> dict:
    """The unified CADA score and map of images [N, 3, S, S] (uint8, or float in [0, 1]; S = ``config.image_size``).

    ``scores`` [N] is the score the ``cada`` variant's rows rank (:func:`score_cada`'s ``scores["cada"]``): eq. 5's
    s_img(A_hat) = (s_img(A) - u_hat) / (gamma_hat - u_hat), with (u_hat, gamma_hat) the regressor's prediction for
    the image itself, so one threshold serves every class. ``maps`` [N, S, S] (CPU float) is the aligned map
    A_hat = (A - u_hat) / (gamma_hat - u_hat) (what :func:`unified_report` ranks for ``cada``). Also: ``raw_maps`` A,
    ``raw_scores`` s_img(A), ``params`` (u_hat, gamma_hat) [N, 2], ``clamped`` [N] (gamma_hat - u_hat < eps),
    ``variant_scores`` (every variant that needs no true class: unaligned, classifier, cada, cada_sigma) and
    ``predicted_class`` (CaDA-B's classifier, class names)."""
    if tuple(images.shape[-2:]) != (model.config.image_size,) * 2:
        raise ValueError(f"images of size {tuple(images.shape[-2:])}; this model was trained at config.image_size "
                         f"{model.config.image_size} (its maps, sigma and statistics are at that size)")
    out = rd_outputs(model, images, batch_size)
    al = alignment(model, out)
    raw = image_score(out["maps"], model.config.top_percent)
    scores = {v: align(raw, *al["params"][v].unbind(1), model.config.eps)[0] for v in al["params"]}
    u, gamma = al["params"]["cada"].unbind(1)
    maps, clamped = align(out["maps"], u, gamma, model.config.eps)
    return {"scores": scores["cada"], "maps": maps, "raw_maps": out["maps"], "raw_scores": raw,
            "params": al["params"]["cada"], "clamped": clamped, "variant_scores": scores,
            "predicted_class": [model.classes[i] for i in al["predicted_class"].tolist()]}


def save(model: CADAModel, path: str | Path, overwrite: bool = False, tags: dict | None = None) -> Path:
    """One file (:mod:`adlkit.modelfile`): ``state`` = {"rd": the reverse distillation's state dict, "heads": {head:
    state dict}, "stats": (u_c, gamma_c) [n_classes, 2], "train_stats": {"u", "gamma", "sigma"}, "train_class_ids"}
    plus "backbone" when the encoder's weights are random; ``meta`` = the classes, the history (losses, seconds), the
    encoder and the image size. The frozen ImageNet encoder is rebuilt on load."""
    h = model.history
    state = {"rd": modelfile.cpu_state(model.rd), "heads": {k: modelfile.cpu_state(v) for k, v in model.heads.items()},
             "stats": model.stats.detach().cpu(), **modelfile.backbone_state(model.encoder)}
    if "train_stats" in h:
        state["train_stats"] = {k: torch.as_tensor(v) for k, v in h["train_stats"].items()}
        state["train_class_ids"] = torch.as_tensor(h["train_class_ids"])
    meta = {**modelfile.backbone_meta(model.encoder), "image_size": model.config.image_size,
            "classes": list(model.classes),
            "history": {k: v for k, v in h.items() if k not in ("train_stats", "train_class_ids")}}
    return modelfile.write(path, "cada", model.config, state, meta, overwrite, tags)


def load(path: str | Path, device=None) -> CADAModel:
    """The :class:`CADAModel` that :func:`save` wrote, on ``device`` (default CPU): RD and heads frozen, in eval mode,
    its history as :func:`fit` left it."""
    config, state, meta = modelfile.read(path, "cada", CADAConfig, device)
    device = torch.device(device) if device is not None else torch.device("cpu")
    encoder = _encoder(modelfile.rebuild_config(config, meta, stored="backbone" in state), device)
    modelfile.restore_backbone(encoder, state.get("backbone"), meta, path)
    classes = list(meta["classes"])
    with training.seeded(config.seed):  # random inits (overwritten) leave the caller's global RNG alone
        rd = ReverseDistillation(encoder.channels, config.bottleneck or None).to(device)
        width = encoder.channels[-1] if config.regressor_input == "encoder" else rd.bottleneck_channels
        heads = {k: _head(config, width, len(classes) if k == "classifier" else 2, device) for k in state["heads"]}
    rd.load_state_dict(state["rd"])
    rd.eval().requires_grad_(False)
    for k, head in heads.items():
        head.load_state_dict(state["heads"][k])
        head.eval().requires_grad_(False)
    history = dict(meta["history"])
    if "train_stats" in state:
        history.update(train_stats={k: v.cpu().numpy() for k, v in state["train_stats"].items()},
                       train_class_ids=state["train_class_ids"].cpu().numpy())
    return CADAModel(config, encoder, rd, heads=heads, classes=classes, stats=state["stats"].cpu(), history=history)
