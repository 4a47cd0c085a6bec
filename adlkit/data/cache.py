"""Decoded images held as tensors (on the GPU when there is one) so training never waits on PNGs.

A 256-px RGB image is 192 KiB as uint8: a whole MVTec AD category (a few hundred images) fits
in a few hundred MiB of GPU memory. Images stay uint8 until a batch is taken.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from .datasets import ImageDataset

__all__ = ["TensorCache", "cache_tensors"]


@dataclass
class TensorCache:
    images: torch.Tensor  # uint8 [N, 3, S, S]
    masks: torch.Tensor  # bool  [N, 1, S, S]
    labels: torch.Tensor  # int64 [N]  (what the learner sees)
    anomalous: torch.Tensor  # int64 [N] (ground truth)
    class_names: list[str]
    paths: list[str]

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def device(self) -> torch.device:
        return self.images.device

    def batch(self, index: torch.Tensor) -> dict:
        """Images as float in [0, 1] plus masks/labels, for the given indices."""
        index = index.to(self.images.device)
        return {
            "image": self.images[index].float().div_(255.0),
            "mask": self.masks[index].float(),
            "label": self.labels[index],
            "anomalous": self.anomalous[index],
            "index": index,
        }

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                drop_last: bool = False):
        """Iterate over batches; with ``shuffle`` the order comes from ``generator`` (CPU) for reproducibility."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            yield self.batch(order[start:start + batch_size])


def cache_tensors(dataset: ImageDataset, device: torch.device | str = "cpu", workers: int = 4) -> TensorCache:
    """Decode and resize every image of ``dataset`` once; return them as tensors on ``device``.

    Derived in notebook 00, §3 (a tensor cache)."""
    if dataset.image_size is None:
        raise ValueError("cache_tensors needs a fixed image_size (the dataset has image_size=None).")

    def load(sample):
        image = dataset.load_image(sample)
        return image, dataset.load_mask(sample, tuple(image.shape[-2:]))

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # PIL decoding releases the GIL
        loaded = list(pool.map(load, dataset.samples))
    images = torch.stack([im for im, _ in loaded]) if loaded else torch.zeros(0, 3, dataset.image_size,
                                                                            dataset.image_size, dtype=torch.uint8)
    masks = torch.stack([m for _, m in loaded]) if loaded else torch.zeros(0, 1, dataset.image_size,
                                                                         dataset.image_size, dtype=torch.bool)
    device = torch.device(device)
    return TensorCache(
        images.to(device),
        masks.to(device),
        torch.as_tensor(dataset.labels, device=device),
        torch.as_tensor(dataset.truths, device=device),
        dataset.class_names,
        [str(s.path) for s in dataset.samples],
    )
