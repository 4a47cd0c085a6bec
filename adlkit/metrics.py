"""Evaluation metrics of visual anomaly detection.

Image level: one score per image, label 1 = anomalous. Pixel level: one anomaly map per image
(``[N, H, W]``) against binary ground-truth masks of the same size.

* :func:`image_auroc`, :func:`image_aupr`, :func:`f1_max` (and :func:`f1_max_threshold`, the operating point)
  - scikit-learn underneath.
* :func:`pixel_auroc`, :func:`pixel_aupr` - the same, over all pixels of all images.
* :func:`aupro` - area under the per-region-overlap curve up to a false-positive rate of 30%,
  normalised to [0, 1] (Bergmann et al., MVTec AD, IJCV 2021). Every connected defect region
  counts equally, however small, which is why it is reported beside pixel AUROC. This is the default PRO.
* :func:`aupro_per_image` - the same area per anomalous image (its own regions against its own normal
  pixels), averaged over images: the PRO of RD4AD's evaluation code and of code derived from it (e.g.
  CKAAD's, Fang et al. 2024). A named option: not comparable with :func:`aupro`.

All functions accept NumPy arrays or torch tensors.
"""

from __future__ import annotations

import re

import numpy as np
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

__all__ = ["aupro", "aupro_per_image", "evaluate", "f1_max", "f1_max_threshold", "image_aupr", "image_auroc",
           "image_metrics", "pixel_aupr", "pixel_auroc", "pixel_metrics", "pro_curve"]


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def _check_labels(labels: np.ndarray, what: str) -> np.ndarray:
    labels = labels.astype(np.int64).ravel()
    present = set(np.unique(labels).tolist())
    if not present <= {0, 1}:
        raise ValueError(f"{what} must be 0 (normal) or 1 (anomalous); got values {sorted(present)}.")
    if present != {0, 1}:
        raise ValueError(
            f"{what} hold only class {present.pop() if present else 'none'}: AUROC/AUPR need both normal "
            "(0) and anomalous (1) examples."
        )
    return labels


def _check_scores(scores: np.ndarray, n: int, what: str) -> np.ndarray:
    scores = scores.astype(np.float64).ravel()
    if scores.size != n:
        raise ValueError(f"{what}: {scores.size} scores for {n} labels.")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{what}: scores contain NaN or inf ({int((~np.isfinite(scores)).sum())} values).")
    return scores


def image_auroc(scores, labels) -> float:
    """Area under the ROC curve of image scores (higher score = more anomalous).

    Derived in notebook 00, §5 (metrics primer)."""
    y = _check_labels(_np(labels), "labels")
    return float(roc_auc_score(y, _check_scores(_np(scores), y.size, "image_auroc")))


def image_aupr(scores, labels) -> float:
    """Average precision (area under the precision-recall curve), anomalies as the positive class.

    Derived in notebook 00, §5 (metrics primer)."""
    y = _check_labels(_np(labels), "labels")
    return float(average_precision_score(y, _check_scores(_np(scores), y.size, "image_aupr")))


def f1_max(scores, labels) -> float:
    """The best F1 score over all thresholds."""
    return f1_max_threshold(scores, labels)[0]


def f1_max_threshold(scores, labels) -> tuple[float, float]:
    """The best F1 score over all thresholds and the threshold that reaches it: the score at or above which an
    image (or pixel) is called anomalous. The operating point a practitioner deploys, where AUROC has none."""
    y = _check_labels(_np(labels), "labels")
    precision, recall, thresholds = precision_recall_curve(y, _check_scores(_np(scores), y.size, "f1_max"))
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
    i = int(np.argmax(f1[:-1]))  # the curve's last point (recall 0) has no threshold
    return float(f1[i]), float(thresholds[i])


def _maps_and_masks(maps, masks) -> tuple[np.ndarray, np.ndarray]:
    maps, masks = _np(maps), _np(masks)
    if maps.ndim == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if masks.ndim == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if maps.ndim == 2:
        maps, masks = maps[None], masks[None] if masks.ndim == 2 else masks
    if maps.shape != masks.shape:
        raise ValueError(
            f"anomaly maps {maps.shape} and masks {masks.shape} differ in shape: resize the maps to the "
            "mask size (e.g. torch.nn.functional.interpolate(maps, size=masks.shape[-2:], mode='bilinear'))."
        )
    if not np.all(np.isfinite(maps)):
        raise ValueError("anomaly maps contain NaN or inf.")
    return maps.astype(np.float64), masks > 0.5


