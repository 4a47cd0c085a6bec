"""CKAAD on the CPU: where the time of notebook 07 goes, as ratios measured in one run.

    python benchmarks/bench_ckaad.py [--quick] [--rounds 2] [--steps 3] [--steps-256 1] [--all-rows]
                                     [--threads 1 2]

Prints, on the CPU, at 1 and at 2 torch threads (``torch.set_num_threads``; ``--threads``):

1. The frozen EfficientNet-Lite0 backbone (levels 1, 2, 3; ``features.features``, as ``featurize`` runs it)
   in images/s on a batch of 32, at 128 and 256 px; and, at 128 px, ``synth.elastic_anomalies`` (the
   warps of ``ckaad.prepare_data``'s bank) on the same 32 images.
2. One training step, ``ckaad.ckaad_step`` on 16 normal + 16 warped images, for each row of Table 3
   (recon, +image, +patch, both; with ``--all-rows`` also reconsub and gan), in images/s (32 per step):
     (a) cached   - adlkit's design: the backbone's levels of the images and of their warps are computed
                    once; a step indexes a batch of them (``ckaad.sample_batch``) and trains;
     (b) uncached - the frozen backbone runs on the 32 images every step (no_grad), then the same step;
   and the cost of not caching (time of b / time of a). At 128 px, and at 256 px unless ``--quick``.
3. Scoring: ``ckaad.predict`` on 65 test images at 128 px (eq. 14's maps and top-k scores), with the
   images' levels already remembered by ``features.featurize`` (as for the 2nd to 4th row of a class) and
   with that memo cleared first (the 1st row).
4. Notebook 07's full mode projected from the 128 px numbers: 5 classes x 4 rows x S training steps
   + featurising, per class once, 100 training images x (1 + 4 warps) and 65 test images (plus the
   warps themselves) + scoring the 65 test images for each of the 20 runs; for S = 150, 300, 600
   against the 15-minute budget, and the largest S that fits in 12 minutes (about 3 minutes are left
   for plots and metrics; the metrics of the 20 runs are timed and shown apart).

Images are random (speed does not depend on content) and all networks have random weights (speed does
not depend on them either). Each measurement is warmed up once; the timed methods are then interleaved
round by round and the best round is kept, so a busy moment of a shared machine hits them alike. Only
ratios within one run mean much on a loaded machine: the CPU-share column (this process's CPU seconds
per wall second; ideal = the thread count) shows how much of the cores the run actually got.

Run time, on a 2-core CPU shared with other jobs that left this process about one core: the full run
about 3 min and ``--quick`` (128 px only, fewer steps) 45 s, with ``OMP_WAIT_POLICY=PASSIVE``; about
half of that with ``--threads 1``. On cores that other jobs keep busy, 2 threads can be several times
*slower* than 1 under OpenMP's default (its threads spin waiting for a descheduled partner; the CPU
share stays near 1, not 2): ``--quick`` then took 3.5 to 4.5 min. The script says so when it happens;
``OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_ckaad.py`` (waiting threads sleep) or ``--threads 1``
avoids it.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from _timing import best_time, print_wall  # benchmarks/ is on sys.path when a script runs

from adlkit import features, metrics
from adlkit.methods import ckaad
from adlkit.methods.ckaad import CKAADConfig
from adlkit.models import backbone
from adlkit.synth import elastic_anomalies

BATCH = 32  # backbone batch (featurize's), and 16 normal + 16 anomalous per training step
POOL = 48  # random images a training batch is drawn from
ROWS = ["recon", "+image", "+patch", "both"]  # Table 3's rows in notebook 07
EXTRA_ROWS = ["reconsub", "gan"]  # the CLI's other rows (--all-rows)
N_CLASSES, N_TRAIN, N_TEST, N_WARPS = 5, 100, 65, 4  # notebook 07's full mode (synthetic data, per class)
STEPS = (150, 300, 600)  # training steps per run to project
BUDGET = 15 * 60  # full mode: <= 15 min per notebook on a 2-core CPU
FIT = 12 * 60  # what training, featurising and scoring may take (~3 min left for plots and metrics)


# ----------------------------------------------------------------------------- 2. training steps
class Bench:
    """One image size: a pool of random images, their elastic warps (one per image) and both's levels."""

    def __init__(self, encoder, size: int):
        g = torch.Generator().manual_seed(size)
        self.size = size
        self.images = torch.randint(0, 256, (POOL, 3, size, size), dtype=torch.uint8, generator=g).float() / 255
        cfg = CKAADConfig()
        self.warped = elastic_anomalies(self.images, cfg.warp_alpha, cfg.warp_sigma, g)
        with torch.no_grad():  # cached once (as prepare_data; timed in 1.)
            normal, warped = features.features(encoder, self.images), features.features(encoder, self.warped)
        self.data = ckaad.CKAADData(normal, warped, paired=True)

    def config(self, row: str) -> CKAADConfig:
        # n_warps=1: the bench's bank holds one warp per image (a step does not depend on the bank's size)
        return CKAADConfig(image_size=self.size, pretrained=False, n_warps=1).ablation(row)


