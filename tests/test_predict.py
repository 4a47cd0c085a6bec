"""Seeing what a model found: `run --save-models`, `predict` on a folder (scores.csv, overlays, an HTML gallery
sorted by score with false alarms and misses flagged), `report --html`, checked in headless Chromium."""
import csv
import json
import os
import shutil

import numpy as np
import pytest

from adlkit import book, cli, gallery, metrics, visual

KNN_FAST = ["--image-size", "64", "--device", "cpu"]


def test_overlay_outlines_the_defect_and_scales_the_map():
    image = np.full((6, 6, 1), 100, np.uint8)
    amap = np.zeros((6, 6), np.float32)
    amap[2:4, 2:4] = 1.0
    mask = np.zeros((6, 6), bool)
    mask[1:5, 1:5] = True
    out = visual.overlay(image, amap, 0.0, 1.0, mask)
    assert out.shape == (6, 12, 3) and out.dtype == np.uint8
    edge = np.zeros((6, 6), bool)
    edge[1:5, 1:5] = True
    edge[2:4, 2:4] = False  # the ring around the 4 x 4 defect, its inside left alone
    for half in (out[:, :6], out[:, 6:]):
        assert (half[edge] == visual.OUTLINE).all() and not (half[~edge] == visual.OUTLINE).all(axis=1).any()
    assert (out[0, :6] == 100).all()  # the left half is the image itself
    hot, cold = out[2, 8].astype(int), out[0, 6].astype(int)  # map 1 (vmax) against map 0 (vmin), same image
    assert hot.sum() > cold.sum() + 200
    assert (visual.overlay(image, None, 0, 1)[:, 6:] == 100).all()  # no map (AHL): the image twice


def test_flags_at_the_threshold():
    assert [visual.flag(s, y, 0.5) for s, y in ((0.7, 1), (0.5, 0), (0.2, 1), (0.1, 0))] == ["TP", "FP", "FN", "TN"]
    assert visual.flag(0.9, None, 0.5) == "" and visual.flag(0.9, 1, None) == ""


def _knn_model(tmp_path, mtd_root):
    out = tmp_path / "k.json"
    assert cli.main(["run", "knn", "--data", f"mtd:{mtd_root}", *KNN_FAST, "--out", str(out), "--save-models"]) == 0
    (model,) = (tmp_path / "k_models").iterdir()
    assert model.name == "knn_magnetic_tile_c0_s0.pt"
    return out, model


def _mvtec_test_folder(test, root):
    """The magnetic tile's test set copied into MVTec's test layout (good/, one folder per type, ground_truth/)."""
    for s in test.samples:
        folder = root / "test" / s.defect
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(s.path, folder / s.path.name)
        if s.mask_path:
            (root / "ground_truth" / s.defect).mkdir(parents=True, exist_ok=True)
            shutil.copy(s.mask_path, root / "ground_truth" / s.defect / f"{s.path.stem}_mask.png")
    return root / "test"


