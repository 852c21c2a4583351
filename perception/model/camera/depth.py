"""Per-camera depth distributions over D bins, assisted by radar and, for stereo pairs, by a plane-sweep cost volume.

- Radar in the image: every radar point is projected into each camera (run-time ``img_from_ego``) and splatted
  onto the feature grid with an anisotropic Gaussian (narrow in u, wide in v: the radar measures no elevation)
  written as separable exponentials and a matrix product over points (no scatter): occupancy, mean log-depth, mean RCS
  and mean |dt| channels are concatenated to the image features before the depth net.
- Stereo: for a (left, right) pair, the left feature grid is swept over the D bin depths, each 3D point
  projected into the right camera and the right features sampled with a 4-D ``grid_sample``; the normalised
  correlation per plane is added (scaled by a learned factor) to the left camera's depth logits, and likewise
  right -> left.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from perception.model.geometry import inverse_projective, pixel_to_grid, project
from perception.model.lift import DepthBins

RADAR_IMAGE_CHANNELS = 4


def feature_axis_centres(hf: int, wf: int, image_hw: tuple[int, int], device=None) -> tuple[Tensor, Tensor]:
    """Image-pixel coordinates of the column centres u (Wf,) and row centres v (Hf,) of a feature grid covering
    the image."""
    sy, sx = image_hw[0] / hf, image_hw[1] / wf
    v = (torch.arange(hf, dtype=torch.float32, device=device) + 0.5) * sy - 0.5
    u = (torch.arange(wf, dtype=torch.float32, device=device) + 0.5) * sx - 0.5
    return u, v


def feature_pixel_centres(hf: int, wf: int, image_hw: tuple[int, int], device=None) -> tuple[Tensor, Tensor]:
    """Image-pixel coordinates (u, v), each (Hf * Wf,), of the centres of a feature grid covering the image."""
    u, v = feature_axis_centres(hf, wf, image_hw, device)
    vv, uu = torch.meshgrid(v, u, indexing="ij")  # (Hf, Wf)
    return uu.reshape(-1), vv.reshape(-1)


def radar_image_features(points: Tensor, valid: Tensor, img_from_ego: Tensor, feat_hw: tuple[int, int],
                         image_hw: tuple[int, int], rcs_index: int, dt_index: int,
                         sigma_u: float = 1.0, sigma_v: float = 3.0) -> Tensor:
    """points: (B, P, F) ego@t0 (x, y, z first); valid: (B, P) bool; img_from_ego: (B, N, 4, 4).
    Returns (B, N, 4, Hf, Wf): occupancy (sum of weights), mean log depth, mean RCS / 20, mean |dt|.
    sigma_u, sigma_v are in feature cells.

    The Gaussian is separable (a cell's column fixes its u, its row its v), so every channel's weighted sum over
    points is a matrix product: sum_p ev[row, p] x_p eu[col, p] = (ev * x) @ eu^T. Equal to the dense form
    ``tests/reference/model.py::radar_image_features_dense`` (tested) with (Hf + Wf) P instead of Hf Wf P
    exponentials."""
    b, n = img_from_ego.shape[:2]
    hf, wf = feat_hw
    u, v, d = project(points[:, None, :, :3], img_from_ego)  # each (B, N, P)
    cu, cv = feature_axis_centres(hf, wf, image_hw, points.device)  # column centres (Wf,), row centres (Hf,)
    su, sv = sigma_u * image_hw[1] / wf, sigma_v * image_hw[0] / hf  # pixels
    du = (cu.view(1, 1, -1, 1) - u.unsqueeze(2)) / su  # (B, N, Wf, P)
    dv = (cv.view(1, 1, -1, 1) - v.unsqueeze(2)) / sv  # (B, N, Hf, P)
    eu = torch.exp(-0.5 * du * du)
    ok = (valid.unsqueeze(1) & (d > 0.5)).to(points.dtype)  # (B, N, P)
    ev = torch.exp(-0.5 * dv * dv) * ok.unsqueeze(2)  # (B, N, Hf, P)
    values = torch.stack([torch.ones_like(d), torch.log(torch.clamp(d, min=0.5)),
                          (points[..., rcs_index] / 20.0).unsqueeze(1).expand_as(d),
                          torch.abs(points[..., dt_index]).unsqueeze(1).expand_as(d)], dim=2)  # (B, N, 4, P)
    rows = (ev.unsqueeze(2) * values.unsqueeze(3)).reshape(b, n, RADAR_IMAGE_CHANNELS * hf, -1)  # (B, N, 4*Hf, P)
    sums = (rows @ eu.transpose(-1, -2)).view(b, n, RADAR_IMAGE_CHANNELS, hf, wf)  # (B, N, 4, Hf, Wf)
    occ = sums[:, :, 0:1]
    means = sums[:, :, 1:] / (occ + 1e-3)
    return torch.cat([torch.clamp(occ, max=4.0), means], dim=2)


def l2_normalize(x: Tensor, dim: int, eps: float = 1e-6) -> Tensor:
    """x / ||x|| along ``dim`` written with Sqrt/ReduceSum (F.normalize exports as ReduceL2, outside the budget)."""
    return x / torch.sqrt((x * x).sum(dim=dim, keepdim=True) + eps)


def plane_sweep_cost(feat_ref: Tensor, feat_src: Tensor, ref_img_from_ego: Tensor, src_img_from_ego: Tensor,
                     bins: DepthBins, image_hw: tuple[int, int]) -> Tensor:
    """feat_ref, feat_src: (S, C, Hf, Wf) features of the reference and source cameras of S pairs;
    *_img_from_ego: (S, 4, 4). Returns (S, D, Hf, Wf): per depth plane, the mean over channels of the product of
    L2-normalised reference and warped source features (1 = identical, 0 outside the source image)."""
    s, c, hf, wf = feat_ref.shape
    dnum = bins.num_bins
    u, v = feature_pixel_centres(hf, wf, image_hw, feat_ref.device)  # (Hf*Wf,)
    depths = bins.centres().to(feat_ref.device)  # (D,)
    du = (depths.view(-1, 1) * u.view(1, -1)).reshape(-1)  # (D*Hf*Wf,) u*d
    dv = (depths.view(-1, 1) * v.view(1, -1)).reshape(-1)
    dd = depths.view(-1, 1).expand(dnum, hf * wf).reshape(-1)
    hom = torch.stack([du, dv, dd, torch.ones_like(dd)], dim=-1)  # (D*Hf*Wf, 4): [u*d, v*d, d, 1]
    ego = hom.unsqueeze(0) @ inverse_projective(ref_img_from_ego).transpose(-1, -2)  # (S, D*Hf*Wf, 4)
    us, vs, ds = project(ego[:, None, :, :3], src_img_from_ego[:, None])  # each (S, 1, D*Hf*Wf)
    grid = pixel_to_grid(us[:, 0], vs[:, 0], image_hw[1], image_hw[0]).view(s, dnum * hf, wf, 2)
    warped = F.grid_sample(l2_normalize(feat_src, 1), grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)  # (S, C, D*Hf, Wf)
    warped = warped.view(s, c, dnum, hf, wf)
    ref = l2_normalize(feat_ref, 1).unsqueeze(2)  # (S, C, 1, Hf, Wf)
    in_front = (ds[:, 0] > 0.1).view(s, 1, dnum, hf, wf).to(feat_ref.dtype)
    return (warped * ref).sum(dim=1) * in_front[:, 0]  # (S, D, Hf, Wf)


class DepthNet(nn.Module):
    """Image features (+ radar-in-image channels) -> depth logits (D) and context features."""

    def __init__(self, in_channels: int, context_channels: int, bins: DepthBins, radar: bool,
                 stereo_pairs: tuple[tuple[int, int], ...] = (), mid_channels: int | None = None):
        super().__init__()
        mid = mid_channels or in_channels
        self.bins = bins
        self.radar = radar
        # The pair topology is part of the network (the rig's cameras); their calibration stays a run-time input.
        self.stereo_pairs = tuple((int(a), int(b)) for a, b in stereo_pairs)
        self.stereo = bool(self.stereo_pairs)
        extra = RADAR_IMAGE_CHANNELS if radar else 0
        self.trunk = nn.Sequential(nn.Conv2d(in_channels + extra, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid),
                                   nn.ReLU(inplace=True), nn.Conv2d(mid, mid, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(mid), nn.ReLU(inplace=True))
        self.depth = nn.Conv2d(mid, bins.num_bins, 1)
        self.context = nn.Conv2d(mid, context_channels, 1)
        if self.stereo:
            self.stereo_scale = nn.Parameter(torch.tensor(4.0))  # correlation in [-1, 1] -> logits

    def forward(self, feats: Tensor, img_from_ego: Tensor, image_hw: tuple[int, int],
                radar_feats: Tensor | None) -> tuple[Tensor, Tensor]:
        """feats: (B, N, C, Hf, Wf); img_from_ego: (B, N, 4, 4); radar_feats: (B, N, 4, Hf, Wf) or None.
        Returns depth probabilities (B, N, D, Hf, Wf) and context features (B, N, C_ctx, Hf, Wf)."""
        b, n, c, hf, wf = feats.shape
        x = feats
        if self.radar:
            x = torch.cat([x, radar_feats], dim=2)  # (B, N, C + 4, Hf, Wf)
        y = self.trunk(x.flatten(0, 1))  # (B*N, mid, Hf, Wf)
        logits = self.depth(y).view(b, n, -1, hf, wf)  # (B, N, D, Hf, Wf)
        if self.stereo:
            left = [a for a, _ in self.stereo_pairs]
            right = [r for _, r in self.stereo_pairs]
            s = len(left)
            fl, fr = feats[:, left].flatten(0, 1), feats[:, right].flatten(0, 1)  # (B*S, C, Hf, Wf)
            ml, mr = img_from_ego[:, left].flatten(0, 1), img_from_ego[:, right].flatten(0, 1)  # (B*S, 4, 4)
            cost_l = plane_sweep_cost(fl, fr, ml, mr, self.bins, image_hw).view(b, s, -1, hf, wf)
            cost_r = plane_sweep_cost(fr, fl, mr, ml, self.bins, image_hw).view(b, s, -1, hf, wf)
            extra = {cam: cost_l[:, k] for k, cam in enumerate(left)}
            extra.update({cam: cost_r[:, k] for k, cam in enumerate(right)})
            # per camera (static indices: no scatter in the graph)
            logits = torch.stack([logits[:, i] + self.stereo_scale * extra[i] if i in extra else logits[:, i]
                                  for i in range(n)], dim=1)  # (B, N, D, Hf, Wf)
        context = self.context(y).view(b, n, -1, hf, wf)
        return logits.softmax(dim=2), context
