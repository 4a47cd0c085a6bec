import math

import pytest
import torch
import torch.nn.functional as F

from adlkit.losses import (
    cosine_reconstruction_loss,
    deviation_loss,
    focal_loss,
    reference_stats,
    smooth_l1,
    soft_deviation_loss,
    top_k_mean,
    z_score,
)


def test_reference_stats_are_seeded_and_close_to_the_prior():
    a = reference_stats(5000, generator=torch.Generator().manual_seed(0))
    b = reference_stats(5000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert abs(a[0].item()) < 4 / math.sqrt(5000) and abs(a[1].item() - 1) < 0.05
    mu, sd = reference_stats(20000, mu=3.0, sigma=2.0, generator=torch.Generator().manual_seed(1))
    assert abs(mu.item() - 3) < 0.05 and abs(sd.item() - 2) < 0.05
    with pytest.raises(ValueError):
        reference_stats(1)


def test_z_score():
    assert torch.allclose(z_score(torch.tensor([3.0, -1.0]), 1.0, 2.0), torch.tensor([1.0, -1.0]))


def test_deviation_loss_hand_values_and_margin_boundary():
    z = torch.tensor([-2.0, 0.5, 3.0, 5.0, 7.0])
    normal = deviation_loss(z, torch.zeros(5))
    assert torch.allclose(normal, torch.tensor([2.0, 0.5, 3.0, 5.0, 7.0]))  # |z|
    anomalous = deviation_loss(z, torch.ones(5), margin=5.0)
    assert torch.allclose(anomalous, torch.tensor([7.0, 4.5, 2.0, 0.0, 0.0]))  # max(0, 5 - z), 0 at the margin
    assert torch.allclose(deviation_loss(z, torch.ones(5), margin=10.0), 10.0 - z)
    assert deviation_loss(z, torch.zeros(5), reduction="mean").item() == pytest.approx(17.5 / 5)
    with pytest.raises(ValueError, match="reduction"):
        deviation_loss(z, torch.zeros(5), reduction="avg")


def test_soft_deviation_interpolates_and_equals_hard_at_0_and_1():
    z = torch.tensor([-1.0, 2.0, 6.0])
    for p in (0.0, 1.0):
        assert torch.allclose(soft_deviation_loss(z, torch.full((3,), p)), deviation_loss(z, torch.full((3,), p)))
    half = soft_deviation_loss(z, torch.full((3,), 0.5))
    assert torch.allclose(half, 0.5 * torch.tensor([1.0, 2.0, 6.0]) + 0.5 * torch.tensor([6.0, 3.0, 0.0]))


def test_gradients_flow_through_scores_not_through_the_soft_label():
    s = torch.tensor([0.5, 6.0], requires_grad=True)
    p = torch.tensor([0.3, 0.9], requires_grad=True)
    soft_deviation_loss(z_score(s, 0.0, 1.0), p).sum().backward()
    assert s.grad is not None and torch.all(s.grad != 0)
    assert p.grad is None


def test_top_k_mean_hand_case_with_ties():
    scores = torch.tensor([[1.0, 5.0, 5.0, 2.0, 5.0, 0.0, 3.0, 4.0, 1.0, 1.0]])  # 10 patches, k = 5 at ratio 0.5
    assert top_k_mean(scores, 0.5).item() == pytest.approx((5 + 5 + 5 + 4 + 3) / 5)
    assert top_k_mean(scores, 0.1).item() == 5.0  # k = 1
    assert top_k_mean(scores, 0.01).item() == 5.0  # k never drops below 1
    maps = torch.arange(2 * 1 * 4 * 5, dtype=torch.float).view(2, 1, 4, 5)
    assert torch.allclose(top_k_mean(maps, 0.1), torch.tensor([18.5, 38.5]))  # top 2 of 20
    with pytest.raises(ValueError):
        top_k_mean(maps, 0.0)


def test_focal_equals_bce_at_gamma_zero_and_down_weights_easy_pixels():
    g = torch.Generator().manual_seed(0)
    logits2 = torch.randn(3, 2, 6, 7, generator=g)
    target = (torch.rand(3, 6, 7, generator=g) > 0.7).long()
    ce = F.cross_entropy(logits2, target, reduction="none").flatten(1).mean(1)
    assert torch.allclose(focal_loss(logits2, target, gamma=0.0), ce, atol=1e-6)
    logit1 = logits2[:, 1:] - logits2[:, :1]  # the same model as one sigmoid logit
    bce = F.binary_cross_entropy_with_logits(logit1[:, 0], target.float(), reduction="none").flatten(1).mean(1)
    assert torch.allclose(focal_loss(logit1, target[:, None], gamma=0.0), bce, atol=1e-6)
    assert torch.allclose(focal_loss(logit1, target, gamma=2.0), focal_loss(logits2, target, gamma=2.0), atol=1e-6)
    assert torch.all(focal_loss(logits2, target, gamma=2.0) < ce)
    # hand value: one pixel, p_t = 0.8 -> -(0.2)^2 log 0.8
    one = torch.log(torch.tensor([[[[0.2]], [[0.8]]]]))
    assert focal_loss(one, torch.ones(1, 1, 1), gamma=2.0).item() == pytest.approx(-(0.2**2) * math.log(0.8), rel=1e-5)
    with pytest.raises(ValueError, match="do not match"):
        focal_loss(logits2, target[:, :3])


def test_smooth_l1_hand_values_on_both_branches():
    target = torch.zeros(4)
    pred = torch.tensor([0.05, -0.05, 0.3, -0.3])
    # |d| < alpha: d^2 / (2 alpha) = 0.0025 / 0.2; otherwise |d| - alpha / 2 = 0.3 - 0.05
    values = smooth_l1(pred, target, alpha=0.1, reduction="none")
    assert torch.allclose(values, torch.tensor([0.0125, 0.0125, 0.25, 0.25]))
    assert smooth_l1(pred, target, alpha=0.1).item() == pytest.approx((0.0125 + 0.0125 + 0.25 + 0.25) / 4)
    assert smooth_l1(pred + 2.0, target + 2.0, alpha=0.1, reduction="none").allclose(values, atol=1e-6)  # only d matters
    assert smooth_l1(torch.tensor([1.0]), torch.tensor([0.0]), alpha=0.5, reduction="sum").item() == pytest.approx(0.75)


def test_smooth_l1_is_continuous_with_a_continuous_slope_at_alpha():
    alpha, eps = 0.1, 1e-4
    d = torch.tensor([alpha - eps, alpha, alpha + eps], dtype=torch.float64, requires_grad=True)
    values = smooth_l1(d, torch.zeros(3, dtype=torch.float64), alpha, reduction="none")
    assert values[1].item() == pytest.approx(alpha / 2)  # the linear branch: alpha - alpha / 2
    assert values[0].item() == pytest.approx(alpha / 2, abs=2 * eps) and values[2].item() == pytest.approx(alpha / 2, abs=2 * eps)
    values.sum().backward()
    assert torch.allclose(d.grad, torch.ones(3, dtype=torch.float64), atol=2 * eps / alpha)  # slope d / alpha -> 1
    for bad in (0.0, -0.1):
        with pytest.raises(ValueError, match="alpha"):
            smooth_l1(torch.zeros(2), torch.ones(2), bad)


def _levels(generator):
    return [torch.randn(2, c, s, s, generator=generator) for c, s in ((3, 4), (5, 2), (7, 1))]


def test_cosine_reconstruction_loss_is_zero_for_a_copy_and_two_per_level_for_the_opposite():
    enc = _levels(torch.Generator().manual_seed(0))
    assert torch.allclose(cosine_reconstruction_loss(enc, [e.clone() for e in enc], reduction="none"), torch.zeros(2), atol=1e-6)
    assert cosine_reconstruction_loss(enc, [-e for e in enc]).item() == pytest.approx(6.0)  # 3 levels x 2
    assert torch.allclose(cosine_reconstruction_loss(enc[:1], [-enc[0]], reduction="none"), torch.full((2,), 2.0))
    assert cosine_reconstruction_loss(enc, [-e for e in enc], reduction="sum").item() == pytest.approx(12.0)  # 2 images x 6


def test_cosine_reconstruction_loss_hand_case_with_2d_vectors():
    e = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    d = torch.tensor([1.0, 1.0]).view(1, 2, 1, 1)  # 45 degrees: cos = 1 / sqrt(2)
    assert cosine_reconstruction_loss([e], [d]).item() == pytest.approx(1 - 1 / math.sqrt(2), rel=1e-6)
    d2 = torch.tensor([-1.0, math.sqrt(3)]).view(1, 2, 1, 1)  # 120 degrees: cos = -1/2
    assert cosine_reconstruction_loss([e, e], [d, d2]).item() == pytest.approx(1 - 1 / math.sqrt(2) + 1.5, rel=1e-6)
    both = cosine_reconstruction_loss([torch.cat([e, e])], [torch.cat([d, d2])], reduction="none")
    assert torch.allclose(both, torch.tensor([1 - 1 / math.sqrt(2), 1.5]))  # one value per image


def test_cosine_reconstruction_loss_flattens_each_image_not_each_position():
    # one image, 2 channels, 2 positions: position 1 e = d = (3, 0); position 2 e = (0, 1), d = (0, -1).
    e = torch.tensor([[3.0, 0.0], [0.0, 1.0]]).view(1, 2, 1, 2)  # [B, C, h, w]: channel 0 = (3, 0), channel 1 = (0, 1)
    d = torch.tensor([[3.0, 0.0], [0.0, -1.0]]).view(1, 2, 1, 2)
    per_position = (1 - F.cosine_similarity(e, d, dim=1)).mean().item()
    assert per_position == pytest.approx(1.0)  # (0 + 2) / 2: what the loss must NOT be
    # whole map: vec e = (3, 0, 0, 1), vec d = (3, 0, 0, -1), cos = (9 - 1) / 10 = 0.8
    assert cosine_reconstruction_loss([e], [d]).item() == pytest.approx(0.2, rel=1e-6)


def test_cosine_reconstruction_loss_rejects_mismatched_levels():
    enc = _levels(torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="shape"):
        cosine_reconstruction_loss(enc, [enc[0], enc[1], enc[2][:, :, :, :0]])
    with pytest.raises(ValueError, match="shape"):
        cosine_reconstruction_loss(enc, [enc[0], enc[1][:1], enc[2]])
    with pytest.raises(ValueError, match="levels"):
        cosine_reconstruction_loss(enc, enc[:2])


# ----------------------------------------------------------------------------- CKAAD's energy
def test_energy_hand_values():
    from adlkit.losses import energy

    def e(s, y):
        return energy(torch.tensor(float(s)), y).item()

    assert e(0, 0) == 0.0 and e(-3, 0) == 3.0 and e(3, 0) == 3.0  # normal: |s|
    assert e(2, 1) == 3.0 and e(-2, 1) == 3.0 and e(0, 1) == 5.0  # anomalous: m - |s| inside the margin
    assert e(7, 1) == 0.0 and e(-7, 1) == 0.0 and e(5, 1) == 0.0  # nothing beyond it
    assert energy(torch.tensor(2.0), 1, margin=10.0).item() == 8.0


def test_energy_broadcasts_a_float_target_over_a_tensor_of_scores():
    from adlkit.losses import energy

    s = torch.tensor([[-7.0, -2.0, 0.0], [1.0, 4.0, 9.0]])
    assert torch.equal(energy(s, 0), s.abs())
    assert torch.equal(energy(s, 1), torch.tensor([[0.0, 3.0, 5.0], [4.0, 1.0, 0.0]]))
    half = energy(s, 0.5)
    assert half.shape == s.shape
    assert torch.allclose(half, 0.5 * s.abs() + 0.5 * (5 - s.abs()).clamp(min=0))
    per_element = energy(s, torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 0.0]]))  # a tensor y works element-wise
    assert torch.equal(per_element, torch.tensor([[7.0, 3.0, 5.0], [1.0, 1.0, 9.0]]))


