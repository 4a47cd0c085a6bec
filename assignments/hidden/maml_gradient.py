# points: 4
# Hidden tests for `maml_gradient` (notebook 08, the second-order meta-gradient of one inner MAML step). nbgrader removes this cell's hidden block from the release.
import numpy as np
import torch

from adlkit.grading import own_work
from adlkit.methods import ahl

_forbid = [ahl.adapt, ahl.meta_step, ahl.meta_step_authors]  # adlkit's inner step and the meta steps that use it


def _close(got, expected, rtol=1e-5, atol=1e-6):  # values and shape, whatever the dtype (as the visible checkers compare)
    got, expected = (np.asarray(t.detach().cpu() if hasattr(t, "detach") else t, dtype=float) for t in (got, expected))
    return got.shape == expected.shape and np.allclose(got, expected, rtol=rtol, atol=atol)


# one parameter: support 1.5 theta^2 (gradient 3 theta, Hessian 3), query 0.5 (theta - 0.5)^2, theta = 2, beta = 0.1:
# theta' = 2 - 0.1 * 6 = 1.4; d query / d theta = (theta' - 0.5) * (1 - 0.1 * 3) = 0.9 * 0.7 = 0.63
_out = own_work(maml_gradient, torch.tensor([2.0]), lambda th: 1.5 * (th ** 2).sum(), lambda th: 0.5 * ((th - 0.5) ** 2).sum(),
                0.1, forbidden=_forbid)
assert _close(_out, torch.tensor([0.63]), rtol=1e-4, atol=1e-5), \
    "maml_gradient: wrong on one parameter with quadratic support and query losses"

# two parameters, support theta0 * theta1 (gradient [theta1, theta0], Hessian [[0, 1], [1, 0]]), query theta0^2 + theta1,
# theta = [1, 2], beta = 0.5: theta' = [1 - 1, 2 - 0.5] = [0, 1.5]; query gradient at theta' = [0, 1];
# (I - beta H) [0, 1] = [[1, -0.5], [-0.5, 1]] [0, 1] = [-0.5, 1]
_out = own_work(maml_gradient, torch.tensor([1.0, 2.0]), lambda th: th[0] * th[1], lambda th: th[0] ** 2 + th[1], 0.5,
                forbidden=_forbid)
assert _close(_out, torch.tensor([-0.5, 1.0]), rtol=1e-4, atol=1e-5), \
    "maml_gradient: wrong on a support loss whose Hessian couples the two parameters"

# against adlkit's reference, computed here outside your function: float64 theta [4], softplus support, quartic query
_g = torch.Generator().manual_seed(1010)
_A = torch.randn(6, 4, generator=_g, dtype=torch.float64)
_q = torch.randn(4, generator=_g, dtype=torch.float64)
_theta = torch.randn(4, generator=_g, dtype=torch.float64)


def _support(th):
    return torch.nn.functional.softplus(_A @ th).sum()


def _query(th):
    return ((th - _q) ** 4).sum() + (th ** 2).sum()


_leaf = _theta.clone().requires_grad_(True)
_adapted = ahl.adapt(_leaf[None], lambda th, _: _support(th[0]).reshape(1), [None], 0.2, create_graph=True)
(_expected,) = torch.autograd.grad(_query(_adapted[0]), _leaf)
_out = own_work(maml_gradient, _theta, _support, _query, 0.2, forbidden=_forbid)
assert _close(_out, _expected, rtol=1e-4, atol=1e-5), "maml_gradient: wrong on a random float64 theta, softplus support"
assert not _theta.requires_grad, "maml_gradient: should not change the theta it is given (use a detached copy)"
