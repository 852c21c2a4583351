"""Replay: bag and nuScenes tables give the same detections; every input message is accounted for on clean and
corrupted bags; the player is causal (late data is counted, not waited for)."""
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from perception.pipeline import Pipeline
from perception.replay.messages import CameraImage, Message, Transform
from perception.replay.player import Player, PlayerConfig
from perception.replay.readers import BagReader, NuScenesSceneReader
from perception.replay.run import player_config, replay
from perception.replay.topics import TopicMap, CameraTopics, RadarTopic
from perception.replay.writers import MemoryWriter, read_jsonl

VERSION = "v1.0-synth"


@pytest.fixture(scope="module")
def pipe(small_ckpt):
    return Pipeline.from_checkpoint(small_ckpt, score_threshold=0.0)


@pytest.fixture(scope="module")
def scene(synth_sweeps):
    from nuscenes.nuscenes import NuScenes

    nusc = NuScenes(VERSION, str(synth_sweeps), verbose=False)
    name = nusc.scene[0]["name"]
    return synth_sweeps, name, synth_sweeps / "bags" / name


def _counts(report):
    t = report["messages"]["totals"]
    return t["received"], t["used"], t["late"], t["dropped"]


def _identity(report):
    rec, used, late, dropped = _counts(report)
    assert rec == used + late + dropped, report["messages"]["totals"]
    assert report["messages"]["identity_holds"] is True
    for topic, c in report["messages"]["per_topic"].items():
        assert c["received"] == c["used"] + c["late"] + sum(c["dropped"].values()), topic


@pytest.fixture(scope="module")
def clean_bag_run(scene, pipe, tmp_path_factory):
    _, _, bag = scene
    out = tmp_path_factory.mktemp("replay_bag")
    return replay(BagReader(bag), pipe, out, progress=False), out


@pytest.mark.slow  # replays a bag through a network
def test_bag_and_tables_give_the_same_detections(scene, pipe, clean_bag_run, tmp_path):
    root, name, _ = scene
    rep_bag, out_bag = clean_bag_run
    rep_tab = replay(NuScenesSceneReader(root, VERSION, name), pipe, tmp_path, progress=False)
    _identity(rep_bag)
    _identity(rep_tab)
    assert _counts(rep_bag) == _counts(rep_tab)
    _, frames_bag = read_jsonl(out_bag / "detections.jsonl")
    _, frames_tab = read_jsonl(tmp_path / "detections.jsonl")
    n_ref = rep_bag["messages"]["per_topic"]["/cameras/CAM_FRONT/image/compressed"]["received"]
    assert len(frames_bag) == len(frames_tab) == rep_bag["frames"]["emitted"] == n_ref >= 10
    for a, b in zip(frames_bag, frames_tab):
        assert a["t0"] == b["t0"]
        assert len(a["boxes"]) == len(b["boxes"]) > 0
        np.testing.assert_allclose([x["score"] for x in a["boxes"]], [x["score"] for x in b["boxes"]], atol=1e-6)
        np.testing.assert_allclose([x["centre"] for x in a["boxes"]], [x["centre"] for x in b["boxes"]], atol=1e-4)
    # nothing lost on a clean bag: only the lidar (not an input) and radar sweeps outside every frame's window
    dropped = {r for c in rep_bag["messages"]["per_topic"].values() for r in c["dropped"]}
    assert dropped <= {"ignored", "not_selected"}, dropped
    assert rep_bag["frames"]["masked_sensors"] == {}


@pytest.mark.slow  # replays a bag through a network
def test_outputs_exist_and_report_has_schema(clean_bag_run):
    rep, out = clean_bag_run
    data = json.loads((out / "report.json").read_text())
    assert data["schema"] == "perception-replay-report/1"
    assert (out / "detections.mcap").stat().st_size > 10_000
    assert list((out / "preview").glob("*.png"))
    lat = data["latency"]["processing"]
    assert 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"]
    assert data["throughput"]["sensor_fps"] == pytest.approx(12, rel=0.15)  # CAM_FRONT at 12 Hz


# -- what the MCAP carries besides the detections: the input lidar, GT boxes (issue 24) ----------------------


def _stamp(ts) -> int:
    return ts.seconds * 10**6 + ts.nanos // 1000


def _lidar_sweeps(root, name):
    """LIDAR_TOP rows of the scene: stamp -> (x, y, z, intensity in base_link by the calibrated_sensor mount)."""
    from nuscenes.nuscenes import NuScenes

    from calibration.transforms import make_transform
    from perception.data.io import read_lidar_bin

    nusc = NuScenes(VERSION, str(root), verbose=False)
    out = {}
    for sd in nusc.sample_data:
        if sd["channel"] != "LIDAR_TOP" or nusc.get("sample", sd["sample_token"])["scene_token"] != next(
                s["token"] for s in nusc.scene if s["name"] == name):
            continue
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        pts = read_lidar_bin(root / sd["filename"]).points[:, :4].astype(np.float64)
        pts[:, :3] = pts[:, :3] @ make_transform(cs["rotation"], cs["translation"])[:3, :3].T + cs["translation"]
        out[sd["timestamp"]] = pts
    return nusc, out


@pytest.fixture(scope="module")
def tables_run(scene, pipe, tmp_path_factory):
    root, name, _ = scene
    out = tmp_path_factory.mktemp("replay_tables")
    return replay(NuScenesSceneReader(root, VERSION, name), pipe, out, progress=False), out


