"""A simple spinning lidar (HDL-32E-like, LIDAR_TOP of nuScenes) ray-cast against the ground and every box.

It exists so that ``num_lidar_pts`` of the annotations is honest (the devkit drops GT boxes with no lidar and
no radar points) and so that visibility levels have a measured basis. One sweep per key frame, instantaneous.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from perception.data.synthetic.world import Snapshot

ELEVATIONS_DEG = -30.67 + 1.333 * np.arange(32)  # HDL-32E beam elevations
AZIMUTH_STEPS = 1084
MAX_RANGE = 70.0


@njit(cache=True)
def _slab(ox, oy, oz, dx, dy, dz, box):
    """Ray (o + t d) against an oriented box [x, y, z, l, w, h, yaw]: (t_enter, t_exit) or (inf, -inf)."""
    c, s = np.cos(box[6]), np.sin(box[6])
    rx, ry, rz = ox - box[0], oy - box[1], oz - box[2]
    lo = np.array([c * rx + s * ry, -s * rx + c * ry, rz])
    ld = np.array([c * dx + s * dy, -s * dx + c * dy, dz])
    half = np.array([box[3] / 2, box[4] / 2, box[5] / 2])
    t0, t1 = -np.inf, np.inf
    for k in range(3):
        if abs(ld[k]) < 1e-12:
            if abs(lo[k]) > half[k]:
                return np.inf, -np.inf
        else:
            a = (-half[k] - lo[k]) / ld[k]
            b = (half[k] - lo[k]) / ld[k]
            if a > b:
                a, b = b, a
            t0 = max(t0, a)
            t1 = min(t1, b)
    if t1 < max(t0, 0.0):
        return np.inf, -np.inf
    return t0, t1


@njit(cache=True)
def _cast(origin, dirs, ray_bin, boxes, owners, box_ptr, box_idx, actor_boxes, actor_ptr, actor_idx, max_range,
          hit_t, hit_owner, through):
    """First hits of unit rays ``dirs`` (R, 3) from ``origin``. Each ray only tests the boxes listed for its
    azimuth bin (CSR: ``box_idx[box_ptr[b]:box_ptr[b + 1]]``). ``through[a]`` counts rays crossing actor box a
    (ignoring occlusion); ``hit_owner`` is the owner of the first box hit (-1 scenery, -2 ground, -3 none)."""
    ox, oy, oz = origin[0], origin[1], origin[2]
    for r in range(dirs.shape[0]):
        dx, dy, dz = dirs[r, 0], dirs[r, 1], dirs[r, 2]
        best, who = max_range, -3
        if dz < -1e-9:
            tg = -oz / dz
            if tg < best:
                best, who = tg, -2
        b = ray_bin[r]
        for j in range(box_ptr[b], box_ptr[b + 1]):
            k = box_idx[j]
            t0, t1 = _slab(ox, oy, oz, dx, dy, dz, boxes[k])
            if t0 > 0.0 and t0 < best:
                best, who = t0, owners[k]
        for j in range(actor_ptr[b], actor_ptr[b + 1]):
            a = actor_idx[j]
            t0, t1 = _slab(ox, oy, oz, dx, dy, dz, actor_boxes[a])
            if t1 >= max(t0, 0.0) and t0 < max_range:
                through[a] += 1
        hit_t[r] = best
        hit_owner[r] = who


def _azimuth_bins(origin_xy: np.ndarray, boxes: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR lists of the boxes whose BEV footprint spans each of ``n_bins`` azimuth bins seen from origin."""
    c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    hl, hw = boxes[:, 3] / 2, boxes[:, 4] / 2
    corners = np.stack([boxes[:, 0] + c * sx * hl - s * sy * hw for sx, sy in ((1, 1), (1, -1), (-1, 1), (-1, -1))], 1), \
        np.stack([boxes[:, 1] + s * sx * hl + c * sy * hw for sx, sy in ((1, 1), (1, -1), (-1, 1), (-1, -1))], 1)
    ang = np.arctan2(corners[1] - origin_xy[1], corners[0] - origin_xy[0])  # (B, 4)
    centre = np.arctan2(boxes[:, 1] - origin_xy[1], boxes[:, 0] - origin_xy[0])
    rel = np.angle(np.exp(1j * (ang - centre[:, None])))  # corner angles relative to the centre direction
    lo, hi = centre + rel.min(1), centre + rel.max(1)
    width = 2 * np.pi / n_bins
    inside = np.hypot(boxes[:, 0] - origin_xy[0], boxes[:, 1] - origin_xy[1]) < np.hypot(hl, hw) + 0.5
    b_lo = np.floor((lo + np.pi) / width).astype(np.int64) - 1
    b_hi = np.floor((hi + np.pi) / width).astype(np.int64) + 1
    b_lo[inside], b_hi[inside] = 0, n_bins - 1
    lists: list[list[int]] = [[] for _ in range(n_bins)]
    for k in range(len(boxes)):
        for b in range(b_lo[k], b_hi[k] + 1):
            lists[b % n_bins].append(k)
    ptr = np.zeros(n_bins + 1, np.int64)
    ptr[1:] = np.cumsum([len(x) for x in lists])
    idx = np.array([k for x in lists for k in x], np.int64)
    return ptr, idx


