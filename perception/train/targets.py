"""Training targets on the BEV grid, in the conventions ``perception.model.decode`` inverts (CenterPoint style).

Per GT box: a Gaussian peak on its class heatmap at the centre cell (radius from the box footprint, CenterPoint's
``gaussian_radius`` with min overlap 0.1, at least 2 cells), and at that cell the regression targets: offset of
the centre from the cell centre (cells), z, log(w, l, h), (sin, cos) yaw, velocity; and the trajectory target:
future positions minus the t0 centre (metres) with their validity. Built in numpy per batch (CPU, cheap).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from perception.model.decode import BevGrid


def gaussian_radius(length_cells: float, width_cells: float, min_overlap: float = 0.1) -> float:
    """CenterNet/CenterPoint radius (cells) such that a box shifted by it keeps IoU >= min_overlap."""
    h, w = length_cells, width_cells
    a1, b1, c1 = 1, h + w, w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + np.sqrt(b1 ** 2 - 4 * a1 * c1)) / 2
    a2, b2, c2 = 4, 2 * (h + w), (1 - min_overlap) * w * h
    r2 = (b2 + np.sqrt(b2 ** 2 - 4 * a2 * c2)) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (h + w), (min_overlap - 1) * w * h
    r3 = (b3 + np.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return float(min(r1, r2, r3))


def draw_gaussian(heat: np.ndarray, i: int, j: int, radius: int) -> None:
    """Max-paint a Gaussian of sigma (2r + 1) / 6 centred on cell (i, j) into heat (H, W), in place."""
    h, w = heat.shape
    sigma = (2 * radius + 1) / 6.0
    ys, xs = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    g = np.exp(-(xs * xs + ys * ys) / (2 * sigma * sigma))
    t, b = min(i, radius), min(h - i, radius + 1)
    l, r = min(j, radius), min(w - j, radius + 1)
    if t + b <= 0 or l + r <= 0:
        return
    np.maximum(heat[i - t:i + b, j - l:j + r], g[radius - t:radius + b, radius - l:radius + r],
               out=heat[i - t:i + b, j - l:j + r])


@dataclass
class Targets:
    """heatmap (B, K, H, W); ind (B, G) flat cell index; mask (B, G); regression (B, G, 10) =
    offset(2) z(1) log_size(3) sin cos(2) velocity(2); labels (B, G); traj (B, G, T, 2) metres from the t0
    centre; traj_valid (B, G, T)."""

    heatmap: torch.Tensor
    ind: torch.Tensor
    mask: torch.Tensor
    regression: torch.Tensor
    labels: torch.Tensor
    traj: torch.Tensor
    traj_valid: torch.Tensor


def build_targets(gt_boxes: torch.Tensor, gt_labels: torch.Tensor, gt_mask: torch.Tensor, gt_future: torch.Tensor,
                  gt_future_valid: torch.Tensor, grid: BevGrid, num_classes: int) -> Targets:
    """Batch GT (as collated: boxes (B, G, 9) ego [x y z w l h yaw vx vy], labels, mask, future (B, G, T, 2)
    absolute, validity) -> Targets. Boxes whose centre falls outside the grid are masked out."""
    b, g = gt_labels.shape
    h, w = grid.shape
    boxes = gt_boxes.numpy().astype(np.float64)
    labels = gt_labels.numpy()
    mask = gt_mask.numpy().copy()
    heat = np.zeros((b, num_classes, h, w), np.float32)
    ind = np.zeros((b, g), np.int64)
    reg = np.zeros((b, g, 10), np.float32)
    ij, off = grid.cell_and_offset(torch.from_numpy(boxes[..., :2]))
    ij, off = ij.numpy(), off.numpy()
    for bi in range(b):
        for gi in range(g):
            if not mask[bi, gi]:
                continue
            i, j = int(ij[bi, gi, 0]), int(ij[bi, gi, 1])
            if not (0 <= i < h and 0 <= j < w) or labels[bi, gi] < 0:
                mask[bi, gi] = False
                continue
            x, y, z, bw, bl, bh, yaw, vx, vy = boxes[bi, gi]
            radius = max(2, int(gaussian_radius(bl / grid.res_x, bw / grid.res_y)))
            draw_gaussian(heat[bi, labels[bi, gi]], i, j, radius)
            ind[bi, gi] = i * w + j
            reg[bi, gi] = [off[bi, gi, 0], off[bi, gi, 1], z, np.log(max(bw, 1e-3)), np.log(max(bl, 1e-3)),
                           np.log(max(bh, 1e-3)), np.sin(yaw), np.cos(yaw), vx, vy]
    traj = (gt_future - gt_boxes[..., None, :2]).float()  # (B, G, T, 2) metres from the t0 centre
    valid = gt_future_valid & torch.from_numpy(mask)[..., None]
    return Targets(torch.from_numpy(heat), torch.from_numpy(ind), torch.from_numpy(mask), torch.from_numpy(reg),
                   torch.from_numpy(np.where(mask, labels, -1)), traj, valid)
