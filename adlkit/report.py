"""The reproduction report: each paper's headline numbers beside adlkit's and the kNN baseline's.

``python -m adlkit report`` reads every result file in ``figures/results/`` (checked: an unknown key or a
missing field is an error that names the file), the papers' own numbers kept as data in
``adlkit/paper_numbers.csv``, and :data:`HEADLINES` (which result rows answer which of the papers' rows),
and writes ``figures/REPORT.md``. The README's short headline table, the full tables of ``docs/results.md``
and the wall-time table of ``docs/data.md`` come from the same function (:func:`render`), so
``python -m adlkit report --check`` (run by CI) fails when any of them is out of date with the result files.

A cell "0.915 ± 0.012 (3)" is the mean ± std over seeds (3 of them) of the per-seed value; the per-seed
value is the mean over the classes (or, for AHL's hard setting, over the seen classes) the row averages.
A row whose runs no result file holds yet says "not run yet"; a grid stopped part-way (its seeds cover
different classes) says "incomplete" and how, instead of a number.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data.datasets import MTD_TYPES

__all__ = ["PAPERS", "HEADLINES", "Select", "Headline", "load_results", "load_paper_numbers", "summarise",
           "headline_rows", "wall_times", "real_data_rows", "render", "readme_headline", "replace_section", "write_report",
           "check_report"]

PAPER_NUMBERS = Path(__file__).with_name("paper_numbers.csv")
PAPER_COLUMNS = ("paper", "source", "dataset", "setting", "method", "metric", "value", "backbone", "image_size", "note")

# How each paper is cited (authors, title, year) and what adlkit builds of it.
PAPERS = {
    "ADL": "A. S. Das, G. Pang, M. Bhuyan. *Adaptive Deviation Learning for Visual Anomaly Detection with Data "
           "Contamination.* arXiv:2411.09558, 2024 (WACV 2025)",
    "multi-cue ADL": "A. S. Das, M. Bhuyan. *Multi-Cue Anomaly Detection and Localization under Data "
                     "Contamination.* arXiv:2601.22913, 2026",
    "CADA": "J. Guo, H. Han, S. Lu, W. Zhang, H. Li. *Absolute-Unified Multi-Class Anomaly Detection via "
            "Class-Agnostic Distribution Alignment.* arXiv:2404.00724, 2024",
    "CKAAD": "Q. Fang, Q. Su, W. Lv, W. Xu, J. Yu. *Boosting Fine-Grained Visual Anomaly Detection with "
             "Coarse-Knowledge-Aware Adversarial Learning.* arXiv:2412.12850, 2024 (AAAI 2025)",
    "AHL": "J. Zhu, C. Ding, Y. Tian, G. Pang. *Anomaly Heterogeneity Learning for Open-set Supervised Anomaly "
           "Detection.* CVPR 2024 (arXiv:2310.12790)",
}
BASELINE = ("K. Roth et al. *Towards Total Recall in Industrial Anomaly Detection* (PatchCore), CVPR 2022: "
            "`adlkit.methods.knn`, frozen features, max patch distance, a 10% greedy coreset (1% for ELPV, at 128 px, and "
            "for the bank of all classes mixed)")

# ----------------------------------------------------------------------------- result files and their keys
NOTEBOOK_REQUIRED = ("device", "mode", "dataset", "wall_time_s", "adlkit", "commit", "torch", "python", "date",
                     "results")
NOTEBOOK_KEYS = set(NOTEBOOK_REQUIRED) | {"backbone", "weights", "image_size", "train_backbone", "training", "schedule",
                                          "seeds",
                                          "texture_source", "n_train", "elpv_image_size"}


def _check_run(path: Path, i: int, row) -> None:
    """A committed run row must be a :class:`adlkit.runs.RunRecord` (the only schema of a result row)."""
    from .runs import RunRecord

    RunRecord.from_row(row, where=f"{path.name}, run {i}")


def _check_notebook(path: Path, payload: dict) -> None:
    missing = [k for k in NOTEBOOK_REQUIRED if k not in payload]
    if missing:
        raise ValueError(f"{path.name}: missing field(s) {missing}. A notebook's results are written by "
                         "adlkit.viz.save_results (rerun the notebook with --save-figures).")
    unknown = sorted(set(payload) - NOTEBOOK_KEYS)
    if unknown:
        raise ValueError(f"{path.name}: unknown key(s) {unknown} next to 'results'. Put a notebook's numbers inside "
                         f"'results', or add the key to adlkit.report.NOTEBOOK_KEYS; known: {sorted(NOTEBOOK_KEYS)}")


def load_results(folder: str | Path) -> dict[str, object]:
    """Every ``*.json`` of ``folder``, checked, by file name: a list of runs (the CLI's files) or a notebook's
    payload (a dict with ``results``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no results folder {folder}: run the notebooks (make figures) or the CLI with "
                                "--out figures/results/<name>.json first")
    return {path.name: _read_checked(path) for path in sorted(folder.glob("*.json"))}


def _read_checked(path: Path):
    """One result file, checked: a list of runs (the CLI's) or a notebook's payload."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); restore it from git or rerun what wrote it") from None
    if isinstance(data, list):
        for i, row in enumerate(data):
            _check_run(path, i, row)
    elif isinstance(data, dict):
        _check_notebook(path, data)
    else:
        raise ValueError(f"{path.name}: expected a list of runs or a notebook's results object")
    return data


def load_paper_numbers(path: str | Path = PAPER_NUMBERS) -> list[dict]:
    """The papers' own numbers: one row per paper, source (table/figure), dataset, setting, method, metric,
    value (a fraction), backbone, image size and a note."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != PAPER_COLUMNS:
            raise ValueError(f"{path}: the columns must be {','.join(PAPER_COLUMNS)}; got {reader.fieldnames}")
        rows = list(reader)
    for i, r in enumerate(rows, start=2):
        if r["paper"] not in PAPERS:
            raise ValueError(f"{path}, line {i}: unknown paper {r['paper']!r}; one of {list(PAPERS)}")
        try:
            r["value"] = float(r["value"])
        except ValueError:
            raise ValueError(f"{path}, line {i}: value {r['value']!r} is not a number (write 98.0% as 0.980)") from None
        if not 0.0 <= r["value"] <= 1.0:
            raise ValueError(f"{path}, line {i}: value {r['value']} is not a fraction in [0, 1] (98.0% is 0.980)")
    return rows


# ----------------------------------------------------------------------------- which rows answer which
@dataclass(frozen=True)
class Select:
    """Runs of one result file: ``where`` field -> value (a tuple: any of its values), ``average`` the field
    averaged within a seed (``None``: exactly one run per seed). ``file`` may be a tuple of files: the first
    that holds matching runs is read (a row that one grid or another may hold)."""

    file: str | tuple
    where: dict
    average: str | None = "category"


@dataclass(frozen=True)
class Headline:
    paper: str
    what: str  # the row, in words
    metric: str  # adlkit's metric (a field of its runs)
    paper_ref: dict | None  # matches rows of paper_numbers.csv (source, dataset, setting, method); None: not in the paper
    ours: Select
    knn: Select | None = None
    note: str = ""  # a difference the metadata cannot show (schedule, protocol)
    paper_metric: str | None = None  # the paper's metric when adlkit's field is named otherwise (a cue's AUROC)
    knn_metric: str | None = None  # the kNN's field, when not ``metric``


_SYN = {"dataset": "synthetic"}
_ADL_NOTE = "frozen backbone (the paper fine-tunes end to end); the paper's schedule (25 × 20 steps of 24 + 24)"
# adlkit's ADL rows carry the names of the paper's Table 2 (adlkit.methods.adl.ABLATIONS); the robustness grid
# (contamination levels) and the ablation grid (10%) may each hold a row: the first file that has it is read
_ROBUSTNESS_FIRST = ("cli_adl_robustness.json", "cli_adl_ablation.json")
_ABLATION_FIRST = ("cli_adl_ablation.json", "cli_adl_robustness.json")
ADL_TABLE2 = ("DL", "Wt-DL", "DL-CE", "SoftDL-CE", "Wt-SoftDL-CE", "Proposed")


def _adl(row: str, eps: float, files=_ROBUSTNESS_FIRST) -> Select:
    return Select(files, {**_SYN, "ablation": row, "contamination": eps})


def _mean_ref(source: str, method: str, eps: float, dataset: str = "MVTec AD", ablation: bool = False) -> dict:
    """A paper's 'mean over classes' row of paper_numbers.csv (its Average row)."""
    return {"source": source, "dataset": dataset, "method": method,
            "setting": ("ablation, " if ablation else "") + f"contamination {eps:.0%}, mean over classes"}


def _knn(eps: float = 0.0, size: int = 256) -> Select:
    return Select("cli_knn.json", {**_SYN, "contamination": eps, "image_size": size, "leaky": False})


def _multicue(eps: float = 0.1) -> Select:
    return Select("cli_multicue.json", {**_SYN, "shots": 10, "contamination": eps})


_PATCHCORE_NOTE = ("adlkit's kNN baseline (PatchCore-style, 10% coreset, trained on the contaminated set) against "
                   "the paper's PatchCore (its official code, trained on the contaminated set)")
_LEAK_FREE = ("; adlkit's protocol is leak-free (the contaminated anomalies leave the test set), ADL's code keeps them "
              "in it (the leaky rows below)")
_LEAKY_NOTE = ("both leaky, the protocol of ADL's code: the anomalies that contaminate the training set stay in the "
               "test set, so a memory bank holds some test anomalies' own patches (adlkit: `--leaky`)")
_MC_NOTE = ("frozen backbone (the paper fine-tunes end to end); 10 labelled anomalies per class (the "
            "paper's number is missing in its text), taken out of the test set (kNN: scored on all of it)")
_MC_CUES = (("deviation cue alone", "Deviation Score", "cue_deviation_"),
            ("uncertainty cue alone", "Uncertainty Score", "cue_uncertainty_"),
            ("segmentation cue alone", "Segmentation Score", "cue_segmentation_"),
            ("fused score", "Proposed", ""))


def _cada(variant: str, category: str = "pooled") -> Select:
    return Select("cli_cada.json", {**_SYN, "method": f"cada:{variant}", "category": category, "ablation": "CADA"},
                  average=None)


# CKAAD's Table 3 grid runs at the length its measured curve flattens (cli_ckaad_schedule.json) on two classes;
# the kNN beside it is averaged over the same classes
_CKAAD_CLASSES = ("capsule", "fabric")


def _ckaad(row: str) -> Select:
    return Select("cli_ckaad.json", {**_SYN, "ablation": row, "category": _CKAAD_CLASSES})


def _ahl(row: str, setting: str, shots: int) -> Select:
    where = {"dataset": "elpv", "ablation": row, "open_set": setting, "shots": shots, "variant": "paper",
             "setting": "steps_per_epoch=5"}  # the committed grid: 5 meta-iterations per epoch (CPU; default 20)
    return Select("cli_ahl.json", where, average="seen_class" if setting == "hard" else None)


_KNN_UNIFIED = Select("cli_knn_unified.json", _SYN, average=None)  # one bank for all the classes mixed


def _knn_elpv(setting: str = "general", eps: float = 0.0) -> Select:
    return Select("cli_knn_elpv.json", {"open_set": setting, "contamination": eps},
                  average="seen_class" if setting == "hard" else None)


HEADLINES = [
    # ADL's Table 1 (MVTec AD, mean over the 15 classes): the paper's PatchCore beside adlkit's kNN, its ADL
    # beside adlkit's. adlkit's robustness grid trains Wt-SoftDL-CE: with a frozen backbone the segmentation head
    # cannot move the image score, so its image scores are Proposed's (a test checks; Table 2's rows show it)
    *[Headline("ADL", f"PatchCore (paper) / kNN (adlkit), {eps:.0%} contamination", "image_AUROC",
               _mean_ref("Table 1", "PatchCore", eps), _knn(eps), None, _PATCHCORE_NOTE + _LEAK_FREE)
      for eps in (0.1, 0.15, 0.2)],
    *[Headline("ADL", f"PatchCore (paper) / kNN (adlkit), {eps:.0%}, leaky protocol (the paper's code)", "image_AUROC",
               _mean_ref("Table 1", "PatchCore", eps),
               Select("cli_knn_leaky.json", {**_SYN, "contamination": eps, "image_size": 256, "leaky": True}), None,
               _LEAKY_NOTE) for eps in (0.1, 0.2)],
    *[Headline("ADL", f"ADL, {eps:.0%} contamination", "image_AUROC",
               _mean_ref("Table 1", "ADL", eps) if eps else None, _adl("Wt-SoftDL-CE", eps), _knn(eps),
               _ADL_NOTE + "; adlkit's row: Wt-SoftDL-CE, whose image scores equal Proposed's with a frozen backbone"
               + ("" if eps else "; the paper's Table 1 starts at 10%")) for eps in (0.0, 0.1, 0.15, 0.2)],
    # ADL's Table 2 (MVTec AD, 10%): its six rows
    *[Headline("ADL", f"{row}, 10% contamination (Table 2)", "image_AUROC",
               _mean_ref("Table 2", row, 0.1, ablation=True), _adl(row, 0.1, _ABLATION_FIRST), _knn(0.1), _ADL_NOTE)
      for row in ADL_TABLE2],
    *[Headline("ADL", f"DL (deviation only), {eps:.0%} contamination", "image_AUROC", None, _adl("DL", eps), _knn(eps),
               _ADL_NOTE + "; the paper's DL row is at 10% only (Table 2)") for eps in (0.0, 0.2)],
    *[Headline("ADL", f"ADL on ELPV, {eps:.0%} contamination", "image_AUROC", None,
               Select("cli_adl_elpv.json", {"ablation": ("Proposed", "+ soft deviation"), "contamination": eps},
                      average=None),
               _knn_elpv("general", eps),
               "the paper does not test on ELPV; ELPV's open-set protocol (probability 0 vs 1, normals split 75/25); "
               "adlkit's row: Proposed, or '+ soft deviation' (Wt-SoftDL-CE: no segmentation head) in runs made "
               "before the Table 2 names and before issue 22's paper defaults (those runs used within-label weights "
               "and the hard deviation loss in burn-in: not re-run yet); "
               "kNN: 128 px, 1% coreset")
      for eps in (0.0, 0.1)],
    # multi-cue ADL: its image table (Table 1), pixel table (Table 2) and cue ablation (Table 3)
    *[Headline("multi-cue ADL", f"fused score, 10 shots, {eps:.0%} contamination", "image_AUROC",
               _mean_ref("Table 1", "multi-cue", eps), _multicue(eps), _knn(eps), _MC_NOTE) for eps in (0.1, 0.15, 0.2)],
    Headline("multi-cue ADL", "PatchCore (paper) / kNN (adlkit), 10% contamination", "image_AUROC",
             _mean_ref("Table 1", "PatchCore", 0.1), _knn(0.1), None, _PATCHCORE_NOTE),
    Headline("multi-cue ADL", "gradient maps, 10 shots, 10% contamination", "pixel_AUROC",
             _mean_ref("Table 2", "multi-cue", 0.1), _multicue(0.1), _knn(0.1),
             _MC_NOTE + "; pixel AUROC over all test images (kNN: its smoothed maps, likewise)"),
    Headline("multi-cue ADL", "PatchCore (paper) / kNN (adlkit) maps, 10% contamination", "pixel_AUROC",
             _mean_ref("Table 2", "PatchCore", 0.1), _knn(0.1), None, _PATCHCORE_NOTE),
    *[Headline("multi-cue ADL", f"{what}, 10 shots, 10% (Table 3)", f"{field}image_{metric}",
               _mean_ref("Table 3", name, 0.1, ablation=True), _multicue(0.1), _knn(0.1), _MC_NOTE,
               paper_metric=f"image_{metric}", knn_metric=f"image_{metric}")
      for metric in ("AUROC", "AUPR") for what, name, field in _MC_CUES],
    Headline("CADA", "RD, one threshold for all classes (pooled)", "image_AUROC",
             {"source": "main results", "dataset": "MVTec AD", "setting": "absolute-unified, pooled over classes",
              "method": "RD"}, _cada("unaligned"), _KNN_UNIFIED,
             "kNN: one memory bank for the five classes mixed"),
    Headline("CADA", "RD + CADA, pooled", "image_AUROC",
             {"source": "main results", "dataset": "MVTec AD", "setting": "absolute-unified, pooled over classes",
              "method": "RD + CADA"}, _cada("cada"), _KNN_UNIFIED,
             "a reconstruction from the paper (no training code released); 1,500 reconstruction and 2,000 head "
             "iterations (the paper: 5,000 each)"),
    Headline("CADA", "RD + CADA, pooled pixels", "pixel_AUROC",
             {"source": "main results", "dataset": "MVTec AD", "setting": "absolute-unified, pooled over classes",
              "method": "RD + CADA"}, _cada("cada"), _KNN_UNIFIED),
    Headline("CADA", "RD, per class (mean over classes)", "image_AUROC",
             {"source": "main results", "dataset": "MVTec AD", "setting": "per class, mean over classes", "method": "RD"},
             _cada("unaligned", "mean"), _knn(0.0), "kNN: one bank per class"),
    Headline("CADA", "CaDA-A (class-aware), pooled", "image_AUROC",
             {"source": "Table 4", "dataset": "MVTec AD", "setting": "absolute-unified, pooled over classes",
              "method": "CaDA-A (class-aware)"}, _cada("class_aware")),
    *[Headline("CKAAD", f"{name} ({row})", metric,
               {"source": "Table 3", "dataset": "MVTec AD", "setting": "ablation, mean over classes", "method": name},
               _ckaad(row), Select("cli_knn.json", {**_SYN, "contamination": 0.0, "image_size": 128,
                                                   "category": _CKAAD_CLASSES}),
               "300 steps of 16 normal + 16 coarse anomalies (elastic warps, as the paper's for industrial images): "
               "where the measured curve's image AUROC is flat (the paper: 400 epochs); capsule and fabric only; "
               "GAN = eq. 7 (the discriminator never sees the coarse anomalies)")
      for name, row, metric in [("Recon", "recon", "image_AUROC"), ("CKAPatch", "+patch", "image_AUROC"),
                                ("CKAImg", "+image", "image_AUROC"), ("GAN", "gan", "image_AUROC"),
                                ("Recon", "recon", "pixel_AUROC"), ("CKAPatch", "+patch", "pixel_AUROC"),
                                ("Recon", "recon", "pixel_AUPRO"), ("CKAPatch", "+patch", "pixel_AUPRO")]],
    *[Headline("CKAAD", f"{name} ({row}) on ELPV", "image_AUROC", None,
               Select("cli_ckaad_elpv.json", {"ablation": row}, average=None), _knn_elpv("general"),
               "the paper does not test on ELPV; ELPV's open-set protocol (kNN: 1% coreset)")
      for name, row in (("Recon", "recon"), ("CKAPatch", "+patch"))],
    *[Headline("AHL", f"{method}, {setting}, {shots} shot{'s' if shots > 1 else ''}", "image_AUROC",
               {"source": "Table 1" if setting == "general" else "Table 2", "dataset": "ELPV",
                "setting": f"{setting}, {shots} shot{'s' if shots > 1 else ''}", "method": paper_method},
               _ahl(method, setting, shots), _knn_elpv(setting),
               "features of a frozen ImageNet backbone (the paper: a fine-tuned DevNet); 30 epochs × 5 meta-iterations "
               "(CPU; default 20), 10 Adam base steps each"
               + ("; hard: the mean over the seen cell type" if setting == "hard" else "") + "; kNN: 128 px, 1% coreset")
      for setting in ("general", "hard") for shots in (10, 1)
      for method, paper_method in (("DevNet", "DevNet"), ("AHL", "AHL (DevNet)"))],
    Headline("AHL", "PatchCore / kNN, unsupervised", "image_AUROC",
             {"source": "Table 4", "dataset": "ELPV", "setting": "unsupervised (no labelled anomalies)",
              "method": "PatchCore"}, _knn_elpv("general"), None,
             "adlkit's kNN baseline (1% coreset) against the paper's PatchCore"),
]


# ----------------------------------------------------------------------------- numbers
@dataclass
class Stat:
    mean: float | None = None
    std: float | None = None
    n_seeds: int = 0
    n_avg: int = 0  # classes (or seen classes) averaged per seed
    runs: list = field(default_factory=list)
    problem: str = ""  # why there is no number although runs match (a grid stopped part-way)

    def cell(self) -> str:
        if self.problem:
            return f"incomplete: {self.problem}"
        if self.mean is None:
            return "not run yet"
        return f"{self.mean:.3f} ± {self.std:.3f} ({self.n_seeds})" if self.n_seeds > 1 else f"{self.mean:.3f} (1)"


def _final(row: dict) -> bool:
    """Not a learning curve's intermediate point: a row with ``eval_of_run`` (the run's length in steps) scored
    the run at ``config["steps"]``; only the one at the run's end is its result."""
    return row.get("eval_of_run") is None or (row.get("config") or {}).get("steps") == row["eval_of_run"]


def _matches(row: dict, where: dict) -> bool:
    return _final(row) and all(row.get(k) in v if isinstance(v, tuple) else row.get(k) == v for k, v in where.items())


def summarise(results: dict, select: Select | None, metric: str) -> Stat:
    """Mean ± std over seeds of ``metric`` in the runs ``select`` picks (averaged over ``select.average``
    within each seed first). An absent file or no matching run gives an empty :class:`Stat` ("not run yet");
    seeds that cover different classes (a grid stopped part-way) give one with ``problem`` and no mean."""
    if select is None:
        return Stat()
    runs = []
    for name in (select.file,) if isinstance(select.file, str) else select.file:
        if isinstance(results.get(name), list):
            runs = [r for r in results[name] if _matches(r, select.where) and r.get(metric) is not None]
        if runs:
            break
    if not runs:
        return Stat()
    by_seed: dict = {}
    for r in runs:
        by_seed.setdefault(r["seed"], []).append(r)
    if select.average:
        sets = {seed: sorted(str(r.get(select.average)) for r in rs) for seed, rs in by_seed.items()}
        if len({json.dumps(v) for v in sets.values()}) > 1:
            counts = ", ".join(f"seed {seed}: {len(v)}" for seed, v in sorted(sets.items()))
            return Stat(runs=runs, problem=f"the seeds cover different {select.average} values ({counts}); "
                                           "finish the grid with --resume")
    per_seed, n_avg = [], set()
    for seed, rs in sorted(by_seed.items()):
        if select.average is None and len(rs) > 1:
            raise ValueError(f"{select.file}: {len(rs)} runs match {select.where} for seed {seed}; the headline "
                             "expects one (narrow its 'where')")
        keys = [r.get(select.average) for r in rs] if select.average else [None]
        if select.average and len(set(keys)) != len(keys):
            raise ValueError(f"{select.file}: {select.average} {keys} repeats for seed {seed} under {select.where}; "
                             "narrow the headline's 'where'")
        per_seed.append(float(np.mean([r[metric] for r in rs])))
        n_avg.add(len(rs))
    v = np.asarray(per_seed)
    return Stat(float(v.mean()), float(v.std()), len(v), max(n_avg), runs)


def committed(name: str, *, quick: bool = False, folder: str | Path | None = None, **where) -> list[dict]:
    """A notebook's one call for a committed CLI grid: in full mode, the finished runs of ``figures/results/<name>``
    (checked as the report checks them; a learning curve's last point only) whose fields equal ``where``, with one
    printed line saying where they came from; ``[]`` in quick mode or when the file is absent, so a cell reads
    ``rows = report.committed("cli_x.json", quick=QUICK) or train_here()``."""
    from .config import figures_dir

    path = Path(folder or figures_dir() / "results") / name
    if quick or not path.exists():
        return []
    data = _read_checked(path)
    if not isinstance(data, list):
        raise ValueError(f"{path.name} is a notebook's results, not a CLI grid: pass a cli_*.json file")
    rows = [r for r in data if _matches(r, where)]
    commits = sorted({str(r.get("commit")) for r in rows})
    print(f"{name}: {len(rows)} committed run(s){' where ' + str(where) if where else ''}, seeds "
          f"{sorted({r['seed'] for r in rows})}, commit{'s' if len(commits) > 1 else ''} {', '.join(commits)}")
    return rows


def seed_table(rows: list[dict], metrics=("image_AUROC",), by=("ablation",), average: str | None = "category"):
    """The tidy summary every notebook and the report use: for each value of ``by`` (a tuple of row fields), each
    metric's mean and std over seeds of the per-seed mean over ``average`` (e.g. the classes), counting only the
    seeds that cover every ``average`` value the group has (a grid stopped part-way does not tilt a mean).

    Returns a pandas DataFrame indexed by ``by`` with columns ``<metric>``, ``<metric>_std``, ``<metric>_seeds``
    (the per-seed values, for a plot's spread), ``n_seeds`` and ``n_avg`` (values averaged per seed), e.g.
    ``seed_table(rows, by=("ablation", "contamination")).loc[("DL", 0.1), "image_AUROC"]``."""
    import pandas as pd

    groups: dict = {}
    for r in rows:
        if not _final(r):
            continue
        key = tuple(r.get(b) for b in by)
        groups.setdefault(key, {}).setdefault(r["seed"], []).append(r)
    records = []
    for key, by_seed in groups.items():
        every = {r.get(average) for rs in by_seed.values() for r in rs} if average else {None}
        complete = {s: rs for s, rs in by_seed.items() if not average or {r.get(average) for r in rs} == every}
        rec = dict(zip(by, key), n_seeds=len(complete), n_avg=len(every))
        for m in metrics:
            per_seed = [float(np.mean([r[m] for r in rs])) for rs in complete.values()
                        if all(r.get(m) is not None for r in rs)]
            rec[m] = float(np.mean(per_seed)) if per_seed else float("nan")
            rec[f"{m}_std"] = float(np.std(per_seed)) if per_seed else float("nan")
            rec[f"{m}_seeds"] = per_seed
        records.append(rec)
    columns = [*by, *(c for m in metrics for c in (m, f"{m}_std", f"{m}_seeds")), "n_seeds", "n_avg"]
    return pd.DataFrame.from_records(records, columns=columns).sort_values(list(by)).set_index(list(by))


def _paper_value(papers: list[dict], paper: str, ref: dict, metric: str) -> dict | None:
    for p in papers:
        if p["paper"] == paper and p["metric"] == metric and all(p.get(k) == v for k, v in ref.items()):
            return p
    return None


_BACKBONES = {"efficientnet_lite0": "EfficientNet-Lite0", "resnet18": "ResNet-18", "wide_resnet50_2": "WideResNet-50"}


def _setting(stat: Stat) -> dict:
    """What produced a cell's runs: backbone, weights, data, image size, frozen or end to end."""
    r = stat.runs[0]
    dataset = str(r["dataset"]).split(" (")[0]
    data = {"synthetic": "synthetic", "elpv": "ELPV"}.get(dataset, dataset)
    n_classes = len(r["classes"]) if r.get("classes") else stat.n_avg
    if data == "synthetic" and n_classes > 1:
        data += f" ({n_classes} classes" + (", mixed)" if r.get("classes") else ")")
    weights = str(r.get("weights", ""))
    return {"backbone": _BACKBONES.get(r["backbone"], r["backbone"]),
            "weights": "ImageNet" if weights.startswith("imagenet") else (weights or "?"),
            "data": data, "image_size": r["image_size"],
            "training": _training(r)}


def _training(r: dict) -> str:
    """What trained in a run: frozen (heads only), a shared neck, the top stage, or end to end. Rows made before the
    shared settings existed say only ``train_backbone``."""
    return {"end-to-end": "end to end", "top-stage": "top stage trainable", "neck": "shared neck"}.get(
        r.get("training") or ("end-to-end" if r.get("train_backbone") else "frozen"), "frozen")


def rank_correlation(rows: list[dict], a: str, b: str) -> dict[tuple, float]:
    """Spearman's rank correlation of two Table 2 rows' test scores, run by run.

    Rows ``a`` and ``b`` (``ablation`` names, e.g. "DL-CE" and "DL") are paired when they share the category,
    contamination, seed, training setting and dataset; each pair must hold ``test_scores`` of the same test
    images (``test_labels`` equal). Returns {(category, contamination, seed, training): rho}. With frozen heads
    rho is 1 for DL-CE vs DL by construction; below 1, the extra term changed which images the score ranks first
    (notebook 04, section 6b).
    """
    from scipy.stats import spearmanr

    def key(r):
        return r["category"], r["contamination"], r["seed"], r.get("training") or "frozen", r.get("dataset")

    first = {key(r): r for r in rows if r.get("ablation") == b and r.get("test_scores") is not None}
    out = {}
    for r in rows:
        other = first.get(key(r)) if r.get("ablation") == a and r.get("test_scores") is not None else None
        if other is None:
            continue
        if r["test_labels"] != other["test_labels"]:
            raise ValueError(f"{a} and {b} at {key(r)[:4]} scored different test sets: they cannot be paired "
                             "image by image (were they made with different --leaky or data?)")
        out[key(r)[:4]] = float(spearmanr(r["test_scores"], other["test_scores"])[0])
    return out


def _data_name(data: str) -> str:
    """A run's dataset as the papers name theirs: ``mvtec:PATH`` is MVTec AD, ``visa:PATH`` VisA (the CLI records
    the path it read), ``magnetic_tile`` the magnetic tile."""
    low = data.lower()
    for prefix, name in (("mvtec:", "mvtec ad"), ("visa:", "visa")):
        if low.startswith(prefix):
            return name
    return low.replace("_", " ")


def _reason(paper: dict | None, ours: dict | None, note: str) -> str:
    parts = []
    if paper and ours:
        if paper["dataset"] and not _data_name(ours["data"]).startswith(paper["dataset"].lower()):
            parts.append(f"data: {ours['data']} vs {paper['dataset']}")
        if paper["backbone"] and paper["backbone"] != ours["backbone"]:
            parts.append(f"backbone: {ours['backbone']} vs {paper['backbone']}")
        if paper["image_size"] and str(paper["image_size"]) != str(ours["image_size"]):
            parts.append(f"image size: {ours['image_size']} vs {paper['image_size']} px")
    if note:
        parts.append(note)
    return "; ".join(parts)


def headline_rows(results: dict, papers: list[dict], headlines=HEADLINES) -> list[dict]:
    """One dict per headline: the paper's value (or None), adlkit's and kNN's :class:`Stat`, adlkit's setting,
    the difference to the paper and the reason they differ."""
    out = []
    for h in headlines:
        paper = None if h.paper_ref is None else _paper_value(papers, h.paper, h.paper_ref, h.paper_metric or h.metric)
        ours = summarise(results, h.ours, h.metric)
        knn = summarise(results, h.knn, h.knn_metric or h.metric)
        setting = _setting(ours) if ours.runs else None
        out.append({"headline": h, "paper": paper, "ours": ours, "knn": knn, "setting": setting,
                    "diff": None if paper is None or ours.mean is None else ours.mean - paper["value"],
                    "reason": _reason(paper, setting, h.note)})
    return out


def wall_times(results: dict) -> list[dict]:
    """Measured CPU wall time per class, per method and setting, from the CLI's result files: median (min-max)
    over the runs, with the data, image size and frozen or end to end. A run that writes several rows (AHL's
    five, CADA's per class, kNN's ELPV settings) counts once; a run of one model on several classes mixed (CADA,
    ``knn --unified``) is divided by its number of classes."""
    groups: dict = {}
    for name, data in results.items():
        if not isinstance(data, list):
            continue
        for r in data:
            method = str(r["method"]).split(":")[0]
            n_classes = len(r["classes"]) if r.get("classes") else 1
            key = (method, str(r["dataset"]).split(" (")[0], r["image_size"], _training(r), name,
                   n_classes)
            # which run wrote the row: AHL's five rows, CADA's rows per class and variant, and kNN's ELPV settings
            # share one; an ADL ablation row is its own run (its config differs)
            ident = {k: r.get(k) for k in ("setting", "dataset", "contamination", "shots", "leaky",
                                           "image_size", "seed", "config", "classes")}
            ident["category"] = None if r.get("classes") else r.get("category")
            if r.get("eval_of_run") is not None:  # a learning curve's points are one run
                ident["config"] = {**(r.get("config") or {}), "steps": r["eval_of_run"]}
            run = json.dumps(ident, sort_keys=True, default=str)
            groups.setdefault(key, {})[run] = r["wall_seconds"] / n_classes
    rows = []
    for (method, dataset, size, training, name, n_classes), walls in sorted(groups.items()):
        w = np.asarray(list(walls.values()), dtype=float)
        rows.append({"method": method, "dataset": dataset, "image_size": size, "n_classes": n_classes,
                     "training": training, "file": name, "runs": len(w),
                     "median_s": float(np.median(w)), "min_s": float(w.min()), "max_s": float(w.max())})
    return rows


REAL_DATA = "magnetic_tile"  # the real-defect set every method runs on (adlkit.data.magnetic_tile, MTD_TYPES)
REAL_METRICS = ("image_AUROC", "image_AUPR", "pixel_AUROC", "pixel_AUPRO")


def real_data_rows(results: dict, dataset: str = REAL_DATA) -> list[dict]:
    """The runs on the real-defect set, one row per method, Table row, training setting, contamination and
    protocol: each metric's mean and std over seeds (one run per seed: the set is one category), each defect type's
    image AUROC against the normals (``<type>_image_AUROC``, mean over seeds) and the median wall time per run.
    AHL's and kNN's hard-setting rows (one type held out) are not here: they answer another question. A unified
    model's row for the real class (CADA trained on it with other classes: ``category`` is the set, ``dataset``
    names every class) is here too, its training column saying so."""
    groups: dict = {}
    for name, data in results.items():
        if not isinstance(data, list):
            continue
        for r in data:
            unified = r.get("dataset") != dataset and r.get("category") == dataset and bool(r.get("classes"))
            if (r.get("dataset") != dataset and not unified) or r.get("open_set") == "hard" or not _final(r):
                continue
            training = f"{_training(r)}, {r['image_size']} px" + (
                f", one model for {len(r['classes'])} classes ({r['dataset']})" if unified else "")
            key = (str(r["method"]), str(r.get("ablation") or ""), training,
                   float(r.get("contamination") or 0.0), bool(r.get("leaky")), int(r.get("shots") or 0), name)
            groups.setdefault(key, []).append(r)
    rows = []
    for (method, ablation, training, eps, leaky, shots, name), rs in sorted(groups.items()):
        seeds = sorted({r["seed"] for r in rs})
        if len(seeds) != len(rs):
            raise ValueError(f"{name}: {len(rs)} runs of {method} {ablation} at {eps:.0%} on {dataset} for "
                             f"{len(seeds)} seeds: one run per seed expected (a duplicated run? remove one)")
        stats = {}
        for m in REAL_METRICS:
            v = [r[m] for r in rs if r.get(m) is not None]
            stats[m] = (float(np.mean(v)), float(np.std(v)), len(v)) if v else None
        types = [t for t in MTD_TYPES if any(f"{t}_image_AUROC" in r for r in rs)]
        per_type = {t: float(np.mean([r[f"{t}_image_AUROC"] for r in rs if f"{t}_image_AUROC" in r])) for t in types}
        rows.append({"method": method, "ablation": ablation, "training": training, "contamination": eps,
                     "leaky": leaky, "shots": shots, "file": name, "seeds": seeds, "metrics": stats,
                     "per_type": per_type, "wall_s": float(np.median([r["wall_seconds"] for r in rs]))})
    return rows


# ----------------------------------------------------------------------------- markdown
def _stat_cell(stat: tuple | None) -> str:
    """A table cell for ``(mean, std, n)``: "0.912 ± 0.013 (3)", "0.912 (1)" for one seed, "—" for none."""
    if stat is None:
        return "—"
    return f"{stat[0]:.3f} (1)" if stat[2] == 1 else f"{stat[0]:.3f} ± {stat[1]:.3f} ({stat[2]})"


def _real_data_table(results: dict, methods: tuple[str, ...] | None = None, **where) -> list[str]:
    """The real-data section's table (markdown lines); ``methods``: only these methods' rows, ``where``: only rows
    with these values (e.g. ``contamination=0.0``; the notebooks show their method beside the kNN)."""
    rows = [r for r in real_data_rows(results) if (methods is None or r["method"] in methods)
            and all(r[k] == v for k, v in where.items())]
    if not rows:
        return ["No run on the magnetic tile yet: `python -m adlkit run <method> --data mtd:PATH ... --out "
                "figures/results/cli_<method>_mtd.json`, then `python -m adlkit report`."]
    lines = ["| method | row | training | contamination (protocol) | " + " | ".join(REAL_METRICS)
             + " | image AUROC per defect type | wall time per run | file |",
             "|---|---|---|---|" + "---|" * len(REAL_METRICS) + "---|---|---|"]
    for r in rows:
        cells = [_stat_cell(r["metrics"][m]) for m in REAL_METRICS]
        types = ", ".join(f"{t} {v:.3f}" for t, v in r["per_type"].items()) or "—"
        shots = f", {r['shots']} shot{'s' if r['shots'] > 1 else ''}" if r["shots"] else ""
        lines.append(f"| {r['method']} | {r['ablation']}{shots} | {r['training']} | {r['contamination']:.0%} "
                     f"({'leaky' if r['leaky'] else 'leak-free'}) | " + " | ".join(cells)
                     + f" | {types} | {r['wall_s']:.0f} s | `{r['file']}` |")
    return lines


AHL_COLUMNS = ("DevNet", "DevNet + pseudo", "AHL", "AHL (uniform w)", "AHL (no base training)", "AHL ensemble")


def real_open_set_rows(results: dict, dataset: str = REAL_DATA) -> list[dict]:
    """AHL's question on real defect types: per setting (``general``: the shots drawn from every type;
    ``hard``: from one seen type, scored on the normals and the other types), shots and seen type, each AHL
    row's image AUROC (mean, std, seeds) and, as a training-free reference on the same test images, the kNN's
    (its hard rows score the same normals + unseen types; 0 shots)."""
    groups: dict = {}
    for data in results.values():
        if not isinstance(data, list):
            continue
        for r in data:
            if r.get("dataset") != dataset or r.get("open_set") not in ("general", "hard") or r.get("leaky"):
                continue
            if r["method"] == "ahl":
                column = str(r["ablation"])
            elif r["method"] == "knn" and not r.get("contamination"):
                column = "kNN"
            else:
                continue
            shots = int(r.get("shots") or 0)
            groups.setdefault((r["open_set"], r.get("seen_class") or "", column), {}).setdefault(shots, []).append(r)
    settings = sorted({(o, seen, shots) for (o, seen, c), by_shots in groups.items() if c != "kNN"
                       for shots in by_shots}, key=lambda k: (k[0] != "general", k[1], -k[2]))
    rows = []
    for o, seen, shots in settings:
        cells = {}
        for column in (*AHL_COLUMNS, "kNN"):
            rs = groups.get((o, seen, column), {}).get(0 if column == "kNN" else shots, [])
            v = [r["image_AUROC"] for r in rs if r.get("image_AUROC") is not None]
            cells[column] = (float(np.mean(v)), float(np.std(v)), len(v)) if v else None
        rows.append({"open_set": o, "seen_class": seen or None, "shots": shots, "cells": cells})
    return rows


def _real_open_set_table(results: dict) -> list[str]:
    rows = real_open_set_rows(results)
    if not rows:
        return []
    lines = ["AHL's open-set question on the real types (image AUROC; `cli_ahl_mtd.json`). *General*: the labelled "
             "anomalies come from every type; *hard*: from the seen type only, and the test holds the normals and "
             "the four other types. The kNN column is training-free (no labelled anomaly) on the same test images.",
             "", "| setting | seen type | shots | " + " | ".join((*AHL_COLUMNS, "kNN")) + " |",
             "|---|---|---|" + "---|" * (len(AHL_COLUMNS) + 1)]
    for r in rows:
        cells = [_stat_cell(c) for c in r["cells"].values()]
        lines.append(f"| {r['open_set']} | {r['seen_class'] or 'all'} | {r['shots']} | " + " | ".join(cells) + " |")
    return lines


def real_data_table(results: dict, *methods: str, **where) -> str:
    """REPORT's magnetic-tile table as markdown, only ``methods``' rows (all without) and those whose
    :func:`real_data_rows` fields equal ``where``, for a notebook to show its method's committed real-data runs,
    e.g. ``real_data_table(load_results(RESULTS), "ckaad", "knn", contamination=0.0)``."""
    return "\n".join(_real_data_table(results, methods or None, **where))


# ADL's Table 1 protocol question: the same detectors, leak-free (adlkit's default) and leaky (the paper's code).
# (data, label) -> (method, Table 2 row); frozen heads at 256 px. On the tile ADL ran as its full row, Proposed.
PROTOCOL_ROWS = {("synthetic", "kNN"): ("knn", None), ("synthetic", "DL"): ("adl", "DL"),
                 ("synthetic", "ADL"): ("adl", "Wt-SoftDL-CE"), (REAL_DATA, "kNN"): ("knn", None),
                 (REAL_DATA, "DL"): ("adl", "DL"), (REAL_DATA, "ADL"): ("adl", "Proposed")}
PROTOCOL_LEVELS = (0.05, 0.1, 0.15, 0.2)
PROTOCOL_FILES = ("cli_knn.json", "cli_knn_leaky.json", "cli_adl_robustness.json", "cli_adl_leaky.json",
                  "cli_knn_mtd.json", "cli_knn_mtd_leaky.json", "cli_adl_mtd.json", "cli_adl_mtd_leaky.json")


def protocol_rows(results: dict) -> tuple[dict, dict]:
    """ADL's Table 1 under both protocols, from every committed file: ``(table, leak)``.

    ``table[(data, label, leaky, contamination)] = (mean, std, seeds)`` of the per-seed class mean (0% counts for
    both protocols: nothing leaks); ``leak[(data, label, contamination)] = (mean, std, seeds)`` of leak-free minus
    leaky, paired by seed (the seeds run under both). Frozen heads, 256 px, the general test set only."""
    picked = []
    for name in PROTOCOL_FILES:  # the grids made for this question (other files repeat some runs: not twice)
        data = results.get(name)
        if not isinstance(data, list):
            continue
        for r in data:
            if r.get("image_size") != 256 or r.get("open_set") == "hard" or _training(r) != "frozen" or not _final(r):
                continue
            for (d, label), (method, ablation) in PROTOCOL_ROWS.items():
                if r.get("dataset") == d and r["method"] == method and (ablation is None or r.get("ablation") == ablation):
                    for leaky in ((False, True) if not r["contamination"] else (bool(r.get("leaky")),)):
                        picked.append({**r, "data": d, "label": label, "leaky": leaky})
    if not picked:
        return {}, {}
    t = seed_table(picked, by=("data", "label", "leaky", "contamination"))
    table = {k: (float(v["image_AUROC"]), float(v["image_AUROC_std"]), int(v["n_seeds"])) for k, v in t.iterrows()
             if v["n_seeds"]}
    per_seed: dict = {}
    for r in picked:
        per_seed.setdefault((r["data"], r["label"], r["leaky"], r["contamination"]), {}).setdefault(
            r["seed"], {})[r["category"]] = r["image_AUROC"]
    leak = {}
    for (d, label, leaky, e), seeds in per_seed.items():
        other = per_seed.get((d, label, True, e))
        if leaky or not e or other is None:
            continue
        n_cls = max(len(c) for c in seeds.values())
        common = [s for s in seeds if s in other and len(seeds[s]) == len(other[s]) == n_cls]
        if common:
            diff = [np.mean(list(seeds[s].values())) - np.mean(list(other[s].values())) for s in common]
            leak[(d, label, e)] = (float(np.mean(diff)), float(np.std(diff)), len(diff))
    return table, leak


def _protocol_section(results: dict, papers: list[dict]) -> list[str]:
    table, leak = protocol_rows(results)
    if not any(k[2] and k[3] for k in table):
        return []
    ref = {p["method"]: p["value"] for p in papers if p["paper"] == "ADL" and p["source"] == "Table 1"
           and p["dataset"] == "MVTec AD" and p["setting"] == "contamination 10%, mean over classes"}
    lines = ["## ADL's Table 1 protocol: leak-free and leaky", "",
             f"ADL's Table 1 (PatchCore {ref.get('PatchCore', float('nan')):.3f} against ADL "
             f"{ref.get('ADL', float('nan')):.3f} average image AUROC at 10% on MVTec AD) comes from its "
             "code's protocol, which leaves the anomalies it moves into the training set in the test set as well "
             "(*leaky*, adlkit's `--leaky`); adlkit's default removes them (*leak-free*). The same detectors under "
             "both (frozen heads, 256 px; *ADL* is Wt-SoftDL-CE on the synthetic set and Proposed on the tile; "
             "mean ± std over seeds of the class mean, leak-free / leaky):", "",
             "| data | contamination | " + " | ".join(f"{lab} (leak-free / leaky)" for lab in ("kNN", "DL", "ADL"))
             + " | kNN's loss to the leak (paired by seed) |", "|---|---|---|---|---|---|"]

    verdicts = []
    for d in ("synthetic", REAL_DATA):
        levels = [e for e in PROTOCOL_LEVELS if any(k[0] == d and k[2] and k[3] == e for k in table)]
        for e in levels:
            lk = leak.get((d, "kNN", e))
            lines.append(f"| {d} | {e:.0%} | " + " | ".join(f"{_stat_cell(table.get((d, lab, False, e)))} / "
                                                            f"{_stat_cell(table.get((d, lab, True, e)))}"
                                                            for lab in ("kNN", "DL", "ADL"))
                         + f" | {'—' if lk is None else f'{lk[0]:+.3f} ± {lk[1]:.3f} ({lk[2]})'} |")
        both = [e for e in levels if all((d, lab, lk, e) in table for lab in ("kNN", "DL", "ADL") for lk in (False, True))]
        if both:
            ahead = [e for e in both if table[(d, "kNN", False, e)][0] > max(table[(d, lab, False, e)][0]
                                                                          for lab in ("DL", "ADL"))]
            behind = [e for e in both if table[(d, "kNN", True, e)][0] < min(table[(d, lab, True, e)][0]
                                                                          for lab in ("DL", "ADL"))]
            verdicts.append(f"On the {'synthetic set' if d == 'synthetic' else 'magnetic tile'}, leak-free, the kNN is "
                            f"ahead of DL and ADL at {_levels(ahead, both)}; leaky, it is behind both at "
                            f"{_levels(behind, both)}.")
    moved = [abs(v[0]) for (d, lab, e), v in leak.items() if lab != "kNN"]
    knn = [v[0] for (d, lab, e), v in leak.items() if lab == "kNN"]
    lines += ["", " ".join(verdicts)]
    if moved and knn:
        lines += ["", f"The leak moves the learned heads by at most {max(moved):.3f} and costs the kNN up to "
                      f"{max(knn):.3f}: the kNN's memory is a bank of training patches, so a test anomaly whose own "
                      "copy was trained on as normal scores as normal; the heads keep no such copy. Where the "
                      "ranking flips with the protocol, the paper's ADL − PatchCore margin measures the protocol, "
                      "not robustness to contamination."]
    return lines


def _levels(chosen: list[float], of: list[float]) -> str:
    if not chosen:
        return "no level"
    return "every level run (" + ", ".join(f"{e:.0%}" for e in of) + ")" if chosen == of else ", ".join(
        f"{e:.0%}" for e in chosen) + f" of {len(of)} levels"


def _fmt_diff(d: float | None) -> str:
    return "" if d is None else f"{d:+.3f}"


def _paper_tables(rows: list[dict], level: str) -> list[str]:
    lines = []
    for paper, ref in PAPERS.items():
        mine = [r for r in rows if r["headline"].paper == paper]
        if not mine:
            continue
        lines += [f"{level} {paper}", "", f"{ref}.", "",
                  "| row | metric | paper (source, data, backbone) | adlkit (mean ± std, seeds) | kNN baseline | "
                  "adlkit − paper | adlkit's setting | why they differ |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in mine:
            h, p, s = r["headline"], r["paper"], r["setting"]
            if h.paper_ref is None:
                paper_cell = "not in the paper¹"
            elif p is None:
                raise ValueError(f"adlkit/paper_numbers.csv has no {h.paper} row {h.paper_ref} ({h.paper_metric or h.metric})"
                                 f" for the headline {h.what!r}: add it, or correct the headline's paper_ref")
            else:
                who = ", ".join(x for x in (p["source"], p["dataset"], p["backbone"]) if x)
                paper_cell = f"{p['value']:.3f} ({who})"
            setting = (f"{s['backbone']} ({s['weights']}), {s['training']}, {s['data']}, {s['image_size']} px"
                       if s else "not run yet²")
            knn_cell = r["knn"].cell() if h.knn is not None else "—"
            lines.append(f"| {h.what} | {h.metric} | {paper_cell} | {r['ours'].cell()} | {knn_cell} | "
                         f"{_fmt_diff(r['diff'])} | {setting} | {r['reason']} |")
        lines.append("")
    lines += ["¹ *not in the paper*: the paper reports no number for this row (another data set, or a "
              "contamination level its tables do not have); adlkit's row is shown for comparison with the rows above.",
              "", "² *not run yet*: no file in `figures/results/` holds these runs yet. Run the grid (`python -m adlkit "
              "run ... --out figures/results/<file>.json`) and `python -m adlkit report`: the cell fills in.", ""]
    return lines


def _wall_table(results: dict) -> list[str]:
    lines = ["| method | data | image size | training | runs | wall time per class: median (min–max) | file |",
             "|---|---|---|---|---|---|---|"]
    for w in wall_times(results):
        mixed = f", one model on {w['n_classes']} classes (÷ {w['n_classes']})" if w["n_classes"] > 1 else ""
        lines.append(f"| {w['method']} | {w['dataset']} | {w['image_size']} px | {w['training']}{mixed} | {w['runs']} | "
                     f"{w['median_s']:.0f} s ({w['min_s']:.0f}–{w['max_s']:.0f} s) | `{w['file']}` |")
    return lines


# The README's headline: one or two rows per paper, (paper, row, metric) of :data:`HEADLINES`
README_HEADLINES = (("ADL", "ADL, 10% contamination", "image_AUROC"),
                    ("ADL", "DL, 10% contamination (Table 2)", "image_AUROC"),
                    ("multi-cue ADL", "fused score, 10 shots, 10% contamination", "image_AUROC"),
                    ("multi-cue ADL", "gradient maps, 10 shots, 10% contamination", "pixel_AUROC"),
                    ("CADA", "RD + CADA, pooled", "image_AUROC"),
                    ("CKAAD", "CKAPatch (+patch)", "image_AUROC"),
                    ("AHL", "AHL, general, 10 shots", "image_AUROC"),
                    ("AHL", "AHL, hard, 10 shots", "image_AUROC"))
_SHORT_PAPERS = {"ADL": "ADL (Das, Pang & Bhuyan, 2024)", "multi-cue ADL": "multi-cue ADL (Das & Bhuyan, 2026)",
                 "CADA": "CADA (Guo et al., 2024)", "CKAAD": "CKAAD (Fang et al., 2024)", "AHL": "AHL (Zhu et al., 2024)"}


def readme_headline(rows: list[dict]) -> list[str]:
    """The README's short table (:data:`README_HEADLINES`) and, counted from it, how often the training-free kNN
    baseline is ahead of the learned method."""
    by_key = {(r["headline"].paper, r["headline"].what, r["headline"].metric): r for r in rows}
    missing = [k for k in README_HEADLINES if k not in by_key]
    if missing:
        raise ValueError(f"README_HEADLINES names {missing[0]}, which is not a row of HEADLINES: correct one or the other")
    lines = ["| paper | row | metric | the paper (its data) | adlkit (CPU) | kNN baseline | adlkit's data |",
             "|---|---|---|---|---|---|---|"]
    ahead = both = 0
    for key in README_HEADLINES:
        r = by_key[key]
        h, p = r["headline"], r["paper"]
        paper_cell = "—" if p is None else f"{p['value']:.3f} ({p['dataset']})"
        data = r["setting"]["data"] if r["setting"] else ""
        knn = r["knn"] if h.knn is not None else None
        lines.append(f"| {_SHORT_PAPERS[h.paper]} | {h.what} | {h.metric.replace('_', ' ')} | {paper_cell} | "
                     f"{r['ours'].cell()} | {knn.cell() if knn else '—'} | {data} |")
        if knn is not None and knn.mean is not None and r["ours"].mean is not None:
            both += 1
            ahead += knn.mean > r["ours"].mean
    lines += ["", f"**The lesson of these numbers:** the training-free kNN baseline (PatchCore-style, frozen ImageNet "
                  f"features, no training) is ahead of the learned method in **{ahead} of the {both}** rows above where "
                  "both ran, on the same data and features. Every row is a mean ± std over seeds (their number in "
                  "brackets); the papers' numbers are on their own data (MVTec AD, ELPV) with fine-tuned backbones, so "
                  "the columns are not a race: [docs/results.md](docs/results.md) has every row with its setting and "
                  "why it differs, and `figures/REPORT.md` the real-defect table and wall times."]
    return lines


# ----------------------------------------------------------------------------- per class
# (label, file, where): each method's headline setting on the synthetic set, class by class
_SYNTHETIC_CLASSES = ("capsule", "fabric", "metal_plate", "tile", "washer")  # adlkit.data.SYNTHETIC_CLASSES
PER_CLASS = (
    ("kNN, 0%", "cli_knn.json", {**_SYN, "contamination": 0.0, "image_size": 256, "leaky": False}),
    ("kNN, 10%", "cli_knn.json", {**_SYN, "contamination": 0.1, "image_size": 256, "leaky": False}),
    ("DL, 10%", "cli_adl_robustness.json", {**_SYN, "ablation": "DL", "contamination": 0.1}),
    ("ADL (Wt-SoftDL-CE), 10%", "cli_adl_robustness.json", {**_SYN, "ablation": "Wt-SoftDL-CE", "contamination": 0.1}),
    ("multi-cue fused, 10 shots, 10%", "cli_multicue.json", {**_SYN, "shots": 10, "contamination": 0.1}),
    ("RD, one model for all classes", "cli_cada.json", {**_SYN, "variant": "unaligned", "ablation": "CADA"}),
    ("CADA, one model for all classes", "cli_cada.json", {**_SYN, "variant": "cada", "ablation": "CADA"}),
    ("kNN, one bank for all classes", "cli_knn_unified.json", _SYN),
    ("CKAAD +patch (128 px)", "cli_ckaad.json", {**_SYN, "ablation": "+patch"}),
    ("DevNet, 10 shots (128 px)", "cli_ahl.json", {"open_set": "general", "shots": 10, "ablation": "DevNet",
                                                   "image_size": 128, "category": _SYNTHETIC_CLASSES}),
    ("AHL, 10 shots (128 px)", "cli_ahl.json", {"open_set": "general", "shots": 10, "ablation": "AHL",
                                                "image_size": 128, "category": _SYNTHETIC_CLASSES}),
)


def per_class_rows(results: dict, metric: str = "image_AUROC") -> tuple[list[str], list[dict]]:
    """(the classes, one line per :data:`PER_CLASS` setting that has runs): per class the mean ± std over seeds of
    ``metric``, as ``(mean, std, n)``; a method's mean over classes hides which classes it loses on."""
    lines, classes = [], set()
    for label, name, where in PER_CLASS:
        rows = [r for r in results.get(name) or [] if _matches(r, where) and r.get(metric) is not None]
        if not rows:
            continue
        table = seed_table(rows, metrics=(metric,), by=("category",), average=None)
        cells = {cat: (table.loc[cat, metric], table.loc[cat, f"{metric}_std"], int(table.loc[cat, "n_seeds"]))
                 for cat in table.index}
        classes |= set(cells)
        lines.append({"setting": label, "file": name, **cells})
    return [c for c in (*_SYNTHETIC_CLASSES, "pooled") if c in classes], lines


def _per_class_table(results: dict, metric: str) -> list[str]:
    classes, lines = per_class_rows(results, metric)
    if not lines:
        return []
    names = [c if c != "pooled" else "all classes, one threshold" for c in classes]
    out = [f"| setting | {' | '.join(names)} | file |", "|---|" + "---|" * (len(classes) + 1)]
    out += [f"| {line['setting']} | " + " | ".join(_stat_cell(line.get(c)) for c in classes)
            + f" | `{line['file']}` |" for line in lines]
    return out


def _per_class_section(results: dict) -> list[str]:
    return ["## Per class: the synthetic set", "",
            "Each method's headline setting class by class (mean ± std over seeds, their number in brackets); the "
            "tables above average these. CADA's and RD's cells are one model trained on the five classes mixed, "
            "scored per class; AHL's test sets hold 20 anomalies per type (its hard setting needs some left).", "",
            "**Image AUROC**", "", *_per_class_table(results, "image_AUROC"), "",
            "**Pixel AUPRO** (FPR ≤ 0.3; the methods that make maps)", "", *_per_class_table(results, "pixel_AUPRO"),
            ""]


def render(results: dict, papers: list[dict]) -> dict[str, str]:
    """``{"report": figures/REPORT.md, "readme_headline": the README's short table, "docs_results": docs/results.md's
    full tables, "docs_walltime": docs/data.md's wall-time table}``, all from the same rows."""
    rows = headline_rows(results, papers)
    files = [f"- `{name}`: " + (f"{len(d)} runs" if isinstance(d, list) else f"notebook {d['mode']} mode, "
                                 f"{d['wall_time_s']:.0f} s, {d['date']}") for name, d in results.items()]
    intro = ["Every adlkit number was measured on a 2-core CPU without a GPU. A cell is the mean ± std (population, "
             "over seeds; their number in brackets) of the per-seed mean over classes. Baseline: " + BASELINE + ".", ""]
    report = ["# adlkit reproduction report", "",
              "Generated by `python -m adlkit report` from `figures/results/*.json` and `adlkit/paper_numbers.csv`; "
              "do not edit by hand (CI checks it is current).", "", *intro, *_paper_tables(rows, "##"),
              "## Real defects: the magnetic tile", "",
              "Y. Huang, C. Qiu, K. Yuan. *Surface defect saliency of magnetic tile*. The Visual Computer 36, 2020: "
              "1,344 real tiles, 392 with one of five defect types and its mask (`adlkit.data.magnetic_tile`: 666 "
              "defect-free tiles train, 286 and every defect test, one fixed split). No paper in this series reports "
              "it, so there is no paper column: mean ± std over seeds (their number in brackets). *Leak-free*: "
              "the contaminated anomalies leave the test set (adlkit's default); *leaky*: they stay in it (ADL's "
              "code).", "", *_real_data_table(results), "", *_real_open_set_table(results), "",
              *_protocol_section(results, papers), "", *_per_class_section(results),
              "## Wall time per class (CPU)", "", *_wall_table(results), "", "## Result files read", "", *files, ""]
    full = ["## What adlkit reproduces: the papers' numbers beside ours", "",
            "Generated by `python -m adlkit report` (also written to `figures/REPORT.md`); notebook 09 plots it.",
            "", *intro, *_paper_tables(rows, "###")]
    return {"report": "\n".join(report), "readme_headline": "\n".join(readme_headline(rows)) + "\n",
            "docs_results": "\n".join(full).rstrip() + "\n", "docs_walltime": "\n".join(_wall_table(results)) + "\n"}


# ----------------------------------------------------------------------------- files
# generated section -> (the file that holds it, relative to the repository, and its markers)
MARKERS = {"readme_headline": ("README.md", "<!-- headline:start -->", "<!-- headline:end -->"),
           "docs_results": ("docs/results.md", "<!-- results:start -->", "<!-- results:end -->"),
           "docs_walltime": ("docs/data.md", "<!-- walltime:start -->", "<!-- walltime:end -->")}


def replace_section(text: str, section: str, start: str, end: str, name: str = "README.md") -> str:
    """``text`` with what lies between the markers ``start`` ... ``end`` replaced by ``section``."""
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        raise ValueError(f"{name} has no '{start}' ... '{end}' markers: put them where the generated section goes")
    return text[: i + len(start)] + "\n" + section + text[j:]


def _outputs(root: Path) -> dict[Path, str]:
    if not (root / "README.md").is_file():
        raise FileNotFoundError(f"{root.resolve()} has no README.md: run `python -m adlkit report` from the adlkit "
                                "repository (or pass --root <repository>)")
    results = load_results(root / "figures" / "results")
    text = render(results, load_paper_numbers())
    out = {root / "figures" / "REPORT.md": text["report"]}
    for key, (name, start, end) in MARKERS.items():
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: it holds a generated section ({start} ... {end}); restore it "
                                    "from git")
        current = out.get(path, path.read_text(encoding="utf-8"))
        out[path] = replace_section(current, text[key], start, end, name)
    return out


def write_report(root: str | Path = ".") -> list[Path]:
    """Write ``figures/REPORT.md`` and the generated sections of the README and docs/; returns the files that changed."""
    changed = []
    for path, text in _outputs(Path(root)).items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed


def check_report(root: str | Path = ".") -> list[Path]:
    """The files that are not current with ``figures/results`` (empty when all are)."""
    return [path for path, text in _outputs(Path(root)).items()
            if not path.exists() or path.read_text(encoding="utf-8") != text]
