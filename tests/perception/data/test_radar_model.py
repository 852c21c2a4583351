"""The synthetic radar's physics and honesty: state fields carry no ground truth; statistics as calibrated."""
from __future__ import annotations

import numpy as np
import pytest

from perception.data.synthetic import world as W
from perception.data.synthetic.radar import (F, KIND_CLUTTER, KIND_GHOST, KIND_OBJECT, KIND_SIDELOBE, MAX_CLUSTERS,
                                             measured_snr_db, simulate_radar)

STATE = ("dyn_prop", "ambig_state", "invalid_state", "pdh0", "x_rms", "y_rms", "vx_rms", "vy_rms")


def _sweeps(rig, seeds=range(6), steps=6):
    """Sweeps of all five radars over a few scenes: (points (N, 18), kind (N,), sensor speed (N,))."""
    pts, kinds = [], []
    for seed in seeds:
        scene = W.generate_scene(40 + seed, 0, 4.0, 1_000_000_000)
        for step in range(steps):
            t = scene.t_start_us + 300_000 + step * 600_000
            snap, ego = scene.snapshot(t), scene.ego_pose(t)
            v_ego, _ = scene.ego_velocity(t)
            for j, radar in enumerate(rig.radars.values()):
                p, k, _ = simulate_radar(snap, ego @ radar.ego_from_radar, v_ego, np.random.default_rng([seed, step, j]),
                                         with_kind=True)
                pts.append(p)
                kinds.append(k)
    return np.concatenate(pts), np.concatenate(kinds)


def _measurements(p: np.ndarray) -> np.ndarray:
    """What the sensor measures: range, azimuth, RCS, SNR, compensated and raw radial velocity."""
    r = np.hypot(p[:, F["x"]], p[:, F["y"]])
    az = np.arctan2(p[:, F["y"]], p[:, F["x"]])
    sign = np.sign(p[:, F["x"]] * p[:, F["vx_comp"]] + p[:, F["y"]] * p[:, F["vy_comp"]])
    vr_g = np.hypot(p[:, F["vx_comp"]], p[:, F["vy_comp"]]) * sign
    sign_raw = np.sign(p[:, F["x"]] * p[:, F["vx"]] + p[:, F["y"]] * p[:, F["vy"]])
    vr_raw = np.hypot(p[:, F["vx"]], p[:, F["vy"]]) * sign_raw
    return np.stack([r, np.abs(az), p[:, F["rcs"]], measured_snr_db(p[:, F["rcs"]], r, az), vr_g, np.abs(vr_g),
                     vr_raw], 1)


def _binned(x: np.ndarray, edges: list[np.ndarray] | None = None, bins: int = 12):
    """One-hot of quantile bins of every column (a logistic regression on these is a flexible additive model)."""
    if edges is None:
        edges = [np.unique(np.quantile(c, np.linspace(0, 1, bins + 1)[1:-1])) for c in x.T]
    cols = [np.eye(len(e) + 1)[np.searchsorted(e, c)] for c, e in zip(x.T, edges)]
    return np.concatenate(cols, 1), edges


def _categorical(x: np.ndarray, values: list[np.ndarray] | None = None):
    if values is None:
        values = [np.unique(c) for c in x.T]
    return np.concatenate([(c[:, None] == v[None]).astype(float) for c, v in zip(x.T, values)], 1), values


def _logistic_loss(x_train, y_train, x_test, y_test, steps=600, lr=0.5, l2=1e-3) -> float:
    """Held-out log-loss (nats per return) of an L2 logistic regression fitted by full-batch gradient descent."""
    x_train = np.c_[x_train, np.ones(len(x_train))]
    x_test = np.c_[x_test, np.ones(len(x_test))]
    w = np.zeros(x_train.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(x_train @ w)))
        w -= lr * (x_train.T @ (p - y_train) / len(y_train) + l2 * w)
    p = np.clip(1.0 / (1.0 + np.exp(-(x_test @ w))), 1e-9, 1 - 1e-9)
    return float(-np.mean(y_test * np.log(p) + (1 - y_test) * np.log(1 - p)))


def _leak_losses(p: np.ndarray, kind: np.ndarray, extra: np.ndarray | None = None) -> tuple[float, float]:
    """Held-out log-loss separating object returns from clutter, ghosts and sidelobes: measurements only, and measurements plus
    the state fields (plus ``extra`` columns)."""
    sel = np.isin(kind, (KIND_OBJECT, KIND_CLUTTER, KIND_GHOST, KIND_SIDELOBE))
    p, y = p[sel], (kind[sel] == KIND_OBJECT).astype(float)
    fields = p[:, [F[f] for f in STATE]]
    if extra is not None:
        fields = np.c_[fields, extra[sel]]
    split = np.random.default_rng(0).random(len(y)) < 0.6
    m_tr, edges = _binned(_measurements(p[split]))
    m_te, _ = _binned(_measurements(p[~split]), edges)
    f_tr, values = _categorical(fields[split])
    f_te, _ = _categorical(fields[~split], values)
    base = _logistic_loss(m_tr, y[split], m_te, y[~split])
    with_fields = _logistic_loss(np.c_[m_tr, f_tr], y[split], np.c_[m_te, f_te], y[~split])
    return base, with_fields


