"""Networks: multi-scale backbones, the heads of deviation learning, reverse distillation and CADA's heads."""

from .backbone import (
    BACKBONES,
    Backbone,
    backbone,
    concat_levels,
    conv1x1_on_levels,
    efficientnet_lite0_weights_path,
    efficientnet_pytorch_to_timm,
)
from .heads import ClassificationHead, TopKScoreHead
from .rd import DistributionHead, ReverseDistillation, anomaly_map, gaussian_smooth, image_score

__all__ = [
    "BACKBONES",
    "Backbone",
    "ClassificationHead",
    "DistributionHead",
    "ReverseDistillation",
    "anomaly_map",
    "gaussian_smooth",
    "image_score",
    "TopKScoreHead",
    "backbone",
    "concat_levels",
    "conv1x1_on_levels",
    "efficientnet_lite0_weights_path",
    "efficientnet_pytorch_to_timm",
]
