import copy
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from adlkit import data as D
from adlkit import features
from adlkit.data import cache_tensors
from adlkit.losses import cosine_reconstruction_loss
from adlkit.methods import ckaad
from adlkit.methods.adl import featurize
from adlkit.methods.ckaad import ABLATIONS, CKAADConfig, CKAADData
from adlkit.models.ckaad import ImageDiscriminator, PatchDiscriminator
from adlkit.models.rd import anomaly_map

# EfficientNet-Lite0's levels 1-3 at 64 px: channels 24/40/112, sizes 16/8/4
CHANNELS, SIZES = (24, 40, 112), (16, 8, 4)
CFG = CKAADConfig(pretrained=False, image_size=64, steps=10, log_every=5, n_normal=4, n_anomalous=4, n_warps=2)


def _levels(generator, b=3):
    return [torch.randn(b, c, s, s, generator=generator) for c, s in zip(CHANNELS, SIZES)]


def _seeded(make, seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


def _discriminator(kind):
    """A seeded patch or image D whose last layer is scaled up, so that its scores spread around the margin
    (freshly initialised, they are all near 0 and every energy is about the same)."""
    d = _seeded(lambda: PatchDiscriminator(CHANNELS) if kind == "patch" else ImageDiscriminator(CHANNELS, SIZES))
    with torch.no_grad():
        for last in ([net[-1] for net in d.nets] if kind == "patch" else [d.head[-1]]):
            last.weight.mul_(300.0 if kind == "patch" else 6.0)
    return d


def _E(s, y, m=5.0):
    """The energy by hand: (1 - y)|s| + y max(0, m - |s|)."""
    return (1 - y) * s.abs() + y * torch.clamp(m - s.abs(), min=0)


def _by_hand(outputs, y, objective="energy", m=5.0):
    """A patch D's per-level maps: mean over images and positions, summed over levels; an image D's [B]: mean."""
    def one(s):
        if objective == "gan":  # BCE with logits: -log sigmoid(s) for y = 1, -log(1 - sigmoid(s)) for y = 0
            return F.softplus(-s).mean() if y == 1 else F.softplus(s).mean()
        return _E(s, y, m).mean()

    return sum(one(s) for s in outputs) if isinstance(outputs, list) else one(outputs)


def _equal_states(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _snapshot(module):
    return copy.deepcopy(module.state_dict())


@pytest.fixture(scope="module")
def tile(tmp_path_factory):
    root = D.synthetic(tmp_path_factory.mktemp("ckaad") / "s", image_size=64, seed=0, n_train=15, n_test_good=4,
                       n_test_per_defect=2, classes=("tile",), verbose=False)
    return root, D.MVTecLike(root, "tile", "train", 64), D.MVTecLike(root, "tile", "test", 64)


@pytest.fixture(scope="module")
def trained(tile):
    """A "+patch" model trained 10 steps on the tile class."""
    _, train, _ = tile
    return ckaad.train_ckaad(CFG.ablation("+patch"), train)[0]


# ----------------------------------------------------------------------------- eq. 8: the discriminator's loss
@pytest.mark.parametrize("gamma", [0.5, 0.2])
@pytest.mark.parametrize("kind", ["patch", "image"])
def test_discriminator_loss_is_eq_8_by_hand(kind, gamma):
    g = torch.Generator().manual_seed(1)
    f_n, f_a, recon = _levels(g), _levels(g), _levels(g, 6)
    d = _discriminator(kind)
    config = replace(CFG, gamma=gamma)
    out_n, out_a, out_r = d(f_n), d(f_a), d(recon)
    if kind == "patch":
        assert [tuple(s.shape) for s in out_n] == [(3, h, h) for h in SIZES]
        assert [tuple(s.shape) for s in out_r] == [(6, h, h) for h in SIZES]
    else:
        assert out_n.shape == (3,) and out_r.shape == (6,)
    scores = torch.cat([o.flatten() for o in (out_n, out_a, out_r) for o in (o if kind == "patch" else [o])])
    assert (scores.abs() > 5).any() and (scores.abs() < 5).any()  # both sides of the margin are exercised
    expected = _by_hand(out_n, 0) + (1 - gamma) * _by_hand(out_a, 1) + gamma * _by_hand(out_r, 1)
    loss = ckaad.discriminator_loss(d, f_n, f_a, recon, config)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # discriminator_energy itself is the hand reduction (per-level means summed, not one mean over all positions)
    for out, y in ((out_n, 0), (out_a, 1), (out_r, 1)):
        assert ckaad.discriminator_energy(out, y, config).item() == pytest.approx(_by_hand(out, y).item(), rel=1e-5)
    if kind == "patch":
        pooled = _E(torch.cat([s.flatten() for s in out_n]), 0).mean()
        assert ckaad.discriminator_energy(out_n, 0, config).item() != pytest.approx(pooled.item(), rel=1e-3)
    # gamma moves weight between real anomalies and reconstructions: the two gammas give different losses
    other = ckaad.discriminator_loss(d, f_n, f_a, recon, replace(config, gamma=1 - gamma + 0.1))
    assert other.item() != pytest.approx(loss.item(), rel=1e-4)


@pytest.mark.parametrize("kind", ["patch", "image"])
def test_discriminator_loss_with_the_gan_objective_is_bce_with_logits(kind):
    g = torch.Generator().manual_seed(2)
    f_n, f_a, recon = _levels(g), _levels(g), _levels(g, 6)
    d = _discriminator(kind)
    config = replace(CFG, objective="gan", gamma=0.2)
    # eq. 7, the vanilla GAN: normal features (0) against reconstructions (1); no f_a term and no gamma
    expected = _by_hand(d(f_n), 0, "gan") + _by_hand(d(recon), 1, "gan")
    loss = ckaad.discriminator_loss(d, f_n, f_a, recon, config)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    energy_loss = ckaad.discriminator_loss(d, f_n, f_a, recon, replace(config, objective="energy"))
    assert loss.item() != pytest.approx(energy_loss.item(), rel=1e-3)


@pytest.mark.parametrize("kind", ["patch", "image"])
def test_the_gan_rows_d_loss_does_not_change_when_the_coarse_anomalies_change(kind):
    """Table 3's "GAN" (eq. 7): D is not informed of the anomalies, so its loss on a batch depends on the
    normal features and the reconstructions only; the knowledge-aware rows' loss (eq. 8) does depend on them."""
    g = torch.Generator().manual_seed(3)
    f_n, f_a, recon = _levels(g), _levels(g), _levels(g, 6)
    other_a = [3 * f + 1 for f in _levels(g)]
    d = _discriminator(kind)
    gan = CFG.ablation("gan")
    assert gan.objective == "gan" and gan.uses_d
    assert ckaad.discriminator_loss(d, f_n, f_a, recon, gan).item() == \
        ckaad.discriminator_loss(d, f_n, other_a, recon, gan).item()
    aware = CFG.ablation("+image")
    assert ckaad.discriminator_loss(d, f_n, f_a, recon, aware).item() != pytest.approx(
        ckaad.discriminator_loss(d, f_n, other_a, recon, aware).item(), rel=1e-4)


def test_the_gan_rows_d_step_does_not_change_when_the_coarse_anomalies_change_with_g_frozen(tile):
    """Inside ckaad_step: with G's reconstructions held fixed (an AE that returns its input's normal half for every
    input), the D update of the "gan" row is the same for two different anomaly batches."""
    _, train, _ = tile
    config = CFG.ablation("gan")
    model = ckaad.build_model(config, "cpu")
    g = torch.Generator().manual_seed(4)
    f_n = _levels(g, 4)
    fixed = [torch.cat([f, f]) for f in _levels(g, 4)]
    model.ae.forward = lambda levels: ([r.clone().requires_grad_() for r in fixed], None)
    states = []
    for f_a in (_levels(g, 4), [5 * f for f in _levels(g, 4)]):
        m = copy.deepcopy(model)
        m.ae.forward = model.ae.forward
        opt_d = torch.optim.Adam(m.d_image.parameters(), lr=1e-2)
        opt_g = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.0)
        out = ckaad.ckaad_step(m, f_n, f_a, opt_g, opt_d, config)
        states.append((out["d"], _snapshot(m.d_image)))
    assert states[0][0] == states[1][0]
    assert _equal_states(states[0][1], states[1][1])


def test_the_d_loss_on_detached_reconstructions_puts_no_gradient_into_the_ae():
    config = CFG.ablation("both")
    model = ckaad.build_model(config, "cpu")
    g = torch.Generator().manual_seed(3)
    f_n, f_a = _levels(g, 2), _levels(g, 2)
    both = [torch.cat([a, b]) for a, b in zip(f_n, f_a)]
    with torch.no_grad():
        recon = model.ae(both)[0]
    sum(ckaad.discriminator_loss(d, f_n, f_a, recon, config) for d in model.discriminators()).backward()
    assert all(p.grad is None for p in model.ae.parameters())
    assert all(p.grad is not None for d in model.discriminators() for p in d.parameters())
    # the check can fail: reconstructions that keep their graph do send gradient into the AE
    ckaad.discriminator_loss(model.d_patch, f_n, f_a, model.ae(both)[0], config).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.ae.parameters())


