"""Lidar depth targets for the camera depth head, and the BEVDepth-style depth loss.

The key frame's lidar points (``Frame.lidar_points``, ego@t0) are projected into every camera through the frame's
``img_from_ego`` -- the capture-time geometry the lift also uses, after every image and BEV augmentation -- so the
targets move with the image by construction. Per cell of the depth head's grid (stride = image / feature size,
16 here) the nearest return is the target; it is binned to the D bins of ``DepthBins`` (one-hot) and the depth
distribution is trained with a binary cross-entropy summed over the bins, averaged over the cells that have a
target (BEVDepth, arXiv 2206.10092, ``get_depth_loss``). Cells without a return, masked cameras and returns
outside ``[min_depth, max_depth)`` give no loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from perception.model.geometry import project
from perception.model.lift import DepthBins

MIN_DEPTH_M = 0.1  # returns closer than this to a camera plane are behind it or on the lens


def depth_targets(lidar: Tensor, lidar_valid: Tensor, img_from_ego: Tensor, camera_valid: Tensor,
                  image_hw: tuple[int, int], feat_hw: tuple[int, int]) -> Tensor:
    """lidar: (B, L, 3) float32 metres in ego@t0; lidar_valid: (B, L) bool; img_from_ego: (B, N, 4, 4) pixels of
    the network input <- ego@t0; camera_valid: (B, N) bool. Returns (B, N, Hf, Wf) float32: per feature cell the
    depth (m, camera z) of the nearest return whose pixel falls in the cell, 0 where there is none.

    A pixel u (centres at integers) belongs to column floor((u + 0.5) / (W / Wf)), the cell whose centre
    ``perception.model.camera.depth.feature_axis_centres`` puts at (j + 0.5) W / Wf - 0.5."""
    b, n = img_from_ego.shape[:2]
    hf, wf = feat_hw
    out = torch.full((b * n * hf * wf,), float("inf"), dtype=torch.float32, device=lidar.device)
    if lidar.shape[1] == 0:
        return torch.zeros(b, n, hf, wf, device=lidar.device)
    u, v, d = project(lidar[:, None].float(), img_from_ego.float())  # each (B, N, L)
    col = torch.floor((u + 0.5) * (wf / image_hw[1]))
    row = torch.floor((v + 0.5) * (hf / image_hw[0]))
    ok = (lidar_valid[:, None] & camera_valid[:, :, None] & (d > MIN_DEPTH_M) & (col >= 0) & (col < wf)
          & (row >= 0) & (row < hf))  # (B, N, L)
    cam = torch.arange(b * n, device=lidar.device).view(b, n, 1).expand_as(d)
    flat = (cam * hf + row.clamp(0, hf - 1).long()) * wf + col.clamp(0, wf - 1).long()  # (B, N, L)
    out.scatter_reduce_(0, flat[ok], d[ok], reduce="amin")
    out = torch.where(torch.isinf(out), torch.zeros_like(out), out)
    return out.view(b, n, hf, wf)


def depth_bin_targets(depth: Tensor, bins: DepthBins) -> tuple[Tensor, Tensor]:
    """depth: (..., Hf, Wf) metres (0 = none). Returns the one-hot bin target (..., D, Hf, Wf) float32 and the mask
    (..., Hf, Wf) bool of cells whose depth falls in ``[min_depth, max_depth)``: bin k holds
    ``[min + k w, min + (k + 1) w)``, as ``DepthBins`` defines it."""
    k = torch.floor((depth - bins.min_depth) / bins.width)
    mask = (depth > 0) & (k >= 0) & (k < bins.num_bins)
    idx = k.clamp(0, bins.num_bins - 1).long()
    one_hot = F.one_hot(idx, bins.num_bins).movedim(-1, -3).float() * mask.unsqueeze(-3)  # (..., D, Hf, Wf)
    return one_hot, mask


def depth_loss(prob: Tensor, depth: Tensor, bins: DepthBins) -> Tensor:
    """prob: (B, N, D, Hf, Wf) the depth head's distribution (softmax over D); depth: (B, N, Hf, Wf) targets from
    ``depth_targets``. Binary cross-entropy summed over the bins at each cell with a target, averaged over those
    cells (0 when there is none). Computed in float32 outside autocast (BCE is not autocast-safe)."""
    one_hot, mask = depth_bin_targets(depth, bins)
    with torch.autocast(prob.device.type, enabled=False):
        p = prob.float().movedim(2, -1)[mask]  # (K, D)
        t = one_hot.movedim(2, -1)[mask]  # (K, D)
        if p.shape[0] == 0:
            return prob.sum() * 0.0
        bce = F.binary_cross_entropy(p.clamp(1e-6, 1 - 1e-6), t, reduction="sum")
        return bce / p.shape[0]


def expected_depth(prob: Tensor, bins: DepthBins) -> Tensor:
    """prob: (..., D, Hf, Wf) -> the distribution's mean depth (..., Hf, Wf) in metres (bin centres)."""
    centres = bins.centres().to(prob.device, prob.dtype).view(-1, 1, 1)
    return (prob * centres).sum(dim=-3)
