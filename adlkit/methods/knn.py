"""A PatchCore-style nearest-neighbour baseline on frozen features: the baseline in every table.

K. Roth, L. Pemula, J. Zepeda, B. Schölkopf, T. Brox, P. Gehler, *Towards Total Recall in Industrial
Anomaly Detection* (PatchCore), CVPR 2022. Nothing is trained:

* Sec. 3.1, locally aware patch features: two mid-level feature maps of an ImageNet backbone (the paper:
  WideResNet-50's layers 2 and 3), each averaged over a p x p neighbourhood (p = 3, stride 1), the
  coarser one upsampled to the finer one's grid, concatenated: one feature per patch, [B, C, h, w].
* Sec. 3.2, the memory bank M: the patch features of every normal training image, reduced by greedy
  coreset subsampling (eq. 3's minimax facility location, solved greedily as in Algorithm 1: start from a
  random patch, repeatedly add the patch farthest from the selected ones), on a random linear projection
  of the features (Johnson-Lindenstrauss: distances are kept approximately, the selection is cheaper).
  ``coreset_ratio=1.0`` keeps the whole bank.
* Sec. 3.3, scoring: a test patch's anomaly is its distance to the nearest bank feature; the image score
  is the largest patch anomaly (eq. 6 without its re-weighting); the map is the patch anomalies upsampled
  to the image (bilinear) and smoothed with a Gaussian (sigma = 4 px).

CPU design: features come from :func:`adlkit.features.featurize` (remembered per image, so runs on
the same images featurise once); the coreset runs on a 32-dimensional projection (PatchCore's code: 128; a
pass reads the whole projected bank, so 32 dimensions make it 5-8x faster on a CPU, and measured over
3 classes x 3 seeds at 128 px the 10% coreset's AUROC stays as close to the full bank's as with 128), and
Algorithm 1's one pass over the bank per selected patch becomes one pass per few dozen to hundreds of patches
with the same result (:func:`greedy_coreset`'s deferred updates; ``benchmarks/bench_knn.py`` measures both at
the magnetic tile's 680 k patches); the nearest-neighbour search is exact, in the full feature space, as
chunked matrix products (:func:`nearest_distances`). Differences from the paper: the backbone defaults to
EfficientNet-Lite0 (levels 2 and 3: 40 + 112 channels at strides 8 and 16; its ImageNet weights install
offline), the features are not pooled to a fixed dimension, and the image score is the plain maximum.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import metrics, modelfile, training
from ..data import ImageDataset, cache_tensors
from ..features import featurize
from ..maps import gaussian_smooth
from ..models import backbone as make_backbone

__all__ = ["KNNConfig", "KNNModel", "patch_features", "greedy_coreset", "nearest_distances", "fit_knn",
           "predict", "score_knn", "run_knn", "Config", "fit", "save", "load", "run"]


@dataclass
class KNNConfig:
    """PatchCore's settings (Sec. 4.1), with the CPU's backbone."""

    backbone: str = "efficientnet_lite0"  # the paper: wide_resnet50_2 (its weights need internet)
    pretrained: object = "auto"
    layers: tuple = (2, 3)  # the two mid-level feature maps (the paper: WRN-50's layers 2 and 3)
    image_size: int = 256  # the paper: 256 resized, 224 centre crop
    patch_size: int = 3  # p: the neighbourhood each patch feature averages over (Sec. 3.1)
    coreset_ratio: float = 0.1  # the share of patches the bank keeps (the paper: 1-25%; 1.0 = the full bank)
    projection_dim: int = 32  # the random projection the greedy selection runs on (PatchCore's code: 128; see above)
    coreset_batch: int = 256  # candidates per pass of the exact batched greedy (1 = Algorithm 1's loop; same rows)
    sigma: float = 4.0  # Gaussian smoothing of the upsampled maps, in pixels (the paper: 4)
    seed: int = 0  # the projection and the coreset's first patch

    def __post_init__(self):
        if not 0.0 < self.coreset_ratio <= 1.0:
            raise ValueError(f"coreset_ratio must be in (0, 1] (1.0 = the full bank, 0.1 = 10%); got "
                             f"{self.coreset_ratio}")
        if self.patch_size < 1 or self.patch_size % 2 == 0:
            raise ValueError(f"patch_size must be an odd number >= 1 (the paper: 3); got {self.patch_size}")
        if len(tuple(self.layers)) != 2:
            raise ValueError(f"layers must name two backbone levels, a finer and a coarser one (e.g. (2, 3)); "
                             f"got {self.layers!r}")
        if self.coreset_batch < 1:
            raise ValueError(f"coreset_batch must be >= 1 (1 = one pass over the bank per selected row, as Algorithm "
                             f"1; the default 256 makes the same choices in fewer passes); got {self.coreset_batch}")
        if self.projection_dim is not None and self.projection_dim < 0:
            raise ValueError(f"projection_dim must be >= 0 (0 = select in the full feature space; the default 32); "
                             f"got {self.projection_dim}")


@dataclass
class KNNModel:
    """What the kNN scores with: its config, the frozen backbone and the memory bank (nothing is trained)."""

    config: KNNConfig
    backbone: torch.nn.Module
    bank: torch.Tensor  # [M, C] the memory bank (the coreset of the training patches)
    history: dict


@torch.no_grad()
def patch_features(levels: list[torch.Tensor], patch_size: int = 3) -> torch.Tensor:
    """Sec. 3.1: two feature maps [B, C1, h, w] and [B, C2, h', w'] -> locally aware patch features
    [B, C1 + C2, h, w] (each map averaged over a p x p neighbourhood, the coarse one upsampled).

    Derived in notebook 00, §6 · A first detector: distance to pretrained features (PatchCore)."""
    fine, coarse = (F.avg_pool2d(f.float(), patch_size, 1, patch_size // 2) for f in levels)
    coarse = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
    return torch.cat([fine, coarse], 1)


@torch.no_grad()
def greedy_coreset(features: torch.Tensor, ratio: float, seed: int = 0, projection_dim: int = 32,
                   batch: int = 256) -> torch.Tensor:
    """Indices of ceil(ratio * N) rows of ``features`` [N, C] chosen by greedy k-center selection (PatchCore's
    Algorithm 1): after a random first row, each step adds the row farthest from all rows chosen so far,
    measured on a random Gaussian projection to ``projection_dim`` dimensions (when that is fewer than C;
    0 or ``None`` measures in the features themselves). Seeded: the same seed, the same indices.
    ``ratio=1.0`` returns every index.

    ``batch=1`` is Algorithm 1 as written: one pass over all N rows per selected row (a matrix-vector product,
    ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2). ``batch=b`` (the default, 256) makes **the same choices** in far
    fewer passes over the bank (:func:`_greedy_passes`): it only defers the distance updates, so it is exact up
    to floating-point ties, not an approximation.

    Derived in notebook 00, §6 · A first detector: distance to pretrained features (PatchCore): the one-at-a-time
    loop, checked against ``batch=1`` and (the same rows) the default."""
    n = features.shape[0]
    m = max(1, math.ceil(ratio * n))
    if m >= n:
        return torch.arange(n, device=features.device)
    if batch < 1:
        raise ValueError(f"batch must be >= 1 (1 = one pass over the bank per selected row); got {batch}")
    gen = torch.Generator().manual_seed(seed)
    x = features.float()
    if projection_dim and projection_dim < x.shape[1]:
        proj = torch.randn(x.shape[1], projection_dim, generator=gen) / math.sqrt(projection_dim)
        x = x @ proj.to(x.device)
    x = x.contiguous()
    sq = (x * x).sum(1)  # ||x_i||^2, so ||x_i - c||^2 = ||x_i||^2 - 2 x_i.c + ||c||^2
    first = int(torch.randint(n, (1,), generator=gen))
    min_d = torch.addmv(sq + sq[first], x, x[first], alpha=-2).clamp_min_(0)  # [N] distance to the chosen set
    min_d[first] = -1.0  # chosen rows are marked -1, so no row is chosen twice (duplicates sit at 0)
    if batch == 1:
        chosen = torch.empty(m, dtype=torch.long, device=x.device)
        chosen[0] = first
        step = torch.empty_like(min_d)
        for i in range(1, m):
            c = int(torch.argmax(min_d))
            chosen[i] = c
            torch.addmv(sq + sq[c], x, x[c], alpha=-2, out=step)  # in place: no [N, C] temporary per step
            torch.minimum(min_d, step.clamp_min_(0), out=min_d)
            min_d[c] = -1.0
        return chosen
    return _greedy_passes(x, sq, min_d, first, m, batch)


def _greedy_passes(x: torch.Tensor, sq: torch.Tensor, min_d: torch.Tensor, first: int, m: int, b: int,
                   rows: int = 1024) -> torch.Tensor:
    """Greedy k-center with deferred updates: the same rows as one pass per selection, in m / k passes where k
    is how many rows a pass selects.

    Each pass takes the b + 1 rows farthest from the chosen set (``topk``). Every row outside the top b is at
    most tau (the (b+1)-th distance) from the chosen set, and distances only shrink as rows are chosen. So
    among the b candidates, selecting the farthest, then updating only the candidates' distances to it, and
    repeating, gives exactly the greedy order for as long as the next candidate's distance is above tau; the
    first one is always the global farthest. Then the distances of all N rows are updated once, by [rows, k]
    matrix products for the k rows chosen in the pass, 1,024 rows at a time so that each product stays in the
    CPU's cache (on the magnetic tile's 682 k patches a pass selects about 230 rows).

    Explained in notebook 00, §6 · A first detector: distance to pretrained features (PatchCore) (its list item 2),
    which checks that it selects the one-at-a-time loop's rows."""
    n = x.shape[0]
    chosen = [first]
    while len(chosen) < m:
        top, cand = torch.topk(min_d, min(b + 1, n - len(chosen)))  # chosen rows sit at -1: never candidates
        tau = -math.inf  # fewer than b + 1 rows left: the candidates are all of them
        if len(cand) == b + 1:
            tau, top, cand = float(top[-1]), top[:-1], cand[:-1]
        cd, xc, sqc = top.clone(), x[cand], sq[cand]
        picked = []
        while len(chosen) + len(picked) < m:
            j = int(torch.argmax(cd))
            if picked and not float(cd[j]) > tau:
                break  # a row outside the candidates may now be farther: update everything first
            picked.append(int(cand[j]))
            torch.minimum(cd, torch.addmv(sqc + sqc[j], xc, xc[j], alpha=-2).clamp_min_(0), out=cd)
            cd[j] = -1.0  # chosen: never again
        chosen += picked
        centres_t, sqk = x[picked].T.contiguous(), sq[picked]  # [d, k], [k]
        buf = x.new_empty(rows, len(picked))
        for lo in range(0, n, rows):  # min over the new centres c of ||x||^2 - 2 x.c + ||c||^2, [rows, k] at a time
            xs, out = x[lo : lo + rows], buf[: min(rows, n - lo)]
            torch.addmm(sqk, xs, centres_t, alpha=-2, out=out)  # ||c||^2 - 2 x.c; ||x||^2 is added after the min
            torch.minimum(min_d[lo : lo + rows], out.amin(1).add_(sq[lo : lo + rows]).clamp_min_(0),
                          out=min_d[lo : lo + rows])
        min_d[picked] = -1.0
    return torch.tensor(chosen, dtype=torch.long, device=x.device)