@pytest.mark.slow  # replays a bag through a network
@pytest.mark.parametrize("source", ["bag", "tables"])
def test_mcap_carries_the_input_lidar_at_its_own_stamp(scene, clean_bag_run, tables_run, source):
    """Every LIDAR_TOP sweep of the drive near a frame is in /lidar exactly once: its point count, its points in
    base_link (the mount applied to the file's points), its own stamp, with the ego pose at that stamp on /tf."""
    from mcap_read import read_mcap

    root, name, _ = scene
    rep, out = clean_bag_run if source == "bag" else tables_run
    _, sweeps = _lidar_sweeps(root, name)
    _, msgs = read_mcap(out / "detections.mcap")
    clouds = msgs["/lidar"]
    assert len(clouds) == len(sweeps) == rep["messages"]["per_topic"]["/lidar/LIDAR_TOP/points"]["used"] == 3
    poses = {_stamp(t.timestamp): t for _, _, t in msgs["/tf"] if t.child_frame_id == "base_link"}
    for _, m, cloud in clouds:
        stamp = _stamp(cloud.timestamp)
        assert cloud.frame_id == "base_link" and [f.name for f in cloud.fields] == ["x", "y", "z", "intensity"]
        pts = np.frombuffer(cloud.data, "<f4").reshape(-1, 4)
        assert pts.shape == sweeps[stamp].shape  # every point: the synthetic sweeps have no NaN
        np.testing.assert_allclose(pts, sweeps[stamp], atol=2e-4)
        assert stamp in poses  # the pose at the sweep's stamp: Foxglove places the cloud where the car was
    assert "ignored" not in rep["messages"]["per_topic"]["/lidar/LIDAR_TOP/points"]["dropped"]


@pytest.mark.slow  # replays a scene through a network
def test_mcap_gt_of_a_scene_matches_its_annotations(scene, pipe, tables_run, clean_bag_run):
    """A nuScenes-format scene's annotations go to /gt: per frame every annotated instance of the nearest key frame,
    its centre (ego@t0 -> global through /tf at t0) on the straight line between its two key-frame annotations at
    the frame's time, its size exactly. A bag (no annotations) has no /gt channel and the replay no error."""
    from mcap_read import read_mcap
    from nuscenes.eval.detection.utils import category_to_detection_name

    root, name, _ = scene
    nusc, _ = _lidar_sweeps(root, name)
    sc = next(s for s in nusc.scene if s["name"] == name)
    keys, tok = [], sc["first_sample_token"]
    while tok:
        sample = nusc.get("sample", tok)
        keys.append((sample["timestamp"], {a["instance_token"]: a for a in (
            nusc.get("sample_annotation", t) for t in sample["anns"])}))
        tok = sample["next"]
    rep, out = tables_run
    _, msgs = read_mcap(out / "detections.mcap")
    poses = {_stamp(t.timestamp): t for _, _, t in msgs["/tf"] if t.child_frame_id == "base_link"}
    assert len(msgs["/gt"]) == rep["frames"]["emitted"] >= 10
    checked = 0
    for _, m, update in msgs["/gt"]:
        t0 = m.log_time // 1000
        tf = poses[t0]
        x, y, z, w = tf.rotation.x, tf.rotation.y, tf.rotation.z, tf.rotation.w
        yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
        ts = np.array([k for k, _ in keys])
        k = int(np.argmin(np.abs(ts - t0)))
        j = k - 1 if t0 < ts[k] else k + 1
        assert {e.id for e in update.entities} == {f"gt{g}" for g in range(len(update.entities))}
        insts = [{kv.key: kv.value for kv in e.metadata}["instance"] for e in update.entities]
        assert sorted(insts) == sorted(i for i, a in keys[k][1].items()
                                       if category_to_detection_name(a["category_name"]) in pipe.cfg.classes)
        for e, inst in zip(update.entities, insts):
            p = e.cubes[0].pose.position
            g = np.array([np.cos(yaw) * p.x - np.sin(yaw) * p.y + tf.translation.x,
                          np.sin(yaw) * p.x + np.cos(yaw) * p.y + tf.translation.y])
            a, b = keys[k][1][inst], keys[j][1].get(inst) if 0 <= j < len(keys) else None
            if b is None:
                continue  # moved on at its velocity: not a straight-line check
            wgt = (t0 - ts[k]) / (ts[j] - ts[k])
            want = (1 - wgt) * np.array(a["translation"][:2]) + wgt * np.array(b["translation"][:2])
            np.testing.assert_allclose(g, want, atol=1e-3)
            np.testing.assert_allclose([e.cubes[0].size.y, e.cubes[0].size.x, e.cubes[0].size.z], a["size"],
                                       atol=1e-5)
            checked += 1
    assert checked >= 10
    _, bag_msgs = read_mcap(clean_bag_run[1] / "detections.mcap")
    assert "/gt" not in bag_msgs and "/lidar" in bag_msgs


@pytest.mark.slow  # replays a bag through a network
def test_no_lidar_and_a_bag_without_lidar_give_no_lidar_channel(scene, pipe, tmp_path):
    """--no-lidar (lidar=False) leaves the lidar out (its topic counted as ignored, never decoded); a bag without
    any lidar topic gives no /lidar channel either, and no error."""
    from mcap_read import read_mcap

    _, _, bag = scene
    rep = replay(BagReader(bag), pipe, tmp_path / "off", progress=False, max_frames=4, lidar=False)
    _identity_or_pending(rep)
    per = rep["messages"]["per_topic"]["/lidar/LIDAR_TOP/points"]
    assert per["received"] == per["dropped"]["ignored"] >= 1 and per["used"] == 0
    summary, msgs = read_mcap(tmp_path / "off" / "detections.mcap")
    assert "/lidar" not in msgs and rep["frames"]["emitted"] == 4
    no_lidar = tmp_path / "no_lidar_bag"
    _rewrite(bag, no_lidar, lambda topic, msgtype, t, msg, store: [] if topic.startswith("/lidar/") else
             [(topic, msgtype, t, msg)])
    rep = replay(BagReader(no_lidar), pipe, tmp_path / "none", progress=False, max_frames=4)
    _, msgs = read_mcap(tmp_path / "none" / "detections.mcap")
    assert rep["frames"]["emitted"] == 4 and "/lidar" not in msgs and "/gt" not in msgs and "/radar" in msgs
    assert not any(t.startswith("/lidar") for t in rep["messages"]["per_topic"])


