"""CADA on the CPU: where the time of its two stages goes, as ratios measured in one run.

    python benchmarks/bench_cada.py [--quick] [--image-size 256] [--steps 5] [--rounds 2]
                                    [--rd-iters 1500] [--head-iters 2000]

Prints, on the CPU, at 1 and at 2 torch threads (``torch.set_num_threads``):

1. Reverse-distillation (stage 1) training images/s at batch 16 on the frozen EfficientNet-Lite0
   encoder (levels 1, 2, 3):
     (a) cached   - adlkit's design: the encoder's levels are computed once; a step indexes a batch of
                    them, runs the RD forward + ``cosine_reconstruction_loss`` + backward + AdamW step;
     (b) uncached - the frozen encoder runs on the batch every step (no_grad), then the same RD step;
   and the speed-up of caching (time of b / time of a).
2. Gaussian blur of N maps [N, S, S] (sigma 4 at 256 px, scaled with the size, as CADA's maps):
   ``adlkit.models.rd.gaussian_smooth`` on the whole batch vs a loop of
   ``scipy.ndimage.gaussian_filter(m, sigma, mode="mirror")`` (single-threaded); the ratio and the
   largest absolute difference (the two must agree). ``gaussian_smooth`` is the separable blur as two
   batched matrix products, K A K^T, with the mirrored borders folded into K [S, S]. For reference,
   torchvision's ``gaussian_blur``, which convolves with the full 2-D kernel (33 x 33 at sigma 4; what
   adlkit used before).
3. The full-mode notebook schedule's projected wall time: seconds per cached RD iteration x the
   paper's 5000 iterations and x ``--rd-iters``; ``cada.train_heads`` (which trains three heads: the
   (u, gamma) and (u, sigma) regressors and CaDA-B's classifier) timed for a few iterations on random
   bottleneck tensors [500, Cb, S/32, S/32] and scaled to ``--head-iters``; featurising 500 training
   + 300 test images once (``adl.featurize``) and their RD maps (``cada.rd_outputs``' work: RD forward +
   anomaly map), both timed on one batch of 32 and scaled to 800 images. Shown against the 15-minute
   full-mode budget, with how many RD iterations fit in 8 minutes.

Images are random (speed does not depend on content) and the encoder has random weights (speed does
not depend on them either). Each measurement is warmed up once; the timed methods are then interleaved
round by round and the best round is kept, so a busy moment of a shared machine hits them alike. Only
ratios within one run mean much on a loaded machine. On a 2-core CPU shared with other jobs the whole
run took about 3 min and ``--quick`` (128 px, fewer steps) about 1 min.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from _timing import best_time, print_wall  # benchmarks/ is on sys.path when a script runs
from scipy import ndimage
from torchvision.transforms.v2 import functional as TF

from adlkit import features
from adlkit.losses import cosine_reconstruction_loss
from adlkit.methods import adl, cada
from adlkit.models import backbone
from adlkit.models.rd import ReverseDistillation, anomaly_map, gaussian_smooth

BATCH = 16  # CADA's batch (the paper's, and CADAConfig.batch_size)
N_TRAIN, N_TEST = 500, 300  # the full-mode notebook's images
PAPER_ITERS = 5000  # the paper's iterations per stage
BUDGET = 15 * 60  # full mode: <= 15 min per notebook on a 2-core CPU


# ----------------------------------------------------------------------------- 1. RD training steps
def rd_steppers(encoder, images: torch.Tensor, levels: list[torch.Tensor], steps: int):
    """(cached, uncached): functions that each run ``steps`` RD training steps of batch 16."""
    torch.manual_seed(0)
    rd = ReverseDistillation(encoder.channels).train()
    opt = torch.optim.AdamW(rd.parameters(), lr=2e-3, weight_decay=1e-5)
    gen = torch.Generator().manual_seed(0)

    def rd_step(enc):
        dec, _ = rd(enc)
        loss = cosine_reconstruction_loss(enc, dec)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def cached():
        for _ in range(steps):
            idx = torch.randint(len(images), (BATCH,), generator=gen)
            rd_step([level[idx] for level in levels])  # as cada.train_rd

    def uncached():
        for _ in range(steps):
            idx = torch.randint(len(images), (BATCH,), generator=gen)
            with torch.no_grad():
                enc = adl._features(encoder, images[idx].float() / 255)  # featurize's per-batch call
            rd_step(enc)

    return cached, uncached


# ----------------------------------------------------------------------------- 3. the rest of the schedule
def heads_seconds(size: int, channels: int, iters: int) -> float:
    """Seconds of ``cada.train_heads`` (three heads, ``iters`` each) on random bottlenecks of 500 images."""
    g = torch.Generator().manual_seed(0)
    side = size // 32
    inputs = torch.randn(N_TRAIN, channels, side, side, generator=g)
    stats = {"u": torch.rand(N_TRAIN, generator=g), "gamma": 1 + torch.rand(N_TRAIN, generator=g),
             "sigma": torch.rand(N_TRAIN, generator=g)}
    class_ids = torch.randint(5, (N_TRAIN,), generator=g)
    config = cada.CADAConfig(image_size=size, head_iters=iters)
    t0 = time.perf_counter()
    cada.train_heads(config, inputs, stats, class_ids, 5)
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="128 px and fewer steps (< 1 min)")
    ap.add_argument("--image-size", type=int, default=None, help="default 256 (128 with --quick)")
    ap.add_argument("--steps", type=int, default=None, help="RD steps per round (default 5; 2 with --quick)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved timed rounds; the best is kept")
    ap.add_argument("--maps", type=int, default=None, help="maps blurred in 2. (default 50; 32 with --quick)")
    ap.add_argument("--head-timed", type=int, default=None, help="train_heads iterations timed (default 30; 10 quick)")
    ap.add_argument("--rd-iters", type=int, default=1500, help="the notebook's RD iterations (projection)")
    ap.add_argument("--head-iters", type=int, default=2000, help="the notebook's iterations per head (projection)")
    args = ap.parse_args(argv)
    size = args.image_size or (128 if args.quick else 256)
    steps = args.steps or (2 if args.quick else 5)
    n_maps = args.maps or (32 if args.quick else 50)
    head_timed = args.head_timed or (10 if args.quick else 30)
    sigma = cada.CADAConfig().sigma * size / 256
    threads = [1, 2]
    start_threads = torch.get_num_threads()
    t_start = time.perf_counter()

    torch.manual_seed(0)
    encoder = backbone("efficientnet_lite0", pretrained=False, layers=(1, 2, 3), frozen=True)
    pool = torch.randint(0, 256, (64, 3, size, size), dtype=torch.uint8)  # images a batch is drawn from
    with torch.no_grad():
        levels = adl._features(encoder, pool.float() / 255)  # cached once (not timed here; see 3.)
    print(f"CPU: {os.cpu_count()} cores, torch {torch.__version__}; timed at {threads} threads "
          f"(torch's default here: {start_threads})")
    print(f"{size} px, random images, encoder efficientnet_lite0 levels (1, 2, 3) {encoder.channels} with random "
          f"weights; warm-up once, best of {args.rounds} interleaved rounds\n")

    # 1. + 2., per thread count
    rd_rate, rd_share, blur = {}, {}, {}
    maps = torch.rand(n_maps, size, size, generator=torch.Generator().manual_seed(0))
    maps_np = maps.numpy()
    ref = np.stack([ndimage.gaussian_filter(m, sigma, mode="mirror") for m in maps_np])
    diff = float((gaussian_smooth(maps, sigma) - torch.from_numpy(ref)).abs().max())
    ksize = 2 * min(int(4 * sigma + 0.5), size - 1) + 1
    conv2d_blur = lambda: TF.gaussian_blur(maps[:, None], [ksize, ksize], [sigma, sigma])[:, 0]  # noqa: E731
    diff_conv = float((conv2d_blur() - torch.from_numpy(ref)).abs().max())
    for t in threads:
        torch.set_num_threads(t)
        cached, uncached = rd_steppers(encoder, pool, levels, steps)
        fns = {"cached": cached, "uncached": uncached,
               "torch": lambda: gaussian_smooth(maps, sigma),
               "conv2d": conv2d_blur,
               "scipy": lambda: [ndimage.gaussian_filter(m, sigma, mode="mirror") for m in maps_np]}
        best, share = best_time(fns, args.rounds)
        rd_rate[t] = {k: steps * BATCH / best[k] for k in ("cached", "uncached")}
        rd_share[t] = share["cached"]
        blur[t] = (best["torch"], best["scipy"], best["conv2d"])

    print(f"1. reverse distillation training, batch {BATCH}, {steps} steps per round (images/s)")
    print(f"{'threads':>7s} {'(a) cached':>11s} {'(b) uncached':>13s} {'b time / a time':>16s} {'s / iter (a)':>13s} "
          f"{'CPU share (a)':>14s}")
    for t in threads:
        a, b = rd_rate[t]["cached"], rd_rate[t]["uncached"]
        print(f"{t:7d} {a:11.1f} {b:13.1f} {a / b:15.2f}x {BATCH / a:13.3f} {rd_share[t]:14.2f}")
    a1, a2 = rd_rate[1]["cached"], rd_rate[2]["cached"]
    print(f"2 threads / 1 thread (cached): {a2 / a1:.2f}x. CPU share = this process's CPU seconds per wall second in "
          f"the best round (ideal: the thread count; less = the cores were busy with other work)")

    print(f"\n2. Gaussian blur of {n_maps} maps [{size}, {size}], sigma {sigma:g} (mirror borders)")
    print(f"{'threads':>7s} {'gaussian_smooth s':>18s} {'scipy loop s':>13s} {'scipy / smooth':>15s} "
          f"{'2-D conv s':>11s} {'2-D conv / smooth':>18s}")
    for t in threads:
        tt, ts, tc = blur[t]
        print(f"{t:7d} {tt:18.4f} {ts:13.4f} {ts / tt:14.2f}x {tc:11.4f} {tc / tt:17.2f}x")
    print(f"max |gaussian_smooth - scipy| = {diff:.2e}, max |2-D conv - scipy| = {diff_conv:.2e} (maps in [0, 1]; "
          "scipy is single-threaded in both rows)")

    # 3. the schedule, per thread count
    print(f"\n3. projected full-mode schedule ({N_TRAIN} train + {N_TEST} test images, {size} px; "
          f"train_heads timed for {head_timed} iterations x 3 heads, scaled)")
    rows = {}
    for t in threads:
        torch.set_num_threads(t)
        heads_seconds(size, 2 * encoder.channels[-1], 5)  # warm-up
        head_s = heads_seconds(size, 2 * encoder.channels[-1], head_timed) * args.head_iters / head_timed
        # featurise 32 new images (adl.featurize, as cada does), then their maps (rd_outputs' work)
        fresh = torch.randint(0, 256, (2, 32, 3, size, size), dtype=torch.uint8)
        adl.featurize(encoder, fresh[0])  # warm-up
        t0 = time.perf_counter()
        enc = adl.featurize(encoder, fresh[1])
        feat_s = (time.perf_counter() - t0) * (N_TRAIN + N_TEST) / 32
        rd = ReverseDistillation(encoder.channels).eval()
        with torch.no_grad():
            anomaly_map(enc, rd(enc)[0], (size, size), sigma)  # warm-up
            t0 = time.perf_counter()
            anomaly_map(enc, rd(enc)[0], (size, size), sigma)
        maps_s = (time.perf_counter() - t0) * (N_TRAIN + N_TEST) / 32
        it_s = BATCH / rd_rate[t]["cached"]
        rows[t] = (it_s, head_s, feat_s, maps_s)
    features._IMAGE_FEATURES.clear()
    torch.set_num_threads(start_threads)

    print(f"{'threads':>7s} {'RD x5000':>9s} {'RD x' + str(args.rd_iters):>9s} {'heads x' + str(args.head_iters):>11s} "
          f"{'featurise':>10s} {'RD maps':>8s} {'total':>7s} {'budget':>7s} {'RD iters in 8 min':>18s}")
    for t in threads:
        it_s, head_s, feat_s, maps_s = rows[t]
        total = it_s * args.rd_iters + head_s + feat_s + maps_s
        print(f"{t:7d} {it_s * PAPER_ITERS:8.0f}s {it_s * args.rd_iters:8.0f}s {head_s:10.1f}s {feat_s:9.1f}s "
              f"{maps_s:7.1f}s {total:6.0f}s {100 * total / BUDGET:6.0f}% {int(480 / it_s):18d}")
    print(f"total = RD x {args.rd_iters} + heads + featurise + RD maps (data loading, scoring metrics and plots "
          f"not included); budget = {BUDGET // 60} min")
    print_wall(t_start)


if __name__ == "__main__":
    main()
