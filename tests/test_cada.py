from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from sklearn.metrics import roc_auc_score

from adlkit import data as D
from adlkit.data.datasets import relabel
from adlkit.methods import cada
from adlkit.methods.cada import VARIANTS, CADAConfig
from adlkit.metrics import image_auroc
from adlkit.models.rd import ReverseDistillation, anomaly_map, gaussian_smooth, image_score

CLASSES = ("tile", "capsule")


# ----------------------------------------------------------------------------- maps and scores (models/rd.py)
@pytest.mark.parametrize("sigma", [1.0, 2.5, 4.0])
def test_gaussian_smooth_equals_scipy_mirror_per_map(sigma):
    maps = torch.rand(3, 40, 48, generator=torch.Generator().manual_seed(0))
    out = gaussian_smooth(maps, sigma)
    assert out.shape == maps.shape
    for m, o in zip(maps, out):
        ref = gaussian_filter(m.double().numpy(), sigma, mode="mirror", truncate=4.0)
        np.testing.assert_allclose(o.double().numpy(), ref, atol=1e-5)


def test_gaussian_smooth_sigma_zero_is_the_identity():
    maps = torch.rand(2, 9, 11, generator=torch.Generator().manual_seed(1))
    assert torch.equal(gaussian_smooth(maps, 0.0), maps)
    with pytest.raises(ValueError, match="B, H, W"):
        gaussian_smooth(maps[0], 1.0)


def test_image_score_is_the_max_or_the_mean_of_the_top_percent():
    maps = torch.rand(3, 100, 100, generator=torch.Generator().manual_seed(2))
    assert torch.equal(image_score(maps, 0), maps.flatten(1).max(1).values)
    top100 = maps.flatten(1).sort(1, descending=True).values[:, :100].mean(1)  # 1% of 10,000 pixels
    assert torch.allclose(image_score(maps, 1.0), top100)
    assert not torch.allclose(image_score(maps, 1.0), image_score(maps, 0))
    with pytest.raises(ValueError, match="top_percent"):
        image_score(maps, 101)


# ----------------------------------------------------------------------------- reverse distillation
def _rd_levels(generator, channels=(24, 40, 112)):
    return [torch.randn(2, c, s, s, generator=generator) for c, s in zip(channels, (16, 8, 4))]


def test_reverse_distillation_shapes_and_channel_check():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        rd = ReverseDistillation((24, 40, 112)).eval()
    levels = _rd_levels(torch.Generator().manual_seed(0))
    decoded, b = rd(levels)
    assert [d.shape for d in decoded] == [e.shape for e in levels]
    assert b.shape == (2, 224, 2, 2)  # 2 x C3 channels, stride 32 of 64 px
    with pytest.raises(ValueError, match=r"expects \[24, 40, 112\]"):
        rd(_rd_levels(torch.Generator().manual_seed(0), (24, 40, 96)))
    with pytest.raises(ValueError, match="three encoder levels"):
        ReverseDistillation((24, 40))
    assert ReverseDistillation((8, 16, 32), bottleneck=48)(_rd_levels(torch.Generator(), (8, 16, 32)))[1].shape == (2, 48, 2, 2)


def test_anomaly_map_of_a_perfect_copy_is_zero_and_of_the_opposite_is_two_per_level():
    levels = _rd_levels(torch.Generator().manual_seed(3))
    same = anomaly_map(levels, [e.clone() for e in levels], (64, 64), sigma=1.0)
    assert same.shape == (2, 64, 64) and same.abs().max() < 1e-5
    opposite = anomaly_map(levels, [-e for e in levels], (64, 64), sigma=1.0)
    assert torch.allclose(opposite, torch.full_like(opposite, 6.0), atol=1e-5)  # sum over 3 levels of 1 - (-1)


