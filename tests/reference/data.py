"""Reference forms of the data pipeline's fast paths: plain loops and per-sweep reads, obviously correct, for
tests. ``perception.data.radar.accumulate`` and ``perception.data.radar_pillars.pillarize`` are tested equal to
these (the pillars bit for bit)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from calibration.rig import Radar
from calibration.sync import PoseStream, radar_sweep_to_ego
from perception.data.io import PointCloud, RadarFilter, SensorFileError, read_radar_pcd
from perception.data.radar import SweepRef
from perception.data.radar_pillars import PillarGrid, Pillars, check_pillar_inputs


def accumulate_reference(sweeps: list[SweepRef], t0: int, poses: PoseStream, radar_filter: RadarFilter,
                         fields: tuple[str, ...], max_points: int, sync: bool = True
                         ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The slow, obviously correct version of ``accumulate``: one sweep at a time through
    ``read_radar_pcd``, ``RadarFilter`` and ``calibration.sync.radar_sweep_to_ego``."""
    blocks: list[np.ndarray] = []
    issues: list[str] = []
    for ref in sweeps:
        try:
            raw = read_radar_pcd(ref.path)
            bad = ~np.all(np.isfinite(raw.xyz), axis=1)
            if bad.any():
                issues.append(f"{ref.path}: {int(bad.sum())} of {len(raw)} points have NaN/inf positions; "
                              f"dropped, radar {ref.radar.name}")
            cloud = radar_filter.apply(raw)
            sweep = radar_sweep_to_ego(ref.radar, cloud.xyz, doppler_of(cloud, ref.radar), t0, ref.timestamp, poses,
                                       enabled=sync)
        except SensorFileError as err:
            issues.append(f"{ref.path}: {err.problem}; radar {ref.radar.name} sweep skipped")
            continue
        n = len(cloud)
        cols = {"x": sweep.xyz[:, 0], "y": sweep.xyz[:, 1], "z": sweep.xyz[:, 2],
                "rcs": cloud.column("rcs") if "rcs" in cloud.fields else np.zeros(n, np.float32),
                "vx": sweep.velocity[:, 0], "vy": sweep.velocity[:, 1], "dt": sweep.dt,
                "sensor": np.full(n, ref.index, np.float32)}
        blocks.append(np.stack([cols[f] for f in fields], axis=1).astype(np.float32))
    pts = np.concatenate(blocks) if blocks else np.zeros((0, len(fields)), np.float32)
    if len(pts):
        # closest in time first (a stable sort keeps the per-sweep order), then keep P_max
        order = np.argsort(np.abs(pts[:, fields.index("dt")]), kind="stable")
        pts = pts[order[:max_points]]
    out = np.zeros((max_points, len(fields)), np.float32)
    out[:len(pts)] = pts
    valid = np.zeros(max_points, bool)
    valid[:len(pts)] = True
    return out, valid, issues



def doppler_of(cloud: PointCloud, radar: Radar) -> np.ndarray:
    """The compensated Doppler a sync needs: (N, 2) vx_comp, vy_comp (cartesian) or (N,) radial speed."""
    if radar.doppler == "cartesian":
        return cloud.columns(("vx_comp", "vy_comp"))
    for name in ("v_r_compensated", "vr_comp", "v_r"):
        if name in cloud.fields:
            return cloud.column(name)
    raise SensorFileError("(radar)", f"radar {radar.name} is radial but the cloud has no radial velocity field "
                                     f"(fields: {list(cloud.fields)})")



