"""This project's 3D boxes <-> mmdet3d 1.x ``LiDARInstance3DBoxes`` tensors, and rigid transforms of boxes.

This project (perception/data/frame.py, perception/visualize.py ``box_corners``):
    ``[x, y, z, w, l, h, yaw, vx, vy]``: (x, y, z) the box **centre**; size in nuScenes order, ``w`` across and
    ``l`` along the heading; yaw about +z, 0 along +x, increasing towards +y; velocity over ground (m/s).
mmdet3d 1.x ``LiDARInstance3DBoxes`` (mmdet3d/structures/bbox_3d/lidar_box3d.py, checked against the 1.4 source by
tests/integrations/test_mmdet3d_boxes.py):
    ``[x, y, z, x_size, y_size, z_size, yaw, vx, vy]``: (x, y, z) the **bottom** centre (relative origin
    (0.5, 0.5, 0)); ``x_size`` along the heading (the length), ``y_size`` across it (the width); the same yaw.

So, with no change of frame: ``mm = [x, y, z - h / 2, l, w, h, yaw, vx, vy]`` and back
``ours = [x, y, z_bottom + z_size / 2, y_size, x_size, z_size, yaw, vx, vy]``.

(mmdet3d 0.x had ``[w, l, h]`` dims and yaw 0 along -y; v1.1 info files and everything here are 1.x.)
"""
from __future__ import annotations

from typing import TypeVar

import numpy as np

# numpy arrays or torch tensors; torch is not imported here, so that ``infos`` (and perception-infer --info with
# --onnx / --engine) run without it
BoxArray = TypeVar("BoxArray")


def _copy(boxes: BoxArray) -> BoxArray:
    return boxes.clone() if hasattr(boxes, "clone") else np.array(boxes, copy=True)


def to_mmdet3d(boxes: BoxArray) -> BoxArray:
    """boxes: (G, 7 or 9) this project's convention. Returns (G, 7 or 9) ``LiDARInstance3DBoxes`` tensor rows
    (same frame, same dtype and array type)."""
    assert boxes.ndim == 2 and boxes.shape[1] in (7, 9), f"boxes must be (G, 7 or 9), got {tuple(boxes.shape)}"
    out = _copy(boxes)
    out[:, 2] = boxes[:, 2] - boxes[:, 5] / 2  # centre -> bottom centre
    out[:, 3] = boxes[:, 4]  # x_size = l
    out[:, 4] = boxes[:, 3]  # y_size = w
    return out


def from_mmdet3d(mm: BoxArray) -> BoxArray:
    """mm: (G, 7 or 9) ``LiDARInstance3DBoxes.tensor`` rows. Returns (G, 7 or 9) in this project's convention."""
    assert mm.ndim == 2 and mm.shape[1] in (7, 9), f"boxes must be (G, 7 or 9), got {tuple(mm.shape)}"
    out = _copy(mm)
    out[:, 2] = mm[:, 2] + mm[:, 5] / 2  # bottom centre -> centre
    out[:, 3] = mm[:, 4]  # w = y_size
    out[:, 4] = mm[:, 3]  # l = x_size
    return out


def wrap_angle(a: np.ndarray) -> np.ndarray:
    """Angles (rad) wrapped into (-pi, pi]."""
    return -np.angle(np.exp(-1j * np.asarray(a, np.float64)))


def transform_boxes(b_from_a: np.ndarray, boxes_a: np.ndarray) -> np.ndarray:
    """boxes_a: (G, 7 or 9) this project's convention in frame a (float, metres, rad, m/s). b_from_a: (4, 4) rigid.
    Returns (G, 7 or 9) float64 in frame b: centre transformed, yaw of the rotated heading vector (frames whose z
    axes differ by a small tilt, as lidar and ego do, keep the box upright), velocity rotated (its z taken as 0).
    Sizes are unchanged."""
    b_from_a = np.asarray(b_from_a, np.float64)
    boxes_a = np.asarray(boxes_a, np.float64)
    assert b_from_a.shape == (4, 4), f"b_from_a must be (4, 4), got {b_from_a.shape}"
    assert boxes_a.ndim == 2 and boxes_a.shape[1] in (7, 9), f"boxes must be (G, 7 or 9), got {boxes_a.shape}"
    rot, t = b_from_a[:3, :3], b_from_a[:3, 3]
    out = boxes_a.copy()
    out[:, :3] = boxes_a[:, :3] @ rot.T + t
    zeros = np.zeros(len(boxes_a))
    heading = np.stack([np.cos(boxes_a[:, 6]), np.sin(boxes_a[:, 6]), zeros], -1) @ rot.T  # (G, 3)
    out[:, 6] = np.arctan2(heading[:, 1], heading[:, 0])
    if boxes_a.shape[1] == 9:
        out[:, 7:9] = (np.stack([boxes_a[:, 7], boxes_a[:, 8], zeros], -1) @ rot.T)[:, :2]
    return out
