"""Frozen backbones' features, computed once per process: what every frozen-setting method shares.

A frozen backbone maps the same image to the same features, so they are computed once: :func:`featurize`
remembers each image's levels (keyed by the backbone and the image's bytes) for the rest of the process,
and :func:`remember` keeps a few larger objects (pseudo-anomaly pools, CKAAD's warp banks) keyed by
whatever made them. ADL, multi-cue ADL, CADA, CKAAD and the kNN baseline all featurise through here, so
runs on the same images (every contamination level, every ablation row, every seed) pay for them once.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch

__all__ = ["featurize", "features", "backbone_key", "images_key", "remember"]

_MEMO: OrderedDict = OrderedDict()  # (backbone, what) -> features: reused by every run in this process
_MEMO_LIMIT = 4  # pools are ~0.4 GB each (Lite0, 256 px, 1000); they are on disk too


def backbone_key(net) -> tuple:
    """Which backbone made a feature: name, weights, levels and a checksum of the stem's first weights (it
    tells seeded random initialisations apart). A frozen backbone is never changed in place."""
    first = next(net.parameters())
    return (net.name, net.weights, tuple(net.levels), net.normalize, float(first.detach().double().sum()),
            getattr(net, "top_input", False))


def images_key(images: torch.Tensor) -> str:
    """A checksum of the images' bytes."""
    return hashlib.sha1(images.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def remember(key, make):
    """``make()``'s result, computed once per ``key`` for this process (the 4 most recent are kept)."""
    if key not in _MEMO:
        _MEMO[key] = make()
        while len(_MEMO) > _MEMO_LIMIT:
            _MEMO.popitem(last=False)
    _MEMO.move_to_end(key)
    return _MEMO[key]


_IMAGE_FEATURES: OrderedDict = OrderedDict()  # (backbone, image hash) -> that image's levels
_IMAGE_LIMIT = 4000  # images (about 360 KB each for Lite0 at 256 px)


@torch.no_grad()
def featurize(net, images: torch.Tensor, batch_size: int = 32) -> list[torch.Tensor]:
    """A frozen backbone's levels for ``images`` (uint8 or float in [0, 1], [N, 3, S, S]), in batches.

    Remembered image by image (per backbone and image content) for the rest of the process, so runs
    that share images (the clean training images of every contamination level, the test set) featurise
    each of them once.
    """
    bkey = backbone_key(net)
    keys = [(bkey, images_key(im)) for im in images]
    todo = [i for i, k in enumerate(keys) if k not in _IMAGE_FEATURES]
    if todo:
        was = net.training
        net.eval()
        device = next(net.parameters()).device
        for chunk in torch.tensor(todo).split(batch_size):
            x = images[chunk].to(device)
            levels = features(net, x.float() / 255 if x.dtype == torch.uint8 else x.float())
            for j, i in enumerate(chunk.tolist()):
                _IMAGE_FEATURES[keys[i]] = [m[j].contiguous() for m in levels]
        net.train(was)
    for k in keys:
        _IMAGE_FEATURES.move_to_end(k)
    out = [torch.stack(level) for level in zip(*(_IMAGE_FEATURES[k] for k in keys))] if keys else []
    while len(_IMAGE_FEATURES) > max(_IMAGE_LIMIT, len(keys)):
        _IMAGE_FEATURES.popitem(last=False)
    return out


@torch.no_grad()
def features(net, x: torch.Tensor) -> list[torch.Tensor]:
    """Levels of a frozen backbone (in eval mode) for float images, not remembered (pool members are seen once)."""
    return [m.contiguous() for m in net(x.contiguous(memory_format=torch.channels_last))]