def _identity_or_pending(report):
    t = report["messages"]["totals"]
    assert t["received"] == t["used"] + t["late"] + t["dropped"] + t["pending"] and report["messages"]["identity_holds"]


# -- corrupted bags ------------------------------------------------------------------------------------------


def _rewrite(src: Path, dst: Path, edit, storage: str = "mcap") -> None:
    """Copy a rosbag2 (MCAP) message by message; ``edit(topic, msgtype, t_ns, msg, store)`` returns a list of
    (topic, msgtype, t_ns, payload bytes | message) to write instead (empty: drop it)."""
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Reader(src) as reader, Writer(dst, version=8, storage_plugin=plugin) as writer:
        conns = {}
        for conn, t_ns, raw in reader.messages():
            msg = store.deserialize_cdr(raw, conn.msgtype)
            for topic, msgtype, t, payload in edit(conn.topic, conn.msgtype, t_ns, msg, store):
                if topic not in conns:
                    conns[topic] = writer.add_connection(topic, msgtype, typestore=store)
                data = payload if isinstance(payload, (bytes, bytearray)) else bytes(store.serialize_cdr(payload, msgtype))
                writer.write(conns[topic], t, data)


def _jpeg(shape, value=128) -> np.ndarray:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full(shape, value, np.uint8)).save(buf, format="JPEG")
    return np.frombuffer(buf.getvalue(), np.uint8)


@pytest.fixture(scope="module")
def corrupt_run(scene, pipe, tmp_path_factory):
    _, _, bag = scene
    tmp = tmp_path_factory.mktemp("corrupt")
    seen: dict[str, int] = {}
    t_start = []

    def edit(topic, msgtype, t, msg, store):
        k = seen[topic] = seen.get(topic, 0) + 1
        t_start.append(t) if not t_start else None
        out = [(topic, msgtype, t, msg)]
        if topic == "/radars/RADAR_FRONT/points" and k == 3:  # corrupt payload: CDR cut short
            out = [(topic, msgtype, t, bytes(store.serialize_cdr(msg, msgtype))[:40])]
        elif topic == "/radars/RADAR_FRONT_LEFT/points" and k == 4:  # NaN in the cloud
            data = np.array(msg.data, np.uint8)
            data[0:4] = np.frombuffer(np.float32(np.nan).tobytes(), np.uint8)
            msg.data = data
        elif topic == "/cameras/CAM_BACK/image/compressed" and k == 5:  # wrong size
            msg.data = _jpeg((20, 30, 3))
        elif topic == "/cameras/CAM_BACK_LEFT/image/compressed" and k == 6:  # wrong encoding
            msg.format = "h264"
        elif topic == "/radars/RADAR_BACK_LEFT/points" and k == 8:  # stamp jumps 5 s backwards
            msg.header.stamp.sec -= 5
        elif topic == "/radars/RADAR_BACK_RIGHT/points" and 5 <= k <= 20:  # silent for over a second
            out = []
        elif topic == "/tf" and k == 2:  # an unknown topic beside it
            from rosbags.typesys.stores.ros2_humble import std_msgs__msg__String as String

            out.append(("/chatter", "std_msgs/msg/String", t, String(data="hello")))
        return out

    dst = tmp / "corrupt_bag"
    _rewrite(bag, dst, edit)
    return replay(BagReader(dst), pipe, tmp / "out", progress=False)


@pytest.mark.slow  # replays a bag through a network
def test_corrupted_bag_is_accounted_for(corrupt_run):
    rep = corrupt_run
    _identity(rep)
    per = rep["messages"]["per_topic"]
    assert per["/radars/RADAR_FRONT/points"]["dropped"].get("undecodable") == 1
    assert per["/radars/RADAR_FRONT_LEFT/points"]["dropped"].get("non_finite") == 1
    assert per["/cameras/CAM_BACK/image/compressed"]["dropped"].get("wrong_size") == 1
    assert per["/cameras/CAM_BACK_LEFT/image/compressed"]["dropped"].get("undecodable") == 1
    assert per["/radars/RADAR_BACK_LEFT/points"]["dropped"].get("out_of_order") == 1
    assert per["/chatter"]["dropped"] == {"unknown_topic": 1}
    assert rep["frames"]["masked_sensors"].get("RADAR_BACK_RIGHT", 0) >= 3  # silent: masked, not waited for
    assert rep["frames"]["emitted"] >= 10 and not rep["frames"]["errors"]


@pytest.mark.slow  # replays a bag through a network
def test_missing_tf_static_without_and_with_rig(scene, pipe, tmp_path):
    root, _, bag = scene
    dst = tmp_path / "no_static"
    _rewrite(bag, dst, lambda topic, mt, t, msg, store: [] if topic == "/tf_static" else [(topic, mt, t, msg)])
    rep = replay(BagReader(dst), pipe, tmp_path / "a", progress=False)
    _identity(rep)
    assert rep["frames"]["emitted"] == 0
    cams = rep["messages"]["per_topic"]["/cameras/CAM_FRONT/image/compressed"]
    assert cams["dropped"].get("no_calibration") == cams["received"]
    from calibration.io import load_rig

    rep = replay(BagReader(dst), pipe, tmp_path / "b", rig=load_rig(root / VERSION / "rig.yaml"), progress=False)
    _identity(rep)
    assert rep["frames"]["emitted"] >= 10


