"""The key frame's lidar as a training/evaluation signal: LIDAR_TOP returns carried into ego@t0.

Lidar never reaches the network (the product has no lidar); it gives the camera depth head its targets
(``perception.train.depth_targets``) and the depth metric of ``perception-test`` (``perception.eval.depth``).
The points are carried from the lidar frame through the lidar's own ego pose into ego@t0 (``data.sync``), so the
camera projections through each camera's capture-time ``img_from_ego`` see the static world where the images do.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibration.sync import PoseStream, SyncError
from perception.data.io import SensorFileError, read_lidar_bin


@dataclass(frozen=True)
class LidarShot:
    """One lidar sweep as a Frame input.

    ego_from_lidar: (4, 4) the lidar's mounting. points: (L, >= 3) float32 x y z (first columns) in the lidar
    frame, or a nuScenes ``.pcd.bin`` file. timestamp: capture time, µs."""

    ego_from_lidar: np.ndarray
    points: np.ndarray | str | Path
    timestamp: int


def lidar_to_ego(shot: LidarShot, t0: int, poses: PoseStream, sync: bool = True) -> tuple[np.ndarray, list[str]]:
    """The sweep's points in ego@t0 as (L, 3) float32, and issues ("file: reason; what was done").

    With ``sync`` the points go through the lidar's ego pose at its timestamp (ego@t0 <- global <- ego@t_lidar);
    without, the lidar is treated as captured at t0. An unreadable file or a pose outside the stream gives no
    points (the frame has no depth targets) and an issue; non-finite points are dropped (reported)."""
    name = str(shot.points) if isinstance(shot.points, (str, Path)) else "(lidar points)"
    try:
        xyz = read_lidar_bin(shot.points).points[:, :3] if isinstance(shot.points, (str, Path)) \
            else np.asarray(shot.points, np.float32)[:, :3]
        m = np.asarray(shot.ego_from_lidar, np.float64)
        if sync:
            m = np.linalg.inv(poses.at(t0)) @ poses.at(int(shot.timestamp), "LIDAR_TOP") @ m
    except SensorFileError as err:
        return np.zeros((0, 3), np.float32), [f"{err.path}: {err.problem}; no lidar depth targets"]
    except SyncError as err:
        return np.zeros((0, 3), np.float32), [f"{err}; no lidar depth targets"]
    issues = []
    finite = np.isfinite(xyz).all(axis=1)
    if not finite.all():
        issues.append(f"{name}: {int((~finite).sum())} non-finite lidar points dropped")
        xyz = xyz[finite]
    out = xyz.astype(np.float64) @ m[:3, :3].T + m[:3, 3]
    return out.astype(np.float32), issues
