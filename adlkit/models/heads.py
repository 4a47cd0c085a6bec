"""Heads on top of backbone features: DevNet's top-K score head and ADL's classification head."""

from __future__ import annotations

import torch
from torch import nn

from ..losses import top_k_mean
from .backbone import conv1x1_on_levels

__all__ = ["TopKScoreHead", "ClassificationHead"]


class TopKScoreHead(nn.Module):
    """Patch scores |1x1 conv(features)|, image score = mean of the top-K patches (ADL eq. 2).

    ``forward(features [B, C, h, w]) -> (scores [B], patch_scores [B, 1, h, w])``. ``features`` may
    also be a backbone's list of levels: the same as on their concatenation (``concat_levels``), computed
    level by level (``conv1x1_on_levels``).
    """

    def __init__(self, in_channels: int, topk_ratio: float = 0.1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 1, kernel_size=1)
        self.topk_ratio = topk_ratio

    def forward(self, features: torch.Tensor | list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        patch = conv1x1_on_levels(self.conv, features) if isinstance(features, (list, tuple)) else self.conv(features)
        patch_scores = patch.abs()
        return top_k_mean(patch_scores, self.topk_ratio), patch_scores


class ClassificationHead(nn.Module):
    """Global average pooling -> linear -> one logit per image (sigmoid gives p(anomalous))."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.fc = nn.Linear(in_channels, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features.mean(dim=(2, 3)))[:, 0]
