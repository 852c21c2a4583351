"""Time alignment of sensors to a reference time ``t0`` through the ego-pose stream.

Every sensor measurement has its own capture time ``t``; the model works in the
ego frame at ``t0``. For the static world, the ego's own motion between ``t`` and
``t0`` is known from the pose stream, so:

- a camera captured at ``t`` sees a point ``X`` (ego@t0) at
  ``img_from_ego(t0) = img_from_camera @ camera_from_ego @ ego_t_from_ego_t0``;
- a radar return measured at ``t`` in the radar frame is at
  ``ego_t0_from_ego_t @ ego_from_radar @ p`` (velocities rotated the same way);
- ``ego_t0_from_ego_t = inv(global_from_ego(t0)) @ global_from_ego(t)``.

Moving objects still move during ``t0 - t``: that residual is what ``dt`` (kept per
radar point) and the per-sensor offsets reported here let the model and the user
reason about. Timestamps are integer microseconds; ``dt`` is in seconds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

from calibration.rig import Camera, Radar
from calibration.transforms import (
    interpolate_pose,
    invert,
    quaternions_to_matrices,
    rotate_vectors,
    rotation_angle,
    transform_points,
)

DEFAULT_MAX_EXTRAPOLATION_US = 100_000


class SyncError(ValueError):
    """A sensor time cannot be aligned (no ego pose near it). Names the sensor and the time."""


@dataclass(frozen=True, eq=False)
class PoseStream:
    """Timestamped ego poses: ``timestamps`` (T,) int64 µs strictly increasing, ``global_from_ego`` (T, 4, 4).

    ``at(t)`` interpolates (linear translation, slerp rotation) between the two
    surrounding poses and extrapolates at constant velocity up to
    ``max_extrapolation_us`` beyond either end.
    """

    timestamps: np.ndarray
    global_from_ego: np.ndarray
    max_extrapolation_us: int = DEFAULT_MAX_EXTRAPOLATION_US

    def __post_init__(self) -> None:
        ts = np.asarray(self.timestamps, dtype=np.int64).reshape(-1)
        poses = np.asarray(self.global_from_ego, dtype=np.float64)
        if poses.shape != (ts.size, 4, 4):
            raise ValueError(f"global_from_ego must be ({ts.size}, 4, 4) to match the timestamps, got {poses.shape}")
        if ts.size == 0:
            raise ValueError("a pose stream needs at least one pose")
        if np.any(np.diff(ts) <= 0):
            i = int(np.argmax(np.diff(ts) <= 0))
            raise ValueError(f"pose timestamps must be strictly increasing: {ts[i]} then {ts[i + 1]} (index {i + 1})")
        object.__setattr__(self, "timestamps", ts)
        object.__setattr__(self, "global_from_ego", poses)

    @classmethod
    def from_records(cls, records: Iterable[Mapping], max_extrapolation_us: int = DEFAULT_MAX_EXTRAPOLATION_US
                     ) -> "PoseStream":
        """From nuScenes ``ego_pose`` rows (``timestamp``, ``translation``, ``rotation`` [w, x, y, z]);
        rows are sorted and exact duplicates of a timestamp are merged."""
        by_time = {int(r["timestamp"]): r for r in records}
        ts = sorted(by_time)
        poses = np.tile(np.eye(4), (len(ts), 1, 1))
        poses[:, :3, :3] = quaternions_to_matrices(np.array([by_time[t]["rotation"] for t in ts], np.float64))
        poses[:, :3, 3] = np.array([by_time[t]["translation"] for t in ts], np.float64)
        return cls(np.array(ts, dtype=np.int64), poses, max_extrapolation_us)

    def at_many(self, times: np.ndarray, sensor: str = "") -> np.ndarray:
        """(T, 4, 4) ``global_from_ego`` at several times (exact pose rows looked up at once)."""
        times = np.asarray(times, dtype=np.int64)
        i = np.clip(np.searchsorted(self.timestamps, times), 0, self.timestamps.size - 1)
        out = self.global_from_ego[i].copy()
        for k in np.flatnonzero(self.timestamps[i] != times):
            out[k] = self.at(int(times[k]), sensor)
        return out

    def gap_us(self, t: int) -> int:
        """Distance in µs from ``t`` to the nearest measured pose."""
        return int(np.min(np.abs(self.timestamps - int(t))))

    def at(self, t: int, sensor: str = "") -> np.ndarray:
        """(4, 4) ``global_from_ego`` at time ``t`` µs."""
        t = int(t)
        ts = self.timestamps
        i = int(np.searchsorted(ts, t))
        if i < ts.size and ts[i] == t:
            return self.global_from_ego[i].copy()
        if ts.size == 1:
            if abs(t - int(ts[0])) <= self.max_extrapolation_us:
                return self.global_from_ego[0].copy()
            raise SyncError(self._outside(t, sensor))
        if i == 0 or i == ts.size:
            lo, hi = (0, 1) if i == 0 else (ts.size - 2, ts.size - 1)
            edge = ts[0] if i == 0 else ts[-1]
            if abs(t - int(edge)) > self.max_extrapolation_us:
                raise SyncError(self._outside(t, sensor))
        else:
            lo, hi = i - 1, i
        alpha = (t - int(ts[lo])) / float(int(ts[hi]) - int(ts[lo]))
        return interpolate_pose(self.global_from_ego[lo], self.global_from_ego[hi], alpha)

    def _outside(self, t: int, sensor: str) -> str:
        who = f"sensor {sensor}: " if sensor else ""
        return (f"{who}time {t} µs is {min(abs(t - int(self.timestamps[0])), abs(t - int(self.timestamps[-1])))} µs "
                f"outside the ego-pose stream [{self.timestamps[0]}, {self.timestamps[-1]}] "
                f"(extrapolation limit {self.max_extrapolation_us} µs); provide ego poses covering the sensor times")

    def ego_a_from_ego_b(self, t_a: int, t_b: int, sensor: str = "") -> np.ndarray:
        """(4, 4) transform from the ego frame at ``t_b`` to the ego frame at ``t_a``."""
        return invert(self.at(t_a, sensor)) @ self.at(t_b, sensor)


@dataclass(frozen=True)
class SensorSync:
    """How one sensor measurement was aligned to ``t0``.

    offset_us: capture time minus t0 (negative = captured before t0).
    ego_translation_m / ego_rotation_deg: ego motion between capture and t0 that the
    alignment compensated (or, when disabled, the error it left in place for the static world).
    pose_gap_us: distance from the capture time to the nearest measured ego pose
    (0 in nuScenes, where every sample_data row has its own pose).
    residual_static_m: ego motion left uncompensated (0 when enabled; the full motion when disabled).
    residual_dynamic_s: |offset| in seconds: a moving object moves speed x this before t0, which no
    ego-pose alignment can remove (radar points carry it as ``dt``).
    """

    sensor: str
    t_sensor: int
    offset_us: int
    ego_translation_m: float
    ego_rotation_deg: float
    pose_gap_us: int
    compensated: bool

    @property
    def residual_static_m(self) -> float:
        return 0.0 if self.compensated else self.ego_translation_m

    @property
    def residual_dynamic_s(self) -> float:
        return abs(self.offset_us) * 1e-6


def _report(sensor: str, t0: int, t: int, ego_t0_from_ego_t: np.ndarray, poses: PoseStream, enabled: bool) -> SensorSync:
    return SensorSync(sensor, int(t), int(t) - int(t0), float(np.linalg.norm(ego_t0_from_ego_t[:3, 3])),
                      float(np.degrees(rotation_angle(ego_t0_from_ego_t[:3, :3]))), poses.gap_us(t), enabled)


def camera_img_from_ego(camera: Camera, t0: int, t_capture: int, poses: PoseStream,
                        enabled: bool = True) -> tuple[np.ndarray, SensorSync]:
    """(4, 4) ``img_from_ego`` at ``t0`` for an image captured at ``t_capture``, and its sync record.

    enabled=False returns the static chain ``img_from_camera @ camera_from_ego`` (the camera treated as
    captured at t0), still reporting the ego motion it ignores.
    """
    ego_t0_from_ego_t = poses.ego_a_from_ego_b(t0, t_capture, camera.name)
    report = _report(camera.name, t0, t_capture, ego_t0_from_ego_t, poses, enabled)
    if not enabled:
        return camera.img_from_ego, report
    return camera.img_from_ego @ invert(ego_t0_from_ego_t), report


@dataclass(frozen=True, eq=False)
class RadarSweepEgo:
    """One radar sweep carried into ego@t0.

    xyz: (N, 3) float32 metres in ego@t0. velocity: (N, 2) float32 m/s over ground in ego@t0 axes
    (for a radial-Doppler radar: the measured radial component along the line of sight).
    dt: (N,) float32 seconds, ``t0 - t_sweep`` (positive = measured before t0).
    """

    sensor: str
    xyz: np.ndarray
    velocity: np.ndarray
    dt: np.ndarray
    sync: SensorSync


def radar_sweep_to_ego(radar: Radar, xyz_radar: np.ndarray, doppler: np.ndarray, t0: int, t_sweep: int,
                       poses: PoseStream, enabled: bool = True) -> RadarSweepEgo:
    """Carry one sweep from the radar frame at ``t_sweep`` into ego@t0.

    xyz_radar: (N, 3) metres, radar frame. doppler: for ``radar.doppler == 'cartesian'`` (N, 2) ego-motion-
    compensated ``[vx_comp, vy_comp]`` in the radar frame (nuScenes); for 'radial' (N,) compensated range
    rate in m/s (positive = moving away). Velocities are free vectors: rotated, never translated.
    enabled=False treats the sweep as measured at t0 (only the mount is applied; ``dt`` is still reported).
    """
    xyz_radar = np.asarray(xyz_radar, dtype=np.float64).reshape(-1, 3)
    n = xyz_radar.shape[0]
    if radar.doppler == "cartesian":
        v = np.asarray(doppler, dtype=np.float64).reshape(n, 2)
        vel_radar = np.concatenate([v, np.zeros((n, 1))], axis=1)  # (N, 3)
    else:
        vr = np.asarray(doppler, dtype=np.float64).reshape(n)
        rng = np.linalg.norm(xyz_radar, axis=1, keepdims=True)
        vel_radar = vr[:, None] * xyz_radar / np.maximum(rng, 1e-6)  # (N, 3) along the line of sight
    ego_t0_from_ego_t = poses.ego_a_from_ego_b(t0, t_sweep, radar.name)
    report = _report(radar.name, t0, t_sweep, ego_t0_from_ego_t, poses, enabled)
    ego_t0_from_radar = (ego_t0_from_ego_t if enabled else np.eye(4)) @ radar.ego_from_radar
    xyz = transform_points(ego_t0_from_radar, xyz_radar)
    vel = rotate_vectors(ego_t0_from_radar, vel_radar)[:, :2]
    dt = np.full(n, (int(t0) - int(t_sweep)) * 1e-6)
    return RadarSweepEgo(radar.name, xyz.astype(np.float32), vel.astype(np.float32), dt.astype(np.float32), report)
