import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from adlkit import metrics


@pytest.fixture
def scored():
    rng = np.random.default_rng(0)
    labels = (rng.random(300) < 0.3).astype(int)
    scores = rng.normal(size=300) + labels
    return scores, labels


def test_image_metrics_equal_sklearn(scored):
    s, y = scored
    assert metrics.image_auroc(s, y) == pytest.approx(roc_auc_score(y, s))
    assert metrics.image_aupr(s, y) == pytest.approx(average_precision_score(y, s))
    assert metrics.image_auroc(torch.tensor(s), torch.tensor(y)) == pytest.approx(roc_auc_score(y, s))


def test_f1_max_equals_best_threshold_by_brute_force(scored):
    s, y = scored
    best = max(f1_score(y, (s >= t).astype(int)) for t in np.unique(s))
    assert metrics.f1_max(s, y) == pytest.approx(best)


def test_f1_max_threshold_is_the_operating_point_that_reaches_it(scored):
    s, y = scored
    f1, threshold = metrics.f1_max_threshold(s, y)
    assert f1 == pytest.approx(f1_score(y, (s >= threshold).astype(int)))  # calling >= threshold anomalous gives it
    assert f1 == pytest.approx(max(f1_score(y, (s >= t).astype(int)) for t in np.unique(s)))
    row = metrics.image_metrics(s, y)
    assert (row["image_F1max"], row["image_F1max_threshold"]) == (f1, threshold)
    assert metrics.image_metrics(s, np.zeros_like(y)) == {}  # one class: nothing is defined


def test_pixel_metrics_equal_sklearn_over_flattened_pixels():
    rng = np.random.default_rng(1)
    masks = rng.random((4, 16, 16)) < 0.1
    maps = rng.normal(size=masks.shape) + masks
    assert metrics.pixel_auroc(maps, masks) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))
    assert metrics.pixel_aupr(maps, masks) == pytest.approx(average_precision_score(masks.ravel(), maps.ravel()))
    y, m = masks.ravel().astype(int), maps.ravel()
    order = np.argsort(-m)  # every threshold at once: calling the top k pixels anomalous, k = 1 .. N
    tp = np.cumsum(y[order])
    best = np.max(2 * tp / (np.arange(1, len(y) + 1) + y.sum()))
    assert metrics.pixel_metrics(maps, masks)["pixel_F1max"] == pytest.approx(best)  # one threshold, every pixel
    # [N,1,H,W] works as well
    assert metrics.pixel_auroc(maps[:, None], masks[:, None]) == pytest.approx(metrics.pixel_auroc(maps, masks))


def test_aupro_hand_case_exact():
    # One 4x4 image; region A (2 px, top row) and region B (1 px, bottom right); 13 normal pixels.
    mask = np.zeros((4, 4), bool)
    mask[0, 0:2] = True
    mask[3, 3] = True
    amap = np.zeros((4, 4))
    amap[0, 0] = 1.0     # half of region A at the top score
    amap[3, 3] = 0.9     # all of region B
    amap[0, 1] = 0.5     # the rest of A
    amap[2, 2] = 0.8     # one normal pixel scores high: FPR 1/13 when B is found
    # thresholds: 1.0 -> FPR 0, PRO (0.5 + 0)/2 = 0.25; 0.9 -> FPR 0, PRO 0.75;
    # 0.8 -> FPR 1/13, PRO 0.75; 0.5 -> FPR 1/13, PRO 1.0; 0 -> FPR 1, PRO 1.
    fpr, pro = metrics.pro_curve(amap[None], mask[None])
    assert np.allclose(fpr, [0, 0, 0, 1 / 13, 1 / 13, 1])
    assert np.allclose(pro, [0, 0.25, 0.75, 0.75, 1.0, 1.0])
    # area up to 0.3: 0.75 * 1/13 + 1.0 * (0.3 - 1/13), divided by 0.3
    expected = (0.75 / 13 + (0.3 - 1 / 13)) / 0.3
    assert metrics.aupro(amap[None], mask[None], fpr_limit=0.3) == pytest.approx(expected)


def test_aupro_perfect_map_is_one_and_never_above_one():
    rng = np.random.default_rng(2)
    masks = np.zeros((3, 20, 20), bool)
    masks[0, 2:6, 2:6] = masks[1, 10:12, 3:19] = masks[2, 15:18, 15:18] = True
    assert metrics.aupro(masks.astype(float), masks) == pytest.approx(1.0)
    for _ in range(5):
        value = metrics.aupro(rng.normal(size=masks.shape) + 3 * masks, masks)
        assert 0.0 <= value <= 1.0


def test_aupro_weights_regions_equally():
    # Finding only the big region gives PRO 0.5 whatever its size; pixel AUROC rewards size instead.
    masks = np.zeros((1, 30, 30), bool)
    masks[0, :10, :10] = True
    masks[0, 25, 25] = True
    amap = masks.astype(float)
    amap[0, 25, 25] = 0.0
    fpr, pro = metrics.pro_curve(amap, masks)
    assert pro[1] == pytest.approx(0.5) and fpr[1] == 0


def test_bad_inputs_have_clear_errors():
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.pixel_auroc(np.zeros((2, 8, 8)), np.zeros((2, 16, 16)))
    with pytest.raises(ValueError, match="both normal"):
        metrics.image_auroc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="NaN"):
        metrics.image_auroc([0.1, np.nan], [0, 1])
    with pytest.raises(ValueError, match="defect region"):
        metrics.aupro(np.zeros((1, 4, 4)), np.zeros((1, 4, 4)))
