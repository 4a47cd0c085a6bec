"""ADL training speed, frozen vs end to end, as ratios measured in one run.

    python benchmarks/bench_adl.py [--size 256] [--steps 10] [--backbone efficientnet_lite0] [--no-run | --runs-only]

Prints, on this machine (CPU or GPU):

1. images/s of one training step of Algorithm 1 (``adl.sample_batch`` -> forward -> ``adl.adl_step`` ->
   Adam, 24 normal + 24 pseudo-anomalies) in each setting (``ADLConfig.training``): frozen (heads only), a
   shared neck, the backbone's top stage trainable, and end to end, at the same batch; goal: frozen >= 20x
   end to end;
2. the end-to-end step against its floor: the backbone's own forward + backward + Adam on the same
   batch of 48 images (no heads, no synthesis, no losses); goal: <= 1.25x the floor;
3. a whole run's wall time in each frozen-cache setting (``--settings``; one class, the paper's 25 epochs x 20
   steps; data, features, pool, training; no scoring) against its floor, the time to featurise its training
   images and its pool once; goals: frozen <= 2x its floor, any setting <= 5 min on one core. The in-process
   and on-disk caches are emptied first (a fresh ADLKIT_CACHE), so nothing is reused from an earlier run.

Weights do not change speed, so the backbone uses random weights. The methods are interleaved round by
round (best of ``--rounds``), so a busy moment of a shared machine hits all of them alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time

import torch

from adlkit import data as D
from adlkit import features, training
from adlkit.losses import reference_stats
from adlkit.methods import adl


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_timer(config: adl.ADLConfig, train, device):
    """A function that runs ``n`` training steps of Algorithm 1 and returns images/s."""
    gens = training.generators(0, device)
    with training.seeded(0):
        model = adl.ADLModel(config).to(device).train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    data = adl.prepare_data(config, model, train, device)
    amp = config.amp and device.type == "cuda"

    def run(n: int) -> float:
        _sync(device)
        t0 = time.perf_counter()
        for k in range(n):
            batch = adl.sample_batch(data, config, gens)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                out = adl.forward(model, batch["inputs"], config.image_size, config.use_seg)
            mu, sd = reference_stats(config.m, generator=gens["cpu"], device=device)
            target = adl.bce_target(config, k, out["score"], batch["labels"], gens["cpu"])
            loss = adl.adl_step(out, batch["labels"], batch["masks"], mu, sd, target, config, True)["total"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _sync(device)
        return n * (config.n_normal + config.n_pseudo) / (time.perf_counter() - t0)

    return run


def floor_timer(config: adl.ADLConfig, train, device):
    """The end-to-end step's floor: the backbone alone, forward + backward + Adam on 48 cached images."""
    with training.seeded(0):
        net = adl.ADLModel(config).backbone.to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    images = D.cache_tensors(train, device).images[: config.n_normal + config.n_pseudo].float() / 255

    def run(n: int) -> float:
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(n):
            loss = sum(m.mean() for m in net(images))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _sync(device)
        return n * len(images) / (time.perf_counter() - t0)

    return run


def frozen_run(config: adl.ADLConfig, train, device) -> tuple[float, float]:
    """(whole run in a frozen-cache setting, its featurisation floor) in seconds, each from empty caches."""
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ADLKIT_CACHE"] = tmp
        features._MEMO.clear()
        features._IMAGE_FEATURES.clear()
        t0 = time.perf_counter()
        with training.seeded(config.seed):
            model = adl.ADLModel(config).to(device)
        data = adl.prepare_data(config, model, train, device)  # featurise the images and the pool once
        floor = time.perf_counter() - t0
        del data
        features._MEMO.clear()
        features._IMAGE_FEATURES.clear()
        os.environ["ADLKIT_CACHE"] = os.path.join(tmp, "again")
        t0 = time.perf_counter()
        adl.train_adl(config, train, device)
        whole = time.perf_counter() - t0
    return whole, floor


def step_rates(timers: dict, rounds: int) -> None:
    """1. and 2.: each setting's images/s, best of ``rounds`` interleaved rounds, and their ratios."""
    for timer, n in timers.values():  # warm-up
        timer(max(1, n // 10))
    best = dict.fromkeys(timers, 0.0)
    for _ in range(rounds):
        for key, (timer, n) in timers.items():
            best[key] = max(best[key], timer(n))
    print(f"{'':18s} {'images/s':>9s}")
    for key, rate in best.items():
        print(f"{key:18s} {rate:9.1f}")
    print(f"\nfrozen / end-to-end per step: {best['frozen step'] / best['end-to-end step']:.1f}x (goal >= 20x)")
    for key in ("neck step", "top-stage step"):
        print(f"{key.split()[0]} / end-to-end per step: {best[key] / best['end-to-end step']:.1f}x; "
              f"frozen / {key.split()[0]}: {best['frozen step'] / best[key]:.1f}x")
    print(f"end-to-end step / its floor (time): {best['end-to-end floor'] / best['end-to-end step']:.2f}x (goal <= 1.25x)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10, help="steps per round for the end-to-end timings")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--no-run", action="store_true", help="skip the whole runs (3.)")
    ap.add_argument("--runs-only", action="store_true", help="only the whole runs (3.), no step timings (1., 2.)")
    ap.add_argument("--settings", nargs="+", default=["frozen", "neck", "top-stage"],
                    choices=["frozen", "neck", "top-stage"], help="the settings of the whole runs (3.)")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    root = D.synthetic(image_size=min(args.size, 256))
    train = D.MVTecLike(root, "tile", "train", args.size)
    base = adl.ADLConfig(backbone=args.backbone, pretrained=False, image_size=args.size, pool_size=256)
    frozen = dataclasses.replace(base, train_backbone=False)
    print(f"device: {name}; backbone {args.backbone} (random weights); {args.size} px; batch 24 + 24\n")

    if args.no_run and args.runs_only:
        ap.error("--no-run and --runs-only leave nothing to measure: pass one of them")
    timers = {} if args.runs_only else {"frozen step": (step_timer(frozen, train, device), 20 * args.steps),
              "neck step": (step_timer(dataclasses.replace(frozen, shared="neck"), train, device), 4 * args.steps),
              "top-stage step": (step_timer(dataclasses.replace(frozen, shared="top-stage"), train, device),
                                 4 * args.steps),
              "end-to-end step": (step_timer(base, train, device), args.steps),
              "end-to-end floor": (floor_timer(base, train, device), args.steps)}
    if timers:
        step_rates(timers, args.rounds)

    if not args.no_run:
        print()
        for setting in args.settings:
            config = dataclasses.replace(frozen, pool_size=1000, shared="none" if setting == "frozen" else setting)
            whole, floor = frozen_run(config, train, device)
            print(f"{setting} run, {config.epochs} x {config.steps_per_epoch} steps, pool {config.pool_size}: "
                  f"{whole:.1f} s; featurising its {len(train)} images and pool once: {floor:.1f} s -> "
                  f"{whole / floor:.2f}x" + (" (goal <= 2x)" if setting == "frozen" else "")
                  + f"; {'within' if whole <= 300 else 'over'} the 5-minute goal", flush=True)


if __name__ == "__main__":
    main()
