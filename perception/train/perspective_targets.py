"""Targets and loss of the perspective-view auxiliary head (``perception.model.heads.perspective_head``).

Per camera and GT box, through the frame's ``img_from_ego`` (after augmentation, as the images):

- the box centre projects to pixel (u, v) at depth d; boxes whose centre is behind the camera (d < 0.5 m) or
  outside the image are skipped, as are masked cameras;
- the 2D extent is the bounding rectangle of the corners in front of the camera, clipped to the image;
- on the stride-s feature grid (s = image / feature size) the centre cell is (floor((v + 0.5) / s_y),
  floor((u + 0.5) / s_x)); a Gaussian peak (CenterNet radius from the extent in cells, at least 1) goes on the
  box's class heatmap, and the regressions at that cell are the offset of the centre from the cell centre
  (cells), log(width, height of the extent in cells) and log(d).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from perception.train.losses import gather_cells, gaussian_focal_loss
from perception.train.targets import draw_gaussian, gaussian_radius
from perception.visualize import box_corners

MIN_CENTRE_DEPTH_M = 0.5
REG_CHANNELS = 5  # offset (2), log size (2), log depth (1)


@dataclass
class PerspectiveTargets:
    """heatmap (B*N, K, Hf, Wf); ind (B*N, G) flat cell; mask (B*N, G); regression (B*N, G, 5) =
    offset u, v (cells from the cell centre), log width, log height (cells), log depth (m)."""

    heatmap: Tensor
    ind: Tensor
    mask: Tensor
    regression: Tensor


def build_perspective_targets(gt_boxes: Tensor, gt_labels: Tensor, gt_mask: Tensor, img_from_ego: Tensor,
                              camera_valid: Tensor, image_hw: tuple[int, int], feat_hw: tuple[int, int],
                              num_classes: int) -> PerspectiveTargets:
    """gt_boxes (B, G, 9) ego@t0 [x y z w l h yaw vx vy]; gt_labels (B, G); gt_mask (B, G); img_from_ego
    (B, N, 4, 4); camera_valid (B, N). Camera k of sample b is row b * N + k of the outputs."""
    b, g = gt_labels.shape
    n = img_from_ego.shape[1]
    hf, wf = feat_hw
    h, w = image_hw
    sy, sx = h / hf, w / wf
    heat = np.zeros((b * n, num_classes, hf, wf), np.float32)
    ind = np.zeros((b * n, g), np.int64)
    mask = np.zeros((b * n, g), bool)
    reg = np.zeros((b * n, g, REG_CHANNELS), np.float32)
    boxes = gt_boxes.detach().cpu().numpy().astype(np.float64)
    labels = gt_labels.cpu().numpy()
    valid_box = gt_mask.cpu().numpy() & (labels >= 0)
    mats = img_from_ego.detach().cpu().numpy().astype(np.float64)
    cam_ok = camera_valid.cpu().numpy()
    for bi in range(b):
        sel = np.flatnonzero(valid_box[bi])
        if not len(sel):
            continue
        pts = np.concatenate([boxes[bi, sel, None, :3], box_corners(boxes[bi, sel])], axis=1)  # (G', 9, 3)
        for k in range(n):
            if not cam_ok[bi, k]:
                continue
            m = mats[bi, k]
            hom = pts @ m[:3, :3].T + m[:3, 3]  # (G', 9, 3): u*d, v*d, d
            d = hom[..., 2]
            uv = hom[..., :2] / np.maximum(d, 1e-3)[..., None]
            row_out = bi * n + k
            for gi_local, gi in enumerate(sel):
                dc = d[gi_local, 0]
                u, v = uv[gi_local, 0]
                if dc < MIN_CENTRE_DEPTH_M or not (-0.5 <= u < w - 0.5 and -0.5 <= v < h - 0.5):
                    continue
                front = d[gi_local, 1:] > 0.1
                cu, cv = uv[gi_local, 1:][front, 0], uv[gi_local, 1:][front, 1]
                u0, u1 = np.clip([cu.min(), cu.max()], -0.5, w - 0.5)
                v0, v1 = np.clip([cv.min(), cv.max()], -0.5, h - 0.5)
                bw, bh = max((u1 - u0) / sx, 0.1), max((v1 - v0) / sy, 0.1)  # cells
                fx, fy = (u + 0.5) / sx, (v + 0.5) / sy  # continuous cell coordinates
                col, row = min(int(fx), wf - 1), min(int(fy), hf - 1)
                radius = max(1, int(gaussian_radius(bh, bw)))
                draw_gaussian(heat[row_out, labels[bi, gi]], row, col, radius)
                ind[row_out, gi] = row * wf + col
                mask[row_out, gi] = True
                reg[row_out, gi] = [fx - (col + 0.5), fy - (row + 0.5), np.log(bw), np.log(bh), np.log(dc)]
    return PerspectiveTargets(torch.from_numpy(heat), torch.from_numpy(ind), torch.from_numpy(mask),
                              torch.from_numpy(reg))


def perspective_losses(out: dict[str, Tensor], t: PerspectiveTargets) -> dict[str, Tensor]:
    """out: the head's maps (B*N, *, Hf, Wf); t: targets on the same device. Gaussian focal loss on the heatmap
    and L1 on the regressions at the centre cells (normalised by the number of centres)."""
    heat = gaussian_focal_loss(out["heatmap"].float(), t.heatmap)
    pred = torch.cat([gather_cells(out[name].float(), t.ind) for name in ("offset", "log_size", "log_depth")],
                     dim=2)  # (B*N, G, 5)
    m = t.mask.unsqueeze(-1).float()
    reg = (F.l1_loss(pred, t.regression, reduction="none") * m).sum() / t.mask.sum().clamp(min=1).float()
    return {"perspective_heatmap": heat, "perspective_regression": reg}