def _step_setup(row, lr_g=None, seed=4):
    config = CFG.ablation(row)
    if lr_g is not None:
        config = replace(config, lr_g=lr_g)
    model = ckaad.build_model(config, "cpu")
    opt_g = torch.optim.Adam(model.ae.parameters(), lr=config.lr_g, betas=config.betas)
    d_params = [p for d in model.discriminators() for p in d.parameters()]
    opt_d = torch.optim.Adam(d_params, lr=config.lr_d, betas=config.betas) if d_params else None
    g = torch.Generator().manual_seed(seed)
    return config, model, opt_g, opt_d, _levels(g, 2), _levels(g, 2)


def test_ckaad_step_with_lr_g_zero_changes_d_but_not_the_ae():
    config, model, opt_g, opt_d, f_n, f_a = _step_setup("both", lr_g=0.0)
    ae0, dp0, di0 = _snapshot(model.ae), _snapshot(model.d_patch), _snapshot(model.d_image)
    out = ckaad.ckaad_step(model, f_n, f_a, opt_g, opt_d, config)
    assert out["d"] > 0 and out["adv"] > 0
    assert _equal_states(_snapshot(model.ae), ae0)
    assert not _equal_states(_snapshot(model.d_patch), dp0) and not _equal_states(_snapshot(model.d_image), di0)


