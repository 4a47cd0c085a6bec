"""Networks: multi-scale backbones and the heads of deviation learning."""

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

__all__ = [
    "BACKBONES",
    "Backbone",
    "ClassificationHead",
    "TopKScoreHead",
    "backbone",
    "concat_levels",
    "conv1x1_on_levels",
    "efficientnet_lite0_weights_path",
    "efficientnet_pytorch_to_timm",
]
