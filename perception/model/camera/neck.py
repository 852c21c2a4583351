"""Camera neck: merges the backbone's multi-stride maps into ONE map at the finest input stride, the single
image feature map that the depth net and the camera -> BEV lift consume (FPN-style lateral sum, Lin et al.
2017, without the per-level outputs that a 2-D detector would need)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from perception.model.camera.backbone import make_norm


class FPNNeck(nn.Module):
    """in_channels: channels of the backbone maps, in ascending-stride order (e.g. ``ResNet.out_channels``).
    out_channels: channels of the merged map. norm: "batch" or "group" (as the backbone, see ``make_norm``).

    Every input is reduced to out_channels by a 1x1 conv; the coarser ones are resized bilinearly to the
    finest map's size (ONNX Resize, inside the export budget) and all are summed; a 3x3 conv + norm + ReLU
    then smooths the aliasing of the upsampled maps.

    Sum rather than concatenation: the 3x3 conv then costs the same for any number of inputs. Each coarse map
    is resized straight to the target size (not 2x per level, FPN's top-down cascade) because only the finest
    level is output, and a size rather than a scale factor keeps odd sizes exact (900 px: 57 vs 29 rows)."""

    def __init__(self, in_channels: list[int], out_channels: int, norm: str = "batch") -> None:
        super().__init__()
        if not in_channels or any(c < 1 for c in in_channels):
            raise ValueError(f"in_channels must be a non-empty list of positive channel counts, got {in_channels}")
        if out_channels < 1:
            raise ValueError(f"out_channels must be >= 1, got {out_channels}")
        self.in_channels, self.out_channels = list(in_channels), out_channels
        # Lateral 1x1 convs keep their bias (as torchvision's FPN): no norm follows them before the sum.
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.fuse = nn.Sequential(
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            make_norm(norm, out_channels),
            nn.ReLU(inplace=True),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, feats: list[Tensor]) -> Tensor:
        """feats: backbone maps in ascending-stride order, feats[k] (B, in_channels[k], H_k, W_k) float, image
        pixel grid at stride s_k (e.g. s = 16, 32: H_0 = ceil(H/16)).
        Returns (B, out_channels, H_0, W_0): the merged map on the grid of feats[0] (stride s_0)."""
        if len(feats) != len(self.lateral):
            raise ValueError(f"FPNNeck built for {len(self.lateral)} inputs, got {len(feats)} feature maps")
        for k, (f, c) in enumerate(zip(feats, self.in_channels)):
            if f.dim() != 4 or f.shape[1] != c:
                raise ValueError(f"feats[{k}] must be (B, {c}, H, W), got {tuple(f.shape)}")
        size = feats[0].shape[-2:]  # (H_0, W_0)
        merged = self.lateral[0](feats[0])  # (B, out_channels, H_0, W_0)
        for lateral, f in zip(self.lateral[1:], feats[1:]):
            # align_corners=False (half-pixel centres) is the geometry of strided convs: a coarse cell's
            # centre lies between the fine cells it covers.
            merged = merged + F.interpolate(lateral(f), size=size, mode="bilinear", align_corners=False)
        return self.fuse(merged)  # (B, out_channels, H_0, W_0)
