"""The shared trainable settings between a frozen backbone and ADL's heads (issue: Table 2's question on a CPU)."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from adlkit import training
from adlkit.data import cache_tensors
from adlkit.losses import reference_stats
from adlkit.methods import adl
from adlkit.methods.adl import ADLConfig, ADLModel, adl_step, bce_target, load_checkpoint, score_adl, train_adl
from adlkit.models.backbone import backbone
from adlkit.models.shared import SharedNeck, TopStage

SHARED = ["neck", "top-stage"]


@pytest.fixture(scope="module")
def tile(tile_class):
    return tile_class(seed=1, n_test_per_defect=5)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ADLKIT_CACHE", str(tmp_path_factory.getbasetemp() / "shared_cache"))


def tiny(**changes):
    base = dict(backbone="efficientnet_lite0", pretrained=False, image_size=64, epochs=2, steps_per_epoch=2,
                n_normal=4, n_pseudo=4, burn_in=1, lr=1e-3, m=500, pool_size=16, train_backbone=False)
    return ADLConfig(**{**base, **changes})


def test_the_setting_names_and_their_errors():
    assert ADLConfig().training == "end-to-end"
    assert tiny().training == "frozen"
    assert tiny(shared="neck").training == "neck" and tiny(shared="top-stage").training == "top-stage"
    with pytest.raises(ValueError, match="frozen-backbone setting.*--training neck"):
        ADLConfig(shared="neck")  # end to end already trains everything
    with pytest.raises(ValueError, match="shared must be one of"):
        tiny(shared="adapter")
    with pytest.raises(ValueError, match="top_stage_bn"):
        ADLModel(tiny(shared="top-stage", top_stage_bn="batch"))
    with pytest.raises(ValueError, match="last two levels to be 3 and 4"):
        ADLModel(tiny(shared="top-stage", layers=(2, 3)))


def test_the_top_stage_copy_starts_as_the_backbone_and_trains_apart_from_it():
    net = backbone("efficientnet_lite0", pretrained=False, frozen=True)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        f2, f3, f4 = net(x)
        top = TopStage(net).eval()  # the backbone now also returns the last stage's input
        levels = net(x)
        out = top(levels)
    assert len(levels) == 4 and levels[2].shape[1] == 192 and torch.equal(levels[3], f4)
    assert torch.equal(out[0], f2) and torch.equal(out[1], f3)
    assert torch.allclose(out[2], f4, atol=1e-5)  # the copy of blocks[6] on its input is level 4
    assert all(p.requires_grad for p in top.parameters()) and not any(p.requires_grad for p in net.parameters())
    with torch.no_grad():
        next(top.parameters()).add_(1.0)
        assert not torch.allclose(top(levels)[2], f4)  # a copy: the backbone is untouched
        assert torch.equal(net(x)[3], f4)
    with pytest.raises(ValueError, match="top_input=True"):
        top([f2, f3, f4])
    rn = backbone("resnet18", pretrained=False, frozen=True)
    with torch.no_grad():
        g = rn(x)
        assert torch.allclose(TopStage(rn).eval()(rn(x))[2], g[2], atol=1e-5)  # ResNet: layer4 on layer3's output


def test_the_neck_is_its_equation():
    neck = SharedNeck([5, 7, 3], width=6).eval()
    maps = [torch.randn(2, 5, 8, 8), torch.randn(2, 7, 4, 4), torch.randn(2, 3, 2, 2)]
    cat = torch.cat([maps[0]] + [torch.nn.functional.interpolate(m, size=(8, 8), mode="bilinear", align_corners=False)
                                 for m in maps[1:]], 1)
    with torch.no_grad():
        expected = neck.conv(torch.relu(neck.bn(neck.reduce(cat))))
        (got,) = neck(maps)
    assert got.shape == (2, 6, 8, 8) and torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("shared", SHARED)
def test_every_loss_term_trains_the_shared_part_and_none_reaches_the_backbone(tile, shared):
    train, _ = tile
    cfg = tiny(shared=shared)
    model = ADLModel(cfg).train()
    data = adl.prepare_data(cfg, model, train, "cpu")
    batch = adl.sample_batch(data, cfg, training.generators(0))
    mu, sd = reference_stats(cfg.m, generator=torch.Generator().manual_seed(0))
    for term, switches in {"dev": dict(use_soft=False, use_bce=False, use_seg=False),  # eq. 4
                           "soft": dict(use_soft=True, use_bce=True, use_seg=False),   # eq. 5
                           "bce": dict(use_soft=False, use_bce=True, use_seg=False),
                           "seg": dict(use_soft=False, use_bce=False, use_seg=True)}.items():
        c = replace(cfg, **switches)
        model.zero_grad(set_to_none=True)
        out = adl.forward(model, batch["inputs"], c.image_size, True)
        target = bce_target(c, 0, out["score"], batch["labels"])
        terms = adl_step(out, batch["labels"], batch["masks"], mu, sd, target, c, True)
        loss = {"dev": terms["dev"], "soft": terms["dev"], "bce": terms["bce"], "seg": terms["seg"]}[term]
        loss.backward()
        grads = [p.grad for p in model.shared.parameters()]
        assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0, (shared, term)
        assert all(p.grad is None for p in model.backbone.parameters()), (shared, term)


@pytest.mark.parametrize("shared", SHARED)
def test_training_moves_the_shared_part_only_and_records_the_setting(tile, shared):
    train, _ = tile
    cfg = tiny(shared=shared)
    with training.seeded(cfg.seed):
        before = ADLModel(cfg)
    model, hist = train_adl(cfg, train)
    assert hist["training"] == shared and hist["train_backbone"] is False
    for a, b in zip(before.backbone.state_dict().values(), model.backbone.state_dict().values()):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(before.shared.state_dict().values(),
                                                       model.shared.state_dict().values()))
    model.train()
    assert model.shared.training and not model.backbone.training
    if shared == "top-stage":  # ImageNet's BatchNorm statistics are kept ("eval"); "train" updates them
        bns = [m for m in model.shared.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert bns and not any(m.training for m in bns)
        for a, b in zip(before.shared.state_dict().items(), model.shared.state_dict().values()):
            if "running" in a[0]:
                assert torch.equal(a[1], b), a[0]
        m2, _ = train_adl(replace(cfg, top_stage_bn="train"), train)
        assert any(not torch.equal(a, b) for k, a, b in zip(before.shared.state_dict(), before.shared.state_dict().values(),
                                                               m2.shared.state_dict().values()) if "running_mean" in k)


@pytest.mark.parametrize("shared", SHARED)
def test_resume_equals_an_uninterrupted_run(tile, tmp_path, shared):
    train, _ = tile
    cfg = tiny(shared=shared)
    full, hist_full = train_adl(cfg, train, checkpoint_dir=tmp_path / "a")
    train_adl(cfg, train, checkpoint_dir=tmp_path / "b", stop_after_epoch=0)
    resumed, hist_res = train_adl(cfg, train, checkpoint_dir=tmp_path / "b", resume=True)
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert hist_full["loss"] == hist_res["loss"]
    loaded = load_checkpoint(tmp_path / "a" / "last.pt")
    assert loaded["config"].training == shared
    for a, b in zip(full.state_dict().values(), loaded["model"].state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("shared", SHARED)
def test_with_a_shared_part_bce_and_segmentation_move_the_score(tile, shared):
    """Frozen, "DL-CE" scores exactly as "DL" and "Proposed" as "Wt-SoftDL-CE" (test_adl.py); with a shared
    part each of those terms trains features the score head reads, so the scores differ."""
    train, test = tile
    cfg = tiny(shared=shared, epochs=2, steps_per_epoch=3)
    scores = {name: score_adl(train_adl(cfg.ablation(name), train)[0], test)["scores"]
              for name in ("DL", "DL-CE", "Wt-SoftDL-CE", "Proposed")}
    assert not np.allclose(scores["DL"], scores["DL-CE"])
    assert not np.allclose(scores["Wt-SoftDL-CE"], scores["Proposed"])
    assert spearmanr(scores["DL"], scores["DL-CE"])[0] < 1


@pytest.mark.parametrize("shared", SHARED)
def test_prediction_reads_the_cached_levels_through_the_shared_part(tile, shared):
    train, test = tile
    model, _ = train_adl(tiny(shared=shared, epochs=1), train)
    images = cache_tensors(test).images[:6]
    got = adl.predict(model, images)
    with torch.no_grad():
        fresh = model(images.float() / 255)
    assert torch.allclose(got["score"], fresh["score"], rtol=1e-3, atol=1e-4)
    assert torch.allclose(got["logit"], fresh["logit"], rtol=1e-3, atol=1e-4)