@pytest.mark.slow  # replays a bag through a network
def test_tf_static_chains_are_composed(scene, pipe, clean_bag_run, tmp_path):
    """Each sensor re-hung below an intermediate mount frame (base_link -> <sensor>_mount -> sensor, the two
    halves in separate /tf_static messages, the lower one first): the composed chain gives the clean bag's
    detections. A chain that stops short of base_link is no_calibration, naming where it stops."""
    from calibration.transforms import invert, make_transform, matrix_to_quaternion, yaw_to_quaternion

    _, _, bag = scene
    mount_from_base = make_transform(yaw_to_quaternion(0.5), [0.3, -0.2, 0.1])  # any rigid transform

    def tf(proto, parent, child, m):
        q = matrix_to_quaternion(m[:3, :3])  # w x y z
        tr = proto.transform
        return type(proto)(header=type(proto.header)(stamp=proto.header.stamp, frame_id=parent),
                           child_frame_id=child,
                           transform=type(tr)(translation=type(tr.translation)(x=float(m[0, 3]), y=float(m[1, 3]),
                                                                               z=float(m[2, 3])),
                                              rotation=type(tr.rotation)(x=float(q[1]), y=float(q[2]),
                                                                         z=float(q[3]), w=float(q[0]))))

    def chain(keep_upper: bool):
        def edit(topic, msgtype, t, msg, store):
            if topic != "/tf_static":
                return [(topic, msgtype, t, msg)]
            lower, upper = [], []
            for x in msg.transforms:
                r, tr = x.transform.rotation, x.transform.translation
                base_from_sensor = make_transform([r.w, r.x, r.y, r.z], [tr.x, tr.y, tr.z])
                mount = x.child_frame_id + "_mount"
                lower.append(tf(x, mount, x.child_frame_id, invert(mount_from_base) @ base_from_sensor))
                upper.append(tf(x, x.header.frame_id, mount, mount_from_base))
            out = [(topic, msgtype, t, type(msg)(transforms=lower))]
            return out + ([(topic, msgtype, t + 1, type(msg)(transforms=upper))] if keep_upper else [])
        return edit

    _rewrite(bag, tmp_path / "chained", chain(True))
    rep = replay(BagReader(tmp_path / "chained"), pipe, tmp_path / "a", progress=False)
    _identity(rep)
    rep_clean, out_clean = clean_bag_run
    assert rep["frames"]["emitted"] == rep_clean["frames"]["emitted"] >= 10
    _, ref = read_jsonl(out_clean / "detections.jsonl")
    _, got = read_jsonl(tmp_path / "a" / "detections.jsonl")
    for a, b in zip(ref, got):
        assert len(a["boxes"]) == len(b["boxes"]) > 0
        np.testing.assert_allclose([x["score"] for x in a["boxes"]], [x["score"] for x in b["boxes"]], atol=1e-5)
        np.testing.assert_allclose([x["centre"] for x in a["boxes"]], [x["centre"] for x in b["boxes"]], atol=1e-3)
    # the upper half missing: every camera lacks calibration, and the reason names the frame the chain reached
    _rewrite(bag, tmp_path / "broken", chain(False))
    reader = BagReader(tmp_path / "broken")
    player = Player(player_config(pipe, reader.topic_map.radars, "CAM_FRONT", 60.0), reader.topic_map)
    for m in reader:
        if m.kind == "tf_static":
            player.push(m)
    cam, why = player.camera("CAM_FRONT")
    assert cam is None and "stops at CAM_FRONT_mount" in why


