"""Rigid transforms (SE(3)) on numpy and torch, quaternions and pose interpolation.

Conventions (nuScenes):
- A transform is a 4x4 homogeneous matrix named ``a_from_b``: it maps points
  expressed in frame ``b`` into frame ``a``. Chains read right to left:
  ``img_from_ego = img_from_cam @ cam_from_ego``.
- Quaternions are ``[w, x, y, z]`` (scalar first), as in nuScenes tables and
  ``pyquaternion``.
- Translations are metres; timestamps are integer microseconds.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:  # torch is imported by the torch functions' callers; the numpy side (and the runtimes) need none
    import torch

# ---------------------------------------------------------------------------
# Quaternions and rotation matrices
# ---------------------------------------------------------------------------


def quaternion_to_matrix(q_wxyz: Sequence[float]) -> np.ndarray:
    """q_wxyz: (4,) unit quaternion [w, x, y, z]. Returns (3, 3) float64 rotation.

    The quaternion is normalised first; callers that must reject non-unit input
    (the rig validator) check the norm before calling this. Closed form (equal to pyquaternion's
    ``rotation_matrix``, tested), because data loading calls it for every sensor of every frame.
    """
    q = np.asarray(q_wxyz, dtype=np.float64)
    assert q.shape == (4,), f"quaternion must have 4 elements [w, x, y, z], got shape {q.shape}"
    w, x, y, z = q / np.sqrt(q @ q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def quaternions_to_matrices(q_wxyz: np.ndarray) -> np.ndarray:
    """(N, 4) quaternions [w, x, y, z] -> (N, 3, 3) rotations (normalised first); vectorised."""
    q = np.asarray(q_wxyz, dtype=np.float64)
    assert q.ndim == 2 and q.shape[1] == 4, f"quaternions must be (N, 4), got {q.shape}"
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
                     2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
                     2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], axis=1).reshape(-1, 3, 3)


def matrix_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """rotation: (3, 3) orthonormal, det +1. Returns (4,) float64 [w, x, y, z] with w >= 0."""
    rotation = np.asarray(rotation, dtype=np.float64)
    assert rotation.shape == (3, 3), f"rotation must be (3, 3), got {rotation.shape}"
    from pyquaternion import Quaternion  # imported here: a command's --help must not need it

    # pyquaternion checks orthogonality at 1e-7 by default; calibration files
    # carry ~1e-6 rounding, so re-orthonormalise (nearest rotation) first.
    q = Quaternion(matrix=nearest_rotation(rotation)).elements
    return q if q[0] >= 0 else -q


def nearest_rotation(matrix: np.ndarray) -> np.ndarray:
    """matrix: (3, 3). Returns the closest rotation matrix in the Frobenius sense (SVD)."""
    u, _, vt = np.linalg.svd(np.asarray(matrix, dtype=np.float64))
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def yaw_to_quaternion(yaw: float) -> np.ndarray:
    """Rotation about +z by ``yaw`` radians as [w, x, y, z]."""
    return np.array([np.cos(yaw / 2.0), 0.0, 0.0, np.sin(yaw / 2.0)])


def rotation_angle(rotation: np.ndarray) -> float:
    """Angle in radians of a (3, 3) rotation (geodesic distance to identity)."""
    c = (np.trace(rotation) - 1.0) / 2.0
    return float(np.arccos(np.clip(c, -1.0, 1.0)))


# ---------------------------------------------------------------------------
# SE(3) on numpy
# ---------------------------------------------------------------------------


def make_transform(rotation: np.ndarray | Sequence[float], translation: Sequence[float]) -> np.ndarray:
    """Build a (4, 4) float64 ``a_from_b`` from b's pose in a.

    rotation: (4,) quaternion [w, x, y, z] or (3, 3) matrix (orientation of b in a).
    translation: (3,) metres, position of b's origin in a.
    """
    rotation = np.asarray(rotation, dtype=np.float64)
    t = np.asarray(translation, dtype=np.float64)
    assert t.shape == (3,), f"translation must be (3,), got {t.shape}"
    out = np.eye(4)
    out[:3, :3] = quaternion_to_matrix(rotation) if rotation.shape == (4,) else rotation
    out[:3, 3] = t
    return out


def invert(a_from_b: np.ndarray) -> np.ndarray:
    """(4, 4) rigid transform -> its inverse ``b_from_a`` (exact for rigid, no general inverse)."""
    a_from_b = np.asarray(a_from_b, dtype=np.float64)
    assert a_from_b.shape == (4, 4), f"expected (4, 4), got {a_from_b.shape}"
    r = a_from_b[:3, :3]
    out = np.eye(4)
    out[:3, :3] = r.T
    out[:3, 3] = -r.T @ a_from_b[:3, 3]
    return out


def transform_points(a_from_b: np.ndarray, points_b: np.ndarray) -> np.ndarray:
    """a_from_b: (4, 4). points_b: (N, 3) in frame b. Returns (N, 3) in frame a (dtype of points)."""
    points_b = np.asarray(points_b)
    assert points_b.ndim == 2 and points_b.shape[1] == 3, f"points must be (N, 3), got {points_b.shape}"
    m = np.asarray(a_from_b, dtype=np.float64)
    out = points_b.astype(np.float64) @ m[:3, :3].T + m[:3, 3]
    return out.astype(points_b.dtype if points_b.dtype.kind == "f" else np.float64, copy=False)


def rotate_vectors(a_from_b: np.ndarray, vectors_b: np.ndarray) -> np.ndarray:
    """Rotate free vectors (velocities, directions) (N, 3) from b to a; translation ignored."""
    vectors_b = np.asarray(vectors_b)
    assert vectors_b.ndim == 2 and vectors_b.shape[1] == 3, f"vectors must be (N, 3), got {vectors_b.shape}"
    out = vectors_b.astype(np.float64) @ np.asarray(a_from_b, dtype=np.float64)[:3, :3].T
    return out.astype(vectors_b.dtype if vectors_b.dtype.kind == "f" else np.float64, copy=False)


def project_points(img_from_frame: np.ndarray, points: np.ndarray) -> np.ndarray:
    """img_from_frame: (4, 4) with ``M @ [x, y, z, 1] = [u*d, v*d, d, 1]``.
    points: (N, 3) metres in that frame. Returns (N, 3) float64: u, v pixels and depth d metres.

    Points at or behind the camera (d <= 0) get u = v = NaN so that they cannot
    be mistaken for valid pixels; their depth is kept so callers can report it.
    """
    points = np.asarray(points, dtype=np.float64)
    assert points.ndim == 2 and points.shape[1] == 3, f"points must be (N, 3), got {points.shape}"
    m = np.asarray(img_from_frame, dtype=np.float64)
    assert m.shape == (4, 4), f"img_from_frame must be (4, 4), got {m.shape}"
    hom = points @ m[:3, :3].T + m[:3, 3]  # (N, 3): u*d, v*d, d
    depth = hom[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = hom[:, :2] / depth[:, None]
    uv[depth <= 0] = np.nan
    return np.concatenate([uv, depth[:, None]], axis=1)


def intrinsics_to_4x4(intrinsics: np.ndarray) -> np.ndarray:
    """(3, 3) K -> (4, 4) ``img_from_cam`` with ``[u*d, v*d, d, 1]`` output convention."""
    k = np.asarray(intrinsics, dtype=np.float64)
    assert k.shape == (3, 3), f"intrinsics must be (3, 3), got {k.shape}"
    out = np.eye(4)
    out[:3, :3] = k
    return out


# ---------------------------------------------------------------------------
# SE(3) on torch (batched; used by the network and the runtime graph)
# ---------------------------------------------------------------------------


def transform_points_torch(a_from_b: torch.Tensor, points_b: torch.Tensor) -> torch.Tensor:
    """a_from_b: (..., 4, 4). points_b: (..., N, 3) in b. Returns (..., N, 3) in a."""
    assert a_from_b.shape[-2:] == (4, 4), f"expected (..., 4, 4), got {tuple(a_from_b.shape)}"
    assert points_b.shape[-1] == 3, f"expected (..., N, 3), got {tuple(points_b.shape)}"
    rot = a_from_b[..., :3, :3]  # (..., 3, 3)
    trans = a_from_b[..., :3, 3]  # (..., 3)
    return points_b @ rot.transpose(-1, -2) + trans.unsqueeze(-2)


def invert_torch(a_from_b: torch.Tensor) -> torch.Tensor:
    """(..., 4, 4) rigid -> (..., 4, 4) inverse."""
    import torch

    rot_t = a_from_b[..., :3, :3].transpose(-1, -2)
    out = torch.zeros_like(a_from_b)
    out[..., :3, :3] = rot_t
    out[..., :3, 3] = -(rot_t @ a_from_b[..., :3, 3:4]).squeeze(-1)
    out[..., 3, 3] = 1.0
    return out


# ---------------------------------------------------------------------------
# Pose interpolation
# ---------------------------------------------------------------------------


def interpolate_pose(pose_a: np.ndarray, pose_b: np.ndarray, alpha: float) -> np.ndarray:
    """Interpolate two (4, 4) rigid poses: linear translation, slerp rotation.

    alpha = 0 gives pose_a, 1 gives pose_b; values outside [0, 1] extrapolate
    (constant linear and angular velocity).
    """
    from pyquaternion import Quaternion

    qa = Quaternion(matrix=nearest_rotation(pose_a[:3, :3]))
    qb = Quaternion(matrix=nearest_rotation(pose_b[:3, :3]))
    if np.dot(qa.elements, qb.elements) < 0.0:  # shortest arc
        qb = -qb
    # q(alpha) = qa * (qa^-1 qb)^alpha also extrapolates, unlike Quaternion.slerp.
    delta = qa.inverse * qb
    q = qa * (delta ** alpha) if abs(delta.angle) > 1e-12 else qa
    out = np.eye(4)
    out[:3, :3] = q.rotation_matrix
    out[:3, 3] = (1.0 - alpha) * pose_a[:3, 3] + alpha * pose_b[:3, 3]
    return out
