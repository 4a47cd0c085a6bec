# points: 2
# Hidden tests for `interpolate` (notebook 01, Perlin noise's fade and bilinear interpolation step). nbgrader removes this cell's hidden block from the release.
import math

import numpy as np
import torch

from adlkit.grading import own_work
from adlkit.synth import perlin

_forbid = [perlin.interpolate_corners, perlin.fade]  # the exercise is the fade and the lerps themselves


def _close(got, expected, rtol=1e-5, atol=1e-6):  # values and shape, whatever the dtype (as the visible checkers compare)
    got, expected = (np.asarray(t.detach().cpu() if hasattr(t, "detach") else t, dtype=float) for t in (got, expected))
    return got.shape == expected.shape and np.allclose(got, expected, rtol=rtol, atol=atol)


_zero, _one = torch.zeros(1), torch.ones(1)

# only n10 (corner y + 1, x) is 1, at ty = 0.25, tx = 0:
# fade(0.25) = 6/4^5 - 15/4^4 + 10/4^3 = 0.005859375 - 0.05859375 + 0.15625 = 0.103515625 -> sqrt(2) * 0.103515625
_out = own_work(interpolate, _zero, _one, _zero, _zero, torch.full((1,), 0.25), _zero, forbidden=_forbid)
assert _close(_out, torch.tensor([math.sqrt(2) * 0.103515625]), rtol=1e-5, atol=1e-6), \
    "interpolate: wrong value with only the corner n10 non-zero, a quarter of the way along y"

# only n01 (corner y, x + 1) is 1, at ty = 0, tx = 0.75: fade(0.75) = 1 - fade(0.25) = 0.896484375 -> sqrt(2) * that
_out = own_work(interpolate, _zero, _zero, _one, _zero, _zero, torch.full((1,), 0.75), forbidden=_forbid)
assert _close(_out, torch.tensor([math.sqrt(2) * 0.896484375]), rtol=1e-5, atol=1e-6), \
    "interpolate: wrong value with only the corner n01 non-zero, three quarters of the way along x"

# four equal corners c: every lerp of c with c is c, anywhere in the cell -> sqrt(2) * c = sqrt(2) * (-0.3)
_g = torch.Generator().manual_seed(101)
_c = torch.full((4, 6), -0.3)
_out = own_work(interpolate, _c, _c, _c, _c, torch.rand(4, 6, generator=_g), torch.rand(4, 6, generator=_g), forbidden=_forbid)
assert _close(_out, torch.full((4, 6), -0.3 * math.sqrt(2)), rtol=1e-5, atol=1e-6), \
    "interpolate: four equal corners should give the same (scaled) value everywhere in the cell"

# against adlkit's reference, computed here outside your function: a [2, 3, 4] float64 batch
_n = [torch.rand(2, 3, 4, generator=_g, dtype=torch.float64) * 2 - 1 for _ in range(4)]
_ty, _tx = torch.rand(2, 3, 4, generator=_g, dtype=torch.float64), torch.rand(2, 3, 4, generator=_g, dtype=torch.float64)
_expected = perlin.interpolate_corners(*_n, _ty, _tx)
_out = own_work(interpolate, *_n, _ty, _tx, forbidden=_forbid)
assert _close(_out, _expected, rtol=1e-5, atol=1e-6), "interpolate: wrong values on a random [2, 3, 4] float64 batch"
