"""This project's box convention against mmdet3d's ``LiDARInstance3DBoxes`` as the reference: same corners, same
BEV footprints, same points inside (mmdet3d's own op), and the info file's boxes recovered from the Frame's."""
from __future__ import annotations

import numpy as np
import pytest

mmdet3d = pytest.importorskip("mmdet3d", reason="mmdet3d lives in .venv-mmdet3d: run `make test-mmdet3d`")

import torch
from mmcv.ops import points_in_boxes_cpu
from mmdet3d.structures import LiDARInstance3DBoxes
from small_model import small_config

from calibration.transforms import invert
from perception.integrations.mmdet3d.boxes import (
    from_mmdet3d,
    to_mmdet3d,
    transform_boxes,
)
from perception.integrations.mmdet3d.infos import InfoFrames
from perception.visualize import box_corners

DEMO_PKL = "n015-2018-07-24-11-22-45+0800.pkl"
DEMO_LIDAR = "n015-2018-07-24-11-22-45+0800__LIDAR_TOP__1532402927647951.pcd.bin"


def _random_boxes(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.uniform(-50, 50, (n, 2)), rng.uniform(-2, 2, (n, 1)),  # centre
                           rng.uniform(0.3, 3, (n, 1)), rng.uniform(0.3, 12, (n, 1)), rng.uniform(0.5, 4, (n, 1)),
                           rng.uniform(-np.pi, np.pi, (n, 1)), rng.normal(0, 5, (n, 2))], 1)  # w l h yaw vx vy


def _same_point_sets(a: np.ndarray, b: np.ndarray, atol: float) -> None:
    """a, b: (G, K, D). Each box's K points equal as sets (order-free): every point of one has a partner in the
    other within atol, and the matching is one-to-one."""
    d = np.linalg.norm(a[:, :, None] - b[:, None], axis=-1)  # (G, K, K)
    assert (d.min(2) < atol).all() and (d.min(1) < atol).all()
    assert all(len(set(row)) == a.shape[1] for row in d.argmin(2))


def test_golden_box():
    """By hand: centre (10, 5, 1), w 2, l 4, h 1.5, heading +y (yaw pi/2): the box spans x 9..11 (its width),
    y 3..7 (its length), z 0.25..1.75; mmdet3d stores the bottom centre and [l, w, h]."""
    ours = np.array([[10.0, 5.0, 1.0, 2.0, 4.0, 1.5, np.pi / 2, 0.5, -1.0]])
    mm = to_mmdet3d(ours)
    np.testing.assert_allclose(mm, [[10.0, 5.0, 0.25, 4.0, 2.0, 1.5, np.pi / 2, 0.5, -1.0]])
    boxes = LiDARInstance3DBoxes(torch.from_numpy(mm), box_dim=9)
    corners = boxes.corners.numpy()[0]
    assert set(map(tuple, corners.round(6))) == {(x, y, z) for x in (9.0, 11.0) for y in (3.0, 7.0)
                                                for z in (0.25, 1.75)}
    np.testing.assert_allclose(boxes.gravity_center.numpy(), [[10.0, 5.0, 1.0]])
    np.testing.assert_allclose(boxes.bottom_height.numpy(), [0.25])
    np.testing.assert_allclose(boxes.top_height.numpy(), [1.75])
    np.testing.assert_allclose(from_mmdet3d(mm), ours)


def test_corners_and_bev_footprints_match_box_corners():
    ours = _random_boxes(200)
    boxes = LiDARInstance3DBoxes(torch.from_numpy(to_mmdet3d(ours)), box_dim=9)
    ref = box_corners(ours)  # (G, 8, 3): this project's geometry
    _same_point_sets(boxes.corners.double().numpy(), ref, atol=1e-5)  # LiDARInstance3DBoxes stores float32
    # BEV footprints: mmdet3d's bev = [x, y, x_size, y_size, yaw] (XYWHR) as a rectangle vs our top face
    bev = boxes.bev.double().numpy()
    c, s = np.cos(bev[:, 4])[:, None], np.sin(bev[:, 4])[:, None]
    dx = np.array([1, 1, -1, -1])[None] * bev[:, 2:3] / 2
    dy = np.array([1, -1, -1, 1])[None] * bev[:, 3:4] / 2
    footprint = np.stack([bev[:, :1] + c * dx - s * dy, bev[:, 1:2] + s * dx + c * dy], -1)  # (G, 4, 2)
    _same_point_sets(footprint, ref[:, :4, :2], atol=1e-5)
    np.testing.assert_allclose(boxes.gravity_center.double().numpy(), ours[:, :3], atol=1e-5)
    np.testing.assert_allclose(boxes.dims.double().numpy(), ours[:, [4, 3, 5]], atol=1e-5)  # [l, w, h]
    np.testing.assert_allclose(boxes.yaw.double().numpy(), ours[:, 6], atol=1e-6)
    np.testing.assert_allclose(from_mmdet3d(to_mmdet3d(ours)), ours, atol=1e-12)