@pytest.mark.slow  # replays a bag through a network
def test_truncated_bag_keeps_what_was_read(scene, pipe, tmp_path):
    _, _, bag = scene
    dst = tmp_path / "trunc"
    shutil.copytree(bag, dst)
    mcap = next(dst.glob("*.mcap"))
    data = mcap.read_bytes()
    mcap.write_bytes(data[:len(data) // 2])
    reader = BagReader(dst)
    rep = replay(reader, pipe, tmp_path / "out", progress=False)
    _identity(rep)
    assert any("ends early" in e for e in rep["events"])
    assert 2 <= rep["frames"]["emitted"] < 20


@pytest.mark.slow  # replays a bag through a network
def test_sqlite3_bag_with_odometry_poses_and_a_topic_map(scene, pipe, clean_bag_run, tmp_path):
    """The same drive stored as sqlite3, ego poses as nav_msgs/Odometry on /odom, the topics renamed: with a topic
    map it replays to the same detections as the original MCAP bag (and the same message accounting: the map's
    lidar is carried like the derived map's)."""
    _, _, bag = scene

    def edit(topic, msgtype, t, msg, store):
        if topic == "/tf":
            from rosbags.typesys.stores.ros2_humble import (geometry_msgs__msg__Point as Point,
                                                            geometry_msgs__msg__Pose as Pose,
                                                            geometry_msgs__msg__PoseWithCovariance as PoseCov,
                                                            geometry_msgs__msg__Twist as Twist,
                                                            geometry_msgs__msg__TwistWithCovariance as TwistCov,
                                                            geometry_msgs__msg__Vector3 as Vector3,
                                                            nav_msgs__msg__Odometry as Odometry)

            tf = msg.transforms[0]
            tr = tf.transform.translation
            pose = Pose(position=Point(x=tr.x, y=tr.y, z=tr.z), orientation=tf.transform.rotation)
            zero = Vector3(x=0.0, y=0.0, z=0.0)
            odom = Odometry(header=tf.header, child_frame_id="base_link",
                            pose=PoseCov(pose=pose, covariance=np.zeros(36)),
                            twist=TwistCov(twist=Twist(linear=zero, angular=zero), covariance=np.zeros(36)))
            return [("/odom", "nav_msgs/msg/Odometry", t, odom)]
        return [(topic.replace("/cameras/", "/sensing/"), msgtype, t, msg)]

    dst = tmp_path / "sqlite_bag"
    _rewrite(bag, dst, edit, storage="sqlite3")
    assert list(dst.glob("*.db3"))
    cams = ["CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"]
    radars = ["RADAR_FRONT", "RADAR_FRONT_LEFT", "RADAR_FRONT_RIGHT", "RADAR_BACK_LEFT", "RADAR_BACK_RIGHT"]
    import yaml

    tmap = {"schema": "perception-topics/1",
            "cameras": {c: {"image": f"/sensing/{c}/image/compressed", "info": f"/sensing/{c}/camera_info"}
                        for c in cams},
            "radars": {r: {"topic": f"/radars/{r}/points", "doppler": "cartesian"} for r in radars},
            "poses": {"source": "odometry", "topic": "/odom"},
            "lidars": {"LIDAR_TOP": {"topic": "/lidar/LIDAR_TOP/points"}}}
    (tmp_path / "topics.yaml").write_text(yaml.safe_dump(tmap))
    from perception.replay.topics import load_topic_map

    rep = replay(BagReader(dst, load_topic_map(tmp_path / "topics.yaml")), pipe, tmp_path / "out", progress=False)
    _identity(rep)
    ref, out_ref = clean_bag_run
    assert _counts(rep) == _counts(ref)
    _, a = read_jsonl(out_ref / "detections.jsonl")
    _, b = read_jsonl(tmp_path / "out" / "detections.jsonl")
    assert [f["t0"] for f in a] == [f["t0"] for f in b]
    np.testing.assert_allclose([x["score"] for f in a for x in f["boxes"]], [x["score"] for f in b for x in f["boxes"]],
                               atol=1e-6)


def test_topic_map_errors_name_the_field(tmp_path):
    from perception.replay.topics import TopicMapError, load_topic_map

    (tmp_path / "m.yaml").write_text("schema: perception-topics/1\ncameras: {CAM_FRONT: {image: /c}}\n"
                                     "radars: {RADAR_FRONT: {topic: /r, doppler: polar}}\n")
    with pytest.raises(TopicMapError, match=r"radars.RADAR_FRONT.doppler.*polar"):
        load_topic_map(tmp_path / "m.yaml")
    (tmp_path / "n.yaml").write_text("schema: other/1\n")
    with pytest.raises(TopicMapError, match="schema"):
        load_topic_map(tmp_path / "n.yaml")
    (tmp_path / "l.yaml").write_text("schema: perception-topics/1\ncameras: {CAM_FRONT: {image: /c}}\n"
                                     "lidars: {LIDAR_TOP: {}}\n")
    with pytest.raises(TopicMapError, match=r"lidars.LIDAR_TOP.*topic"):
        load_topic_map(tmp_path / "l.yaml")


def test_topic_map_lidars_and_no_lidar(tmp_path):
    """A map's lidars get the lidar role; without_lidar (--no-lidar) turns them into ignored topics; a synth bag's
    /lidar/<CH>/points topic is a lidar of the derived map."""
    from perception.replay.topics import default_topic_map, load_topic_map

    (tmp_path / "m.yaml").write_text("schema: perception-topics/1\ncameras: {CAM_FRONT: {image: /c}}\n"
                                     "lidars: {LIDAR_TOP: {topic: /l}}\nignore: [/x]\n")
    tmap = load_topic_map(tmp_path / "m.yaml")
    assert tmap.roles()["/l"] == ("lidar", "LIDAR_TOP")
    off = tmap.without_lidar()
    assert off.roles()["/l"] == ("ignored", "") and off.roles()["/x"] == ("ignored", "") and off.lidars == {}
    derived = default_topic_map(["/cameras/CAM_FRONT/image/compressed", "/lidar/LIDAR_TOP/points"])
    assert derived.lidars == {"LIDAR_TOP": "/lidar/LIDAR_TOP/points"} and derived.ignore == ()


# -- the player alone: causality and ordering -------------------------------------------------------------------


def _rig_map():
    from calibration.rig import Camera, Radar, Rig

    k = np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])
    cam_pose = np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 1.5], [0, 0, 0, 1]], float)
    rig = Rig("t", {c: Camera(c, 64, 48, k, cam_pose) for c in ("CAM_A", "CAM_B")},
              {"RADAR_A": Radar("RADAR_A", np.eye(4))})
    tmap = TopicMap({c: CameraTopics(f"/{c}") for c in ("CAM_A", "CAM_B")}, {"RADAR_A": RadarTopic("/RADAR_A")})
    return rig, tmap


