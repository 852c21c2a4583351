"""The synthetic world: devkit compatibility, geometry of rendering and radar, timing, determinism, rigs."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from calibration.transforms import invert, project_points, transform_points
from perception.cli.synth import main as synth_main
from perception.data.io import read_radar_pcd
from perception.data.synthetic import world as W
from perception.data.synthetic.generate import VERSION, SynthOptions, generate
from perception.data.synthetic.radar import KIND_OBJECT, SIGMA_AZIMUTH_DEG, SIGMA_DOPPLER, SIGMA_RANGE, simulate_radar
from perception.data.synthetic.render import CameraRenderer, make_textures

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def nusc(synth_root):
    from nuscenes.nuscenes import NuScenes

    return NuScenes(VERSION, str(synth_root), verbose=False)


def _sd_rows(root: Path) -> list[dict]:
    return json.loads((root / VERSION / "sample_data.json").read_text())


def test_devkit_loads_and_gt_as_predictions_scores_one(nusc, synth_root, tmp_path):
    """GT boxes the devkit evaluates (num_lidar_pts + num_radar_pts > 0), copied as predictions: mAP = NDS = 1."""
    from perception.eval.detection import gt_boxes_as_results, results_json, run_devkit

    splits = json.loads((synth_root / VERSION / "splits.json").read_text())
    assert len(splits["synth_train"]) == 4 and splits["synth_val"] == ["scene-0004"]
    tokens = [s["token"] for s in nusc.sample if nusc.get("scene", s["scene_token"])["name"] in splits["synth_val"]]
    summary = run_devkit(nusc, results_json(gt_boxes_as_results(nusc, tokens), tokens), "synth_val", tmp_path)
    assert summary["mean_ap"] == pytest.approx(1.0, abs=1e-9)
    assert summary["nd_score"] == pytest.approx(1.0, abs=1e-9)
    # every detection class has evaluable GT in the validation split (else its AP would be 0, not 1)
    assert set(summary["mean_dist_aps"]) == set(W.CLASSES)


def test_every_class_in_both_splits_after_filters(synth_root):
    from perception.data.synthetic.generate import class_counts_after_filters

    rows = {name: json.loads((synth_root / VERSION / f"{name}.json").read_text())
            for name in ("sample", "scene", "ego_pose", "sensor", "calibrated_sensor", "sample_data", "instance",
                         "category", "sample_annotation")}
    counts = class_counts_after_filters(rows, json.loads((synth_root / VERSION / "splits.json").read_text()))
    for split in ("synth_train", "synth_val"):
        assert set(counts[split]) == set(W.CLASSES), (split, counts[split])


def test_prediction_helper_returns_12_future_steps(nusc):
    from nuscenes.prediction import PredictHelper

    helper = PredictHelper(nusc)
    scene = nusc.scene[0]
    sample = nusc.get("sample", scene["first_sample_token"])
    moving = 0
    for tok in sample["anns"]:
        ann = nusc.get("sample_annotation", tok)
        if ann["attribute_tokens"] and nusc.get("attribute", ann["attribute_tokens"][0])["name"] in (
                "vehicle.moving", "pedestrian.moving"):
            future = helper.get_future_for_agent(ann["instance_token"], sample["token"], 6, in_agent_frame=False)
            if len(future) == 12:
                moving += 1
                assert np.all(np.isfinite(future))
    assert moving >= 1


def test_annotations_are_honest(nusc, synth_root):
    """num_lidar_pts equals the devkit's count of the written lidar points inside the box; attributes match speed."""
    from nuscenes.utils.data_classes import LidarPointCloud
    from nuscenes.utils.geometry_utils import points_in_box

    sample = nusc.sample[3]
    sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    pc = LidarPointCloud.from_file(str(synth_root / sd["filename"]))
    checked = 0
    for tok in sample["anns"]:
        ann = nusc.get("sample_annotation", tok)
        box = nusc.get_box(tok)
        # the lidar file is in the lidar frame: move the box there, as the devkit's tools do
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        pose = nusc.get("ego_pose", sd["ego_pose_token"])
        from pyquaternion import Quaternion

        box.translate(-np.array(pose["translation"]))
        box.rotate(Quaternion(pose["rotation"]).inverse)
        box.translate(-np.array(cs["translation"]))
        box.rotate(Quaternion(cs["rotation"]).inverse)
        n = int(points_in_box(box, pc.points[:3]).sum())
        assert abs(n - ann["num_lidar_pts"]) <= max(1, 0.02 * n), (ann["category_name"], n, ann["num_lidar_pts"])
        checked += n > 0
    assert checked >= 5


