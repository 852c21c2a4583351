"""Multi-sweep radar accumulation into ego@t0 (and pillarisation, re-exported from radar_pillars).

Each sweep is read, filtered by its state fields, and carried into ego@t0 through its own ego pose
(``calibration.sync.radar_sweep_to_ego``: positions transformed, velocity vectors rotated, ``dt`` kept). The
sweeps of all units are stacked with the closest-in-time points first, then truncated or padded to P_max.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibration.rig import Radar
from calibration.sync import PoseStream, radar_sweep_to_ego
from perception.data.io import PointCloud, RadarFilter, SensorFileError, read_radar_pcd


@dataclass(frozen=True)
class SweepRef:
    """One radar sweep to load: the unit, its index among the rig's radars, file and capture time (µs)."""

    radar: Radar
    index: int
    path: Path
    timestamp: int


def doppler_of(cloud: PointCloud, radar: Radar) -> np.ndarray:
    """The compensated Doppler a sync needs: (N, 2) vx_comp, vy_comp (cartesian) or (N,) radial speed."""
    if radar.doppler == "cartesian":
        return cloud.columns(("vx_comp", "vy_comp"))
    for name in ("v_r_compensated", "vr_comp", "v_r"):
        if name in cloud.fields:
            return cloud.column(name)
    raise SensorFileError("(radar)", f"radar {radar.name} is radial but the cloud has no radial velocity field "
                                     f"(fields: {list(cloud.fields)})")


def accumulate(sweeps: list[SweepRef], t0: int, poses: PoseStream, radar_filter: RadarFilter, fields: tuple[str, ...],
               max_points: int, sync: bool = True) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read, filter and synchronise ``sweeps`` into ego@t0.

    Returns points (max_points, F) float32 in ``fields`` order, valid (max_points,) bool, and issues: one
    "file: reason" line per sweep that could not be used (that sweep is skipped; the others are kept).
    """
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
