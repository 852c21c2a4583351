"""write_scene_bag: a nuScenes-format scene -> ROS 2 bag (MCAP), read back with rosbags AND with mcap/mcap_ros2.

The fixture is written here (not the session ``nuscenes_fixture``) because the bag needs sweeps, a second
scene to leave out, timestamps shared by two sensors, and the sensor files themselves."""
from __future__ import annotations

import json
import shutil
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from calibration.transforms import matrix_to_quaternion
from perception.data.io import (
    NUSCENES_RADAR_FIELDS,
    NUSCENES_RADAR_SIZES,
    NUSCENES_RADAR_TYPES,
    SensorFileError,
    read_lidar_bin,
    read_radar_pcd,
    write_radar_pcd,
)
from perception.data.synthetic.bags import write_scene_bag
from perception.replay.topics import BAG_TOPICS, default_topic_map

camera_image_topic, camera_info_topic = BAG_TOPICS["camera"].topic, BAG_TOPICS["camera_info"].topic
radar_points_topic, lidar_points_topic = BAG_TOPICS["radar"].topic, BAG_TOPICS["lidar"].topic

VERSION = "v1.0-bagtest"
IMAGE_W, IMAGE_H = 64, 36  # 1600x900 scaled by 0.04: tiny JPEGs keep the test fast
BASE_US = 1_600_000_000_123_457  # odd microseconds: a float seconds round trip would show
SWEEPS = {"camera": 1, "radar": 2, "lidar": 3}  # per key frame; different counts catch a mixed-up channel
# PointField datatypes, written out from the ROS message definition (not from the code under test).
INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = range(1, 9)
PCD_TO_POINTFIELD = {("F", 4): FLOAT32, ("I", 1): INT8, ("I", 2): INT16}
POINTFIELD_NUMPY = {INT8: "i1", UINT8: "u1", INT16: "<i2", UINT16: "<u2", INT32: "<i4", UINT32: "<u4",
                    FLOAT32: "<f4", FLOAT64: "<f8"}


def _token(*parts: object) -> str:
    import hashlib

    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def _ego_pose(ts: int) -> tuple[list[float], list[float]]:
    """global_from_ego at ``ts`` (us): a car driving and turning, so that rotation order errors show.
    A pure function of the timestamp: rows sharing a timestamp share the pose, as in nuScenes."""
    t = (ts - BASE_US) * 1e-6
    yaw = 0.3 + 0.2 * t
    return [100.0 + 8.0 * t, -20.0 + 0.5 * t * t, 0.1], [float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2))]


