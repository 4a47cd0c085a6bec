"""Losses of deviation learning (DevNet, ADL) and of the segmentation head.

Equation numbers refer to ADL (A. S. Das, G. Pang, M. Bhuyan, *Adaptive Deviation Learning for
Visual Anomaly Detection with Data Contamination*, arXiv:2411.09558, 2024), which restates DevNet
(G. Pang, C. Shen, A. van den Hengel, *Deep Anomaly Detection with Deviation Networks*, KDD 2019):

* eq. 2  image score = mean of the top-K patch scores            :func:`top_k_mean`
* eq. 3  reference scores r_1..r_m ~ N(mu, sigma), their mean/std  :func:`reference_stats`
* z = (s - mu_R) / sigma_R, the deviation of a score               :func:`z_score`
* eq. 4  deviation loss (1 - y)|z| + y max(0, gamma - z)          :func:`deviation_loss`
* eq. 5  soft deviation loss (1 - p)|z| + p max(0, gamma - z)     :func:`soft_deviation_loss`
* focal loss for the segmentation head (Lin et al., ICCV 2017)     :func:`focal_loss`

Feature reconstruction (reverse distillation: H. Deng, X. Li, *Anomaly Detection via Reverse
Distillation from One-Class Embedding*, CVPR 2022) and CADA's regressor (J. Guo, H. Han, S. Lu,
W. Zhang, H. Li, *Absolute-Unified Multi-Class Anomaly Detection via Class-Agnostic Distribution
Alignment*, arXiv:2404.00724, 2024):

* L_RD = sum_l mean_b [1 - cos(vec E_l, vec D_l)]                  :func:`cosine_reconstruction_loss`
  (also CKAAD's eq. 2, L_rec; its per-position form is ``adlkit.models.rd.cosine_distance_maps``)
* CADA eqs. 3-4, the smooth-L1 loss of the predicted statistics      :func:`smooth_l1`

CKAAD (Q. Fang, Q. Su, W. Lv, W. Xu, J. Yu, *Boosting Fine-Grained Visual Anomaly Detection with
Coarse-Knowledge-Aware Adversarial Learning*, arXiv:2412.12850, 2024):

* the energy of a discriminator output, E(s, y) = (1 - y)|s| + y max(0, m - |s|)  :func:`energy`

Every loss returns one value per sample (``reduction="none"``, the default) so that ADL can
weight samples (``adlkit.reweight``); ``"mean"`` and ``"sum"`` are there for convenience.
The paper's margin is gamma = 5; the authors' code uses 10.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["reference_stats", "z_score", "deviation_loss", "soft_deviation_loss", "top_k_mean", "focal_loss",
           "cosine_reconstruction_loss", "smooth_l1", "energy"]


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return values
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum'; got {reduction!r}")


def reference_stats(m: int = 5000, mu: float = 0.0, sigma: float = 1.0, generator: torch.Generator | None = None,
                    device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 3: draw m reference scores r_i ~ N(mu, sigma^2); return their mean and standard deviation.

    DevNet draws a fresh reference set at every step, so (mean, std) fluctuate around (mu, sigma)
    by about sigma / sqrt(m); pass a generator to make them reproducible.

    Derived in notebook 02, §1 (a Gaussian prior for normal scores).
    """
    if m < 2:
        raise ValueError(f"m must be at least 2 to have a standard deviation; got {m}")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    r = mu + sigma * torch.randn(m, generator=generator, device=gen_device)
    if device is not None:
        r = r.to(device)
    return r.mean(), r.std()


def z_score(scores: torch.Tensor, ref_mean, ref_std) -> torch.Tensor:
    """z = (s - mu_R) / sigma_R: how many reference standard deviations a score lies above the mean."""
    return (scores - ref_mean) / ref_std


def deviation_loss(z: torch.Tensor, y: torch.Tensor, margin: float = 5.0, reduction: str = "none") -> torch.Tensor:
    """Eq. 4: (1 - y)|z| + y max(0, margin - z).

    Normal samples (y = 0) are pulled to the reference mean (z = 0); anomalies (y = 1) are pushed at
    least ``margin`` standard deviations above it - beyond a one-sided 99.99997% interval for 5.

    Derived in notebook 02, §2 (the deviation loss, eq. 4).
    """
    y = y.to(z.dtype)
    return _reduce((1 - y) * z.abs() + y * F.relu(margin - z), reduction)


def soft_deviation_loss(z: torch.Tensor, p: torch.Tensor, margin: float = 5.0, reduction: str = "none") -> torch.Tensor:
    """Eq. 5: (1 - p)|z| + p max(0, margin - z), with p the classification head's probability of "anomalous".

    ``p`` is detached: it is a soft label, not a path for gradients. With p in {0, 1} this is eq. 4.

    Derived in notebook 02, §2 (the deviation loss, eq. 4).
    """
    p = p.detach().to(z.dtype)
    return _reduce((1 - p) * z.abs() + p * F.relu(margin - z), reduction)


