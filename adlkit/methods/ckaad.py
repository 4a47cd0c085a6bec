"""CKAAD: feature reconstruction kept from reconstructing anomalies by energy-based discriminators.

Q. Fang, Q. Su, W. Lv, W. Xu, J. Yu, *Boosting Fine-Grained Visual Anomaly Detection with
Coarse-Knowledge-Aware Adversarial Learning*, arXiv:2412.12850, 2024 (AAAI 2025). The equations are
restored from the paper's prose and the official code (``Faustinaqq/CKAAD``); numbers are the paper's.

A feature auto-encoder G rebuilds a frozen backbone's features f; its reconstruction error maps the
anomaly. Trained on normal images alone, G also learns to rebuild anomalies ("over-generalisation").
CKAAD adds a discriminator D that has seen a few *coarse* anomalies (image labels only; for industrial
data, elastic warps of normal images) and assigns every input an energy E(s, y) = (1 - y)|s| + y max(0, m - |s|):

* (8)  L_D = E(D(f_n), 0) + (1 - gamma) E(D(f_a), 1) + gamma E(D(G(f)), 1),  G over normal and anomalous f
* (9)  L_adv = E(D(G(f)), 0): G is pushed to output what D calls normal, even for anomalous inputs
* (2)  L_rec = sum_l mean_b [1 - cos(vec f_l, vec f^_l)] on normal images;  G's loss = L_rec + 0.02 L_adv
* (11)-(12) the patch discriminator: the same energies per position (every patch of an anomalous image is
  labelled 1), averaged over positions and summed over levels; the image discriminator: one per image
* (13) each step: D on L_D with G fixed (gradient norm clipped at 1), then G with the updated D
* (14) A = Gauss_sigma(sum_l up(1 - cos(f_l(i, j), f^_l(i, j)))), image score = mean of the top k pixels

The rows of the paper's Table 3 are :data:`ABLATIONS`: reconstruction only; ReconSub (eq. 4:
L_rec(normal) - lambda L_rec(anomalous)); the "pure GAN" (eq. 7: an image D trained with BCE on normal
features (0) against G's reconstructions (1) only - the coarse anomalies reach it only through G's inputs,
which is the point of the comparison: "the discriminator has not been informed of any anomaly
information"); the image D (eq. 8); the patch D (eqs. 11-12); both.

CPU design: the backbone is frozen, so the features of the training images and of a seeded bank of
``n_warps`` elastic warps per image are computed once (:func:`prepare_data`); every step trains on
tensors. Differences from the official code: its image discriminator is dead code (a second class of
the same name shadows it) - here both exist and can be combined; its decoder ends in ReLU, here a linear
convolution (EfficientNet-Lite0's features are signed); it reports the test metrics of every epoch with
no validation split - adlkit reports the last step (``run_ckaad(eval_at=...)`` scores chosen steps of one
run: a learning curve, not a selection).

Metrics: ``pixel_AUPRO`` is adlkit's dataset-level AUPRO (Bergmann et al., MVTec AD, IJCV 2021: every
region of every test image on one curve, FPR over all normal pixels of the test set). The paper only says
"PRO (Per-Region Overlap)"; the authors' code (``util/test.py``, from RD4AD's) computes it per anomalous
image (its own thresholds, FPR over that image's normal pixels) and averages over images - reported here
as ``pixel_AUPRO_per_image`` (:func:`adlkit.metrics.aupro_per_image`), the number comparable to the paper's.

Schedule: the paper trains 400 epochs of batch 16 on MVTec AD (200-400 images a class: 5,000-10,000
steps). ``steps`` is adlkit's default for notebooks; the CLI grid's length comes from the measured curve
(``figures/results/cli_ckaad_schedule.json``) and is recorded in every row's config.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import metrics, modelfile, training
from ..data import ImageDataset, cache_tensors
from ..features import backbone_key, featurize, images_key, remember
from ..losses import cosine_reconstruction_loss, energy
from ..maps import anomaly_map
from ..models import backbone as make_backbone
from ..models.ckaad import FeatureAE, ImageDiscriminator, PatchDiscriminator
from ..synth import PseudoAnomaly, elastic_anomalies

__all__ = ["CKAADConfig", "ABLATIONS", "CKAADModel", "CKAADData", "prepare_data", "discriminator_energy",
           "discriminator_loss", "generator_loss", "ckaad_step", "train_ckaad", "predict", "score_ckaad", "run_ckaad",
           "discriminator_stats", "coarse_anomalies", "Config", "fit", "save", "load", "run"]

OBJECTIVES = ("energy", "gan", "reconsub")
ANOMALIES = ("elastic", "perlin", "real")


@dataclass
class CKAADConfig:
    """The paper's settings (Sec. 4), with the switches of its Table 3."""

    backbone: str = "efficientnet_lite0"  # the paper: wide_resnet50_2 (its weights need internet)
    pretrained: object = "auto"
    image_size: int = 128  # the paper: 256 (kept selectable); sigma and k below scale with it
    # the row (Table 3)
    patch_d: bool = True  # eqs. 11-12
    image_d: bool = False  # eq. 8 on whole images
    objective: str = "energy"  # "energy" (eqs. 8-9), "gan" (eq. 7: BCE, D never sees f_a), "reconsub" (eq. 4: no D)
    lam: float = 1.0  # ReconSub's weight of the anomalous reconstruction loss
    margin: float = 5.0  # m of the energy
    gamma: float = 0.5  # share of G's reconstructions among D's anomalous inputs (eq. 8)
    adv_weight: float = 0.02  # weight of L_adv in G's loss (eq. 13)
    # coarse anomalies
    anomalies: str = "elastic"  # "elastic" (warps of training images), "perlin" (DRAEM-style blends), "real" (shots)
    warp_alpha: float = 200.0
    warp_sigma: float = 5.0
    n_warps: int = 4  # the bank: warps (or Perlin blends) per training image, featurised once
    fresh_warps: bool = False  # elastic: a new warp of each batch image at every step (the official code; slower)
    sources: str | None = None  # "perlin": texture folder (DTD); None: ADLKIT_TEXTURES or built-in sources
    shots: int = 10  # "real": labelled anomalies per class, taken out of the test set
    # optimisation
    steps: int = 600
    n_normal: int = 16
    n_anomalous: int = 16
    lr_g: float = 5e-3
    lr_d: float = 1e-4
    betas: tuple = (0.5, 0.999)
    clip_d: float = 1.0
    log_every: int = 50  # steps per history entry and checkpoint
    # maps and scores (eq. 14), at 256 px; scaled with the image size
    sigma: float = 4.0
    top_k: int = 100
    seed: int = 0

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be 'energy', 'gan' or 'reconsub'; got {self.objective!r}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be at least 1 (the image score averages the top k pixels); got {self.top_k}")
        if self.anomalies not in ANOMALIES:
            raise ValueError(f"anomalies must be 'elastic', 'perlin' or 'real'; got {self.anomalies!r}")
        if self.anomalies in ("elastic", "perlin") and self.n_warps < 1:
            raise ValueError(f"n_warps must be at least 1 (the bank holds n_warps corrupted copies of each training "
                             f"image); got {self.n_warps}")
        if self.fresh_warps and self.anomalies != "elastic":
            raise ValueError("fresh_warps applies to elastic warps; use anomalies='elastic' or fresh_warps=False")
        if self.fresh_warps and self.n_anomalous > self.n_normal:
            raise ValueError(f"fresh_warps warps the batch's own images: n_anomalous ({self.n_anomalous}) must not exceed "
                             f"n_normal ({self.n_normal}); lower n_anomalous or use fresh_warps=False")

    def ablation(self, name: str) -> CKAADConfig:
        if name not in ABLATIONS:
            raise ValueError(f"unknown CKAAD row {name!r}; choose one of {list(ABLATIONS)}")
        return replace(self, **ABLATIONS[name])

    def ablation_name(self) -> str | None:
        return next((n for n, ch in ABLATIONS.items() if all(getattr(self, k) == v for k, v in ch.items())), None)

    @property
    def uses_d(self) -> bool:
        return self.objective != "reconsub" and (self.patch_d or self.image_d)

    @property
    def k_pixels(self) -> int:
        """The image score's k at this image size (k = 100 at 256 px, scaled with the area)."""
        return max(1, round(self.top_k * (self.image_size / 256) ** 2))


