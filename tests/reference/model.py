"""Reference forms of the network's blocks: slow or direct, obviously correct, for tests (and for the before/after
pass of ``benchmarks/bench_export.py``, which builds a network with the defining lift and radar splat through
``build_model(..., lift_voxels=..., radar_splat=...)``). The production forms in ``perception/model`` are tested
equal to these."""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from perception.model.camera.depth import RADAR_IMAGE_CHANNELS, feature_pixel_centres
from perception.model.decode import CENTER_REGRESSIONS, BevGrid
from perception.model.fusion import check_sample_inputs
from perception.model.geometry import pixel_to_grid, project, project_homogeneous
from perception.model.lift import BackwardLift, DepthBins, depth_probability


def lift_voxels(lift: BackwardLift, feats: Tensor, depth_prob: Tensor, img_from_ego: Tensor, camera_valid: Tensor,
                image_hw: tuple[int, int]) -> Tensor:
    """The defining form of ``BackwardLift`` before folding heights: every camera, all C channels and all D depth
    bins sampled at every voxel. Returns (B, C, Z, H, W), summed over cameras; ``lift.forward`` equals
    ``lift.reduce`` of this with heights folded into channels (c * Z + z) (tested). Passed to
    ``build_model(..., lift_voxels=lift_voxels)`` it is the lift the network exported before the fold
    (``benchmarks/bench_export.py --before``)."""
    b, n, c, hf, wf = feats.shape
    d = depth_prob.shape[2]
    z, h, w = lift.grid.shape
    u, v, depth = project_homogeneous(lift.grid.homogeneous, img_from_ego)  # each (B, N, Q), Q = Z*H*W
    grid = pixel_to_grid(u, v, image_hw[1], image_hw[0])  # (B, N, Q, 2)
    inside = (grid.abs() <= 1.0).all(dim=-1) & (depth > lift.bins.min_depth * 0.5)  # (B, N, Q)
    valid = inside & camera_valid.unsqueeze(-1)
    grid = grid.view(b * n, z * h, w, 2)  # (B*N, Z*H, W, 2): 4-D sampling grid
    sampled = F.grid_sample(feats.reshape(b * n, c, hf, wf), grid, mode="bilinear", padding_mode="zeros",
                            align_corners=False)  # (B*N, C, Z*H, W)
    prob = F.grid_sample(depth_prob.reshape(b * n, d, hf, wf), grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)  # (B*N, D, Z*H, W)
    p = depth_probability(prob.view(b * n, d, -1), depth.reshape(b * n, -1), lift.bins)  # (B*N, Q)
    weight = p * valid.view(b * n, -1).to(p.dtype)  # (B*N, Q)
    lifted = sampled.view(b * n, c, -1) * weight.unsqueeze(1)  # (B*N, C, Q)
    return lifted.view(b, n, c, z, h, w).sum(dim=1)  # (B, C, Z, H, W): sum over cameras



def depth_probability_tent(prob_at_pixel: Tensor, depth: Tensor, bins: DepthBins) -> Tensor:
    """The direct form: a tent weight max(0, 1 - |t - k|) on every bin k, summed (reference for tests)."""
    t = (depth - bins.min_depth) / bins.width - 0.5  # (..., Q)
    k = torch.arange(bins.num_bins, dtype=depth.dtype, device=depth.device).view(-1, 1)  # (D, 1)
    w = torch.relu(1.0 - torch.abs(t.unsqueeze(-2) - k))  # (..., D, Q)
    return (prob_at_pixel * w).sum(dim=-2)



def radar_image_features_dense(points: Tensor, valid: Tensor, img_from_ego: Tensor, feat_hw: tuple[int, int],
                               image_hw: tuple[int, int], rcs_index: int, dt_index: int,
                               sigma_u: float = 1.0, sigma_v: float = 3.0) -> Tensor:
    """The defining form of ``radar_image_features``: a dense (cameras x Hf Wf x P) Gaussian (reference for tests)."""
    b, n = img_from_ego.shape[:2]
    hf, wf = feat_hw
    u, v, d = project(points[:, None, :, :3], img_from_ego)  # each (B, N, P)
    cu, cv = feature_pixel_centres(hf, wf, image_hw, points.device)  # (Hf*Wf,)
    su, sv = sigma_u * image_hw[1] / wf, sigma_v * image_hw[0] / hf  # pixels
    du = (cu.view(1, 1, -1, 1) - u.unsqueeze(2)) / su  # (B, N, Hf*Wf, P)
    dv = (cv.view(1, 1, -1, 1) - v.unsqueeze(2)) / sv
    ok = (valid.unsqueeze(1) & (d > 0.5)).to(points.dtype).unsqueeze(2)  # (B, N, 1, P)
    w = torch.exp(-0.5 * (du * du + dv * dv)) * ok  # (B, N, Hf*Wf, P)
    occ = w.sum(-1)  # (B, N, Hf*Wf)
    denom = occ + 1e-3
    logd = (w * torch.log(torch.clamp(d, min=0.5)).unsqueeze(2)).sum(-1) / denom
    rcs = (w * (points[..., rcs_index] / 20.0).view(b, 1, 1, -1)).sum(-1) / denom
    dt = (w * torch.abs(points[..., dt_index]).view(b, 1, 1, -1)).sum(-1) / denom
    out = torch.stack([torch.clamp(occ, max=4.0), logd, rcs, dt], dim=2)  # (B, N, 4, Hf*Wf)
    return out.view(b, n, RADAR_IMAGE_CHANNELS, hf, wf)



