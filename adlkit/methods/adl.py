"""ADL - adaptive deviation learning under training-set contamination (seed 000), Algorithm 1.

Model (DESIGN §6): backbone levels 2-4 (ResNet-18: 128 + 256 + 512 = 896 channels) upsampled to
1/8 resolution and concatenated; three heads on top:

* score head       1x1 conv -> |.| -> mean of the top-K patches (eq. 2)         -> s
* classification   GAP(level 4) -> linear -> sigmoid                            -> p
* segmentation     3x3 conv-BN-ReLU -> 1x1 conv to 2 channels, at input size    -> anomaly map

One training step (:func:`adl_losses`), with a batch of n normal-labelled training images (clean or,
unknown to the learner, contaminated) and n Perlin pseudo-anomalies (label 1, with masks):

1. z = (s - mu_R) / sigma_R with (mu_R, sigma_R) from m reference draws (eq. 3)
2. l_dev = deviation loss (eq. 4) during burn-in; afterwards soft deviation (eq. 5) with p detached
3. l_bce = BCE(p, target), target = the labels, alternating step by step with k-means(2) labels of the
   batch's scores (authors' code: k-means labels OR-ed with y, used with probability 0.6)
4. per-batch instance weights w (for l_dev) and v (for l_bce), uniform during burn-in (eqs. 8-10)
5. l_seg = focal loss (gamma = 2) of the segmentation head against the Perlin masks
6. loss = sum_i w_i l_dev,i + sum_i v_i l_bce,i + mean(l_seg)

Every term can be switched off for the ablation (Table 2). Inputs are images in [0, 1]; the
backbone normalises them itself (the authors' code feeds [0, 1] without ImageNet normalisation:
``normalize_input=False`` reproduces that).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import metrics
from ..data import ImageDataset, cache_tensors
from ..losses import deviation_loss, focal_loss, reference_stats, soft_deviation_loss, z_score
from ..models.backbone import backbone as make_backbone
from ..models.backbone import concat_levels
from ..models.heads import ClassificationHead, TopKScoreHead
from ..reweight import batch_weights
from ..synth import PseudoAnomaly

__all__ = ["ADLConfig", "ABLATIONS", "ADLModel", "adl_losses", "kmeans_labels", "train_adl", "score_adl", "run_contaminated",
           "save_checkpoint", "load_checkpoint"]


@dataclass
class ADLConfig:
    """The paper's defaults, with a switch for every ablation row and the authors'-code variants."""

    # model
    backbone: str = "resnet18"
    pretrained: object = "auto"
    layers: tuple = (2, 3, 4)
    normalize_input: bool = True
    image_size: int = 256
    # losses (eqs. 2-5)
    margin: float = 5.0  # gamma; the authors' code uses 10
    topk_ratio: float = 0.1
    m: int = 5000
    focal_gamma: float = 2.0
    # reweighting (eqs. 8-10)
    reweight: str = "alpha"
    lam: float = 0.1
    alpha: float = 0.1
    within_label: bool = True
    burn_in: int = 5  # epochs with hard labels and uniform weights
    # ablation switches (Table 2)
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
    sources: str | None = None  # texture folder for pseudo-anomalies (DTD); None: built-in sources
    shots_per_batch: int = 4  # multi-cue ADL: labelled real anomalies replacing pseudo-anomalies in a batch
    amp: bool = True  # bf16 autocast on CUDA
    seed: int = 0

    @classmethod
    def authors_code(cls, **changes) -> ADLConfig:
        """The variant the authors' code runs: gamma = 10, k-means labels OR-ed with y (p = 0.6)."""
        return cls(**{"margin": 10.0, "bce_target": "kmeans_or_labels", **changes})

    def ablation(self, name: str) -> ADLConfig:
        if name not in ABLATIONS:
            raise ValueError(f"unknown ablation {name!r}; rows: {list(ABLATIONS)}")
        return replace(self, **ABLATIONS[name])


# Table 2: which ingredients are on in each row.
ABLATIONS = {
    "deviation only": dict(use_reweight=False, use_bce=False, use_soft=False, use_seg=False),
    "+ reweighting": dict(use_reweight=True, use_bce=False, use_soft=False, use_seg=False),
    "+ BCE head": dict(use_reweight=True, use_bce=True, use_soft=False, use_seg=False),
    "+ soft deviation": dict(use_reweight=True, use_bce=True, use_soft=True, use_seg=False),
    "ADL (+ segmentation)": dict(use_reweight=True, use_bce=True, use_soft=True, use_seg=True),
    "ADL without reweighting": dict(use_reweight=False, use_bce=True, use_soft=True, use_seg=True),
}