# ----------------------------------------------------------------------------- statistics and alignment
def test_a_map_aligned_with_its_own_mean_and_max_has_mean_0_and_max_1():
    maps = torch.rand(5, 16, 16, generator=torch.Generator().manual_seed(4)) * torch.tensor([0.1, 1, 3, 10, 50]).view(-1, 1, 1)
    stats = cada.map_stats(maps)
    assert torch.allclose(stats["u"], maps.mean((1, 2))) and torch.equal(stats["gamma"], maps.amax((1, 2)))
    assert torch.allclose(stats["sigma"], maps.flatten(1).std(1))
    aligned, clamped = cada.align(maps, stats["u"], stats["gamma"])
    assert aligned.shape == maps.shape and not clamped.any()
    assert torch.allclose(aligned.mean((1, 2)), torch.zeros(5), atol=1e-5)
    assert torch.allclose(aligned.amax((1, 2)), torch.ones(5), atol=1e-5)


def test_aligned_score_is_the_aligned_raw_score():
    g = torch.Generator().manual_seed(5)
    maps = torch.rand(6, 20, 20, generator=g) * 3
    u, gamma = torch.rand(6, generator=g), 1.5 + torch.rand(6, generator=g)  # any (u, gamma), not the maps' own
    lhs = image_score(cada.align(maps, u, gamma)[0], 1.0)  # s_img(A_hat), the top 4 of 400 pixels
    rhs = cada.align(image_score(maps, 1.0), u, gamma)[0]  # (s_img(A) - u) / (gamma - u)
    assert torch.allclose(lhs, rhs, atol=1e-5)
    assert torch.allclose(rhs, (image_score(maps, 1.0) - u) / (gamma - u))


def test_align_clamps_a_too_small_scale_and_reports_it():
    values = torch.tensor([2.0, 2.0, 2.0])
    u, gamma = torch.tensor([1.0, 1.0, 1.0]), torch.tensor([3.0, 1.0005, 0.5])  # scale 2, 5e-4 (< eps), -0.5
    aligned, clamped = cada.align(values, u, gamma, eps=1e-3)
    assert clamped.tolist() == [False, True, True]
    assert torch.allclose(aligned, torch.tensor([0.5, 1000.0, 1000.0]))  # (2 - 1) / max(scale, eps)
    assert torch.isfinite(cada.align(values, u, u)[0]).all()  # gamma == u: no division by zero


def test_class_stats_hand_numbers_and_a_class_without_images():
    stats = {"u": torch.tensor([0.1, 0.3, 1.0, 2.0, 3.0]), "gamma": torch.tensor([0.5, 0.7, 4.0, 5.0, 9.0])}
    ids = torch.tensor([0, 0, 1, 1, 1])
    out = cada.class_stats(stats, ids, 2)
    assert torch.allclose(out, torch.tensor([[0.2, 0.6], [2.0, 6.0]]))
    with pytest.raises(ValueError, match="'capsule'"):
        cada.class_stats(stats, ids, 3, ["tile", "washer", "capsule"])


def test_class_aware_alignment_repairs_the_pooled_ranking_by_hand():
    # class a: normals .1 .2, anomalies .3 .4; class b: the same + 1. Each class is ranked perfectly, but
    # pooled the anomalies .3 and .4 score below the normals 1.1 and 1.2: 4 of 16 normal-anomaly pairs
    # are misordered, AUROC 12 / 16 = 0.75.
    scores = torch.tensor([0.1, 0.2, 0.3, 0.4, 1.1, 1.2, 1.3, 1.4])
    labels = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    ids = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    a, b = ids.numpy() == 0, ids.numpy() == 1
    assert image_auroc(scores[a], labels[a]) == 1.0 and image_auroc(scores[b], labels[b]) == 1.0
    assert image_auroc(scores, labels) == pytest.approx(0.75)
    # made-up training maps (2 per class): class a's have means .05 .05 and maxima .2 .3, so (u_a, gamma_a)
    # = (.05, .25); class b's are the same + 1, so (u_b, gamma_b) = (1.05, 1.25)
    train_a = torch.tensor([[[0.0, 0.0], [0.0, 0.2]], [[0.0, 0.0], [-0.1, 0.3]]])
    train_maps, train_ids = torch.cat([train_a, train_a + 1]), torch.tensor([0, 0, 1, 1])
    uc = cada.class_stats(cada.map_stats(train_maps), train_ids, 2, ["a", "b"])
    assert torch.allclose(uc, torch.tensor([[0.05, 0.25], [1.05, 1.25]]))
    aligned, clamped = cada.align(scores, uc[ids, 0], uc[ids, 1])
    assert not clamped.any()
    assert torch.allclose(aligned, torch.tensor([0.25, 0.75, 1.25, 1.75] * 2), atol=1e-5)
    assert image_auroc(aligned, labels) == 1.0
    assert image_auroc(aligned[a], labels[a]) == 1.0 and image_auroc(aligned[b], labels[b]) == 1.0


