# points: 2
# Hidden tests for `top_k_mean` (notebook 02, the top-k mean of patch scores, eq. 2). nbgrader removes this cell's hidden block from the release.
import numpy as np
import torch

from adlkit import losses
from adlkit.grading import own_work

_forbid = [losses.top_k_mean]


def _close(got, expected, rtol=1e-5, atol=1e-6):  # values and shape, whatever the dtype (as the visible checkers compare)
    got, expected = (np.asarray(t.detach().cpu() if hasattr(t, "detach") else t, dtype=float) for t in (got, expected))
    return got.shape == expected.shape and np.allclose(got, expected, rtol=rtol, atol=atol)


# N = 6, ratio 0.5 -> k = 3: the 3 largest of 4, 1, 3, 2, 0, 5 are 5, 4, 3 -> 12 / 3 = 4
_out = own_work(top_k_mean, torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.0, 5.0]]), 0.5, forbidden=_forbid)
assert _close(_out, torch.tensor([4.0])), "top_k_mean: wrong on one sample of 6 patches, ratio 0.5"

# N = 10, ratio 0.18 -> 1.8 patches, k = max(1, int(1.8)) = 1 (rounded down): the largest, 9
_out = own_work(top_k_mean, torch.tensor([[3.0, 9.0, 1.0, 7.0, 0.0, 8.0, 2.0, 6.0, 4.0, 5.0]]), 0.18, forbidden=_forbid)
assert _close(_out, torch.tensor([9.0])), "top_k_mean: wrong when ratio * N is not a whole number (N = 10, ratio 0.18)"

# N = 7, ratio 0.3 -> int(2.1) = 2: (7 + 6) / 2 = 6.5
_out = own_work(top_k_mean, torch.arange(1.0, 8.0)[None], 0.3, forbidden=_forbid)
assert _close(_out, torch.tensor([6.5])), "top_k_mean: wrong on N = 7, ratio 0.3"

# negative scores, ratio 0.5 -> k = 2: the largest are -1 and -2 -> -1.5
_out = own_work(top_k_mean, torch.tensor([[-3.0, -1.0, -2.0, -6.0]]), 0.5, forbidden=_forbid)
assert _close(_out, torch.tensor([-1.5])), "top_k_mean: wrong on negative patch scores"

# two [1, 2, 2] maps, ratio 0.25 -> k = 1 per sample: [9, 8] (each sample's own largest patch)
_maps = torch.tensor([[[[0.0, 9.0], [1.0, 2.0]]], [[[8.0, 0.0], [0.0, -1.0]]]])
_out = own_work(top_k_mean, _maps, 0.25, forbidden=_forbid)
assert _close(_out, torch.tensor([9.0, 8.0])), \
    "top_k_mean: a batch of two [1, 2, 2] maps should give one value per sample"

# a batch of one [1, 4, 5] map of 0..19, default ratio 0.1 -> k = 2: (19 + 18) / 2 = 18.5, shape [1]
_out = own_work(top_k_mean, torch.arange(20.0).reshape(1, 1, 4, 5), forbidden=_forbid)
assert _close(_out, torch.tensor([18.5])), \
    "top_k_mean: wrong on a batch of one map with the default ratio (expects shape [1])"

# against adlkit's reference, computed here outside your function: [3, 1, 7, 9] maps, ratio 0.05 (k = int(3.15) = 3)
_maps = torch.randn(3, 1, 7, 9, generator=torch.Generator().manual_seed(303))
_expected = losses.top_k_mean(_maps, 0.05)
_out = own_work(top_k_mean, _maps, 0.05, forbidden=_forbid)
assert _close(_out, _expected, rtol=1e-5, atol=1e-6), "top_k_mean: wrong on random [3, 1, 7, 9] maps, ratio 0.05"
