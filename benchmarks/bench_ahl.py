"""AHL on the CPU: where the time of an ELPV run goes, as ratios measured in one run.

    python benchmarks/bench_ahl.py [--rounds 3] [--threads 1 2] [--no-run]

Prints, on the CPU, at 1 and 2 torch threads (``--threads``):

1. Featurising: the frozen EfficientNet-Lite0 to level 4 (320 channels, stride 32; what
   ``ahl.build_features`` runs) in images/s on a batch of 32 at 256 px, and each pseudo-anomaly generator
   (CutMix, CutPaste, Perlin) on the same batch.
2. One meta-iteration (``ahl.meta_step``: ``base_steps`` Adam steps of the base models (eq. 1) + the query
   loss for T = 6 tasks, batches of 48, and its backward), in seconds: batched (the T task models as one
   [T, C + 1] tensor: adlkit's design) vs a loop over the tasks (the same work one task at a time), and the ratio.
3. A whole ELPV run on cached features (``ahl.fit``: DevNet, DevNet + pseudo, AHL with uniform w, AHL without
   base training, AHL; 30 epochs x 20 meta-iterations each) at ELPV's sizes (1,131 normal images, their
   3 x 1,131 copies, 10 shots, 1,092 test images; 8 x 8 tokens of 320 channels), against the goal of 60 s;
   and the
   featurising it needs once (from 1) in seconds, for comparison.

Features are random (speed does not depend on content) and the backbone's weights too. Each measurement is
warmed up once; timed functions are interleaved and the best round kept (``_timing.best_time``), so a busy
moment of a shared machine hits them alike. The CPU-share column says how much of the cores the process
got. ``OMP_WAIT_POLICY=PASSIVE`` avoids OpenMP's spinning when other jobs share the cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from _timing import best_time  # benchmarks/ is on sys.path when a script runs

from adlkit.methods import ahl
from adlkit.models import backbone
from adlkit.synth import PseudoAnomaly, cutmix, cutpaste

N_NORMAL, N_SHOTS, N_TEST, SIZE, TOKENS, CHANNELS = 1131, 10, 1092, 256, 64, 320  # ELPV, open-set protocol


def _random_bank(seed: int = 0) -> ahl.FeatureBank:
    g = torch.Generator().manual_seed(seed)
    side = int(TOKENS ** 0.5)
    return ahl.FeatureBank(torch.randn(N_NORMAL, CHANNELS, side, side, generator=g),
                           torch.randn(3, N_NORMAL, CHANNELS, side, side, generator=g),
                           torch.randn(N_TEST, CHANNELS, side, side, generator=g), [str(i) for i in range(N_TEST)])


def _one_task(ep: ahl.Episodes, t: int) -> ahl.Episodes:
    def pick(sets):
        return [(idx[t:t + 1], n[t:t + 1]) for idx, n in sets]

    return dataclasses.replace(ep, support=pick(ep.support), query=pick(ep.query), pairs=ep.pairs[t:t + 1],
                               generators=ep.generators[t:t + 1], shot_halves=ep.shot_halves[t:t + 1])


def _split(test_labels: list[int]):
    """An open-set split over the random bank: shots = test rows 0..9 (taken out), the rest scored."""
    from pathlib import Path

    from adlkit.data import ImageDataset, OpenSetSplit, Sample

    samples = [Sample(Path(str(i)), y, "elpv", "poly" if y else "good") for i, y in enumerate(test_labels)]
    return OpenSetSplit(ImageDataset([], None), ImageDataset(samples[:N_SHOTS], None),
                        ImageDataset(samples[N_SHOTS:], None), ImageDataset([], None), "general", N_SHOTS, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-run", action="store_true", help="skip the whole-run measurement (3)")
    args = parser.parse_args()
    config = ahl.AHLConfig()
    bank = _random_bank()
    shots = torch.arange(N_SHOTS)
    tokens = ahl.token_bank(bank, shots)
    episodes = ahl.hadg(bank.normal, N_SHOTS, config, seed=0)
    w = torch.full((episodes.n_tasks,), 1 / episodes.n_tasks)
    singles = [_one_task(episodes, t) for t in range(episodes.n_tasks)]
    net = backbone("efficientnet_lite0", False, layers=(4,), frozen=True)
    images = torch.rand(32, 3, SIZE, SIZE)
    perlin = PseudoAnomaly(SIZE)
    gen = torch.Generator().manual_seed(0)
    theta = ahl.init_theta(CHANNELS, 0).requires_grad_(True)
    for threads in args.threads:
        torch.set_num_threads(threads)
        print(f"\n== {threads} thread(s) ==")
        with torch.no_grad():
            best, share = best_time({
                "Lite0 to level 4": lambda: net(images),
                "CutMix": lambda: cutmix(images, gen),
                "CutPaste": lambda: cutpaste(images, gen),
                "Perlin blend": lambda: perlin(images, gen),
            }, args.rounds)
        print(f"1. featurising, batch of 32 at {SIZE} px")
        for k, v in best.items():
            print(f"   {k:18s} {32 / v:8.1f} images/s   (CPU share {share[k]:.2f})")
        featurise = N_NORMAL * (best["Lite0 to level 4"] * 4 + best["CutMix"] + best["CutPaste"]
                                + best["Perlin blend"]) / 32 + N_TEST * best["Lite0 to level 4"] / 32

        def batched():
            loss, _, _ = ahl.meta_step(theta, tokens, episodes, w, config, gen)
            loss.backward()

        def looped():
            for t, one in enumerate(singles):
                loss, _, _ = ahl.meta_step(theta, tokens, one, w[t:t + 1], config, gen)
                loss.backward()

        best, share = best_time({"batched": batched, "per-task loop": looped}, args.rounds)
        print(f"2. one meta-iteration (T = {episodes.n_tasks}, {config.base_steps} Adam base steps, batches of "
              f"{config.batch_size}, {TOKENS} tokens x {CHANNELS} channels)")
        for k, v in best.items():
            print(f"   {k:18s} {v * 1e3:8.1f} ms   (CPU share {share[k]:.2f})")
        print(f"   batched is {best['per-task loop'] / best['batched']:.1f}x faster than the loop")
        if not args.no_run:
            split = _split([1] * (N_TEST // 3) + [0] * (N_TEST - N_TEST // 3))
            t0 = time.perf_counter()
            ahl.fit(config, bank, split)
            run = time.perf_counter() - t0
            print(f"3. one ELPV run on cached features (5 models, {config.epochs} epochs x "
                  f"{config.steps_per_epoch} meta-iterations): {run:.1f} s (goal <= 60 s: "
                  f"{'met' if run <= 60 else 'missed'}); featurising once: {featurise:.0f} s")


if __name__ == "__main__":
    main()