def pixel_auroc(maps, masks) -> float:
    """ROC AUC over every pixel of every image.

    Derived in notebook 00, §5 (metrics primer)."""
    maps, masks = _maps_and_masks(maps, masks)
    return image_auroc(maps.ravel(), masks.ravel())


def pixel_aupr(maps, masks) -> float:
    """Average precision over every pixel of every image.

    Derived in notebook 00, §5 (metrics primer)."""
    maps, masks = _maps_and_masks(maps, masks)
    return image_aupr(maps.ravel(), masks.ravel())


def pro_curve(maps, masks) -> tuple[np.ndarray, np.ndarray]:
    """The exact per-region-overlap curve: (false-positive rates, PRO values), one point per threshold.

    PRO(t) is the mean, over all connected ground-truth regions of all images, of the fraction of
    the region's pixels scored >= t; FPR(t) is the fraction of normal pixels scored >= t.
    Computed in one sort: a region pixel adds ``1 / (n_regions * region_size)`` to PRO, a normal
    pixel ``1 / n_normal`` to FPR, and the curves are cumulative sums in descending score order.

    Derived in notebook 00, §5 (metrics primer).
    """
    maps, masks = _maps_and_masks(maps, masks)
    weight_pro = np.zeros(maps.shape, dtype=np.float64)
    n_regions = 0
    structure = np.ones((3, 3), dtype=bool)  # 8-connectivity, as in the MVTec AD evaluation code
    for i in range(masks.shape[0]):
        labelled, n = ndimage.label(masks[i], structure=structure)
        if n == 0:
            continue
        sizes = np.bincount(labelled.ravel())
        w = np.zeros_like(sizes, dtype=np.float64)
        w[1:] = 1.0 / sizes[1:]
        weight_pro[i] = w[labelled]
        n_regions += n
    normal = ~masks
    n_normal = int(normal.sum())
    if n_regions == 0 or n_normal == 0:
        raise ValueError("AUPRO needs at least one defect region and at least one normal pixel in the masks.")
    weight_pro /= n_regions
    weight_fpr = normal.astype(np.float64) / n_normal

    order = np.argsort(-maps.ravel(), kind="stable")
    scores = maps.ravel()[order]
    pro = np.cumsum(weight_pro.ravel()[order])
    fpr = np.cumsum(weight_fpr.ravel()[order])
    # Only the last pixel of each run of equal scores is a real threshold.
    last_of_run = np.r_[scores[1:] != scores[:-1], True]
    fpr = np.r_[0.0, fpr[last_of_run]]
    pro = np.r_[0.0, pro[last_of_run]]
    return np.clip(fpr, 0, 1), np.clip(pro, 0, 1)


def aupro(maps, masks, fpr_limit: float = 0.3) -> float:
    """Area under the PRO curve for FPR in [0, ``fpr_limit``], divided by ``fpr_limit`` (so 1 is perfect).

    The curve is integrated with the trapezoidal rule and cut exactly at ``fpr_limit`` by linear
    interpolation, as in the MVTec AD evaluation code.

    Derived in notebook 00, §5 (metrics primer).
    """
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit must be in (0, 1]; got {fpr_limit}.")
    fpr, pro = pro_curve(maps, masks)
    keep = fpr <= fpr_limit
    x, y = fpr[keep], pro[keep]
    if x[-1] < fpr_limit:  # cut the segment that crosses the limit
        i = int(keep.sum())  # first point beyond the limit; fpr is non-decreasing
        x0, y0, x1, y1 = fpr[i - 1], pro[i - 1], fpr[i], pro[i]
        y_at = y0 + (fpr_limit - x0) * (y1 - y0) / (x1 - x0)
        x, y = np.r_[x, fpr_limit], np.r_[y, y_at]
    area = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))
    return min(area / fpr_limit, 1.0)


