"""Track IDs across replay frames: CenterPoint's greedy centre-distance tracker (Yin et al., CVPR 2021,
``tools/nusc_tracking/pub_tracker.py``).

Each frame, every detection's centre is moved *back* by its predicted velocity over the time since the
previous frame and compared, in the global frame, with the tracks' positions at that previous frame. Pairs
of the same class closer than a per-class threshold are matched greedily by **ascending distance over all
pairs** (CenterPoint instead lets detections in descending score order each take their nearest free track;
the global nearest-first order is the same when objects are far apart and does not let a high-score
detection steal the track of a closer one when two objects cross). Unmatched detections start new tracks;
a track that stays unmatched coasts (its position moved forward by its last velocity, as in CenterPoint)
and dies once it has been unmatched for more than ``max_age_frames`` consecutive frames.

Association is in the global frame because the ego moves: the same parked car has different ego-frame
coordinates in every frame. Only x, y are used (CenterPoint does the same); ego roll/pitch are ignored.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from perception.pipeline import Detections

# Metres between a detection moved back by its velocity and a track's previous position. The first seven
# are CenterPoint's nuScenes values (``NUSCENE_CLS_VELOCITY_ERROR``). The other three are ours:
# construction vehicles move slowly and are large, so they take the truck value; barriers and cones are
# static (the distance is pure localisation error) and stand ~1-2 m apart in a row, so 1 m (the pedestrian
# value) keeps neighbours apart while tolerating the detector's centre noise.
DEFAULT_DISTANCE_THRESHOLDS: dict[str, float] = {
    "car": 4.0, "truck": 4.0, "bus": 5.5, "trailer": 3.0, "pedestrian": 1.0, "motorcycle": 13.0,
    "bicycle": 3.0, "construction_vehicle": 4.0, "barrier": 1.0, "traffic_cone": 1.0,
}


class Tracker:
    """Greedy centre-distance tracker. ``update`` once per frame, in increasing ``t0``.

    class_names: the classes that ``Detections.labels`` index. distance_thresholds: per-class overrides of
    ``DEFAULT_DISTANCE_THRESHOLDS`` (metres); every class must end up with a threshold.
    """

    def __init__(self, class_names: Sequence[str], max_age_frames: int = 3,
                 distance_thresholds: Mapping[str, float] | None = None) -> None:
        if max_age_frames < 0:
            raise ValueError(f"Tracker: max_age_frames must be >= 0, got {max_age_frames}")
        self.class_names = tuple(class_names)
        thresholds = {**DEFAULT_DISTANCE_THRESHOLDS, **dict(distance_thresholds or {})}
        unknown = sorted(set(dict(distance_thresholds or {})) - set(self.class_names))
        if unknown:
            raise ValueError(f"Tracker: distance_thresholds name classes {unknown} that are not in "
                             f"class_names {list(self.class_names)}")
        missing = [c for c in self.class_names if c not in thresholds]
        if missing:
            raise ValueError(f"Tracker: no distance threshold for classes {missing}; pass "
                             f"distance_thresholds={{{missing[0]!r}: metres, ...}}")
        self.max_age_frames = int(max_age_frames)
        self._threshold = np.array([float(thresholds[c]) for c in self.class_names])  # (C,) metres
        self._next_id = 1
        self.reset()

    def reset(self) -> None:
        """Forget every track (IDs keep counting up, so IDs stay unique over the run)."""
        self._ids = np.zeros(0, np.int64)  # (T,)
        self._xy = np.zeros((0, 2))  # (T, 2) global metres, at the previous update's t0
        self._vel = np.zeros((0, 2))  # (T, 2) global m/s, last matched velocity
        self._labels = np.zeros(0, np.int64)  # (T,)
        self._misses = np.zeros(0, np.int64)  # (T,) consecutive unmatched frames
        self._t0: int | None = None

    @property
    def num_tracks(self) -> int:
        """Tracks alive (matched in the last frame or coasting)."""
        return len(self._ids)

    def update(self, det: Detections) -> np.ndarray:
        """Assign track IDs to ``det``. Returns (K,) int64, in the order of ``det`` (IDs start at 1)."""
        k = len(det)
        g = np.asarray(det.global_from_ego, dtype=np.float64)
        assert g.shape == (4, 4), f"global_from_ego must be (4, 4), got {g.shape}"
        boxes = np.asarray(det.boxes, dtype=np.float64).reshape(k, 9)  # [x, y, z, w, l, h, yaw, vx, vy]
        labels = np.asarray(det.labels, dtype=np.int64).reshape(k)
        if k and (labels.min() < 0 or labels.max() >= len(self.class_names)):
            raise ValueError(f"Tracker.update({det.sample_token}): labels {sorted(set(labels.tolist()))} out of "
                             f"range for {len(self.class_names)} classes")
        if self._t0 is not None and int(det.t0) < self._t0:
            raise ValueError(f"Tracker.update({det.sample_token}): t0 {int(det.t0)} us is before the previous "
                             f"frame's {self._t0} us; feed frames in time order or call reset()")
        dt = 0.0 if self._t0 is None else (int(det.t0) - self._t0) * 1e-6  # seconds
        xy = boxes[:, :3] @ g[:3, :3].T[:, :2] + g[:2, 3]  # (K, 2) global centres
        vel = boxes[:, 7:9] @ g[:2, :2].T  # (K, 2) global velocity (ego axes rotated about z)

        # Coasting prediction is applied after matching, CenterPoint-style: tracks sit at their position
        # at the previous t0 and detections are moved back by dt.
        back = xy - vel * dt  # (K, 2)
        dist = np.linalg.norm(back[:, None, :] - self._xy[None, :, :], axis=-1)  # (K, T)
        ok = (labels[:, None] == self._labels[None, :]) & (dist <= self._threshold[labels][:, None])
        det_of_track = np.full(len(self._ids), -1, np.int64)
        ids = np.zeros(k, np.int64)
        if ok.any():
            cand_d, cand_t = np.nonzero(ok)
            # nearest first; on equal distance the higher score wins (stable sort keeps det order otherwise)
            order = np.lexsort((-np.asarray(det.scores, np.float64)[cand_d], dist[cand_d, cand_t]))
            for d, t in zip(cand_d[order], cand_t[order]):
                if ids[d] == 0 and det_of_track[t] < 0:
                    ids[d] = self._ids[t]
                    det_of_track[t] = d

        # Unmatched tracks coast (moved forward by their velocity) until they have missed > max_age frames.
        coast = det_of_track < 0
        self._misses[coast] += 1
        self._xy[coast] += self._vel[coast] * dt
        alive = coast & (self._misses <= self.max_age_frames)
        matched = np.flatnonzero(~coast)
        new = np.flatnonzero(ids == 0)
        ids[new] = np.arange(self._next_id, self._next_id + len(new))
        self._next_id += len(new)

        keep_det = np.r_[det_of_track[matched], new]  # detections that continue or start a track
        self._ids = np.r_[self._ids[alive], ids[keep_det]]
        self._xy = np.r_[self._xy[alive], xy[keep_det]].reshape(-1, 2)
        self._vel = np.r_[self._vel[alive], vel[keep_det]].reshape(-1, 2)
        self._labels = np.r_[self._labels[alive], labels[keep_det]]
        self._misses = np.r_[self._misses[alive], np.zeros(len(keep_det), np.int64)]
        self._t0 = int(det.t0)
        return ids
