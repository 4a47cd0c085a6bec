# points: 3
# Hidden tests for `normalize_and_fuse` (notebook 05, per-cue normalisation phi and the weighted geometric mean). nbgrader removes this cell's hidden block from the release.
import numpy as np
import torch

from adlkit.grading import own_work
from adlkit.methods import multicue

_forbid = [multicue.fuse, multicue.normalize_cue]


def _np(t):
    return np.asarray(t.detach().cpu() if hasattr(t, "detach") else t, dtype=float)


_norms = {"a": (1.0, 3.0), "b": (2.0, 6.0)}  # two cues of other names: phi_a = ln(1 + x) / ln 4, phi_b = ln(1 + x/2) / ln 4

# phi_a(1, 3, 10 -> clipped to 3) = [0.5, 1, 1]; phi_b(2, 2, 6) = [0.5, 0.5, 1]; weights (3, 1) -> (0.75, 0.25):
# [0.5^0.75 * 0.5^0.25, 1 * 0.5^0.25, 1] = [0.5, 0.840896, 1]
_raw = {"a": torch.tensor([1.0, 3.0, 10.0]), "b": torch.tensor([2.0, 2.0, 6.0])}
_out = own_work(normalize_and_fuse, _raw, _norms, (3.0, 1.0), forbidden=_forbid)
assert np.allclose(_np(_out), [0.5, 0.5 ** 0.25, 1.0], rtol=1e-4, atol=1e-5), "normalize_and_fuse: two cues, weights (3, 1)"

# a negative raw value clips to 0, phi = 0, floored at 1e-6: equal weights -> sqrt(1e-6 * 1) = 1e-3; second image [1, 1] -> 1
_raw = {"a": torch.tensor([-2.0, 3.0]), "b": torch.tensor([6.0, 6.0])}
_out = own_work(normalize_and_fuse, _raw, _norms, (1.0, 1.0), forbidden=_forbid)
assert np.allclose(_np(_out), [1e-3, 1.0], rtol=1e-4, atol=1e-5), "normalize_and_fuse: a cue at 0 should be floored at 1e-6"

# weight 0 on a cue that is 0 everywhere: it drops out (no NaN) -> phi_a(1, 3) = [0.5, 1]
_raw = {"a": torch.tensor([1.0, 3.0]), "b": torch.tensor([0.0, 0.0])}
_out = own_work(normalize_and_fuse, _raw, _norms, (2.0, 0.0), forbidden=_forbid)
assert np.allclose(_np(_out), [0.5, 1.0], rtol=1e-4, atol=1e-5), "normalize_and_fuse: a cue of weight 0 that is 0 everywhere"

# one image, raw cues as float64 NumPy arrays: phi_a(1) = 0.5, phi_b(2) = 0.5, equal weights -> 0.5, shape [1]
_out = own_work(normalize_and_fuse, {"a": np.array([1.0]), "b": np.array([2.0])}, _norms, (1.0, 1.0), forbidden=_forbid)
assert _np(_out).shape == (1,) and np.allclose(_np(_out), [0.5], rtol=1e-4, atol=1e-5), \
    "normalize_and_fuse: wrong on one image given as NumPy arrays"

# against adlkit's reference, computed here outside your function: four cues, 20 images, weights (0.2, 0.3, 0.1, 0.4)
_g = torch.Generator().manual_seed(606)
_norms = {"p": (0.5, 4.0), "q": (0.05, 0.3), "r": (1.0, 10.0), "s": (0.2, 0.8)}
_raw = {k: torch.rand(20, generator=_g) * 1.3 * D - 0.1 * D for k, (c, D) in _norms.items()}
_weights = (0.2, 0.3, 0.1, 0.4)
_expected = multicue.fuse({k: multicue.normalize_cue(_raw[k], *_norms[k]) for k in _raw}, _weights)
_out = own_work(normalize_and_fuse, _raw, _norms, _weights, forbidden=_forbid)
assert np.allclose(_np(_out), _np(_expected), rtol=1e-4, atol=1e-5), "normalize_and_fuse: wrong on four random cues"
