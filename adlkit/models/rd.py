"""Reverse distillation on a frozen encoder, its anomaly map, and CADA's distribution heads.

Reverse distillation (H. Deng, X. Li, *Anomaly Detection via Reverse Distillation from One-Class
Embedding*, CVPR 2022): a frozen encoder E gives levels E_1, E_2, E_3 (strides 4, 8, 16); a trainable
one-class bottleneck fuses them into one small embedding; a decoder D, the encoder's mirror, rebuilds
each level from it. Trained on normal images only, D rebuilds what is normal and fails where the
image is not::

    E_1 [B, C1, S/4]  --conv s2--conv s2--+
    E_2 [B, C2, S/8]  --conv s2-----------+-- concat [3 C3, S/16] -- residual block s2 --> b [B, Cb, S/32]
    E_3 [B, C3, S/16] --------------------+
    b --up--> D_3 [B, C3, S/16] --up--> D_2 [B, C2, S/8] --up--> D_1 [B, C1, S/4]

The map A = Gauss_sigma(sum_l up(1 - cos_ch(E_l, D_l))) (:func:`adlkit.maps.anomaly_map`) and the image
score s_img = mean of its top 1% pixels (:func:`adlkit.maps.image_score`) live in :mod:`adlkit.maps`, shared
with the other methods; they stay importable from here (``from adlkit.models.rd import gaussian_smooth``).

CADA (J. Guo, H. Han, S. Lu, W. Zhang, H. Li, *Absolute-Unified Multi-Class Anomaly Detection via
Class-Agnostic Distribution Alignment*, arXiv:2404.00724, 2024) puts a small head on the bottleneck
b: :class:`DistributionHead` (a conv, then linear layers with dropout before each) predicts an image's
normal-score statistics (the regressor) or its class (CaDA-B's classifier).

Widths come from the encoder (``Backbone.channels``), so the same code runs on WideResNet-50
(256/512/1024) and on EfficientNet-Lite0 (24/40/112). Lite0's levels are the linear outputs of
its blocks (signed; about half are negative), so each decoder level ends in a linear 1x1 convolution
and the next stage reads the hidden (GELU) features before it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# the maps and scores live in the bottom layer (adlkit.maps); kept importable from here, where notebooks import them
from ..maps import anomaly_map, blur_matrix, cosine_distance_maps, gaussian_smooth, image_score

__all__ = ["ReverseDistillation", "DistributionHead", "anomaly_map", "gaussian_smooth", "blur_matrix", "image_score",
           "cosine_distance_maps"]


# RD4AD normalises with BatchNorm; CKAAD's feature auto-encoder with affine InstanceNorm (its Table 6)
NORMS = {"batch": nn.BatchNorm2d, "instance": lambda c: nn.InstanceNorm2d(c, affine=True)}


def _conv_bn(c_in: int, c_out: int, stride: int = 1, act: type[nn.Module] = nn.ReLU, norm=nn.BatchNorm2d
             ) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), norm(c_out), act())


class _ResidualDown(nn.Module):
    """A bottleneck residual block with stride 2 (RD4AD's one-class embedding block)."""

    def __init__(self, c_in: int, c_out: int, norm=nn.BatchNorm2d):
        super().__init__()
        mid = c_out // 4
        self.body = nn.Sequential(
            nn.Conv2d(c_in, mid, 1, bias=False), norm(mid), nn.ReLU(),
            nn.Conv2d(mid, mid, 3, 2, 1, bias=False), norm(mid), nn.ReLU(),
            nn.Conv2d(mid, c_out, 1, bias=False), norm(c_out))
        self.skip = nn.Sequential(nn.Conv2d(c_in, c_out, 1, 2, bias=False), norm(c_out))

    def forward(self, x):
        return F.relu(self.body(x) + self.skip(x))


class _UpStage(nn.Module):
    """One decoder stage: x2 transposed conv, a 3x3 conv (BN, GELU), and a linear 1x1 conv giving D_l."""

    def __init__(self, c_in: int, hidden: int, c_out: int, norm=nn.BatchNorm2d):
        super().__init__()
        self.up = nn.Sequential(nn.ConvTranspose2d(c_in, hidden, 2, 2, bias=False), norm(hidden), nn.GELU())
        self.conv = _conv_bn(hidden, hidden, act=nn.GELU, norm=norm)
        self.out = nn.Conv2d(hidden, c_out, 1)

    def forward(self, x):
        h = self.conv(self.up(x))
        return h, self.out(h)


class ReverseDistillation(nn.Module):
    """The trainable part of reverse distillation: bottleneck + decoder for an encoder's three levels.

    ``forward(levels) -> (decoded, b)``: ``levels`` are the encoder's [E_1, E_2, E_3] (strides 4, 8, 16
    of the input), ``decoded`` the decoder's [D_1, D_2, D_3] in the same shapes, ``b`` the bottleneck
    [B, Cb, S/32, S/32] (CADA's regressor reads it). ``channels`` = (C1, C2, C3); ``bottleneck``
    defaults to 2 * C3 (RD4AD: 2048 for WideResNet-50's 1024). ``norm``: ``"batch"`` (RD4AD) or
    ``"instance"`` (CKAAD's feature auto-encoder, :class:`adlkit.models.ckaad.FeatureAE`).
    """

    def __init__(self, channels: tuple[int, int, int] | list[int], bottleneck: int | None = None, norm: str = "batch"):
        super().__init__()
        if len(channels) != 3:
            raise ValueError(f"reverse distillation uses three encoder levels; got channels {channels}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {sorted(NORMS)}; got {norm!r}")
        nm = NORMS[norm]
        c1, c2, c3 = (int(c) for c in channels)
        cb = bottleneck or 2 * c3
        self.channels, self.bottleneck_channels = (c1, c2, c3), cb
        # one-class bottleneck: multi-scale fusion to stride 16, then one stride-2 residual block
        self.fuse1 = nn.Sequential(_conv_bn(c1, c2, 2, norm=nm), _conv_bn(c2, c3, 2, norm=nm))
        self.fuse2 = _conv_bn(c2, c3, 2, norm=nm)
        self.embed = _ResidualDown(3 * c3, cb, nm)
        # decoder: the encoder's mirror (widths and strides), GELU inside
        self.up3 = _UpStage(cb, c3, c3, nm)
        self.up2 = _UpStage(c3, c2, c2, nm)
        self.up1 = _UpStage(c2, c1, c1, nm)

    def encode(self, levels: list[torch.Tensor]) -> torch.Tensor:
        """The bottleneck b [B, Cb, S/32, S/32] of the encoder's three levels."""
        e1, e2, e3 = levels
        if e1.shape[1] != self.channels[0] or e2.shape[1] != self.channels[1] or e3.shape[1] != self.channels[2]:
            raise ValueError(f"levels have channels {[e.shape[1] for e in levels]}; this model expects "
                             f"{list(self.channels)} (build it with the encoder's .channels)")
        return self.embed(torch.cat([self.fuse1(e1), self.fuse2(e2), e3], dim=1))

    def decode(self, b: torch.Tensor) -> list[torch.Tensor]:
        """[D_1, D_2, D_3] from the bottleneck."""
        h3, d3 = self.up3(b)
        h2, d2 = self.up2(h3)
        _, d1 = self.up1(h2)
        return [d1, d2, d3]

    def forward(self, levels: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        b = self.encode(levels)
        return self.decode(b), b


class DistributionHead(nn.Module):
    """CADA's head on the bottleneck: ``n_conv`` convs C -> C (``kernel`` x ``kernel``, ReLU), global average pooling, then
    ``n_linear`` linear layers (``hidden`` wide, ReLU between) with dropout before each; ``out`` outputs.

    The regressor has out = 2 (u_hat, gamma_hat), or (u_hat, sigma_hat) for the (u, sigma) variant;
    CaDA-B's classifier has out = the number of classes (logits).
    """

    def __init__(self, in_channels: int, out: int, n_conv: int = 1, n_linear: int = 2, hidden: int = 256,
                 dropout: float = 0.25, kernel: int = 1):
        super().__init__()
        if n_linear < 1:
            raise ValueError(f"n_linear must be at least 1; got {n_linear}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}")
        self.convs = nn.Sequential(*[nn.Sequential(nn.Conv2d(in_channels, in_channels, kernel, 1, kernel // 2), nn.ReLU())
                                     for _ in range(n_conv)])
        widths = [in_channels] + [hidden] * (n_linear - 1) + [out]
        layers = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers += [nn.Dropout(dropout), nn.Linear(a, b)] + ([nn.ReLU()] if i < n_linear - 1 else [])
        self.mlp = nn.Sequential(*layers)

    def forward(self, b: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.convs(b).mean(dim=(2, 3)))
