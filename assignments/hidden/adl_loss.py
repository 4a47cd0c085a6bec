# points: 4
# Hidden tests for `adl_loss` (notebook 04, the total loss of one step of ADL's Algorithm 1). nbgrader removes this cell's hidden block from the release.
import dataclasses
import math

import numpy as np
import torch

from adlkit.grading import own_work
from adlkit.methods import adl, deviation

# adlkit's losses and reweight functions are allowed: composing them is the exercise (ADL's step is DevNet's shared
# deviation step with ADL's switches, so that step is the reference too)
_forbid = [adl.adl_step, deviation.deviation_step, deviation.deviation_weights]


def _close(got, expected, rtol=1e-5, atol=1e-6):  # values and shape, whatever the dtype (as the visible checkers compare)
    got, expected = (np.asarray(t.detach().cpu() if hasattr(t, "detach") else t, dtype=float) for t in (got, expected))
    return got.shape == expected.shape and np.allclose(got, expected, rtol=rtol, atol=atol)


def _cfg(row, **changes):
    return dataclasses.replace(adl.ADLConfig().ablation(row), **changes)


# two images: scores [1, 3], labels [0, 1], mu_r = 1, sd_r = 2 -> z = [0, 1]; margin 5 -> l_dev = [|0|, 5 - 1] = [0, 4];
# logits [0, 0] -> p = 0.5 -> l_soft = 0.5 |z| + 0.5 max(0, 5 - z) = [2.5, 2.5]; BCE(logit 0, any target) = ln 2 each
_labels = torch.tensor([0, 1])
_out = {"score": torch.tensor([1.0, 3.0]), "logit": torch.zeros(2), "seg": torch.zeros(2, 2, 4, 4)}
_masks, _mu, _sd, _target = torch.zeros(2, 1, 4, 4), torch.tensor(1.0), torch.tensor(2.0), _labels.float()


def _total(config, after_burn_in, target=_target):
    return float(own_work(adl_loss, _out, _labels, _masks, _mu, _sd, target, config, after_burn_in, forbidden=_forbid))


# DL (no reweighting): uniform weights 1/2 -> (0 + 4) / 2 = 2
assert math.isclose(_total(_cfg("DL"), True, None), 2.0, rel_tol=1e-4), "adl_loss: wrong on the DL row (uniform weights)"
# Wt-DL, reverse KL, lam = 1, after burn-in: w ∝ 1 / (l + 1) = [1, 1/5] -> [5/6, 1/6] -> 4 / 6; during burn-in uniform -> 2
_wt = _cfg("Wt-DL", reweight="reverse_kl", lam=1.0)
assert math.isclose(_total(_wt, True, None), 4 / 6, rel_tol=1e-4), "adl_loss: wrong on Wt-DL with reverse-KL weights, lambda = 1"
assert math.isclose(_total(_wt, False, None), 2.0, rel_tol=1e-4), "adl_loss: Wt-DL during burn-in should weigh uniformly"
# SoftDL-CE with hard_burn_in (authors' code): during burn-in l_dev -> 2 + ln 2; after it l_soft -> 2.5 + ln 2
_soft = _cfg("SoftDL-CE", hard_burn_in=True)
assert math.isclose(_total(_soft, False), 2 + math.log(2), rel_tol=1e-4), "adl_loss: hard_burn_in, during burn-in"
assert math.isclose(_total(_soft, True), 2.5 + math.log(2), rel_tol=1e-4), "adl_loss: hard_burn_in, after burn-in"
# Proposed during burn-in, focal gamma 1: l_soft 2.5 + BCE ln 2 + focal on logits 0 (p_t = 1/2): (1 - 1/2)^1 ln 2
# -> 2.5 + 1.5 ln 2
_prop = _cfg("Proposed", focal_gamma=1.0)
assert math.isclose(_total(_prop, False), 2.5 + 1.5 * math.log(2), rel_tol=1e-4), "adl_loss: wrong on Proposed with focal gamma 1"

# against adlkit's reference, computed here outside your function: the authors' settings (margin 10, hard burn-in) with
# KL weights within each label, 6 images with masks, after burn-in; the value and its gradients (weights are not trained through)
_g = torch.Generator().manual_seed(505)
_config = adl.ADLConfig.authors_code(reweight="kl", lam=0.5, within_label=True)
_labels6 = torch.tensor([0, 0, 0, 1, 1, 1])
_masks6 = torch.zeros(6, 1, 8, 8)
_masks6[3:, :, 2:5, 1:6] = 1
_leaves = {"score": torch.rand(6, generator=_g) * 12, "logit": torch.randn(6, generator=_g),
           "seg": torch.randn(6, 2, 8, 8, generator=_g)}
_mu6, _sd6, _target6 = torch.tensor(0.3), torch.tensor(1.2), torch.tensor([0.0, 1, 0, 1, 1, 1])
_ref_in = {k: v.clone().requires_grad_(True) for k, v in _leaves.items()}
_ref = adl.adl_step(_ref_in, _labels6, _masks6, _mu6, _sd6, _target6, _config, True)["total"]
_ref_grads = torch.autograd.grad(_ref, list(_ref_in.values()))
_in = {k: v.clone().requires_grad_(True) for k, v in _leaves.items()}
_mine = own_work(adl_loss, _in, _labels6, _masks6, _mu6, _sd6, _target6, _config, True, forbidden=_forbid)
assert _close(_mine, _ref, rtol=1e-4, atol=1e-5), "adl_loss: wrong on the authors' settings with KL weights within labels"
for _name, _r, _m in zip(_in, _ref_grads, torch.autograd.grad(_mine, list(_in.values()))):
    assert _close(_m, _r, rtol=1e-4, atol=1e-5), f"adl_loss: wrong gradient with respect to out['{_name}']"