ABLATIONS = {
    "recon": dict(patch_d=False, image_d=False, objective="energy"),
    "reconsub": dict(patch_d=False, image_d=False, objective="reconsub"),
    "gan": dict(patch_d=False, image_d=True, objective="gan"),
    "+image": dict(patch_d=False, image_d=True, objective="energy"),
    "+patch": dict(patch_d=True, image_d=False, objective="energy"),
    "both": dict(patch_d=True, image_d=True, objective="energy"),
}


# ----------------------------------------------------------------------------- model and data
@dataclass
class CKAADModel:
    """The frozen backbone, the feature auto-encoder G and the row's discriminators (training history beside)."""

    config: CKAADConfig
    backbone: torch.nn.Module  # frozen, levels 1-3
    ae: FeatureAE
    d_patch: PatchDiscriminator | None
    d_image: ImageDiscriminator | None
    history: dict = field(default_factory=dict)  # train_ckaad's (fit and load set it)

    def discriminators(self) -> list[torch.nn.Module]:
        return [d for d in (self.d_patch, self.d_image) if d is not None]

    @property
    def sigma(self) -> float:
        return self.config.sigma * self.config.image_size / 256


def build_model(config: CKAADConfig, device) -> CKAADModel:
    """The networks of ``config``'s row, seeded by ``config.seed`` (the config validated itself when it was made)."""
    with training.seeded(config.seed):
        net = make_backbone(config.backbone, config.pretrained, layers=(1, 2, 3), frozen=True).to(device)
        ae = FeatureAE(net.channels).to(device)
        sizes = [config.image_size // s for s in net.strides]
        d_patch = PatchDiscriminator(net.channels).to(device) if config.uses_d and config.patch_d else None
        d_image = ImageDiscriminator(net.channels, sizes).to(device) if config.uses_d and config.image_d else None
    return CKAADModel(config, net, ae, d_patch, d_image)


@dataclass
class CKAADData:
    """Cached features: the normal training images' levels [N, C_l, h_l, w_l] and the coarse anomalies'
    (elastic: ``n_warps`` warps of each training image, [N * n_warps, ...], warp w of image i at
    i * n_warps + w; real: the shots' levels)."""

    normal: list[torch.Tensor]
    anomalous: list[torch.Tensor]  # empty with fresh_warps
    paired: bool  # warps and blends: anomaly j of a batch is a corrupted copy of normal image j
    images: torch.Tensor | None = None  # fresh_warps: the uint8 training images, warped anew at every step


def prepare_data(config: CKAADConfig, model: CKAADModel, train: ImageDataset, device,
                 shots: ImageDataset | None = None) -> CKAADData:
    """Decode and featurise the training images once, and the coarse anomalies (the warp bank, seeded by
    ``config.seed`` and remembered for the process like ADL's pools, or the real shots)."""
    if train.image_size != config.image_size:
        raise ValueError(f"dataset image_size {train.image_size} != config.image_size {config.image_size}")
    images = cache_tensors(train, device).images
    normal = featurize(model.backbone, images)
    if config.anomalies in ("elastic", "perlin"):
        corrupt = coarse_anomalies(config, device)

        def make_bank():
            g = torch.Generator(device=device).manual_seed(config.seed + 5)
            feats = []
            with torch.no_grad():
                for chunk in images.split(32):  # n_warps corrupted copies of each image, image-major
                    x = chunk.float().div(255).repeat_interleave(config.n_warps, dim=0)
                    feats.append([f.cpu() for f in model.backbone(corrupt(x, g))])
            return [torch.cat(level).to(device) for level in zip(*feats)]

        if config.fresh_warps:  # no bank: sample_batch warps the batch's own images at every step (elastic only)
            return CKAADData(normal, [], paired=True, images=images)
        # one bank per class, backbone and setting, shared by every row of a grid in this process
        key = (backbone_key(model.backbone), config.anomalies, images_key(images), config.n_warps, config.warp_alpha,
               config.warp_sigma, config.seed, getattr(corrupt, "source_kind", None))
        return CKAADData(normal, remember(key, make_bank), paired=True)
    # anomalies == "real" (the config allows no other source)
    if shots is None or len(shots) == 0:
        raise ValueError("anomalies='real' needs labelled anomalies: pass shots (data.few_shot) or use --shots N")
    return CKAADData(normal, featurize(model.backbone, cache_tensors(shots, device).images), paired=False)


def coarse_anomalies(config: CKAADConfig, device):
    """``corrupt(images in [0, 1], generator)``: an elastic warp (the paper's coarse anomalies for industrial
    images) or a Perlin blend of a texture (DRAEM's pseudo-anomalies, as ADL uses them)."""
    if config.anomalies == "elastic":
        return lambda x, g: elastic_anomalies(x, config.warp_alpha, config.warp_sigma, g)
    pseudo = PseudoAnomaly(config.image_size, sources=config.sources, device=device)

    def blend(x, g):
        return pseudo(x, g)[0]

    blend.source_kind = pseudo.source_kind
    return blend


def sample_batch(data: CKAADData, config: CKAADConfig, gen: torch.Generator, backbone=None,
                 g_device: torch.Generator | None = None) -> tuple[list, list]:
    """``n_normal`` normal feature maps and ``n_anomalous`` coarse anomalies (warps or blends: a corrupted copy
    of each of the same images, as the official code pairs each image with a warp of itself). With
    ``fresh_warps`` the copies are warped now (``g_device``) and featurised by ``backbone``."""
    n = len(data.normal[0])
    idx = torch.randint(n, (config.n_normal,), generator=gen)
    if data.images is not None:  # fresh_warps (the config keeps n_anomalous <= n_normal)
        dev = data.normal[0].device
        x = data.images[idx[:config.n_anomalous].to(data.images.device)].float().div(255)
        with torch.no_grad():
            warped = backbone(elastic_anomalies(x, config.warp_alpha, config.warp_sigma, g_device))
        return [f[idx.to(dev)] for f in data.normal], [w.to(dev) for w in warped]
    if data.paired:
        take = idx[:config.n_anomalous] if config.n_anomalous <= config.n_normal else torch.randint(
            n, (config.n_anomalous,), generator=gen)
        a_idx = take * config.n_warps + torch.randint(config.n_warps, (len(take),), generator=gen)
    else:
        a_idx = torch.randint(len(data.anomalous[0]), (config.n_anomalous,), generator=gen)
    dev = data.normal[0].device
    return [f[idx.to(dev)] for f in data.normal], [f[a_idx.to(dev)] for f in data.anomalous]


# ----------------------------------------------------------------------------- the losses (eqs. 2, 4, 7-9, 11-13)
def discriminator_energy(scores, y: float, config: CKAADConfig) -> torch.Tensor:
    """The energy of a discriminator's outputs for target y: a patch D's list of per-level maps [B, h, w]
    gives the mean over images and positions, summed over levels (eq. 12); an image D's [B] the mean.
    With ``objective="gan"`` the BCE of the scores as logits instead (eq. 7).

    Derived in notebook 07, §2 · Energy, and the discriminator's loss (eq. 8) (the energy, and Exercise 1 · The
    patch discriminator's loss)."""
    def one(s):
        if config.objective == "gan":
            return F.binary_cross_entropy_with_logits(s, torch.full_like(s, float(y)))
        return energy(s, y, config.margin).mean()

    return sum(one(s) for s in scores) if isinstance(scores, (list, tuple)) else one(scores)


def discriminator_loss(d, f_normal, f_anomalous, recon, config: CKAADConfig) -> torch.Tensor:
    """Eq. 8 for one discriminator: E(D(f_n), 0) + (1 - gamma) E(D(f_a), 1) + gamma E(D(G(f)), 1).

    With ``objective="gan"`` eq. 7, the vanilla GAN: BCE(D(f_n), 0) + BCE(D(G(f)), 1) - the coarse anomalies
    ``f_anomalous`` are not D's inputs (they enter only as G's inputs, inside ``recon``), and no gamma.
    ``recon`` is G's output on the batch (normal and anomalous inputs), detached by the caller.

    Derived in notebook 07, §2 · Energy, and the discriminator's loss (eq. 8): Exercise 1 · The patch
    discriminator's loss writes it for the patch discriminator."""
    if config.objective == "gan":
        return discriminator_energy(d(f_normal), 0, config) + discriminator_energy(d(recon), 1, config)
    return (discriminator_energy(d(f_normal), 0, config) + (1 - config.gamma) * discriminator_energy(d(f_anomalous), 1, config)
            + config.gamma * discriminator_energy(d(recon), 1, config))


def generator_loss(f_normal, recon_normal, config: CKAADConfig, d_outputs_recon=(), f_anomalous=None,
                   recon_anomalous=None) -> dict:
    """G's loss (eq. 13): L_rec (eq. 2, normal images only) + adv_weight * L_adv (eq. 9: the energy of D's
    outputs on every reconstruction as normal), or ReconSub's L_rec(normal) - lam L_rec(anomalous) (eq. 4).
    ``d_outputs_recon``: each discriminator's outputs on the reconstructions. Returns the terms and ``total``.

    Its L_rec (eq. 2) is derived in notebook 07, §1 · Feature reconstruction, and why it over-generalises."""
    rec = cosine_reconstruction_loss(f_normal, recon_normal)
    terms = {"rec": rec, "adv": torch.zeros((), device=rec.device), "sub": torch.zeros((), device=rec.device)}
    if config.objective == "reconsub":
        terms["sub"] = cosine_reconstruction_loss(f_anomalous, recon_anomalous)
        terms["total"] = rec - config.lam * terms["sub"]
        return terms
    if d_outputs_recon:
        terms["adv"] = sum(discriminator_energy(out, 0, config) for out in d_outputs_recon)
    terms["total"] = rec + config.adv_weight * terms["adv"]
    return terms


def ckaad_step(model: CKAADModel, f_normal, f_anomalous, opt_g, opt_d, config: CKAADConfig) -> dict:
    """One step of eq. 13 on given features: D on L_D with G fixed (gradient norm clipped), then G."""
    n = len(f_normal[0])
    both = [torch.cat([a, b]) for a, b in zip(f_normal, f_anomalous)]
    out = {"d": 0.0}
    if config.uses_d:
        with torch.no_grad():
            recon = model.ae(both)[0]
        loss_d = sum(discriminator_loss(d, f_normal, f_anomalous, recon, config) for d in model.discriminators())
        training.check_finite(loss_d, "the discriminator step", f"lower lr_d (now {config.lr_d})")
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        torch.nn.utils.clip_grad_norm_([p for d in model.discriminators() for p in d.parameters()], config.clip_d)
        opt_d.step()
        out["d"] = float(loss_d.detach())
    g_inputs = both if (config.uses_d or config.objective == "reconsub") else f_normal
    recon = model.ae(g_inputs)[0]
    recon_n = [r[:n] for r in recon]
    d_outs = [d(recon) for d in model.discriminators()] if config.uses_d else ()
    terms = generator_loss(f_normal, recon_n, config, d_outs, f_anomalous,
                           [r[n:] for r in recon] if config.objective == "reconsub" else None)
    training.check_finite(terms["total"], "the generator step", f"lower lr_g (now {config.lr_g})")
    opt_g.zero_grad(set_to_none=True)
    terms["total"].backward()
    opt_g.step()
    out.update({k: float(v.detach()) for k, v in terms.items()})
    return out


# ----------------------------------------------------------------------------- training and scoring
def train_ckaad(config: CKAADConfig, train: ImageDataset, device=None, shots: ImageDataset | None = None,
                checkpoint_dir: str | Path | None = None, resume: bool = False, overwrite: bool = False,
                on_log=None) -> tuple[CKAADModel, dict]:
    """Train G (and the discriminators of the row) for ``config.steps`` steps; returns (model, history).
    ``checkpoint_dir/last.pt`` every ``log_every`` steps; a resumed run equals an uninterrupted one.
    ``on_log(model, data, step, seconds)``, if given, runs after every ``log_every`` steps (in eval mode; it
    must not draw random numbers: the run stays the same with or without it; its own time is not counted
    in ``seconds``, the training time so far)."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    model = build_model(config, device)
    data = prepare_data(config, model, train, device, shots)
    gens = training.generators(config.seed, device)
    opt_g = torch.optim.Adam(model.ae.parameters(), lr=config.lr_g, betas=tuple(config.betas))
    d_params = [p for d in model.discriminators() for p in d.parameters()]
    opt_d = torch.optim.Adam(d_params, lr=config.lr_d, betas=tuple(config.betas)) if d_params else None
    states = {"ae": model.ae, "opt_g": opt_g, **({"opt_d": opt_d} if opt_d else {}),
              **({"d_patch": model.d_patch} if model.d_patch else {}), **({"d_image": model.d_image} if model.d_image else {})}
    ckpt = Path(checkpoint_dir) / "last.pt" if checkpoint_dir is not None else None
    start, history = training.start_or_resume(ckpt, config, states, gens, resume=resume, overwrite=overwrite,
                                              may_change=("steps",))
    history = history or training.new_history("step", "rec", "adv", "sub", "d", backbone=model.backbone.name,
                                              weights=model.backbone.weights)
    t0 = time.perf_counter() - history["seconds"]
    _set_mode(model, True)
    for chunk in range(start, math.ceil(config.steps / config.log_every)):
        steps = range(chunk * config.log_every, min((chunk + 1) * config.log_every, config.steps))
        sums = dict.fromkeys(("rec", "adv", "sub", "d"), 0.0)
        for _ in steps:
            f_n, f_a = sample_batch(data, config, gens["cpu"], model.backbone, gens["device"])
            out = ckaad_step(model, f_n, f_a, opt_g, opt_d, config)
            for k in sums:
                sums[k] += out[k]
        training.log_epoch(history, chunk, t0, step=steps.stop, **{k: v / len(steps) for k, v in sums.items()})
        if ckpt is not None:
            training.save_checkpoint(ckpt, config, states, chunk, history, gens)
        if on_log is not None:
            t_log = time.perf_counter()
            _set_mode(model, False)
            on_log(model, data, steps.stop, history["seconds"])
            _set_mode(model, True)
            t0 += time.perf_counter() - t_log
    _set_mode(model, False)
    model.history = history
    return model, history


def _set_mode(model: CKAADModel, train: bool) -> None:
    for net in (model.ae, *model.discriminators()):
        net.train(train)


@torch.no_grad()
def predict(model: CKAADModel, images: torch.Tensor, batch_size: int = 32) -> dict:
    """Eq. 14 for images [N, 3, S, S] (uint8, or float in [0, 1]): ``maps`` A [N, S, S] (CPU float) and image
    ``scores`` [N] (the mean of the top k pixels, :attr:`CKAADConfig.k_pixels`).

    The map is derived in notebook 07, §1 · Feature reconstruction, and why it over-generalises
    (:func:`adlkit.maps.anomaly_map`)."""
    levels = featurize(model.backbone, images)
    maps = []
    for idx in torch.arange(len(images)).split(batch_size):
        f = [level[idx] for level in levels]
        maps.append(anomaly_map(f, model.ae(f)[0], images.shape[-2:], model.sigma).cpu())
    maps = torch.cat(maps)
    scores = maps.flatten(1).topk(model.config.k_pixels, dim=1).values.mean(1)
    return {"maps": maps, "scores": scores}


def score_ckaad(model: CKAADModel, test: ImageDataset, device=None) -> dict:
    """Image AUROC/AUPR and pixel AUROC/AUPR/AUPRO (dataset-level) of eq. 14's maps and scores on ``test``,
    plus ``pixel_AUPRO_per_image`` (the authors' code's PRO: per anomalous image, averaged)."""
    device = torch.device(device) if device is not None else next(model.ae.parameters()).device
    cache = cache_tensors(test, device)
    out = predict(model, cache.images)
    masks = cache.masks[:, 0].cpu()
    result = metrics.evaluate(out["scores"], out["maps"], cache.anomalous.cpu().numpy(), masks)
    if "pixel_AUPRO" in result:
        result["pixel_AUPRO_per_image"] = metrics.aupro_per_image(out["maps"], masks)
    return result


@torch.no_grad()
def discriminator_stats(model: CKAADModel, data: CKAADData, n: int = 32) -> dict:
    """What the discriminators have learned, on the first ``n`` training images, their coarse anomalies and
    G's reconstructions of both: per discriminator (``patch``, ``image``) the mean |s| - the energy
    E(s, 0) - on each (``d_patch_normal``, ``d_patch_anomalous``, ``d_patch_recon``; a patch D's positions
    and levels averaged) and ``d_patch_auroc``: how well the image-mean |s| separates the n anomalies from
    the n normal images (0.5: not at all). {} without a discriminator or a cached bank (fresh_warps)."""
    if not model.discriminators() or not data.anomalous:
        return {}
    f_n = [f[:n] for f in data.normal]
    if data.paired:  # warp 0 of the same images
        idx = torch.arange(len(f_n[0]), device=data.anomalous[0].device) * model.config.n_warps
        f_a = [f[idx] for f in data.anomalous]
    else:
        f_a = [f[:n] for f in data.anomalous]
    recon = model.ae([torch.cat([a, b]) for a, b in zip(f_n, f_a)])[0]
    out = {}
    for name, d in (("patch", model.d_patch), ("image", model.d_image)):
        if d is None:
            continue

        def mean_abs(levels, d=d):
            s = d(levels)
            s = s if isinstance(s, (list, tuple)) else [s[:, None]]
            return torch.stack([x.abs().flatten(1).mean(1) for x in s]).mean(0)  # [B]

        e_n, e_a, e_r = mean_abs(f_n), mean_abs(f_a), mean_abs(recon)
        labels = torch.cat([torch.zeros(len(e_n)), torch.ones(len(e_a))]).numpy()
        out.update({f"d_{name}_normal": float(e_n.mean()), f"d_{name}_anomalous": float(e_a.mean()),
                    f"d_{name}_recon": float(e_r.mean()),
                    f"d_{name}_auroc": metrics.image_auroc(torch.cat([e_n, e_a]).cpu().numpy(), labels)})
    return out


def run_ckaad(config: CKAADConfig, train: ImageDataset, test: ImageDataset, device=None, eval_at=(),
              **kwargs) -> dict:
    """Train on one class's normal images (plus the coarse anomalies) and score its test set. With
    ``anomalies="real"``, ``config.shots`` labelled anomalies are taken out of the test set first.

    ``eval_at``: training steps (multiples of ``log_every``, at most ``steps``) at which the same run is also
    scored: ``result["curve"]`` holds, per step, the metrics of :func:`score_ckaad`, the discriminators'
    :func:`discriminator_stats` and the training seconds so far - a learning curve from one run (the model
    at step s of a run equals a run of s steps: the same batches in the same order, a constant learning
    rate). ``result["discriminator"]``: :func:`discriminator_stats` after the last step."""
    from ..data import few_shot

    eval_at = sorted({int(s) for s in eval_at})
    bad = [s for s in eval_at if s < 1 or s > config.steps or (s % config.log_every and s != config.steps)]
    if bad:
        raise ValueError(f"eval_at steps must be multiples of log_every={config.log_every} (or steps) in "
                         f"[1, steps={config.steps}]; got {bad}")
    shots = None
    if config.anomalies == "real":
        shots, test, _ = few_shot(test, config.shots, seed=config.seed)
    curve = []

    final = {}

    def on_log(model, data, step, seconds):
        if step == config.steps:
            final.update(discriminator_stats(model, data))
        if step in eval_at:
            r = score_ckaad(model, test, device)
            entry = {"step": step, **{k: v for k, v in r.items() if k.endswith(("_AUROC", "_AUPR", "_AUPRO",
                                                                                  "_per_image"))}}
            entry.update(discriminator_stats(model, data), train_seconds=round(seconds, 2))
            curve.append(entry)

    model, history = train_ckaad(config, train, device, shots, on_log=on_log, **kwargs)
    result = score_ckaad(model, test, device)
    result.update(model=model, history=history, test=test, curve=curve, discriminator=final)
    return result


# ---- the common surface: Config, fit, predict, save, load, run
# (predict is eq. 14 above: images [N, 3, S, S] -> "scores" [N], "maps" [N, S, S])
Config = CKAADConfig
run = run_ckaad


def fit(config: CKAADConfig, train: ImageDataset, device=None, shots: ImageDataset | None = None,
        **kwargs) -> CKAADModel:
    """:func:`train_ckaad` (its keywords: ``checkpoint_dir``, ``resume``, ``overwrite``, ``on_log``), returning the
    trained model alone (its history in ``model.history``). ``shots``: the labelled anomalies of
    ``anomalies="real"``."""
    return train_ckaad(config, train, device, shots, **kwargs)[0]


def save(model: CKAADModel, path: str | Path, overwrite: bool = False, tags: dict | None = None) -> Path:
    """One file (:mod:`adlkit.modelfile`): ``state`` = {"ae": G's state dict, "d_patch" / "d_image": the row's
    discriminators (trained, though scoring needs G alone)} plus "backbone" when its weights are random; ``meta`` =
    the history, the backbone and the image size. The frozen ImageNet backbone is rebuilt on load."""
    state = {"ae": modelfile.cpu_state(model.ae), **modelfile.backbone_state(model.backbone)}
    for name in ("d_patch", "d_image"):
        if getattr(model, name) is not None:
            state[name] = modelfile.cpu_state(getattr(model, name))
    meta = {**modelfile.backbone_meta(model.backbone), "image_size": model.config.image_size,
            "history": dict(model.history)}
    return modelfile.write(path, "ckaad", model.config, state, meta, overwrite, tags)


def load(path: str | Path, device=None) -> CKAADModel:
    """The :class:`CKAADModel` that :func:`save` wrote, on ``device`` (default CPU), in eval mode."""
    config, state, meta = modelfile.read(path, "ckaad", CKAADConfig, device)
    device = torch.device(device) if device is not None else torch.device("cpu")
    model = build_model(modelfile.rebuild_config(config, meta, stored="backbone" in state), device)
    model.config = config
    modelfile.restore_backbone(model.backbone, state.get("backbone"), meta, path)
    model.ae.load_state_dict(state["ae"])
    for name in ("d_patch", "d_image"):
        if getattr(model, name) is not None:
            getattr(model, name).load_state_dict(state[name])
    model.history = meta["history"]
    _set_mode(model, False)
    return model