def test_inside_ckaad_step_the_ae_has_no_gradient_when_d_updates_and_d_is_unchanged_by_the_g_step(monkeypatch):
    config, model, opt_g, opt_d, f_n, f_a = _step_setup("both")
    seen = {}
    original = opt_d.step

    def step(*args, **kwargs):
        result = original(*args, **kwargs)
        seen["ae_grads"] = [p.grad for p in model.ae.parameters()]
        seen["d"] = [_snapshot(d) for d in model.discriminators()]
        return result

    monkeypatch.setattr(opt_d, "step", step)
    d0 = [_snapshot(d) for d in model.discriminators()]
    ae0 = _snapshot(model.ae)
    ckaad.ckaad_step(model, f_n, f_a, opt_g, opt_d, config)
    assert "d" in seen  # the D step ran
    assert all(grad is None for grad in seen["ae_grads"])  # the D step put no gradient into the AE
    assert not any(_equal_states(a, b) for a, b in zip(seen["d"], d0))  # D moved in its step ...
    after = [_snapshot(d) for d in model.discriminators()]
    assert all(_equal_states(a, b) for a, b in zip(after, seen["d"]))  # ... and not in G's step
    assert not _equal_states(_snapshot(model.ae), ae0)  # while G's step moved the AE
    assert all(p.grad is not None for p in model.ae.parameters())


