"""Streaming temporal fusion: an earlier frame's BEV warped into the current ego frame and fused with the current BEV.

The graph stays stateless: the previous BEV, the ego motion since it (``cur_from_prev``), the time gap and a
validity flag are run-time inputs; the runners keep the state (``perception/streaming.py``). The warp is one 4-D
``grid_sample`` whose sampling grid is computed in the graph from the 4x4 with elementwise ops (the 2x2 inverse is
written out; no ``torch.inverse``), so the export stays inside DESIGN.md's op budget.

The BEV is planar: the warp uses the x-y part of ``cur_from_prev`` (rotation about z, translation in x and y,
and any BEV augmentation of both frames: scale and flips, which make the 2x2 block a similarity or a reflection).
Roll, pitch and z are ignored, as in BEVDet4D's alignment.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class BevWarp(nn.Module):
    """Resample a BEV map of an earlier ego frame onto the current frame's BEV grid.

    Grid convention (``perception/model/decode.py``): map ``(B, C, H, W)``, row ``i`` along ego x, column ``j``
    along ego y, cell centres at ``x_range[0] + (i + 0.5) * res_x`` and ``y_range[0] + (j + 0.5) * res_y``."""

    def __init__(self, x_range: tuple[float, float], y_range: tuple[float, float], shape: tuple[int, int]):
        super().__init__()
        h, w = shape
        self.x_range, self.y_range = tuple(float(v) for v in x_range), tuple(float(v) for v in y_range)
        res_x, res_y = (self.x_range[1] - self.x_range[0]) / h, (self.y_range[1] - self.y_range[0]) / w
        xs = self.x_range[0] + (torch.arange(h, dtype=torch.float32) + 0.5) * res_x  # (H,) cell centres, m
        ys = self.y_range[0] + (torch.arange(w, dtype=torch.float32) + 0.5) * res_y  # (W,)
        self.register_buffer("cell_x", xs.view(1, h, 1), persistent=False)  # (1, H, 1) metres, current ego frame
        self.register_buffer("cell_y", ys.view(1, 1, w), persistent=False)  # (1, 1, W)

    def sample_points(self, cur_from_prev: Tensor) -> tuple[Tensor, Tensor]:
        """cur_from_prev: (B, 4, 4) float32, current ego <- previous ego (both as the BEV sees them, augmentation
        included). Returns (px, py): (B, H, W) metres, each current cell centre in the previous ego frame."""
        assert cur_from_prev.shape[-2:] == (4, 4), f"cur_from_prev must be (B, 4, 4), got {tuple(cur_from_prev.shape)}"
        b = cur_from_prev.shape[0]
        m = cur_from_prev.float()
        a, bb = m[:, 0, 0].view(b, 1, 1), m[:, 0, 1].view(b, 1, 1)  # (B, 1, 1) each
        c, d = m[:, 1, 0].view(b, 1, 1), m[:, 1, 1].view(b, 1, 1)
        tx, ty = m[:, 0, 3].view(b, 1, 1), m[:, 1, 3].view(b, 1, 1)
        det = a * d - bb * c  # (B, 1, 1); +-scale^2 for a similarity, never near 0
        dx, dy = self.cell_x - tx, self.cell_y - ty  # (B, H, 1), (B, 1, W)
        px = (d * dx - bb * dy) / det  # (B, H, W): prev = inverse(2x2) @ (cur - t)
        py = (a * dy - c * dx) / det  # (B, H, W)
        return px, py

    def forward(self, prev_bev: Tensor, cur_from_prev: Tensor) -> tuple[Tensor, Tensor]:
        """prev_bev: (B, C, H, W) on the previous ego frame's grid. Returns (warped (B, C, H, W), inside
        (B, 1, H, W) float 0/1: the current cell's centre falls inside the previous grid)."""
        px, py = self.sample_points(cur_from_prev)
        (x0, x1), (y0, y1) = self.x_range, self.y_range
        u = (py - y0) * (2.0 / (y1 - y0)) - 1.0  # (B, H, W) normalised column coordinate (grid_sample's x)
        v = (px - x0) * (2.0 / (x1 - x0)) - 1.0  # (B, H, W) normalised row coordinate (grid_sample's y)
        grid = torch.stack([u, v], dim=-1)  # (B, H, W, 2)
        warped = nn.functional.grid_sample(prev_bev, grid, mode="bilinear", padding_mode="zeros",
                                           align_corners=False)  # (B, C, H, W)
        inside = ((u.abs() <= 1.0) & (v.abs() <= 1.0)).to(prev_bev.dtype).unsqueeze(1)  # (B, 1, H, W)
        return warped, inside


class TemporalFusion(nn.Module):
    """(current BEV, previous BEV, cur_from_prev, gap, validity) -> fused BEV, same shape as the current one.

    ``bev + conv([bev, warped * valid, valid, dt * valid])``: the warped map is zeroed where the previous frame is
    invalid (cold start) or does not cover the cell; the validity map and the gap (seconds) are input channels, so
    the network knows how old and where the history is. The residual keeps the single-frame path intact."""

    def __init__(self, channels: int, x_range: tuple[float, float], y_range: tuple[float, float],
                 shape: tuple[int, int]):
        super().__init__()
        self.channels, self.shape = int(channels), tuple(shape)
        self.warp = BevWarp(x_range, y_range, shape)
        self.fuse = nn.Sequential(nn.Conv2d(2 * channels + 2, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                                  nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, bev: Tensor, prev_bev: Tensor, cur_from_prev: Tensor, prev_dt: Tensor,
                prev_valid: Tensor) -> Tensor:
        """bev, prev_bev: (B, C, H, W); cur_from_prev: (B, 4, 4) float32; prev_dt: (B,) float32 seconds (current
        t0 - previous t0); prev_valid: (B,) bool. Returns (B, C, H, W)."""
        b = bev.shape[0]
        warped, inside = self.warp(prev_bev.to(bev.dtype), cur_from_prev)
        valid = prev_valid.to(bev.dtype).view(b, 1, 1, 1) * inside  # (B, 1, H, W)
        dt = prev_dt.to(bev.dtype).view(b, 1, 1, 1) * valid  # (B, 1, H, W) seconds, 0 where no history
        x = torch.cat([bev, warped * valid, valid, dt], dim=1)  # (B, 2C + 2, H, W)
        return bev + self.fuse(x)

    def cold_inputs(self, bev: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The temporal inputs of a cold start for a batch like ``bev``: zero BEV, identity motion, gap 0, invalid."""
        b = bev.shape[0]
        eye = torch.eye(4, dtype=torch.float32, device=bev.device).expand(b, 4, 4)
        return (torch.zeros_like(bev), eye, torch.zeros(b, dtype=torch.float32, device=bev.device),
                torch.zeros(b, dtype=torch.bool, device=bev.device))
