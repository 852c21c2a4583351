"""ReplayWriter: the MCAP carries Foxglove schemas that decode back to the boxes, radar, pose and JPEGs written;
the JSONL round-trips; previews show the projected boxes. Frames and Detections are built by hand."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from perception.data.frame import Frame
from perception.pipeline import Detections
from perception.replay.writers import (
    JSONL_SCHEMA,
    RADAR_FIELDS,
    ReplayWriter,
    read_jsonl,
)
from perception.visualize import TRACK_COLOURS, box_corners, hex_to_rgb

from mcap_read import read_mcap

CLASSES = ("car", "truck", "bus", "trailer", "construction_vehicle", "pedestrian", "motorcycle", "bicycle",
           "traffic_cone", "barrier")
H, W, F = 48, 64, 40.0  # preprocessed image size, focal length (px)
T0 = 1_532_402_927_612_460  # µs


def img_from_ego(yaw: float) -> np.ndarray:
    """A pinhole at the ego origin, 1.5 m up, looking along ego yaw ``yaw`` (0 forward, pi backward)."""
    c, s = np.cos(yaw), np.sin(yaw)
    cam_from_ego = np.eye(4)
    # camera x right, y down, z along the view direction
    cam_from_ego[:3, :3] = [[s, -c, 0.0], [0.0, 0.0, -1.0], [c, s, 0.0]]
    cam_from_ego[:3, 3] = -cam_from_ego[:3, :3] @ [0.0, 0.0, 1.5]
    k = np.eye(4)
    k[:3, :3] = [[F, 0, W / 2], [0, F, H / 2], [0, 0, 1]]
    return (k @ cam_from_ego).astype(np.float32)


def make_frame(i: int, rng: np.random.Generator) -> Frame:
    g = np.eye(4)
    yaw = 0.2 + 0.01 * i
    g[:3, :3] = [[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]]
    g[:3, 3] = [600.0 + i, 1600.0 + 0.5 * i, 0.1]
    images = np.clip(128 + rng.normal(0, 3, (2, H, W, 3)), 0, 255).astype(np.uint8)
    radar = np.zeros((8, len(RADAR_FIELDS) + 1), np.float32)
    radar[:, :7] = rng.normal(0, 5, (8, 7))
    radar[:, 7] = np.arange(8) % 5  # sensor index
    valid = np.array([True] * 5 + [False] * 3)
    return Frame(f"frame{i:03d}", T0 + i * 83_333, g, images, np.stack([img_from_ego(0.0), img_from_ego(np.pi)]),
                 np.array(["CAM_FRONT", "CAM_BACK"]), np.array([True, True]), np.array([T0 + i * 83_333 - 500] * 2),
                 radar, np.array(list(RADAR_FIELDS) + ["sensor"]), valid, np.zeros((0, 2), np.int64))


def make_detections(frame: Frame, rng: np.random.Generator) -> Detections:
    boxes = np.array([[10.0, 1.0, 0.8, 1.9, 4.5, 1.6, 0.3, 5.0, 0.5],  # car ahead (CAM_FRONT)
                      [-8.0, -2.0, 0.9, 0.7, 0.8, 1.8, 2.0, -1.0, 0.2]], np.float32)  # pedestrian behind
    traj = boxes[:, None, None, :2] + rng.normal(0, 1, (2, 6, 12, 2)).cumsum(axis=2)
    probs = rng.dirichlet(np.ones(6), size=2).astype(np.float32)
    return Detections(frame.sample_token, frame.t0, frame.global_from_ego, boxes, np.array([0.91234, 0.4], np.float32),
                      np.array([0, 5]), np.array(["car", "pedestrian"]),
                      np.array(["vehicle.moving", "pedestrian.moving"]),
                      traj.astype(np.float32), probs)


def jpeg(colour: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (colour, 0, 0)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture
def replay(tmp_path):
    """Three frames written with preview_every=2: previews of frames 0 and 2."""
    rng = np.random.default_rng(0)
    frames = [make_frame(i, rng) for i in range(3)]
    dets = [make_detections(f, rng) for f in frames]
    jpegs = {"CAM_FRONT": (T0 - 500, jpeg(200)), "CAM_BACK": (T0 - 700, jpeg(50))}
    with ReplayWriter(tmp_path / "out", CLASSES, preview_every=2, preview_max=5) as writer:
        for i, (f, d) in enumerate(zip(frames, dets)):
            writer.write(f, d, np.array([11 + i, 3]), jpegs, f.t0 + 40_000)
    return tmp_path / "out", frames, dets, jpegs, writer.close()


def test_mcap_channels_schemas_and_counts(replay):
    out, frames, _, jpegs, summary_dict = replay
    summary, msgs = read_mcap(out / "detections.mcap")
    schema_of = {c.topic: summary.schemas[c.schema_id].name for c in summary.channels.values()}
    assert schema_of == {"/tf": "foxglove.FrameTransform", "/detections": "foxglove.SceneUpdate",
                         "/radar": "foxglove.PointCloud",
                         "/cameras/CAM_FRONT/image/compressed": "foxglove.CompressedImage",
                         "/cameras/CAM_BACK/image/compressed": "foxglove.CompressedImage"}
    counts = {summary.channels[cid].topic: n for cid, n in summary.statistics.channel_message_counts.items()}
    assert counts == {topic: 3 for topic in schema_of} == summary_dict["messages"]
    for topic, items in msgs.items():
        assert [m.log_time for _, m, _ in items] == [f.t0 * 1000 for f in frames], topic
    # the original JPEG bytes, stamped at capture time
    _, _, img = msgs["/cameras/CAM_BACK/image/compressed"][0]
    assert img.data == jpegs["CAM_BACK"][1] and img.format == "jpeg" and img.frame_id == "CAM_BACK"
    assert img.timestamp.seconds * 10**6 + img.timestamp.nanos // 1000 == T0 - 700
    assert summary_dict["frames"] == 3 and summary_dict["boxes"] == 6


def test_scene_update_decodes_to_the_box(replay):
    out, frames, dets, _, _ = replay
    _, msgs = read_mcap(out / "detections.mcap")
    _, _, scene = msgs["/detections"][1]
    det = dets[1]
    assert [e.id for e in scene.entities] == ["12", "3"]
    assert len(scene.deletions) == 1 and scene.deletions[0].type == 1  # ALL earlier than this frame
    car = scene.entities[0]
    assert car.frame_id == "base_link" and not car.frame_locked
    assert car.timestamp.seconds * 10**6 + car.timestamp.nanos // 1000 == frames[1].t0
    assert 0.1 < car.lifetime.nanos * 1e-9 < 0.2  # 1.5 periods of 12 Hz
    cube = car.cubes[0]
    position = cube.pose.position
    np.testing.assert_allclose([position.x, position.y, position.z], [10, 1, 0.8], atol=1e-6)
    # yaw 0.3 about z; Foxglove's size is along the pose axes: l = 4.5 along the heading, w = 1.9 across
    q = cube.pose.orientation
    np.testing.assert_allclose([q.x, q.y, q.z, q.w], [0, 0, np.sin(0.15), np.cos(0.15)], atol=1e-7)
    np.testing.assert_allclose([cube.size.x, cube.size.y, cube.size.z], [4.5, 1.9, 1.6], atol=1e-6)
    meta = {kv.key: kv.value for kv in car.metadata}
    assert meta["class"] == "car" and meta["track_id"] == "12" and meta["score"] == "0.912"
    assert "#12 car 0.91" == car.texts[0].text
    # every forecast mode: line strips from the box centre, the most probable first and most opaque
    order = np.argsort(-det.mode_probs[0], kind="stable")
    assert len(car.lines) == det.mode_probs.shape[1] == 6
    for line, m in zip(car.lines, order):
        pts = np.array([[p.x, p.y] for p in line.points])
        np.testing.assert_allclose(pts[0], [10, 1], atol=1e-6)
        np.testing.assert_allclose(pts[1:], det.trajectories[0, m], atol=1e-5)
        assert line.type == 0 and len(pts) == 13
    alphas = [line.color.a for line in car.lines]
    assert alphas[0] == pytest.approx(1.0) and alphas == sorted(alphas, reverse=True) and alphas[-1] < 1.0
    assert meta["mode_probs"].split() == [f"{p:.3f}" for p in det.mode_probs[0]]
    # velocity: an arrow from the top centre along (5.0, 0.5) m/s, as long as 1 s of travel
    (arrow,) = car.arrows
    np.testing.assert_allclose([arrow.pose.position.x, arrow.pose.position.y, arrow.pose.position.z],
                               [10, 1, 0.8 + 0.8], atol=1e-6)
    yaw = 2 * np.arctan2(arrow.pose.orientation.z, arrow.pose.orientation.w)
    assert yaw == pytest.approx(np.arctan2(0.5, 5.0), abs=1e-6)
    assert arrow.shaft_length + arrow.head_length == pytest.approx(np.hypot(5.0, 0.5), abs=1e-5)


def test_tf_and_radar_decode(replay):
    out, frames, _, _, _ = replay
    _, msgs = read_mcap(out / "detections.mcap")
    _, _, tf = msgs["/tf"][2]
    g = frames[2].global_from_ego
    assert (tf.parent_frame_id, tf.child_frame_id) == ("map", "base_link")
    np.testing.assert_allclose([tf.translation.x, tf.translation.y, tf.translation.z], g[:3, 3], atol=1e-9)
    x, y, z, w = tf.rotation.x, tf.rotation.y, tf.rotation.z, tf.rotation.w
    rot = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                    [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                    [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    np.testing.assert_allclose(rot, g[:3, :3], atol=1e-9)
    _, _, cloud = msgs["/radar"][2]
    assert [f.name for f in cloud.fields] == list(RADAR_FIELDS) and cloud.point_stride == 28
    assert all(f.type == 7 for f in cloud.fields) and cloud.frame_id == "base_link"  # FLOAT32
    pts = np.frombuffer(cloud.data, "<f4").reshape(-1, len(RADAR_FIELDS))
    f = frames[2]
    np.testing.assert_array_equal(pts, f.radar_points[f.radar_valid][:, :7])  # fields written in RADAR_FIELDS order


def test_jsonl_round_trip(replay):
    out, frames, dets, _, _ = replay
    header, records = read_jsonl(out / "detections.jsonl")
    assert header["schema"] == JSONL_SCHEMA and header["classes"] == list(CLASSES)
    assert list(records[0]["boxes"][0]) == header["box_fields"]
    assert len(records) == 3
    for i, (rec, f, d) in enumerate(zip(records, frames, dets)):
        assert rec["t0"] == f.t0 and rec["t_emit"] == f.t0 + 40_000 and rec["sample_token"] == f.sample_token
        np.testing.assert_allclose(rec["global_from_ego"], f.global_from_ego, atol=1e-7)
        for b, box in enumerate(rec["boxes"]):
            best = int(np.argmax(d.mode_probs[b]))
            assert box["track_id"] == [11 + i, 3][b]
            assert box["label"] == d.names[b] and box["attribute"] == d.attributes[b]
            flat = box["centre"] + box["size"] + [box["yaw"]] + box["velocity"]
            np.testing.assert_allclose(flat, d.boxes[b], atol=1e-3)
            assert box["score"] == pytest.approx(float(d.scores[b]), abs=1e-4) and box["mode"] == best
            np.testing.assert_allclose(box["trajectory"], d.trajectories[b, best], atol=1e-3)
            np.testing.assert_allclose(box["mode_probs"], d.mode_probs[b], atol=1e-4)
    # round trip: what was read writes back to the same lines
    import json

    lines = (out / "detections.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines[1:]] == records


def test_read_jsonl_rejects_another_schema(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"schema": "perception-report/1"}\n{}\n')
    with pytest.raises(ValueError, match="perception-detections/1"):
        read_jsonl(path)


def test_preview_shows_projected_boxes(replay):
    out, frames, dets, _, summary = replay
    assert [p.rsplit("/", 1)[1] for p in summary["previews"]] == ["frame_000000.png", "frame_000002.png"]
    png = np.asarray(Image.open(out / "preview" / "frame_000000.png").convert("RGB")).astype(int)
    scale = 400 / W
    # the car's box in CAM_FRONT (tile 0): the midpoint of its bottom-front edge (corners 4-5), in tile pixels
    corners = box_corners(dets[0].boxes.astype(np.float64))[0]
    hom = corners @ frames[0].img_from_ego[0, :3, :3].T.astype(np.float64) + frames[0].img_from_ego[0, :3, 3]
    uv = hom[:, :2] / hom[:, 2:] * scale
    mid = (uv[4] + uv[5]) / 2
    assert 0 < mid[0] < 400 and 0 < mid[1] < H * scale
    patch = png[int(mid[1]) - 1:int(mid[1]) + 2, int(mid[0]) - 1:int(mid[0]) + 2].reshape(-1, 3)
    colour = np.array(hex_to_rgb(TRACK_COLOURS[11 % len(TRACK_COLOURS)]))  # track 11 on frame 0 (orange)
    assert np.abs(patch - colour).sum(axis=1).min() < 40, patch  # the edge is drawn there in the track colour
    assert np.abs(patch - 128).max() > 60  # ... which is not the image's grey
    plain = png[3:8, 380:390].reshape(-1, 3)  # far from any box: the grey image
    assert np.abs(plain - 128).max() < 25
    # and the pedestrian shows up in CAM_BACK (tile 1), not as a stray line in CAM_FRONT
    ped = np.array(hex_to_rgb(TRACK_COLOURS[3]))
    back = png[: int(H * scale), 400:800].reshape(-1, 3)
    front = png[: int(H * scale), :400].reshape(-1, 3)
    assert (np.abs(back - ped).sum(axis=1) < 40).sum() > 20
    assert (np.abs(front - ped).sum(axis=1) < 40).sum() == 0


def test_two_writers_in_one_process_stay_apart(tmp_path):
    rng = np.random.default_rng(1)
    f0, f1 = make_frame(0, rng), make_frame(1, rng)
    a = ReplayWriter(tmp_path / "a", CLASSES, preview_every=0)
    b = ReplayWriter(tmp_path / "b", CLASSES, preview_every=0)
    a.write(f0, make_detections(f0, rng), np.array([1, 2]), None, f0.t0)
    b.write(f1, make_detections(f1, rng), np.array([1, 2]), {"CAM_FRONT": (f1.t0, jpeg(9))}, f1.t0)
    b.write(f1, make_detections(f1, rng), None, None, f1.t0)  # untracked boxes are still written
    ra = a.close()
    b.close()
    assert ra["previews"] == [] and ra["messages"] == {"/tf": 1, "/detections": 1, "/radar": 1}
    _, ma = read_mcap(tmp_path / "a" / "detections.mcap")
    _, mb = read_mcap(tmp_path / "b" / "detections.mcap")
    assert {t: len(v) for t, v in ma.items()} == {"/tf": 1, "/detections": 1, "/radar": 1}
    assert {t: len(v) for t, v in mb.items()} == {"/tf": 2, "/detections": 2, "/radar": 2,
                                                  "/cameras/CAM_FRONT/image/compressed": 1}
    assert [e.id for e in mb["/detections"][1][2].entities] == ["det0", "det1"]


def test_write_rejects_inconsistent_input(tmp_path):
    rng = np.random.default_rng(2)
    f = make_frame(0, rng)
    with ReplayWriter(tmp_path, CLASSES, preview_every=0) as w:
        with pytest.raises(ValueError, match="3 track IDs for 2 detections"):
            w.write(f, make_detections(f, rng), np.array([1, 2, 3]), None, f.t0)
        with pytest.raises(ValueError, match="duplicate track IDs"):
            w.write(f, make_detections(f, rng), np.array([4, 4]), None, f.t0)


def test_frame_without_detections(tmp_path):
    rng = np.random.default_rng(3)
    f = make_frame(0, rng)
    full = make_detections(f, rng)
    empty = Detections(f.sample_token, f.t0, f.global_from_ego, full.boxes[:0], full.scores[:0], full.labels[:0],
                       full.names[:0], full.attributes[:0], full.trajectories[:0], full.mode_probs[:0])
    with ReplayWriter(tmp_path, CLASSES, preview_every=1) as w:
        w.write(f, empty, np.zeros(0, np.int64), None, f.t0)
    _, records = read_jsonl(tmp_path / "detections.jsonl")
    assert records[0]["boxes"] == [] and (tmp_path / "preview" / "frame_000000.png").is_file()
    _, msgs = read_mcap(tmp_path / "detections.mcap")
    scene = msgs["/detections"][0][2]
    assert len(scene.entities) == 0 and len(scene.deletions) == 1  # the previous frame's boxes still go away


def test_camera_calibration_lets_foxglove_project_boxes(tmp_path):
    """With the images' cameras given, each image gets a CameraCalibration (K, P = [K|0]) in its own frame and a
    base_link -> camera transform equal to ego_from_camera: what Foxglove's Image panel needs to draw 3D boxes."""
    from calibration.rig import Camera

    rng = np.random.default_rng(1)
    frame = make_frame(0, rng)
    det = make_detections(frame, rng)
    k = np.array([[40.0, 0, 16], [0, 40.0, 12], [0, 0, 1]])
    pose = np.array([[0, 0, 1, 1.5], [-1, 0, 0, 0.2], [0, -1, 0, 1.6], [0, 0, 0, 1]], float)
    cam = Camera("CAM_FRONT", 32, 24, k, pose)
    with ReplayWriter(tmp_path / "o", CLASSES, preview_every=0) as writer:
        writer.write(frame, det, np.array([1, 2]), {"CAM_FRONT": (T0 - 500, jpeg(100))}, frame.t0 + 1,
                     cameras={"CAM_FRONT": cam})
    _, msgs = read_mcap(tmp_path / "o" / "detections.mcap")
    (_, _, calib), = msgs["/cameras/CAM_FRONT/calibration"]
    assert (calib.frame_id, calib.width, calib.height, calib.distortion_model) == ("CAM_FRONT", 32, 24, "plumb_bob")
    np.testing.assert_allclose(np.array(calib.K).reshape(3, 3), k)
    np.testing.assert_allclose(np.array(calib.P).reshape(3, 4)[:, :3], k)
    tfs = {(t.parent_frame_id, t.child_frame_id): t for _, _, t in msgs["/tf"]}
    t = tfs[("base_link", "CAM_FRONT")]
    np.testing.assert_allclose([t.translation.x, t.translation.y, t.translation.z], pose[:3, 3])
    x, y, z, w = t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w
    rot = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                    [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                    [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    np.testing.assert_allclose(rot, pose[:3, :3], atol=1e-9)


def test_gt_and_lidar_channels(tmp_path):
    """GT boxes (where the frame has them) go to /gt, an input lidar sweep to /lidar in base_link at its own stamp
    with the ego pose at that stamp on /tf; read back with the mcap reader the channel counts are exact (GT only on
    the frame that has it, /tf once per frame plus once per sweep not stamped at t0); a second lidar gets its own
    topic."""
    from dataclasses import replace

    from perception.replay.messages import LidarCloud

    rng = np.random.default_rng(4)
    frames = [make_frame(i, rng) for i in range(3)]
    gt = np.array([[12.0, -3.0, 0.9, 1.8, 4.2, 1.5, 0.1, 2.0, 0.0]], np.float32)
    frames[1] = replace(frames[1], gt_boxes=gt, gt_labels=np.zeros(1, np.int64), gt_names=np.array(["car"]),
                        gt_attributes=np.array(["vehicle.moving"]), gt_instance_tokens=np.array(["inst0"]),
                        gt_future=np.zeros((1, 12, 2), np.float32), gt_future_valid=np.zeros((1, 12), bool))
    lidar = rng.normal(0, 10, (500, 4)).astype(np.float32)
    pose_at = np.eye(4)
    pose_at[:3, 3] = [700.0, 1700.0, 0.2]
    with ReplayWriter(tmp_path, CLASSES, preview_every=1) as w:
        for i, f in enumerate(frames):
            clouds = {0: LidarCloud("LIDAR_TOP", f.t0 - 1000, lidar, pose_at), 1: [
                LidarCloud("LIDAR_TOP", f.t0, lidar[:10], f.global_from_ego),
                LidarCloud("LIDAR_REAR", f.t0 + 5, lidar[:20, :3], pose_at)]}.get(i)
            w.write(f, make_detections(f, rng), np.array([1, 2]), None, f.t0, lidar=clouds)
    summary, msgs = read_mcap(tmp_path / "detections.mcap")
    counts = {summary.channels[cid].topic: n for cid, n in summary.statistics.channel_message_counts.items()}
    assert counts == {"/tf": 3 + 2, "/detections": 3, "/radar": 3, "/gt": 1, "/lidar": 2, "/lidar/LIDAR_REAR": 1}
    schema_of = {c.topic: summary.schemas[c.schema_id].name for c in summary.channels.values()}
    assert schema_of["/gt"] == "foxglove.SceneUpdate" and schema_of["/lidar"] == "foxglove.PointCloud"
    (_, m, scene), = msgs["/gt"]
    assert m.log_time == frames[1].t0 * 1000
    (ent,) = scene.entities
    c = ent.cubes[0]
    np.testing.assert_allclose([c.pose.position.x, c.pose.position.y, c.size.x, c.size.y], [12, -3, 4.2, 1.8],
                               atol=1e-6)
    assert len(ent.arrows) == 1
    assert {kv.key: kv.value for kv in ent.metadata} == {"class": "car", "attribute": "vehicle.moving",
                                                          "instance": "inst0"}
    _, m, cloud = msgs["/lidar"][0]
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "intensity"] and cloud.point_stride == 16
    assert cloud.frame_id == "base_link" and m.log_time == frames[0].t0 * 1000
    np.testing.assert_array_equal(np.frombuffer(cloud.data, "<f4").reshape(-1, 4), lidar)
    assert cloud.timestamp.seconds * 10**6 + cloud.timestamp.nanos // 1000 == frames[0].t0 - 1000
    # the pose at the sweep's stamp, so that Foxglove places the sweep where the car was
    stamped = [t for _, _, t in msgs["/tf"] if t.timestamp.seconds * 10**6 + t.timestamp.nanos // 1000
               == frames[0].t0 - 1000]
    assert len(stamped) == 1 and (stamped[0].parent_frame_id, stamped[0].child_frame_id) == ("map", "base_link")
    assert (stamped[0].translation.x, stamped[0].translation.y) == (700.0, 1700.0)
    _, _, rear = msgs["/lidar/LIDAR_REAR"][0]
    assert [f.name for f in rear.fields] == ["x", "y", "z"] and len(rear.data) == 20 * 12
    assert len(list((tmp_path / "preview").glob("*.png"))) == 3


def test_foxglove_layout_matches_what_the_writer_writes():
    """docs/foxglove_layout.json: every panel of the layout tree is configured, and every topic it shows is one
    the writer writes (nuScenes camera names), with the schema the panel needs."""
    import json
    from pathlib import Path

    doc = json.loads((Path(__file__).resolve().parents[3] / "docs" / "foxglove_layout.json").read_text())

    def leaves(node):
        return [node] if isinstance(node, str) else leaves(node["first"]) + leaves(node["second"])

    panels = leaves(doc["layout"])
    assert sorted(panels) == sorted(doc["configById"]) and len(panels) == 8
    written = {"/tf", "/detections", "/gt", "/radar", "/lidar"} | {
        f"/cameras/{c}/{k}" for c in ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT", "CAM_BACK",
                                      "CAM_BACK_RIGHT") for k in ("image/compressed", "calibration")}
    bev = doc["configById"]["3D!bev"]
    assert set(bev["topics"]) == {"/detections", "/gt", "/radar", "/lidar"} and bev["followTf"] == "base_link"
    assert bev["topics"]["/radar"]["colorField"] in RADAR_FIELDS
    for pid, cfg in doc["configById"].items():
        if pid.startswith("Image!"):
            assert {cfg["imageMode"]["imageTopic"], cfg["imageMode"]["calibrationTopic"]} <= written
    assert doc["configById"]["RawMessages!detections"]["topicPath"].split(".")[0] in written
