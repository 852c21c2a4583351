"""Head maps -> fixed-size detections and trajectories, inside the exported graph.

``decode`` is the one implementation used in training (validation), evaluation and export: max-pool NMS on
``sigmoid(heatmap)``, one TopK over ``K*H*W``, and a single ``gather`` of every regression at the selected
cells. Every output has a fixed size ``N = max_detections``; no boolean indexing, no NonZero, so the graph stays
inside the TensorRT-native op budget (``export/budget.py``, docs/deploy.md).

Conventions (the training targets must use the same ones; ``BevGrid.cell_and_offset`` is their encoder):

- BEV map ``(B, C, H, W)``: row ``i`` along ego x, column ``j`` along ego y; cell ``(i, j)`` has its centre at
  ``(x_range[0] + (i + 0.5) * res_x, y_range[0] + (j + 0.5) * res_y)``.
- ``offset``: ``(d_i, d_j)`` in cells from the cell **centre** (target in ``[-0.5, 0.5)``), so an untrained
  head's zero output decodes to the cell centre. ``x = x_range[0] + (i + 0.5 + d_i) * res_x``.
- ``log_size``: ``log`` of ``(w, l, h)`` in metres (nuScenes order). ``rotation``: ``(sin yaw, cos yaw)``,
  unnormalised; yaw about z, 0 along +x. ``velocity``: ``(vx, vy)`` m/s over ground in ego axes.
- Trajectories: the head predicts each waypoint directly as an offset in metres from the agent's position at
  t0 (not per-step increments), channel ``(m * T + t) * 2 + c``; decoding adds the decoded box centre, giving
  absolute ego@t0 positions. Target: ``gt_future[t] - gt_box[:2]``.

Tie rule (decode and ``tests/reference/model.py::decode_reference`` agree exactly):

- NMS: a cell survives iff its score equals the maximum of its 3x3 neighbourhood (outside the map counts as
  -inf). Equal-valued neighbours (a plateau) therefore all survive, as in CenterPoint's ``hmax == heat``.
- Order: score descending; equal scores by ascending flat index ``k * H * W + i * W + j`` (class-major). That is
  ONNX TopK's documented rule, but eager ``torch.topk`` promises no order among equal values (and TensorRT's
  TopK need not either), so ``decode`` re-ranks the N selected slots with an explicit N x N comparison. Only
  *which* cells enter when a tie straddles the N-th slot stays backend-dependent.
- Padding: slots whose score is 0 (suppressed cells filling up the N slots, or a peak whose sigmoid underflows)
  are padding: label -1 and every other output 0, whichever zero cells TopK happened to pick.

Export (opset 17, torch 2.13; tests/perception/model/test_heads_decode.py): both the default dynamo exporter
and ``dynamo=False`` stay in the budget with every tensor shape static. Prefer the default: it writes
``atan2(0, 0)`` as 0 like eager (the TorchScript exporter gives NaN there). Both give -pi where eager gives +pi
for ``atan2(+0, negative)``: compare yaw modulo 2 pi in parity checks.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from perception.model.heads.center_head import REGRESSIONS as CENTER_REGRESSIONS

OUTPUT_NAMES = ("boxes", "scores", "labels", "trajectories", "mode_probs")
TENSORRT_MAX_TOPK = 3840  # TensorRT's ITopKLayer refuses larger k


@dataclass(frozen=True)
class BevGrid:
    """The BEV grid of the head maps, ego@t0, metres. ``shape = (H, W)``: cells along x (rows), along y (columns)."""

    x_range: tuple[float, float]
    y_range: tuple[float, float]
    shape: tuple[int, int]

    def __post_init__(self) -> None:
        for name in ("x_range", "y_range"):
            lo, hi = getattr(self, name)
            if not lo < hi:
                raise ValueError(f"BevGrid.{name} must be ordered (low, high), got ({lo}, {hi})")
        if len(self.shape) != 2 or any(int(n) != n or n < 1 for n in self.shape):
            raise ValueError(f"BevGrid.shape must be two positive integers (H, W), got {self.shape}")

    @classmethod
    def from_config(cls, grid: Any, stride: int = 1) -> BevGrid:
        """From a ``perception.config.GridConfig`` (x_range, y_range, bev_shape), for maps downsampled by
        ``stride``."""
        h, w = grid.bev_shape
        if h % stride or w % stride:
            raise ValueError(f"BEV shape {(h, w)} is not divisible by the head stride {stride}")
        return cls(tuple(grid.x_range), tuple(grid.y_range), (h // stride, w // stride))

    @property
    def res_x(self) -> float:
        return (self.x_range[1] - self.x_range[0]) / self.shape[0]

    @property
    def res_y(self) -> float:
        return (self.y_range[1] - self.y_range[0]) / self.shape[1]

    def cell_and_offset(self, xy: Tensor) -> tuple[Tensor, Tensor]:
        """xy: (..., 2) metres, ego@t0. Returns (ij (..., 2) int64 cell indices, which may lie outside the map,
        offset (..., 2) cells from the cell centre, in [-0.5, 0.5)): the inverse of the centre decoding."""
        assert xy.shape[-1] == 2, f"xy must be (..., 2), got {tuple(xy.shape)}"
        origin = xy.new_tensor([self.x_range[0], self.y_range[0]])
        res = xy.new_tensor([self.res_x, self.res_y])
        cells = (xy - origin) / res  # (..., 2) continuous cell coordinates
        ij = torch.floor(cells)
        return ij.to(torch.int64), cells - ij - 0.5


def max_pool_nms(heat: Tensor, kernel: int = 3) -> Tensor:
    """heat: (B, K, H, W) scores in [0, 1]. Returns the same with every cell that is not the maximum of its
    ``kernel`` x ``kernel`` neighbourhood set to 0 (ties: all equal maxima kept)."""
    hmax = nn.functional.max_pool2d(heat, kernel, stride=1, padding=kernel // 2)  # pads with -inf
    return torch.where(hmax == heat, heat, torch.zeros_like(heat))


def _canonical_order(scores: Tensor, flat: Tensor) -> tuple[Tensor, Tensor]:
    """scores, flat: (B, N) from TopK. Reorders to score descending, then flat index ascending, whatever order
    the TopK backend gave equal scores (a rank by N x N comparison, then a scatter; N is small)."""
    s_a, s_b = scores.unsqueeze(2), scores.unsqueeze(1)  # (B, N, 1), (B, 1, N)
    before = (s_b > s_a) | ((s_b == s_a) & (flat.unsqueeze(1) < flat.unsqueeze(2)))  # (B, N, N): b before a
    rank = before.to(torch.int64).sum(2)  # (B, N): a permutation of 0..N-1 (flat indices are distinct)
    slots = torch.arange(scores.shape[1], device=scores.device).unsqueeze(0).expand_as(rank)  # (B, N)
    order = torch.zeros_like(rank).scatter(1, rank, slots)  # (B, N): order[rank[a]] = a
    return scores.gather(1, order), flat.gather(1, order)


def decode(center: Mapping[str, Tensor], grid: BevGrid, trajectory: Mapping[str, Tensor] | None = None,
           max_detections: int = 200, nms_kernel: int = 3) -> dict[str, Tensor]:
    """center: CenterHead outputs, (B, K, H, W) ``heatmap`` logits and the regressions of ``CENTER_REGRESSIONS``
    as (B, C, H, W) maps; trajectory: TrajectoryHead outputs, ``offsets`` (B, M*T*2, H, W) metres and
    ``mode_logits`` (B, M, H, W), or None. (H, W) must equal ``grid.shape``.

    Returns, with N = max_detections (conventions and tie rule in the module docstring):
      boxes (B, N, 9) float32 ``[x, y, z, w, l, h, yaw, vx, vy]`` ego@t0 (m, rad, m/s);
      scores (B, N) float32 in [0, 1], descending; labels (B, N) int64 class index, -1 for padding;
      and with a trajectory: trajectories (B, N, M, T, 2) float32 absolute (x, y) ego@t0 (m),
      mode_probs (B, N, M) float32 (softmax over modes)."""
    heat_logits = center["heatmap"]
    b, k, h, w = heat_logits.shape
    if (h, w) != tuple(grid.shape):
        raise ValueError(f"head maps are {h}x{w} cells but the BevGrid is {grid.shape}; build the grid for the "
                         f"head's stride (BevGrid.from_config(cfg.data.grid, stride))")
    n = max_detections
    if not 0 < n <= min(k * h * w, TENSORRT_MAX_TOPK):
        raise ValueError(f"max_detections={n} must be in [1, {min(k * h * w, TENSORRT_MAX_TOPK)}] (the map has "
                         f"{k * h * w} cells; TensorRT's TopK allows k <= {TENSORRT_MAX_TOPK})")

    for name, channels in CENTER_REGRESSIONS:
        if tuple(center[name].shape) != (b, channels, h, w):
            raise ValueError(f"center['{name}'] is {tuple(center[name].shape)}, expected {(b, channels, h, w)}")
    if trajectory is not None:
        m, offsets = trajectory["mode_logits"].shape[1], trajectory["offsets"]
        if (offsets.ndim != 4 or offsets.shape[1] % (2 * m) or (offsets.shape[0], *offsets.shape[2:]) != (b, h, w)
                or tuple(trajectory["mode_logits"].shape) != (b, m, h, w)):
            raise ValueError(f"trajectory maps offsets {tuple(trajectory['offsets'].shape)} and mode_logits "
                             f"{tuple(trajectory['mode_logits'].shape)} do not match (B, M*T*2, H, W) and "
                             f"(B, M, H, W) with (B, H, W) = {(b, h, w)}")

    heat = max_pool_nms(heat_logits.sigmoid(), nms_kernel)  # (B, K, H, W)
    scores, flat = heat.flatten(1).topk(n, dim=1)  # (B, N), (B, N) into K*H*W
    scores, flat = _canonical_order(scores, flat)
    valid = scores > 0  # (B, N)
    # Floor division, not rounding_mode="trunc": the dynamo exporter writes trunc with Sign (outside the budget).
    labels = flat // (h * w)  # (B, N)
    cell = flat - labels * (h * w)  # (B, N) into H*W
    row = cell // w  # (B, N) along x
    col = cell - row * w  # (B, N) along y

    maps = [center[name] for name, _ in CENTER_REGRESSIONS]
    if trajectory is not None:
        maps += [trajectory["offsets"], trajectory["mode_logits"]]
    # Every regression channel at the selected cells in one go: cells of all batch items on one axis, then
    # index_select: one plain Gather whose output shape is static
    # (advanced indexing exports as GatherND with the dynamo exporter, outside the budget; gather along H*W
    # needs an index expanded by a traced channel count, which hides the shape from ONNX shape inference).
    regs = torch.cat(maps, dim=1).permute(0, 2, 3, 1).flatten(0, 2)  # (B*H*W, R)
    batch_base = torch.arange(b, device=flat.device).unsqueeze(1) * (h * w)  # (B, 1)
    picked = regs.index_select(0, (cell + batch_base).flatten()).reshape(b, n, -1)  # (B, N, R)
    sizes = [c for _, c in CENTER_REGRESSIONS]
    *box_regs, rest = picked.split(sizes + [picked.shape[2] - sum(sizes)], dim=2)
    reg = dict(zip([name for name, _ in CENTER_REGRESSIONS], box_regs))  # name -> (B, N, C)
    offset, z, log_size, rot, vel = (reg[name] for name in ("offset", "z", "log_size", "rotation", "velocity"))

    x = grid.x_range[0] + (row.to(picked.dtype) + 0.5 + offset[..., 0]) * grid.res_x  # (B, N)
    y = grid.y_range[0] + (col.to(picked.dtype) + 0.5 + offset[..., 1]) * grid.res_y  # (B, N)
    # atan2(0, 0) exports (TorchScript exporter) as Div + Atan, i.e. NaN; a quantised head can output exact zeros
    cos = torch.where((rot[..., 1] == 0) & (rot[..., 0] == 0), torch.full_like(rot[..., 1], 1e-6), rot[..., 1])
    yaw = torch.atan2(rot[..., 0], cos)  # (B, N)
    boxes = torch.cat([x.unsqueeze(2), y.unsqueeze(2), z, log_size.exp(), yaw.unsqueeze(2), vel], dim=2)  # (B, N, 9)
    out = {
        "boxes": torch.where(valid.unsqueeze(2), boxes, torch.zeros_like(boxes)),
        "scores": scores,
        "labels": torch.where(valid, labels, torch.full_like(labels, -1)),
    }
    if trajectory is not None:
        m = trajectory["mode_logits"].shape[1]
        steps = trajectory["offsets"].shape[1] // (2 * m)
        traj = rest[..., : m * steps * 2].reshape(b, n, m, steps, 2)  # (B, N, M, T, 2) from the t0 position
        traj = traj + boxes[:, :, None, None, 0:2]  # absolute, ego@t0
        probs = rest[..., m * steps * 2:].softmax(dim=2)  # (B, N, M)
        out["trajectories"] = torch.where(valid[:, :, None, None, None], traj, torch.zeros_like(traj))
        out["mode_probs"] = torch.where(valid.unsqueeze(2), probs, torch.zeros_like(probs))
    return out


class Decoder(nn.Module):
    """``decode`` with its grid and N fixed, for composition in the network and the exported graph."""

    def __init__(self, grid: BevGrid, max_detections: int = 200, nms_kernel: int = 3) -> None:
        super().__init__()
        self.grid, self.max_detections, self.nms_kernel = grid, max_detections, nms_kernel

    def forward(self, center: Mapping[str, Tensor],
                trajectory: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        return decode(center, self.grid, trajectory, self.max_detections, self.nms_kernel)
