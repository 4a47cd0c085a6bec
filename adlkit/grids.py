"""The experiment grids of ``python -m adlkit run METHOD``: for each method, the grid's cells (one model trained and
scored each) and its ``run_cell(cell) -> list[RunRecord]``; :func:`adlkit.runs.run_grid` runs them all the same way.

Each ``<method>(options)`` takes the options of ``python -m adlkit run <method>`` (an ``argparse.Namespace``, or any
object with those attributes: ``data``, ``category``, ``all_categories``, ``seed``, ``image_size``, ``backbone``,
``device``, ``out``, ``resume``, ``overwrite``, ``shard``, ``save_maps``, ``set`` and the method's own) and returns
the records it wrote.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from . import metrics, runs
from .data import specs
from .runs import Cell, Gallery, RunRecord, SavedModel

__all__ = ["adl", "multicue", "cada", "ckaad", "knn", "ahl", "AHL_ROWS", "METHODS"]

AHL_ROWS = ("DevNet", "DevNet + pseudo", "AHL (uniform w)", "AHL (no base training)", "AHL", "AHL ensemble")


# ----------------------------------------------------------------------------- shared by every method
def _device(options):
    import torch

    from . import config

    return torch.device(options.device) if options.device else config.device()


def _configure(config_class, base, changes: dict, assignments) -> tuple[object, dict]:
    """``base`` with the command's options (``changes``, None = not given) and ``--set``'s (returned apart, as
    the row's ``setting``); refuses random backbone weights before any work (:func:`adlkit.runs.require_imagenet`)."""
    base = dataclasses.replace(base, **{k: v for k, v in changes.items() if v is not None})
    settings = runs.config_changes(config_class, assignments)
    runs.require_imagenet(dataclasses.replace(base, **settings))
    return base, settings


def _setting(settings: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(settings.items()))


def _data(options, root: Path | None = None) -> dict:
    return {c: (train, test) for c, train, test in specs.datasets(options.data, options.category,
                                                                     options.all_categories, options.image_size, root)}


def _per_type(options, test, scores, labels) -> dict:
    """Each defect type of ``test`` against its normals, for the real-defect sets whose types are named across the
    dataset (the magnetic tile, ELPV; none when its anomalies have fewer than two types). Not for MVTec-layout
    folders: their types are per class (MVTec AD has 73), and a mixed test set would pool same-named types of
    different classes; :func:`adlkit.metrics.evaluate` gives them on any test set (``types=``)."""
    if not specs.typed_anomalies(options.data):
        return {}
    return metrics.per_type_metrics(scores, labels, specs.defect_types(test))


def _grid(options, cells: list[Cell], run_cell, config_class) -> list[RunRecord]:
    return runs.run_grid(cells, run_cell, Path(options.out) if options.out else None, resume=options.resume,
                         shard=options.shard, overwrite=options.overwrite, save_maps=getattr(options, "save_maps", False),
                         save_models=getattr(options, "save_models", False),
                         defaults=dataclasses.asdict(config_class()))


def _ckpt(options, name: str) -> Path | None:
    return Path(options.checkpoint) / name if options.checkpoint else None


def _texture_kind(textures: dict, sources) -> str:
    """What a row records as its texture source (DTD, built-in, ...); describing a folder decodes it: once each."""
    from .synth import PseudoAnomaly

    if sources not in textures:
        textures[sources] = PseudoAnomaly(8, sources=sources).source_kind
    return textures[sources]


def _tag(ablation: str | None) -> str:
    return f"_{ablation.replace(' ', '_').replace('+', 'plus')}" if ablation else ""


# ----------------------------------------------------------------------------- ADL and multi-cue ADL
def adl(options) -> list[RunRecord]:
    """ADL (``options.method == "adl"``) or multi-cue ADL (``"multicue"``, with ``options.shots``): one run per
    category x contamination x seed x Table 2 row (x shots)."""
    from .methods.adl import ADLConfig
    from .methods.multicue import MultiCueConfig

    runs.check_output(options.out, options.resume, options.overwrite)
    config_class = MultiCueConfig if options.method == "multicue" else ADLConfig
    base = config_class.authors_code() if options.variant == "authors" else config_class()
    base, settings = _configure(config_class, base, _adl_changes(options), options.set)
    for name in options.ablation or []:
        base.ablation(name)  # an unknown row fails before any run
    data, textures = _data(options), {}
    cells = [_adl_cell(options, base, settings, data, textures, c, e, s, a, k) for c in data
             for e in options.contamination for s in options.seed for a in options.ablation or [None]
             for k in getattr(options, "shots", None) or [0]]
    return _grid(options, cells, _run_adl_cell, config_class)


multicue = adl


def _adl_changes(options) -> dict:
    changes = {"backbone": options.backbone, "image_size": options.image_size, "epochs": options.epochs,
               "steps_per_epoch": options.steps, "lr": options.lr, "sources": options.sources,
               "train_backbone": options.train_backbone}
    if options.training is not None:  # --training frozen | neck | top-stage | end-to-end
        changes.update(train_backbone=options.training == "end-to-end",
                       shared=options.training if options.training in ("neck", "top-stage") else "none")
    return changes


def _adl_cell(options, base, settings, data, textures, cat, eps, seed, ablation, shots) -> Cell:
    config = dataclasses.replace(base.ablation(ablation) if ablation else base, seed=seed)
    config = dataclasses.replace(config, **settings)
    multi = options.method == "multicue"
    record = RunRecord(method=options.method, variant=options.variant, ablation=config.ablation_name() or "custom",
                       setting=_setting(settings), dataset=specs.dataset_label(options.data), category=cat,
                       contamination=eps, shots=shots, leaky=options.leaky, train_backbone=config.train_backbone,
                       training=config.training, backbone=config.backbone, image_size=config.image_size,
                       texture_source=_texture_kind(textures, config.sources), seed=seed,
                       config=dataclasses.asdict(config))
    name = (f"{options.method}{f' [{ablation}]' if ablation else ''} {cat} contamination={eps:g} seed={seed}"
            + (f" shots={shots}" if multi else ""))
    ckpt = _ckpt(options, f"{cat}_c{eps:g}_s{seed}{_tag(ablation)}" + (f"_shots{shots}" if multi else ""))
    parts = (options.method, ablation, config.training, cat, f"c{eps:g}", "leaky" if options.leaky else "",
             f"s{seed}", f"shots{shots}" if multi else "")
    return Cell(name, [record], dict(options=options, config=config, data=data[cat], ckpt=ckpt, parts=parts,
                                     device=_device(options)))


def _run_adl_cell(cell: Cell) -> list[RunRecord]:
    from .methods.adl import run_contaminated
    from .methods.multicue import run_multicue

    p, record = cell.params, cell.planned[0]
    options, config, (train, test), device = p["options"], p["config"], p["data"], p["device"]
    kwargs = dict(checkpoint_dir=p["ckpt"], resume=options.resume, overwrite=options.overwrite,
                  progress=options.progress, leaky=options.leaky)
    if options.method == "multicue":
        r = run_multicue(config, train, test, record.contamination, record.shots, device, **kwargs)
    else:
        r = run_contaminated(config, train, test, record.contamination, device, **kwargs)
    hist, split = r["history"], r["split"]
    return [dataclasses.replace(
        record, backbone=hist["backbone"], weights=hist["weights"], maps_from=r.get("maps_from"), device=str(device),
        train_seconds=round(hist["seconds"], 2),
        # the test images' scores and labels in the test set's order (the same for every row of one class,
        # contamination and seed): rows compare image by image (report.rank_correlation)
        test_scores=[round(float(v), 6) for v in r["scores"]], test_labels=[int(v) for v in r["labels"]],
        metrics={**runs.metrics_of(r), **_per_type(options, split.test, r["scores"], r["labels"]),
                 "n_contaminated": split.report.n_contaminated, "n_test": len(split.test)},
        gallery=Gallery(p["parts"], split.test, r["scores"], r["maps"], {"maps_from": r.get("maps_from")}),
        model=SavedModel(options.method, r["model"], p["parts"]))]


# ----------------------------------------------------------------------------- CADA
def cada(options) -> list[RunRecord]:
    """One CADA model per seed (x named row) on the chosen classes mixed; every variant scored from the same RD."""
    from .data import categories
    from .methods.cada import CADAConfig

    runs.check_output(options.out, options.resume, options.overwrite)
    root = specs.dataset_root(options.data, options.image_size)
    cats = specs.category_list(root, options.category, options.all_categories)
    extra = specs.extra_classes(options.extra_class)  # e.g. the magnetic tile, read as published
    classes = [*cats, *extra]
    if len(classes) < 2:
        raise ValueError(f"CADA trains one model on several classes: name two or more with --category A B "
                         f"(available: {categories(root)}) or pass --all-categories")
    changes = {"backbone": options.backbone, "image_size": options.image_size, "rd_iters": options.iters,
               "head_iters": options.head_iters}
    base, settings = _configure(CADAConfig, CADAConfig(), changes, options.set)
    for name in options.ablation or []:
        base.ablation(name)  # an unknown row fails before any run
    data = dict(root=root, cats=cats, extra=extra, classes=classes, device=_device(options), options=options)
    cells = [_cada_cell(data, base, settings, seed, name) for seed in options.seed for name in options.ablation or [None]]
    return _grid(options, cells, _run_cada_cell, CADAConfig)


def _cada_cell(data: dict, base, settings: dict, seed: int, ablation: str | None) -> Cell:
    options, classes = data["options"], data["classes"]
    config = dataclasses.replace(dataclasses.replace(base.ablation(ablation) if ablation else base, seed=seed),
                                 **settings)
    common = RunRecord(method="cada:cada", variant="cada", category="pooled", ablation=config.ablation_name() or "custom",
                       setting=_setting(settings), dataset="+".join([specs.dataset_label(options.data), *data["extra"]]),
                       contamination=0.0, shots=0, leaky=False, train_backbone=False, backbone=config.backbone,
                       image_size=config.image_size, seed=seed, config=dataclasses.asdict(config), classes=classes)

    def describe(records: list[RunRecord]) -> str:
        lines = [f"{r.method} {r.category}: {runs.summary(r.to_row())}" for r in records
                 if r.category in ("pooled", "mean")]
        r = records[0]
        return "\n  ".join([*lines, f"{r.wall_seconds:.0f} s on {r.device} ({r.backbone}, {r.weights})"])

    return Cell(f"cada{f' [{ablation}]' if ablation else ''} {'+'.join(classes)} seed={seed}", [common],
                dict(data, config=config, ckpt=_ckpt(options, f"s{seed}{_tag(ablation).replace('plus', '+')}"),
                     parts=("cada", ablation, "-".join(classes), f"s{seed}")), describe)


def _run_cada_cell(cell: Cell) -> list[RunRecord]:
    import torch

    from .methods.cada import run_cada

    p, common = cell.params, cell.planned[0]
    config, options, device = p["config"], p["options"], p["device"]
    train, test = specs.mixed_classes(p["root"], p["cats"], p["extra"], config.image_size)
    r = run_cada(config, train, test, device, checkpoint_dir=p["ckpt"], resume=options.resume,
                 overwrite=options.overwrite, progress=options.progress)
    hist = r["model"].history
    base = {**common.to_row(), "backbone": hist["rd"]["backbone"], "weights": hist["rd"]["weights"],
            "device": str(device), "n_train": hist["rd"]["n_train"],
            "train_seconds": round(hist["rd"]["seconds"] + hist["head_seconds"], 2)}
    records = []
    for row in r["rows"]:
        row = {**base, **row}
        if row["category"] in p["extra"]:  # a real class's defect types, each against its normals
            keep = [i for i, s in enumerate(test.samples) if s.class_name == row["category"]]
            row.update(metrics.per_type_metrics(torch.as_tensor(r["scores"][row["variant"]])[keep],
                                                r["labels"][keep], specs.defect_types(test.subset(keep))))
        records.append(RunRecord.from_row(row, stamped=False))
    # the maps and the model belong to the row of the aligned score on the mixed test set (its id and threshold)
    pooled = next(r for r in records if r.method == "cada:cada" and r.category == "pooled")
    pooled.gallery = Gallery(p["parts"], test, r["scores"]["cada"], r["maps"],
                             {"method": "cada", "score": "CADA (aligned, one threshold for every class)"})
    pooled.model = SavedModel("cada", r["model"], p["parts"])
    return records


# ----------------------------------------------------------------------------- CKAAD
def ckaad(options) -> list[RunRecord]:
    """CKAAD per category: rows of Table 3 x seeds (x categories), one model each; ``--eval-at`` adds a row per
    step of each run (a learning curve)."""
    from .methods.ckaad import CKAADConfig

    runs.check_output(options.out, options.resume, options.overwrite)
    data = _data(options)
    changes = {"backbone": options.backbone, "image_size": options.image_size, "steps": options.steps,
               "anomalies": options.anomalies, "shots": options.shots}
    base, settings = _configure(CKAADConfig, CKAADConfig(), changes, options.set)
    rows = options.ablation or ["+patch"]
    for name in rows:
        _ = dataclasses.replace(base.ablation(name), **settings).k_pixels  # an unknown row or a bad k fails first
    eval_at = sorted(set(options.eval_at or []) | ({base.steps} if options.eval_at else set()))
    shared = dict(options=options, data=data, eval_at=eval_at, device=_device(options), textures={})
    cells = [_ckaad_cell(shared, base, settings, c, s, a) for c in data for s in options.seed for a in rows]
    return _grid(options, cells, _run_ckaad_cell, CKAADConfig)


def _ckaad_cell(shared: dict, base, settings: dict, cat: str, seed: int, ablation: str) -> Cell:
    options = shared["options"]
    config = dataclasses.replace(base.ablation(ablation), seed=seed, **settings)
    row = RunRecord(method="ckaad", variant="paper", ablation=ablation, setting=_setting(settings),
                    dataset=specs.dataset_label(options.data), category=cat, contamination=0.0,
                    shots=config.shots if config.anomalies == "real" else 0, leaky=False, train_backbone=False,
                    backbone=config.backbone, image_size=config.image_size, seed=seed,
                    texture_source=(_texture_kind(shared["textures"], config.sources) if config.anomalies == "perlin"
                                    else None),
                    config=dataclasses.asdict(config))
    # --eval-at: one row per step, its config's steps = that step (the model at step s of the run is a run of
    # s steps); eval_of_run = the run's length
    curve = [dataclasses.replace(row, config={**row.config, "steps": s}, eval_of_run=config.steps)
             for s in shared["eval_at"]]

    def describe(records: list[RunRecord]) -> str:
        steps = [f"step {r.config['steps']}: {runs.summary(r.to_row())}" for r in records[:len(curve)]]
        last = records[-1]
        return "\n  ".join([*steps, f"{runs.summary(last.to_row())} ({last.wall_seconds:.0f} s on {last.device})"])

    return Cell(f"ckaad [{ablation}] {cat} seed={seed}", curve or [row],
                dict(shared, config=config, row=row, curve=curve, cat=cat,
                     ckpt=_ckpt(options, f"{cat}_s{seed}_{ablation.replace('+', 'plus')}")), describe)


def _run_ckaad_cell(cell: Cell) -> list[RunRecord]:
    from .methods.ckaad import run_ckaad

    p = cell.params
    options, device, (train, test) = p["options"], p["device"], p["data"][p["cat"]]
    r = run_ckaad(p["config"], train, test, device, eval_at=p["eval_at"], checkpoint_dir=p["ckpt"],
                  resume=options.resume, overwrite=options.overwrite)
    hist = r["history"]
    info = dict(backbone=hist["backbone"], weights=hist["weights"], device=str(device))
    row = dataclasses.replace(
        p["row"], **info, discriminator=r["discriminator"], train_seconds=round(hist["seconds"], 2),
        metrics={**{k: v for k, v in r.items() if k.endswith(runs.METRIC_SUFFIXES) or k == "pixel_AUPRO_per_image"},
                 "n_test": len(r["test"])},
        gallery=Gallery((("ckaad", p["row"].ablation, p["cat"], f"s{p['row'].seed}")), r["test"], r["scores"],
                        r["maps"]))
    curve = [dataclasses.replace(c, **info, discriminator={k: v for k, v in e.items() if k.startswith("d_")},
                                 metrics={**{k: v for k, v in e.items() if not k.startswith(("d_", "step"))},
                                          "n_test": len(r["test"])})
             for e, c in zip(r["curve"], p["curve"])]
    row.model = SavedModel("ckaad", r["model"], row.gallery.parts)
    if curve:  # the run's own row is the curve's last point: keep the maps and the model once
        curve[-1].gallery, curve[-1].model = row.gallery, row.model
    return curve or [row]


# ----------------------------------------------------------------------------- the kNN baseline
def knn(options) -> list[RunRecord]:
    """The PatchCore-style kNN baseline: one memory bank per category x contamination x seed (``--unified``:
    one bank for all the categories mixed, scored on their mixed test set, as CADA's setting)."""
    from .methods.knn import KNNConfig

    runs.check_output(options.out, options.resume, options.overwrite)
    changes = {"backbone": options.backbone, "image_size": options.image_size, "coreset_ratio": options.coreset}
    base, settings = _configure(KNNConfig, KNNConfig(), changes, options.set)
    base = dataclasses.replace(base, **settings)
    classes = None
    if options.unified:
        root = specs.dataset_root(options.data, options.image_size)
        classes = specs.category_list(root, options.category, options.all_categories)
        if len(classes) < 2:
            raise ValueError("--unified builds one bank for several categories: name two or more or pass "
                             "--all-categories")
        data = {"pooled": specs.mixed_classes(root, classes, {}, base.image_size)}
    else:
        data = _data(options)
    shared = dict(options=options, data=data, device=_device(options), classes=classes)
    cells = [_knn_cell(shared, base, c, e, s) for c in data for e in options.contamination for s in options.seed]
    return _grid(options, cells, _run_knn_cell, KNNConfig)


def _knn_cell(shared: dict, base, cat: str, eps: float, seed: int) -> Cell:
    options = shared["options"]
    config = dataclasses.replace(base, seed=seed)
    row = RunRecord(method="knn", variant="patchcore", ablation="kNN", setting="",
                    dataset=specs.dataset_label(options.data), category=cat, contamination=eps, shots=0,
                    leaky=options.leaky, train_backbone=False, backbone=config.backbone, image_size=config.image_size,
                    open_set="general" if specs.typed_anomalies(options.data) else None, seed=seed,
                    config=dataclasses.asdict(config), classes=shared["classes"])

    def describe(records: list[RunRecord]) -> str:
        r = records[0]
        return (f"{runs.summary(r.to_row())} (bank {r.metrics['n_bank']:,} of {r.metrics['n_patches']:,} patches, "
                f"{r.wall_seconds:.0f} s on {r.device})")

    return Cell(f"knn {cat} contamination={eps:g} seed={seed}", [row], dict(shared, config=config, row=row, cat=cat),
                describe)


def _run_knn_cell(cell: Cell) -> list[RunRecord]:
    from .data import anomaly_types
    from .methods.knn import run_knn

    p = cell.params
    options, (train, test) = p["options"], p["data"][p["cat"]]
    r = run_knn(p["config"], train, test, p["row"].contamination, p["device"], leaky=options.leaky,
                progress=options.progress)
    hist, split = r["history"], r["split"]
    row = dataclasses.replace(
        p["row"], backbone=hist["backbone"], weights=hist["weights"], device=str(p["device"]),
        train_seconds=round(hist["seconds"], 2),
        metrics={**runs.metrics_of(r), **_per_type(options, split.test, r["scores"], r["labels"]), "n_bank": hist["n_bank"],
                 "n_patches": hist["n_patches"], "n_contaminated": split.report.n_contaminated,
                 "n_test": len(split.test)},
        gallery=Gallery(("knn", p["cat"], f"c{p['row'].contamination:g}", "leaky" if options.leaky else "",
                         f"s{p['row'].seed}"),
                        split.test, r["scores"], r["maps"]))
    row.model = SavedModel("knn", r["model"], row.gallery.parts)
    if not (specs.typed_anomalies(options.data) and len(anomaly_types(split.test)) > 1):
        return [row]
    # AHL's hard setting scores the normals and the unseen types only: one row per held-out (seen) type
    hard = []
    for seen in anomaly_types(split.test):
        keep = [i for i, s in enumerate(split.test.samples) if s.truth == 0 or s.defect != seen]
        hard.append(dataclasses.replace(row, open_set="hard", seen_class=seen, gallery=None, model=None,
                                        metrics={**metrics.image_metrics(r["scores"][keep], r["labels"][keep]),
                                                 **{k: v for k, v in row.metrics.items() if k.startswith("n_")},
                                                 "n_test": len(keep)}))
    return [row, *hard]


# ----------------------------------------------------------------------------- AHL
def ahl(options) -> list[RunRecord]:
    """AHL and its baselines (DevNet, DevNet + pseudo, AHL with uniform w, AHL without base-model training, the
    ensemble): one run per category x setting x shots x seen class x seed; features cached once per category.
    The AHL rows carry w per epoch (``w_epochs``) and the base models' drift ||theta_i - theta_g|| / ||theta_g||
    per epoch and task (``drift_epochs``)."""
    from .methods.ahl import AHLConfig

    runs.check_output(options.out, options.resume, options.overwrite)
    changes = {"backbone": options.backbone, "image_size": options.image_size, "epochs": options.epochs,
               "variant": options.variant}
    base, settings = _configure(AHLConfig, AHLConfig(), changes, options.set)
    base = dataclasses.replace(base, **settings)
    if any(k < 1 for k in options.shots):
        raise ValueError(f"--shots must be at least 1 (the paper: 10 and 1); got {options.shots}")
    if options.seen_class and "hard" not in options.setting:
        raise ValueError("--seen-class is for the hard setting: add --setting hard (general draws shots from every type)")
    shared = dict(options=options, base=base, settings=settings, device=_device(options), banks={}, textures={})
    cells = [_ahl_cell(shared, *spec) for spec in _ahl_grid(options)]
    return _grid(options, cells, _run_ahl_cell, AHLConfig)


def _ahl_grid(options) -> list[tuple]:
    """(category, train, test, setting, shots, seen class, seed) for every run asked for; a bad split fails here,
    before any work. The built-in synthetic set is written with 20 test anomalies per defect type, so the hard
    setting has some left."""
    from .data import anomaly_types, open_set_split, synthetic

    root = synthetic(image_size=options.image_size, n_test_per_defect=20) if options.data == "synthetic" else None
    grid = []
    for cat, train, test in specs.datasets(options.data, options.category, options.all_categories,
                                           options.image_size, root):
        types = anomaly_types(test)
        seen = types if (not options.seen_class or options.seen_class == ["all"]) else options.seen_class
        unknown = [c for c in seen if c not in types]
        if "hard" in options.setting and unknown:
            raise ValueError(f"unknown seen class {unknown[0]!r} for {cat}; its anomaly types are {types} (or 'all')")
        for setting in options.setting:
            for shots in options.shots:
                for seen_class in (seen if setting == "hard" else [None]):
                    open_set_split(train, test, setting, shots, 0, seen_class)
                    grid += [(cat, train, test, setting, shots, seen_class, seed) for seed in options.seed]
    return grid


def _ahl_cell(shared: dict, cat, train, test, setting, shots, seen_class, seed) -> Cell:
    options, config = shared["options"], dataclasses.replace(shared["base"], seed=seed)
    common = RunRecord(method="ahl", variant=config.variant, setting=_setting(shared["settings"]),
                       dataset=("synthetic (20 anomalies per type)" if options.data == "synthetic"
                                else specs.dataset_label(options.data)),
                       category=cat, contamination=0.0, shots=shots, leaky=False, train_backbone=False,
                       backbone=config.backbone, image_size=config.image_size, open_set=setting,
                       seen_class=seen_class, seed=seed, config=dataclasses.asdict(config),
                       texture_source=_texture_kind(shared["textures"], config.sources))  # build_features's
    rows = [dataclasses.replace(common, ablation=row) for row in AHL_ROWS
            if config.variant == "paper" or row != "AHL (no base training)"]

    def describe(records: list[RunRecord]) -> str:
        return (", ".join(f"{r.ablation} {r.metrics.get('image_AUROC', float('nan')):.3f}" for r in records)
                + f" ({records[0].wall_seconds:.0f} s on {records[0].device})")

    name = f"ahl {cat} {setting} shots={shots}" + (f" seen={seen_class}" if seen_class else "") + f" seed={seed}"
    return Cell(name, rows, dict(shared, config=config, cat=cat, train=train, test=test), describe)


def _run_ahl_cell(cell: Cell) -> list[RunRecord]:
    import time

    from .methods.ahl import build_features, run_ahl

    p, first = cell.params, cell.planned[0]
    banks, options = p["banks"], p["options"]
    if p["cat"] not in banks:
        banks[p["cat"]] = build_features(p["base"], p["train"], p["test"], p["device"], progress=True)
    bank = banks[p["cat"]]
    t0 = time.perf_counter()
    r = run_ahl(p["config"], p["train"], p["test"], first.open_set, first.shots, first.seen_class, p["device"],
                features=bank)
    info = dict(weights=bank.info["weights"], device=str(p["device"]),
                train_seconds=round(sum(m["history"]["seconds"] for m in r["models"].values()), 2),
                wall_seconds=round(time.perf_counter() - t0, 2))
    records = [_ahl_record(planned, r, info, options if first.open_set == "general" else None)
               for planned in cell.planned]
    parts = ("ahl", p["cat"], first.open_set, f"shots{first.shots}", first.seen_class, f"s{first.seed}")
    for record in records:  # --save-models keeps the AHL row's model (theta_g, the adapted theta_i, w, psi)
        record.model = SavedModel("ahl", r["model"], parts) if record.ablation == "AHL" else None
    return records


def _ahl_record(planned: RunRecord, r: dict, info: dict, per_type_of) -> RunRecord:
    """One AHL row: its metrics and, for the AHL rows, the meta-training loss it ended on, w per epoch (eq. 7) and
    the base models' drift ||theta_i - theta_g|| / ||theta_g|| per epoch x task."""
    import numpy as np

    result = r["rows"][planned.ablation]
    found = {**runs.metrics_of(result), "n_test": len(r["split"].test)}
    if per_type_of is not None:  # the general setting: each defect type against the test normals
        found.update(_per_type(per_type_of, r["split"].test, result["scores"], r["labels"]))
    extra, model = {}, r["models"].get(planned.ablation)
    if planned.ablation.startswith("AHL") and model is not None:
        hist = model["history"]
        extra = dict(meta_loss=hist["query_loss"][-1], w_epochs=[[round(x, 5) for x in w] for w in hist["w"]],
                     drift_epochs=[[float(f"{x:.4g}") for x in d] for d in hist["drift"]],
                     drift_mean=float(np.mean(hist["drift"])))
    if planned.ablation == "AHL":
        extra["w"] = r["models"]["AHL"]["w"].tolist()
    return dataclasses.replace(planned, **info, **extra, metrics=found)


METHODS = {"adl": adl, "multicue": multicue, "cada": cada, "ckaad": ckaad, "knn": knn, "ahl": ahl}
