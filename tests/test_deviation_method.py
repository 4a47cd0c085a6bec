from dataclasses import replace

import numpy as np
import torch

from adlkit.methods.deviation import DeviationConfig, score_deviation, train_deviation_heads
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
    assert DeviationConfig().within_label is False and DeviationConfig().as_adl().within_label is False
    assert DeviationConfig(within_label=True, hard_burn_in=True).as_adl().hard_burn_in


def test_training_leaves_the_global_random_state_alone():
    f, y, grp = _toy()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_deviation_heads(f, y, DeviationConfig(epochs=1), grp)
    assert torch.equal(torch.rand(3), expected)
