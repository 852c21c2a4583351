"""Radar sweeps: which ones a frame uses (``select_sweeps``) and their accumulation into ego@t0 (``accumulate``;
pillarisation lives in ``radar_pillars``).

Each sweep is read, filtered by its state fields, and carried into ego@t0 through its own ego pose (what
``calibration.sync.radar_sweep_to_ego`` does per sweep: positions transformed, velocity vectors rotated, ``dt``
kept; ``tests/reference/data.py::accumulate_reference`` is that loop). The
sweeps of all units are stacked with the closest-in-time points first, then truncated or padded to P_max.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from calibration.rig import Radar
from calibration.sync import PoseStream
from calibration.transforms import invert
from perception.data.io import RadarFilter, SensorFileError, read_radar_records


@dataclass(frozen=True)
class SweepRef:
    """One radar sweep to load: the unit, its index among the rig's radars, file and capture time (µs).
    ``records``: the sweep's points already in memory (replay: a decoded PointCloud2, the layout
    ``read_radar_records`` gives); ``path`` then only names it in issues."""

    radar: Radar
    index: int
    path: str | Path
    timestamp: int
    records: np.ndarray | None = field(default=None, compare=False, repr=False)


def select_sweeps(stamps: Sequence[int], t0: int, window_us: int, future_us: int, count: int) -> list[int]:
    """The one radar sweep selection (offline dataset and replay player alike): indices into ``stamps`` (µs) of
    up to ``count`` sweeps of ONE radar with ``t0 - window_us <= stamp <= t0 + future_us``, closest to ``t0``
    first; of two equally close, the newer first. Offline ``future_us`` is the non-causal tolerance
    (``data.radar.future_tolerance_ms``: nuScenes key-frame sweeps straddle t0); the replay player passes only
    the sweeps that had arrived, so it stays causal whatever the tolerance."""
    lo, hi = int(t0) - int(window_us), int(t0) + int(future_us)
    inside = [i for i, t in enumerate(stamps) if lo <= int(t) <= hi]
    inside.sort(key=lambda i: (abs(int(stamps[i]) - int(t0)), -int(stamps[i])))
    return inside[:max(int(count), 0)]


def accumulate(sweeps: list[SweepRef], t0: int, poses: PoseStream, radar_filter: RadarFilter, fields: tuple[str, ...],
               max_points: int, sync: bool = True) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read, filter and synchronise ``sweeps`` into ego@t0 (vectorised over all sweeps).

    Returns points (max_points, F) float32 in ``fields`` order, valid (max_points,) bool, and issues: one
    "file: reason" line per sweep that could not be used (that sweep is skipped; the others are kept) or that
    had non-finite points (dropped). Equal to ``tests/reference/data.py::accumulate_reference`` (tested).
    """
    recs: list[np.ndarray] = []
    used: list[SweepRef] = []
    issues: list[str] = []
    for ref in sweeps:
        try:
            rec = ref.records if ref.records is not None else read_radar_records(ref.path)
            if ref.radar.doppler != "cartesian" and _radial_field(rec.dtype.names) is None:
                raise SensorFileError(ref.path, f"radar {ref.radar.name} is radial but the cloud has no radial "
                                                f"velocity field (fields: {list(rec.dtype.names)})")
            if ref.radar.doppler == "cartesian" and not {"vx_comp", "vy_comp"} <= set(rec.dtype.names):
                raise SensorFileError(ref.path, f"radar {ref.radar.name} is cartesian but the cloud has no "
                                                f"vx_comp/vy_comp (fields: {list(rec.dtype.names)})")
        except SensorFileError as err:
            issues.append(f"{ref.path}: {err.problem}; radar {ref.radar.name} sweep skipped")
            continue
        recs.append(rec)
        used.append(ref)
    if not used:
        return np.zeros((max_points, len(fields)), np.float32), np.zeros(max_points, bool), issues
    counts = [len(r) for r in recs]
    sid = np.repeat(np.arange(len(used)), counts)
    c = _columns(recs, used)
    xyz = np.stack([c["x"], c["y"], c["z"]], 1).astype(np.float64)
    finite = np.all(np.isfinite(xyz), axis=1)
    if not finite.all():
        for k in np.unique(sid[~finite]):
            issues.append(f"{used[k].path}: {int(np.sum(~finite & (sid == k)))} of {counts[k]} points have NaN/inf "
                          f"positions; dropped, radar {used[k].radar.name}")
    keep = finite
    for name in ("dyn_prop", "invalid_state", "ambig_state"):
        allowed = getattr(radar_filter, name)
        if allowed is not None and name in c:
            table = np.zeros(256, bool)  # states are small integers: a lookup table beats np.isin
            table[[a for a in allowed if 0 <= a < 256]] = True
            vals = c[name]
            listed = (vals >= 0) & (vals < 256) & table[np.clip(vals, 0, 255).astype(np.int64)] & (vals == np.round(vals))
            keep &= listed | (vals == -1)  # a sweep without the field is not filtered on it (as RadarFilter)
    # one ego_t0_from_radar per sweep, through that sweep's own ego pose
    ego_from_global_t0 = invert(poses.at(t0))
    mounts = np.stack([r.radar.ego_from_radar for r in used])  # (S, 4, 4)
    if sync:
        mats = ego_from_global_t0 @ poses.at_many(np.array([r.timestamp for r in used]), used[0].radar.name) @ mounts
    else:
        mats = mounts
    radial = np.array([r.radar.doppler != "cartesian" for r in used])[sid]
    vel = np.stack([c["d0"], c["d1"], np.zeros_like(c["d0"])], 1).astype(np.float64)
    rng = np.linalg.norm(xyz, axis=1, keepdims=True)
    los = xyz / np.maximum(rng, 1e-6)
    vel = np.where(radial[:, None], c["d0"][:, None] * los, vel)  # radial: along the line of sight
    xyz, vel, sid = xyz[keep], vel[keep], sid[keep]
    rot = mats[sid, :3, :3]  # (N, 3, 3)
    out_xyz = np.einsum("nij,nj->ni", rot, xyz) + mats[sid, :3, 3]
    out_vel = np.einsum("nij,nj->ni", rot, vel)
    times = np.array([r.timestamp for r in used], np.int64)
    per = {"x": out_xyz[:, 0], "y": out_xyz[:, 1], "z": out_xyz[:, 2], "rcs": c["rcs"][keep],
           "vx": out_vel[:, 0], "vy": out_vel[:, 1], "dt": ((int(t0) - times) * 1e-6)[sid],
           "sensor": np.array([r.index for r in used], np.float64)[sid]}
    pts = np.stack([per[f] for f in fields], axis=1).astype(np.float32)
    order = np.argsort(np.abs(pts[:, fields.index("dt")]), kind="stable")[:max_points]
    out = np.zeros((max_points, len(fields)), np.float32)
    out[:len(order)] = pts[order]
    valid = np.zeros(max_points, bool)
    valid[:len(order)] = True
    return out, valid, issues