@dataclass
class LidarSweep:
    """points: (N, 5) float32 x, y, z, intensity, ring in the lidar frame.
    actor_hits / actor_rays: (A,) rays whose first hit is the actor / rays crossing its box."""

    points: np.ndarray
    actor_hits: np.ndarray
    actor_rays: np.ndarray


def simulate_lidar(snap: Snapshot, global_from_lidar: np.ndarray, rng: np.random.Generator) -> LidarSweep:
    el = np.radians(ELEVATIONS_DEG)
    az = np.linspace(-np.pi, np.pi, AZIMUTH_STEPS, endpoint=False) + rng.uniform(0, 2 * np.pi / AZIMUTH_STEPS)
    ring = np.repeat(np.arange(32), AZIMUTH_STEPS)
    e, a = np.repeat(el, AZIMUTH_STEPS), np.tile(az, 32)
    dirs_l = np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], axis=1)  # lidar frame
    rot = global_from_lidar[:3, :3]
    origin = global_from_lidar[:3, 3].copy()
    dirs = np.ascontiguousarray(dirs_l @ rot.T)
    # only boxes that can be reached
    reach = np.linalg.norm(snap.boxes[:, :2] - origin[:2], axis=1) < MAX_RANGE + 0.5 * np.linalg.norm(snap.boxes[:, 3:5], axis=1)
    boxes = np.ascontiguousarray(snap.boxes[reach])
    n_bins = 360
    # rays are binned by their azimuth in the global frame, like the boxes
    ray_az = np.arctan2(dirs[:, 1], dirs[:, 0])
    ray_bin = np.minimum(((ray_az + np.pi) / (2 * np.pi / n_bins)).astype(np.int64), n_bins - 1)
    box_ptr, box_idx = _azimuth_bins(origin[:2], boxes, n_bins)
    act_ptr, act_idx = _azimuth_bins(origin[:2], snap.actor_boxes, n_bins)
    hit_t = np.empty(len(dirs))
    hit_owner = np.empty(len(dirs), np.int64)
    through = np.zeros(len(snap.actor_boxes), np.int64)
    _cast(origin, dirs, ray_bin, boxes, snap.box_owner[reach].astype(np.int64), box_ptr, box_idx,
          np.ascontiguousarray(snap.actor_boxes), act_ptr, act_idx, MAX_RANGE, hit_t, hit_owner, through)
    keep = (hit_owner != -3) & (rng.random(len(dirs)) > 0.06)  # no return beyond range; random dropouts
    rng_m = hit_t[keep] + rng.normal(0.0, 0.02, keep.sum())
    pts = dirs_l[keep] * rng_m[:, None]
    owner = hit_owner[keep]
    intensity = np.where(owner == -2, rng.uniform(2, 20, keep.sum()), rng.uniform(10, 70, keep.sum()))
    points = np.c_[pts, intensity, ring[keep]].astype(np.float32)
    hits = np.bincount(owner[owner >= 0], minlength=len(snap.actor_boxes))[: len(snap.actor_boxes)]
    return LidarSweep(points, hits, through)


def points_in_boxes(points: np.ndarray, boxes: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """points: (N, 3) global; boxes: (A, 7). Returns (A,) counts of points inside each box (3D)."""
    counts = np.zeros(len(boxes), np.int64)
    for i, (x, y, z, l, w, h, yaw) in enumerate(boxes):
        rel = points - np.array([x, y, z])
        c, s = np.cos(yaw), np.sin(yaw)
        lx = c * rel[:, 0] + s * rel[:, 1]
        ly = -s * rel[:, 0] + c * rel[:, 1]
        counts[i] = int(np.sum((np.abs(lx) <= l / 2 + margin) & (np.abs(ly) <= w / 2 + margin)
                               & (np.abs(rel[:, 2]) <= h / 2 + margin)))
    return counts
