"""Camera + radar BEV fusion: multi-head deformable cross-attention (Deformable DETR, Zhu et al. 2021, eq. 2,
one scale per source) in which BEV queries attend, at learned offsets around their own cell, to the camera BEV
and the radar BEV; and the concat + conv baseline (BEVFusion's ConvFuser).

Sampling uses 4-D ``F.grid_sample`` only (no custom CUDA op, no 5-D sampling), so the same code trains and
exports to ONNX opset 17 inside the TensorRT-native op budget (``export/budget.py``, docs/deploy.md).

Conventions shared by every function here:
- BEV maps are (B, C, H, W) float32 on the ego BEV grid: row i (along H) is ego x, column j (along W) ego y.
- Sampling positions are normalised map coordinates ``(u, v)`` in [0, 1], u along W (columns, ego y) and v along
  H (rows, ego x), the order ``grid_sample`` takes; named u, v (not x, y) because x and y mean ego axes
  everywhere else in the code. (0, 0) is the outer corner of cell (0, 0),
  (1, 1) the outer corner of cell (H-1, W-1). The centre of cell (i, j) is ((j + 0.5) / W, (i + 0.5) / H),
  which is what ``grid_sample(align_corners=False)`` reads exactly (its pixel-centre convention).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def check_sample_inputs(values: list[Tensor], ref_uv: Tensor, offsets: Tensor, weights: Tensor,
                         num_heads: int) -> tuple[int, int, int, int, int]:
    """Assert the shapes ``deformable_sample`` relies on; returns (B, Q, C, L, P)."""
    if not values:
        raise ValueError("deformable_sample: values is empty; pass at least one (B, C, H, W) map")
    L = len(values)
    B, C = values[0].shape[:2]
    for lvl, v in enumerate(values):
        if v.dim() != 4 or v.shape[0] != B or v.shape[1] != C:
            raise ValueError(f"deformable_sample: values[{lvl}] has shape {tuple(v.shape)}; every level must be "
                             f"(B={B}, C={C}, H, W)")
    if C % num_heads != 0:
        raise ValueError(f"deformable_sample: channels C={C} not divisible by num_heads={num_heads}")
    if ref_uv.dim() != 3 or ref_uv.shape[0] != B or ref_uv.shape[2] != 2:
        raise ValueError(f"deformable_sample: ref_uv has shape {tuple(ref_uv.shape)}, expected (B={B}, Q, 2)")
    Q = ref_uv.shape[1]
    if offsets.dim() != 6 or tuple(offsets.shape[:4]) != (B, Q, num_heads, L) or offsets.shape[5] != 2:
        raise ValueError(f"deformable_sample: offsets has shape {tuple(offsets.shape)}, expected "
                         f"(B={B}, Q={Q}, heads={num_heads}, L={L}, P, 2)")
    P = offsets.shape[4]
    if tuple(weights.shape) != (B, Q, num_heads, L, P):
        raise ValueError(f"deformable_sample: weights has shape {tuple(weights.shape)}, expected "
                         f"(B={B}, Q={Q}, heads={num_heads}, L={L}, P={P})")
    return B, Q, C, L, P


def deformable_sample(values: list[Tensor], ref_uv: Tensor, offsets: Tensor, weights: Tensor,
                      num_heads: int) -> Tensor:
    """Multi-head deformable sampling: the ONE implementation, used in training and in the exported graph.

    values: L maps, each (B, C, H_l, W_l) float32 (features; C = num_heads * C_h, head h owns channels
        [h*C_h, (h+1)*C_h)). Maps may differ in H_l, W_l.
    ref_uv: (B, Q, 2) float32, normalised map coordinates in [0, 1] (u along W, v along H), shared by all levels.
    offsets: (B, Q, num_heads, L, P, 2) float32, in normalised units of each map (fraction of W_l, H_l).
    weights: (B, Q, num_heads, L, P) float32, attention weights (already softmaxed over L*P per head).
    Returns (B, Q, C) float32: per head, sum over levels and points of weight * bilinear sample, zero outside the
    map (``grid_sample(align_corners=False, padding_mode="zeros")``; the centre of cell (i, j) reads value[:, :, i, j]).
    """
    B, Q, C, L, P = check_sample_inputs(values, ref_uv, offsets, weights, num_heads)
    Ch = C // num_heads
    out = None
    for lvl, value in enumerate(values):
        H, W = value.shape[-2:]
        # Points-major sampling grid (P, Q) rather than (Q, P): the weighted sum over points then reduces over
        # an outer axis with Q contiguous, about 3x faster on CPU than reducing an innermost axis of size P.
        loc = ref_uv[:, :, None, None, :] + offsets[:, :, :, lvl]  # (B, Q, heads, P, 2) in [0, 1]
        grid = (2.0 * loc - 1.0).permute(0, 2, 3, 1, 4)  # (B, heads, P, Q, 2) in [-1, 1]
        grid = grid.reshape(B * num_heads, P, Q, 2)  # (B*heads, P, Q, 2)
        v = value.reshape(B * num_heads, Ch, H, W)  # (B*heads, C_h, H, W)
        sampled = F.grid_sample(v, grid, mode="bilinear", padding_mode="zeros",
                                align_corners=False)  # (B*heads, C_h, P, Q)
        w = weights[:, :, :, lvl].permute(0, 2, 3, 1)  # (B, heads, P, Q)
        w = w.reshape(B * num_heads, 1, P, Q)  # (B*heads, 1, P, Q)
        term = (sampled * w).sum(2)  # (B*heads, C_h, Q)
        out = term if out is None else out + term
    out = out.reshape(B, C, Q)  # (B, heads*C_h, Q)
    return out.transpose(1, 2)  # (B, Q, C)


class DeformableCrossAttention(nn.Module):
    """Multi-head deformable cross-attention over L BEV maps, one scale each (Deformable DETR eq. 2).

    Per head, per level: a 1x1 value projection, P sampling offsets predicted from ``query + query_pos`` (in
    cells of that level, initialised on a ring: head h points at angle 2*pi*h/heads, point p at distance p+1),
    attention weights softmaxed jointly over L*P (initialised uniform), then an output projection."""

    def __init__(self, embed_dim: int, num_heads: int = 4, num_levels: int = 2, num_points: int = 4):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"DeformableCrossAttention: embed_dim={embed_dim} must be divisible by "
                             f"num_heads={num_heads}")
        if num_levels < 1 or num_points < 1:
            raise ValueError(f"DeformableCrossAttention: num_levels={num_levels} and num_points={num_points} "
                             "must be >= 1")
        self.embed_dim, self.num_heads, self.num_levels, self.num_points = embed_dim, num_heads, num_levels, num_points
        self.value_proj = nn.ModuleList(nn.Conv2d(embed_dim, embed_dim, 1) for _ in range(num_levels))
        self.sampling_offsets = nn.Linear(embed_dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dim, num_heads * num_levels * num_points)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.sampling_offsets.weight)
        theta = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        ring = torch.stack([theta.cos(), theta.sin()], -1)  # (heads, 2)
        ring = ring / ring.abs().max(-1, keepdim=True).values  # (heads, 2) on the unit square, as in Deformable DETR
        ring = ring[:, None, None, :].repeat(1, self.num_levels, self.num_points, 1)  # (heads, L, P, 2)
        ring = ring * torch.arange(1, self.num_points + 1, dtype=torch.float32)[None, None, :, None]
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(ring.flatten())  # (heads*L*P*2,)
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for conv in self.value_proj:
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query: Tensor, query_pos: Tensor, ref_uv: Tensor, values: list[Tensor]) -> Tensor:
        """query: (B, Q, C) float32 query features. query_pos: (B, Q, C) or (1, Q, C) float32 positional embedding.
        ref_uv: (B, Q, 2) float32 reference points, normalised map coordinates in [0, 1] (u along W, v along H).
        values: ``num_levels`` maps (B, C, H_l, W_l) float32 on the BEV grid (before the value projection).
        Returns (B, Q, C) float32."""
        if len(values) != self.num_levels:
            raise ValueError(f"DeformableCrossAttention built for num_levels={self.num_levels}, got "
                             f"{len(values)} value maps")
        B, Q, C = query.shape
        heads, L, P = self.num_heads, self.num_levels, self.num_points
        q = query + query_pos  # (B, Q, C)
        values = [proj(v) for proj, v in zip(self.value_proj, values)]  # L x (B, C, H_l, W_l)
        offsets = self.sampling_offsets(q).reshape(B, Q, heads, L, P, 2)  # (B, Q, heads, L, P, 2), cells
        # cells -> normalised units of each level (Deformable DETR's offset_normalizer)
        scale = torch.tensor([[1.0 / v.shape[-1], 1.0 / v.shape[-2]] for v in values],
                             dtype=query.dtype, device=query.device)  # (L, 2)
        offsets = offsets * scale[:, None, :]  # (B, Q, heads, L, P, 2), normalised
        weights = self.attention_weights(q).reshape(B, Q, heads, L * P)  # (B, Q, heads, L*P)
        weights = weights.softmax(-1).reshape(B, Q, heads, L, P)  # (B, Q, heads, L, P)
        out = deformable_sample(values, ref_uv, offsets, weights, heads)  # (B, Q, C)
        return self.output_proj(out)


class FusionLayer(nn.Module):
    """Deformable cross-attention + residual + LayerNorm, then FFN (Linear-ReLU-Linear) + residual + LayerNorm
    (post-norm, as in the Deformable DETR decoder without self-attention: Q = H*W is too many for dense
    self-attention, and the deformable sampling already mixes neighbouring cells)."""

    def __init__(self, channels: int, heads: int = 4, levels: int = 2, points: int = 4,
                 ffn_channels: int | None = None):
        super().__init__()
        ffn_channels = ffn_channels or 2 * channels
        self.cross_attn = DeformableCrossAttention(channels, heads, levels, points)
        self.norm1 = nn.LayerNorm(channels)
        self.ffn = nn.Sequential(nn.Linear(channels, ffn_channels), nn.ReLU(inplace=True),
                                 nn.Linear(ffn_channels, channels))
        self.norm2 = nn.LayerNorm(channels)

    def forward(self, query: Tensor, query_pos: Tensor, ref_uv: Tensor, values: list[Tensor]) -> Tensor:
        """query: (B, Q, C) float32; query_pos: (B or 1, Q, C) float32; ref_uv: (B, Q, 2) float32 in [0, 1]
        (u along W, v along H); values: L maps (B, C, H, W) float32. Returns the updated query (B, Q, C)."""
        query = self.norm1(query + self.cross_attn(query, query_pos, ref_uv, values))
        return self.norm2(query + self.ffn(query))


def _check_modalities(name: str, camera_enabled: bool, radar_enabled: bool, camera_bev: Tensor | None,
                      radar_bev: Tensor | None) -> list[Tensor]:
    """The enabled maps, in the order (camera, radar); raises if the inputs disagree with the construction."""
    maps = []
    for modality, enabled, bev in (("camera", camera_enabled, camera_bev), ("radar", radar_enabled, radar_bev)):
        if enabled and bev is None:
            raise ValueError(f"{name}: {modality}_bev is None but the {modality} modality is enabled; build with "
                             f"{modality}_enabled=False, or pass a zero map to simulate a dropped sensor")
        if not enabled and bev is not None:
            raise ValueError(f"{name}: got a {modality}_bev but the {modality} modality was disabled at "
                             f"construction ({modality}_enabled=False); pass None")
        if bev is not None:
            if bev.dim() != 4:
                raise ValueError(f"{name}: {modality}_bev has shape {tuple(bev.shape)}, expected (B, C, H, W)")
            maps.append(bev)
    if len(maps) == 2 and (maps[0].shape[0] != maps[1].shape[0] or maps[0].shape[2:] != maps[1].shape[2:]):
        raise ValueError(f"{name}: camera_bev {tuple(maps[0].shape)} and radar_bev {tuple(maps[1].shape)} must "
                         "share batch size and BEV grid (H, W)")
    return maps


class CrossAttentionFusion(nn.Module):
    """BEV queries, one per cell, attend to the camera and radar BEV maps with deformable cross-attention.

    Queries start as the sum of the 1x1-projected BEVs plus a learned per-cell positional embedding, which every
    layer also adds again when predicting offsets and weights (Deformable DETR's ``query + query_pos``); each
    query's reference point is its own cell centre, and its values are the projected maps themselves. With one
    modality disabled at construction (``camera_enabled`` / ``radar_enabled``) the layers have one level."""

    def __init__(self, camera_channels: int, radar_channels: int, channels: int, layers: int = 2, heads: int = 4,
                 points: int = 4, bev_shape: tuple[int, int] = (64, 64), *, camera_enabled: bool = True,
                 radar_enabled: bool = True):
        super().__init__()
        if not (camera_enabled or radar_enabled):
            raise ValueError("CrossAttentionFusion: both modalities disabled; enable camera or radar")
        self.camera_enabled, self.radar_enabled = camera_enabled, radar_enabled
        self.channels, self.bev_shape = channels, tuple(bev_shape)
        self.camera_proj = nn.Conv2d(camera_channels, channels, 1) if camera_enabled else None
        self.radar_proj = nn.Conv2d(radar_channels, channels, 1) if radar_enabled else None
        num_levels = int(camera_enabled) + int(radar_enabled)
        H, W = self.bev_shape
        self.pos_embed = nn.Parameter(torch.randn(1, H * W, channels) * 0.02)  # (1, Q, C), learned per cell
        vs, us = torch.meshgrid((torch.arange(H, dtype=torch.float32) + 0.5) / H,
                                (torch.arange(W, dtype=torch.float32) + 0.5) / W, indexing="ij")  # (H, W) each
        self.register_buffer("ref_uv", torch.stack([us, vs], -1).reshape(1, H * W, 2),  # (1, Q, 2) cell centres
                             persistent=False)
        self.layers = nn.ModuleList(FusionLayer(channels, heads, num_levels, points) for _ in range(layers))

    def forward(self, camera_bev: Tensor | None, radar_bev: Tensor | None) -> Tensor:
        """camera_bev: (B, Cc, H, W) float32 camera BEV features, or None when the camera is disabled.
        radar_bev: (B, Cr, H, W) float32 radar BEV features, or None when the radar is disabled.
        Both on the same ego BEV grid, (H, W) = ``bev_shape`` (row i along ego x, column j along ego y; the
        attention itself treats both axes alike).
        Returns the fused BEV (B, channels, H, W) float32 on the same grid."""
        maps = _check_modalities(type(self).__name__, self.camera_enabled, self.radar_enabled, camera_bev, radar_bev)
        B, _, H, W = maps[0].shape
        if (H, W) != self.bev_shape:
            raise ValueError(f"CrossAttentionFusion: BEV grid {(H, W)} differs from bev_shape={self.bev_shape} "
                             "given at construction (the positional embedding is per cell)")
        values = []
        if camera_bev is not None:
            values.append(self.camera_proj(camera_bev))  # (B, C, H, W)
        if radar_bev is not None:
            values.append(self.radar_proj(radar_bev))  # (B, C, H, W)
        query = values[0] if len(values) == 1 else values[0] + values[1]  # (B, C, H, W)
        query = query.flatten(2).transpose(1, 2) + self.pos_embed  # (B, Q=H*W, C), row-major cells like ref_uv
        ref_uv = self.ref_uv.expand(B, -1, -1)  # (B, Q, 2)
        for layer in self.layers:
            query = layer(query, self.pos_embed, ref_uv, values)  # (B, Q, C)
        return query.transpose(1, 2).reshape(B, self.channels, H, W)  # (B, C, Q) -> (B, C, H, W)


class ConvFusion(nn.Module):
    """Baseline (BEVFusion's ConvFuser): concat the enabled BEVs, 3x3 conv, BatchNorm, ReLU.

    BatchNorm, whatever ``model.norm`` says (which switches the camera backbone and neck only): it folds into the
    conv at export."""

    def __init__(self, camera_channels: int, radar_channels: int, channels: int, *, camera_enabled: bool = True,
                 radar_enabled: bool = True):
        super().__init__()
        if not (camera_enabled or radar_enabled):
            raise ValueError("ConvFusion: both modalities disabled; enable camera or radar")
        self.camera_enabled, self.radar_enabled = camera_enabled, radar_enabled
        in_channels = camera_channels * camera_enabled + radar_channels * radar_enabled
        self.fuse = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels), nn.ReLU(inplace=True))

    def forward(self, camera_bev: Tensor | None, radar_bev: Tensor | None) -> Tensor:
        """camera_bev: (B, Cc, H, W) float32 or None (camera disabled); radar_bev: (B, Cr, H, W) float32 or None
        (radar disabled); same ego BEV grid. Returns the fused BEV (B, channels, H, W) float32."""
        maps = _check_modalities(type(self).__name__, self.camera_enabled, self.radar_enabled, camera_bev, radar_bev)
        x = maps[0] if len(maps) == 1 else torch.cat(maps, 1)  # (B, Cc + Cr, H, W)
        return self.fuse(x)
