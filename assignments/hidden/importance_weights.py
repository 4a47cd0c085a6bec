# points: 3
# Hidden tests for `importance_weights` (notebook 08, AHL's task importance weights, eqs. 6-7). nbgrader removes this cell's hidden block from the release.
import math

import numpy as np
import torch

from adlkit.grading import own_work
from adlkit.methods import ahl

_forbid = [ahl.importance_weights]


def _close(got, expected, rtol=1e-5, atol=1e-6):  # values and shape, whatever the dtype (as the visible checkers compare)
    got, expected = (np.asarray(t.detach().cpu() if hasattr(t, "detach") else t, dtype=float) for t in (got, expected))
    return got.shape == expected.shape and np.allclose(got, expected, rtol=rtol, atol=atol)


# 2 samples x 2 tasks, margin 4, y = [0, 1], c = 1, all kept:
# task 0: clip(2/4) = 0.5 -> 0.5^2 = 0.25; clip(8/4) = 1 -> (1 - 1)^2 = 0 -> r0 = 0.125
# task 1: clip(-1/4) = 0 -> 0; clip(2/4) = 0.5 -> (0.5 - 1)^2 = 0.25 -> r1 = 0.125 -> w = [0.5, 0.5]
_out = own_work(importance_weights, torch.tensor([[2.0, -1.0], [8.0, 2.0]]), torch.tensor([0.0, 1.0]), torch.ones(2, 2),
                torch.ones(2, 2, dtype=torch.bool), 4.0, forbidden=_forbid)
assert _close(_out, torch.tensor([0.5, 0.5]), atol=1e-6), "importance_weights: wrong with a negative predicted score, margin 4"

# 3 samples x 2 tasks, margin 3, y = [0, 1, 1], c[0, 0] = 2, sample 1 left out of task 0:
# task 0: rows 0 and 2: 2 * (1/3)^2 = 2/9 and (clip(2) - 1)^2 = 0 -> r0 = (2/9) / 2 = 1/9
# task 1: rows 0, 1, 2: 0, (clip(2) - 1)^2 = 0, (1 - 1)^2 = 0 -> r1 = 0; w = softmax([-1/9, 0]) = [1, e^(1/9)] / (1 + e^(1/9))
_out = own_work(importance_weights, torch.tensor([[1.0, 0.0], [3.0, 6.0], [6.0, 3.0]]), torch.tensor([0.0, 1.0, 1.0]),
                torch.tensor([[2.0, 1.0], [1.0, 1.0], [1.0, 1.0]]), torch.tensor([[True, True], [False, True], [True, True]]),
                3.0, forbidden=_forbid)
_w0 = 1 / (1 + math.exp(1 / 9))
assert _close(_out, torch.tensor([_w0, 1 - _w0]), atol=1e-6), "importance_weights: wrong with c weights and a left-out sample"

# a single task takes all the weight
_out = own_work(importance_weights, torch.tensor([[7.0], [-2.0]]), torch.tensor([1.0, 0.0]), torch.ones(2, 1),
                torch.ones(2, 1, dtype=torch.bool), 5.0, forbidden=_forbid)
assert _close(_out, torch.tensor([1.0]), atol=1e-6), "importance_weights: a single task should get weight 1"

# against adlkit's reference, computed here outside your function: 10 samples x 5 tasks, negative scores, margin 2.5
_g = torch.Generator().manual_seed(1111)
_pred = torch.randn(10, 5, generator=_g) * 4
_y = torch.tensor([0.0] * 5 + [1.0] * 5)
_c = torch.tensor([0.5, 1.0, 2.0])[torch.randint(0, 3, (10, 5), generator=_g)]
_keep = torch.rand(10, 5, generator=_g) > 0.4
_keep[0] = True
_expected = ahl.importance_weights(_pred, _y, _c, _keep, 2.5)[0]
_out = own_work(importance_weights, _pred, _y, _c, _keep, 2.5, forbidden=_forbid)
assert _close(_out, _expected, rtol=1e-5, atol=1e-6), "importance_weights: wrong on 10 random samples x 5 tasks, margin 2.5"
