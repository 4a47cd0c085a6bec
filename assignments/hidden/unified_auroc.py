# points: 2
# Hidden tests for `unified_auroc` (notebook 06, pooled image AUROC and the mean of the per-class AUROCs). nbgrader removes this cell's hidden block from the release.
import numpy as np

from adlkit import metrics
from adlkit.grading import own_work
from adlkit.methods import cada

# metrics.image_auroc is allowed (the notebook asks for it); cada.unified_report computes pooled and per-class together
_forbid = [cada.unified_report]

# class x: normals {0.1, 0.4}, anomaly 0.3 -> 1 of 2 pairs = 0.5; class y (4 images): normal 0.5 < anomalies {0.6, 0.9, 0.7} -> 1
# per-class mean (each class counts once, whatever its size) = (0.5 + 1) / 2 = 0.75
# pooled: normals {0.1, 0.4, 0.5} vs anomalies {0.3, 0.6, 0.9, 0.7}: 0.3 beats 1, each other beats 3 -> 10 / 12
_scores = np.array([0.1, 0.5, 0.4, 0.6, 0.3, 0.9, 0.7])
_labels = np.array([0, 0, 0, 1, 1, 1, 1])
_classes = np.array(["x", "y", "x", "y", "x", "y", "y"])
_pooled, _mean = own_work(unified_auroc, _scores, _labels, _classes, forbidden=_forbid)
assert np.isclose(_pooled, 10 / 12), "unified_auroc: wrong pooled AUROC on two classes of 3 and 4 images"
assert np.isclose(_mean, 0.75), "unified_auroc: wrong per-class mean on two classes of 3 and 4 images (each class counts once)"

# integer class ids and a tie in the pooled ranking: class 0: 0.5 > 0.2 -> 1; class 1: 0.9 > 0.5 -> 1; mean 1
# pooled: normals {0.2, 0.5} vs anomalies {0.5, 0.9}: 1 + 0.5 (tie) + 2 -> 3.5 / 4 = 0.875
_pooled, _mean = own_work(unified_auroc, np.array([0.2, 0.5, 0.5, 0.9]), np.array([0, 1, 0, 1]), np.array([0, 0, 1, 1]),
                          forbidden=_forbid)
assert np.isclose(_pooled, 0.875) and np.isclose(_mean, 1.0), "unified_auroc: integer class ids, a tie across classes"

# against adlkit's reference, computed here outside your function: 4 classes of unequal sizes, shifted score scales
_rng = np.random.default_rng(707)
_classes = np.array(["bottle", "cable", "grid", "zipper"])[_rng.choice(4, 120, p=[0.1, 0.2, 0.3, 0.4])]
_labels = (_rng.random(120) < 0.35).astype(int)
_classes[:8], _labels[:8] = ["bottle", "bottle", "cable", "cable", "grid", "grid", "zipper", "zipper"], [0, 1] * 4
_scores = _rng.normal(size=120) + 1.5 * _labels + np.select([_classes == "cable", _classes == "zipper"], [1.0, 3.0], 0.0)
_names = sorted(set(_classes.tolist()))
_expected = (metrics.image_auroc(_scores, _labels),
             np.mean([metrics.image_auroc(_scores[_classes == c], _labels[_classes == c]) for c in _names]))
_pooled, _mean = own_work(unified_auroc, _scores, _labels, _classes, forbidden=_forbid)
assert np.allclose([_pooled, _mean], _expected, rtol=1e-5, atol=1e-6), "unified_auroc: wrong on 4 random classes of unequal sizes"
