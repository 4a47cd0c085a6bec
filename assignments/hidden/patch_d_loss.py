# points: 3
# Hidden tests for `patch_d_loss` (notebook 07, CKAAD's energy loss of the patch discriminator, eqs. 8 and 11-12). nbgrader removes this cell's hidden block from the release.
import numpy as np
import torch

from adlkit.grading import own_work
from adlkit.methods import ckaad

# the discriminator's loss and its per-level energy sum; adlkit.losses.energy (per position) is allowed
_forbid = [ckaad.discriminator_energy, ckaad.discriminator_loss]


def _close(got, expected, rtol=1e-5, atol=1e-6):  # values and shape, whatever the dtype (as the visible checkers compare)
    got, expected = (np.asarray(t.detach().cpu() if hasattr(t, "detach") else t, dtype=float) for t in (got, expected))
    return got.shape == expected.shape and np.allclose(got, expected, rtol=rtol, atol=atol)


# two levels [1, 2, 2] and [1, 1, 1], margin 2, gamma 0.25:
# normal: mean |s| of [1, -1, 2, 0] = 1, plus |3| = 3 -> 4
# anomalous: max(0, 2 - |1|) = 1 at every position -> 1, plus max(0, 2 - |-5|) = 0 -> 1
# reconstructions: max(0, 2 - 0) = 2 -> 2, plus max(0, 2 - 1.5) = 0.5 -> 2.5
# total: 4 + (1 - 0.25) * 1 + 0.25 * 2.5 = 5.375
_n = [torch.tensor([[[1.0, -1.0], [2.0, 0.0]]]), torch.tensor([[[3.0]]])]
_a = [torch.ones(1, 2, 2), torch.tensor([[[-5.0]]])]
_r = [torch.zeros(1, 2, 2), torch.tensor([[[1.5]]])]
_out = own_work(patch_d_loss, _n, _a, _r, gamma=0.25, margin=2.0, forbidden=_forbid)
assert torch.as_tensor(_out).numel() == 1 and abs(float(_out) - 5.375) < 1e-5, \
    "patch_d_loss: wrong on two small levels, gamma 0.25, margin 2 (expects a scalar)"

# three levels, gamma 0, margin 1, every score 0: normals 0; anomalies 1 per level, summed over 3 levels -> 3; recon weight 0
_levels = [torch.zeros(2, 4, 4), torch.zeros(2, 2, 2), torch.zeros(2, 1, 1)]
_out = own_work(patch_d_loss, _levels, _levels, _levels, gamma=0.0, margin=1.0, forbidden=_forbid)
assert abs(float(_out) - 3.0) < 1e-5, "patch_d_loss: wrong with gamma 0 on three levels (levels add up)"

# gamma 1, margin 1: normals at -2 -> 2 per level x 3 = 6; anomalies (weight 0) at 0; reconstructions at 10 (|s| > m) -> 0
_out = own_work(patch_d_loss, [torch.full_like(s, -2.0) for s in _levels], _levels, [torch.full_like(s, 10.0) for s in _levels],
                gamma=1.0, margin=1.0, forbidden=_forbid)
assert abs(float(_out) - 6.0) < 1e-5, "patch_d_loss: wrong with gamma 1 (only reconstructions count as anomalies)"

# against adlkit's reference, computed here outside your function: two levels, batch 2, gamma 0.7, margin 4
_g = torch.Generator().manual_seed(909)
_s = [[torch.randn(2, 6, 6, generator=_g) * 3, torch.randn(2, 3, 3, generator=_g) * 3] for _ in range(3)]
_config = ckaad.CKAADConfig(gamma=0.7, margin=4.0)
_expected = (ckaad.discriminator_energy(_s[0], 0, _config) + 0.3 * ckaad.discriminator_energy(_s[1], 1, _config)
             + 0.7 * ckaad.discriminator_energy(_s[2], 1, _config))
_out = own_work(patch_d_loss, *_s, 0.7, 4.0, forbidden=_forbid)
assert _close(_out, _expected, rtol=1e-5, atol=1e-6), "patch_d_loss: wrong on random scores, gamma 0.7, margin 4"