def test_the_d_step_clips_the_gradient_norm(monkeypatch):
    config, model, opt_g, opt_d, f_n, f_a = _step_setup("both")
    config = replace(config, clip_d=1e-3)  # far below the raw norm, so the clip must act
    norms = []
    original = opt_d.step

    def step(*args, **kwargs):
        norms.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for g in opt_d.param_groups for p in g["params"]])))
        return original(*args, **kwargs)

    monkeypatch.setattr(opt_d, "step", step)
    ckaad.ckaad_step(model, f_n, f_a, opt_g, opt_d, config)
    assert len(norms) == 1 and norms[0].item() == pytest.approx(1e-3, rel=1e-3)


# ----------------------------------------------------------------------------- eqs. 2, 4, 9, 13: G's loss
def test_generator_loss_without_d_is_the_reconstruction_loss_exactly():
    g = torch.Generator().manual_seed(5)
    f_n, recon_n = _levels(g), _levels(g)
    terms = ckaad.generator_loss(f_n, recon_n, CFG.ablation("recon"))
    assert torch.equal(terms["total"], cosine_reconstruction_loss(f_n, recon_n))
    assert torch.equal(terms["rec"], terms["total"]) and terms["adv"].item() == 0 and terms["sub"].item() == 0


@pytest.mark.parametrize("which", ["patch", "image", "both"])
def test_generator_loss_with_d_outputs_adds_0_02_times_their_normal_energy(which):
    g = torch.Generator().manual_seed(6)
    f_n, recon_n, recon = _levels(g), _levels(g), _levels(g, 6)
    patch, image = _discriminator("patch"), _discriminator("image")
    ds = {"patch": [patch], "image": [image], "both": [patch, image]}
    config = CFG.ablation("both")
    assert config.adv_weight == 0.02
    outs = [d(recon) for d in ds[which]]
    terms = ckaad.generator_loss(f_n, recon_n, config, outs)
    adv = sum(_by_hand(o, 0) for o in outs)
    assert adv.item() > 0
    assert terms["adv"].item() == pytest.approx(adv.item(), rel=1e-5)
    rec = cosine_reconstruction_loss(f_n, recon_n)
    assert terms["total"].item() == pytest.approx((rec + 0.02 * adv).item(), rel=1e-5)


@pytest.mark.parametrize("lam", [1.0, 0.3])
def test_reconsub_subtracts_lambda_times_the_anomalous_reconstruction_loss(lam):
    g = torch.Generator().manual_seed(7)
    f_n, recon_n, f_a, recon_a = _levels(g), _levels(g), _levels(g, 2), _levels(g, 2)
    config = replace(CFG.ablation("reconsub"), lam=lam)
    terms = ckaad.generator_loss(f_n, recon_n, config, (), f_a, recon_a)
    rec_n, rec_a = cosine_reconstruction_loss(f_n, recon_n), cosine_reconstruction_loss(f_a, recon_a)
    assert terms["total"].item() == pytest.approx((rec_n - lam * rec_a).item(), rel=1e-5)
    assert terms["sub"].item() == pytest.approx(rec_a.item(), rel=1e-6)


def test_the_reconstruction_row_ignores_the_anomalies():
    g = torch.Generator().manual_seed(8)
    f_n, recon_n = _levels(g), _levels(g)
    config = CFG.ablation("recon")
    losses = {ckaad.generator_loss(f_n, recon_n, config, (), _levels(g, b), _levels(g, b))["total"].item()
              for b in (1, 2, 5)}
    assert len(losses) == 1

    def train_with(f_a, row):
        config, model, opt_g, opt_d, f_n, _ = _step_setup(row, seed=9)
        for _ in range(2):
            ckaad.ckaad_step(model, f_n, f_a, opt_g, opt_d, config)
        return _snapshot(model.ae)

    a1, a2 = _levels(torch.Generator().manual_seed(10), 2), _levels(torch.Generator().manual_seed(11), 2)
    assert _equal_states(train_with(a1, "recon"), train_with(a2, "recon"))
    # the test can fail: ReconSub does use the anomalous batch
    assert not _equal_states(train_with(a1, "reconsub"), train_with(a2, "reconsub"))


