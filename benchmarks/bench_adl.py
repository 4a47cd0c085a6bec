"""ADL training speed: images/s of one training step and the wall time of the paper's schedule.

    python benchmarks/bench_adl.py [--size 256] [--steps 20] [--schedule] [--backbone resnet18]

* step: forward + backward + Adam of ADLModel on 24 normal + 24 pseudo-anomalies (the pseudo-anomalies
  made on the device in the same step), timed over ``--steps`` steps after a warm-up, with bf16
  autocast on and off (on CUDA; on a CPU only fp32);
* ``--schedule``: ``train_adl`` with the paper's schedule (25 epochs x 20 steps x 48 images = 24,000
  images) on one synthetic class, data and synthesis included, and its wall time.

Goal (issue 6): <= 20 s for the whole schedule on one H100 (compute floor ~7.5 s, ~3,200 img/s).
Weights do not matter for speed, so the backbone is built with random weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from adlkit import data as D
from adlkit.methods.adl import ADLConfig, adl_losses, train_adl


def time_steps(config: ADLConfig, train, device, steps: int) -> float:
    """Images per second of the training step, measured after a warm-up."""
    from adlkit.methods.adl import ADLModel
    from adlkit.synth import PseudoAnomaly

    cache = D.cache_tensors(train, device)
    model = ADLModel(config).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    pseudo = PseudoAnomaly(config.image_size, device=device)
    g_cpu, g_dev = torch.Generator().manual_seed(0), torch.Generator(device=device).manual_seed(0)
    n = config.n_normal + config.n_pseudo
    labels = torch.cat([torch.zeros(config.n_normal), torch.ones(config.n_pseudo)]).to(device)
    amp = config.amp and device.type == "cuda"

    def step(k):
        pick = torch.randint(len(cache), (n,), generator=g_cpu)
        normal, base = cache.batch(pick[:config.n_normal])["image"], cache.batch(pick[config.n_normal:])["image"]
        fake, masks, _ = pseudo(base, g_dev)
        masks = torch.cat([torch.zeros_like(masks), masks])
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            out = model(torch.cat([normal, fake]))
        loss = adl_losses(out, labels, masks, config, after_burn_in=True, step=k, generator=g_cpu)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for k in range(3):
        step(k)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for k in range(steps):
        step(k)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n * steps / (time.perf_counter() - t0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--schedule", action="store_true", help="also run the paper's full schedule (meant for a GPU)")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    root = D.synthetic(image_size=min(args.size, 256))
    train = D.MVTecLike(root, "tile", "train", args.size)
    base = ADLConfig(backbone=args.backbone, pretrained=False, image_size=args.size)
    print(f"device: {name}; backbone {args.backbone}; {args.size} px; batch 24 + 24\n")
    print(f"{'precision':10s} {'images/s':>9s} {'s / 24k images':>15s}")
    for amp in ((True, False) if device.type == "cuda" else (False,)):
        rate = time_steps(dataclasses.replace(base, amp=amp), train, device, args.steps)
        print(f"{'bf16' if amp else 'fp32':10s} {rate:9,.0f} {24000 / rate:15.1f}")
    if args.schedule:
        t0 = time.perf_counter()
        _, hist = train_adl(base, train, device)
        print(f"\npaper schedule (25 x 20 x 48 = 24,000 images, data + synthesis included): "
              f"{time.perf_counter() - t0:.1f} s wall (training loop {hist['seconds']:.1f} s)")


if __name__ == "__main__":
    main()
