"""Pseudo-anomaly synthesis: Perlin noise and masks, blending, anomaly sources, elastic warps, CutMix, CutPaste."""

from .cut import cutmix, cutpaste, derangement, rectangles
from .perlin import PerlinMasks, blend, fade, interpolate_corners, perlin_masks, perlin_noise, rotate, sample_beta
from .pseudo import (
    AUGMENTATIONS,
    PER_VALUE,
    PseudoAnomaly,
    augment_sources,
    builtin_sources,
    elastic_anomalies,
    histograms,
    load_texture_sources,
)

__all__ = ["PerlinMasks", "blend", "fade", "interpolate_corners", "perlin_masks", "perlin_noise", "rotate", "sample_beta",
           "AUGMENTATIONS", "PER_VALUE", "PseudoAnomaly", "augment_sources", "builtin_sources", "elastic_anomalies",
           "histograms", "load_texture_sources", "cutmix", "cutpaste", "derangement", "rectangles"]
