"""The kNN baseline on the CPU: the coreset's cost and what it saves, as ratios measured in one run.

    python benchmarks/bench_knn.py [--patches 25600 102400] [--rounds 2]

Prints, for memory banks of N random 152-dimensional patch features (EfficientNet-Lite0's levels 2 + 3, the
size of 100 training images at 128 px and at 256 px):

1. The greedy coreset (``knn.greedy_coreset``, 10%): adlkit's step - one matrix-vector product on the
   32-d projection, ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2 - against the textbook step that computes
   ``torch.cdist`` from the new centre to every patch in the full 152-d space; seconds for the whole
   selection (the textbook one is timed on its first 200 steps and scaled) and their ratio.
2. The nearest-neighbour search of 65 test images' patches (``knn.nearest_distances``) against the full
   bank and against the 10% coreset: seconds and the speed-up (ideally 10x).

Random features: speed does not depend on content. The AUROC the coreset costs is measured on real images
in ``tests/test_knn.py`` (within 0.01 of the full bank at 128 px). Timed functions are interleaved round
by round and the best round is kept, so a busy moment of a shared machine hits them alike.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from _timing import best_time, print_wall

from adlkit.methods.knn import greedy_coreset, nearest_distances


def textbook_coreset(x: torch.Tensor, m: int) -> torch.Tensor:
    """k-center greedy as usually written: cdist from the newest centre to all points, in the full space."""
    chosen = [0]
    min_d = torch.cdist(x, x[:1])[:, 0]
    for _ in range(1, m):
        c = int(torch.argmax(min_d))
        chosen.append(c)
        min_d = torch.minimum(min_d, torch.cdist(x, x[c : c + 1])[:, 0])
    return torch.tensor(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patches", type=int, nargs="+", default=[25600, 102400])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    t_start = time.perf_counter()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    g = torch.Generator().manual_seed(0)
    for n in args.patches:
        x = torch.randn(n, 152, generator=g)
        m = math.ceil(0.1 * n)
        steps = min(200, m)
        best, _ = best_time({"adlkit": lambda x=x: greedy_coreset(x, 0.1, seed=0),
                             "textbook": lambda x=x, s=steps: textbook_coreset(x, s)}, args.rounds)
        textbook = best["textbook"] * m / steps
        print(f"\nbank of {n:,} patches, 10% coreset = {m:,} selected")
        print(f"  coreset: adlkit {best['adlkit']:.1f} s, textbook cdist {textbook:.1f} s (from {steps} steps)"
              f" -> {textbook / best['adlkit']:.1f}x faster")
        per_image = n // 100  # patches per image at this size
        queries = torch.randn(65 * per_image, 152, generator=g)
        bank = x[greedy_coreset(x, 0.1, seed=0, projection_dim=128)]
        best, _ = best_time({"full": lambda x=x, q=queries: nearest_distances(x, q),
                             "coreset": lambda b=bank, q=queries: nearest_distances(b, q)}, args.rounds)
        print(f"  search of 65 images ({len(queries):,} patches): full bank {best['full']:.2f} s, coreset "
              f"{best['coreset']:.2f} s -> {best['full'] / best['coreset']:.1f}x faster")
    print_wall(t_start)


if __name__ == "__main__":
    main()