class ADLModel(nn.Module):
    def __init__(self, config: ADLConfig):
        super().__init__()
        self.backbone = make_backbone(config.backbone, pretrained=config.pretrained, layers=config.layers,
                                      normalize=config.normalize_input)
        c = sum(self.backbone.channels)
        self.score_head = TopKScoreHead(c, config.topk_ratio)
        self.cls_head = ClassificationHead(self.backbone.channels[-1])
        self.seg_head = nn.Sequential(nn.Conv2d(c, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
                                      nn.Conv2d(128, 2, 1))

    def forward(self, x: torch.Tensor) -> dict:
        maps = self.backbone(x)
        f = concat_levels(maps)  # [B, C, H/8, W/8] for levels (2, 3, 4)
        score, patch = self.score_head(f)
        seg = F.interpolate(self.seg_head(f), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return {"score": score, "patch": patch, "logit": self.cls_head(maps[-1]), "seg": seg, "last_block": maps[-1]}


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


def _weights(losses, labels, config: ADLConfig, after_burn_in: bool) -> torch.Tensor:
    method = config.reweight if (config.use_reweight and after_burn_in) else "uniform"
    return batch_weights(losses.float(), labels, method, config.lam, config.alpha, config.within_label)


def adl_losses(out: dict, labels: torch.Tensor, masks: torch.Tensor, config: ADLConfig, *, after_burn_in: bool,
               step: int, generator: torch.Generator | None = None) -> dict:
    """The loss terms of one step of Algorithm 1 (see the module docstring); ``total`` is what is optimised.

    Returns ``dev``, ``bce``, ``seg`` (scalars, 0 when switched off), ``total``, and the per-sample
    ``l_dev`` and weights ``w_dev`` (for the history of weights).
    """
    y = labels.float()
    mu, sigma = reference_stats(config.m, generator=generator, device=out["score"].device)
    z = z_score(out["score"].float(), mu, sigma)
    p = torch.sigmoid(out["logit"].float())
    if config.use_soft and config.use_bce and after_burn_in:
        l_dev = soft_deviation_loss(z, p, config.margin)
    else:
        l_dev = deviation_loss(z, y, config.margin)
    w_dev = _weights(l_dev, labels, config, after_burn_in)
    terms = {"dev": (w_dev * l_dev).sum(), "l_dev": l_dev.detach(), "w_dev": w_dev}
    zero = out["score"].new_zeros(())
    if config.use_bce:
        if config.bce_target == "labels":
            target = y
        elif config.bce_target == "alternate":
            target = y if step % 2 == 0 else kmeans_labels(out["score"])
        elif config.bce_target == "kmeans_or_labels":
            draw = torch.rand((), generator=generator, device=generator.device if generator is not None else "cpu")
            target = torch.maximum(kmeans_labels(out["score"]), y) if draw.item() < config.kmeans_probability else y
        else:
            raise ValueError(f"bce_target must be 'alternate', 'labels' or 'kmeans_or_labels'; got {config.bce_target!r}")
        l_bce = F.binary_cross_entropy_with_logits(out["logit"].float(), target, reduction="none")
        terms["bce"] = (_weights(l_bce, labels, config, after_burn_in) * l_bce).sum()
    else:
        terms["bce"] = zero
    terms["seg"] = focal_loss(out["seg"].float(), masks, gamma=config.focal_gamma, reduction="mean") if config.use_seg \
        else zero
    terms["total"] = terms["dev"] + terms["bce"] + terms["seg"]
    return terms


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: str | Path, model: ADLModel, optimizer, config: ADLConfig, epoch: int, history: dict,
                    generators: dict, overwrite: bool = False) -> Path:
    """Plain state dicts (loadable with ``torch.load(weights_only=True)``); never overwrites without ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"checkpoint {path} exists; pass overwrite=True (CLI: --overwrite) to replace it, "
                              "or choose another --checkpoint folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "config": json.dumps(asdict(config)),
        "epoch": epoch,
        "history": json.dumps(history),
        "generators": {k: g.get_state() for k, g in generators.items()},
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # a crash mid-write never leaves a truncated checkpoint behind
    return path


def _config_from_json(text: str) -> ADLConfig:
    raw = json.loads(text)
    known = {f.name for f in fields(ADLConfig)}
    raw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in raw.items() if k in known}
    return ADLConfig(**raw)


def load_checkpoint(path: str | Path, device="cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`: model, config, epoch, history, optimizer state."""
    payload = torch.load(path, map_location=device, weights_only=True)
    config = _config_from_json(payload["config"])
    model = ADLModel(replace(config, pretrained=False)).to(device)
    model.load_state_dict(payload["model"])
    return {"model": model, "config": config, "epoch": payload["epoch"], "history": json.loads(payload["history"]),
            "optimizer": payload["optimizer"], "generators": payload["generators"]}


# ----------------------------------------------------------------------------- training (Algorithm 1)
def train_adl(config: ADLConfig, train: ImageDataset, device=None, checkpoint_dir: str | Path | None = None,
              resume: bool = False, overwrite: bool = False, progress: bool = False,
              stop_after_epoch: int | None = None, shots: ImageDataset | None = None) -> tuple[ADLModel, dict]:
    """Train ADL on ``train`` (normal-labelled images, possibly contaminated). Returns (model, history).

    ``shots`` (multi-cue ADL, seed 001): labelled real anomalies with their masks; every step
    ``config.shots_per_batch`` of them take the place of as many pseudo-anomalies.

    ``checkpoint_dir``: write ``last.pt`` after every epoch (refusing to replace an existing one
    unless ``overwrite`` or ``resume``); ``resume=True`` continues from it and gives the same result
    as an uninterrupted run. ``history`` holds per-epoch losses, the mean weight (x batch size) given to
    contaminated vs clean normal-labelled images, and the wall time.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    if train.image_size != config.image_size:
        raise ValueError(f"dataset image_size {train.image_size} != config.image_size {config.image_size}")
    cache = cache_tensors(train, device)
    normal_idx = torch.nonzero(cache.labels == 0)[:, 0].cpu()
    if len(normal_idx) == 0:
        raise ValueError("the training set has no normal-labelled images")
    contaminated = (cache.anomalous == 1) & (cache.labels == 0)
    shot_cache = cache_tensors(shots, device) if shots is not None and len(shots) else None
    n_shot = min(config.shots_per_batch, config.n_pseudo) if shot_cache is not None else 0

    g_cpu = torch.Generator().manual_seed(config.seed)  # batch sampling, reference draws, k-means coin
    g_dev = torch.Generator(device=device).manual_seed(config.seed + 1)  # pseudo-anomalies
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = ADLModel(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    pseudo = PseudoAnomaly(config.image_size, sources=config.sources, beta_range=config.beta_range, device=device)
    history = {"epoch": [], "loss": [], "dev": [], "bce": [], "seg": [], "weight_clean": [], "weight_contaminated": [],
               "seconds": 0.0, "backbone": model.backbone.name, "weights": model.backbone.weights}
    start_epoch = 0
    ckpt = Path(checkpoint_dir) / "last.pt" if checkpoint_dir is not None else None
    if ckpt is not None and ckpt.exists():
        if resume:
            state = torch.load(ckpt, map_location=device, weights_only=True)
            saved = _config_from_json(state["config"])
            if replace(saved, epochs=config.epochs) != replace(config, epochs=config.epochs):
                raise ValueError(f"{ckpt} was written with another configuration; resume with the same settings "
                                 "(only --epochs may grow) or use another --checkpoint folder")
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            g_cpu.set_state(state["generators"]["cpu"].cpu())  # generator states are CPU byte tensors
            g_dev.set_state(state["generators"]["device"].cpu())
            history = json.loads(state["history"])
            start_epoch = state["epoch"] + 1
        elif not overwrite:
            raise FileExistsError(f"checkpoint {ckpt} exists; pass resume=True to continue it or overwrite=True to "
                                  "start again (CLI: --resume / --overwrite)")
    use_amp = config.amp and device.type == "cuda"
    t0 = time.perf_counter() - history["seconds"]
    epochs = range(start_epoch, config.epochs)
    if progress:
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc=f"ADL {model.backbone.name}", initial=start_epoch, total=config.epochs)
    model.train()
    for epoch in epochs:
        after = epoch >= config.burn_in
        sums = {k: 0.0 for k in ("loss", "dev", "bce", "seg")}
        w_clean = w_cont = n_clean = n_cont = 0.0
        for step in range(config.steps_per_epoch):
            pick = normal_idx[torch.randint(len(normal_idx), (config.n_normal + config.n_pseudo,), generator=g_cpu)]
            normal = cache.batch(pick[:config.n_normal])
            base = cache.batch(pick[config.n_normal:])["image"]
            fake, fake_masks, _ = pseudo(base, g_dev)
            if n_shot:  # real labelled anomalies (with masks) replace the last pseudo-anomalies
                real = shot_cache.batch(torch.randint(len(shot_cache), (n_shot,), generator=g_cpu))
                fake = torch.cat([fake[:-n_shot], real["image"]])
                fake_masks = torch.cat([fake_masks[:-n_shot], real["mask"]])
            images = torch.cat([normal["image"], fake])
            masks = torch.cat([fake_masks.new_zeros(config.n_normal, *fake_masks.shape[1:]), fake_masks])
            labels = torch.cat([torch.zeros(config.n_normal, device=device), torch.ones(config.n_pseudo, device=device)])
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                out = model(images)
            terms = adl_losses(out, labels, masks, config, after_burn_in=after, step=epoch * config.steps_per_epoch + step,
                               generator=g_cpu)
            if not torch.isfinite(terms["total"]):
                raise FloatingPointError(f"ADL loss became {terms['total'].item()} at epoch {epoch}, step {step}: "
                                         f"lower the learning rate (now {config.lr}) or check the data for NaN")
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            optimizer.step()
            for k in sums:
                sums[k] += float(terms["total" if k == "loss" else k].detach())
            cont = contaminated[pick[:config.n_normal].to(device)]
            w = terms["w_dev"][:config.n_normal].detach() * len(labels)
            w_cont += float(w[cont].sum())
            n_cont += int(cont.sum())
            w_clean += float(w[~cont].sum())
            n_clean += int((~cont).sum())
        history["epoch"].append(epoch)
        for k in sums:
            history[k].append(sums[k] / config.steps_per_epoch)
        history["weight_clean"].append(w_clean / max(n_clean, 1))
        history["weight_contaminated"].append(w_cont / n_cont if n_cont else None)
        history["seconds"] = time.perf_counter() - t0
        if ckpt is not None:
            save_checkpoint(ckpt, model, optimizer, config, epoch, history, {"cpu": g_cpu, "device": g_dev},
                            overwrite=True)
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            break
    model.eval()
    return model, history


def run_contaminated(config: ADLConfig, train: ImageDataset, test: ImageDataset, ratio: float, device=None,
                     leaky: bool = False, n_shots: int = 0, scorer=None, **train_kwargs) -> dict:
    """ADL's protocol end to end: contaminate (seeded by ``config.seed``), take ``n_shots`` labelled
    anomalies per class out of the test set (multi-cue ADL), train, score on what is left.

    ``scorer(model, test, device, train=..., shots=...)`` replaces :func:`score_adl` (e.g.
    :func:`adlkit.methods.multicue.score_multicue`). Returns the scorer's result plus ``model``, ``history``, ``report``
    (contamination), ``shots`` (the few-shot report), ``contaminated`` (those training images) and
    ``test`` (the test set that was scored, in the order of the scores).
    """
    from ..data import contaminate, few_shot

    c_train, c_test, report = contaminate(train, test, ratio, seed=config.seed, leaky=leaky)
    shots, c_test, shot_report = few_shot(c_test, n_shots, seed=config.seed)
    model, history = train_adl(config, c_train, device, shots=shots, **train_kwargs)
    if scorer is None:
        result = score_adl(model, c_test, device)
    else:  # a scorer may fit things (e.g. multi-cue normalisers) on the training data, never on the test set
        result = scorer(model, c_test, device, train=c_train, shots=shots)
    hidden = [i for i, s in enumerate(c_train.samples) if s.truth == 1 and s.label == 0]
    result.update(model=model, history=history, report=report, shots=shot_report, contaminated=c_train.subset(hidden),
                  test=c_test)
    return result


@torch.no_grad()
def score_adl(model: ADLModel, test: ImageDataset, device=None, batch_size: int = 32) -> dict:
    """Image scores (the deviation score s) and anomaly maps (segmentation softmax) with metrics."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    cache = cache_tensors(test, device)
    model.eval()
    scores, maps = [], []
    for batch in cache.batches(batch_size):
        out = model(batch["image"])
        scores.append(out["score"].float().cpu())
        maps.append(out["seg"].float().softmax(1)[:, 1].cpu())
    scores, maps = torch.cat(scores).numpy(), torch.cat(maps)
    labels = cache.anomalous.cpu().numpy()
    result = {"scores": scores, "maps": maps, "labels": labels}
    if 0 < labels.sum() < len(labels):
        result["image_AUROC"] = metrics.image_auroc(scores, labels)
        result["image_AUPR"] = metrics.image_aupr(scores, labels)
        masks = cache.masks[:, 0].cpu()
        if masks.any():
            result["pixel_AUROC"] = metrics.pixel_auroc(maps, masks)
    return result