# ----------------------------------------------------------------------------- eq. 14: maps and scores
def test_k_pixels_and_sigma_scale_with_the_image_size():
    assert CKAADConfig(image_size=256).k_pixels == 100
    assert CKAADConfig(image_size=128).k_pixels == 25
    assert CKAADConfig(image_size=64).k_pixels == 6  # 100 / 16 = 6.25


def test_predict_maps_and_top_k_scores_by_hand(trained, tile):
    _, _, test = tile
    cache = cache_tensors(test)
    out = ckaad.predict(trained, cache.images)
    n = len(test)
    assert out["maps"].shape == (n, 64, 64) and out["scores"].shape == (n,)
    assert trained.sigma == 1.0  # 4 at 256 px
    levels = featurize(trained.backbone, cache.images)
    with torch.no_grad():
        maps = anomaly_map(levels, trained.ae(levels)[0], (64, 64), 1.0)
    assert torch.allclose(out["maps"], maps, atol=1e-5)
    k = trained.config.k_pixels
    by_hand = torch.stack([m.flatten().sort(descending=True).values[:k].mean() for m in out["maps"]])
    assert torch.allclose(out["scores"], by_hand)
    assert not torch.allclose(out["scores"], out["maps"].flatten(1).max(1).values)  # not the max
    result = ckaad.score_ckaad(trained, test)
    assert np.allclose(result["scores"], out["scores"].numpy())
    assert result["image_AUROC"] == pytest.approx(roc_auc_score(result["labels"], result["scores"]))


# ----------------------------------------------------------------------------- the warp bank and batches
def test_the_warp_bank_is_seeded_image_major_and_n_warps_per_image(tile):
    _, train, _ = tile
    config = replace(CFG, n_warps=3)
    model = ckaad.build_model(config, "cpu")
    a, b = ckaad.prepare_data(config, model, train, "cpu"), ckaad.prepare_data(config, model, train, "cpu")
    c = ckaad.prepare_data(replace(config, seed=1), model, train, "cpu")
    assert a.paired
    for la, lb, lc, ln in zip(a.anomalous, b.anomalous, c.anomalous, a.normal):
        assert la.shape == (3 * len(train), *ln.shape[1:])
        assert torch.equal(la, lb)
        assert not torch.allclose(la, lc)
    # alpha = 0 makes every warp the image itself: entry i * n_warps + w of the bank is image i
    flat = ckaad.prepare_data(replace(config, warp_alpha=0.0), model, train, "cpu")
    for la, ln in zip(flat.anomalous, a.normal):
        assert torch.allclose(la, ln.repeat_interleave(3, dim=0), atol=1e-4)
        assert not torch.allclose(la, ln.repeat(3, 1, 1, 1), atol=1e-2)  # not warp-major