@torch.no_grad()
def nearest_distances(bank: torch.Tensor, queries: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Euclidean distance of every query row [Q, C] to its nearest bank row [M, C] -> [Q]: the minimum over the
    bank of ||b||^2 - 2 q.b (one matrix product), plus ||q||^2, then one square root per query (not per pair, as
    ``torch.cdist`` would: 1.5x faster, measured in ``benchmarks/bench_knn.py``). At most ``chunk`` queries, and
    at most 2^26 distances (256 MB), at a time.

    Derived in notebook 00, §6 · A first detector: distance to pretrained features (PatchCore) (as ``torch.cdist``
    and a minimum)."""
    if queries.shape[0] == 0:
        return queries.new_zeros(0)
    bank = bank.float()
    chunk = max(1, min(chunk, 2**26 // max(1, bank.shape[0])))
    bank_t, bank_sq = bank.T.contiguous(), (bank * bank).sum(1)
    buf = bank.new_empty(chunk, bank.shape[0])
    out = []
    for q in queries.float().split(chunk):
        d = torch.addmm(bank_sq, q, bank_t, alpha=-2, out=buf[: q.shape[0]])
        out.append(d.amin(1).add_((q * q).sum(1)).clamp_min_(0).sqrt_())
    return torch.cat(out)


def fit_knn(config: KNNConfig, train: ImageDataset, device=None, progress: bool = False) -> KNNModel:
    """The memory bank of ``train``'s images (every image is treated as normal, as the bank would be on
    contaminated data), coreset-subsampled to ``config.coreset_ratio``."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if len(train) == 0:
        raise ValueError("the training set is empty: the memory bank needs normal training images")
    t0 = time.perf_counter()
    net = make_backbone(config.backbone, pretrained=config.pretrained, layers=config.layers, frozen=True).to(device)
    images = cache_tensors(train, device).images
    feats = patch_features(featurize(net, images), config.patch_size)  # [N, C, h, w]
    full = feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1])  # [N h w, C]
    t1 = time.perf_counter()
    idx = greedy_coreset(full, config.coreset_ratio, config.seed, config.projection_dim, config.coreset_batch)
    bank = full[idx].contiguous()
    history = {"backbone": net.name, "weights": net.weights, "n_train": len(train), "n_patches": int(full.shape[0]),
               "n_bank": int(bank.shape[0]), "feature_seconds": round(t1 - t0, 2),
               "coreset_seconds": round(time.perf_counter() - t1, 2), "seconds": time.perf_counter() - t0}
    if progress:
        print(f"kNN bank: {history['n_bank']:,} of {history['n_patches']:,} patches "
              f"({history['coreset_seconds']:.1f} s for the coreset)")
    return KNNModel(config, net, bank, history)


