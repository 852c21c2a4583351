"""Simulation of a Continental ARS 408-like automotive radar (the nuScenes units), calibrated to nuScenes.

One sweep, in the order a real sensor works:

1. **Scatter centres** on the faces of every box that face the radar (about one per 1.3 m of face; buildings one
   per 3 m). Each visible face has the object's radar cross-section (RCS, per class, ``world.RCS_DBSM``; +4 dB
   side-on), split between its centres and weaker the more obliquely it is seen (``10 log10 cos(incidence)``,
   floored at -10 dB: corners, wheels and edges scatter diffusely).
2. **Swerling-I fluctuation** of every centre's RCS (exponential power, new every sweep).
3. **Field of view and occlusion**: +-60 deg to 77 m (near scan), +-9 deg to 200 m (far scan); a centre behind a
   nearer box is lost (2 % still return: multipath, under the body of a car).
4. **Resolution cells and detection**: echoes in one range x azimuth x Doppler cell (0.39 m x 3.2 deg x 0.1 m/s
   in the near scan, 1.79 m x 2.2 deg x 0.12 m/s far) add up to one cluster at the strongest echo's position (a
   standing pedestrian beside a parked car, a cone before a barrier merge into the bigger echo). The cell is
   detected when its SNR from the **radar equation**, ``SNR = RCS - 40 log10(r) + SNR_OFFSET_DB - pattern
   loss(azimuth)`` (two-way antenna pattern, -12 dB at +-60 deg), exceeds the CFAR threshold
   ``SNR_THRESHOLD_DB``; with Swerling I that is ``p_d = exp(-threshold / mean SNR)``.
5. **Multipath ghosts** of moving detected targets (1.7-2.2x the range, nearly the same bearing, same Doppler,
   3-10 dB weaker plus the longer path: they must pass the threshold themselves), azimuth **sidelobes** of strong
   targets (same range and Doppler, 4-12 deg off, 20-30 dB down), and **clutter** (false alarms and unmodelled
   scenery: kerbs, vegetation, road furniture; static over ground, SNR just over the threshold).
6. **Cluster list**: at most ``MAX_CLUSTERS`` (125, as every full nuScenes radar file) per sweep, the strongest.
7. **Noise and quantisation**: range 0.12 m, azimuth 0.9 deg at boresight to 1.8 deg at +-60 deg, Doppler
   0.12 m/s; the reported RCS is the SNR referred back through the radar equation (+-0.5 dB); nuScenes
   quantisation (x, y 0.2 m, RCS 0.5 dBsm, raw velocity 0.25 m/s).
8. **State fields** (``dyn_prop``, ``ambig_state``, ``invalid_state``, ``pdh0``, the rms indices): computed, as
   the sensor does, from its own measurements only (measured SNR, range, azimuth, Doppler) plus independent
   randomness, never from whether a return is an object, scenery, clutter, a ghost or a sidelobe
   (``tests/perception/data/test_radar_model.py`` shows that they carry no such information).

Calibrated (``SNR_OFFSET_DB``, ``CLUTTER_RATE``) so that a default world matches real nuScenes: about 197 returns
per key frame after the devkit's default filters and about 61 % of in-range boxes without a radar return
(measured with ``perception-stats``; docs/synthetic.md). Output rows follow the 18 nuScenes PCD fields in the
radar frame (z = 0: no elevation is measured). ``vx, vy`` are the radial velocity relative to the moving sensor,
``vx_comp, vy_comp`` the radial velocity over ground, both as vectors along the measured line of sight (what a
Doppler radar can measure).
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
# Radar equation: SNR [dB] = RCS [dBsm] - 40 log10(r / 1 m) + SNR_OFFSET_DB - PATTERN_LOSS_DB * (az / 60 deg)^2
SNR_OFFSET_DB = 63.0
PATTERN_LOSS_DB = 12.0  # two-way antenna gain at the edge of the near beam
SNR_THRESHOLD_DB = 13.0  # CFAR detection threshold on the fluctuated SNR
OCCLUDED_PASS = 0.02  # chance an occluded centre still returns (multipath, under-body)
GHOST_PROB = 0.15  # a detected moving target's chance of a multipath ghost
GHOST_LOSS_DB = (3.0, 10.0)
SIDELOBE_MIN_SNR_DB = 35.0  # targets this strong show azimuth sidelobes
SIDELOBE_PROB = 0.5
SIDELOBE_LOSS_DB = (20.0, 30.0)
CLUTTER_RATE = 48.0  # clutter clusters per sweep before the cluster limit (Poisson)
CLUTTER_EXCESS_DB = 3.0  # clutter SNR: threshold + exponential with this mean
MAX_CLUSTERS = 125
# resolution cells (ARS 408-21 data sheet): range, azimuth, Doppler; near / far scan
CELL_NEAR = (0.39, 3.2, 0.1)
CELL_FAR = (1.79, 2.2, 0.12)
F = {name: i for i, name in enumerate(NUSCENES_RADAR_FIELDS)}
KIND_OBJECT, KIND_SCENERY, KIND_CLUTTER, KIND_GHOST, KIND_SIDELOBE = range(5)


def pattern_loss_db(azimuth_rad: np.ndarray) -> np.ndarray:
    """Two-way antenna pattern loss (dB, >= 0) at azimuth (radians from boresight)."""
    return PATTERN_LOSS_DB * (np.asarray(azimuth_rad) / np.radians(NEAR_FOV_DEG)) ** 2


def measured_snr_db(rcs_dbsm: np.ndarray, range_m: np.ndarray, azimuth_rad: np.ndarray) -> np.ndarray:
    """The SNR the sensor sees, from its own measurements (the RCS it reports is derived from it)."""
    return (np.asarray(rcs_dbsm) - 40.0 * np.log10(np.maximum(range_m, 1.0)) + SNR_OFFSET_DB
            - pattern_loss_db(azimuth_rad))


def _scatter_centres(boxes: np.ndarray, rcs: np.ndarray, radar_xy: np.ndarray, rng: np.random.Generator,
                     spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate reflection points on the side faces of ``boxes`` (B, 7) that face the radar.
    Returns xy (N, 2), mean RCS dBsm of each centre (N,), and the index of the box each came from (N,)."""
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
    count = np.where(visible, np.maximum(1, np.round(lengths / spacing[:, None])), 0).astype(np.int64)  # (B, 4)
    flat = count.reshape(-1)
    if flat.sum() == 0:
        return np.zeros((0, 2)), np.zeros(0), np.zeros(0, np.int64)
    face_idx = np.repeat(np.arange(flat.size), flat)  # (N,) index into (B*4)
    b_idx = face_idx // 4
    t = rng.uniform(-0.5, 0.5, face_idx.size) * lengths.reshape(-1)[face_idx]
    xy = centres.reshape(-1, 2)[face_idx] + t[:, None] * along.reshape(-1, 2)[face_idx]
    # each visible face is a scatterer with the box's RCS (plus the side-on gain), its power split between the
    # centres along it, weaker the more obliquely it is seen (specular falloff, floored at -10 dB for the
    # corners, wheels and edges that scatter diffusely)
    share = 10.0 * np.log10(flat[face_idx])
    to_radar = radar_xy - xy
    cos_inc = np.sum(normals.reshape(-1, 2)[face_idx] * to_radar, axis=1) / np.maximum(np.linalg.norm(to_radar, axis=1), 1e-6)
    aspect = 10.0 * np.log10(np.clip(cos_inc, 0.1, 1.0))
    r = rcs[b_idx] + gains[face_idx % 4] - share + aspect
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