def deformable_sample_reference(values: list[Tensor], ref_uv: Tensor, offsets: Tensor, weights: Tensor,
                                num_heads: int) -> Tensor:
    """Slow, obviously-correct reference for ``deformable_sample`` (same contract): Python loops over batch,
    query, head, level and point, with bilinear interpolation written out by hand. For tests only.

    Pixel convention (align_corners=False): normalised x in [0, 1] is pixel coordinate x * W - 0.5, so the
    centre of column j, (j + 0.5) / W, is pixel j exactly. Corners outside the map contribute zero."""
    B, Q, C, L, P = check_sample_inputs(values, ref_uv, offsets, weights, num_heads)
    Ch = C // num_heads
    out = torch.zeros(B, Q, C, dtype=values[0].dtype)
    for b in range(B):
        for q in range(Q):
            for h in range(num_heads):
                acc = torch.zeros(Ch, dtype=values[0].dtype)
                for lvl, value in enumerate(values):
                    H, W = value.shape[-2:]
                    fmap = value[b, h * Ch:(h + 1) * Ch]  # (C_h, H, W)
                    for p in range(P):
                        x = float(ref_uv[b, q, 0] + offsets[b, q, h, lvl, p, 0]) * W - 0.5
                        y = float(ref_uv[b, q, 1] + offsets[b, q, h, lvl, p, 1]) * H - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        fx, fy = x - x0, y - y0
                        sample = torch.zeros(Ch, dtype=values[0].dtype)
                        for yy, xx, wgt in ((y0, x0, (1 - fy) * (1 - fx)), (y0, x0 + 1, (1 - fy) * fx),
                                            (y0 + 1, x0, fy * (1 - fx)), (y0 + 1, x0 + 1, fy * fx)):
                            if 0 <= yy < H and 0 <= xx < W:
                                sample = sample + wgt * fmap[:, yy, xx]
                        acc = acc + weights[b, q, h, lvl, p] * sample
                out[b, q, h * Ch:(h + 1) * Ch] = acc
    return out



def decode_reference(center: Mapping[str, Tensor], grid: BevGrid, trajectory: Mapping[str, Tensor] | None = None,
                     max_detections: int = 200) -> dict[str, np.ndarray]:
    """``decode`` by Python loops (3x3 NMS only): an explicit neighbourhood check, a sort by (-score, flat index),
    per-slot arithmetic in float64. Same inputs and outputs as ``decode``, as numpy arrays."""
    heat = torch.sigmoid(center["heatmap"]).detach().cpu().numpy()  # float32: the very values decode compares
    regs = {name: center[name].detach().cpu().numpy().astype(np.float64) for name, _ in CENTER_REGRESSIONS}
    b_n, k_n, h_n, w_n = heat.shape
    n = max_detections
    boxes = np.zeros((b_n, n, 9))
    scores = np.zeros((b_n, n), np.float32)
    labels = np.full((b_n, n), -1, np.int64)
    if trajectory is not None:
        offsets = trajectory["offsets"].detach().cpu().numpy().astype(np.float64)
        mode_logits = trajectory["mode_logits"].detach().cpu().numpy().astype(np.float64)
        m_n = mode_logits.shape[1]
        t_n = offsets.shape[1] // (2 * m_n)
        trajs = np.zeros((b_n, n, m_n, t_n, 2))
        probs = np.zeros((b_n, n, m_n))
    for b in range(b_n):
        peaks = []
        for k in range(k_n):
            for i in range(h_n):
                for j in range(w_n):
                    v = heat[b, k, i, j]
                    neighbours = [heat[b, k, ii, jj] for ii in range(i - 1, i + 2) for jj in range(j - 1, j + 2)
                                  if 0 <= ii < h_n and 0 <= jj < w_n]
                    if v >= max(neighbours) and v > 0:
                        peaks.append((-v, k * h_n * w_n + i * w_n + j, k, i, j))
        peaks.sort()
        for s, (neg_v, _, k, i, j) in enumerate(peaks[:n]):
            scores[b, s], labels[b, s] = -neg_v, k
            x = grid.x_range[0] + (i + 0.5 + regs["offset"][b, 0, i, j]) * grid.res_x
            y = grid.y_range[0] + (j + 0.5 + regs["offset"][b, 1, i, j]) * grid.res_y
            size = [math.exp(regs["log_size"][b, c, i, j]) for c in range(3)]
            yaw = math.atan2(regs["rotation"][b, 0, i, j], regs["rotation"][b, 1, i, j])
            boxes[b, s] = [x, y, regs["z"][b, 0, i, j], *size, yaw,
                           regs["velocity"][b, 0, i, j], regs["velocity"][b, 1, i, j]]
            if trajectory is not None:
                for m in range(m_n):
                    for t in range(t_n):
                        trajs[b, s, m, t] = [x + offsets[b, (m * t_n + t) * 2, i, j],
                                             y + offsets[b, (m * t_n + t) * 2 + 1, i, j]]
                logits = mode_logits[b, :, i, j]
                e = np.exp(logits - logits.max())
                probs[b, s] = e / e.sum()
    out = {"boxes": boxes, "scores": scores, "labels": labels}
    if trajectory is not None:
        out["trajectories"], out["mode_probs"] = trajs, probs
    return out
