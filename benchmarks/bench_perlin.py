"""Pseudo-anomaly synthesis speed: DRAEM's per-sample NumPy formulation vs adlkit's batched torch.

    python benchmarks/bench_perlin.py [--size 256] [--batches 64 512] [--repeats 3]

For each batch size it times, in the same run:
  * numpy     - DRAEM's formulation, one sample at a time (Perlin noise via rand_perlin_2d_np with
                the lattice res drawn per sample, a random rotation, threshold, a texture with 3 of
                DRAEM's 10 augmenters - the same operations and ranges adlkit uses, PIL for the
                'pillike' ones, scipy for rotations - and the blend), single-threaded as upstream's
                per-worker code is;
  * torch-cpu - adlkit.synth.PseudoAnomaly on the CPU (all threads torch uses);
  * torch-gpu - the same on CUDA, when there is a GPU.
The CPU rows are timed with all of torch's threads and with one. It prints samples/s, samples/s
per core and the ratio to NumPy per core; main() returns the rows as (method, batch, threads,
samples/s), the NumPy reference first (threads 0 for the GPU).
Goals (issue 4): >= 30,000 samples/s on one H100; batched CPU >= 3x the NumPy reference per core.
DRAEM needs the size divisible by the lattice res; 256 = 2^8 is.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch
from scipy import ndimage

from adlkit.synth import PseudoAnomaly


# ----------------------------------------------------------------------------- DRAEM's NumPy formulation
def _fade(t):
    return 6 * t**5 - 15 * t**4 + 10 * t**3


def _lerp(a, b, w):
    return (b - a) * w + a


def rand_perlin_2d_np(shape, res, rng):
    """DRAEM's perlin.py: one map, shape divisible by res."""
    delta = (res[0] / shape[0], res[1] / shape[1])
    d = (shape[0] // res[0], shape[1] // res[1])
    grid = np.mgrid[0:res[0]:delta[0], 0:res[1]:delta[1]].transpose(1, 2, 0) % 1
    angles = 2 * math.pi * rng.random((res[0] + 1, res[1] + 1))
    gradients = np.stack((np.cos(angles), np.sin(angles)), axis=-1)

    def tile(s1, s2):
        return np.repeat(np.repeat(gradients[s1[0]:s1[1], s2[0]:s2[1]], d[0], axis=0), d[1], axis=1)

    def dot(grad, shift):
        g = grid[:shape[0], :shape[1]]
        return (np.stack((g[..., 0] + shift[0], g[..., 1] + shift[1]), axis=-1) * grad[:shape[0], :shape[1]]).sum(-1)

    n00 = dot(tile([0, -1], [0, -1]), [0, 0])
    n10 = dot(tile([1, None], [0, -1]), [-1, 0])
    n01 = dot(tile([0, -1], [1, None]), [0, -1])
    n11 = dot(tile([1, None], [1, None]), [-1, -1])
    t = _fade(grid[:shape[0], :shape[1]])
    return math.sqrt(2) * _lerp(_lerp(n00, n10, t[..., 0]), _lerp(n01, n11, t[..., 0]), t[..., 1])


_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
_FROM_YIQ = np.linalg.inv(_TO_YIQ).astype(np.float32)


def _pil(src, fn):
    from PIL import Image

    return np.asarray(fn(Image.fromarray((src * 255).round().astype(np.uint8))), np.float32) / 255


def _augment_np(src, op, rng):
    """DRAEM's 10 imgaug augmenters, one at a time, with adlkit's parameter ranges.

    The pillike ones (sharpness, autocontrast, equalize) call PIL as imgaug's ``pillike`` does.
    """
    from PIL import ImageEnhance, ImageOps

    if op == 0:  # GammaContrast
        return np.clip(src, 1e-6, None) ** rng.uniform(0.5, 2.0)
    if op == 1:  # MultiplyAndAddToBrightness
        return src * rng.uniform(0.8, 1.2) + rng.uniform(-30, 30) / 255
    if op == 2:  # pillike.EnhanceSharpness
        factor = 1 + rng.uniform(0.0, 2.0)
        return _pil(src, lambda im: ImageEnhance.Sharpness(im).enhance(factor))
    if op == 3:  # AddToHueAndSaturation
        a, sat = np.deg2rad(rng.uniform(-50, 50)), rng.uniform(0.5, 1.5)
        yiq = src @ _TO_YIQ.T
        i, q = yiq[..., 1].copy(), yiq[..., 2].copy()
        yiq[..., 1] = sat * (np.cos(a) * i - np.sin(a) * q)
        yiq[..., 2] = sat * (np.sin(a) * i + np.cos(a) * q)
        return yiq @ _FROM_YIQ.T
    if op == 4:  # Solarize
        return np.where(src > rng.uniform(32, 128) / 255, 1 - src, src)
    if op == 5:  # Posterize
        levels = 2.0 ** rng.integers(4, 8)
        return np.floor(src * levels) / levels
    if op == 6:  # Invert
        return 1 - src
    if op == 7:  # pillike.Autocontrast
        return _pil(src, ImageOps.autocontrast)
    if op == 8:  # pillike.Equalize
        return _pil(src, ImageOps.equalize)
    return ndimage.rotate(src, rng.uniform(-45, 45), axes=(0, 1), reshape=False, order=1, cval=0.0)  # Affine


def numpy_pseudo_anomaly(image, sources, rng):
    """One DRAEM-style sample: image float [H, W, 3] in [0, 1] -> (augmented image, mask)."""
    h, w = image.shape[:2]
    res = (2 ** rng.integers(0, 6), 2 ** rng.integers(0, 6))
    noise = rand_perlin_2d_np((h, w), res, rng)
    noise = ndimage.rotate(noise, rng.uniform(-90, 90), reshape=False, order=1, cval=0.0)  # imgaug Affine(rotate)
    mask = (noise > 0.5).astype(np.float32)[..., None]
    src = sources[rng.integers(len(sources))].astype(np.float32) / 255
    for op in rng.choice(10, 3, replace=False):  # DRAEM: 3 of its 10 augmenters, without replacement
        src = np.clip(_augment_np(src, op, rng), 0, 1)
    beta = rng.uniform(0.1, 1.0)
    return (1 - mask) * image + beta * (mask * src) + (1 - beta) * (mask * image), mask


# ----------------------------------------------------------------------------- timing
def _cuda_sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 512])
    ap.add_argument("--repeats", type=int, default=5, help="rounds; every method is timed once per round, best kept")
    ap.add_argument("--numpy-samples", type=int, default=64, help="samples timed for the NumPy reference")
    args = ap.parse_args(argv)
    s = args.size
    cores = torch.get_num_threads()
    pa = PseudoAnomaly(s)
    sources_np = pa.sources.permute(0, 2, 3, 1).numpy()
    rng = np.random.default_rng(0)
    image = rng.random((s, s, 3)).astype(np.float32)

    # (name, batch, threads, function). The CPU is timed with all of torch's threads and with one, so that
    # "per core" is measured directly as well as divided out.
    cases = [("numpy", 1, 1, lambda: [numpy_pseudo_anomaly(image, sources_np, rng) for _ in range(args.numpy_samples)])]
    for b in args.batches:
        imgs, g = torch.rand(b, 3, s, s), torch.Generator().manual_seed(0)
        for threads in sorted({cores, 1}, reverse=True):
            cases.append(("torch-cpu", b, threads, lambda imgs=imgs, g=g: pa(imgs, g)))
        if torch.cuda.is_available():
            imgs_c, gg = imgs.cuda(), torch.Generator(device="cuda").manual_seed(0)
            cases.append(("torch-gpu", b, 0, lambda imgs_c=imgs_c, gg=gg: pa(imgs_c, gg)))
    # Rounds interleave the methods, so that a busy moment of a shared machine hits all of them alike.
    best = [float("inf")] * len(cases)
    for r in range(args.repeats + 1):  # round 0 warms up
        for i, (_, _, threads, fn) in enumerate(cases):
            torch.set_num_threads(threads or cores)
            _cuda_sync()
            t0 = time.perf_counter()
            fn()
            _cuda_sync()
            if r:
                best[i] = min(best[i], time.perf_counter() - t0)
    torch.set_num_threads(cores)

    print(f"device: CPU ({os.cpu_count()} cores, torch uses {cores} threads)"
          + (f"; GPU: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "; no GPU"))
    print(f"size {s}x{s}, masks + augmented sources + blends; best of {args.repeats} interleaved rounds\n")
    print(f"{'method':10s} {'batch':>6s} {'threads':>7s} {'samples/s':>11s} {'per core':>9s} {'x numpy':>8s}")
    np_rate = args.numpy_samples / best[0]
    rows = []
    for (name, b, threads, _), t in zip(cases, best):
        n = args.numpy_samples if name == "numpy" else b
        rate = n / t
        rows.append((name, b, threads, rate))
        if name == "torch-gpu":
            print(f"{name:10s} {b:6d} {'':>7s} {rate:11,.0f} {'':>9s} {rate / np_rate:8.2f}")
        else:
            per_core = rate / threads
            print(f"{name:10s} {b:6d} {threads:7d} {rate:11,.0f} {per_core:9,.0f} {per_core / np_rate:8.2f}"
                  + ("   (DRAEM's formulation, one sample at a time)" if name == "numpy" else "   (per core)"))
    return rows


if __name__ == "__main__":
    main()