def _in_fov(rng_m: np.ndarray, az: np.ndarray) -> np.ndarray:
    az_deg = np.abs(np.degrees(az))
    return (((az_deg <= NEAR_FOV_DEG) & (rng_m <= NEAR_RANGE)) | ((az_deg <= FAR_FOV_DEG) & (rng_m <= FAR_RANGE))) \
        & (rng_m > 0.5)


def _merge_cells(rng_m: np.ndarray, az: np.ndarray, v_rel: np.ndarray, snr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns that share a range x azimuth x Doppler resolution cell are one cluster. Returns the indices of the
    surviving (strongest) return of each cell and the cell's summed SNR (dB)."""
    if len(rng_m) == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    far = rng_m > NEAR_RANGE
    cell = np.where(far[:, None], np.array(CELL_FAR), np.array(CELL_NEAR))  # (N, 3)
    key = np.stack([far.astype(np.int64), np.floor(rng_m / cell[:, 0]).astype(np.int64),
                    np.floor(np.degrees(az) / cell[:, 1]).astype(np.int64),
                    np.floor(v_rel / cell[:, 2]).astype(np.int64)], 1)
    order = np.argsort(-snr, kind="stable")
    _, first, inverse = np.unique(key[order], axis=0, return_index=True, return_inverse=True)
    power = np.zeros(len(first))
    np.add.at(power, inverse.reshape(-1), 10.0 ** (snr[order] / 10.0))
    return order[first], 10.0 * np.log10(power)


def _state_fields(out: np.ndarray, snr_m: np.ndarray, r_m: np.ndarray, az_m: np.ndarray, vr_g: np.ndarray,
                  vr_rel: np.ndarray, rng: np.random.Generator) -> None:
    """Fill dyn_prop, ambig_state, invalid_state, pdh0 and the rms indices of ``out`` (N, 18) in place, from the
    measured SNR (dB), range (m), azimuth (rad) and compensated / raw radial velocities (m/s) only.
    Rates follow the two real nuScenes sweeps under realdata/nuscenes_radar (about 56 % pass the devkit filters)."""
    n = len(snr_m)
    u = rng.random((n, 8))
    weak = 1.0 / (1.0 + np.exp((snr_m - (SNR_THRESHOLD_DB + 6.0)) / 2.0))  # ~1 near the threshold, 0 when strong
    az_deg = np.abs(np.degrees(az_m))
    rcs_m = out[:, F["rcs"]]
    # invalid_state: 0x07 outside the field of view (edge), 0x04 low RCS, 0x0b no local maximum,
    # 0x09 high child probability, 0x10 high multi-target probability, else 0 (valid)
    inv = np.zeros(n, np.int64)
    p_low = 0.55 / (1.0 + np.exp((rcs_m + 1.0) / 2.0))
    inv = np.where(u[:, 0] < p_low, 4, inv)
    inv = np.where((inv == 0) & (u[:, 1] < 0.08 + 0.12 * weak), 11, inv)
    inv = np.where((inv == 0) & (u[:, 2] < 0.06 + 0.08 * weak), 9, inv)
    inv = np.where((inv == 0) & (u[:, 3] < 0.06), 16, inv)
    inv = np.where(((az_deg > 57.0) & (r_m <= NEAR_RANGE) & (u[:, 4] < 0.7)) | (u[:, 4] < 0.02), 7, inv)
    inv = np.where(r_m < 1.5, 2, inv)
    out[:, F["invalid_state"]] = inv
    # ambig_state: Doppler ambiguity is resolved less reliably for weak returns and fast relative speeds
    p_amb = 0.02 + 0.08 * weak + 0.05 * (np.abs(vr_rel) > 20.0)
    amb = np.where(u[:, 5] < p_amb, np.where(u[:, 6] < 0.5, 1, np.where(u[:, 6] < 0.8, 0, 2)), 3)
    amb = np.where(inv == 7, 0, amb)
    out[:, F["ambig_state"]] = amb
    # pdh0: the false-alarm probability class the sensor assigns from SNR and its own flags
    pdh0 = np.where(np.isin(inv, (4, 9, 11)) | (weak > 0.5) & (u[:, 7] < 0.6), 3, 1)
    pdh0 = np.where((inv == 7) | (amb == 0), 6, pdh0)
    out[:, F["pdh0"]] = pdh0
    # dyn_prop from the compensated Doppler: moving (0 away, 2 oncoming), else stationary (1), stationary
    # candidate (3, more at long range), unknown (4, weak returns)
    v = rng.random(n)
    still = np.where(v < 0.1 + 0.7 / (1.0 + np.exp(-(r_m - 60.0) / 15.0)), 3, 1)
    still = np.where(rng.random(n) < 0.04 + 0.1 * weak, 4, still)
    out[:, F["dyn_prop"]] = np.where(np.abs(vr_g) > 0.5, np.where(vr_g < 0, 2, 0), still)
    # rms indices grow with range, azimuth and falling SNR
    out[:, F["x_rms"]] = np.clip(19 + np.round(np.maximum(r_m - 20.0, 0) / 40.0 + weak + rng.normal(0, 0.5, n)), 19, 22)
    out[:, F["y_rms"]] = np.clip(19 + np.round(az_deg / 12.0 + r_m / 60.0 + weak + rng.normal(0, 0.6, n)), 19, 28)
    out[:, F["vx_rms"]] = 16 + (rng.random(n) < 0.15 + 0.3 * weak) + (rng.random(n) < 0.05)
    out[:, F["vy_rms"]] = 3
    dead = inv == 7  # the sensor reports no accuracy for clusters it flags outside its field of view
    for name in ("x_rms", "y_rms", "vx_rms", "vy_rms"):
        out[dead, F[name]] = 0


def simulate_radar(snap: Snapshot, global_from_radar: np.ndarray, sensor_velocity: np.ndarray,
                   rng: np.random.Generator, with_kind: bool = False):
    """One sweep: (N, 18) float32 in the nuScenes radar field order, radar frame.

    sensor_velocity: (2,) m/s over ground of the radar itself (ego velocity plus yaw-rate lever arm).
    with_kind: also return (N,) int64 ground truth of each return (KIND_OBJECT, _SCENERY, _CLUTTER, _GHOST,
    _SIDELOBE; for tests only, never written to files) and (N,) the index of the actor it came from (-1 none).
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
    p_rcs = p_rcs + 10.0 * np.log10(rng.exponential(1.0, len(p_rcs)) + 1e-9)  # Swerling I, per centre and sweep
    rel = pts - radar_xy
    rng_m = np.linalg.norm(rel, axis=1)
    az = np.angle(np.exp(1j * (np.arctan2(rel[:, 1], rel[:, 0]) - yaw_r)))
    snr = measured_snr_db(p_rcs, rng_m, az)
    vis = np.flatnonzero(_in_fov(rng_m, az))
    occl = _occluded(radar_xy, pts[vis], src[vis], boxes)
    vis = vis[~occl | (rng.random(len(vis)) < OCCLUDED_PASS)]
    src, rng_m, az, snr = src[vis], rng_m[vis], az[vis], snr[vis]
    actor = owners[src].astype(np.int64)
    # velocity of each scatter centre over ground (actor velocity; scenery is static)
    v_obj = np.zeros((len(src), 2))
    v_obj[actor >= 0] = snap.actor_velocity[actor[actor >= 0]]
    los = np.stack([np.cos(az + yaw_r), np.sin(az + yaw_r)], axis=1)  # global unit line of sight
    v_r_ground = np.sum(v_obj * los, axis=1)
    v_r_rel = np.sum((v_obj - sensor_velocity[None]) * los, axis=1)
    # detection on the power of each resolution cell (echoes in one cell add up; the strongest gives the position)
    idx, snr_cell = _merge_cells(rng_m, az, v_r_rel, snr)
    det = snr_cell >= SNR_THRESHOLD_DB
    idx, snr = idx[det], snr_cell[det]
    rng_m, az, v_obj, v_r_ground, v_r_rel, actor = (a[idx] for a in (rng_m, az, v_obj, v_r_ground, v_r_rel, actor))
    kind = np.where(actor >= 0, KIND_OBJECT, KIND_SCENERY)
    # multipath ghosts of moving targets: further away on nearly the same bearing, the same Doppler
    g = np.flatnonzero((np.linalg.norm(v_obj, axis=1) > 0.5) & (rng.random(len(snr)) < GHOST_PROB))
    k = rng.uniform(1.7, 2.2, len(g))
    g_r, g_az = rng_m[g] * k, az[g] + np.radians(rng.normal(0, 2.0, len(g)))
    g_snr = snr[g] - 40.0 * np.log10(k) - rng.uniform(*GHOST_LOSS_DB, len(g))
    # azimuth sidelobes of strong targets: the same range and Doppler, 4-12 deg off
    s = np.flatnonzero((snr >= SIDELOBE_MIN_SNR_DB) & (rng.random(len(snr)) < SIDELOBE_PROB))
    s_az = az[s] + np.radians(rng.uniform(4.0, 12.0, len(s)) * rng.choice([-1.0, 1.0], len(s)))
    s_snr = snr[s] - rng.uniform(*SIDELOBE_LOSS_DB, len(s)) + pattern_loss_db(az[s]) - pattern_loss_db(s_az)
    # clutter: static false alarms (and unmodelled scenery) just over the threshold, anywhere in the beams
    n_cl = int(rng.poisson(CLUTTER_RATE))
    far_cl = rng.random(n_cl) < 0.25
    c_az = np.radians(np.where(far_cl, rng.uniform(-FAR_FOV_DEG, FAR_FOV_DEG, n_cl),
                               rng.uniform(-NEAR_FOV_DEG, NEAR_FOV_DEG, n_cl)))
    c_r = np.where(far_cl, rng.uniform(NEAR_RANGE, FAR_RANGE, n_cl), NEAR_RANGE * np.sqrt(rng.uniform(0.0016, 1.0, n_cl)))
    c_snr = SNR_THRESHOLD_DB + rng.exponential(CLUTTER_EXCESS_DB, n_cl)
    c_los = np.stack([np.cos(c_az + yaw_r), np.sin(c_az + yaw_r)], axis=1)
    rng_m = np.r_[rng_m, g_r, rng_m[s], c_r]
    az = np.r_[az, g_az, s_az, c_az]
    snr = np.r_[snr, g_snr, s_snr, c_snr]
    v_r_ground = np.r_[v_r_ground, v_r_ground[g], v_r_ground[s], np.zeros(n_cl)]
    v_r_rel = np.r_[v_r_rel, v_r_rel[g], v_r_rel[s], -(c_los @ sensor_velocity)]
    kind = np.r_[kind, np.full(len(g), KIND_GHOST), np.full(len(s), KIND_SIDELOBE), np.full(n_cl, KIND_CLUTTER)]
    actor = np.r_[actor, actor[g], actor[s], np.full(n_cl, -1)]
    ok = _in_fov(rng_m, az) & (snr >= SNR_THRESHOLD_DB)
    rng_m, az, snr, v_r_ground, v_r_rel, kind, actor = (a[ok] for a in (rng_m, az, snr, v_r_ground, v_r_rel, kind, actor))
    # the sensor's cluster list limit: the strongest
    top = np.argsort(-snr, kind="stable")[:MAX_CLUSTERS]
    rng_m, az, snr, v_r_ground, v_r_rel, kind, actor = (a[top] for a in (rng_m, az, snr, v_r_ground, v_r_rel, kind, actor))
    n = len(top)
    # measurement noise: range good, azimuth poor (worse towards the edge of the field of view)
    sig_az = np.radians(SIGMA_AZIMUTH_DEG) * (1.0 + (np.abs(az) / np.radians(NEAR_FOV_DEG)) ** 2)
    r_meas = rng_m + rng.normal(0.0, SIGMA_RANGE, n)
    az_meas = az + rng.normal(0.0, 1.0, n) * sig_az
    ca, sa = np.cos(az_meas), np.sin(az_meas)
    vr_g = v_r_ground + rng.normal(0.0, SIGMA_DOPPLER, n)
    vr_rel = v_r_rel + rng.normal(0.0, SIGMA_DOPPLER, n)
    # the RCS the sensor reports: its SNR referred back through the radar equation at the measured range/azimuth
    rcs_meas = snr - SNR_OFFSET_DB + 40.0 * np.log10(np.maximum(r_meas, 1.0)) + pattern_loss_db(az_meas)
    rcs_meas += rng.normal(0.0, 0.5, n)
    out = np.zeros((n, len(NUSCENES_RADAR_FIELDS)), np.float32)
    out[:, F["x"]] = np.round(r_meas * ca / 0.2) * 0.2
    out[:, F["y"]] = np.round(r_meas * sa / 0.2) * 0.2
    out[:, F["rcs"]] = np.round(np.clip(rcs_meas, -64, 63.5) / 0.5) * 0.5
    out[:, F["vx"]] = np.round(vr_rel * ca / 0.25) * 0.25
    out[:, F["vy"]] = np.round(vr_rel * sa / 0.25) * 0.25
    out[:, F["vx_comp"]] = vr_g * ca
    out[:, F["vy_comp"]] = vr_g * sa
    out[:, F["is_quality_valid"]] = 1
    # the state fields see only what the sensor measured (the written, quantised values)
    snr_m = measured_snr_db(out[:, F["rcs"]], r_meas, az_meas)
    _state_fields(out, snr_m, r_meas, az_meas, vr_g, vr_rel, rng)
    order = rng.permutation(n)  # the sensor lists clusters in no particular order
    out, kind, actor = out[order], kind[order], actor[order]
    out[:, F["id"]] = np.arange(n)
    if with_kind:
        return out, kind, actor
    return out
