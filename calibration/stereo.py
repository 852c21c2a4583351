"""Stereo geometry: rectification of a calibrated pair, baseline, disparity <-> depth.

Rectification rotates both cameras (about their own optical centres) into one
common orientation whose x axis is the baseline, so that a 3D point projects to
the same image row in both and its column difference (disparity, pixels) is
``f * B / depth``. Works for any mounted pair, not only near-parallel ones.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calibration.rig import CalibrationError, Camera, Rig, StereoPair


@dataclass(frozen=True, eq=False)
class RectifiedPair:
    """A rectified stereo pair.

    rect_from_left / rect_from_right: (3, 3) rotations, rectified camera axes <- original camera axes.
    intrinsics: (3, 3) common K of both rectified images, size ``width`` x ``height``.
    ego_from_rect_left: (4, 4) pose of the rectified left camera in the ego frame (the right one is
    offset by ``baseline`` metres along its x axis).
    """

    left: str
    right: str
    rect_from_left: np.ndarray
    rect_from_right: np.ndarray
    intrinsics: np.ndarray
    width: int
    height: int
    baseline: float
    ego_from_rect_left: np.ndarray

    @property
    def focal(self) -> float:
        return float(self.intrinsics[0, 0])

    def homography(self, camera: Camera) -> np.ndarray:
        """(3, 3) H mapping original pixels of ``camera`` (left or right) to rectified pixels (no distortion)."""
        rot = self.rect_from_left if camera.name == self.left else self.rect_from_right
        return self.intrinsics @ rot @ np.linalg.inv(camera.intrinsics)

    def source_coordinates(self, camera: Camera) -> np.ndarray:
        """(H, W, 2) float32: for each rectified pixel (u, v), the original pixel to sample (cv2.remap /
        grid_sample maps). Undistortion, if any, is the caller's job before this."""
        u, v = np.meshgrid(np.arange(self.width, dtype=np.float64), np.arange(self.height, dtype=np.float64))
        pix = np.stack([u, v, np.ones_like(u)], axis=-1)  # (H, W, 3)
        src = pix @ np.linalg.inv(self.homography(camera)).T  # (H, W, 3)
        return (src[..., :2] / src[..., 2:3]).astype(np.float32)


def rectify(rig: Rig, pair: StereoPair) -> RectifiedPair:
    """Compute the rectification of ``pair`` (left/right cameras of ``rig``).

    The rectified x axis is the baseline direction (left -> right centre); z is the mean
    optical axis made orthogonal to it; both images share K (mean focal length, the
    left camera's principal point and size).
    """
    left, right = rig.cameras[pair.left], rig.cameras[pair.right]
    base = right.position - left.position  # (3,) ego frame
    b = float(np.linalg.norm(base))
    if b <= 0.0:
        raise CalibrationError(f"{pair.left}/{pair.right}", "baseline", b, "is zero")
    x_axis = base / b
    mean_z = left.ego_from_camera[:3, 2] + right.ego_from_camera[:3, 2]
    z_axis = mean_z - np.dot(mean_z, x_axis) * x_axis
    nz = float(np.linalg.norm(z_axis))
    if nz < 1e-6:
        raise CalibrationError(f"{pair.left}/{pair.right}", "rotation", None,
                               "optical axes are parallel to the baseline; the pair cannot be rectified")
    z_axis /= nz
    y_axis = np.cross(z_axis, x_axis)  # OpenCV axes: y = z x x (down)
    ego_from_rect = np.stack([x_axis, y_axis, z_axis], axis=1)  # (3, 3) columns = rectified axes in ego
    rect_from_left = ego_from_rect.T @ left.ego_from_camera[:3, :3]
    rect_from_right = ego_from_rect.T @ right.ego_from_camera[:3, :3]
    f = float(np.mean([left.intrinsics[0, 0], left.intrinsics[1, 1], right.intrinsics[0, 0], right.intrinsics[1, 1]]))
    k = np.array([[f, 0.0, left.intrinsics[0, 2]], [0.0, f, left.intrinsics[1, 2]], [0.0, 0.0, 1.0]])
    pose = np.eye(4)
    pose[:3, :3] = ego_from_rect
    pose[:3, 3] = left.position
    return RectifiedPair(pair.left, pair.right, rect_from_left, rect_from_right, k, left.width, left.height, b, pose)


def disparity_to_depth(disparity: np.ndarray, focal_px: float, baseline_m: float) -> np.ndarray:
    """disparity (pixels, rectified) -> depth (metres) = f * B / d; non-positive disparity -> inf."""
    d = np.asarray(disparity, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(d > 0, focal_px * baseline_m / np.where(d > 0, d, 1.0), np.inf)


def depth_to_disparity(depth: np.ndarray, focal_px: float, baseline_m: float) -> np.ndarray:
    """depth (metres, > 0) -> disparity (pixels) = f * B / z."""
    z = np.asarray(depth, dtype=np.float64)
    if np.any(z <= 0):
        raise ValueError(f"depth must be > 0 metres, got min {z.min():g}")
    return focal_px * baseline_m / z
