"""Datasets (MVTec layout, VisA, ELPV, magnetic tile, the built-in synthetic set), contamination, few-shot, open-set
splits, tensor cache."""

from .cache import TensorCache, cache_tensors
from .datasets import (
    EXPECTED_TREE,
    MTD_EXPECTED_TREE,
    MTD_TYPES,
    ImageDataset,
    MVTecLike,
    Sample,
    categories,
    elpv,
    magnetic_tile,
    visa_categories,
    visa_from_split_csv,
)
from .protocols import (
    ContaminationReport,
    FewShotReport,
    OpenSetSplit,
    ProtocolSplit,
    anomaly_types,
    contaminate,
    few_shot,
    n_contaminated,
    open_set_split,
    protocol_split,
)
from .synthetic import SYNTHETIC_CLASSES, SYNTHETIC_VERSION, render_image, synthetic

__all__ = [
    "EXPECTED_TREE",
    "MTD_EXPECTED_TREE",
    "MTD_TYPES",
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_VERSION",
    "ContaminationReport",
    "FewShotReport",
    "ImageDataset",
    "OpenSetSplit",
    "ProtocolSplit",
    "MVTecLike",
    "Sample",
    "TensorCache",
    "anomaly_types",
    "cache_tensors",
    "categories",
    "contaminate",
    "elpv",
    "few_shot",
    "magnetic_tile",
    "n_contaminated",
    "open_set_split",
    "protocol_split",
    "render_image",
    "synthetic",
    "visa_categories",
    "visa_from_split_csv",
]
