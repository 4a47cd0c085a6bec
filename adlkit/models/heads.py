"""Heads on top of backbone features: DevNet's top-K score head and ADL's classification head."""

from __future__ import annotations

import torch
from torch import nn

from ..losses import top_k_mean

__all__ = ["TopKScoreHead", "ClassificationHead"]


class TopKScoreHead(nn.Module):
    """Patch scores |1x1 conv(features)|, image score = mean of the top-K patches (ADL eq. 2).

    ``forward(features [B, C, h, w]) -> (scores [B], patch_scores [B, 1, h, w])``.
    """

    def __init__(self, in_channels: int, topk_ratio: float = 0.1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 1, kernel_size=1)
        self.topk_ratio = topk_ratio

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        patch_scores = self.conv(features).abs()
        return top_k_mean(patch_scores, self.topk_ratio), patch_scores


class ClassificationHead(nn.Module):
    """Global average pooling -> linear -> one logit per image (sigmoid gives p(anomalous))."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.fc = nn.Linear(in_channels, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features.mean(dim=(2, 3)))[:, 0]
