# points: 2
# Hidden tests for `auroc` (notebook 00, the AUROC from its pairwise definition). nbgrader removes this cell's hidden block from the release.
import numpy as np
import torch

from adlkit import metrics
from adlkit.grading import own_work

_forbid = [metrics.image_auroc, metrics.pixel_auroc]  # adlkit's AUROC (image_metrics/pixel_metrics go through these)

# one anomaly tied with one normal image: 1 tied pair of 1 -> 0.5 / 1 = 0.5
_out = own_work(auroc, np.array([0.7, 0.7]), np.array([1, 0]), forbidden=_forbid)
assert np.isclose(float(_out), 0.5), "auroc: one anomaly tied with one normal image (a tie counts one half)"

# anomalies {3, 2} vs normals {1, 2, 0}: 3 beats all 3; 2 beats 1 and 0 and ties 2 -> (3 + 2 + 0.5) / 6 = 11/12
_out = own_work(auroc, np.array([3.0, 1.0, 2.0, 2.0, 0.0]), np.array([1, 0, 1, 0, 0]), forbidden=_forbid)
assert np.isclose(float(_out), 11 / 12), "auroc: wrong value on 2 anomalies vs 3 normals with one tie across classes"

# Python lists of integer scores: anomaly 2 vs normals {1, 3} -> 1 of 2 pairs ordered right = 0.5
_out = own_work(auroc, [1, 2, 3], [0, 1, 0], forbidden=_forbid)
assert np.isclose(float(_out), 0.5), "auroc: wrong value on Python lists of integer scores"

# torch tensors, negative scores: anomalies {-1, -2} vs normals {-3, -1}: -1>-3, -1=-1 (1/2), -2>-3, -2<-1 -> 2.5/4
_out = own_work(auroc, torch.tensor([-1.0, -3.0, -2.0, -1.0]), torch.tensor([1, 0, 1, 0]), forbidden=_forbid)
assert np.isclose(float(_out), 0.625), "auroc: wrong value on torch tensors with negative scores and a tie"

# boolean labels, many anomalies and one normal: normal 0.5 vs anomalies {0.1, 0.5, 0.9, 0.6} -> (0 + 0.5 + 1 + 1) / 4
_out = own_work(auroc, np.array([0.1, 0.5, 0.9, 0.5, 0.6]), np.array([True, True, True, False, True]), forbidden=_forbid)
assert np.isclose(float(_out), 0.625), "auroc: wrong value with boolean labels and a single normal image"

# against adlkit's reference, computed here outside your function: 301 images, ~15% anomalies, scores rounded (ties)
_rng = np.random.default_rng(2024)
_labels = (_rng.random(301) < 0.15).astype(int)
_scores = np.round(_rng.normal(size=301) + 0.8 * _labels, 1)
_expected = metrics.image_auroc(_scores, _labels)
_out = own_work(auroc, _scores, _labels, forbidden=_forbid)
assert np.isclose(float(_out), _expected, rtol=1e-5, atol=1e-6), "auroc: wrong on 301 images with few anomalies and many ties"