class _Stream:
    def __init__(self):
        self.seq = 0

    def __call__(self, kind, channel, stamp_ms, arrive_ms=None, topic=None):
        payload = None
        if kind == "camera":
            payload = CameraImage(np.zeros((48, 64, 3), np.uint8))
        elif kind == "radar":
            payload = np.zeros(3, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
        elif kind == "tf":
            payload = [Transform("map", "base_link", stamp_ms * 1000, np.zeros(3), np.array([1.0, 0, 0, 0]))]
        m = Message(self.seq, topic or f"/{channel or kind}", (arrive_ms if arrive_ms is not None else stamp_ms) * 1000,
                    kind, channel, stamp_ms * 1000, payload)
        self.seq += 1
        return m


def test_player_is_causal_late_data_is_counted_not_waited_for():
    rig, tmap = _rig_map()
    cfg = PlayerConfig("CAM_A", ("CAM_A", "CAM_B"), ("RADAR_A",), max_wait_us=60_000, camera_tolerance_us=60_000)
    p = Player(cfg, tmap, rig)
    s = _Stream()
    jobs = []
    for m in [s("tf", "", 0), s("tf", "", 100), s("camera", "CAM_A", 50), s("radar", "RADAR_A", 40),
              s("camera", "CAM_B", 60, arrive_ms=200),  # arrives after the frame at t0 = 50 was emitted (110)
              s("tf", "", 300)]:
        jobs += p.push(m)
    jobs += p.finish()
    assert len(jobs) == 1 and jobs[0].t0 == 50_000 and jobs[0].emit_us == 110_000
    assert "CAM_B" not in jobs[0].cameras and "CAM_B" in jobs[0].missing
    assert [m.channel for m in jobs[0].radars] == ["RADAR_A"]
    assert p.ledger.topics["/CAM_B"]["late"] == 1
    t = p.ledger.totals()
    assert t["received"] == 6 == t["used"] + t["late"] + t["dropped"] and p.ledger.pending() == 0


def test_player_drops_beyond_reorder_buffer_and_picks_closest_image():
    rig, tmap = _rig_map()
    cfg = PlayerConfig("CAM_A", ("CAM_A", "CAM_B"), ("RADAR_A",), reorder_us=100_000)
    p = Player(cfg, tmap, rig)
    s = _Stream()
    jobs = []
    for m in [s("tf", "", 0), s("tf", "", 450), s("camera", "CAM_B", 480), s("camera", "CAM_B", 505),
              s("camera", "CAM_A", 500), s("radar", "RADAR_A", 300, arrive_ms=520), s("tf", "", 550),
              s("tf", "", 2000)]:
        jobs += p.push(m)
    jobs += p.finish()
    assert len(jobs) == 1 and jobs[0].cameras["CAM_B"].stamp_us == 505_000
    assert p.ledger.topics["/RADAR_A"]["dropped"] == {"out_of_order": 1}  # 205 ms behind the newest stamp
    assert p.ledger.topics["/CAM_B"]["dropped"] == {"not_selected": 1}


def test_player_calibration_is_built_once_and_follows_tf_static():
    """Radar/lidar calibrations are cached per mount (issue 25): the same object while /tf_static is unchanged,
    a new one (and a new reason) as soon as a /tf_static message moves, breaks or repairs the mount."""
    _, tmap = _rig_map()
    p = Player(PlayerConfig("CAM_A", ("CAM_A", "CAM_B"), ("RADAR_A",)), tmap)
    s = _Stream()

    def tf_static(x):
        m = s("tf_static", "", 0)
        m.payload = [Transform("base_link", "RADAR_A", 0, np.array([x, 0.0, 0.5]), np.array([1.0, 0, 0, 0]))]
        return m

    assert p.radar("RADAR_A") == (None, "no /tf_static chain base_link -> RADAR_A")
    p.push(tf_static(3.0))
    r1, why = p.radar("RADAR_A")
    assert why == "" and r1.ego_from_radar[0, 3] == 3.0 and p.radar("RADAR_A")[0] is r1
    p.push(tf_static(2.0))
    r2, _ = p.radar("RADAR_A")
    assert r2 is not r1 and r2.ego_from_radar[0, 3] == 2.0
    p.push(tf_static(float("nan")))  # an invalid pose, remembered with its reason
    r3, why = p.radar("RADAR_A")
    assert r3 is None and "calibration of RADAR_A is invalid" in why and p.radar("RADAR_A") == (None, why)
    p.push(tf_static(2.0))
    assert p.radar("RADAR_A")[0].ego_from_radar[0, 3] == 2.0


@pytest.mark.slow  # replays a bag through a network
def test_cli_replay_and_bad_reference(scene, small_ckpt, tmp_path, capsys):
    from perception.cli.replay import main

    _, _, bag = scene
    assert main(["--bag", str(bag), "--checkpoint", str(small_ckpt), "--out", str(tmp_path / "o"), "--max-frames",
                 "3", "--no-progress", "--no-lidar"]) == 0
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert rep["frames"]["emitted"] == 3 and rep["stopped_after_max_frames"] is True
    lidar = rep["messages"]["per_topic"]["/lidar/LIDAR_TOP/points"]  # --no-lidar: read, never decoded or written
    assert lidar["used"] == 0 and set(lidar["dropped"]) == {"ignored"} and "/lidar" not in rep["outputs"]["messages"]
    # the summary adds up although the run stopped: the messages not settled yet are counted as pending
    line = capsys.readouterr().out.splitlines()[0]
    nums = [int(x) for x in re.findall(r"(?:received|used|late|dropped|pending) (\d+)", line)]
    assert "pending" in line and len(nums) == 5 and nums[0] == sum(nums[1:]), line
    t = rep["messages"]["totals"]
    assert t["pending"] > 0 and rep["messages"]["identity_holds"] is True
    assert main(["--bag", str(bag), "--checkpoint", str(small_ckpt), "--out", str(tmp_path / "p"),
                 "--reference", "CAM_NOSE", "--no-progress"]) == 1
    assert "CAM_NOSE" in capsys.readouterr().err


# -- real-time pipeline, draft decoding, robustness of the summary (issue 25) ---------------------------------


def test_one_message_stamped_an_hour_ahead_is_dropped_alone(scene, pipe, clean_bag_run, tmp_path):
    _, _, bag = scene
    seen = {}

    def edit(topic, msgtype, t, msg, store):
        k = seen[topic] = seen.get(topic, 0) + 1
        if topic == "/radars/RADAR_FRONT/points" and k == 3:
            msg.header.stamp.sec += 3600
        return [(topic, msgtype, t, msg)]

    _rewrite(bag, tmp_path / "ahead", edit)
    rep = replay(BagReader(tmp_path / "ahead"), pipe, tmp_path / "out", progress=False, preview_every=0)
    _identity(rep)
    assert rep["frames"]["emitted"] == clean_bag_run[0]["frames"]["emitted"] >= 10
    assert rep["messages"]["per_topic"]["/radars/RADAR_FRONT/points"]["dropped"].get("stamp_outlier") == 1
    # the message itself would have been used or not selected; nothing else changes
    assert abs(rep["messages"]["totals"]["used"] - clean_bag_run[0]["messages"]["totals"]["used"]) <= 1


def test_no_frame_at_all_exits_1_with_the_reasons(scene, small_ckpt, tmp_path, capsys):
    from perception.cli.replay import main

    _, _, bag = scene
    _rewrite(bag, tmp_path / "nopose", lambda topic, msgtype, t, msg, store: [] if topic == "/tf" else
             [(topic, msgtype, t, msg)])
    assert main(["--bag", str(tmp_path / "nopose"), "--checkpoint", str(small_ckpt), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "0 frames; messages received" in captured.out
    err = captured.err.splitlines()
    n_ref = json.loads((tmp_path / "o" / "report.json").read_text())["messages"]["per_topic"][
        "/cameras/CAM_FRONT/image/compressed"]["received"]
    assert err[0].startswith(f"error: NoFrames: no frame was produced from {n_ref} CAM_FRONT images")
    assert f"{n_ref} reference images dropped as no_pose" in err[1] and "e.g. /cameras/CAM_FRONT" in err[1]


def test_diagnose_far_fewer_frames_than_reference_images():
    from perception.replay.run import diagnose

    ref = "/cam/front"
    report = {"reference": "CAM_FRONT", "reference_topic": ref, "stopped_after_max_frames": False,
              "frames": {"emitted": 3, "skipped": {"no ego pose near t0": 2}, "errors": {}, "late": 0},
              "messages": {"per_topic": {ref: {"received": 20, "used": 3, "late": 0,
                                               "dropped": {"out_of_order": 15, "no_pose": 2}}},
                           "examples": {"out_of_order": [f"{ref} seq 9 stamp 5: older than the last frame"]}}}
    lines = diagnose(report)
    assert lines[0] == "only 3 frames from 20 CAM_FRONT images; main reasons:"
    assert lines[1].strip().startswith("15 reference images dropped as out_of_order") and "seq 9" in lines[1]
    report["frames"]["emitted"] = 18
    assert diagnose(report) == []


@pytest.mark.parametrize("args", [["--rate", "nan"], ["--rate", "inf"], ["--rate", "0"], ["--rate", "-1"],
                                  ["--max-frames", "0"], ["--max-frames", "-2"], ["--score-threshold", "nan"],
                                  ["--preview-every", "-1"]])
def test_bad_numbers_are_exit_2(args, tmp_path, capsys):
    from perception.cli.replay import main

    with pytest.raises(SystemExit) as e:
        main(["--bag", str(tmp_path), "--onnx", str(tmp_path), "--out", str(tmp_path / "o"), *args])
    assert e.value.code == 2
    assert args[0] in capsys.readouterr().err


class _Slow:
    """The pipeline with a network that takes ``delay`` seconds longer: a stand-in for one that cannot keep up."""

    def __init__(self, pipe, delay):
        self._pipe, self.delay = pipe, delay

    def __getattr__(self, name):
        return getattr(self._pipe, name)

    def infer_prepared(self, frame, batch, **kw):
        time.sleep(self.delay)
        return self._pipe.infer_prepared(frame, batch, **kw)


def test_paced_replay_skips_stale_frames_and_accounts_for_them(scene, pipe, clean_bag_run, tmp_path):
    """At --rate 1.0 with a network slower than the camera, stale frames are skipped (counted late) so that the
    result lag stays bounded instead of growing with the drive; every message still ends in one category."""
    _, _, bag = scene
    delay = 0.25  # three camera periods
    rep = replay(BagReader(bag), _Slow(pipe, delay), tmp_path, rate=1.0, progress=False, preview_every=0)
    _identity(rep)
    f = rep["frames"]
    assert f["late"] > 0 and f["emitted"] + f["late"] + sum(f["errors"].values()) == f["built_by_player"]
    assert f["built_by_player"] == clean_bag_run[0]["frames"]["emitted"]
    # a frame waits for no older one: from the player to the prepare stage it waits at most for the frame being
    # prepared, whatever the machine's speed. Queued in series, the k-th frame would wait for the k - 1 before it
    # (k * (delay - 1/12 s) more: > 2 s at this drive's end, and more than any frame's processing)
    lat = rep["latency"]
    assert lat["queued"]["max_ms"] < lat["processing"]["max_ms"], lat
    per = rep["messages"]["per_topic"]["/cameras/CAM_FRONT/image/compressed"]
    assert per["late"] >= f["late"] and per["used"] == f["emitted"] + sum(f["errors"].values())


def test_ledger_release_keeps_messages_other_frames_use():
    from perception.replay.player import Ledger

    led = Ledger()
    m = Message(0, "/r", 0, "radar", "R", 0)
    led.receive(m)
    led.use(m)  # frame 1
    led.use(m)  # frame 2
    led.release(m)  # frame 1 skipped: frame 2 still uses it
    assert led.totals() == {"received": 1, "used": 1, "late": 0, "dropped": 0, "pending": 0}
    led.release(m)  # frame 2 skipped too
    assert led.totals() == {"received": 1, "used": 0, "late": 1, "dropped": 0, "pending": 0}
    led.use(m)  # a later frame uses it after all
    assert led.totals() == {"received": 1, "used": 1, "late": 0, "dropped": 0, "pending": 0}
    led.release(m, "pending")  # ... and the run stopped before it was processed
    assert led.totals() == {"received": 1, "used": 0, "late": 0, "dropped": 0, "pending": 1}


def test_draft_decoding_matches_the_full_size_path(scene, pipe, tmp_path):
    """Images 4.2x wider than the network input: decoded at 1/4 by DCT scaling (1000x563 -> 250x141, the height
    not a multiple of 4) vs decoded in full and resized. Stated tolerance: network input images within 2 grey
    levels on average, img_from_ego within 0.5 px over the image, detection scores within 0.02 and the top boxes'
    centres within 0.1 m."""
    import io

    from PIL import Image

    _, _, bag = scene
    size = (1000, 563)

    def edit(topic, msgtype, t, msg, store):
        if msgtype.endswith("CompressedImage"):
            im = Image.open(io.BytesIO(bytes(msg.data))).convert("RGB")
            buf = io.BytesIO()
            im.resize(size, Image.BICUBIC).save(buf, format="JPEG", quality=92)
            msg.data = np.frombuffer(buf.getvalue(), np.uint8)
        elif msgtype.endswith("CameraInfo"):
            sx, sy = size[0] / msg.width, size[1] / msg.height
            k = np.array(msg.k, np.float64).reshape(3, 3)
            k[0] *= sx
            k[1] *= sy  # pixel centres: (u + 0.5) s - 0.5
            k[0, 2] += 0.5 * sx - 0.5
            k[1, 2] += 0.5 * sy - 0.5
            msg.k = k.reshape(-1)
            msg.width, msg.height = size
        return [(topic, msgtype, t, msg)]

    _rewrite(bag, tmp_path / "big", edit)
    runs = {}
    for draft in (False, True):
        cap = MemoryWriter()
        reader = BagReader(tmp_path / "big")
        replay(reader, pipe, tmp_path / f"o{draft}", progress=False, writer=cap, draft_decode=draft, max_frames=4)
        runs[draft] = cap
    full, small = runs[False], runs[True]
    assert len(full.frames) == len(small.frames) == 4
    for fa, fb, da, db in zip(full.frames, small.frames, full.dets, small.dets):
        diff = np.abs(fa.images.astype(np.int16) - fb.images.astype(np.int16))
        assert diff.mean() < 2.0, diff.mean()
        # a point seen at the image corners and centre lands on the same network pixel (within 0.5 px)
        pts = np.array([[10.0, 3.0, 0.5, 1.0], [10.0, -3.0, 1.5, 1.0], [20.0, 0.0, 1.0, 1.0]])
        for ia, ib in zip(fa.img_from_ego, fb.img_from_ego):
            pa, pb = pts @ ia.T, pts @ ib.T
            front = pa[:, 2] > 0.1
            np.testing.assert_allclose(pa[front, :2] / pa[front, 2:3], pb[front, :2] / pb[front, 2:3], atol=0.5)
        assert np.abs(np.sort(da.scores) - np.sort(db.scores)).max() < 0.02
        top = np.argsort(-da.scores)[:5]
        d = np.linalg.norm(da.boxes[top, None, :3] - db.boxes[None, :, :3], axis=-1).min(1)
        assert d.max() < 0.1, d


def test_dct_scaled_decode_pixel_mapping():
    """libjpeg's 1/4 decode puts a bright square where CameraImage.decoded_from_full says (u' = (u + 0.5) / 4 - 0.5),
    and the rescaled camera projects a point onto those pixels."""
    import io

    from PIL import Image

    from calibration.rig import Camera
    from perception.replay.frames import decoded_camera
    from perception.replay.messages import decode_image

    img = np.zeros((563, 1000, 3), np.uint8)
    img[201:242, 403:444] = 255  # centre (423, 221) in full pixels
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    full, small = decode_image(buf.getvalue()), decode_image(buf.getvalue(), draft_width=176)
    assert full.reduction == 1 and small.reduction == 4 and small.rgb.shape == (141, 250, 3)
    assert small.size == full.size == (1000, 563)

    def centroid(a):
        w = a[..., 0].astype(np.float64)
        v, u = np.mgrid[:a.shape[0], :a.shape[1]]
        return np.array([(u * w).sum() / w.sum(), (v * w).sum() / w.sum(), 1.0])

    np.testing.assert_allclose(small.decoded_from_full() @ centroid(full.rgb), centroid(small.rgb), atol=0.05)
    k = np.array([[800.0, 0, 500], [0, 800, 280], [0, 0, 1]])
    cam = Camera("CAM_FRONT", 1000, 563, k, np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 1.5], [0, 0, 0, 1.0]]))
    reduced = decoded_camera(cam, small)
    assert (reduced.width, reduced.height) == (250, 141) and decoded_camera(cam, full) is cam
    p = np.array([12.0, 2.0, 1.0, 1.0])  # ego point in front
    a, b = cam.img_from_ego @ p, reduced.img_from_ego @ p
    np.testing.assert_allclose(small.decoded_from_full() @ (a[:3] / a[2]), b[:3] / b[2], atol=1e-9)


