"""perception.visualize: previews never draw on a masked camera's tile, box edges stay inside their tile, the BEV
panel draws boxes with heading, velocity and every forecast mode, GT beside them."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from perception.data.frame import Frame
from perception.pipeline import Detections
from perception.visualize import bev_panel, clip_to_rect, draw_bev_predictions, preview_image

H, W, F = 48, 64, 40.0
FIELDS = ("x", "y", "z", "vx", "vy", "rcs", "dt", "sensor")


def _camera(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    cam = np.eye(4)
    cam[:3, :3] = [[s, -c, 0.0], [0.0, 0.0, -1.0], [c, s, 0.0]]
    cam[:3, 3] = -cam[:3, :3] @ [0.0, 0.0, 1.5]
    k = np.eye(4)
    k[:3, :3] = [[F, 0, W / 2], [0, F, H / 2], [0, 0, 1]]
    return (k @ cam).astype(np.float32)


def _frame(valid=(True, True), gt: np.ndarray | None = None) -> Frame:
    rng = np.random.default_rng(0)
    images = rng.integers(60, 200, (2, H, W, 3)).astype(np.uint8)  # texture: any drawn pixel changes it
    gt = np.zeros((0, 9), np.float32) if gt is None else gt.astype(np.float32)
    g = len(gt)
    return Frame("tok", 1_000_000, np.eye(4), images, np.stack([_camera(0.0), _camera(np.pi)]),
                 np.array(["CAM_FRONT", "CAM_BACK"]), np.array(valid), np.array([1_000_000] * 2, np.int64),
                 np.zeros((4, len(FIELDS)), np.float32), np.array(FIELDS), np.zeros(4, bool), np.zeros((0, 2), np.int64),
                 gt, np.zeros(g, np.int64), np.array(["car"] * g), np.full(g, ""), np.full(g, ""),
                 np.zeros((g, 12, 2), np.float32), np.zeros((g, 12), bool))


def _detections(boxes: np.ndarray) -> Detections:
    k = len(boxes)
    traj = boxes[:, None, None, :2] + np.linspace(0, 1, 12)[None, None, :, None] * np.array([[[[8.0, 0.0]], [[6.0, 4.0]],
                                                                                           [[6.0, -4.0]]]])
    probs = np.tile([0.6, 0.3, 0.1], (k, 1))
    return Detections("tok", 1_000_000, np.eye(4), boxes.astype(np.float32), np.full(k, 0.9, np.float32),
                      np.zeros(k, np.int64), np.array(["car"] * k), np.array(["vehicle.moving"] * k),
                      traj.astype(np.float32), probs.astype(np.float32))


CAR_AHEAD = np.array([[10.0, 1.0, 0.8, 1.9, 4.5, 1.6, 0.3, 5.0, 0.5]])
# a bus front-right, so close that its edges run far beyond CAM_FRONT's right border (towards CAM_BACK's tile)
CROSSING = np.array([[6.0, -5.0, 1.5, 2.5, 12.0, 3.0, 0.0, 0.0, 0.0]])


def _tile(img: Image.Image, i: int, tile_width: int = 400) -> np.ndarray:
    tile_h = round(H * tile_width / W)
    return np.asarray(img.convert("RGB"))[:tile_h, i * tile_width:(i + 1) * tile_width].astype(int)


def _plain(frame: Frame, i: int, tile_width: int = 400) -> np.ndarray:
    tile_h = round(H * tile_width / W)
    return np.asarray(Image.fromarray(frame.images[i]).resize((tile_width, tile_h), Image.BILINEAR)).astype(int)


def test_masked_camera_tile_stays_untouched_pixel_for_pixel():
    det = _detections(CAR_AHEAD)
    gt = CAR_AHEAD.copy()
    drawn = preview_image(_frame((True, True), gt), det, None)
    assert (_tile(drawn, 0) != _plain(_frame(), 0)).any(axis=-1).sum() > 200  # valid: box, GT, label drawn
    masked = _frame((False, True), gt)
    img = preview_image(masked, det, None)
    np.testing.assert_array_equal(_tile(img, 0), _plain(masked, 0))


def test_box_edges_stay_inside_their_tile():
    """CROSSING projects far past CAM_FRONT's right border; CAM_BACK (the next tile, facing away) must show
    nothing of it (below its caption)."""
    frame = _frame()
    img = preview_image(frame, _detections(CROSSING), None)
    front = _tile(img, 0)
    assert (front[:, -3:] != _plain(frame, 0)[:, -3:]).any()  # the box reaches the border of its own tile
    np.testing.assert_array_equal(_tile(img, 1)[16:], _plain(frame, 1)[16:])


@pytest.mark.parametrize("seed", range(5))
def test_clip_to_rect_keeps_the_part_inside(seed):
    rng = np.random.default_rng(seed)
    for _ in range(200):
        p0, p1 = rng.uniform(-300, 700, 2), rng.uniform(-300, 700, 2)
        out = clip_to_rect(tuple(p0), tuple(p1), 400, 225)
        ts = np.linspace(0, 1, 401)
        pts = p0 + ts[:, None] * (p1 - p0)
        inside = (pts[:, 0] >= 0) & (pts[:, 0] <= 400) & (pts[:, 1] >= 0) & (pts[:, 1] <= 225)
        if out is None:
            assert inside.sum() <= 1
            continue
        a, b = np.array(out)
        for q in (a, b):
            assert -1e-6 <= q[0] <= 400 + 1e-6 and -1e-6 <= q[1] <= 225 + 1e-6
            cross = (p1 - p0)[0] * (q - p0)[1] - (p1 - p0)[1] * (q - p0)[0]
            assert abs(cross) < 1e-6 * max(1.0, np.linalg.norm(p1 - p0) ** 2)  # on the segment's line
        if inside.any():  # covers every sampled inside point
            assert np.linalg.norm(b - a) >= np.linalg.norm(pts[inside][-1] - pts[inside][0]) - 1e-6


def test_bev_panel_draws_heading_velocity_modes_and_gt():
    side, rng_m = 400, 20.0
    ppm = side / (2 * rng_m)
    box = np.array([[5.0, 0.0, 0.8, 2.0, 4.0, 1.6, 0.0, 4.0, 0.0]])  # heading +x, 4 m/s forward
    det = _detections(box)
    img = np.asarray(bev_panel(side, rng_m, box, [(255, 0, 0)], ["car"], det.trajectories, det.mode_probs,
                               gt_boxes=np.array([[-10.0, 5.0, 0.8, 2.0, 4.0, 1.6, 0.0]]))).astype(int)

    def at(x, y):  # the 3x3 patch around ego (x, y)
        u, v = int(side / 2 - y * ppm), int(side / 2 - x * ppm)
        return img[v - 1:v + 2, u - 1:u + 2].reshape(-1, 3)

    black = lambda p: (p.sum(axis=1) < 100).any()  # noqa: E731
    assert black(at(5.0 + 4.0 * 0.9, 0.0))  # velocity arrow: 4 m ahead of the centre after 1 s
    red = lambda p: ((p[:, 0] > 200) & (p[:, 1] < 80)).any()  # noqa: E731
    assert red(at(6.0, 0.0)) and red(at(5.0, -1.0))  # heading line, box side
    faded = lambda p: ((p[:, 0] > 200) & (p[:, 1] > 80) & (p[:, 1] < 250)).any()  # noqa: E731
    assert faded(at(5.0 + 6.0 * 0.5, 4.0 * 0.5)) and faded(at(5.0 + 6.0 * 0.5, -4.0 * 0.5))  # the other modes
    grey = lambda p: (np.abs(p - 90).max(axis=1) < 30).any()  # noqa: E731
    assert grey(at(-10.0, 5.0 + 1.0)) and not red(at(-10.0, 6.0))  # GT box side, grey


def test_bev_snapshot_of_perception_test(tmp_path):
    frame = _frame(gt=CAR_AHEAD)
    det = _detections(CAR_AHEAD)
    draw_bev_predictions(frame, det.boxes, det.names, det.scores, det.trajectories, det.mode_probs,
                         tmp_path / "bev.png")
    assert Image.open(tmp_path / "bev.png").size == (720, 720)