# ----------------------------------------------------------------------------- the report
def test_unified_report_rows_mean_pooled_and_gap():
    g = torch.Generator().manual_seed(6)
    n, names = 12, np.array(["a"] * 6 + ["b"] * 6)
    labels = np.array([0, 0, 0, 1, 1, 1] * 2)
    maps = torch.rand(n, 8, 8, generator=g) + torch.tensor([0.0] * 6 + [1.0] * 6).view(-1, 1, 1)
    masks = torch.zeros(n, 8, 8, dtype=torch.bool)
    for i in np.flatnonzero(labels):
        masks[i, 2:4, 3:6] = True
        maps[i, 2:4, 3:6] += 0.5 * torch.rand(2, 3, generator=g)
    raw = image_score(maps, 1.0)
    params = {"unaligned": torch.stack([torch.zeros(n), torch.ones(n)], 1),
              "class_aware": torch.tensor([[0.5, 1.0]] * 6 + [[1.5, 2.0]] * 6)}
    scores = {v: cada.align(raw, *params[v].unbind(1))[0] for v in params}
    clamped = {"unaligned": torch.zeros(n, dtype=torch.bool), "class_aware": torch.tensor([True, True] + [False] * 10)}
    result = {"maps": maps, "masks": masks, "labels": labels, "classes": names, "scores": scores, "params": params,
              "clamped": clamped, "classifier_accuracy": 0.5, "eps": 1e-3}
    rows = cada.unified_report(result, variants=("unaligned", "class_aware"))
    assert [(r["variant"], r["category"]) for r in rows] == [(v, c) for v in ("unaligned", "class_aware")
                                                            for c in ("pooled", "a", "b", "mean")]
    for v in ("unaligned", "class_aware"):
        by = {r["category"]: r for r in rows if r["variant"] == v}
        s = scores[v].numpy()
        assert by["mean"]["image_AUROC"] == pytest.approx((by["a"]["image_AUROC"] + by["b"]["image_AUROC"]) / 2)
        assert by["a"]["image_AUROC"] == pytest.approx(roc_auc_score(labels[:6], s[:6]))
        assert by["pooled"]["image_AUROC"] == pytest.approx(roc_auc_score(labels, s))
        assert all(r["gap"] == pytest.approx(by["mean"]["image_AUROC"] - by["pooled"]["image_AUROC"]) for r in by.values())
        # pixels are ranked on the aligned maps, pooled over every image
        aligned_maps = cada.align(maps, *params[v].unbind(1))[0]
        assert by["pooled"]["pixel_AUROC"] == pytest.approx(roc_auc_score(masks.numpy().ravel(), aligned_maps.numpy().ravel()))
        assert [by[c]["n_test"] for c in ("pooled", "a", "b", "mean")] == [12, 6, 6, 12]
        assert all(r["method"] == f"cada:{v}" and r["classifier_accuracy"] == 0.5 for r in by.values())
        assert all(r["clamped"] == int(clamped[v].sum()) for r in by.values())
    ua = {r["category"]: r for r in rows if r["variant"] == "unaligned"}
    ca = {r["category"]: r for r in rows if r["variant"] == "class_aware"}
    assert ca["pooled"]["image_AUROC"] > ua["pooled"]["image_AUROC"]  # class b's maps sit 1 higher: aligning helps
    assert ca["a"]["image_AUROC"] == ua["a"]["image_AUROC"]  # a positive affine map per class keeps its ranking