@torch.no_grad()
def predict(model: KNNModel, images: torch.Tensor, batch_size: int = 32) -> dict:
    """Sec. 3.3 for images [N, 3, S, S] (uint8, or float in [0, 1]): ``patch`` distances [N, h, w], ``maps``
    [N, S, S] (upsampled, smoothed; CPU float) and image ``scores`` [N] (the largest patch distance).

    Derived in notebook 00, §6 · A first detector: distance to pretrained features (PatchCore) (``knn_scores``,
    checked against this)."""
    patches = []
    for chunk in images.split(batch_size):
        f = patch_features(featurize(model.backbone, chunk), model.config.patch_size)  # [b, C, h, w]
        b, c, h, w = f.shape
        d = nearest_distances(model.bank, f.permute(0, 2, 3, 1).reshape(-1, c))
        patches.append(d.reshape(b, h, w).cpu())
    patch = torch.cat(patches) if patches else torch.zeros(0, 1, 1)
    scores = patch.flatten(1).max(1).values
    maps = F.interpolate(patch[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return {"scores": scores, "patch": patch, "maps": gaussian_smooth(maps, model.config.sigma)}


def score_knn(model: KNNModel, test: ImageDataset, device=None) -> dict:
    """Image AUROC/AUPR and (when ``test`` has masks) pixel AUROC/AUPR/AUPRO of the kNN scores and maps."""
    device = torch.device(device) if device is not None else model.bank.device
    cache = cache_tensors(test, device)
    out = predict(model, cache.images)
    return metrics.evaluate(out["scores"], out["maps"], cache.anomalous.cpu().numpy(), cache.masks[:, 0].cpu())


def run_knn(config: KNNConfig, train: ImageDataset, test: ImageDataset, ratio: float = 0.0, device=None,
            leaky: bool = False, progress: bool = False) -> dict:
    """ADL's contamination protocol (:func:`adlkit.data.protocol_split`, seeded by ``config.seed``; ratio 0 =
    clean), then the bank of the (contaminated) training set and the scores of what is left of the test set.
    Returns :func:`score_knn`'s result plus ``model``, ``history`` and ``split``."""
    from ..data import protocol_split

    split = protocol_split(train, test, ratio, seed=config.seed, leaky=leaky)
    model = fit_knn(config, split.train, device, progress=progress)
    result = score_knn(model, split.test, device)
    result.update(model=model, history=model.history, split=split)
    return result


# ---- the common surface: Config, fit, predict, save, load, run
# (predict is Sec. 3.3 above: images [N, 3, S, S] -> "scores" [N], "maps" [N, S, S], "patch")
Config = KNNConfig
fit = fit_knn  # fit(config, train, device=None, progress=False) -> KNNModel: the memory bank
run = run_knn


def save(model: KNNModel, path: str | Path, overwrite: bool = False, tags: dict | None = None) -> Path:
    """One file (:mod:`adlkit.modelfile`): ``state`` = {"bank": [M, C]} (plus "backbone" when its weights are
    random), ``meta`` = the history, the backbone and the image size. The ImageNet backbone is rebuilt on load."""
    state = {"bank": model.bank.detach().cpu(), **modelfile.backbone_state(model.backbone)}
    meta = {**modelfile.backbone_meta(model.backbone), "image_size": model.config.image_size,
            "history": dict(model.history)}
    return modelfile.write(path, "knn", model.config, state, meta, overwrite, tags)


def load(path: str | Path, device=None) -> KNNModel:
    """The :class:`KNNModel` that :func:`save` wrote, on ``device`` (default CPU): the same scores and maps."""
    config, state, meta = modelfile.read(path, "knn", KNNConfig, device)
    device = torch.device(device) if device is not None else torch.device("cpu")
    build = modelfile.rebuild_config(config, meta, stored="backbone" in state)
    with training.seeded(config.seed):  # a random init (overwritten) leaves the caller's global RNG alone
        net = make_backbone(build.backbone, pretrained=build.pretrained, layers=config.layers, frozen=True).to(device)
    modelfile.restore_backbone(net, state.get("backbone"), meta, path)
    return KNNModel(config, net, state["bank"].to(device), meta["history"])
