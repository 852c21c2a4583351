"""Tracker: IDs persist for moving objects seen from a moving ego, crossing objects keep their IDs, classes never
share a track, tracks die after max_age missed frames, and a hand-computed association."""
from __future__ import annotations

import numpy as np
import pytest

from perception.pipeline import Detections
from perception.replay.tracker import Tracker

CLASSES = ("car", "truck", "bus", "trailer", "construction_vehicle", "pedestrian", "motorcycle", "bicycle",
           "traffic_cone", "barrier")


def pose(x: float, y: float, yaw: float) -> np.ndarray:
    """global_from_ego for an ego at (x, y) heading ``yaw``."""
    g = np.eye(4)
    c, s = np.cos(yaw), np.sin(yaw)
    g[:2, :2] = [[c, -s], [s, c]]
    g[:2, 3] = [x, y]
    return g


def detections(t0_us: int, global_from_ego: np.ndarray, objects: list[tuple[str, tuple, tuple]]) -> Detections:
    """objects: (class, (x, y) global, (vx, vy) global). Boxes are written in ego@t0, as the network gives them."""
    k = len(objects)
    rot = global_from_ego[:2, :2]
    boxes = np.zeros((k, 9), np.float32)
    for i, (_, xy, v) in enumerate(objects):
        boxes[i, :2] = rot.T @ (np.asarray(xy, float) - global_from_ego[:2, 3])
        boxes[i, 2] = 0.8
        boxes[i, 3:6] = [1.9, 4.5, 1.6]
        boxes[i, 7:9] = rot.T @ np.asarray(v, float)
    labels = np.array([CLASSES.index(o[0]) for o in objects], np.int64)
    return Detections(f"f{t0_us}", t0_us, global_from_ego, boxes, np.linspace(0.9, 0.5, k).astype(np.float32)
                      if k else np.zeros(0, np.float32), labels, np.array([o[0] for o in objects], "<U32"),
                      np.full(k, "", "<U40"), np.zeros((k, 6, 12, 2), np.float32), np.full((k, 6), 1 / 6, np.float32))


def ego_pose(t: float) -> np.ndarray:
    """An ego driving at 8 m/s while turning left at 0.3 rad/s (so ego and global axes differ and change)."""
    yaw = 0.4 + 0.3 * t
    return pose(100.0 + 8.0 * t * np.cos(yaw), -50.0 + 8.0 * t * np.sin(yaw), yaw)


def test_steady_object_keeps_one_id_from_a_moving_ego():
    tracker = Tracker(CLASSES)
    rng = np.random.default_rng(0)
    ids, ego_xy = [], []
    for f in range(10):  # 12 Hz
        t = f / 12.0
        g = ego_pose(t)
        car = (120.0 + 10.0 * t * np.cos(1.0), -40.0 + 10.0 * t * np.sin(1.0))  # 10 m/s heading 1 rad
        car = tuple(np.asarray(car) + rng.normal(0.0, 0.15, 2))  # detector centre noise
        det = detections(int(1_000_000 + t * 1e6), g, [("car", car, (10 * np.cos(1.0), 10 * np.sin(1.0)))])
        ids.append(tracker.update(det))
        ego_xy.append(det.boxes[0, :2].copy())
    assert all(i.dtype == np.int64 and i.shape == (1,) for i in ids)
    assert [int(i[0]) for i in ids] == [1] * 10
    # the ego-frame positions do differ from frame to frame: association really happens in the global frame
    assert np.linalg.norm(ego_xy[-1] - ego_xy[0]) > 1.0


def test_crossing_objects_keep_their_ids():
    """Two cars change lanes in opposite directions, B 2 m ahead of A, at 4 Hz. Per frame each moves 2.5 m
    forward, so without moving the detections back by their velocity A's detection would land next to B's
    track (0.5 m) and steal its ID."""
    tracker = Tracker(CLASSES)
    seen = []
    for f in range(12):
        t = f * 0.25
        a = (10.0 * t, 2.0 * t)
        b = (2.0 + 10.0 * t, 3.5 - 2.0 * t)
        det = detections(int(t * 1e6), ego_pose(t), [("car", a, (10.0, 2.0)), ("car", b, (10.0, -2.0))][::(-1) ** f])
        ids = tracker.update(det)
        seen.append(ids if f % 2 == 0 else ids[::-1])  # back to (A, B) order
    assert [tuple(map(int, s)) for s in seen] == [(1, 2)] * 12


def test_a_different_class_never_inherits_an_id():
    tracker = Tracker(CLASSES)
    g = pose(0.0, 0.0, 0.0)
    assert tracker.update(detections(0, g, [("car", (10.0, 0.0), (0.0, 0.0))])).tolist() == [1]
    # a truck exactly where the car was: same place, other class -> new track; the car track coasts
    assert tracker.update(detections(100_000, g, [("truck", (10.0, 0.0), (0.0, 0.0))])).tolist() == [2]
    # the car comes back next to both: it takes its own ID, the truck keeps its own
    ids = tracker.update(detections(200_000, g, [("truck", (10.0, 0.1), (0.0, 0.0)), ("car", (10.0, 0.0), (0, 0))]))
    assert ids.tolist() == [2, 1]
    # control: the same class at the same place does continue the track
    assert tracker.update(detections(300_000, g, [("car", (10.0, 0.2), (0.0, 0.0))])).tolist() == [1]