# ----------------------------------------------------------------------------- stage 2 alone: shifted classes
def _two_shifted_classes(n, generator):
    """n bottleneck-like inputs [8, 2, 2] per class: class 0 around +1, class 1 around -1."""
    ids = torch.arange(2 * n) // n
    x = (1 - 2 * ids.float()).view(-1, 1, 1, 1) + 0.3 * torch.randn(2 * n, 8, 2, 2, generator=generator)
    return x, ids


def test_regressor_recovers_shifted_class_statistics_and_raises_pooled_auroc():
    U, G = torch.tensor([0.2, 1.2]), torch.tensor([0.5, 1.5])  # class 1's (u, gamma) = class 0's + 1
    g = torch.Generator().manual_seed(0)
    x, ids = _two_shifted_classes(40, g)
    stats = {"u": U[ids] + 0.02 * torch.randn(80, generator=g), "gamma": G[ids] + 0.02 * torch.randn(80, generator=g),
             "sigma": torch.full((80,), 0.1)}
    config = CADAConfig(head_iters=300, head_lr=0.05, log_every=100, seed=0)
    heads, history = cada.train_heads(config, x, stats, ids, 2)
    assert set(heads) == {"regressor", "regressor_sigma", "classifier"} and len(history["regressor"]) == 3
    assert history["regressor"][-1] < history["regressor"][0] / 2
    xt, idt = _two_shifted_classes(10, g)  # held-out images
    with torch.no_grad():
        pred = heads["regressor"](xt)
        assert (heads["classifier"](xt).argmax(1) == idt).all()
    # measured (seeds 0-3): max |error| 0.03-0.09 for u and for gamma, against a class shift of 1.0
    assert (pred[:, 0] - U[idt]).abs().max() < 0.2 and (pred[:, 1] - G[idt]).abs().max() < 0.2
    for c in (0, 1):
        assert (pred[idt == c].mean(0) - torch.stack([U[c], G[c]])).abs().max() < 0.15
    # test scores: normals just below their class's gamma, anomalies above it
    labels = torch.tensor([0] * 5 + [1] * 5 + [0] * 5 + [1] * 5)
    offset = torch.where(labels == 1, 0.15 + 0.3 * torch.rand(20, generator=g), -0.1 + 0.1 * torch.rand(20, generator=g))
    raw = G[idt] + offset
    unaligned = image_auroc(raw, labels)
    aligned, clamped = cada.align(raw, pred[:, 0], pred[:, 1])
    aligned_auroc = image_auroc(aligned, labels)
    assert not clamped.any()
    # measured (seeds 0-3): unaligned pooled 0.75 (class 0's anomalies under class 1's normals), aligned 1.0
    assert unaligned <= 0.8
    assert aligned_auroc >= 0.95 and aligned_auroc - unaligned >= 0.15


def test_heads_depend_on_the_seed_not_on_the_global_rng():
    g = torch.Generator().manual_seed(1)
    x, ids = _two_shifted_classes(10, g)
    stats = {"u": torch.rand(20, generator=g), "gamma": 1 + torch.rand(20, generator=g), "sigma": torch.rand(20, generator=g)}
    config = CADAConfig(head_iters=5, log_every=5, seed=0)  # dropout 0.25, as the paper
    runs = []
    for global_seed in (1, 2):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(global_seed)
            runs.append(cada.train_heads(config, x, stats, ids, 2)[0])
    for name in runs[0]:
        for (k, a), b in zip(runs[0][name].state_dict().items(), runs[1][name].state_dict().values()):
            assert torch.equal(a, b), f"{name}.{k}"
    # each head has its own streams: the classifier trained alone is the classifier trained with the others
    alone = cada.train_heads(config, x, stats, ids, 2, names=("classifier",))[0]
    assert list(alone) == ["classifier"]
    for a, b in zip(alone["classifier"].state_dict().values(), runs[0]["classifier"].state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="unknown head"):
        cada.train_heads(config, x, stats, ids, 2, names=("regresor",))


