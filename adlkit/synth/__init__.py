"""Pseudo-anomaly synthesis: Perlin noise and masks, blending, anomaly sources, elastic warps."""

from .perlin import PerlinMasks, blend, fade, perlin_masks, perlin_noise, rotate, sample_beta

__all__ = ["PerlinMasks", "blend", "fade", "perlin_masks", "perlin_noise", "rotate", "sample_beta"]
