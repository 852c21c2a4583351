"""CenterPoint-style detection head (Yin et al., CVPR 2021): a class heatmap and per-cell box regressions.

Output conventions (centre offset from the cell centre, log sizes, sin/cos yaw, ego-axis velocity) are those
of ``perception.model.decode``, which turns these maps into boxes; the training targets follow the same.
"""
from __future__ import annotations

import math

from torch import Tensor, nn

# The regressions and their channels, in the order decode gathers them.
REGRESSIONS = (("offset", 2), ("z", 1), ("log_size", 3), ("rotation", 2), ("velocity", 2))
HEATMAP_PRIOR = 0.1  # initial foreground probability: bias -log((1 - p) / p) = -2.19 (focal-loss init)


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 conv + BatchNorm + ReLU. BatchNorm whatever ``model.norm`` says (which switches the camera backbone and
    neck only, to ``camera/backbone.py``'s export-friendly GroupNorm): it folds into the conv at export."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class ConvBranch(nn.Sequential):
    """One output of a head: 3x3 conv-BN-ReLU then a 1x1 conv to ``out_channels``, optionally with its bias
    filled with ``bias_init``."""

    def __init__(self, in_channels: int, head_channels: int, out_channels: int,
                 bias_init: float | None = None) -> None:
        out = nn.Conv2d(head_channels, out_channels, 1)
        if bias_init is not None:
            nn.init.constant_(out.bias, bias_init)
        super().__init__(conv_bn_relu(in_channels, head_channels), out)


class CenterHead(nn.Module):
    """BEV features -> heatmap logits and box regressions, all at the input's resolution."""

    def __init__(self, in_channels: int, num_classes: int, head_channels: int = 64) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.shared = conv_bn_relu(in_channels, head_channels)
        self.heatmap = ConvBranch(head_channels, head_channels, num_classes,
                                  bias_init=-math.log((1 - HEATMAP_PRIOR) / HEATMAP_PRIOR))
        self.regressions = nn.ModuleDict(
            {name: ConvBranch(head_channels, head_channels, channels) for name, channels in REGRESSIONS})

    def forward(self, bev: Tensor) -> dict[str, Tensor]:
        """bev: (B, C_in, H, W) float32, ego@t0 BEV (row i along x, column j along y).

        Returns (B, *, H, W) float32 maps: ``heatmap`` (K) logits per class; ``offset`` (2) centre offset
        (d_i, d_j) from the cell centre, in cells; ``z`` (1) centre height, m; ``log_size`` (3) log of
        (w, l, h) in m; ``rotation`` (2) (sin yaw, cos yaw), unnormalised; ``velocity`` (2) (vx, vy), m/s
        over ground in ego axes."""
        x = self.shared(bev)  # (B, head_channels, H, W)
        out = {"heatmap": self.heatmap(x)}  # (B, K, H, W)
        out.update({name: branch(x) for name, branch in self.regressions.items()})
        return out
