"""Camera -> BEV by backward sampling (no scatter, no 5-D sampling: TensorRT-native).

Each BEV voxel centre (Z heights x H x W cells, ego@t0) is projected into every camera through the run-time
``img_from_ego``. At that pixel the camera features are sampled with a 4-D ``grid_sample``; the camera's depth
distribution (D bins) is read at the two bins around the voxel's depth and interpolated linearly between them.
The lifted feature is ``features * p(depth) * valid``, summed over cameras; the heights are folded into channels
and reduced by a 1x1 conv (the defining form: ``tests/reference/model.py::lift_voxels`` + ``reduce``).

``BackwardLift.forward`` computes the same function with less memory traffic (the rewrites are exact, so a
checkpoint trained with either form runs in the other):
- the 1x1 reduce conv is linear and acts per voxel, and so is bilinear sampling, so the conv's slice for height z
  is applied to the image features *before* sampling (a C -> Z x C_out 1x1 conv on the small feature map) and
  each height samples only its own C_out channels: C_out instead of C channels are sampled per voxel;
- the depth distribution is stacked along the image height, one zero row between bins, and read only at the
  rows that matter (bins floor t and floor t + 1; two channels, one sampling point: ``depth_at_voxels``),
  instead of sampling all D channels and gathering two. The zero row reproduces ``padding_mode="zeros"`` at
  each bin's top and bottom edge;
- each voxel samples only the (up to) K = ``cameras_per_voxel`` cameras that see it (``camera_slots``: a ring of
  monocular cameras overlaps pairwise, so K = 2 of 6), reading features and depth from an atlas of all cameras
  side by side (``side_by_side``, ``atlas_grid``; a zero column after each camera reproduces zeros padding at its
  left and right edges). Exact unless a voxel is seen by more than K cameras (``perception.coverage`` counts
  that for a rig); K = 0 samples every camera.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from perception.model.geometry import pixel_to_grid, project_homogeneous


@dataclass(frozen=True)
class DepthBins:
    """D uniform bins of width (max - min) / D over [min, max) metres; bin k's centre is min + (k + 0.5) * width."""

    min_depth: float
    max_depth: float
    num_bins: int

    @property
    def width(self) -> float:
        return (self.max_depth - self.min_depth) / self.num_bins

    def centres(self) -> Tensor:
        return self.min_depth + (torch.arange(self.num_bins, dtype=torch.float32) + 0.5) * self.width


