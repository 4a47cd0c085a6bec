from dataclasses import replace

import numpy as np
import pytest
import torch

from adlkit.losses import deviation_loss, reference_stats
from adlkit.methods.adl import ADLConfig, adl_step
from adlkit.methods.deviation import (
    DeviationConfig,
    DeviationHeads,
    deviation_step,
    deviation_weights,
    score_deviation,
    train_deviation_heads,
)
from adlkit.metrics import image_auroc


def _toy(seed=0, n=60, contaminated=8):
    """Feature maps where anomalies have a bright patch in channel 0; some anomalies labelled 0."""
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(2 * n + contaminated, 4, 6, 6, generator=g) * 0.3
    f[n:, 0, 2:4, 2:4] += 3.0  # anomalies: the last n + contaminated samples
    labels = torch.cat([torch.zeros(n + contaminated), torch.ones(n)])
    f = torch.cat([f[:n], f[2 * n:], f[n:2 * n]])  # order: clean normals, contaminated, labelled anomalies
    groups = torch.cat([torch.zeros(n), torch.ones(contaminated), torch.full((n,), 2)]).long()
    return f, labels, groups


def test_training_separates_and_is_reproducible():
    f, y, grp = _toy()
    cfg = DeviationConfig(epochs=8, burn_in=2, batch_size=32, lr=1e-2)
    heads, hist = train_deviation_heads(f, y, cfg, grp)
    s = score_deviation(heads, f)
    assert image_auroc(s, (grp > 0).long()) > 0.9
    heads2, hist2 = train_deviation_heads(f, y, cfg, grp)
    assert np.allclose(score_deviation(heads2, f), s) and hist["l_dev"] == hist2["l_dev"]
    assert len(hist["weight_by_group"]) == 8


def test_reweighting_gives_contaminated_samples_less_weight_after_burn_in():
    f, y, grp = _toy()
    cfg = DeviationConfig(epochs=10, burn_in=3, batch_size=32, lr=1e-2, reweight="alpha")
    _, hist = train_deviation_heads(f, y, cfg, grp)
    burn = hist["weight_by_group"][:3]
    assert all(np.allclose(w, 1.0) for w in burn)  # uniform during burn-in
    clean, contaminated = hist["weight_by_group"][-1][0], hist["weight_by_group"][-1][1]
    assert contaminated < 0.5 * clean  # measured 0.26 vs 1.10 on this toy


def test_soft_switch_changes_the_optimised_loss_from_the_first_epoch():
    f, y, grp = _toy()
    cfg = DeviationConfig(epochs=4, burn_in=1, batch_size=32)
    hard = train_deviation_heads(f, y, cfg, grp)[1]
    soft = train_deviation_heads(f, y, replace(cfg, soft=True), grp)[1]
    assert hard["l_dev"][0] != soft["l_dev"][0]  # Algorithm 1: l_soft already during burn-in
    # the authors' code (hard_burn_in): eq. 4 during burn-in, eq. 5 after it
    authors = train_deviation_heads(f, y, replace(cfg, soft=True, hard_burn_in=True), grp)[1]
    assert authors["l_dev"][0] == hard["l_dev"][0] and authors["l_dev"][1:] != hard["l_dev"][1:]


def test_defaults_normalise_weights_over_the_whole_minibatch():
    assert DeviationConfig().within_label is False
    losses = torch.tensor([0.1, 2.0, 0.3, 4.0])
    labels = torch.tensor([0, 0, 1, 1])
    whole = deviation_weights(losses, labels, "alpha", 0.1, 0.1, within_label=False, after_burn_in=True)
    within = deviation_weights(losses, labels, "alpha", 0.1, 0.1, within_label=True, after_burn_in=True)
    assert torch.isclose(whole.sum(), torch.tensor(1.0)) and torch.isclose(within[2:].sum(), torch.tensor(0.5))
    assert not torch.isclose(whole[2:].sum(), torch.tensor(0.5))
    burn_in = deviation_weights(losses, labels, "alpha", 0.1, 0.1, within_label=False, after_burn_in=False)
    assert torch.equal(burn_in, torch.full((4,), 0.25))


