"""Radar pillars -> BEV features, with only TensorRT-native ops.

Points arrive grouped per pillar by the numba preprocessing (``perception.data.radar_pillars.pillarize``):
``(P_pillars, N_per_pillar, F)`` with cell indices and masks. A per-point MLP, a masked max over each pillar's
points (no scatter reduction needed), then the pillar vectors are written onto the BEV canvas with a scatter
WITHOUT reduction: real pillars have unique cells, padded pillars all go to one dummy cell (index H*W) holding
zeros, which is sliced off. (``scatter_reduce`` exports as ScatterElements with a reduction, which the legacy
exporter writes invalidly and TensorRT does not run.) A small CNN follows.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from perception.config import PILLAR_FEATURES

# Point feature scales by name (m, m, m, dBsm, m/s, m/s, s, m, m): bring inputs to O(1).
FEATURE_SCALES = {"x": 50.0, "y": 50.0, "z": 2.0, "rcs": 20.0, "vx": 10.0, "vy": 10.0, "dt": 0.5, "dx": 1.0, "dy": 1.0}
DEFAULT_SCALES = tuple(FEATURE_SCALES[name] for name in PILLAR_FEATURES)


def scatter_to_canvas(pillar_feats: Tensor, cells: Tensor, pillar_mask: Tensor, bev_shape: tuple[int, int]) -> Tensor:
    """pillar_feats: (B, P, C); cells: (B, P) int64 flat index row * W + col (padding: H*W); pillar_mask (B, P).
    Returns (B, C, H, W). Real cells must be unique per sample (the pillariser guarantees it)."""
    b, p, c = pillar_feats.shape
    h, w = bev_shape
    feats = pillar_feats * pillar_mask.unsqueeze(-1).to(pillar_feats.dtype)  # padded pillars write zeros
    canvas = torch.zeros(b, c, h * w + 1, dtype=feats.dtype, device=feats.device)  # (B, C, H*W + 1)
    index = cells.unsqueeze(1).expand(b, c, p)  # (B, C, P)
    canvas = canvas.scatter(2, index, feats.transpose(1, 2))  # no reduction: one writer per real cell
    return canvas[:, :, : h * w].reshape(b, c, h, w)


class PillarEncoder(nn.Module):
    """(B, P, N, F) pillar points -> (B, C, H, W) radar BEV."""

    def __init__(self, in_features: int, channels: int, bev_shape: tuple[int, int],
                 scales: tuple[float, ...] = DEFAULT_SCALES):
        super().__init__()
        if len(scales) != in_features:
            raise ValueError(f"radar encoder: {in_features} input features but {len(scales)} scales")
        self.bev_shape = tuple(bev_shape)
        self.register_buffer("scales", torch.tensor(scales, dtype=torch.float32), persistent=False)
        self.point_mlp = nn.Sequential(nn.Linear(in_features, channels), nn.LayerNorm(channels), nn.ReLU(inplace=True),
                                       nn.Linear(channels, channels), nn.LayerNorm(channels), nn.ReLU(inplace=True))
        self.cnn = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.out_channels = channels

    def forward(self, features: Tensor, point_mask: Tensor, cells: Tensor, pillar_mask: Tensor) -> Tensor:
        """features: (B, P, N, F) float (fields in pillariser order); point_mask: (B, P, N) bool; cells: (B, P) int64;
        pillar_mask: (B, P) bool. Returns (B, C, H, W)."""
        x = self.point_mlp(features / self.scales)  # (B, P, N, C)
        x = torch.where(point_mask.unsqueeze(-1), x, torch.full_like(x, -1e4))  # padded points never win the max
        x = x.max(dim=2).values  # (B, P, C)
        x = torch.where(pillar_mask.unsqueeze(-1), x, torch.zeros_like(x))
        canvas = scatter_to_canvas(x, cells, pillar_mask, self.bev_shape)  # (B, C, H, W)
        return self.cnn(canvas)
