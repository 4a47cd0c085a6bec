"""AHL (Zhu, Ding, Tian & Pang, CVPR 2024) on cached features: tasks, meta-gradient, importance weights."""

import dataclasses

import numpy as np
import pytest
import torch

from adlkit.methods import ahl

CFG = ahl.AHLConfig(epochs=2, steps_per_epoch=2, base_steps=2, history_k=1, psi_steps=3, m=200)


def _normal(n=30, c=8, seed=0):
    """Three well-separated groups of feature maps [n, c, 2, 2]."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[4.0] + [0.0] * (c - 1), [0.0, 4.0] + [0.0] * (c - 2), [0.0, 0.0, 4.0] + [0.0] * (c - 3)])
    which = torch.arange(n) % 3
    return centres[which][:, :, None, None] + 0.1 * torch.randn(n, c, 2, 2, generator=g), which


def test_hadg_tasks_pair_clusters_split_shots_and_use_different_generators():
    normal, _ = _normal()
    ep = ahl.hadg(normal, n_shots=6, config=CFG, seed=0)
    assert ep.n_tasks == CFG.n_clusters * (CFG.n_clusters - 1) == 6
    assert sorted(ep.pairs) == [(a, b) for a in range(3) for b in range(3) if a != b]
    n, first_shot = ep.n_normal, ep.n_normal * (1 + len(ahl.GENERATORS))
    for t, (a, b) in enumerate(ep.pairs):
        for which, cluster, gen in (("support", a, ep.generators[t][0]), ("query", b, ep.generators[t][1])):
            sets = ep.support if which == "support" else ep.query
            normals = sets[ahl.NORMAL][0][t, :sets[ahl.NORMAL][1][t]].tolist()
            pseudo = sets[ahl.PSEUDO][0][t, :sets[ahl.PSEUDO][1][t]].tolist()
            assert normals and pseudo
            origin = normals + [(j - n) % n for j in pseudo]  # each pseudo copy's normal image
            assert set(origin) == set(np.flatnonzero(ep.clusters == cluster).tolist())  # the cluster's members
            assert len(origin) == len(set(origin))  # each member once: kept or swapped
            g = ahl.GENERATORS.index(gen)
            assert all((j - n) // n == g for j in pseudo)  # copies by this set's generator
        assert ep.generators[t][0] != ep.generators[t][1]
        s_half, q_half = ep.shot_halves[t]
        assert not set(s_half) & set(q_half) and sorted(s_half + q_half) == list(range(6))
        seen = ep.support[ahl.SEEN][0][t, :ep.support[ahl.SEEN][1][t]].tolist()
        assert seen == [first_shot + j for j in s_half]
    # the clusters are k-means' (three separated groups come back as three clusters)
    _, truth = _normal()
    assert len({(int(k), int(t)) for k, t in zip(ep.clusters, truth)}) == 3
    one = ahl.hadg(normal, n_shots=1, config=CFG, seed=0)
    assert all(s == q == [0] for s, q in one.shot_halves)  # one shot: in both sets
    again = ahl.hadg(normal, n_shots=6, config=CFG, seed=0)
    assert again.shot_halves == ep.shot_halves and again.generators == ep.generators


def test_hadg_errors():
    normal, _ = _normal(n=4)
    with pytest.raises(ValueError, match="cannot fill 3 clusters"):
        ahl.hadg(normal, 2, CFG, 0)
    with pytest.raises(ValueError, match="at least one labelled anomaly"):
        ahl.hadg(_normal()[0], 0, CFG, 0)
    with pytest.raises(ValueError, match="at least 2"):
        dataclasses.replace(CFG, n_clusters=1)


def test_meta_gradient_is_one_minus_beta_hessian_times_query_gradient_on_a_quadratic():
    """d L_q(theta - beta grad L_s(theta)) / d theta = (I - beta H_s) grad L_q(theta')."""
    g = torch.Generator().manual_seed(0)
    A = torch.randn(4, 4, generator=g)
    H = A @ A.T + torch.eye(4)  # support loss 0.5 theta' H theta - b' theta
    b, q = torch.randn(4, generator=g), torch.randn(4, generator=g)
    beta = 0.05
    theta = torch.randn(1, 4, generator=g, requires_grad=True)
    adapted = ahl.adapt(theta, lambda th, _: 0.5 * (th @ H * th).sum(1) - th @ b, [None], beta, optimizer="sgd")
    loss_q = ((adapted - q) ** 2).sum()  # query loss, gradient 2 (theta' - q)
    (grad,) = torch.autograd.grad(loss_q, theta)
    theta_prime = theta.detach() - beta * (theta.detach() @ H - b)
    expected = (torch.eye(4) - beta * H) @ (2 * (theta_prime - q))[0]
    assert torch.allclose(grad[0], expected, atol=1e-5)
    first = ahl.adapt(theta, lambda th, _: 0.5 * (th @ H * th).sum(1) - th @ b, [None], beta, create_graph=False,
                      optimizer="sgd")
    (grad1,) = torch.autograd.grad(((first - q) ** 2).sum(), theta)
    assert torch.allclose(grad1[0], 2 * (theta_prime - q)[0], atol=1e-5)  # first order drops the Hessian


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_for_the_deviation_head_second_order_equals_first_order(optimizer):
    """phi is piecewise linear in theta: the inner gradient does not move with theta, so the meta-gradient
    is the query gradient at the adapted weights (for SGD and Adam base steps alike)."""
    normal, _ = _normal()
    f = ahl.tokens(normal[:12]).unsqueeze(0).expand(2, -1, -1, -1)
    y = torch.tensor([0.0] * 6 + [1.0] * 6).expand(2, -1)
    gen_state = torch.Generator().manual_seed(0).get_state()

    def meta_grad(create_graph):
        theta = ahl.init_theta(8, 0).expand(2, -1).clone().requires_grad_(True)
        gen = torch.Generator()
        gen.set_state(gen_state)

        def loss_fn(th, _):
            return ahl.devnet_loss(ahl.phi_scores(th, f), y, CFG, gen).sum(1)

        adapted = ahl.adapt(theta, loss_fn, [None, None], 1e-2, create_graph=create_graph, optimizer=optimizer)
        (grad,) = torch.autograd.grad(loss_fn(adapted, None).sum(), theta)
        return grad

    assert torch.allclose(meta_grad(True), meta_grad(False), atol=1e-6)


def _toy_task_bank(n_shots=6):
    normal, _ = _normal()
    features = ahl.FeatureBank(normal, normal.unsqueeze(0).expand(3, -1, -1, -1, -1) + 1.0, normal[:8] + 2.0,
                               [str(i) for i in range(8)])
    return features, ahl.token_bank(features, torch.arange(n_shots)), ahl.hadg(normal, n_shots, CFG, 0)


def test_base_models_measurably_leave_theta_g():
    """Eq. 1 as section 4.1 trains it (Adam, lr 2e-4, the summed loss, ``base_steps`` steps): every theta_i
    moves at least half of steps x lr x sqrt(#weights) away from theta_g (Adam moves each weight by about lr
    per step) and by more than 0.5% of ||theta_g||. Three SGD steps of 2e-4 on the batch mean (the code
    before) left these theta_i within 0.23% of theta_g."""
    config = ahl.AHLConfig(m=200)  # the defaults
    _, bank, ep = _toy_task_bank()
    theta_g = ahl.init_theta(bank.shape[-1], 0).requires_grad_(True)
    w = torch.full((ep.n_tasks,), 1 / ep.n_tasks)
    _, _, theta_i = ahl.meta_step(theta_g, bank, ep, w, config, torch.Generator().manual_seed(0))
    moved = (theta_i.detach() - theta_g.detach()).norm(dim=1)
    relative = moved / theta_g.detach().norm()
    assert (relative > 0.005).all(), relative
    steps = getattr(config, "base_steps", getattr(config, "inner_steps", 0))
    lr = getattr(config, "base_lr", getattr(config, "inner_lr", 0.0))
    assert lr == pytest.approx(2e-4)  # section 4.1
    assert (moved >= 0.5 * steps * lr * theta_g.numel() ** 0.5).all(), moved
    assert torch.allclose(ahl.drift(theta_i, theta_g), relative)
    # base_lr = 0 (or no steps): the base models are theta_g
    _, _, same = ahl.meta_step(theta_g, bank, ep, w, dataclasses.replace(config, base_lr=0.0),
                               torch.Generator().manual_seed(0))
    assert torch.equal(same.detach(), theta_g.detach().expand_as(same))


def test_adam_base_step_moves_every_weight_by_the_learning_rate_and_ignores_the_loss_scale():
    theta = torch.tensor([[0.5, -1.0, 2.0]], requires_grad=True)
    target = torch.tensor([[0.0, 0.0, 0.0]])

    def loss(scale):
        return lambda th, _: scale * ((th - target) ** 2).sum(1)

    one = ahl.adapt(theta, loss(1.0), [None], 1e-3, create_graph=False, optimizer="adam")
    assert torch.allclose(theta.detach() - one.detach(), 1e-3 * theta.detach().sign(), atol=1e-6)  # step 1: lr sign(g)
    many = ahl.adapt(theta, loss(1.0), [None] * 5, 1e-3, create_graph=False, optimizer="adam")
    scaled = ahl.adapt(theta, loss(1000.0), [None] * 5, 1e-3, create_graph=False, optimizer="adam")
    assert torch.allclose(many, scaled, atol=1e-7)  # a sum or a mean: Adam's step is the same
    sgd = ahl.adapt(theta, loss(1.0), [None], 1e-3, create_graph=False, optimizer="sgd")
    assert torch.allclose(sgd, theta.detach() * (1 - 2e-3))
    with pytest.raises(ValueError, match="optimizer"):
        ahl.adapt(theta, loss(1.0), [None], 1e-3, optimizer="rmsprop")


def test_base_loss_is_the_sum_of_eq_1_or_the_codes_mean():
    _, bank, ep = _toy_task_bank()
    batch = ahl.sample_balanced(ep.support, 12, torch.Generator().manual_seed(0))
    theta = ahl.init_theta(bank.shape[-1], 0).expand(ep.n_tasks, -1)
    total = ahl.task_losses(bank, CFG, torch.Generator().manual_seed(1))(theta, batch)
    mean = ahl.task_losses(bank, dataclasses.replace(CFG, base_loss="mean"), torch.Generator().manual_seed(1))(
        theta, batch)
    assert torch.allclose(total, 12 * mean)
    with pytest.raises(ValueError, match="base_loss"):
        dataclasses.replace(CFG, base_loss="max")


def test_psi_has_the_papers_fc_layer_of_12_or_the_codes_none():
    paper, code = ahl.ImportanceLSTM(6), ahl.ImportanceLSTM(6, fc=0)
    assert paper.lstm.hidden_size == 6 and paper.lstm.num_layers == 2 and paper.lstm.bidirectional
    assert (paper.hidden.in_features, paper.hidden.out_features) == (12, 12)
    assert (paper.fc.in_features, paper.fc.out_features) == (12, 6)
    assert code.hidden is None and code.fc.in_features == 12
    assert paper(torch.randn(4, 5, 6)).shape == code(torch.randn(4, 5, 6)).shape == (4, 6)
    assert ahl.AHLConfig().psi_lr == pytest.approx(2e-3)


def test_train_ahl_records_w_and_the_drift_per_epoch():
    features, _, _ = _toy_task_bank(4)
    out = ahl.train_ahl(dataclasses.replace(CFG, epochs=3), features, torch.arange(4), theta0=ahl.init_theta(8, 0))
    h = out["history"]
    assert len(h["w"]) == len(h["drift"]) == 3 and all(len(d) == out["episodes"].n_tasks for d in h["drift"])
    assert min(min(d) for d in h["drift"]) > 0
    still = ahl.train_ahl(dataclasses.replace(CFG, epochs=2, base_steps=0), features, torch.arange(4),
                          theta0=ahl.init_theta(8, 0))
    assert max(max(d) for d in still["history"]["drift"]) == 0


def test_phi_scores_equal_a_conv_abs_topk_head():
    from adlkit.models.heads import TopKScoreHead

    f = torch.randn(5, 8, 4, 4)
    head = TopKScoreHead(8, 0.1)
    theta = torch.cat([head.conv.weight.detach().flatten(), head.conv.bias.detach()])
    expected, _ = head(f)
    assert torch.allclose(ahl.phi_scores(theta[None], ahl.tokens(f))[0], expected.detach(), atol=1e-6)
    both = ahl.phi_scores(torch.stack([theta, -theta]), ahl.tokens(f)[None].expand(2, -1, -1, -1))
    assert torch.allclose(both, expected.detach().expand(2, -1), atol=1e-6)  # |.| is even in theta


def test_importance_weights_sum_to_one_and_fall_as_the_error_rises():
    y = torch.tensor([0.0, 0.0, 1.0, 1.0])
    good = torch.tensor([0.0, 0.1, 6.0, 5.5])  # normals low, anomalies past the margin (clipped: no penalty)
    bad = torch.tensor([3.0, 2.0, 1.0, 0.5])
    middling = (good + bad) / 2
    predicted = torch.stack([good, middling, bad], 1)
    c = torch.ones(4, 3)
    keep = torch.ones(4, 3, dtype=torch.bool)
    w, r = ahl.importance_weights(predicted, y, c, keep, margin=5.0)
    assert torch.isclose(w.sum(), torch.tensor(1.0))
    assert r[0] < r[1] < r[2] and w[0] > w[1] > w[2]
    assert r[0] == pytest.approx(((0.0 - 0) ** 2 + (0.02 - 0) ** 2 + 0 + 0) / 4)
    manual = ((bad / 5).clamp(0, 1) - y) ** 2
    assert r[2] == pytest.approx(float(manual.mean()))
    # D'_i: a dropped sample does not count; c_j weighs the rest
    keep[0, 2] = False
    c[3, 2] = 0.5
    _, r2 = ahl.importance_weights(predicted, y, c, keep, margin=5.0)
    assert r2[2] == pytest.approx(float((manual[1] + manual[2] + 0.5 * manual[3]) / 3))
    assert torch.allclose(torch.softmax(-r2, 0), ahl.importance_weights(predicted, y, c, keep)[0])


AUTHORS = dataclasses.replace(CFG, variant="authors", authors_inner_steps=2, authors_query_batches=2)


def test_authors_variant_tasks_use_list_prefixes_shared_shots_and_one_generator():
    normal, _ = _normal()
    ep = ahl.hadg(normal, n_shots=6, config=AUTHORS, seed=0)
    n = ep.n_normal
    for t, (a, b) in enumerate(ep.pairs):
        assert ep.generators[t][0] == ep.generators[t][1]
        s_half, q_half = ep.shot_halves[t]
        assert len(set(s_half) & set(q_half)) == 2 and len(q_half) == 3 + 2  # the other half + two support shots
        for which, cluster in (("support", a), ("query", b)):
            sets = ep.support if which == "support" else ep.query
            normals = sets[ahl.NORMAL][0][t, :sets[ahl.NORMAL][1][t]].tolist()
            pseudo = sets[ahl.PSEUDO][0][t, :sets[ahl.PSEUDO][1][t]].tolist()
            origin = sorted(normals + [(j - n) % n for j in pseudo])
            assert origin == list(range((ep.clusters == cluster).sum()))  # the first n images, not the members


def test_authors_importance_weights_groups_and_counts():
    predicted = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]])
    y = torch.tensor([0.0, 1.0, 1.0, 1.0])
    group = torch.tensor([ahl.NORMAL, ahl.SEEN, ahl.PSEUDO, ahl.SEEN])
    sets = [torch.tensor([0, 1, 2]), torch.tensor([0, 3])]
    w, r = ahl.importance_weights_authors(predicted, y, group, sets)
    # model 0: normal err 0 + 0 over 2; seen (0)^2 in set 0, (0.5)^2 in set 1, over 2; pseudo 0 over 1
    assert r[0] == pytest.approx(0.5 * 0 + 0.5 * 0 + (0 + 0.25) / 2)
    # model 1: normal 1 + 1 over 2; seen 1 + 0 over 2; pseudo 0
    assert r[1] == pytest.approx(0.5 * 2 / 2 + (1 + 0) / 2)
    assert torch.allclose(w, torch.softmax(-r, 0)) and w[0] > w[1]


def test_authors_variant_makes_one_outer_step_per_epoch_and_never_the_last():
    normal, _ = _normal()
    shots = torch.arange(4)
    bank = ahl.FeatureBank(normal, normal.unsqueeze(0).expand(3, -1, -1, -1, -1) + 1.0, normal[:8] + 2.0,
                           [str(i) for i in range(8)])
    theta0 = ahl.init_theta(8, 0)
    one = ahl.train_ahl(dataclasses.replace(AUTHORS, epochs=1), bank, shots, theta0=theta0)
    assert torch.equal(one["theta_g"], theta0)  # the first epoch's gradient waits for an epoch that never comes
    two = ahl.train_ahl(dataclasses.replace(AUTHORS, epochs=2), bank, shots, theta0=theta0)
    step = (two["theta_g"] - theta0).abs()
    assert 0 < step.max() <= AUTHORS.outer_lr * 1.01  # one Adam step: at most lr per weight
    paper = ahl.train_ahl(dataclasses.replace(CFG, epochs=2), bank, shots, theta0=theta0)
    assert (paper["theta_g"] - theta0).abs().max() > step.max()  # the paper's loop: steps_per_epoch steps