def steppers(bench: Bench, encoder, row: str, steps: int):
    """(cached, uncached): functions that each run ``steps`` training steps of one Table-3 row."""
    config = bench.config(row)
    model = ckaad.build_model(config, "cpu")
    model.ae.train()
    for d in model.discriminators():
        d.train()
    opt_g = torch.optim.Adam(model.ae.parameters(), lr=config.lr_g, betas=config.betas)  # as train_ckaad
    d_params = [p for d in model.discriminators() for p in d.parameters()]
    opt_d = torch.optim.Adam(d_params, lr=config.lr_d, betas=config.betas) if d_params else None
    gen = torch.Generator().manual_seed(0)
    n = config.n_normal

    def cached():
        for _ in range(steps):
            f_n, f_a = ckaad.sample_batch(bench.data, config, gen)  # as train_ckaad
            ckaad.ckaad_step(model, f_n, f_a, opt_g, opt_d, config)

    def uncached():
        for _ in range(steps):
            idx = torch.randint(POOL, (n,), generator=gen)
            with torch.no_grad():  # the 16 images and a warp of each, through the backbone together
                levels = features.features(encoder, torch.cat([bench.images[idx], bench.warped[idx]]))
            ckaad.ckaad_step(model, [f[:n] for f in levels], [f[n:] for f in levels], opt_g, opt_d, config)

    return cached, uncached


