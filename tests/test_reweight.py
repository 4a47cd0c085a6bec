import numpy as np
import pytest
import torch

from adlkit.reweight import (
    alpha_weights,
    batch_weights,
    equivalent_strength,
    instance_weights,
    kl_weights,
    reverse_kl_weights,
    solve_numerically,
    weights_within_labels,
)

LOSSES = torch.tensor([0.05, 0.2, 0.5, 1.0, 3.0])


@pytest.mark.parametrize("fn", [lambda L: kl_weights(L, 0.1), lambda L: reverse_kl_weights(L, 0.1),
                                lambda L: alpha_weights(L, 0.1, 0.1), lambda L: alpha_weights(L, 0.7, 0.5)])
def test_weights_sum_to_one_and_fall_as_loss_rises(fn):
    rng = np.random.default_rng(0)
    losses = torch.tensor(rng.exponential(1.0, 50), dtype=torch.float32)
    w = fn(losses)
    assert w.sum().item() == pytest.approx(1.0, abs=1e-6) and torch.all(w >= 0)
    order = losses.argsort()
    assert torch.all(w[order][1:] <= w[order][:-1] + 1e-9)


def test_hand_values():
    L = torch.tensor([0.0, 1.0])
    e = float(np.exp(-1 / 0.5))
    assert torch.allclose(kl_weights(L, 0.5), torch.tensor([1 / (1 + e), e / (1 + e)]))
    assert torch.allclose(reverse_kl_weights(L, 0.1), torch.tensor([1 / 0.1, 1 / 1.1]) / (1 / 0.1 + 1 / 1.1))
    a, lam = 0.1, 0.1
    raw = torch.tensor([lam ** (1 / (a - 1)), ((1 - a) + lam) ** (1 / (a - 1))], dtype=torch.float32)
    assert torch.allclose(alpha_weights(L, a, lam), raw / raw.sum())


def test_limits_alpha_to_one_is_kl_and_zero_is_reverse_kl():
    assert torch.allclose(alpha_weights(LOSSES, 1 - 1e-6, 0.3), kl_weights(LOSSES, 0.3), atol=1e-5)
    assert torch.allclose(alpha_weights(LOSSES, 0.0, 0.1), reverse_kl_weights(LOSSES, 0.1))


def test_stable_for_huge_losses():
    L = torch.tensor([0.0, 1e4, 5e3, 1.0])
    for w in (kl_weights(L, 0.1), reverse_kl_weights(L, 0.1), alpha_weights(L, 0.1, 0.1), alpha_weights(L, 3.0, 0.1)):
        assert torch.isfinite(w).all() and w.sum().item() == pytest.approx(1.0, abs=1e-6)
        assert w[0] == w.max()
    with pytest.raises(ValueError, match="NaN"):
        kl_weights(torch.tensor([0.0, float("nan")]))


def test_weights_are_detached_from_the_graph():
    L = torch.tensor([0.2, 0.9], requires_grad=True)
    w = alpha_weights(L, 0.1, 0.1)
    assert not w.requires_grad
    (w * L).sum().backward()
    assert torch.allclose(L.grad, w)  # d/dL (w . L) with w held fixed


@pytest.mark.parametrize("alpha,lam", [(1.0, 0.5), (0.0, 0.1), (0.1, 0.1), (0.5, 0.3)])
def test_closed_forms_solve_the_constrained_problem(alpha, lam):
    """Eq. 7 solved numerically by scipy (SLSQP on the simplex) equals the closed form."""
    tau = equivalent_strength(LOSSES, alpha, lam)
    numeric = solve_numerically(LOSSES, alpha, tau)
    assert np.allclose(numeric, alpha_weights(LOSSES, alpha, lam).double().numpy(), atol=1e-5)


def test_dispatch_and_errors():
    assert torch.allclose(instance_weights(LOSSES, "uniform"), torch.full((5,), 0.2))
    assert torch.allclose(instance_weights(LOSSES, "kl", lam=0.2), kl_weights(LOSSES, 0.2))
    with pytest.raises(ValueError, match="unknown reweighting"):
        instance_weights(LOSSES, "dro")
    with pytest.raises(ValueError, match="lambda"):
        alpha_weights(LOSSES, 0.1, 0.0)


def test_batch_weights_normalise_over_the_whole_minibatch_unless_asked_within_labels():
    """Eqs. 7 and 11: one normalisation over the minibatch (the default); within each label is an option."""
    labels = torch.tensor([0, 0, 0, 1, 1])
    whole = batch_weights(LOSSES, labels)
    assert torch.allclose(whole, alpha_weights(LOSSES, 0.1, 0.1))
    assert whole.sum().item() == pytest.approx(1.0)
    within = batch_weights(LOSSES, labels, within_label=True)
    assert torch.allclose(within, weights_within_labels(LOSSES, labels))
    assert within[:3].sum().item() == pytest.approx(3 / 5) and within[3:].sum().item() == pytest.approx(2 / 5)
    assert not torch.allclose(whole, within)
