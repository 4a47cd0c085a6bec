# points: 3
# Hidden tests for `alpha_weights` (notebook 03, ADL's closed-form alpha-divergence instance weights, eq. 10). nbgrader removes this cell's hidden block from the release.
import numpy as np
import torch

from adlkit import reweight
from adlkit.grading import own_work

# alpha_weights and every closed form routed through it (kl, reverse KL, the dispatchers) or its log-space core
_forbid = [reweight.alpha_weights, reweight._log_weights, reweight.kl_weights, reweight.reverse_kl_weights,
           reweight.instance_weights, reweight.weights_within_labels, reweight.batch_weights]


def _np(t):
    return np.asarray(t.detach().cpu() if hasattr(t, "detach") else t, dtype=float)


# alpha = 0.5, lam = 0.5: w ∝ (0.5 L + 0.5)^(1 / -0.5) = (0.5 L + 0.5)^-2; L = 1 -> 1^-2 = 1, L = 3 -> 2^-2 = 0.25 -> [0.8, 0.2]
_out = own_work(alpha_weights, torch.tensor([1.0, 3.0]), alpha=0.5, lam=0.5, forbidden=_forbid)
assert np.allclose(_np(_out), [0.8, 0.2], rtol=1e-4, atol=1e-6), "alpha_weights: two losses, alpha = 0.5, lambda = 0.5"

# a negative alpha = -1, lam = 1: w ∝ (2 L + 1)^(-1/2); L = 0 -> 1, L = 1.5 -> 4^(-1/2) = 0.5 -> [2/3, 1/3]
_out = own_work(alpha_weights, torch.tensor([0.0, 1.5]), alpha=-1.0, lam=1.0, forbidden=_forbid)
assert np.allclose(_np(_out), [2 / 3, 1 / 3], rtol=1e-4, atol=1e-6), "alpha_weights: wrong with a negative alpha (-1), lambda = 1"

# a single sample (a Python list, the defaults) takes all the weight: [1]
_out = own_work(alpha_weights, [2.5], forbidden=_forbid)
assert np.allclose(_np(_out), [1.0], rtol=1e-4, atol=1e-6), "alpha_weights: a batch of one loss should get weight 1"

# unsorted distinct losses: the weights sum to 1 and strictly decrease as the loss grows
_losses = torch.tensor([0.9, 0.05, 2.0, 0.4, 1.3, 0.0, 3.1, 0.7])
_w = _np(own_work(alpha_weights, _losses, alpha=0.3, lam=0.2, forbidden=_forbid))
assert np.isclose(_w.sum(), 1.0, atol=1e-5), "alpha_weights: the weights of 8 losses should sum to 1"
assert np.all(np.diff(_w[np.argsort(_losses.numpy())]) < 0), "alpha_weights: a higher loss should get a lower weight"

# huge losses with alpha near 1 (KL-like), lam = 0.1: w2 / w1 = ((0.01 * 4e5 + 0.1) / (0.01 * 2e5 + 0.1))^(1 / -0.01)
# = (4000.1 / 2000.1)^-100 ≈ 2^-100 ≈ 8e-31, so w ≈ [1, 0]; each power alone underflows to 0: work in log space
_out = own_work(alpha_weights, torch.tensor([2e5, 4e5]), alpha=0.99, lam=0.1, forbidden=_forbid)
assert np.all(np.isfinite(_np(_out))) and np.allclose(_np(_out), [1.0, 0.0], rtol=1e-4, atol=1e-6), \
    "alpha_weights: wrong (or not finite) on very large losses (2e5, 4e5) with alpha = 0.99"

# against adlkit's reference, computed here outside your function: 30 losses, alpha = 0.7, lam = 0.05
_losses = torch.rand(30, generator=torch.Generator().manual_seed(404)) * 5
_expected = reweight.alpha_weights(_losses, 0.7, 0.05)
_out = own_work(alpha_weights, _losses, 0.7, 0.05, forbidden=_forbid)
assert np.allclose(_np(_out), _np(_expected), rtol=1e-4, atol=1e-6), "alpha_weights: 30 random losses, alpha = 0.7, lambda = 0.05"
