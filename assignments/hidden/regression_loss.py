# points: 2
# Hidden tests for `regression_loss` (notebook 06, CADA's smooth-L1 regression loss on (u, gamma), eqs. 3-4). nbgrader removes this cell's hidden block from the release.
import numpy as np
import torch

import adlkit.losses  # not `from adlkit import losses`: notebook 06 uses `losses` as a variable
from adlkit.grading import own_work
from adlkit.methods import cada

_forbid = [cada.regression_loss, adlkit.losses.smooth_l1]  # adlkit's SL1 is the body of the exercise


def _close(got, expected, rtol=1e-5, atol=1e-6):  # values and shape, whatever the dtype (as the visible checkers compare)
    got, expected = (np.asarray(t.detach().cpu() if hasattr(t, "detach") else t, dtype=float) for t in (got, expected))
    return got.shape == expected.shape and np.allclose(got, expected, rtol=rtol, atol=atol)


# batch of 1, alpha 0.5: u: d = 0.2 < 0.5 -> 0.2^2 / (2 * 0.5) = 0.04; gamma: d = 1 >= 0.5 -> 1 - 0.5/2 = 0.75 -> 0.79
_out = own_work(regression_loss, torch.tensor([[0.0, 0.0]]), torch.tensor([[0.2, 1.0]]), 0.5, forbidden=_forbid)
assert _close(_out, torch.tensor(0.79), rtol=1e-4, atol=1e-6), \
    "regression_loss: wrong on a batch of one (one error per branch), alpha 0.5 (expects a scalar)"

# batch of 2, alpha 1: d = [[0.5, 0], [3, 2]] -> SL1 [[0.125, 0], [2.5, 1.5]]; column means 1.3125 + 0.75 = 2.0625
_out = own_work(regression_loss, torch.tensor([[0.0, 0.0], [3.0, 0.0]]), torch.tensor([[0.5, 0.0], [0.0, -2.0]]),
                alpha=1.0, forbidden=_forbid)
assert _close(_out, torch.tensor(2.0625), rtol=1e-4, atol=1e-6), "regression_loss: wrong on a batch of two, alpha 1"

# default alpha 0.1: u: d = 1 -> 1 - 0.05 = 0.95; gamma: d = 0.05 -> 0.0025 / 0.2 = 0.0125 -> 0.9625
_out = own_work(regression_loss, torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.05]]), forbidden=_forbid)
assert _close(_out, torch.tensor(0.9625), rtol=1e-4, atol=1e-6), "regression_loss: wrong with the default alpha"

# against adlkit's reference, computed here outside your function: value and gradient, 6 float64 rows, alpha 0.25
_g = torch.Generator().manual_seed(808)
_pred = torch.randn(6, 2, generator=_g, dtype=torch.float64) * 0.4
_target = torch.randn(6, 2, generator=_g, dtype=torch.float64) * 0.4
_p_ref = _pred.clone().requires_grad_(True)
_expected = cada.regression_loss(_p_ref, _target, 0.25)
(_g_ref,) = torch.autograd.grad(_expected, _p_ref)
_p = _pred.clone().requires_grad_(True)
_out = own_work(regression_loss, _p, _target, 0.25, forbidden=_forbid)
assert _close(_out, _expected, rtol=1e-4, atol=1e-6), "regression_loss: wrong on 6 random float64 rows, alpha 0.25"
(_g_out,) = torch.autograd.grad(_out, _p)
assert _close(_g_out, _g_ref, rtol=1e-4, atol=1e-6), "regression_loss: wrong gradient with respect to pred"