# ----------------------------------------------------------------------------- 4. metrics of one run
def metrics_seconds(size: int) -> float:
    """Seconds of score_ckaad's metrics (image AUROC/AUPR, pixel AUROC/AUPR/AUPRO) on 65 random maps, 40 of
    them anomalous with a square defect each."""
    g = torch.Generator().manual_seed(1)
    maps = torch.rand(N_TEST, size, size, generator=g)
    labels = (torch.arange(N_TEST) >= 25).numpy()
    masks = torch.zeros(N_TEST, size, size, dtype=torch.bool)
    for i in range(25, N_TEST):
        y, x = torch.randint(0, size - size // 4, (2,), generator=g).tolist()
        masks[i, y:y + size // 8, x:x + size // 8] = True
    t0 = time.perf_counter()
    metrics.image_metrics(maps.flatten(1).max(1).values.numpy(), labels)
    metrics.pixel_metrics(maps, masks)
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="128 px only and fewer steps (< 1 min)")
    ap.add_argument("--steps", type=int, default=None, help="training steps per round at 128 px (default 2; 1 quick)")
    ap.add_argument("--steps-256", type=int, default=1, help="training steps per round at 256 px")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved timed rounds; the best is kept")
    ap.add_argument("--all-rows", action="store_true", help="also time the reconsub and gan rows")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to time")
    args = ap.parse_args(argv)
    sizes = [128] if args.quick else [128, 256]
    steps = {128: args.steps or (1 if args.quick else 2), 256: args.steps_256}
    rows = ROWS + (EXTRA_ROWS if args.all_rows else [])
    threads = args.threads
    start_threads = torch.get_num_threads()
    t_start = time.perf_counter()

    torch.manual_seed(0)
    encoder = backbone("efficientnet_lite0", pretrained=False, layers=(1, 2, 3), frozen=True)
    benches = {s: Bench(encoder, s) for s in sizes}
    print(f"CPU: {os.cpu_count()} cores, torch {torch.__version__}, load average {os.getloadavg()[0]:.1f} at the "
          f"start; timed at {threads} threads (torch's default here: {start_threads}; OMP_WAIT_POLICY "
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset')})")
    print(f"random images, random weights (encoder efficientnet_lite0 levels (1, 2, 3) {encoder.channels}); "
          f"warm-up once, best of {args.rounds} interleaved rounds\n")

    # 1. + 2. + 3., per thread count
    feat_rate, warp_rate, feat_share = {}, {}, {}
    step_rate, step_share = {}, {}
    score_rate, score_share = {}, {}
    test = torch.randint(0, 256, (N_TEST, 3, 128, 128), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    scorer = ckaad.build_model(CKAADConfig(image_size=128, pretrained=False), "cpu")
    scorer.ae.eval()
    cfg = scorer.config
    for t in threads:
        torch.set_num_threads(t)
        fns = {s: (lambda b=b: features.features(encoder, b.images[:BATCH])) for s, b in benches.items()}
        fns["warp"] = lambda: elastic_anomalies(benches[128].images[:BATCH], cfg.warp_alpha, cfg.warp_sigma)
        best, share = best_time(fns, args.rounds)
        warp_rate[t] = BATCH / best["warp"]
        for s in sizes:
            feat_rate[t, s], feat_share[t, s] = BATCH / best[s], share[s]

        for s, b in benches.items():
            fns = {}
            for row in rows:
                fns[row, "a"], fns[row, "b"] = steppers(b, encoder, row, steps[s])
            best, share = best_time(fns, args.rounds)
            for row in rows:
                for m in "ab":
                    step_rate[t, s, row, m] = steps[s] * BATCH / best[row, m]
                step_share[t, s, row] = share[row, "a"]

        fns = {"uncached": lambda: (features._IMAGE_FEATURES.clear(), ckaad.predict(scorer, test)),
               "cached": lambda: ckaad.predict(scorer, test)}  # runs after "uncached": the levels are remembered
        best, share = best_time(fns, args.rounds)
        for m in fns:
            score_rate[t, m] = N_TEST / best[m]
        score_share[t] = share["cached"]
    features._IMAGE_FEATURES.clear()

    print(f"1. frozen backbone (levels 1-3), and elastic warps at 128 px, batch {BATCH} (images/s)")
    print(f"{'threads':>7s} {'size':>5s} {'backbone':>9s} {'s / image':>10s} {'CPU share':>10s} {'warp':>8s}")
    for t in threads:
        for s in sizes:
            warp = f"{warp_rate[t]:8.1f}" if s == 128 else f"{'-':>8s}"
            print(f"{t:7d} {s:5d} {feat_rate[t, s]:9.1f} {1 / feat_rate[t, s]:10.4f} {feat_share[t, s]:10.2f} {warp}")
    print("CPU share = this process's CPU seconds per wall second in the best round (ideal: the thread count; "
          "less = the cores were busy with other work)")

    for s in sizes:
        print(f"\n2. training step (ckaad_step), {BATCH // 2} normal + {BATCH // 2} warped, {s} px, {steps[s]} step(s) "
              f"per round (images/s)")
        print(f"{'threads':>7s} {'row':>8s} {'(a) cached':>11s} {'(b) uncached':>13s} {'b time / a time':>16s} "
              f"{'s / step (a)':>13s} {'vs recon':>9s} {'CPU share (a)':>14s}")
        for t in threads:
            for row in rows:
                a, b = step_rate[t, s, row, "a"], step_rate[t, s, row, "b"]
                recon = step_rate[t, s, "recon", "a"]
                print(f"{t:7d} {row:>8s} {a:11.1f} {b:13.1f} {a / b:15.2f}x {BATCH / a:13.3f} {recon / a:8.2f}x "
                      f"{step_share[t, s, row]:14.2f}")
        per = {t: sum(BATCH / step_rate[t, s, row, "a"] for row in ROWS) for t in threads}
        print("one step of each of the 4 rows (cached): " + ", ".join(f"{per[t]:.3f} s at {t} thread(s)" for t in threads)
              + (f" (2 threads / 1 thread speed: {per[1] / per[2]:.2f}x)" if {1, 2} <= set(threads) else ""))
        if {1, 2} <= set(threads) and per[2] > 1.25 * per[1]:
            passive = os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
            print("  2 threads are SLOWER than 1: other jobs keep the cores busy" + (
                "" if passive else ", and OpenMP's threads spin waiting for each other; try OMP_WAIT_POLICY=PASSIVE "
                "or 1 thread"))

    print(f"\n3. scoring, ckaad.predict on {N_TEST} images at 128 px (images/s)")
    print(f"{'threads':>7s} {'levels remembered':>18s} {'memo cleared':>13s} {'ratio':>7s} {'CPU share':>10s}")
    for t in threads:
        c, u = score_rate[t, "cached"], score_rate[t, "uncached"]
        print(f"{t:7d} {c:18.1f} {u:13.1f} {c / u:6.2f}x {score_share[t]:10.2f}")

    # 4. the notebook's full mode at 128 px
    runs = N_CLASSES * len(ROWS)
    print(f"\n4. projected full mode of notebook 07 at 128 px: {N_CLASSES} classes x {len(ROWS)} rows x S steps; "
          f"featurise {N_TRAIN} x (1 + {N_WARPS} warps) + {N_TEST} test images per class once; score {N_TEST} "
          f"images x {runs} runs")
    metric_s = {}
    for t in threads:
        torch.set_num_threads(t)
        metrics_seconds(128)  # warm-up
        metric_s[t] = metrics_seconds(128) * runs
    torch.set_num_threads(start_threads)
    print(f"{'threads':>7s} {'S':>4s} {'training':>9s} {'featurise':>10s} {'scoring':>8s} {'total':>7s} {'budget':>7s}")
    proj = {}
    for t in threads:
        per_step = N_CLASSES * sum(BATCH / step_rate[t, 128, row, "a"] for row in ROWS)  # one step of all 20 runs
        feat = N_CLASSES * ((N_TRAIN * (1 + N_WARPS) + N_TEST) / feat_rate[t, 128] + N_TRAIN * N_WARPS / warp_rate[t])
        rebank = N_CLASSES * (len(ROWS) - 1) * N_TRAIN * N_WARPS * (1 / feat_rate[t, 128] + 1 / warp_rate[t])
        score = runs * N_TEST / score_rate[t, "cached"]
        proj[t] = per_step, feat, rebank, score
        for s in STEPS:
            total = per_step * s + feat + score
            print(f"{t:7d} {s:4d} {per_step * s:8.0f}s {feat:9.0f}s {score:7.0f}s {total:6.0f}s {100 * total / BUDGET:6.0f}%")
    print(f"total = training + featurise + scoring (data loading, model building, metrics and plots not included); "
          f"budget = {BUDGET // 60} min")
    for t in threads:
        per_step, feat, rebank, score = proj[t]
        shares = ", ".join(f"{row} {100 * BATCH / step_rate[t, 128, row, 'a'] / (per_step / N_CLASSES):.0f}%"
                           for row in ROWS)
        print(f"{t} thread(s): largest S in {FIT // 60} min: {int((FIT - feat - score) / per_step)} "
              f"({int((FIT - feat - rebank - score) / per_step)} if each row rebuilds its warp bank, as prepare_data "
              f"does now: +{rebank:.0f} s); {per_step:.2f} s per step of all {runs} runs ({shares}); "
              f"metrics of the {runs} runs {metric_s[t]:.0f} s")
    print_wall(t_start)


if __name__ == "__main__":
    main()