def test_rendered_pixels_fall_inside_projected_boxes(nuscenes_rig):
    scene = W.generate_scene(11, 0, 4.0, 1_000_000_000)
    tex, noise = make_textures(0)
    t = scene.t_start_us + 2_000_000
    snap = scene.snapshot(t)
    ego = scene.ego_pose(t)
    rng = np.random.default_rng(0)
    checked = 0
    for cam in nuscenes_rig.cameras.values():
        cam = cam.scaled(0.25)
        img, ids = CameraRenderer(cam.intrinsics, cam.width, cam.height, tex, noise).render(
            snap, ego @ cam.ego_from_camera, scene.sun, rng, with_ids=True)
        assert img.shape == (cam.height, cam.width, 3) and img.dtype == np.uint8
        img_from_global = cam.img_from_ego @ invert(ego)
        for a in np.unique(ids[ids >= 0]):
            x, y, z, l, w, h, yaw = snap.actor_boxes[a]
            corners = np.array([[sx * l / 2, sy * w / 2, sz * h / 2] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
            c, s = np.cos(yaw), np.sin(yaw)
            corners = corners @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]).T + [x, y, z]
            uvd = project_points(img_from_global, corners)
            if np.any(uvd[:, 2] <= 0.5):
                continue
            vs, us = np.nonzero(ids == a)
            inside = ((us >= uvd[:, 0].min() - 1) & (us <= uvd[:, 0].max() + 1)
                      & (vs >= uvd[:, 1].min() - 1) & (vs <= uvd[:, 1].max() + 1))
            assert inside.all(), f"{W.CLASSES[snap.actor_class[a]]}: {np.sum(~inside)} pixels outside its box"
            checked += 1
    assert checked >= 10


def _nearest_actor(points_xy: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance (BEV) from each point to the nearest actor box outline (0 inside) and that box's index."""
    d = np.full((len(points_xy), len(boxes)), np.inf)
    for i, (x, y, _, l, w, _, yaw) in enumerate(boxes):
        rel = points_xy - [x, y]
        c, s = np.cos(yaw), np.sin(yaw)
        lx, ly = c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1]
        dx, dy = np.maximum(np.abs(lx) - l / 2, 0), np.maximum(np.abs(ly) - w / 2, 0)
        d[:, i] = np.hypot(dx, dy)
    return d.min(1), d.argmin(1)