@pytest.fixture(scope="module")
def sweeps(nuscenes_rig):
    return _sweeps(nuscenes_rig)


def test_state_fields_carry_no_ground_truth(sweeps):
    """A logistic regression separating object returns from clutter, ghosts and sidelobes does no better with the
    state fields than on the measurements alone; the same test with a leaky field added shows it would notice."""
    p, kind = sweeps
    assert (kind == KIND_OBJECT).sum() > 500 and np.isin(kind, (KIND_CLUTTER, KIND_GHOST, KIND_SIDELOBE)).sum() > 500
    base, with_fields = _leak_losses(p, kind)
    print(f"held-out log-loss: measurements {base:.4f}, + state fields {with_fields:.4f} nats")
    assert base - with_fields < 0.005, (base, with_fields)
    # power check: a field that is 1 for 30 % of clutter/ghost returns (as the old pdh0 flag was) is caught
    leak = ((kind != KIND_OBJECT) & (np.random.default_rng(1).random(len(kind)) < 0.3)).astype(float)[:, None]
    base_l, with_leak = _leak_losses(p, kind, leak)
    print(f"with a leaky field: {base_l:.4f} -> {with_leak:.4f} nats")
    assert base_l - with_leak > 0.01, (base_l, with_leak)


def _lone_box_snapshot(cls: str, x: float, y: float = 0.0, yaw: float = 0.0) -> W.Snapshot:
    l, w, h = W.SIZE_LWH[cls]
    box = np.array([[x, y, h / 2, l, w, h, yaw]])
    return W.Snapshot(0, box, np.array([0], np.int32), np.zeros(1, np.int32), np.zeros((1, 3), np.float32),
                      np.array([W.RCS_DBSM[cls]], np.float32), box.copy(), np.zeros((1, 2)),
                      np.array([W.CLASSES.index(cls)]))


@pytest.mark.parametrize("cls", ["car", "pedestrian"])
def test_detection_falls_with_range_and_rcs(cls):
    """Radar equation with Swerling I: the share of sweeps that see a lone object falls with range; a pedestrian
    (-8 dBsm) is seen less often than a car (10 dBsm) at the same range."""
    def seen(c: str, x: float) -> float:
        hits = 0
        for i in range(150):
            _, kind, _ = simulate_radar(_lone_box_snapshot(c, x), np.eye(4), np.zeros(2),
                                        np.random.default_rng([i, int(x)]), with_kind=True)
            hits += (kind == KIND_OBJECT).any()
        return hits / 150
    near, far = seen(cls, 8.0), seen(cls, 45.0)
    assert near > far + 0.2, (near, far)
    if cls == "pedestrian":
        assert seen("car", 20.0) > seen("pedestrian", 20.0) + 0.3


def test_cluster_list_limit_and_fields_in_range(sweeps):
    p, _ = sweeps
    assert set(np.unique(p[:, F["ambig_state"]])) <= {0, 1, 2, 3}
    assert set(np.unique(p[:, F["pdh0"]])) <= {1, 3, 6}
    assert np.all(p[:, F["z"]] == 0)
    # 400 strong poles in view: never more clusters than the sensor's list holds
    g = np.random.default_rng(0)
    r, az = g.uniform(5, 70, 400), np.radians(g.uniform(-55, 55, 400))
    boxes = np.c_[r * np.cos(az), r * np.sin(az), np.full(400, 3.0), np.full(400, 0.3), np.full(400, 0.3),
                  np.full(400, 6.0), np.zeros(400)]
    many = W.Snapshot(0, boxes, np.full(400, -1, np.int32), np.zeros(400, np.int32), np.zeros((400, 3), np.float32),
                      np.full(400, 30.0, np.float32), np.zeros((0, 7)), np.zeros((0, 2)), np.zeros(0, np.int64))
    assert len(simulate_radar(many, np.eye(4), np.zeros(2), np.random.default_rng(0))) == MAX_CLUSTERS


def test_default_world_statistics_as_calibrated(synth_root):
    """The shared test world (5 scenes x 14 key frames, seed 3) against the nuScenes figures the radar is
    calibrated to: 197 +- 50 returns per key frame after the default filters, 61 +- 6 % of in-range boxes without
    radar return, pedestrians, bicycles and cones at least 0.2 above cars."""
    from perception.eval.stats import measure

    s = measure(synth_root, "v1.0-synth")
    mean = s["returns_per_key_frame"]["filtered"]["mean"]
    assert 147 <= mean <= 247, mean
    nr = s["no_radar"]
    assert 0.55 <= nr["overall"]["fraction"] <= 0.67, nr["overall"]
    car = nr["per_class"]["car"]["fraction"]
    for c in ("pedestrian", "bicycle", "traffic_cone"):
        assert nr["per_class"][c]["fraction"] >= car + 0.2, (c, nr["per_class"][c], car)
    assert s["num_radar_pts_recount"]["equal"] == s["num_radar_pts_recount"]["annotations"]
