# points: 2
# Hidden tests for `deviation_loss` (notebook 02, DevNet's deviation loss, eq. 4). nbgrader removes this cell's hidden block from the release.
import numpy as np
import torch

from adlkit import losses
from adlkit.grading import own_work

# eq. 5 with p = y is eq. 4, so the soft loss would be the same shortcut
_forbid = [losses.deviation_loss, losses.soft_deviation_loss]


def _close(got, expected, rtol=1e-5, atol=1e-6):  # values and shape, whatever the dtype (as the visible checkers compare)
    got, expected = (np.asarray(t.detach().cpu() if hasattr(t, "detach") else t, dtype=float) for t in (got, expected))
    return got.shape == expected.shape and np.allclose(got, expected, rtol=rtol, atol=atol)


# anomalies, margin 2: max(0, 2 - z) for z = -1.5, 0.5, 3 -> 3.5, 1.5, 0
_out = own_work(deviation_loss, torch.tensor([-1.5, 0.5, 3.0]), torch.ones(3), margin=2.0, forbidden=_forbid)
assert _close(_out, torch.tensor([3.5, 1.5, 0.0])), "deviation_loss: wrong on anomalies (y = 1) with margin 2"

# normals, margin 2 (the margin plays no part): |z| for z = -2.5, 0, 4 -> 2.5, 0, 4
_out = own_work(deviation_loss, torch.tensor([-2.5, 0.0, 4.0]), torch.zeros(3), margin=2.0, forbidden=_forbid)
assert _close(_out, torch.tensor([2.5, 0.0, 4.0])), "deviation_loss: wrong on normal samples (y = 0) with margin 2"

# batch of 1, integer label, the default margin 5: max(0, 5 - 4) = 1, one value per sample
_out = own_work(deviation_loss, torch.tensor([4.0]), torch.tensor([1]), forbidden=_forbid)
assert _close(_out, torch.tensor([1.0])), \
    "deviation_loss: wrong on a batch of one anomaly with int64 labels and the default margin (one loss per sample)"

# boolean labels, margin 3: anomaly z = -1 -> 3 - (-1) = 4; normal z = 1 -> 1
_out = own_work(deviation_loss, torch.tensor([-1.0, 1.0]), torch.tensor([True, False]), margin=3.0, forbidden=_forbid)
assert _close(_out, torch.tensor([4.0, 1.0])), "deviation_loss: wrong with boolean labels and margin 3"

# gradients, margin 5: normal z = -2 -> d|z|/dz = -1; anomaly z = 1 (< margin) -> d(5 - z)/dz = -1; anomaly z = 6 -> 0
_z = torch.tensor([-2.0, 1.0, 6.0], requires_grad=True)
_out = own_work(deviation_loss, _z, torch.tensor([0.0, 1.0, 1.0]), forbidden=_forbid)
(_grad,) = torch.autograd.grad(_out.sum(), _z)
assert _close(_grad, torch.tensor([-1.0, -1.0, 0.0])), "deviation_loss: wrong gradient with respect to z"

# against adlkit's reference, computed here outside your function: 50 float64 scores, the authors' margin 10
_g = torch.Generator().manual_seed(202)
_z = torch.randn(50, generator=_g, dtype=torch.float64) * 6
_y = (torch.rand(50, generator=_g) > 0.6).float()
_expected = losses.deviation_loss(_z, _y, 10.0)
_out = own_work(deviation_loss, _z, _y, 10.0, forbidden=_forbid)
assert _close(_out, _expected, rtol=1e-5, atol=1e-6), "deviation_loss: wrong on 50 random float64 scores, margin 10"