def test_energy_gradient_vanishes_beyond_the_margin():
    from adlkit.losses import energy

    s = torch.tensor([-7.0, -2.0, 2.0, 6.0], requires_grad=True)
    energy(s, 1).sum().backward()
    assert torch.equal(s.grad, torch.tensor([0.0, 1.0, -1.0, 0.0]))  # inside: pushed away from 0; outside: none
    s.grad = None
    energy(s, 0).sum().backward()
    assert torch.equal(s.grad, torch.tensor([-1.0, -1.0, 1.0, 1.0]))  # normal: always pulled to 0


def test_cosine_reconstruction_loss_is_scale_invariant_and_two_per_level_for_the_opposite():
    enc = _levels(torch.Generator().manual_seed(7))
    assert torch.allclose(cosine_reconstruction_loss(enc, [2 * e for e in enc], reduction="none"), torch.zeros(2), atol=1e-6)
    assert torch.allclose(cosine_reconstruction_loss(enc, [0.01 * e for e in enc], reduction="none"), torch.zeros(2),
                          atol=1e-6)
    for n_levels in (1, 2, 3):
        opposite = cosine_reconstruction_loss(enc[:n_levels], [-e for e in enc[:n_levels]], reduction="none")
        assert torch.allclose(opposite, torch.full((2,), 2.0 * n_levels))
    assert cosine_reconstruction_loss(enc, [e + 0.5 * torch.randn_like(e) for e in enc]).item() > 0.01