def _radial_field(names: tuple[str, ...]) -> str | None:
    return next((n for n in ("v_r_compensated", "vr_comp", "v_r") if n in names), None)


def _columns(recs: list[np.ndarray], used: list[SweepRef]) -> dict[str, np.ndarray]:
    """Concatenated columns x, y, z, rcs, d0, d1 (Doppler: vx_comp/vy_comp, or radial speed and 0) and the state
    fields, over all sweeps. Sweeps of one layout (the usual case) are concatenated as records first."""
    first = recs[0].dtype
    if all(r.dtype is first for r in recs) and all(u.radar.doppler == used[0].radar.doppler for u in used):
        # joining the raw bytes is much faster than concatenating (unaligned) structured arrays
        groups = [(np.frombuffer(b"".join(r.tobytes() for r in recs), dtype=recs[0].dtype), used[0].radar.doppler)]
    else:
        groups = [(r, u.radar.doppler) for r, u in zip(recs, used)]
    parts: dict[str, list[np.ndarray]] = {}
    for rec, doppler in groups:
        names = rec.dtype.names
        n = len(rec)
        if doppler == "cartesian":
            d0, d1 = rec["vx_comp"], rec["vy_comp"]
        else:
            d0, d1 = rec[_radial_field(names)], np.zeros(n, np.float32)
        cols = {"x": rec["x"], "y": rec["y"], "z": rec["z"], "d0": d0, "d1": d1,
                "rcs": rec["rcs"] if "rcs" in names else np.zeros(n, np.float32)}
        for name in ("dyn_prop", "invalid_state", "ambig_state"):  # -1: the layout has no such field
            cols[name] = rec[name] if name in names else np.full(n, -1.0, np.float32)
        for k, v in cols.items():
            parts.setdefault(k, []).append(v)
    return {k: (v[0] if len(v) == 1 else np.concatenate(v)) for k, v in parts.items()}


