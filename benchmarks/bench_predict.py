"""`python -m adlkit predict` on a real-size folder: what writing the pictures costs next to scoring, and that a
saved model scores a folder as the run scored its test set.

    python benchmarks/bench_predict.py [--category tile] [--image-size 256] [--rounds 2] [--screenshot PNG]

On one class of the built-in synthetic set (its MVTec-layout test folder, labelled; EfficientNet-Lite0 with its
ImageNet weights), a kNN bank is fitted once and saved. Then, timed round by round and interleaved:

1. ``score``: ``knn.predict`` on the test images already in memory (what a run's scoring does);
2. ``load + score``: the model file read back (``methods.load_any``), the images decoded from disk, scored;
3. ``predict``: ``adlkit.visual.predict_folder``: 2. plus ``scores.csv`` and an overlay PNG per image;
4. ``predict --html``: 3. plus the HTML page.

Prints images/s and each as a ratio of 1., and checks that the folder's image AUROC and F1-max threshold from
``predict`` equal those of ``knn.score_knn`` on the same test set. ``--screenshot`` saves the HTML page as headless
Chromium shows it (docs/data.md shows one).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch
from _timing import best_time, print_wall

from adlkit import methods, visual
from adlkit.data import MVTecLike, cache_tensors, synthetic
from adlkit.methods import knn


def main() -> None:
    t_start = time.perf_counter()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--category", default="tile")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--screenshot", help="save the HTML page as headless Chromium shows it")
    args = p.parse_args()
    torch.set_num_threads(1)

    root = synthetic(image_size=args.image_size)
    train, test = (MVTecLike(root, args.category, split, args.image_size) for split in ("train", "test"))
    config = knn.Config(image_size=args.image_size)
    model = knn.fit(config, train)
    print(f"{args.category}: {len(train)} training and {len(test)} test images at {args.image_size} px, "
          f"{model.history['backbone']} ({model.history['weights']}), bank {model.history['n_bank']:,} patches")
    work = Path(tempfile.mkdtemp())
    path = knn.save(model, work / "knn.pt")
    folder = root / args.category / "test"
    images = cache_tensors(test, "cpu").images
    reference = knn.score_knn(model, test)

    def out(name):
        target = work / name
        shutil.rmtree(target, ignore_errors=True)
        return target

    def load_and_score():
        module, loaded = methods.load_any(path)
        module.predict(loaded, torch.stack([test.load_image(s) for s in test.samples]))

    fns = {"score": lambda: knn.predict(model, images),
           "load + score": load_and_score,
           "predict": lambda: visual.predict_folder(path, folder, out("plain")),
           "predict --html": lambda: visual.predict_folder(path, folder, out("html"), html_page=True)}
    best, share = best_time(fns, args.rounds)
    n = len(test)
    print("\n| step | images/s | seconds | × score's time | CPU share |\n|---|---|---|---|---|")
    for key, seconds in best.items():
        print(f"| {key} | {n / seconds:.1f} | {seconds:.2f} | {seconds / best['score']:.2f} | {share[key]:.2f} |")

    found = visual.predict_folder(path, folder, out("check"), html_page=True)
    auroc = found["metrics"]["image_AUROC"]  # the folder's labels: good/ normal, every other folder anomalous
    print(f"\npredict's image AUROC {auroc:.6f} vs the run's {reference['image_AUROC']:.6f}; F1-max threshold "
          f"{found['threshold']:.6g} vs {reference['image_F1max_threshold']:.6g}")
    if abs(auroc - reference["image_AUROC"]) > 1e-6:
        raise SystemExit("predict does not score the folder as the run scored its test set")
    if args.screenshot:
        from adlkit import book

        with book.Browser() as browser:
            problems = browser.visit(found["html"])
            browser.evaluate("document.body.style.zoom = '0.6'")
            browser.screenshot(args.screenshot)
        from PIL import Image

        shot = Image.open(args.screenshot).convert("RGB")  # a palette PNG: a third of the size, as figures/ keeps
        shot.quantize(256, method=Image.Quantize.MEDIANCUT).save(args.screenshot, optimize=True)
        print(f"wrote {args.screenshot}" + (f" (page problems: {problems})" if problems else ""))
    shutil.rmtree(work)
    print_wall(t_start)


if __name__ == "__main__":
    main()
