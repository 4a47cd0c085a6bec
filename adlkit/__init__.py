"""adlkit: a notebook-first teaching kit for deep visual anomaly detection.

The library holds the reference implementations the notebooks derive step by step:
``adlkit.data`` (datasets, contamination, few-shot), ``adlkit.models`` (backbones),
``adlkit.metrics``, ``adlkit.viz`` and ``adlkit.checks`` (exercise checkers).
"""

from .config import cache_dir, data_dir, device, quick_mode, save_figures, seed_everything, textures_dir

__version__ = "0.1.0"
__all__ = ["__version__", "cache_dir", "data_dir", "device", "quick_mode", "save_figures", "seed_everything",
           "textures_dir"]