def top_k_mean(patch_scores: torch.Tensor, ratio: float = 0.1) -> torch.Tensor:
    """Eq. 2: the mean of the k = max(1, floor(ratio * N)) largest of each sample's N patch scores.

    ``patch_scores`` is [B, ...] (e.g. [B, 1, h, w]); returns [B]. Ties are harmless: the k largest
    values are the same whichever tied patch is picked.

    Derived in notebook 02, §3 (top-K pooling, eq. 2).
    """
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1]; got {ratio}")
    flat = patch_scores.flatten(1)
    k = max(1, int(ratio * flat.shape[1]))
    return flat.topk(k, dim=1).values.mean(dim=1)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float | None = None,
               reduction: str = "none") -> torch.Tensor:
    """Focal loss -alpha_t (1 - p_t)^gamma log p_t, averaged over pixels: one value per sample.

    ``logits``: [B, 2, H, W] (softmax over "normal"/"anomalous", as DRAEM's and ADL's segmentation
    head) or [B, 1, H, W] (sigmoid). ``target``: [B, H, W] or [B, 1, H, W] with 0/1. With gamma = 0
    and no alpha it is the cross-entropy (BCE). ``alpha`` weighs the anomalous class (1 - alpha the normal).
    """
    if target.ndim == logits.ndim:
        target = target[:, 0]
    target = target.long()
    if logits.shape[0] != target.shape[0] or logits.shape[-2:] != target.shape[-2:]:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match: resize the "
                         "mask to the segmentation map's size first")
    if logits.shape[1] == 2:
        log_p = F.log_softmax(logits, dim=1)
        log_pt = log_p.gather(1, target[:, None])[:, 0]
    elif logits.shape[1] == 1:
        s = logits[:, 0]
        log_pt = torch.where(target == 1, F.logsigmoid(s), F.logsigmoid(-s))
    else:
        raise ValueError(f"focal_loss expects 1 or 2 channels of logits; got {logits.shape[1]}")
    pt = log_pt.exp()
    loss = -((1 - pt) ** gamma) * log_pt
    if alpha is not None:
        loss = loss * torch.where(target == 1, alpha, 1 - alpha)
    return _reduce(loss.flatten(1).mean(1), reduction)


def cosine_reconstruction_loss(encoded: list[torch.Tensor], decoded: list[torch.Tensor], reduction: str = "mean"
                               ) -> torch.Tensor:
    """Reverse distillation's loss (and CKAAD's eq. 2): sum over levels l of 1 - cos(vec E_l, vec D_l), each level's map
    [B, C_l, h_l, w_l] flattened to one vector per image (as RD4AD's code); ``"mean"`` averages over images.

    ``reduction="none"`` returns one value per image (the sum over levels). A decoder that copies its
    target scores 0; one that points the opposite way scores 2 per level.
    """
    if len(encoded) != len(decoded):
        raise ValueError(f"{len(encoded)} encoder levels but {len(decoded)} decoder levels")
    per_image = 0
    for e, d in zip(encoded, decoded):
        if e.shape != d.shape:
            raise ValueError(f"encoder level {tuple(e.shape)} and decoder level {tuple(d.shape)} differ in shape")
        per_image = per_image + (1 - F.cosine_similarity(e.flatten(1), d.flatten(1), dim=1))
    return _reduce(per_image, reduction)


def smooth_l1(pred: torch.Tensor, target: torch.Tensor, alpha: float = 0.1, reduction: str = "mean") -> torch.Tensor:
    """CADA eqs. 3-4: SL1(y, y_hat) = (y - y_hat)^2 / (2 alpha) if |y - y_hat| < alpha, else |y - y_hat| - alpha / 2.

    Quadratic near the target (gradients shrink as the prediction arrives), linear far from it (an
    outlying image cannot dominate). The two branches meet with equal value and slope at |d| = alpha.
    Element-wise with ``reduction="none"``.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0; got {alpha}")
    d = (pred - target).abs()
    return _reduce(torch.where(d < alpha, d ** 2 / (2 * alpha), d - alpha / 2), reduction)


def energy(s: torch.Tensor, y, margin: float = 5.0) -> torch.Tensor:
    """CKAAD's energy of a discriminator output s for a target y (element-wise):
    E(s, y) = (1 - y)|s| + y max(0, m - |s|).

    Normal features (y = 0) are pulled to energy 0 at s = 0; anomalous ones (y = 1) pushed until |s| >= m
    (m = 5), after which they cost nothing. E(0, 0) = 0, E(-3, 0) = 3, E(+-2, 1) = 3, E(7, 1) = 0.
    """
    y = torch.as_tensor(y, dtype=s.dtype, device=s.device)
    return (1 - y) * s.abs() + y * F.relu(margin - s.abs())