# -- the output folder is claimed, never mixed (issue 26) ---------------------------------------------------------


def test_replay_refuses_a_held_out_and_keeps_it_on_failure(tmp_path, capsys):
    """A second replay into a folder with results is refused before any work (exit 1, naming --overwrite); a
    folder another live process is writing is refused; a failed replay with --overwrite leaves the old results."""
    import os

    from perception.cli.replay import main

    out = tmp_path / "o"
    out.mkdir()
    (out / "detections.jsonl").write_text("old\n")
    missing = tmp_path / "no_such_bag"
    assert main(["--bag", str(missing), "--onnx", str(tmp_path), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "--overwrite" in err and "detections.jsonl" in err and "Traceback" not in err
    assert (out / "detections.jsonl").read_text() == "old\n"

    # with --overwrite the claim passes; the bag is missing, so the run fails and the old results stay
    assert main(["--bag", str(missing), "--onnx", str(tmp_path), "--out", str(out), "--overwrite",
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert str(missing) in err
    assert sorted(p.name for p in out.iterdir()) == ["detections.jsonl"]
    assert (out / "detections.jsonl").read_text() == "old\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o.")]  # no staging folder or lock left

    # a live process holds the lock: refused, whatever --overwrite says
    (tmp_path / ".o.lock").write_text(f"{os.getppid()}\n")
    assert main(["--bag", str(missing), "--onnx", str(tmp_path), "--out", str(out), "--overwrite",
                 "--no-progress"]) == 1
    assert "in use by another run" in capsys.readouterr().err
    assert (out / "detections.jsonl").read_text() == "old\n"
