"""Physical-ish simulation of a Continental ARS 408-like automotive radar (the nuScenes units).

Per sweep: scatter centres on the object faces that face the radar (a few per face, more for long faces),
each detected with a probability that falls with range and low RCS (radar equation, ``40 log10 r``), with
Swerling-I RCS fluctuation; line-of-sight occlusion by nearer boxes; range, azimuth (the poorest) and
Doppler noise; nuScenes' quantisation (x, y to 0.2 m, RCS to 0.5 dBsm, raw velocities to 0.25 m/s);
static returns from buildings and poles, random clutter and multipath ghosts. The field of view is the
ARS 408's: +-60 deg to 77 m (near scan) and +-9 deg to 200 m (far scan).

Output rows follow the 18 nuScenes PCD fields in the radar frame (z = 0: the sensor measures no elevation).
``vx, vy`` are the radial velocity relative to the moving sensor, ``vx_comp, vy_comp`` the radial velocity over
ground, both as vectors along the line of sight (what a Doppler radar can measure).
"""
from __future__ import annotations

import numpy as np

from perception.data.io import NUSCENES_RADAR_FIELDS
from perception.data.synthetic.world import SIDE_RCS_GAIN_DB, Snapshot

NEAR_FOV_DEG, NEAR_RANGE = 60.0, 77.0
FAR_FOV_DEG, FAR_RANGE = 9.0, 200.0
SIGMA_RANGE = 0.12  # m
SIGMA_AZIMUTH_DEG = 0.9  # at boresight; doubles towards the edge of the near field of view
SIGMA_DOPPLER = 0.12  # m/s
SNR_OFFSET_DB = 78.0  # so that a car side (about 8 dBsm per scatter centre) is detected with p = 0.5 at ~95 m
SNR_THRESHOLD_DB, SNR_SLOPE_DB = 6.0, 2.0
CLUTTER_RATE = 6.0  # false alarms per sweep
GHOST_PROB = 0.06
OCCLUDED_PASS = 0.1  # chance a return survives an occluded line of sight (multipath, under-body)
F = {name: i for i, name in enumerate(NUSCENES_RADAR_FIELDS)}


def _scatter_centres(boxes: np.ndarray, rcs: np.ndarray, radar_xy: np.ndarray, rng: np.random.Generator,
                     spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate reflection points on the side faces of ``boxes`` (B, 7) that face the radar.
    Returns xy (N, 2), rcs dBsm (N,), and the index of the box each came from (N,)."""
    c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    fwd = np.stack([c, s], -1)  # (B, 2)
    left = np.stack([-s, c], -1)
    l, w = boxes[:, 3], boxes[:, 4]
    # faces: front, back, left, right -> normal, offset, in-face direction, length, RCS gain
    normals = np.stack([fwd, -fwd, left, -left], 1)  # (B, 4, 2)
    offsets = np.stack([l / 2, l / 2, w / 2, w / 2], 1)  # (B, 4)
    along = np.stack([left, left, fwd, fwd], 1)
    lengths = np.stack([w, w, l, l], 1)
    gains = np.array([0.0, 0.0, SIDE_RCS_GAIN_DB, SIDE_RCS_GAIN_DB])
    centres = boxes[:, None, :2] + normals * offsets[..., None]  # (B, 4, 2)
    visible = np.sum(normals * (centres - radar_xy), axis=-1) < 0.0  # (B, 4): the face looks at the radar
    n_vis = np.maximum(visible.sum(1), 1)  # (B,)
    count = np.where(visible, np.maximum(1, np.round(lengths / spacing[:, None])), 0).astype(np.int64)  # (B, 4)
    flat = count.reshape(-1)
    if flat.sum() == 0:
        return np.zeros((0, 2)), np.zeros(0), np.zeros(0, np.int64)
    face_idx = np.repeat(np.arange(flat.size), flat)  # (N,) index into (B*4)
    b_idx = face_idx // 4
    t = rng.uniform(-0.5, 0.5, face_idx.size) * lengths.reshape(-1)[face_idx]
    xy = centres.reshape(-1, 2)[face_idx] + t[:, None] * along.reshape(-1, 2)[face_idx]
    # the box's RCS is shared by its scatter centres; Swerling-I fluctuation per centre
    fluct = 10.0 * np.log10(rng.exponential(1.0, face_idx.size) + 1e-6)
    share = 10.0 * np.log10(flat[face_idx] * n_vis[b_idx])
    r = rcs[b_idx] + gains[face_idx % 4] - share + fluct
    return xy, r, b_idx.astype(np.int64)


def _occluded(radar_xy: np.ndarray, pts: np.ndarray, owner: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N,) True where the segment radar -> point crosses the BEV footprint of another box."""
    if len(pts) == 0 or len(boxes) == 0:
        return np.zeros(len(pts), bool)
    c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])  # (B,)
    rel0 = radar_xy[None, :] - boxes[:, :2]  # (B, 2)
    o = np.stack([c * rel0[:, 0] + s * rel0[:, 1], -s * rel0[:, 0] + c * rel0[:, 1]], -1)  # (B, 2) in box frames
    d_glob = pts[:, None, :] - radar_xy[None, None, :]  # (N, 1, 2)
    d = np.stack([c * d_glob[..., 0] + s * d_glob[..., 1], -s * d_glob[..., 0] + c * d_glob[..., 1]], -1)  # (N, B, 2)
    half = boxes[:, 3:5] / 2  # (B, 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (-half[None] - o[None]) / d
        b = (half[None] - o[None]) / d
    t0 = np.nanmax(np.minimum(a, b), axis=-1)
    t1 = np.nanmin(np.maximum(a, b), axis=-1)
    cross = (t1 >= np.maximum(t0, 0.0)) & (t0 < 0.97)  # enters the box before reaching the point
    cross[np.arange(len(pts)), owner] = False
    return cross.any(axis=1)