def _random_radar_points(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 18) float32 with integral values in the integer fields, in the ranges of their PCD types."""
    pts = rng.normal(0, 20, (n, 18)).astype(np.float32)
    for i, (kind, size) in enumerate(zip(NUSCENES_RADAR_TYPES, NUSCENES_RADAR_SIZES)):
        if kind == "I":
            hi = 2 ** (8 * size - 1)
            pts[:, i] = rng.integers(-hi, hi, n)
    return pts


def write_bag_fixture(root: Path, rig) -> dict:
    """A nuScenes-format root with all 13 tables and every sensor file: scene A (2 key frames) and scene B
    (1 key frame); after each key frame, ``SWEEPS[modality]`` sweeps per channel. LIDAR_TOP and RADAR_FRONT
    share their key-frame timestamps. Returns {'scene_a', 'scene_b', 'version'}."""
    from PIL import Image

    rng = np.random.default_rng(0)
    tables: dict[str, list] = {k: [] for k in (
        "attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map", "sample",
        "sample_annotation", "sample_data", "scene", "sensor", "visibility")}
    log = _token("log")
    tables["log"].append({"token": log, "logfile": "bag-log", "vehicle": "fixture", "date_captured": "2026-01-01",
                          "location": "fixture-city"})
    (root / "maps").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "maps" / "fixture.png")
    tables["map"].append({"token": _token("map"), "log_tokens": [log], "category": "semantic_prior",
                          "filename": "maps/fixture.png"})
    tables["category"].append({"token": _token("cat"), "name": "vehicle.car", "description": "car", "index": 17})
    tables["attribute"].append({"token": _token("attr"), "name": "vehicle.moving", "description": "moving"})
    for level in ("v0-40", "v40-60", "v60-80", "v80-100"):
        tables["visibility"].append({"token": str(len(tables["visibility"]) + 1), "level": level, "description": level})

    sensors = ([(n, "camera") for n in rig.cameras] + [(n, "radar") for n in rig.radars]
               + [(n, "lidar") for n in rig.lidars])
    offsets_us = {name: 1000 * (j + 1) for j, (name, _) in enumerate(sensors)}
    offsets_us["LIDAR_TOP"] = offsets_us["RADAR_FRONT"]
    for name, modality in sensors:
        pose = rig.sensor_pose(name)  # (4, 4) ego_from_sensor
        k = []
        if modality == "camera":
            k = (np.asarray(rig.cameras[name].intrinsics) * [[IMAGE_W / 1600], [IMAGE_H / 900], [1.0]]).tolist()
        tables["sensor"].append({"token": _token("sensor", name), "channel": name, "modality": modality})
        tables["calibrated_sensor"].append({
            "token": _token("cs", name), "sensor_token": _token("sensor", name), "translation": pose[:3, 3].tolist(),
            "rotation": matrix_to_quaternion(pose[:3, :3]).tolist(), "camera_intrinsic": k})

    def add_sample_data(scene: str, sample: str, name: str, modality: str, ts: int, key: bool, chain: dict) -> None:
        sd, ep = _token("sd", scene, name, ts), _token("ego", scene, name, ts)
        translation, rotation = _ego_pose(ts)
        tables["ego_pose"].append({"token": ep, "timestamp": ts, "translation": translation, "rotation": rotation})
        ext = {"camera": "jpg", "radar": "pcd", "lidar": "pcd.bin"}[modality]
        filename = f"{'samples' if key else 'sweeps'}/{name}/{name}__{ts}.{ext}"
        path = root / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        if modality == "camera":
            Image.fromarray(rng.integers(0, 256, (IMAGE_H, IMAGE_W, 3), dtype=np.uint8)).save(path, quality=90)
        elif modality == "radar":
            write_radar_pcd(path, _random_radar_points(rng, int(rng.integers(1, 40))))
        else:
            rng.normal(0, 10, (int(rng.integers(50, 200)), 5)).astype(np.float32).tofile(path)
        w, h = (IMAGE_W, IMAGE_H) if modality == "camera" else (0, 0)
        tables["sample_data"].append({
            "token": sd, "sample_token": sample, "ego_pose_token": ep, "calibrated_sensor_token": _token("cs", name),
            "timestamp": ts, "fileformat": ext.split(".")[0], "is_key_frame": key, "height": h, "width": w,
            "filename": filename, "prev": chain.get(name, ""), "next": ""})
        if name in chain:
            next(r for r in tables["sample_data"] if r["token"] == chain[name])["next"] = sd
        chain[name] = sd

    inst = _token("instance")
    annotations = []
    for scene_name, n_samples, start_us in (("scene-a", 2, BASE_US), ("scene-b", 1, BASE_US + 60_000_000)):
        scene = _token("scene", scene_name)
        samples = [_token("sample", scene_name, i) for i in range(n_samples)]
        chain: dict[str, str] = {}
        for i, sample in enumerate(samples):
            t = start_us + i * 500_000
            tables["sample"].append({"token": sample, "timestamp": t, "scene_token": scene,
                                     "prev": samples[i - 1] if i else "",
                                     "next": samples[i + 1] if i + 1 < n_samples else ""})
            for name, modality in sensors:
                add_sample_data(scene_name, sample, name, modality, t + offsets_us[name], True, chain)
            for name, modality in sensors:  # sweeps after the key frame, before the next one (+50 ms each)
                for s in range(SWEEPS[modality]):
                    add_sample_data(scene_name, sample, name, modality, t + offsets_us[name] + 50_000 * (s + 1),
                                    False, chain)
            ann = _token("ann", scene_name, i)
            annotations.append(ann)
            tables["sample_annotation"].append({
                "token": ann, "sample_token": sample, "instance_token": inst, "visibility_token": "4",
                "attribute_tokens": [_token("attr")], "translation": [15.0, 2.0, 0.8], "size": [1.9, 4.6, 1.6],
                "rotation": [1.0, 0.0, 0.0, 0.0], "prev": "", "next": "", "num_lidar_pts": 10, "num_radar_pts": 2})
        tables["scene"].append({"token": scene, "log_token": log, "nbr_samples": n_samples, "name": scene_name,
                                "first_sample_token": samples[0], "last_sample_token": samples[-1],
                                "description": scene_name})
    for a, b in pairwise(annotations):
        next(r for r in tables["sample_annotation"] if r["token"] == a)["next"] = b
        next(r for r in tables["sample_annotation"] if r["token"] == b)["prev"] = a
    tables["instance"].append({"token": inst, "category_token": _token("cat"), "nbr_annotations": len(annotations),
                               "first_annotation_token": annotations[0], "last_annotation_token": annotations[-1]})
    (root / VERSION).mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        (root / VERSION / f"{name}.json").write_text(json.dumps(rows))
    return {"scene_a": _token("scene", "scene-a"), "scene_b": _token("scene", "scene-b"), "version": VERSION}


def load_nusc(root: Path):
    from nuscenes.nuscenes import NuScenes

    return NuScenes(version=VERSION, dataroot=str(root), verbose=False)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, nuscenes_rig) -> dict:
    root = tmp_path_factory.mktemp("bag_nusc")
    info = write_bag_fixture(root, nuscenes_rig)
    info["root"] = root
    info["nusc"] = load_nusc(root)
    return info


@pytest.fixture(scope="module")
def scene_rows(dataset) -> list[dict]:
    """sample_data rows of scene A, found independently of the code under test (via each row's sample)."""
    nusc = dataset["nusc"]
    return [sd for sd in nusc.sample_data
            if nusc.get("sample", sd["sample_token"])["scene_token"] == dataset["scene_a"]]


@pytest.fixture(scope="module")
def bag(dataset, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bags") / "scene-a"
    summary = write_scene_bag(dataset["nusc"], dataset["scene_a"], out)
    return {"path": out, "mcap": out / "scene-a.mcap", "summary": summary}


def _read_rosbags(bag: dict) -> list[tuple[str, int, object]]:
    """[(topic, log time ns, message)] in storage order, via rosbags' rosbag2 Reader."""
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    with Reader(bag["path"]) as reader:
        return [(conn.topic, t, store.deserialize_cdr(raw, conn.msgtype)) for conn, t, raw in reader.messages()]


def _read_mcap(bag: dict) -> list[tuple[str, int, object]]:
    """[(topic, log time ns, message)] in file order (not re-sorted), via mcap + mcap_ros2."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    with open(bag["mcap"], "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        return [(channel.topic, message.log_time, decoded)
                for _, channel, message, decoded in reader.iter_decoded_messages(log_time_order=False)]


@pytest.fixture(scope="module", params=["rosbags", "mcap"])
def messages(request, bag) -> list[tuple[str, int, object]]:
    return _read_rosbags(bag) if request.param == "rosbags" else _read_mcap(bag)


def _stamp_us(msg) -> int:
    stamp = msg.header.stamp
    assert stamp.nanosec % 1000 == 0, f"nanosec {stamp.nanosec} is not a whole microsecond"
    return stamp.sec * 1_000_000 + stamp.nanosec // 1000


def _by_topic(messages) -> dict[str, list]:
    out: dict[str, list] = {}
    for topic, t, msg in messages:
        out.setdefault(topic, []).append((t, msg))
    return out


def _decode_cloud(msg) -> np.ndarray:
    """PointCloud2 -> structured array, from its fields/offsets/datatypes only (an independent decoder)."""
    assert msg.height == 1 and not msg.is_bigendian and msg.row_step == msg.point_step * msg.width
    dtype = np.dtype({"names": [f.name for f in msg.fields],
                      "formats": [POINTFIELD_NUMPY[f.datatype] for f in msg.fields],
                      "offsets": [f.offset for f in msg.fields], "itemsize": msg.point_step})
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    assert data.size == msg.point_step * msg.width
    return np.frombuffer(data.tobytes(), dtype=dtype, count=msg.width)


def _as_float_columns(rec: np.ndarray) -> np.ndarray:
    return np.stack([rec[name].astype(np.float32) for name in rec.dtype.names], axis=1)  # (N, F)


def test_topic_layout_names():
    assert camera_image_topic("CAM_FRONT") == "/cameras/CAM_FRONT/image/compressed"
    assert camera_info_topic("CAM_FRONT") == "/cameras/CAM_FRONT/camera_info"
    assert radar_points_topic("RADAR_FRONT") == "/radars/RADAR_FRONT/points"
    assert lidar_points_topic("LIDAR_TOP") == "/lidar/LIDAR_TOP/points"
    assert BAG_TOPICS["tf_static"].topic() == "/tf_static" and BAG_TOPICS["tf"].topic() == "/tf"
    assert BAG_TOPICS["tf_static"].msgtype == BAG_TOPICS["tf"].msgtype == "tf2_msgs/msg/TFMessage"
    # the table that names the topics parses them back (the writer and the replay side share it)
    for kind, pattern in BAG_TOPICS.items():
        ch = "" if kind.startswith("tf") else "RADAR_FRONT_LEFT"
        assert pattern.channel(pattern.topic(ch)) == ch, kind
        assert all(other.channel(pattern.topic(ch)) is None for k, other in BAG_TOPICS.items() if k != kind)
    assert BAG_TOPICS["camera"].channel("/cameras/A/B/image/compressed") is None  # a channel has no slash
    tmap = default_topic_map([camera_image_topic("CAM_FRONT"), camera_info_topic("CAM_FRONT"),
                              radar_points_topic("RADAR_FRONT"), lidar_points_topic("LIDAR_TOP")],
                             {"RADAR_FRONT": "radial"})
    assert tmap.cameras["CAM_FRONT"].image == "/cameras/CAM_FRONT/image/compressed"
    assert tmap.cameras["CAM_FRONT"].info == "/cameras/CAM_FRONT/camera_info"
    assert tmap.radars["RADAR_FRONT"].topic == "/radars/RADAR_FRONT/points"
    assert tmap.radars["RADAR_FRONT"].doppler == "radial" and tmap.ignore == ()
    assert tmap.lidars == {"LIDAR_TOP": "/lidar/LIDAR_TOP/points"}  # carried to the replay's MCAP


def test_counts_per_topic_match_sample_data(bag, messages, scene_rows, dataset, nuscenes_rig):
    per_channel: dict[str, int] = {}
    for sd in scene_rows:
        per_channel[sd["channel"]] = per_channel.get(sd["channel"], 0) + 1
    expected = {}
    for ch in nuscenes_rig.cameras:
        expected[camera_image_topic(ch)] = expected[camera_info_topic(ch)] = per_channel[ch]
        assert per_channel[ch] == 2 * (1 + SWEEPS["camera"])  # the fixture is what we think it is
    for ch in nuscenes_rig.radars:
        expected[radar_points_topic(ch)] = per_channel[ch]
        assert per_channel[ch] == 2 * (1 + SWEEPS["radar"])
    for ch in nuscenes_rig.lidars:
        expected[lidar_points_topic(ch)] = per_channel[ch]
        assert per_channel[ch] == 2 * (1 + SWEEPS["lidar"])
    distinct_stamps = {sd["timestamp"] for sd in scene_rows}
    assert len(distinct_stamps) < len(scene_rows)  # LIDAR_TOP and RADAR_FRONT share stamps
    expected["/tf"] = len(distinct_stamps)
    expected["/tf_static"] = 1
    counted = {topic: len(msgs) for topic, msgs in _by_topic(messages).items()}
    assert counted == expected
    assert bag["summary"] == expected
    # scene B's rows are left out
    scene_b_stamps = {sd["timestamp"] for sd in dataset["nusc"].sample_data
                      if dataset["nusc"].get("sample", sd["sample_token"])["scene_token"] == dataset["scene_b"]}
    assert scene_b_stamps and not scene_b_stamps & {_stamp_us(m) for _, _, m in messages if hasattr(m, "header")}


def test_log_times_non_decreasing_and_equal_to_stamps(messages):
    log_times = [t for _, t, _ in messages]
    assert log_times == sorted(log_times)
    for topic, t, msg in messages:
        stamp = msg.transforms[0].header.stamp if topic in ("/tf", "/tf_static") else msg.header.stamp
        assert t == stamp.sec * 1_000_000_000 + stamp.nanosec, topic


def test_images_are_the_jpeg_files(messages, scene_rows, dataset):
    root = dataset["root"]
    topics = _by_topic(messages)
    for sd in (r for r in scene_rows if r["sensor_modality"] == "camera"):
        image_msgs = [m for _, m in topics[camera_image_topic(sd["channel"])] if _stamp_us(m) == sd["timestamp"]]
        info_msgs = [m for _, m in topics[camera_info_topic(sd["channel"])] if _stamp_us(m) == sd["timestamp"]]
        assert len(image_msgs) == len(info_msgs) == 1, sd["token"]
        image, info = image_msgs[0], info_msgs[0]
        assert image.format == "jpeg" and image.header.frame_id == sd["channel"]
        assert bytes(image.data) == (root / sd["filename"]).read_bytes()
        cs = dataset["nusc"].get("calibrated_sensor", sd["calibrated_sensor_token"])
        k = np.asarray(cs["camera_intrinsic"])
        assert (info.width, info.height) == (IMAGE_W, IMAGE_H) == (sd["width"], sd["height"])
        assert info.header.frame_id == sd["channel"] and info.distortion_model == "plumb_bob"
        assert len(info.d) == 0
        assert_array_equal(np.asarray(info.k), k.reshape(9))
        assert_array_equal(np.asarray(info.r), np.eye(3).reshape(9))
        assert_array_equal(np.asarray(info.p).reshape(3, 4), np.hstack([k, np.zeros((3, 1))]))


def test_radar_clouds_carry_every_pcd_field_exactly(messages, scene_rows, dataset):
    root = dataset["root"]
    topics = _by_topic(messages)
    expected_offsets = np.concatenate([[0], np.cumsum(NUSCENES_RADAR_SIZES)[:-1]])
    assert list(expected_offsets[[3, 4, 5, 17]]) == [12, 13, 15, 42]  # dyn_prop, id (int16), rcs, vy_rms
    radar_rows = [r for r in scene_rows if r["sensor_modality"] == "radar"]
    assert radar_rows
    for sd in radar_rows:
        found = [m for _, m in topics[radar_points_topic(sd["channel"])] if _stamp_us(m) == sd["timestamp"]]
        assert len(found) == 1, sd["token"]
        msg = found[0]
        assert msg.header.frame_id == sd["channel"] and msg.is_dense is False and msg.point_step == 43
        assert [f.name for f in msg.fields] == list(NUSCENES_RADAR_FIELDS)
        assert [f.datatype for f in msg.fields] == [PCD_TO_POINTFIELD[(t, s)] for t, s in
                                                   zip(NUSCENES_RADAR_TYPES, NUSCENES_RADAR_SIZES)]
        assert [f.offset for f in msg.fields] == expected_offsets.tolist()
        assert all(f.count == 1 for f in msg.fields)
        path = root / sd["filename"]
        cloud = read_radar_pcd(path)
        assert msg.width == len(cloud)
        assert_array_equal(_as_float_columns(_decode_cloud(msg)), cloud.points)  # (N, 18)
        # byte for byte the PCD binary records
        raw = path.read_bytes()
        start = raw.index(b"DATA binary\n") + len(b"DATA binary\n")
        assert bytes(msg.data) == raw[start:start + 43 * len(cloud)]


def test_lidar_clouds_are_float32_xyz_intensity_ring(messages, scene_rows, dataset):
    topics = _by_topic(messages)
    for sd in (r for r in scene_rows if r["sensor_modality"] == "lidar"):
        found = [m for _, m in topics[lidar_points_topic(sd["channel"])] if _stamp_us(m) == sd["timestamp"]]
        assert len(found) == 1, sd["token"]
        msg = found[0]
        assert [(f.name, f.offset, f.datatype) for f in msg.fields] == [
            ("x", 0, FLOAT32), ("y", 4, FLOAT32), ("z", 8, FLOAT32), ("intensity", 12, FLOAT32), ("ring", 16, FLOAT32)]
        assert msg.point_step == 20
        expected = read_lidar_bin(dataset["root"] / sd["filename"]).points  # (N, 5)
        assert_array_equal(_as_float_columns(_decode_cloud(msg)), expected)


def test_tf_is_the_ego_pose_at_every_distinct_timestamp(messages, scene_rows, dataset):
    nusc = dataset["nusc"]
    tf = _by_topic(messages)["/tf"]
    poses = {sd["timestamp"]: nusc.get("ego_pose", sd["ego_pose_token"]) for sd in scene_rows}
    stamps = []
    for _, msg in tf:
        assert len(msg.transforms) == 1
        tr = msg.transforms[0]
        assert (tr.header.frame_id, tr.child_frame_id) == ("map", "base_link")
        ts = _stamp_us(tr)
        stamps.append(ts)
        pose = poses[ts]
        t, q = tr.transform.translation, tr.transform.rotation
        assert_allclose([t.x, t.y, t.z], pose["translation"], rtol=0, atol=1e-9)
        assert_allclose([q.w, q.x, q.y, q.z], pose["rotation"], rtol=0, atol=1e-9)  # nuScenes order is w first
    assert stamps == sorted(poses)  # one per distinct timestamp, in order


def test_tf_static_holds_every_sensor_and_is_latched(bag, messages, scene_rows, dataset, nuscenes_rig):
    nusc = dataset["nusc"]
    (t, msg), = _by_topic(messages)["/tf_static"]
    assert t == min(sd["timestamp"] for sd in scene_rows) * 1000
    by_child = {tr.child_frame_id: tr for tr in msg.transforms}
    assert len(by_child) == len(msg.transforms)
    assert set(by_child) == {*nuscenes_rig.cameras, *nuscenes_rig.radars, *nuscenes_rig.lidars}
    for sd in scene_rows:
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        tr = by_child[sd["channel"]]
        assert tr.header.frame_id == "base_link"
        tt, q = tr.transform.translation, tr.transform.rotation
        assert_allclose([tt.x, tt.y, tt.z], cs["translation"], rtol=0, atol=1e-9)
        assert_allclose([q.w, q.x, q.y, q.z], cs["rotation"], rtol=0, atol=1e-9)


def test_tf_static_qos_is_transient_local(bag):
    import yaml
    from mcap.reader import make_reader
    from rosbags.interfaces import QosDurability
    from rosbags.rosbag2 import Reader

    with Reader(bag["path"]) as reader:
        qos = {c.topic: c.ext.offered_qos_profiles for c in reader.connections}
    assert [p.durability for p in qos["/tf_static"]] == [QosDurability.TRANSIENT_LOCAL]
    assert qos["/tf"] == []
    with open(bag["mcap"], "rb") as f:
        channels = make_reader(f).get_summary().channels.values()
    static = next(c for c in channels if c.topic == "/tf_static")
    profiles = yaml.safe_load(static.metadata["offered_qos_profiles"])
    assert [p["durability"] for p in profiles] == [1]  # rmw: 1 = transient_local


def test_missing_jpeg_names_file_and_token(dataset, tmp_path):
    root = tmp_path / "nusc"
    shutil.copytree(dataset["root"], root)
    nusc = load_nusc(root)
    sd = next(r for r in nusc.sample_data if r["channel"] == "CAM_BACK" and not r["is_key_frame"]
              and nusc.get("sample", r["sample_token"])["scene_token"] == dataset["scene_a"])
    (root / sd["filename"]).unlink()
    out = tmp_path / "bag"
    with pytest.raises(SensorFileError) as err:
        write_scene_bag(nusc, dataset["scene_a"], out)
    assert sd["filename"] in str(err.value) and sd["token"] in str(err.value)
    assert "does not exist" in str(err.value)
    assert not out.exists()  # checked before anything is written


def test_unreadable_radar_file_leaves_no_partial_bag(dataset, tmp_path):
    root = tmp_path / "nusc"
    shutil.copytree(dataset["root"], root)
    nusc = load_nusc(root)
    rows = sorted((r for r in nusc.sample_data if r["channel"] == "RADAR_FRONT_LEFT"
                   and nusc.get("sample", r["sample_token"])["scene_token"] == dataset["scene_a"]),
                  key=lambda r: r["timestamp"])
    sd = rows[-1]  # late in the scene: many messages are written before it fails
    (root / sd["filename"]).write_bytes(b"not a pcd")
    out = tmp_path / "bag"
    with pytest.raises(SensorFileError) as err:
        write_scene_bag(nusc, dataset["scene_a"], out)
    assert sd["filename"] in str(err.value) and sd["token"] in str(err.value)
    assert not out.exists()


def test_existing_output_is_refused(dataset, tmp_path):
    with pytest.raises(FileExistsError, match="exists"):
        write_scene_bag(dataset["nusc"], dataset["scene_a"], tmp_path)