def pillarize_reference(points: np.ndarray, valid: np.ndarray, fields: Sequence[str], grid: PillarGrid,
                        max_pillars: int, max_points: int) -> Pillars:
    """``pillarize`` written as plain Python loops (same contract, same result bit for bit). For tests."""
    points, valid, fields = check_pillar_inputs(points, valid, fields, grid, max_pillars, max_points)
    ix, iy = fields.index("x"), fields.index("y")
    h, w = grid.shape
    (x0, x1), (y0, y1), res = grid.x_range, grid.y_range, grid.resolution

    members: dict[int, list[int]] = {}  # cell -> indices of its usable points, in input order
    num_out_of_grid = 0
    for i in range(points.shape[0]):
        values = [float(v) for v in points[i]]
        if not valid[i] or not all(math.isfinite(v) for v in values):
            continue
        x, y = values[ix], values[iy]
        if not (x0 <= x < x1 and y0 <= y < y1):
            num_out_of_grid += 1
            continue
        row = min(max(math.floor((x - x0) / res), 0), h - 1)
        col = min(max(math.floor((y - y0) / res), 0), w - 1)
        members.setdefault(row * w + col, []).append(i)

    occupied = sorted(members)
    if len(occupied) > max_pillars:
        most_first = sorted(occupied, key=lambda c: (-len(members[c]), c))
        kept = sorted(most_first[:max_pillars])
    else:
        kept = occupied

    n_fields = points.shape[1]
    features = np.zeros((max_pillars, max_points, n_fields + 2), np.float32)
    point_mask = np.zeros((max_pillars, max_points), bool)
    cells = np.full(max_pillars, h * w, np.int64)
    pillar_mask = np.zeros(max_pillars, bool)
    num_kept = 0
    for s, c in enumerate(kept):
        cells[s] = c
        pillar_mask[s] = True
        row, col = divmod(c, w)
        centre_x = x0 + (row + 0.5) * res
        centre_y = y0 + (col + 0.5) * res
        for k, i in enumerate(members[c][:max_points]):
            features[s, k, :n_fields] = points[i]
            features[s, k, n_fields] = float(points[i, ix]) - centre_x
            features[s, k, n_fields + 1] = float(points[i, iy]) - centre_y
            point_mask[s, k] = True
            num_kept += 1
    num_dropped = sum(len(m) for m in members.values()) - num_kept
    return Pillars(features, point_mask, cells, pillar_mask, num_dropped, num_out_of_grid)



def scatter_reference(pillar_features: np.ndarray, cells: np.ndarray, grid_shape: tuple[int, int]) -> np.ndarray:
    """Place per-pillar feature vectors on a BEV canvas, one plain loop.

    pillar_features: (max_pillars, C), any dtype. cells: (max_pillars,) integer flat index ``row * W + col``;
    the dummy index H * W marks padding, which is dropped. grid_shape: (H, W).
    Returns (C, H, W) of the features' dtype, zeros where no pillar. A real cell listed twice is an error:
    the network's scatter has no reduction, so its result would depend on the write order.
    """
    pillar_features = np.asarray(pillar_features)
    cells = np.asarray(cells)
    h, w = (int(v) for v in grid_shape)
    if h <= 0 or w <= 0:
        raise ValueError(f"grid_shape must be two positive integers (H, W), got {tuple(grid_shape)}")
    if pillar_features.ndim != 2:
        raise ValueError(f"pillar_features must be (max_pillars, C), got shape {pillar_features.shape}")
    if cells.shape != (pillar_features.shape[0],) or cells.dtype.kind not in "iu":
        raise ValueError(f"cells must be ({pillar_features.shape[0]},) integers (one per pillar), "
                         f"got shape {cells.shape} dtype {cells.dtype}")
    canvas = np.zeros((pillar_features.shape[1], h, w), pillar_features.dtype)
    seen: set[int] = set()
    for p in range(cells.shape[0]):
        c = int(cells[p])
        if c == h * w:
            continue
        if not 0 <= c < h * w:
            raise ValueError(f"cells[{p}] = {c} is outside [0, {h * w}] for grid_shape ({h}, {w})")
        if c in seen:
            raise ValueError(f"cells[{p}] = {c} repeats an earlier pillar's cell; real cells must be unique")
        seen.add(c)
        row, col = divmod(c, w)
        for ch in range(pillar_features.shape[1]):
            canvas[ch, row, col] = pillar_features[p, ch]
    return canvas