def test_predict_scores_a_folder_like_the_run_and_flags_it_in_a_page(tmp_path, capsys):
    from test_datasets import write_magnetic_tile

    from adlkit.data import magnetic_tile
    from adlkit.methods import knn

    mtd = write_magnetic_tile(tmp_path / "Magnetic-tile-defect-datasets.", size=(40, 36))
    results, model_path = _knn_model(tmp_path, mtd)
    row = json.loads(results.read_text())[0]
    test = magnetic_tile(mtd, "test", 64)
    folder = _mvtec_test_folder(test, tmp_path / "mine")
    out = tmp_path / "pred"
    assert cli.main(["predict", "--model", str(model_path), "--images", str(folder), "--out", str(out), "--html"]) == 0
    with open(out / "scores.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(test) and [int(r["rank"]) for r in rows] == list(range(1, len(test) + 1))
    # the saved model scores the folder as the run scored its test set: the same AUROC and F1-max threshold
    scores = np.array([float(r["score"]) for r in rows])
    labels = np.array([r["label"] == "anomalous" for r in rows], dtype=int)
    assert metrics.image_auroc(scores, labels) == pytest.approx(row["image_AUROC"], abs=1e-6)
    _, threshold = metrics.f1_max_threshold(scores, labels)
    assert threshold == pytest.approx(row["image_F1max_threshold"], rel=1e-4)
    assert all(r["flag"] == visual.flag(float(r["score"]), r["label"] == "anomalous", threshold) for r in rows)
    assert {r["flag"] for r in rows} <= {"TP", "FP", "FN", "TN"} and (out / rows[0]["overlay"]).is_file()
    # the model reloads to the same scores
    model = knn.load(model_path)
    images = np.stack([test.load_image(s).numpy() for s in test.samples])
    again = knn.predict(model, __import__("torch").as_tensor(images))["scores"].numpy()
    by_file = {r["file"]: float(r["score"]) for r in rows}
    assert np.allclose([by_file[f"{s.defect}/{s.path.name}"] for s in test.samples], again, rtol=1e-5)
    page = (out / "index.html").read_text()
    assert page.count("class='card") == len(test) and "F1-max threshold" in page
    # nothing a user wrote is replaced without asking; unlabelled folders get no flags
    assert cli.main(["predict", "--model", str(model_path), "--images", str(folder), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    flat = tmp_path / "flat"
    shutil.copytree(folder / "good", flat)
    found = visual.predict_folder(model_path, flat, tmp_path / "flat_out")
    assert found["threshold"] is None and found["metrics"] == {}
    assert cli.main(["predict", "--model", str(results), "--images", str(flat), "--out", str(tmp_path / "x")]) == 2
    assert "not an adlkit model file" in capsys.readouterr().err
    if book.chromium() or os.environ.get("ADLKIT_REQUIRE_BROWSER") == "1":
        with book.Browser() as b:
            assert b.visit(out / "index.html") == []  # every overlay decodes, no script or console error
            shown = b.evaluate("[...document.querySelectorAll('.card')].map(c => +c.dataset.score)")
            assert shown == sorted(shown, reverse=True) and len(shown) == len(test)
            flags = b.evaluate("[...document.querySelectorAll('.card')].map(c => c.className.split(' ')[1] || '')")
            assert sorted(flags) == sorted(r["flag"] for r in rows)


def test_report_html_draws_every_saved_gallery_with_the_runs_threshold(tmp_path, capsys):
    from test_datasets import write_magnetic_tile

    mtd = write_magnetic_tile(tmp_path / "Magnetic-tile-defect-datasets.", size=(40, 36))
    results = tmp_path / "repo" / "figures" / "results"
    results.mkdir(parents=True)
    out = results / "cli_knn_mtd.json"
    assert cli.main(["run", "knn", "--data", f"mtd:{mtd}", *KNN_FAST, "--out", str(out), "--save-maps"]) == 0
    row = json.loads(out.read_text())[0]
    site = tmp_path / "site"
    assert cli.main(["report", "--root", str(tmp_path / "repo"), "--html", str(site)]) == 0
    (page,) = site.glob("cli_knn_mtd_maps/*/*.html")
    g = gallery.load(next(gallery.maps_dir(out).iterdir()))
    text = page.read_text()
    assert text.count("class='card") == len(g["scores"]) and f"{row['image_F1max_threshold']:.4g}" in text
    want = [visual.flag(float(s), int(a), row["image_F1max_threshold"]) for s, a in zip(g["scores"], g["anomalous"])]
    assert sum(f"class='card {f}'" in text for f in set(want)) == len(set(want))
    assert cli.main(["report", "--root", str(tmp_path / "repo"), "--html", str(site)]) == 2  # never over a site
    if book.chromium() or os.environ.get("ADLKIT_REQUIRE_BROWSER") == "1":
        with book.Browser() as b:
            assert b.visit(site / "index.html") == [] and b.visit(page) == []


def _fast(method, root):
    import test_cli_run as T

    data = ["--data", f"mvtec:{root}"]
    return {"adl": ["run", "adl", *data, "--category", "tile", "--contamination", "0", *T.FAST, "--set", *T.FAST_SET],
            "multicue": ["run", "multicue", *data, "--category", "tile", *T.FAST, "--shots", "2", "--set",
                         *T.FAST_SET, "shots_per_batch=2"],
            "ckaad": ["run", "ckaad", *data, "--category", "tile", *T.CKAAD_FAST],
            "cada": ["run", "cada", *data, "--category", "tile", "washer", *T.CADA_FAST],
            "ahl": ["run", "ahl", *data, "--category", "tile", *T.AHL_FAST, "--shots", "2"]}[method]


@pytest.mark.parametrize("method", ["adl", "multicue", "ckaad", "cada", "ahl"])
def test_every_trained_method_saves_a_model_that_predict_scores_as_the_run_did(method, small_root, tmp_path,
                                                                                monkeypatch):
    import torch

    from adlkit import methods
    from adlkit.data import MVTecLike

    monkeypatch.setenv("ADLKIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "r.json"
    assert cli.main([*_fast(method, small_root), "--out", str(out), "--save-models"]) == 0
    (path,) = (tmp_path / "r_models").iterdir()
    module, model = methods.load_any(path)
    assert module.__name__ == f"adlkit.methods.{method}"
    rows = json.loads(out.read_text())
    row_of = {"adl": "Proposed", "multicue": "Proposed", "ckaad": "+patch", "cada": "CADA", "ahl": "AHL"}
    row = next(r for r in rows if r["category"] == ("pooled" if method == "cada" else "tile")
               and r.get("variant") in ("cada", "paper") and r["ablation"] == row_of[method])
    from adlkit import modelfile
    from adlkit.runs import RunRecord

    assert modelfile.meta(path)["run"] == RunRecord.from_row(row).run_id()  # whose model it is, in its file
    test = MVTecLike(small_root, ["tile", "washer"] if method == "cada" else "tile", "test", 64)
    images = torch.stack([test.load_image(s) for s in test.samples])
    found = module.predict(model, images)
    scores = np.asarray(found["scores"], dtype=np.float64)
    if method == "ahl":  # AHL scores whole images: no maps
        assert found["maps"] is None
    else:
        assert tuple(found["maps"].shape) == (len(test), 64, 64)
    if method == "multicue":  # its shots left the test set: every scored image's score is among the folder's
        assert all(np.isclose(scores, s, rtol=1e-4, atol=1e-6).any() for s in row["test_scores"])
    elif method == "ahl":  # the open-set split, as the run drew it (seed 0): its test set's AUROC
        from adlkit.data import open_set_split

        split = open_set_split(MVTecLike(small_root, "tile", "train", 64), test, "general", 2, 0, None)
        keep = [test.samples.index(s) for s in split.test.samples]
        assert metrics.image_auroc(scores[keep], split.test.truths) == pytest.approx(row["image_AUROC"], abs=1e-6)
    else:
        assert metrics.image_auroc(scores, test.truths) == pytest.approx(row["image_AUROC"], abs=1e-6)


def test_a_folder_is_checked_before_anything_is_scored(tmp_path):
    from PIL import Image

    folder = tmp_path / "test"
    for name in ("good/a.png", "good/a.jpg", "crack/b.png"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), (90, 90, 90)).save(folder / name)
    dataset, labelled = visual.image_folder(folder, 32)
    assert labelled and [s.defect for s in dataset.samples] == ["crack", "good", "good"]
    (tmp_path / "ground_truth" / "crack").mkdir(parents=True)
    Image.new("L", (16, 16), 255).save(tmp_path / "ground_truth" / "crack" / "b_mask.png")
    with pytest.raises(ValueError, match="re-export the mask at the image's size"):
        visual.image_folder(folder, 32)
    Image.new("RGB", (32, 32)).save(folder / "loose.png")
    with pytest.raises(ValueError, match="move them into good/"):
        visual.image_folder(folder, 32)
    Image.new("RGB", (32, 32)).save(folder / "x.JPEG")
    assert len(visual.image_folder(folder / "good", 32)[0]) == 2  # unlabelled; any case of a suffix


def test_a_gallery_finds_its_row_by_run_id_or_fields():
    rows = [{"method": "cada:cada", "category": "pooled", "seed": 0, "dataset": "synthetic", "image_F1max_threshold": 2.0},
            {"method": "cada:cada", "category": "tile", "seed": 0, "dataset": "synthetic"},
            {"method": "ckaad", "category": "tile", "seed": 0, "config": {"steps": 4}, "eval_of_run": 8},
            {"method": "ckaad", "category": "tile", "seed": 0, "config": {"steps": 8}, "eval_of_run": 8}]
    assert visual._matching_row(rows, {"method": "cada", "seed": 0, "category": "tile"}) is rows[0]
    assert visual._matching_row(rows, {"method": "ckaad", "seed": 0, "category": "tile"}) is rows[3]  # the run's end
    assert visual._matching_row(rows, {"method": "knn", "seed": 0}) is None