def aupro_per_image(maps, masks, fpr_limit: float = 0.3) -> float:
    """:func:`aupro` of each image with a defect (and a normal pixel) alone, averaged over those images.

    The PRO of RD4AD's evaluation code (Deng and Li, 2022), which CKAAD's code reuses (Fang et al., 2024):
    each anomalous image gets its own curve, its FPR counted over that image's normal pixels only, so
    normal test images and the other images' false positives never enter. Here the curve is exact and cut
    at ``fpr_limit`` (that code uses 200 thresholds between the image's min and max score and rescales
    the FPRs below 0.3 by their maximum). Not comparable with the dataset-level :func:`aupro`.
    """
    maps, masks = _maps_and_masks(maps, masks)
    areas = [aupro(m[None], k[None], fpr_limit) for m, k in zip(maps, masks) if k.any() and not k.all()]
    if not areas:
        raise ValueError("AUPRO per image needs at least one image with a defect region and a normal pixel.")
    return float(np.mean(areas))


def image_metrics(scores, labels, prefix: str = "") -> dict:
    """``{prefix}image_AUROC``, ``{prefix}image_AUPR``, ``{prefix}image_F1max`` and the score threshold reaching it
    (``{prefix}image_F1max_threshold``), or {} when the labels hold one class only (the metrics are undefined
    there: a result reports only what it could measure)."""
    labels = _np(labels)
    if not 0 < labels.sum() < len(labels):
        return {}
    f1, threshold = f1_max_threshold(scores, labels)
    return {f"{prefix}image_AUROC": image_auroc(scores, labels), f"{prefix}image_AUPR": image_aupr(scores, labels),
            f"{prefix}image_F1max": f1, f"{prefix}image_F1max_threshold": threshold}


def pixel_metrics(maps, masks, prefix: str = "", with_aupro: bool = True) -> dict:
    """``{prefix}pixel_AUROC``, ``{prefix}pixel_AUPR``, ``{prefix}pixel_F1max`` (over every pixel, one threshold) and
    (unless ``with_aupro=False``) ``{prefix}pixel_AUPRO``,
    or {} when the masks have no anomalous pixel (e.g. a dataset with image labels only)."""
    masks_np = _np(masks)
    if not masks_np.any() or masks_np.all():
        return {}
    out = {f"{prefix}pixel_AUROC": pixel_auroc(maps, masks), f"{prefix}pixel_AUPR": pixel_aupr(maps, masks)}
    flat_maps, flat_masks = _maps_and_masks(maps, masks)
    out[f"{prefix}pixel_F1max"] = f1_max(flat_maps.ravel(), flat_masks.ravel().astype(np.int64))
    if with_aupro:
        out[f"{prefix}pixel_AUPRO"] = aupro(maps, masks)
    return out


def per_type_metrics(scores, labels, types) -> dict:
    """Each anomaly type against every normal image: ``<type>_image_AUROC``, ``<type>_image_AUPR``,
    ``<type>_image_F1max`` (and its threshold). ``types`` [N] names each image's defect type (ignored for normal
    images). Empty when the anomalies come in fewer than two types (the dataset-level metrics say it all)."""
    scores, labels = _np(scores), _np(labels)
    if len(types) != len(labels):
        raise ValueError(f"{len(types)} defect types for {len(labels)} labels: give one per image, in the same order")
    kinds = sorted({t for t, y in zip(types, labels) if y})
    out = {}
    for kind in kinds if len(kinds) > 1 else []:
        keep = np.array([y == 0 or t == kind for t, y in zip(types, labels)])
        name = re.sub(r"\W+", "_", str(kind)).strip("_")  # a folder such as "scratch-deep" -> scratch_deep_image_AUROC
        out.update(image_metrics(scores[keep], labels[keep], prefix=f"{name}_"))
    return out


def evaluate(scores, maps, labels, masks, types=None) -> dict:
    """A test set's scores [N] and maps [N, H, W] with what they support: ``{"scores", "maps", "labels"}`` plus
    :func:`image_metrics` and :func:`pixel_metrics` (dataset-level; none when the masks are empty) and, given each
    image's defect type ``types`` [N], :func:`per_type_metrics`."""
    result = {"scores": _np(scores), "maps": maps, "labels": _np(labels)}
    result.update(image_metrics(result["scores"], result["labels"]))
    result.update(pixel_metrics(maps, masks))
    if types is not None:
        result.update(per_type_metrics(result["scores"], result["labels"], types))
    return result
