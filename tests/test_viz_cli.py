import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest

from adlkit import cli, viz


def test_savefig_writes_only_when_asked(monkeypatch, tmp_path):
    monkeypatch.setenv("ADLKIT_FIGURES", str(tmp_path))
    fig, _ = plt.subplots()
    monkeypatch.delenv("ADLKIT_SAVE_FIGURES", raising=False)
    assert viz.savefig(fig, "x") is None and not list(tmp_path.iterdir())
    monkeypatch.setenv("ADLKIT_SAVE_FIGURES", "1")
    assert viz.savefig(fig, "x") == tmp_path / "x.png"
    kept = viz.savefig(fig, "x", overwrite=False)
    assert kept != tmp_path / "x.png" and kept.exists() and (tmp_path / "x.png").exists()
    out = viz.save_results("r", {"auroc": 0.9}, device="cpu", mode="quick", dataset="synthetic", wall_time_s=1.234)
    payload = json.loads(out.read_text())
    assert payload["results"] == {"auroc": 0.9} and payload["device"] == "cpu" and payload["wall_time_s"] == 1.23
    plt.close("all")


def test_plots_build():
    rng = np.random.default_rng(0)
    scores, labels = rng.normal(size=40), np.r_[np.zeros(30), np.ones(10)]
    fig = viz.score_distributions(scores, labels, ["a", "b"] * 20, contaminated=np.r_[np.zeros(39), 1])
    assert len(fig.axes) == 2
    viz.robustness_curve([0, 0.1], {"ADL": [0.9, 0.85], "DevNet": [[0.9, 0.8], [0.7, 0.72]]})
    viz.heatmap_overlay(rng.random((3, 16, 16)), rng.random((16, 16)), rng.random((16, 16)) > 0.8)
    with pytest.raises(ValueError, match="differ in size"):
        viz.heatmap_overlay(rng.random((3, 16, 16)), rng.random((8, 8)))
    plt.close("all")


def test_an_overlay_can_say_what_its_colours_mean():
    rng = np.random.default_rng(0)
    fig = viz.heatmap_overlay(rng.random((3, 16, 16)), rng.random((16, 16)), vmin=0, vmax=1, colorbar="P(anomalous)")
    bar = fig.axes[-1]
    assert len(fig.axes) == 2 and bar.get_ylabel() == "P(anomalous)"
    assert bar.get_ylim() == (0.0, 1.0)  # the scale the map was drawn on, not the map's own range
    assert len(viz.heatmap_overlay(rng.random((3, 16, 16)), rng.random((16, 16))).axes) == 1  # none unless asked
    plt.close("all")


def test_cli_info_and_errors(capsys, tmp_path):
    assert cli.main(["info"]) == 0
    assert "adlkit" in capsys.readouterr().out
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f.txt").write_text("keep")
    assert cli.main(["data", "synthetic", "--root", str(tmp_path / "x")]) == 2
    assert "refusing to write" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["run"])