# ----------------------------------------------------------------------------- the whole method, small and real
CFG = CADAConfig(image_size=64, rd_iters=40, head_iters=40, log_every=20, train_per_class=15, pretrained=False)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return D.synthetic(tmp_path_factory.mktemp("cada") / "s", image_size=64, seed=0, n_train=15, n_test_good=4,
                       n_test_per_defect=2, classes=CLASSES, verbose=False)


@pytest.fixture(scope="module")
def datasets(root):
    return D.MVTecLike(root, list(CLASSES), "train", 64), D.MVTecLike(root, list(CLASSES), "test", 64)


def _run(train, test, global_seed=0):
    """run_cada with the global RNG set to ``global_seed`` (restored after), which must not matter."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(global_seed)
        return cada.run_cada(CFG, train, test)


@pytest.fixture(scope="module")
def trained(datasets):
    """One run on tile + capsule, and the RD weights as train_rd returned them (before the heads trained)."""
    train, test = datasets
    after_rd, real = {}, cada.train_rd

    def spy(*args, **kwargs):
        encoder, rd, history = real(*args, **kwargs)
        after_rd.update({k: v.clone() for k, v in rd.state_dict().items()})
        return encoder, rd, history

    mp = pytest.MonkeyPatch()
    mp.setattr(cada, "train_rd", spy)
    try:
        result = _run(train, test)
    finally:
        mp.undo()
    return result, after_rd


def test_run_cada_reports_every_variant_with_finite_metrics(trained, datasets):
    result, _ = trained
    n = len(datasets[1])
    assert result["maps"].shape == (n, 64, 64) and result["masks"].shape == (n, 64, 64)
    for v in VARIANTS:
        rows = {r["category"]: r for r in result["rows"] if r["variant"] == v}
        assert set(rows) == {"pooled", "capsule", "tile", "mean"}, v
        for r in rows.values():
            for key in ("image_AUROC", "image_AUPR", "pixel_AUROC", "pixel_AUPR", "gap", "classifier_accuracy"):
                assert np.isfinite(r[key]), (v, r["category"], key)
            assert 0 <= r["image_AUROC"] <= 1 and 0 <= r["pixel_AUROC"] <= 1
        assert result["scores"][v].shape == (n,) and torch.isfinite(result["scores"][v]).all()
        assert result["params"][v].shape == (n, 2)
    assert torch.equal(result["scores"]["unaligned"], result["raw_scores"])  # (u, gamma) = (0, 1)
    # class_aware uses the true class's (u_c, gamma_c), the same for every image of a class
    model = result["model"]
    assert model.classes == ["capsule", "tile"]
    assert torch.equal(result["params"]["class_aware"], model.stats[result["class_ids"]])
    assert len(model.history["rd"]["loss"]) == 2 and model.history["rd"]["iteration"] == [20, 40]
    assert all(len(h) == 2 for h in model.history["heads"].values())


def test_rd_weights_do_not_change_while_the_heads_train(trained):
    result, after_rd = trained
    now = result["model"].rd.state_dict()
    assert set(now) == set(after_rd)
    for k, v in after_rd.items():
        assert torch.equal(now[k], v), k  # running BatchNorm statistics included
    assert not any(p.requires_grad for p in result["model"].rd.parameters())


def test_renaming_the_classes_changes_nothing_for_cada(trained, datasets):
    result, _ = trained
    train, test = datasets
    new = {"tile": "aa_tile", "capsule": "zz_capsule"}  # the sorted order of the classes flips

    def rename(ds):
        return ds.with_samples([relabel(s, class_name=new[s.class_name]) for s in ds.samples])

    renamed = _run(rename(train), rename(test))
    assert renamed["model"].classes == ["aa_tile", "zz_capsule"]
    assert {r["category"] for r in renamed["rows"]} == {"pooled", "aa_tile", "zz_capsule", "mean"}
    for v in ("unaligned", "cada", "cada_sigma"):
        assert torch.equal(renamed["scores"][v], result["scores"][v]), v
    assert torch.equal(renamed["params"]["cada"], result["params"]["cada"])
    assert torch.equal(renamed["scores"]["class_aware"], result["scores"]["class_aware"])  # same images per class


def test_a_seed_reproduces_a_run(trained, datasets):
    result, _ = trained
    again = _run(*datasets, global_seed=1)  # the same config; only the caller's global RNG state differs
    for v in VARIANTS:
        assert torch.equal(again["scores"][v], result["scores"][v]), v


def test_a_resumed_rd_equals_an_uninterrupted_one(trained, datasets, tmp_path):
    result, after_rd = trained
    train = cada.per_class_subset(datasets[0], CFG.train_per_class)
    ckpt = tmp_path / "run"
    cada.train_rd(replace(CFG, rd_iters=20), train, checkpoint_dir=ckpt)  # interrupted after one chunk
    assert (ckpt / "rd.pt").exists()
    with pytest.raises(FileExistsError, match="resume"):
        cada.train_rd(CFG, train, checkpoint_dir=ckpt)
    with pytest.raises(ValueError, match="rd_lr"):
        cada.train_rd(replace(CFG, rd_lr=1e-3), train, checkpoint_dir=ckpt, resume=True)
    _, rd, history = cada.train_rd(CFG, train, checkpoint_dir=ckpt, resume=True)  # iterations 20-39
    state = rd.state_dict()
    for k, v in after_rd.items():  # the 40 iterations of the module's uninterrupted run
        assert torch.equal(state[k], v), k
    assert history["loss"] == result["model"].history["rd"]["loss"]


def test_resumed_heads_are_reused_only_for_the_same_rd(trained, datasets, tmp_path, capsys):
    result, _ = trained
    ckpt = tmp_path / "fit"
    short = replace(CFG, rd_iters=20)
    first = cada.fit(short, datasets[0], checkpoint_dir=ckpt)
    again = cada.fit(short, datasets[0], checkpoint_dir=ckpt, resume=True)  # both stages loaded, nothing trained
    for k, h in first.heads.items():
        for a, b in zip(h.state_dict().values(), again.heads[k].state_dict().values()):
            assert torch.equal(a, b)
    # RD trained further: the saved heads belong to the old RD, so they are trained again, equal to a fresh run's
    longer = cada.fit(CFG, datasets[0], checkpoint_dir=ckpt, resume=True)
    assert "trained again" in capsys.readouterr().out
    for k, h in result["model"].heads.items():
        for a, b in zip(h.state_dict().values(), longer.heads[k].state_dict().values()):
            assert torch.equal(a, b)
    with pytest.raises(ValueError, match="dropout"):
        cada.fit(replace(CFG, dropout=0.5), datasets[0], checkpoint_dir=ckpt, resume=True)


def test_cada_refuses_inputs_it_cannot_align(trained, root, datasets):
    result, _ = trained
    test = datasets[1]
    tile_only = D.MVTecLike(root, "tile", "train", 64)
    with pytest.raises(ValueError, match="only"):
        cada.train_rd(CFG, tile_only)
    washer = test.with_samples([relabel(s, class_name="washer") if s.class_name == "tile" else s for s in test.samples])
    with pytest.raises(ValueError, match="'washer'"):
        cada.score_cada(result["model"], washer)
    with pytest.raises(ValueError, match="image_size"):
        cada.train_rd(CFG, D.MVTecLike(root, list(CLASSES), "train", 48))
    with pytest.raises(ValueError, match="image_size"):
        cada.score_cada(result["model"], D.MVTecLike(root, list(CLASSES), "test", 48))
