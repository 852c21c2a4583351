"""Time sync: ego straight or turning at 20 m/s, cameras captured up to 50 ms from t0, radar sweeps at 13 Hz."""
import numpy as np
import pytest
from numpy.testing import assert_allclose

from calibration.rig import Radar
from calibration.sync import PoseStream, SyncError, camera_img_from_ego, radar_sweep_to_ego
from calibration.transforms import invert, make_transform, project_points, rotate_vectors, transform_points, yaw_to_quaternion

SPEED = 20.0  # m/s
T0 = 1_000_000_000  # µs


def ego_pose(t_us: int, yaw_rate: float) -> np.ndarray:
    """Analytic global_from_ego: constant speed along a straight line (yaw_rate 0) or a circle."""
    s = (t_us - T0) * 1e-6
    if yaw_rate == 0.0:
        x, y, yaw = SPEED * s, 0.0, 0.0
    else:
        r = SPEED / yaw_rate
        yaw = yaw_rate * s
        x, y = r * np.sin(yaw), r * (1.0 - np.cos(yaw))
    return make_transform(yaw_to_quaternion(yaw), [100.0 + x, -50.0 + y, 0.3])


def pose_stream(yaw_rate: float, hz: float = 100.0) -> PoseStream:
    """Poses sampled at ``hz`` over t0 +- 1 s (like a localisation stream, not at the sensor times)."""
    ts = np.arange(T0 - 1_000_000, T0 + 1_000_001, int(1e6 / hz)) + 3_333  # offset: never exactly at a capture time
    return PoseStream(ts, np.stack([ego_pose(int(t), yaw_rate) for t in ts]))


@pytest.mark.parametrize("yaw_rate", [0.0, 0.4], ids=["straight", "turning_r50m"])
def test_camera_reprojection_with_and_without_sync(nuscenes_rig, yaw_rate, capsys):
    rng = np.random.default_rng(0)
    poses = pose_stream(yaw_rate)
    offsets_ms = np.linspace(-50, 50, len(nuscenes_rig.cameras))
    worst_sync, worst_naive = 0.0, np.inf
    report = []
    for off_ms, cam in zip(offsets_ms, nuscenes_rig.cameras.values()):
        t_cap = T0 + int(off_ms * 1000)
        # static world points 5-60 m in front of this camera at t0, expressed in ego@t0
        depth = rng.uniform(5.0, 60.0, 200)
        dirs = np.c_[rng.uniform(-0.5, 0.5, 200), rng.uniform(-0.3, 0.3, 200), np.ones(200)]
        pts_cam = dirs * depth[:, None]
        pts_ego_t0 = transform_points(cam.ego_from_camera, pts_cam)
        # truth: the camera really was at ego(t_cap) when it took the picture
        global_from_ego_t0 = ego_pose(T0, yaw_rate)
        pts_global = transform_points(global_from_ego_t0, pts_ego_t0)
        truth = project_points(cam.img_from_ego @ invert(ego_pose(t_cap, yaw_rate)), pts_global)
        synced, record = camera_img_from_ego(cam, T0, t_cap, poses, enabled=True)
        naive, _ = camera_img_from_ego(cam, T0, t_cap, poses, enabled=False)
        ok = truth[:, 2] > 1.0
        err_sync = np.linalg.norm(project_points(synced, pts_ego_t0)[ok, :2] - truth[ok, :2], axis=1).max()
        err_naive = np.linalg.norm(project_points(naive, pts_ego_t0)[ok, :2] - truth[ok, :2], axis=1).max()
        assert record.offset_us == int(off_ms * 1000)
        assert record.ego_translation_m == pytest.approx(SPEED * abs(off_ms) / 1000, rel=1e-3)
        worst_sync = max(worst_sync, err_sync)
        if abs(off_ms) >= 30:
            worst_naive = min(worst_naive, err_naive)
        report.append(f"{cam.name} {off_ms:+.0f} ms: synced {err_sync:.4f} px, naive {err_naive:.1f} px")
    with capsys.disabled():
        print(f"\n[sync {yaw_rate=}] " + "; ".join(report))
    assert worst_sync < 0.1, report
    assert worst_naive > 5.0, report  # without compensation the error is plainly visible