def _two_bins(depth: Tensor, bins: DepthBins, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The two bins around each ``depth`` (t the continuous bin index): floor t (float, not clamped: the lower
    bin is floor t, the upper floor t + 1), the weight a = t - floor t of the upper one, and whether each of the
    two is a real bin (in [0, D - 1])."""
    t = (depth - bins.min_depth) / bins.width - 0.5  # (..., Q) continuous bin index
    k0 = torch.floor(t)
    d = bins.num_bins
    lo_ok = ((k0 >= 0) & (k0 <= d - 1)).to(dtype)
    hi_ok = ((k0 + 1 >= 0) & (k0 + 1 <= d - 1)).to(dtype)
    return k0, t - k0, lo_ok, hi_ok


def depth_probability(prob_at_pixel: Tensor, depth: Tensor, bins: DepthBins) -> Tensor:
    """prob_at_pixel: (..., D, Q) depth distribution sampled at each voxel's pixel; depth: (..., Q) metres.
    Returns (..., Q): the distribution linearly interpolated between the two bin centres around ``depth``
    (t the continuous bin index: (1 - a) P[floor t] + a P[floor t + 1]), 0 outside [first centre, last centre].
    Two gathers and elementwise ops: O(Q), not O(D Q); equal to the tent form
    ``tests/reference/model.py::depth_probability_tent`` (tested)."""
    k0, a, lo_ok, hi_ok = _two_bins(depth, bins, prob_at_pixel.dtype)  # each (..., Q)
    d = bins.num_bins
    i0, i1 = torch.clamp(k0, 0, d - 1).long(), torch.clamp(k0 + 1, 0, d - 1).long()
    p0 = torch.gather(prob_at_pixel, -2, i0.unsqueeze(-2)).squeeze(-2)  # (..., Q)
    p1 = torch.gather(prob_at_pixel, -2, i1.unsqueeze(-2)).squeeze(-2)
    return (1.0 - a) * p0 * lo_ok + a * p1 * hi_ok


def depth_at_voxels(depth_prob: Tensor, grid: Tensor, depth: Tensor, bins: DepthBins) -> Tensor:
    """depth_prob: (S, D, Hf, Wf); grid: (S, Q, 2) normalised sampling coordinates (align_corners=False) of Q
    voxels; depth: (S, Q) their depths. Returns (S, Q): ``depth_probability`` of the D-channel map bilinearly
    sampled at ``grid`` (zeros outside), computed by sampling a two-channel stacked map at one point per voxel.

    The bins are stacked along the image height in D + 1 slots of Hf + 1 rows (each bin's Hf rows, then a zero
    row, which reproduces zero padding at every bin's top and bottom edge). Channel 0 holds a zero bin and then
    bins 0 .. D-1, channel 1 bins 0 .. D-1 and then a zero bin, so slot j = floor t + 1 (clamped to [0, D]) reads
    the lower bin floor t in channel 0 and the upper bin floor t + 1 in channel 1. One sampling point per voxel
    and two channels, rather than two points on one channel: ONNX Runtime's GridSample precomputes each point's
    corners once per sample and spreads channels over its threads."""
    s, d, hf, wf = depth_prob.shape
    k0, a, lo_ok, hi_ok = _two_bins(depth, bins, depth_prob.dtype)  # each (S, Q)
    rows = hf + 1  # each bin's Hf rows, then one zero row
    padded = F.pad(depth_prob, (0, 0, 0, 1))  # (S, D, Hf+1, Wf)
    lower = F.pad(padded, (0, 0, 0, 0, 1, 0))  # (S, D+1, Hf+1, Wf): zero bin, bins 0 .. D-1
    upper = F.pad(padded, (0, 0, 0, 0, 0, 1))  # (S, D+1, Hf+1, Wf): bins 0 .. D-1, zero bin
    stacked = torch.stack([lower, upper], dim=1).reshape(s, 2, (d + 1) * rows, wf)  # (S, 2, (D+1)(Hf+1), Wf)
    # slot floor t + 1, clamped: a depth beyond the bins reads a slot whose real bin (if any) is masked off
    slot = torch.clamp(k0 + 1.0, 0, d)  # (S, Q)
    gx, gy = grid[..., 0], grid[..., 1]  # (S, Q)
    r = ((gy + 1.0) * hf - 1.0) * 0.5  # row within one bin's map (pixel centres at integers)
    gys = ((slot * rows + r) * 2.0 + 1.0) / ((d + 1) * rows) - 1.0  # the same row within that slot
    g = torch.stack([gx, gys], dim=-1).unsqueeze(2)  # (S, Q, 1, 2)
    pk = F.grid_sample(stacked, g, mode="bilinear", padding_mode="zeros", align_corners=False)  # (S, 2, Q, 1)
    return (1.0 - a) * pk[:, 0, :, 0] * lo_ok + a * pk[:, 1, :, 0] * hi_ok


def camera_slots(valid: Tensor, slots: int) -> tuple[Tensor, Tensor]:
    """valid: (B, N, Q) whether camera n sees voxel q. Returns (camera, slot_valid), each (B, K, Q) with
    K = ``slots``: up to K cameras that see each voxel, lowest index first, as distinct camera indices (int64),
    and whether each slot holds a camera that sees the voxel. A voxel seen by more than K cameras keeps the K
    lowest-numbered ones. TopK over a score that is unique among the visible cameras (N - n if visible, else
    0), so no tie decides which visible camera a slot gets, whatever order a backend returns ties in."""
    n = valid.shape[1]
    rank = torch.arange(n, 0, -1, dtype=torch.float32, device=valid.device).view(1, n, 1)  # N .. 1
    _, camera = torch.topk(valid.to(torch.float32) * rank, slots, dim=1)  # (B, K, Q)
    return camera, torch.gather(valid, 1, camera)


def side_by_side(maps: Tensor) -> Tensor:
    """maps: (B, N, C, H, W), one per camera. Returns the atlas (B, C, H, N * (W + 1)): the cameras side by
    side, each followed by a zero column, so that bilinear sampling at a camera's left or right edge reads
    zeros as ``padding_mode="zeros"`` does on that camera's own map (see ``atlas_grid``)."""
    b, n, c, h, w = maps.shape
    padded = F.pad(maps, (0, 1))  # (B, N, C, H, W+1)
    return padded.permute(0, 2, 3, 1, 4).reshape(b, c, h, n * (w + 1))


def atlas_grid(grid: Tensor, camera: Tensor, width: int, cameras: int) -> Tensor:
    """grid: (..., 2) normalised sampling coordinates (align_corners=False) in one camera's map of ``width``
    columns; camera: (...) that camera's index. Returns (..., 2): the same point in the ``side_by_side`` atlas
    of ``cameras`` maps (the row coordinate is unchanged)."""
    gx, gy = grid[..., 0], grid[..., 1]
    col = ((gx + 1.0) * width - 1.0) * 0.5  # column within the camera's map (pixel centres at integers)
    col = camera.to(grid.dtype) * (width + 1) + col  # column within the atlas
    return torch.stack([(col * 2.0 + 1.0) / (cameras * (width + 1)) - 1.0, gy], dim=-1)


class BevGridPoints(nn.Module):
    """Voxel centres of the BEV grid as a buffer: (Z * H * W, 3) ego metres, order (z, row i along x, col j along y)."""

    def __init__(self, x_range: tuple[float, float], y_range: tuple[float, float], z_range: tuple[float, float],
                 bev_shape: tuple[int, int], heights: int):
        super().__init__()
        h, w = bev_shape
        xs = x_range[0] + (torch.arange(h, dtype=torch.float32) + 0.5) * (x_range[1] - x_range[0]) / h
        ys = y_range[0] + (torch.arange(w, dtype=torch.float32) + 0.5) * (y_range[1] - y_range[0]) / w
        zs = z_range[0] + (torch.arange(heights, dtype=torch.float32) + 0.5) * (z_range[1] - z_range[0]) / heights
        z, x, y = torch.meshgrid(zs, xs, ys, indexing="ij")  # each (Z, H, W)
        self.register_buffer("points", torch.stack([x, y, z], dim=-1).reshape(-1, 3), persistent=False)
        # (4, Q): the same points as homogeneous columns, for ``project_homogeneous``
        self.register_buffer("homogeneous", torch.cat([self.points.t(), torch.ones(1, self.points.shape[0])]),
                             persistent=False)
        self.shape = (heights, h, w)


class BackwardLift(nn.Module):
    """Camera features + depth distributions -> BEV features (B, C_out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, grid: BevGridPoints, bins: DepthBins,
                 cameras_per_voxel: int = 0, lift_voxels: Callable[..., Tensor] | None = None):
        """``lift_voxels``: another form of the lift before the reduce conv, ``lift_voxels(self, feats,
        depth_prob, img_from_ego, camera_valid, image_hw) -> (B, C, Z, H, W)`` (the defining form of
        ``tests/reference/model.py``, for before/after benchmarks); None: the folded form below."""
        super().__init__()
        self.lift_voxels = lift_voxels
        self.grid = grid
        self.bins = bins
        self.cameras_per_voxel = cameras_per_voxel  # 0: every camera samples every voxel
        heights = grid.shape[0]
        self.reduce = nn.Sequential(nn.Conv2d(in_channels * heights, out_channels, 1, bias=False),
                                    nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))

    def forward(self, feats: Tensor, depth_prob: Tensor, img_from_ego: Tensor, camera_valid: Tensor,
                image_hw: tuple[int, int]) -> Tensor:
        """feats: (B, N, C, Hf, Wf) camera features; depth_prob: (B, N, D, Hf, Wf) softmaxed over D;
        img_from_ego: (B, N, 4, 4) pixels of the input image (H_img, W_img) <- ego@t0; camera_valid: (B, N) bool.
        Returns (B, C_out, H, W); equal to ``reduce(lift_voxels(...))`` with heights folded into channels."""
        b, n, c, hf, wf = feats.shape
        z, h, w = self.grid.shape
        if self.lift_voxels is not None:
            lifted = self.lift_voxels(self, feats, depth_prob, img_from_ego, camera_valid, image_hw)  # (B, C, Z, H, W)
            return self.reduce(lifted.reshape(b, c * z, h, w))
        conv, norm, act = self.reduce
        c_out = conv.out_channels
        # reduce weight (C_out, C * Z) has input channel c * Z + z; per-height projections (Z * C_out, C, 1, 1)
        w_proj = conv.weight.view(c_out, c, z).permute(2, 0, 1).reshape(z * c_out, c, 1, 1)
        # the cameras side by side (a zero column after each), then projected: the 1x1 conv keeps the zero columns
        atlas = F.conv2d(side_by_side(feats), w_proj)  # (B, Z*C_out, Hf, N*(Wf+1))
        u, v, depth = project_homogeneous(self.grid.homogeneous, img_from_ego)  # each (B, N, Q), Q = Z*H*W
        grid = pixel_to_grid(u, v, image_hw[1], image_hw[0])  # (B, N, Q, 2)
        inside = (grid.abs() <= 1.0).all(dim=-1) & (depth > self.bins.min_depth * 0.5)  # (B, N, Q)
        valid = inside & camera_valid.unsqueeze(-1)
        k = self.cameras_per_voxel
        if 0 < k < n:  # each voxel samples only the (up to) k cameras that see it
            camera, valid = camera_slots(valid, k)  # (B, K, Q)
            grid = torch.gather(grid, 1, camera.unsqueeze(-1).expand(-1, -1, -1, 2))  # (B, K, Q, 2)
            depth = torch.gather(depth, 1, camera)
        else:  # every camera at every voxel
            k = n
            camera = torch.arange(n, device=grid.device).view(1, n, 1).expand(b, n, z * h * w)
        where = atlas_grid(grid, camera, wf, n)  # (B, K, Q, 2): the same points in the atlas
        # sampling batch (B, Z): height z's C_out channels at the K slots of its H x W cells
        slots_z = where.view(b, k, z, h * w, 2).transpose(1, 2).reshape(b * z, k * h, w, 2)
        sampled = F.grid_sample(atlas.view(b * z, c_out, hf, -1), slots_z, mode="bilinear", padding_mode="zeros",
                                align_corners=False)  # (B*Z, C_out, K*H, W)
        p = depth_at_voxels(side_by_side(depth_prob), where.view(b, -1, 2), depth.reshape(b, -1), self.bins)  # (B, K*Q)
        weight = (p * valid.view(b, -1).to(p.dtype)).view(b, k, z, h * w).transpose(1, 2)  # (B, Z, K, H*W)
        prod = sampled * weight.reshape(b * z, 1, k * h, w)  # (B*Z, C_out, K*H, W)
        # The sum over heights as a product with a ones row (ONNX Runtime's ReduceSum over that non-innermost axis
        # was several times slower than the GEMV, docs/decisions.md), then over the K slots. FP32 also under CUDA
        # autocast, as the grid-samples before it (a sum of Z*K products).
        ones = torch.ones(1, z, dtype=prod.dtype, device=prod.device)
        with torch.autocast(device_type=prod.device.type, enabled=False):
            per_slot = torch.matmul(ones, prod.view(b, z, -1)).view(b, c_out, k, h * w)
            bev = per_slot.sum(dim=2).view(b, c_out, h, w)  # (B, C_out, H, W)
        return act(norm(bev))

