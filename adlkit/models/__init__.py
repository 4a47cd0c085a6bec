"""Networks: multi-scale backbones (more heads and models arrive with the method notebooks)."""

from .backbone import (
    BACKBONES,
    Backbone,
    backbone,
    efficientnet_lite0_weights_path,
    efficientnet_pytorch_to_timm,
)

__all__ = ["BACKBONES", "Backbone", "backbone", "efficientnet_lite0_weights_path", "efficientnet_pytorch_to_timm"]