@pytest.mark.parametrize("yaw_rate", [0.0, 0.4], ids=["straight", "turning_r50m"])
def test_static_point_in_six_radar_sweeps_lands_in_one_place(nuscenes_rig, yaw_rate):
    poses = pose_stream(yaw_rate)
    radar = nuscenes_rig.radars["RADAR_FRONT_LEFT"]
    landmark_global = transform_points(ego_pose(T0, yaw_rate), np.array([[8.0, 15.0, 0.7]]))
    sweep_times = [T0 - int(k * 1e6 / 13.0) + 1234 for k in range(6)]  # 13 Hz, unsynchronised to t0
    placed, placed_naive = [], []
    for t in sweep_times:
        # what the radar measured: the landmark in its own frame at the sweep time
        radar_from_global = invert(radar.ego_from_radar) @ invert(ego_pose(t, yaw_rate))
        meas = transform_points(radar_from_global, landmark_global)
        sweep = radar_sweep_to_ego(radar, meas, np.zeros((1, 2)), T0, t, poses)
        placed.append(sweep.xyz[0])
        placed_naive.append(radar_sweep_to_ego(radar, meas, np.zeros((1, 2)), T0, t, poses, enabled=False).xyz[0])
        assert sweep.dt[0] == pytest.approx((T0 - t) * 1e-6)
    placed = np.array(placed, dtype=np.float64)
    spread = np.linalg.norm(placed - placed.mean(0), axis=1).max()
    assert spread < 0.01, f"spread {spread:.4f} m"
    assert_allclose(placed.mean(0), [8.0, 15.0, 0.7], atol=0.01)
    naive_spread = np.linalg.norm(np.array(placed_naive) - np.mean(placed_naive, 0), axis=1).max()
    assert naive_spread > 1.0  # 0.38 s at 20 m/s smears the landmark by metres


def test_radar_velocity_rotated_into_ego_t0():
    """A car moving at a known global velocity: nuScenes-style vx_comp/vy_comp in the radar frame become
    its velocity over ground in ego@t0 axes; a radial radar gives the line-of-sight component."""
    yaw_rate = 0.4
    poses = pose_stream(yaw_rate)
    radar = Radar("RADAR_X", make_transform(yaw_to_quaternion(np.radians(60)), [2.0, 0.8, 0.5]), "cartesian")
    v_global = np.array([[3.0, -4.0, 0.0]])
    t = T0 - 200_000
    radar_from_global = invert(radar.ego_from_radar) @ invert(ego_pose(t, yaw_rate))
    v_radar = rotate_vectors(radar_from_global, v_global)
    pos_radar = np.array([[20.0, 5.0, 0.0]])
    sweep = radar_sweep_to_ego(radar, pos_radar, v_radar[:, :2], T0, t, poses)
    v_ego_t0 = rotate_vectors(invert(ego_pose(T0, yaw_rate)), v_global)
    assert_allclose(sweep.velocity[0], v_ego_t0[0, :2], atol=1e-4)
    # radial: the projection of the velocity on the line of sight, as a vector along it
    radial = Radar("RADAR_R", radar.ego_from_radar, "radial")
    los = pos_radar[0] / np.linalg.norm(pos_radar[0])
    vr = float(v_radar[0] @ los)
    sweep_r = radar_sweep_to_ego(radial, pos_radar, np.array([vr]), T0, t, poses)
    los_ego = rotate_vectors(invert(ego_pose(T0, yaw_rate)) @ ego_pose(t, yaw_rate) @ radar.ego_from_radar, los[None])[0]
    assert_allclose(sweep_r.velocity[0], (vr * los_ego)[:2], atol=1e-4)


def test_pose_stream_limits():
    poses = PoseStream(np.array([0, 100_000]), np.stack([ego_pose(T0, 0.0), ego_pose(T0 + 100_000, 0.0)]),
                       max_extrapolation_us=50_000)
    assert_allclose(poses.at(50_000)[:3, 3], ego_pose(T0 + 50_000, 0.0)[:3, 3])
    assert_allclose(poses.at(140_000)[:3, 3], ego_pose(T0 + 140_000, 0.0)[:3, 3])  # extrapolated
    with pytest.raises(SyncError, match=r"sensor CAM_FRONT: time 200000 µs is 100000 µs outside"):
        poses.at(200_000, "CAM_FRONT")
    with pytest.raises(ValueError, match="strictly increasing"):
        PoseStream(np.array([5, 5]), np.stack([np.eye(4), np.eye(4)]))
    rows = [{"timestamp": 10, "translation": [1, 2, 3], "rotation": [1, 0, 0, 0]},
            {"timestamp": 0, "translation": [0, 0, 0], "rotation": [1, 0, 0, 0]}]
    stream = PoseStream.from_records(rows)
    assert stream.timestamps.tolist() == [0, 10]
    assert stream.gap_us(7) == 3