def test_the_step_with_its_defaults_is_devnets_loss():
    g = torch.Generator().manual_seed(0)
    s, y = torch.rand(8, generator=g) * 6, torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    mu, sd = torch.tensor(0.1), torch.tensor(0.9)
    terms = deviation_step(s, None, y, mu, sd, None, after_burn_in=True)
    assert torch.allclose(terms["total"], deviation_loss((s - mu) / sd, y, reduction="mean"))
    assert terms["l_bce"] is None and float(terms["bce"]) == 0.0
    with pytest.raises(ValueError, match="logit"):
        deviation_step(s, None, y, mu, sd, None, True, soft=True)


def _as_adl(config):
    """What ``DeviationConfig.as_adl`` was: the heads' switches as ADL's (no segmentation head, BCE on the labels)."""
    return ADLConfig(margin=config.margin, topk_ratio=config.topk_ratio, m=config.m, use_soft=config.soft,
                     use_bce=True, use_seg=False, use_reweight=config.reweight != "uniform",
                     reweight=config.reweight if config.reweight != "uniform" else "alpha", lam=config.lam,
                     alpha=config.alpha, within_label=config.within_label, hard_burn_in=config.hard_burn_in,
                     burn_in=config.burn_in, bce_target="labels", seed=config.seed)


def _train_through_adl_step(features, labels, config, groups):
    """train_deviation_heads as it was before deviation.py owned the step: each step through ADL's adl_step."""
    g = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        heads = DeviationHeads(features.shape[1], config.topk_ratio)
    opt = torch.optim.Adam(heads.parameters(), lr=config.lr)
    labels = labels.float()
    history = {"l_dev": [], "l_bce": [], "weight_by_group": []}
    for epoch in range(config.epochs):
        order = torch.randperm(len(labels), generator=g)
        sums, counts = torch.zeros(3), torch.zeros(3)
        l_dev_sum = l_bce_sum = 0.0
        for start in range(0, len(order), config.batch_size):
            idx = order[start:start + config.batch_size]
            f, y = features[idx], labels[idx]
            s, _ = heads.score(f)
            mu, sigma = reference_stats(config.m, generator=g)
            logit = heads.cls(f)
            terms = adl_step({"score": s, "logit": logit}, y, None, mu, sigma, y, _as_adl(config),
                             epoch >= config.burn_in)
            l_bce = torch.nn.functional.binary_cross_entropy_with_logits(logit.detach(), y, reduction="none")
            opt.zero_grad(set_to_none=True)
            terms["total"].backward()
            opt.step()
            sums.index_add_(0, groups[idx], terms["w_dev"].detach() * len(idx))
            counts.index_add_(0, groups[idx], torch.ones_like(terms["w_dev"]))
            l_dev_sum += terms["l_dev"].sum().item()
            l_bce_sum += l_bce.sum().item()
        history["l_dev"].append(l_dev_sum / len(labels))
        history["l_bce"].append(l_bce_sum / len(labels))
        history["weight_by_group"].append((sums / counts.clamp_min(1)).tolist())
    return heads, history


@pytest.mark.parametrize("changes", [{}, dict(soft=True), dict(reweight="alpha", soft=True), dict(reweight="kl"),
                                     dict(reweight="reverse_kl", within_label=True),
                                     dict(soft=True, hard_burn_in=True, margin=10.0, reweight="alpha")],
                         ids=["DevNet", "soft", "alpha", "kl", "reverse-kl-within", "authors"])
def test_the_heads_train_exactly_as_they_did_through_adls_step(changes):
    """deviation.py owns the step now (ADL imports it); the heads' training is unchanged, bit for bit."""
    f, y, grp = _toy()
    cfg = replace(DeviationConfig(epochs=4, burn_in=2, batch_size=32, lr=1e-2, m=500), **changes)
    heads, hist = train_deviation_heads(f, y, cfg, grp)
    ref, ref_hist = _train_through_adl_step(f, y, cfg, grp)
    assert all(torch.equal(a, b) for a, b in zip(heads.state_dict().values(), ref.state_dict().values()))
    assert all(hist[k] == ref_hist[k] for k in ("l_dev", "l_bce", "weight_by_group"))


def test_training_leaves_the_global_random_state_alone():
    f, y, grp = _toy()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_deviation_heads(f, y, DeviationConfig(epochs=1), grp)
    assert torch.equal(torch.rand(3), expected)