def test_radar_returns_on_box_surfaces_with_doppler(nuscenes_rig):
    """Returns associated with an actor lie on its box outline within the radar's noise; their compensated
    Doppler equals the actor's radial velocity over ground within noise."""
    errors_pos, errors_dop, errors_raw, bound_pos = [], [], [], []
    for seed in range(4):
        scene = W.generate_scene(20 + seed, 0, 6.0, 1_000_000_000)
        for step in range(8):
            t = scene.t_start_us + 300_000 + step * 600_000
            snap = scene.snapshot(t)
            ego = scene.ego_pose(t)
            v_ego, _ = scene.ego_velocity(t)
            for radar in nuscenes_rig.radars.values():
                g_from_r = ego @ radar.ego_from_radar
                pts, kind, _ = simulate_radar(snap, g_from_r, v_ego, np.random.default_rng([seed, step]), with_kind=True)
                obj = kind == KIND_OBJECT  # the simulator's ground truth (never written: the fields do not say it)
                xy_g = transform_points(g_from_r, pts[obj, :3].astype(np.float64))[:, :2]
                d, idx = _nearest_actor(xy_g, snap.actor_boxes)
                near = d < 3.0  # returns of actors (buildings and poles are further from any actor box)
                rng_m = np.linalg.norm(pts[obj, :2], axis=1)[near]
                errors_pos += list(d[near])
                # noise: 3 sigma of range and of azimuth (edge of the field of view) plus x/y quantisation
                bound_pos += list(3 * SIGMA_RANGE + 3 * rng_m * np.radians(2 * SIGMA_AZIMUTH_DEG) + 0.15)
                los = xy_g[near] - g_from_r[:2, 3]
                los /= np.linalg.norm(los, axis=1, keepdims=True)
                v_true = np.sum(snap.actor_velocity[idx[near]] * los, axis=1)
                vc = pts[obj][near][:, 8:10]  # vx_comp, vy_comp in the radar frame
                v_meas = np.linalg.norm(vc, axis=1) * np.sign(np.sum(vc * pts[obj][near][:, :2], axis=1))
                moving = np.linalg.norm(snap.actor_velocity[idx[near]], axis=1) > 1.0
                errors_dop += list((v_meas - v_true)[moving])
                # raw Doppler: radial velocity relative to the moving sensor (quantised to 0.25 m/s)
                v_sensor = v_ego  # the lever-arm term is ignored here: sub-0.1 m/s at these yaw rates
                raw = pts[obj][near][:, 6:8]
                v_raw = np.linalg.norm(raw, axis=1) * np.sign(np.sum(raw * pts[obj][near][:, :2], axis=1))
                v_rel = np.sum((snap.actor_velocity[idx[near]] - v_sensor) * los, axis=1)
                errors_raw += list(v_raw - v_rel)
    errors_pos, bound_pos, errors_dop = np.array(errors_pos), np.array(bound_pos), np.array(errors_dop)
    errors_raw = np.array(errors_raw)
    assert len(errors_pos) > 200 and len(errors_dop) > 30
    assert np.mean(errors_pos <= bound_pos) > 0.95
    assert np.median(errors_pos) < 0.3
    # Doppler noise 0.12 m/s; the line of sight from the noisy azimuth adds a little
    assert np.mean(np.abs(errors_dop) < 4 * SIGMA_DOPPLER + 0.3) > 0.9
    assert np.mean(np.abs(errors_raw) < 4 * SIGMA_DOPPLER + 0.125 + 0.4) > 0.9


def test_sensor_timing(synth_sweeps, stereo_rig):
    rows = _sd_rows(synth_sweeps)
    sensors = {s["token"]: s["channel"] for s in json.loads((synth_sweeps / VERSION / "sensor.json").read_text())}
    cs = {c["token"]: sensors[c["sensor_token"]] for c in json.loads((synth_sweeps / VERSION / "calibrated_sensor.json")
                                                                    .read_text())}
    by_channel: dict[str, list[dict]] = {}
    for r in rows:
        by_channel.setdefault(cs[r["calibrated_sensor_token"]], []).append(r)
    samples = json.loads((synth_sweeps / VERSION / "sample.json").read_text())
    t0 = {s["token"]: s["timestamp"] for s in samples}
    for ch, rs in by_channel.items():
        ts = np.sort([r["timestamp"] for r in rs])
        if ch.startswith("CAM"):
            assert np.median(np.diff(ts)) == pytest.approx(1e6 / 12, abs=2)  # 12 Hz
        elif ch.startswith("RADAR"):
            assert np.median(np.diff(ts)) == pytest.approx(1e6 / 13, abs=2)  # 13 Hz
    # cameras of one key frame are staggered (like nuScenes: up to ~45 ms before the lidar time)
    key = [r for r in rows if r["is_key_frame"] and cs[r["calibrated_sensor_token"]].startswith("CAM")
           and r["sample_token"] == samples[1]["token"]]
    offsets = np.array([r["timestamp"] - t0[r["sample_token"]] for r in key])
    assert len(offsets) == 6 and len(set(offsets)) == 6
    assert -50_000 < offsets.min() and offsets.max() <= 1_000 and offsets.max() - offsets.min() > 30_000
    # radar units are not aligned with each other
    phases = {ch: rs[0]["timestamp"] % 76_923 for ch, rs in by_channel.items() if ch.startswith("RADAR")}
    assert len(set(phases.values())) == 5
    # every radar key frame is the sweep nearest to its sample time
    for ch, rs in by_channel.items():
        if ch.startswith("RADAR"):
            for r in rs:
                if r["is_key_frame"]:
                    assert min(abs(x["timestamp"] - t0[r["sample_token"]]) for x in rs) == \
                        abs(r["timestamp"] - t0[r["sample_token"]])
    # sweeps are written and chained
    assert any("sweeps/" in r["filename"] for r in rows)
    chain = by_channel["CAM_FRONT"]
    assert sum(1 for r in chain if r["prev"] == "") == 1 and sum(1 for r in chain if r["next"] == "") == 1
    # the devkit's radar reader accepts the files (it needs the trailing padding real files have)
    from nuscenes.utils.data_classes import RadarPointCloud

    pcd = next(r for r in rows if r["filename"].endswith(".pcd"))
    RadarPointCloud.from_file(str(synth_sweeps / pcd["filename"]))
    assert read_radar_pcd(synth_sweeps / pcd["filename"]).points.shape[1] == 18


