"""CKAAD's networks: a feature auto-encoder and two energy-based discriminators.

Q. Fang, Q. Su, W. Lv, W. Xu, J. Yu, *Boosting Fine-Grained Visual Anomaly Detection with
Coarse-Knowledge-Aware Adversarial Learning*, arXiv:2412.12850, 2024 (AAAI 2025). Shapes follow the
authors' code (``model/model.py``, ``model/encoder.py``, ``model/decoder.py``):

* :class:`FeatureAE` - G = Dec(Enc(f)) on a frozen backbone's levels f_1, f_2, f_3 (eq. 1): reverse
  distillation's bottleneck and decoder with InstanceNorm instead of BatchNorm (the paper's Table 6).
* :class:`PatchDiscriminator` - per level: L2-normalised channels -> 1x1 conv -> LeakyReLU(0.1) -> 1x1 conv
  -> LeakyReLU -> 1x1 conv -> one score per position (eqs. 11-12).
* :class:`ImageDiscriminator` - per level: stride-2 conv-InstanceNorm-LeakyReLU down to the smallest map,
  concatenated, strided convs down to 1 x 1, then Linear -> per-sample norm -> LeakyReLU -> Linear: one
  score per image (eq. 8). In the official code this class is defined twice under one name and the patch
  version shadows it, so the image discriminator never runs there; here both exist.

Discriminator outputs are scores s; their energy E(s, y) is :func:`adlkit.losses.energy`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .rd import ReverseDistillation

__all__ = ["FeatureAE", "PatchDiscriminator", "ImageDiscriminator"]


class FeatureAE(ReverseDistillation):
    """G: frozen features [f_1, f_2, f_3] -> reconstructions [f^_1, f^_2, f^_3] of the same shapes (eq. 1).

    The encoder fuses the three levels (stride-2 convolutions to the smallest map, concatenated, one
    stride-2 residual block); the decoder mirrors it with transposed convolutions back to every level.
    InstanceNorm throughout (no BatchNorm: a batch holds normal and anomalous features, whose statistics
    BatchNorm would mix). Each level's output is a linear 1x1 convolution, since the backbone's features
    may be negative (EfficientNet-Lite0's are; the official code ends in ReLU, which suits ResNet's).
    ``forward(levels) -> (reconstructions, latent)``.
    """

    def __init__(self, channels, bottleneck: int | None = None):
        super().__init__(channels, bottleneck, norm="instance")


class PatchDiscriminator(nn.Module):
    """One score per position and level: ``forward(levels) -> [s_l [B, h_l, w_l] for each level]``."""

    def __init__(self, channels, hidden: int | None = None):
        super().__init__()
        self.nets = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, hidden or c, 1, bias=False), nn.LeakyReLU(0.1),
                          nn.Conv2d(hidden or c, hidden or c, 1, bias=False), nn.LeakyReLU(0.1),
                          nn.Conv2d(hidden or c, 1, 1, bias=False))
            for c in channels)

    def forward(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(levels) != len(self.nets):
            raise ValueError(f"{len(levels)} levels for a discriminator built for {len(self.nets)}")
        return [net(F.normalize(f, dim=1))[:, 0] for net, f in zip(self.nets, levels)]


class ImageDiscriminator(nn.Module):
    """One score per image from all levels: ``forward(levels) -> s [B]``.

    ``sizes`` are the levels' spatial sizes (e.g. 32, 16, 8 at 128 px); the smallest must be a power of 2.
    """

    def __init__(self, channels, sizes):
        super().__init__()
        channels, sizes = [int(c) for c in channels], [int(s) for s in sizes]
        smallest = sizes[-1]
        if smallest < 1 or smallest & (smallest - 1):
            raise ValueError(f"the smallest level must be a power of 2 wide; got sizes {sizes}")
        downs, fused = [], 0
        for c, s in zip(channels, sizes):
            layers = []
            while s > smallest:  # stride-2 conv-IN-LeakyReLU, doubling the channels, to the smallest map
                layers += [nn.Conv2d(c, 2 * c, 3, 2, 1, bias=False), nn.InstanceNorm2d(2 * c), nn.LeakyReLU(0.1)]
                s, c = s // 2, 2 * c
            downs.append(nn.Sequential(*layers))
            fused += c
        self.downs = nn.ModuleList(downs)
        width, layers, s, c = channels[-1], [], smallest, fused
        while s > 2:
            layers += [nn.Conv2d(c, width, 3, 2, 1, bias=False), nn.InstanceNorm2d(width), nn.LeakyReLU(0.1)]
            s, c = s // 2, width
        layers.append(nn.Conv2d(c, width, s, s, bias=False))  # the last 2 x 2 (or 1 x 1) to one vector
        self.to_vector = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(width, width // 4, bias=False), nn.LayerNorm(width // 4, elementwise_affine=False),
                                  nn.LeakyReLU(0.1), nn.Linear(width // 4, 1, bias=False))

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        if len(levels) != len(self.downs):
            raise ValueError(f"{len(levels)} levels for a discriminator built for {len(self.downs)}")
        z = self.to_vector(torch.cat([down(f) for down, f in zip(self.downs, levels)], dim=1))
        return self.head(z.flatten(1))[:, 0]