def simulate_radar(snap: Snapshot, global_from_radar: np.ndarray, sensor_velocity: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """One sweep: (N, 18) float32 in the nuScenes radar field order, radar frame.

    sensor_velocity: (2,) m/s over ground of the radar itself (ego velocity plus yaw-rate lever arm).
    """
    radar_xy = global_from_radar[:2, 3]
    yaw_r = np.arctan2(global_from_radar[1, 0], global_from_radar[0, 0])
    rel_b = snap.boxes[:, :2] - radar_xy
    dist_b = np.linalg.norm(rel_b, axis=1)
    az_b = np.abs(np.angle(np.exp(1j * (np.arctan2(rel_b[:, 1], rel_b[:, 0]) - yaw_r))))
    radius_b = 0.5 * np.linalg.norm(snap.boxes[:, 3:5], axis=1)
    # boxes that can be in the field of view (their extent widens the angle near the sensor)
    near = (dist_b - radius_b < FAR_RANGE) & ((az_b < np.radians(NEAR_FOV_DEG + 5))
                                              | (radius_b > 0.5 * dist_b) | (dist_b < radius_b + 1.0))
    boxes, owners, rcs = snap.boxes[near], snap.box_owner[near], snap.box_rcs[near]
    spacing = np.where(owners >= 0, 1.3, 3.0)  # buildings: sparser scatter centres along long walls
    pts, p_rcs, src = _scatter_centres(boxes, rcs, radar_xy, rng, spacing)
    rel = pts - radar_xy
    rng_m = np.linalg.norm(rel, axis=1)
    az = np.angle(np.exp(1j * (np.arctan2(rel[:, 1], rel[:, 0]) - yaw_r)))
    az_deg = np.abs(np.degrees(az))
    in_fov = (((az_deg <= NEAR_FOV_DEG) & (rng_m <= NEAR_RANGE)) | ((az_deg <= FAR_FOV_DEG) & (rng_m <= FAR_RANGE))) \
        & (rng_m > 0.5)
    snr = p_rcs - 40.0 * np.log10(np.maximum(rng_m, 1.0)) + SNR_OFFSET_DB
    p_det = 1.0 / (1.0 + np.exp(-(snr - SNR_THRESHOLD_DB) / SNR_SLOPE_DB))
    det = in_fov & (rng.random(len(pts)) < p_det)
    occl = _occluded(radar_xy, pts[det], src[det], boxes)
    keep_idx = np.flatnonzero(det)[~occl | (rng.random(int(det.sum())) < OCCLUDED_PASS)]
    pts, p_rcs, src, rng_m, az = pts[keep_idx], p_rcs[keep_idx], src[keep_idx], rng_m[keep_idx], az[keep_idx]
    # velocity of each scatter centre over ground (actor velocity; scenery is static)
    v_obj = np.zeros((len(pts), 2))
    box_owner = owners[src]
    moving = box_owner >= 0
    v_obj[moving] = snap.actor_velocity[box_owner[moving]]
    los = np.stack([np.cos(az + yaw_r), np.sin(az + yaw_r)], axis=1)  # global unit line of sight
    v_r_ground = np.sum(v_obj * los, axis=1)
    v_r_rel = np.sum((v_obj - sensor_velocity[None]) * los, axis=1)
    kind = np.zeros(len(pts), np.int64)  # 0 object, 1 clutter, 2 ghost
    # multipath ghosts of moving targets: further away on nearly the same bearing
    ghost = moving & (rng.random(len(pts)) < GHOST_PROB)
    if ghost.any():
        g = np.flatnonzero(ghost)
        rng_m = np.r_[rng_m, rng_m[g] * rng.uniform(1.7, 2.2, len(g))]
        az = np.r_[az, az[g] + np.radians(rng.normal(0, 2.0, len(g)))]
        p_rcs = np.r_[p_rcs, p_rcs[g] - rng.uniform(3, 10, len(g))]
        v_r_ground = np.r_[v_r_ground, v_r_ground[g]]
        v_r_rel = np.r_[v_r_rel, v_r_rel[g]]
        kind = np.r_[kind, np.full(len(g), 2)]
    # clutter: false alarms of low RCS anywhere in the near field of view, static
    n_cl = int(rng.poisson(CLUTTER_RATE))
    cl_az = np.radians(rng.uniform(-NEAR_FOV_DEG, NEAR_FOV_DEG, n_cl))
    cl_r = rng.uniform(3.0, NEAR_RANGE, n_cl)
    cl_los = np.stack([np.cos(cl_az + yaw_r), np.sin(cl_az + yaw_r)], axis=1)
    rng_m = np.r_[rng_m, cl_r]
    az = np.r_[az, cl_az]
    p_rcs = np.r_[p_rcs, rng.normal(-8.0, 4.0, n_cl)]
    v_r_ground = np.r_[v_r_ground, rng.normal(0.0, 0.3, n_cl)]
    v_r_rel = np.r_[v_r_rel, -(cl_los @ sensor_velocity) + rng.normal(0.0, 0.3, n_cl)]
    kind = np.r_[kind, np.ones(n_cl, np.int64)]
    n = len(rng_m)
    # measurement noise: range good, azimuth poor (worse towards the edge of the field of view)
    sig_az = np.radians(SIGMA_AZIMUTH_DEG) * (1.0 + (np.abs(az) / np.radians(NEAR_FOV_DEG)) ** 2)
    r_meas = rng_m + rng.normal(0.0, SIGMA_RANGE, n)
    az_meas = az + rng.normal(0.0, 1.0, n) * sig_az
    ca, sa = np.cos(az_meas), np.sin(az_meas)
    vr_g = v_r_ground + rng.normal(0.0, SIGMA_DOPPLER, n)
    vr_rel = v_r_rel + rng.normal(0.0, SIGMA_DOPPLER, n)
    out = np.zeros((n, len(NUSCENES_RADAR_FIELDS)), np.float32)
    out[:, F["x"]] = np.round(r_meas * ca / 0.2) * 0.2
    out[:, F["y"]] = np.round(r_meas * sa / 0.2) * 0.2
    out[:, F["rcs"]] = np.round(np.clip(p_rcs, -64, 63.5) / 0.5) * 0.5
    out[:, F["vx"]] = np.round(vr_rel * ca / 0.25) * 0.25
    out[:, F["vy"]] = np.round(vr_rel * sa / 0.25) * 0.25
    out[:, F["vx_comp"]] = vr_g * ca
    out[:, F["vy_comp"]] = vr_g * sa
    fast = np.abs(vr_g) > 0.5
    dyn = np.where(fast, np.where(vr_g < 0, 2, 0), rng.choice([1, 1, 1, 1, 1, 3, 3, 4], n))  # 2: oncoming
    out[:, F["dyn_prop"]] = dyn
    order = rng.permutation(n)  # the sensor lists clusters in no particular order
    out = out[order]
    kind = kind[order]
    az_o = np.abs(az[order])
    out[:, F["id"]] = np.arange(n)
    out[:, F["is_quality_valid"]] = 1
    out[:, F["ambig_state"]] = np.where(rng.random(n) < 0.96, 3, rng.choice([1, 2], n))
    out[:, F["x_rms"]] = 19 + (rng.random(n) < 0.2)
    out[:, F["y_rms"]] = np.clip(19 + np.round(az_o / np.radians(10)), 19, 28)
    out[:, F["invalid_state"]] = np.where((kind > 0) & (rng.random(n) < 0.25), rng.choice([4, 6, 7, 9, 11, 16], n), 0)
    out[:, F["pdh0"]] = np.where(kind == 0, 1, np.where(kind == 2, 3, rng.choice([1, 3, 6], n)))
    out[:, F["vx_rms"]] = 16 + rng.integers(0, 3, n)
    out[:, F["vy_rms"]] = 3
    return out
