"""Perspective-view auxiliary head (training only, never exported): dense supervision of the image features.

CenterNet / FCOS3D style, as BEVFormer v2's perspective supervision: on each camera's stride-16 feature map, a
class heatmap of the projected 3D box centres, and at each centre cell the sub-cell offset of the projected
centre, the log 2D size of the box's projected extent (in cells) and the log depth of the centre (m). Its targets
come from the GT boxes projected through the frame's ``img_from_ego`` (``perception.train.perspective_targets``).

The head is not part of ``FusionNet``: the training wrapper holds it beside the network, so checkpoints for
inference, their strict loading and the exported graph are the same with it on or off (tested).
"""
from __future__ import annotations

import math

from torch import Tensor, nn

from perception.model.heads.center_head import HEATMAP_PRIOR, ConvBranch

PERSPECTIVE_REGRESSIONS = (("offset", 2), ("log_size", 2), ("log_depth", 1))


class PerspectiveHead(nn.Module):
    """Image features (B*N, C, Hf, Wf) -> ``heatmap`` (B*N, K, Hf, Wf) logits and ``offset`` (2), ``log_size``
    (2: width, height in cells), ``log_depth`` (1: log metres) maps at the same resolution."""

    def __init__(self, in_channels: int, num_classes: int, head_channels: int = 64) -> None:
        super().__init__()
        self.heatmap = ConvBranch(in_channels, head_channels, num_classes,
                                  bias_init=-math.log((1 - HEATMAP_PRIOR) / HEATMAP_PRIOR))
        self.regressions = nn.ModuleDict({name: ConvBranch(in_channels, head_channels, channels)
                                          for name, channels in PERSPECTIVE_REGRESSIONS})

    def forward(self, feats: Tensor) -> dict[str, Tensor]:
        """feats: (B*N, C, Hf, Wf) float32 camera features (the neck's output)."""
        out = {"heatmap": self.heatmap(feats)}
        out.update({name: branch(feats) for name, branch in self.regressions.items()})
        return out
