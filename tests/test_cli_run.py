import json

import pytest

from adlkit import cli


def test_bad_contamination_is_rejected_with_the_allowed_range(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "adl", "--category", "tile", "--contamination", "1.5"])
    assert "contamination must be in [0, 1)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["run", "adl", "--category", "tile", "--shard", "3/2"])
    assert "0 <= i < n" in capsys.readouterr().err


def test_missing_category_lists_the_available_ones(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("ADLKIT_CACHE", str(tmp_path))
    assert cli.main(["run", "adl", "--category", "bottle", "--image-size", "64"]) == 2
    err = capsys.readouterr().err
    assert "'bottle' is not in" in err and "available categories" in err and "tile" in err
    assert cli.main(["run", "adl", "--data", "mvtec:" + str(tmp_path / "nope"), "--category", "x"]) == 2
    assert "Expected layout" in capsys.readouterr().err


def test_shard_runs_its_slice_writes_results_and_collect_merges(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("ADLKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ADLKIT_OFFLINE", "1")
    out = tmp_path / "r.json"
    args = ["run", "adl", "--category", "tile", "washer", "--contamination", "0", "0.1", "--image-size", "64",
            "--epochs", "1", "--steps", "1", "--backbone", "efficientnet_lite0", "--device", "cpu",
            "--shard", "1/3", "--out", str(out)]
    assert cli.main(args) == 0
    rows = json.loads(out.read_text())
    # grid (tile,0) (tile,0.1) (washer,0) (washer,0.1): slice 1 of 3 is item 1 only
    assert [(r["category"], r["contamination"]) for r in rows] == [("tile", 0.1)]
    assert rows[0]["backbone"] == "efficientnet_lite0" and 0 <= rows[0]["image_AUROC"] <= 1
    assert cli.main(args) == 2  # never overwrites results without --overwrite
    assert "exists" in capsys.readouterr().err
    assert cli.main(["collect", str(out), "--out", str(tmp_path / "table")]) == 0
    assert "| adl | tile | 0.1 | 1 |" in (tmp_path / "table.md").read_text()
    assert (tmp_path / "table.csv").read_text().startswith("method,category,contamination")


def test_run_multicue_reports_every_cue(monkeypatch, tmp_path):
    monkeypatch.setenv("ADLKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ADLKIT_OFFLINE", "1")
    out = tmp_path / "mc.json"
    assert cli.main(["run", "multicue", "--category", "tile", "--contamination", "0.1", "--shots", "2",
                     "--image-size", "64", "--epochs", "1", "--steps", "1", "--backbone", "efficientnet_lite0",
                     "--device", "cpu", "--out", str(out)]) == 0
    row = json.loads(out.read_text())[0]
    assert row["method"] == "multicue" and row["shots"] == 2
    for key in ("deviation_AUROC", "uncertainty_AUROC", "segmentation_AUROC", "fused_AUROC", "grad_AUPRO", "seg_AUPRO"):
        assert 0.0 <= row[key] <= 1.0
