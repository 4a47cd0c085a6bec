"""The shared trainable part between a frozen backbone and ADL's heads (``ADLConfig.shared``).

With a frozen backbone and nothing shared, ADL's three heads sit on fixed features and share no parameter,
so the classification and segmentation losses cannot change the score head's ranking (notebook 04,
section 6). The papers fine-tune the whole backbone, which costs about 10 s a step on a CPU. A shared
trainable part between the two gives every loss a path to the features the score head reads, at a cost a
CPU grid affords. Both take the frozen backbone's cached levels ``[f_2, f_3, f_4]`` and return the levels
the heads read:

* :class:`SharedNeck` (``shared="neck"``): 1x1 conv on the concatenated levels -> BN -> ReLU -> 3x3 conv,
  one map ``[B, width, H/8, W/8]`` that the score, classification and segmentation heads all read.
* :class:`TopStage` (``shared="top-stage"``): the backbone's last stage (ResNet-18: ``layer4``; EfficientNet-Lite0:
  ``blocks[6]``, 192 -> 320 channels at stride 32), a copy with ImageNet weights, recomputed from its cached input
  ``g``: ``[f_2, f_3, top(g)]``. Its BatchNorm layers keep
  ImageNet's running statistics by default (``bn="eval"``; their scale and shift still train): a training
  batch is half pseudo-anomalies, so batch statistics would describe a mixture the test set does not have,
  and the cached levels below were computed with the running statistics too. ``bn="train"`` updates them.

Notebook 04, section 6b builds both from their definitions and checks them against this module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import Backbone, conv1x1_on_levels

__all__ = ["SharedNeck", "TopStage", "SHARED_PARTS"]

SHARED_PARTS = ("none", "neck", "top-stage")


class SharedNeck(nn.Module):
    """levels ``[f_2 [B, C_2, H/8, W/8], f_3, f_4]`` -> ``[n [B, width, H/8, W/8]]``,
    n = conv3x3(ReLU(BN(conv1x1(concat(f_2, up(f_3), up(f_4)))))); the 1x1 conv is applied level by level
    (:func:`adlkit.models.backbone.conv1x1_on_levels`, the same numbers as on the concatenation)."""

    def __init__(self, channels: list[int], width: int = 64):
        super().__init__()
        self.reduce = nn.Conv2d(sum(channels), width, 1)
        self.bn = nn.BatchNorm2d(width)
        self.conv = nn.Conv2d(width, width, 3, padding=1)
        self.channels = [width]

    def forward(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.conv(F.relu(self.bn(conv1x1_on_levels(self.reduce, levels))))]


class TopStage(nn.Module):
    """levels ``[f_2, f_3, g, f_4]`` -> ``[f_2, f_3, top(g)]``: ``g`` is the input of the backbone's last stage
    (the backbone returns it with ``top_input = True``, which this sets), ``top`` a trainable copy of that stage
    (:meth:`adlkit.models.backbone.Backbone.top_stage`); the cached ``f_4`` is not used."""

    def __init__(self, net: Backbone, bn: str = "eval"):
        super().__init__()
        if tuple(net.levels[-2:]) != (3, 4):
            raise ValueError(f"shared='top-stage' needs the backbone's last two levels to be 3 and 4 (layers=(2, 3, 4)); "
                             f"got levels {net.levels}")
        if bn not in ("eval", "train"):
            raise ValueError(f"top_stage_bn must be 'eval' (ImageNet's running statistics) or 'train'; got {bn!r}")
        net.top_input = True
        self.top = net.top_stage().requires_grad_(True)
        self.bn = bn
        self.channels = list(net.channels)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.bn == "eval":  # keep the running statistics; the affine parameters still train
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(levels) != len(self.channels) + 1:
            raise ValueError(f"TopStage expects the backbone's levels and the last stage's input ({len(self.channels) + 1} "
                             f"maps, the backbone with top_input=True); got {len(levels)}")
        return [*levels[:-2], self.top(levels[-2])]