@pytest.mark.parametrize("missed, same_id", [(3, True), (4, False)])
def test_track_dies_after_more_than_max_age_missed_frames(missed, same_id):
    """A car at 10 m/s, 2 Hz: after 3 missed frames it is 20 m further on; only the coasting track (moved by its
    velocity every missed frame) is there to meet it."""
    tracker = Tracker(CLASSES, max_age_frames=3)
    g = pose(0.0, 0.0, 0.0)
    f = 0
    for _ in range(3):
        ids = tracker.update(detections(f * 500_000, g, [("car", (5.0 * f, 0.0), (10.0, 0.0))]))
        f += 1
    assert ids.tolist() == [1]
    for _ in range(missed):
        assert tracker.update(detections(f * 500_000, g, [])).shape == (0,)
        f += 1
    ids = tracker.update(detections(f * 500_000, g, [("car", (5.0 * f, 0.0), (10.0, 0.0))]))
    assert ids.tolist() == ([1] if same_id else [2])
    assert tracker.num_tracks == 1


def test_hand_computed_association():
    """Frame 1: ego at the origin, pedestrians A (10, 0) and B (10, 2) global -> IDs 1, 2.
    Frame 2, 0.5 s later: ego at (5, 0) turned +90 deg. Detection D at global (10, 0.9) moving (0, -2) m/s
    global (ego axes: (-2, 0)): moved back by v*dt it sits at (10, 1.9): 0.1 m from B, 1.9 m from A -> B's ID,
    although it is now nearest to A. (Velocity not rotated to global: (11, 0.9), 1.35 m / 1.49 m from A / B, no
    match within the 1 m pedestrian threshold; moved forward instead of back: (10, -0.1) -> A.)
    Detection E at (10, -0.5), still: 0.5 m from A -> A's ID."""
    tracker = Tracker(CLASSES)
    peds = [("pedestrian", (10, 0), (0, 0)), ("pedestrian", (10, 2), (0, 0))]
    ids = tracker.update(detections(0, pose(0, 0, 0), peds))
    assert ids.tolist() == [1, 2]
    peds = [("pedestrian", (10, 0.9), (0, -2)), ("pedestrian", (10, -0.5), (0, 0))]
    det = detections(500_000, pose(5, 0, np.pi / 2), peds)
    np.testing.assert_allclose(det.boxes[0, [0, 1, 7, 8]], [0.9, -5.0, -2.0, 0.0], atol=1e-6)  # ego frame, as stated
    assert tracker.update(det).tolist() == [2, 1]


def test_greedy_takes_the_nearest_pair_first():
    """Tracks P1 (0, 0), P2 (0, 0.6). Still detections d1 (score 0.9) at (0, 0.35): 0.35 m from P1, 0.25 m from P2;
    d2 (score 0.5) at (0, 0.7): 0.7 m from P1, 0.1 m from P2. Nearest pair first: d2-P2 (0.1), then d1-P1 (0.35).
    (CenterPoint's score order would give d1 -> P2, d2 -> P1: the two pedestrians would swap IDs.)"""
    tracker = Tracker(CLASSES)
    g = pose(0, 0, 0)
    tracker.update(detections(0, g, [("pedestrian", (0, 0), (0, 0)), ("pedestrian", (0, 0.6), (0, 0))]))
    ids = tracker.update(detections(100_000, g, [("pedestrian", (0, 0.35), (0, 0)), ("pedestrian", (0, 0.7), (0, 0))]))
    assert ids.tolist() == [1, 2]


def test_empty_frames_first_frame_and_unique_ids():
    tracker = Tracker(CLASSES)
    g = pose(3, 4, 1.0)
    empty = tracker.update(detections(0, g, []))
    assert empty.dtype == np.int64 and empty.shape == (0,)
    ids = tracker.update(detections(100_000, g, [("car", (0, 0), (0, 0)), ("bus", (50, 0), (0, 0)),
                                                 ("barrier", (20, 5), (0, 0))]))
    assert ids.tolist() == [1, 2, 3]
    tracker.reset()  # IDs keep counting after a reset
    assert tracker.update(detections(0, g, [("car", (0, 0), (0, 0))])).tolist() == [4]
    with pytest.raises(ValueError, match="before the previous"):
        tracker.update(detections(-1, g, []))


def test_thresholds_are_validated():
    with pytest.raises(ValueError, match="no distance threshold"):
        Tracker(("car", "forklift"))
    assert Tracker(("car", "forklift"), distance_thresholds={"forklift": 2.0}).num_tracks == 0
    with pytest.raises(ValueError, match="not in class_names"):
        Tracker(("car",), distance_thresholds={"tram": 2.0})