def test_sample_batch_pairs_each_anomaly_with_a_warp_of_its_own_image():
    n, n_warps = 7, 3
    data = CKAADData(normal=[torch.arange(n).float().view(n, 1, 1, 1)],
                     anomalous=[torch.arange(n * n_warps).float().view(-1, 1, 1, 1)], paired=True)
    config = replace(CFG, n_warps=n_warps, n_normal=5, n_anomalous=3)
    gen = torch.Generator().manual_seed(0)
    warps = set()
    for _ in range(50):
        f_n, f_a = ckaad.sample_batch(data, config, gen)
        src, bank = f_n[0].flatten().long(), f_a[0].flatten().long()
        assert len(src) == 5 and len(bank) == 3
        assert torch.equal(bank // n_warps, src[:3])
        warps |= set((bank % n_warps).tolist())
    assert warps == {0, 1, 2}
    # reproducible from the generator
    b1 = ckaad.sample_batch(data, config, torch.Generator().manual_seed(1))
    b2 = ckaad.sample_batch(data, config, torch.Generator().manual_seed(1))
    assert torch.equal(b1[0][0], b2[0][0]) and torch.equal(b1[1][0], b2[1][0])


# ----------------------------------------------------------------------------- training: resume, rows, data checks
def test_a_resumed_run_equals_an_uninterrupted_one(tile, tmp_path):
    _, train, _ = tile
    config = replace(CFG.ablation("+patch"), steps=20, log_every=10)
    first, h1 = ckaad.train_ckaad(config, train, checkpoint_dir=tmp_path)
    ae20 = _snapshot(first.ae)
    with pytest.raises(FileExistsError):
        ckaad.train_ckaad(config, train, checkpoint_dir=tmp_path)
    resumed, h2 = ckaad.train_ckaad(replace(config, steps=40), train, checkpoint_dir=tmp_path, resume=True)
    straight, h3 = ckaad.train_ckaad(replace(config, steps=40), train)
    assert _equal_states(_snapshot(resumed.ae), _snapshot(straight.ae))
    assert _equal_states(_snapshot(resumed.d_patch), _snapshot(straight.d_patch))
    assert not _equal_states(_snapshot(resumed.ae), ae20)  # the resumed run did train on
    assert h2["step"] == h3["step"] == [10, 20, 30, 40]
    for k in ("rec", "adv", "d"):
        assert h2[k] == h3[k]


@pytest.mark.parametrize("row", list(ABLATIONS))
def test_every_ablation_row_trains_and_scores(row, tile):
    _, train, test = tile
    config = CFG.ablation(row)
    assert config.ablation_name() == row
    result = ckaad.run_ckaad(config, train, test)
    model = result["model"]
    assert (model.d_patch is not None) == (config.uses_d and config.patch_d)
    assert (model.d_image is not None) == (config.uses_d and config.image_d)
    assert result["history"]["step"] == [5, 10]
    for key in ("image_AUROC", "pixel_AUROC", "pixel_AUPRO"):
        assert np.isfinite(result[key]), key
    assert len(result["scores"]) == len(test)


def test_eval_at_scores_the_same_run_at_each_step_as_runs_of_that_length(tile):
    """A learning curve from one run: the entry at step s equals a separate run of s steps, and the last equals
    the run's own result; the discriminator statistics come with it."""
    _, train, test = tile
    config = replace(CFG.ablation("+patch"), steps=10, log_every=5)
    long = ckaad.run_ckaad(config, train, test, eval_at=[5, 10])
    assert [e["step"] for e in long["curve"]] == [5, 10]
    short = ckaad.run_ckaad(replace(config, steps=5), train, test)
    for key in ("image_AUROC", "pixel_AUROC", "pixel_AUPRO", "pixel_AUPRO_per_image"):
        assert long["curve"][0][key] == short[key], key
        assert long["curve"][1][key] == long[key], key
    assert long["curve"][0]["d_patch_normal"] == short["discriminator"]["d_patch_normal"]
    assert {"d_patch_normal", "d_patch_anomalous", "d_patch_recon", "d_patch_auroc"} <= set(long["discriminator"])
    assert long["curve"][0]["train_seconds"] <= long["curve"][1]["train_seconds"] <= long["history"]["seconds"] + 0.01
    with pytest.raises(ValueError, match="multiples of log_every"):
        ckaad.run_ckaad(config, train, test, eval_at=[3])


def test_aupro_per_image_is_the_mean_of_each_anomalous_images_own_aupro():
    """The authors' code's PRO (per anomalous image) against adlkit's default (one curve over the dataset)."""
    from adlkit import metrics

    rng = np.random.default_rng(0)
    masks = np.zeros((3, 16, 16), dtype=bool)
    masks[0, 2:6, 2:6] = True
    masks[1, 8:12, 9:14] = True  # image 2 is normal: no term of its own, and its pixels no false positives
    maps = rng.random((3, 16, 16)) + masks * np.array([1.0, 0.2, 0.0])[:, None, None]
    maps[2] += 0.8  # a normal image with high scores hurts the dataset-level AUPRO, not the per-image one
    per = metrics.aupro_per_image(maps, masks)
    assert per == pytest.approx(np.mean([metrics.aupro(maps[i:i + 1], masks[i:i + 1]) for i in (0, 1)]))
    assert per == pytest.approx(metrics.aupro_per_image(maps[:2], masks[:2]))
    assert per > metrics.aupro(maps, masks) + 0.05
    with pytest.raises(ValueError):
        metrics.aupro_per_image(maps[2:], masks[2:])


def test_unknown_row_and_objective_are_refused():
    with pytest.raises(ValueError) as err:
        CKAADConfig().ablation("nope")
    assert all(repr(name) in str(err.value) for name in ABLATIONS)
    with pytest.raises(ValueError, match="objective"):
        ckaad.build_model(replace(CFG, objective="hinge"), "cpu")


def test_real_anomalies_take_the_shots_out_of_the_test_set(tile):
    _, train, test = tile
    config = replace(CFG.ablation("+patch"), anomalies="real", shots=2)
    result = ckaad.run_ckaad(config, train, test)
    assert len(result["test"]) == len(test) - 2 and len(result["labels"]) == len(test) - 2
    assert int(result["labels"].sum()) == int(np.sum(test.labels)) - 2
    test_paths = {str(s.path) for s in result["test"].samples}
    shots, _, _ = D.few_shot(test, 2, seed=config.seed)
    assert not test_paths & {str(s.path) for s in shots.samples}
    model = ckaad.build_model(config, "cpu")
    data = ckaad.prepare_data(config, model, train, "cpu", shots)
    assert not data.paired and len(data.anomalous[0]) == 2
    with pytest.raises(ValueError, match="shots"):
        ckaad.run_ckaad(replace(config, shots=0), train, test)
    with pytest.raises(ValueError, match="shots"):
        ckaad.prepare_data(config, model, train, "cpu")


def test_a_dataset_at_another_size_is_refused(tile):
    root, train, _ = tile
    with pytest.raises(ValueError, match="image_size"):
        ckaad.train_ckaad(replace(CFG, image_size=128), train)
    with pytest.raises(ValueError, match="image_size"):
        ckaad.train_ckaad(CFG, D.MVTecLike(root, "tile", "train", 96))


# ----------------------------------------------------------------------------- other coarse anomalies
def test_perlin_bank_is_seeded_and_paired_and_fresh_warps_train(tile):
    _, train, test = tile
    cfg = CKAADConfig(image_size=64, pretrained=False, anomalies="perlin", n_warps=2, steps=4, log_every=2)
    model = ckaad.build_model(cfg, "cpu")
    a = ckaad.prepare_data(cfg, model, train, "cpu")
    features._MEMO.clear()  # make the bank again, not from the process's memo
    b = ckaad.prepare_data(cfg, model, train, "cpu")
    assert a.paired and len(a.anomalous[0]) == 2 * len(a.normal[0])
    assert all(torch.equal(x, y) for x, y in zip(a.anomalous, b.anomalous))
    r = ckaad.run_ckaad(cfg, train, test)
    assert np.isfinite(r["image_AUROC"]) and np.isfinite(r["pixel_AUROC"])
    fresh = replace(cfg, anomalies="elastic", fresh_warps=True)
    data = ckaad.prepare_data(fresh, model, train, "cpu")
    assert data.anomalous == [] and data.images is not None
    gens = [torch.Generator().manual_seed(0) for _ in range(2)]
    f_n, f_a = ckaad.sample_batch(data, fresh, gens[0], model.backbone, gens[1])
    assert [f.shape for f in f_a] == [f.shape for f in f_n]  # 16 fresh warps of the 16 batch images
    r = ckaad.run_ckaad(fresh, train, test)
    assert np.isfinite(r["image_AUROC"])
    with pytest.raises(ValueError, match="fresh_warps"):
        ckaad.prepare_data(replace(cfg, fresh_warps=True), model, train, "cpu")