def test_swapped_sizes_are_caught():
    """The check above is not blind to the classic mistake (w and l swapped)."""
    ours = _random_boxes(20, seed=1)
    wrong = ours.copy()
    wrong[:, 2] -= wrong[:, 5] / 2  # bottom centre, but dims left as [w, l, h]
    boxes = LiDARInstance3DBoxes(torch.from_numpy(wrong), box_dim=9)
    d = np.linalg.norm(boxes.corners.double().numpy()[:, :, None] - box_corners(ours)[:, None], axis=-1)
    assert (d.min(2) > 1e-3).any()


def test_rigid_transform_commutes_with_corners():
    """transform_boxes (used to write predictions in the lidar frame) moves the corners rigidly, for a rotation
    about z (tilted frames are handled as upright boxes, tested in test_mmdet3d_infos)."""
    ours = _random_boxes(30, seed=2)
    a, t = 1.1, np.array([0.9, -0.2, 1.8])
    b_from_a = np.eye(4)
    b_from_a[:3, :3] = [[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]
    b_from_a[:3, 3] = t
    moved = transform_boxes(b_from_a, ours)
    expect = box_corners(ours) @ b_from_a[:3, :3].T + t
    _same_point_sets(LiDARInstance3DBoxes(torch.from_numpy(to_mmdet3d(moved)), box_dim=9).corners.double().numpy(),
                     expect, atol=1e-5)
    np.testing.assert_allclose(moved[:, 7:9], ours[:, 7:9] @ b_from_a[:2, :2].T, atol=1e-9)


# -- the real key frame (skipped without ../shared/realdata) ------------------------------------------------


@pytest.fixture(scope="module")
def demo(realdata):
    frames = InfoFrames(small_config(), realdata / "nuscenes_demo" / DEMO_PKL, data_prefix={})
    return {"frames": frames, "frame": frames[0], "dir": realdata / "nuscenes_demo"}


def test_frame_boxes_back_in_lidar_equal_the_info_boxes(demo):
    """What FusionDetector.predict does with output_frame='lidar' (ego -> lidar by inv(lidar2ego), then
    LiDARInstance3DBoxes) gives back mmdet3d's own reading of the info file (NuScenesDataset: origin at the
    gravity centre, converted to bottom): the box convention and the frame change agree with mmdet3d's."""
    frames, frame = demo["frames"], demo["frame"]
    inst = [i for i in frames.entries[0]["instances"] if i["bbox_label_3d"] >= 0]
    ref = LiDARInstance3DBoxes(torch.tensor([i["bbox_3d"] for i in inst], dtype=torch.float64),
                               box_dim=7, origin=(0.5, 0.5, 0.5))
    lidar = transform_boxes(invert(frames.ego_from_lidar(0)), frame.gt_boxes.astype(np.float64))
    ours = LiDARInstance3DBoxes(torch.from_numpy(to_mmdet3d(lidar)), box_dim=9)
    np.testing.assert_allclose(ours.tensor[:, :6].numpy(), ref.tensor[:, :6].numpy(), atol=1e-4)
    dyaw = np.angle(np.exp(1j * (ours.tensor[:, 6].numpy() - ref.tensor[:, 6].numpy())))
    assert np.abs(dyaw).max() < 2e-3  # the 1.4 deg lidar tilt, both ways (test_mmdet3d_infos)
    _same_point_sets(ours.corners.numpy(), ref.corners.numpy(), atol=0.03)


def test_mmdet3d_points_in_boxes_agree_on_the_real_sweep(demo):
    """mmcv's compiled points-in-boxes op (the CPU one: ``LiDARInstance3DBoxes.points_in_boxes_all`` calls the
    CUDA kernel whatever the device) on the adapter's ego boxes and the sweep carried to ego counts the same
    points as this project's geometry (a Python loop in each box's frame)."""
    frames, frame = demo["frames"], demo["frame"]
    pts = np.fromfile(demo["dir"] / DEMO_LIDAR, np.float32).reshape(-1, 5)[:, :3].astype(np.float64)
    lidar2ego = frames.ego_from_lidar(0)
    pts_ego = pts @ lidar2ego[:3, :3].T + lidar2ego[:3, 3]
    boxes = LiDARInstance3DBoxes(torch.from_numpy(to_mmdet3d(frame.gt_boxes[:, :7].astype(np.float32))), box_dim=7)
    inside = points_in_boxes_cpu(torch.from_numpy(pts_ego).float()[None], boxes.tensor[None])  # (1, P, G) 0/1
    counts_mm = inside[0].sum(0).numpy()
    b = frame.gt_boxes.astype(np.float64)
    counts = []
    for x, y, z, w, l, h, yaw in b[:, :7]:
        d = pts_ego - [x, y, z]
        along, across = np.cos(yaw) * d[:, 0] + np.sin(yaw) * d[:, 1], -np.sin(yaw) * d[:, 0] + np.cos(yaw) * d[:, 1]
        counts.append(((np.abs(along) < l / 2) & (np.abs(across) < w / 2) & (np.abs(d[:, 2]) < h / 2)).sum())
    assert counts_mm.sum() > 900
    assert np.abs(counts_mm - np.array(counts)).sum() <= 3  # float32 points exactly on a face may go either way