def test_bag_written_per_scene(synth_sweeps):
    from rosbags.rosbag2 import Reader

    with Reader(synth_sweeps / "bags" / "scene-0000") as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    rows = _sd_rows(synth_sweeps)
    n_cam = sum(1 for r in rows if r["filename"].endswith(".jpg") and "CAM_FRONT/" in r["filename"])
    assert counts["/cameras/CAM_FRONT/image/compressed"] == n_cam
    assert counts["/tf_static"] == 1


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_and_same_world_under_two_rigs(tmp_path, stereo_rig):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for root in (a, b):
        generate(SynthOptions(out=root, scenes=1, samples_per_scene=2, seed=9, image_scale=0.1))
    assert _digest(a) == _digest(b)  # byte-identical tables and sensor files
    generate(SynthOptions(out=c, scenes=1, samples_per_scene=2, seed=9, image_scale=0.1, rig=stereo_rig))
    ann_a = json.loads((a / VERSION / "sample_annotation.json").read_text())
    ann_c = json.loads((c / VERSION / "sample_annotation.json").read_text())
    assert ann_a == ann_c  # the same world (both rigs carry the same lidar and radars)
    poses = [json.loads((r / VERSION / "sample.json").read_text()) for r in (a, c)]
    assert poses[0] == poses[1]
    rig_c = (c / VERSION / "rig.yaml").read_text()
    assert "stereo_pairs:\n- left: CAM_FRONT_L" in rig_c or "left: CAM_FRONT_L" in rig_c
    # a different seed is a different world
    d = tmp_path / "d"
    generate(SynthOptions(out=d, scenes=1, samples_per_scene=2, seed=10, image_scale=0.1, keyframes_only=True))
    assert json.loads((d / VERSION / "sample_annotation.json").read_text()) != ann_a


def test_cli_bad_rig_and_existing_output(tmp_path, capsys):
    rig = tmp_path / "bad.yaml"
    rig.write_text((REPO / "configs" / "rigs" / "nuscenes.yaml").read_text().replace("doppler: cartesian",
                                                                                     "doppler: sideways", 1))
    assert synth_main(["--out", str(tmp_path / "o"), "--rig", str(rig), "--scenes", "1", "--samples-per-scene", "2",
                       "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "'doppler'" in err and "sideways" in err
    assert synth_main(["--out", str(tmp_path / "o"), "--scenes", "1", "--samples-per-scene", "1", "--no-progress"]) == 1
    assert "--samples-per-scene must be >= 2" in capsys.readouterr().err
