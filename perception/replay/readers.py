"""Readers: a recorded drive as a stream of ``Message`` in arrival order.

- ``BagReader``: ROS 2 bags through ``rosbags`` (rosbag2 directories with MCAP or sqlite3 storage, or a bare
  ``.mcap`` file). MCAP files are read record by record (``mcap``'s stream reader), so a truncated file yields
  every message before the cut and reports the truncation; file order is the order the recorder received the
  messages, i.e. arrival order. sqlite3 bags are read in log-time order by ``rosbags``.
- ``NuScenesSceneReader``: one scene of a nuScenes-format dataset at full sensor rate (every camera image and
  radar sweep, key frames and sweeps), producing the same messages a ``perception-synth --bags`` bag of that
  scene holds (same topics, stamps, JPEG bytes, radar records, poses and calibration).

Both set ``self.events`` (stream-level problems such as truncation), ``self.topics`` (topic -> type) and
``self.gt``: a ``perception.data.nuscenes.SceneGT`` where the source has annotations (a nuScenes-format scene),
else None (bags: ``perception-synth --bags`` writes no annotations into them).
"""
from __future__ import annotations

from itertools import groupby
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from perception.replay.messages import (CameraInfo, DecodeError, Message, ReplayInputError, Transform,
                                        camera_info_from_ros, check_cloud, cloud_from_ros, decode_image,
                                        image_from_ros, lidar_points, odometry_from_ros, stamp_us,
                                        transforms_from_ros)
from perception.replay.topics import BAG_TOPICS, POSE_CHILD, POSE_PARENT, TopicMap, default_topic_map
from calibration.io import load_rig
from perception.data.io import SensorFileError, read_lidar_bin, read_radar_records
from perception.data.nuscenes import SceneGT, scene_sample_data


def decode(kind: str, msgtype: str, msg: Any, draft_width: int | None = None) -> tuple[int, Any]:
    """A deserialised ROS message of role ``kind`` -> (stamp µs, payload). Raises DecodeError. ``draft_width``:
    JPEGs are decoded at the smallest DCT scale that keeps this width (``messages.decode_image``)."""
    if kind == "camera":
        if not msgtype.endswith(("CompressedImage", "/Image")):
            raise DecodeError("undecodable", f"camera topic carries {msgtype}, not an image")
        img = image_from_ros(msg, msgtype, draft_width)
        return stamp_us(msg.header), img
    if kind == "camera_info":
        return stamp_us(msg.header), camera_info_from_ros(msg)
    if kind == "radar":
        if not msgtype.endswith("PointCloud2"):
            raise DecodeError("undecodable", f"radar topic carries {msgtype}, not PointCloud2")
        rec = cloud_from_ros(msg)
        check_cloud(rec)
        return stamp_us(msg.header), rec
    if kind == "lidar":
        if not msgtype.endswith("PointCloud2"):
            raise DecodeError("undecodable", f"lidar topic carries {msgtype}, not PointCloud2")
        return stamp_us(msg.header), lidar_points(cloud_from_ros(msg))
    if kind in ("tf", "tf_static"):
        tfs = transforms_from_ros(msg)
        return (tfs[0].stamp_us if tfs else 0), tfs
    if kind == "odometry":
        tfs = odometry_from_ros(msg)
        return tfs[0].stamp_us, tfs
    raise AssertionError(kind)


class BagReader:
    def __init__(self, path: str | Path, topic_map: TopicMap | None = None):
        from rosbags.typesys import Stores, get_typestore

        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"bag {self.path} does not exist")
        self.store = get_typestore(Stores.ROS2_HUMBLE)
        self.events: list[str] = []
        self.storage, self.files = self._locate()
        self.topics = self._topics()
        self.topic_map = topic_map or default_topic_map(self.topics)
        self.roles = self.topic_map.roles()
        self.draft_width: int | None = None  # set by the replay: decode JPEGs at the network's size
        self.gt: SceneGT | None = None  # a bag carries no annotations

    # -- layout ---------------------------------------------------------------
    def _locate(self) -> tuple[str, list[Path]]:
        p = self.path
        if p.is_file():
            if p.suffix == ".mcap":
                return "mcap", [p]
            raise ReplayInputError(f"{p}: a bare '{p.suffix}' file is not supported; pass the rosbag2 directory "
                                   "(with metadata.yaml) or an .mcap file")
        meta = p / "metadata.yaml"
        if not meta.exists():
            raise ReplayInputError(f"{p}: no metadata.yaml; not a rosbag2 directory")
        import yaml

        try:
            info = yaml.safe_load(meta.read_text())["rosbag2_bagfile_information"]
            storage = info["storage_identifier"]
            files = [p / f for f in info["relative_file_paths"]]
        except (yaml.YAMLError, KeyError, TypeError) as err:
            raise ReplayInputError(f"{meta}: unreadable rosbag2 metadata ({err})") from None
        if storage not in ("mcap", "sqlite3"):
            raise ReplayInputError(f"{meta}: storage '{storage}' is not supported (mcap, sqlite3)")
        return storage, files

    def _topics(self) -> dict[str, str]:
        if self.storage == "sqlite3":
            from rosbags.rosbag2 import Reader, ReaderError

            try:
                with Reader(self.path) as r:
                    return {c.topic: c.msgtype for c in r.connections}
            except ReaderError as err:  # a truncated or foreign .db3
                raise ReplayInputError(f"{self.path}: the sqlite3 bag cannot be opened ({err}); re-copy the bag "
                                       "or convert it (ros2 bag convert)") from None
        topics: dict[str, str] = {}
        for _, channel, schema in self._mcap_records(summary_only=True):
            topics[channel.topic] = schema.name if schema else ""
        return topics

    # -- messages -------------------------------------------------------------
    def _mcap_records(self, summary_only: bool = False) -> Iterator[tuple[Any, Any, Any]]:
        """(message record or None, channel, schema) in file order; a truncated file stops with an event."""
        from mcap.exceptions import McapError
        from mcap.records import Channel, Message as McapMessage, Schema
        from mcap.stream_reader import StreamReader

        for f in self.files:
            schemas: dict[int, Any] = {}
            channels: dict[int, Any] = {}
            count = 0
            try:
                with open(f, "rb") as fh:
                    for rec in StreamReader(fh, skip_magic=False).records:
                        if isinstance(rec, Schema):
                            schemas[rec.id] = rec
                        elif isinstance(rec, Channel):
                            channels[rec.id] = rec
                            if summary_only:
                                yield None, rec, schemas.get(rec.schema_id)
                        elif isinstance(rec, McapMessage) and not summary_only:
                            count += 1
                            ch = channels.get(rec.channel_id)
                            yield rec, ch, schemas.get(ch.schema_id) if ch else None
            except (McapError, EOFError, ValueError, OSError) as err:
                if not summary_only:
                    self.events.append(f"{f}: the file ends early or is corrupt after {count} messages "
                                       f"({type(err).__name__}: {err}); the messages before it were replayed")

    def _register(self, msgtype: str, schema: Any) -> None:
        if msgtype in self.store.types or schema is None or schema.encoding != "ros2msg":
            return
        from rosbags.typesys import get_types_from_msg

        try:
            self.store.register(get_types_from_msg(schema.data.decode(), msgtype))
        except Exception as err:  # a broken schema leaves the type unknown: its messages are undecodable
            self.events.append(f"schema of {msgtype} cannot be registered ({err})")

    def __iter__(self) -> Iterator[Message]:
        seq = 0
        if self.storage == "sqlite3":
            from rosbags.rosbag2 import Reader

            with Reader(self.path) as r:
                try:
                    for conn, t_ns, raw in r.messages():
                        yield self._message(seq, conn.topic, conn.msgtype, t_ns, raw)
                        seq += 1
                except Exception as err:
                    self.events.append(f"{self.path}: reading stopped after {seq} messages ({type(err).__name__}: "
                                       f"{err})")
            return
        for rec, ch, schema in self._mcap_records():
            if ch is None:
                self.events.append(f"message {seq} refers to an unknown MCAP channel; skipped")
                continue
            msgtype = schema.name if schema else ""
            self._register(msgtype, schema)
            yield self._message(seq, ch.topic, msgtype, rec.log_time, rec.data)
            seq += 1

    def _message(self, seq: int, topic: str, msgtype: str, log_time_ns: int, raw: bytes) -> Message:
        kind, channel = self.roles.get(topic, ("unknown", ""))
        m = Message(seq, topic, int(log_time_ns) // 1000, kind, channel)
        if kind in ("unknown", "ignored"):
            m.reason = "unknown_topic" if kind == "unknown" else "ignored"
            m.detail = msgtype
            return m
        try:
            msg = self.store.deserialize_cdr(raw, msgtype)
        except Exception as err:
            m.reason, m.detail = "undecodable", f"{msgtype} payload cannot be deserialised ({type(err).__name__})"
            return m
        try:
            m.stamp_us, m.payload = decode(kind, msgtype, msg, self.draft_width)
        except DecodeError as err:
            m.reason, m.detail = err.reason, err.detail
            try:
                m.stamp_us = stamp_us(msg.header)
            except AttributeError:
                pass
        return m


class NuScenesSceneReader:
    """Every sample_data row of one scene (key frames and sweeps), as the bag of that scene would carry them."""

    def __init__(self, dataroot: str | Path, version: str, scene: str, nusc: Any = None,
                 keyframe_cameras: bool = False):
        """``keyframe_cameras``: only the key-frame camera images (radar sweeps and poses as recorded), so the
        replay emits one frame per key frame: the frame sequence offline evaluation sees (2 Hz)."""
        if nusc is None:
            from nuscenes.nuscenes import NuScenes

            if not (Path(dataroot) / version).is_dir():
                raise FileNotFoundError(f"{Path(dataroot) / version} does not exist: check --dataroot and --version")
            nusc = NuScenes(version=version, dataroot=str(dataroot), verbose=False)
        self.nusc = nusc
        self.dataroot = Path(dataroot)
        scenes = {s["name"]: s for s in nusc.scene}
        if scene not in scenes:
            raise ReplayInputError(f"scene '{scene}' is not in {self.dataroot / version} (scenes: "
                                   f"{sorted(scenes)[:5]}...)")
        self.scene = scenes[scene]
        self.rows = [sd for sd in scene_sample_data(nusc, self.scene["token"])
                     if not (keyframe_cameras and sd["sensor_modality"] == "camera" and not sd["is_key_frame"])]
        self.events: list[str] = []
        self.tf_topic, self.tf_static_topic = BAG_TOPICS["tf"].topic(), BAG_TOPICS["tf_static"].topic()
        topics = {self.tf_topic: "", self.tf_static_topic: ""}
        for sd in self.rows:
            if sd["sensor_modality"] in BAG_TOPICS:  # camera, radar, lidar
                topics[BAG_TOPICS[sd["sensor_modality"]].topic(sd["channel"])] = ""
                if sd["sensor_modality"] == "camera":
                    topics[BAG_TOPICS["camera_info"].topic(sd["channel"])] = ""
        self.topics = topics
        rig_file = self.dataroot / version / "rig.yaml"
        file_rig = load_rig(rig_file) if rig_file.exists() else None
        doppler = {n: r.doppler for n, r in file_rig.radars.items()} if file_rig else {}
        self.topic_map = default_topic_map(topics, doppler)
        self.roles = self.topic_map.roles()
        self.draft_width: int | None = None  # set by the replay: decode JPEGs at the network's size
        self.gt: SceneGT | None = SceneGT(nusc, self.scene)  # empty for a split without annotations (v1.0-test)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Message]:
        seq = 0
        first = self.rows[0]["timestamp"]
        static = []
        seen: set[str] = set()
        for sd in self.rows:
            if sd["channel"] in seen:
                continue
            seen.add(sd["channel"])
            cs = self.nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
            static.append(Transform(POSE_CHILD, sd["channel"], first, np.asarray(cs["translation"], np.float64),
                                    np.asarray(cs["rotation"], np.float64)))
        static.sort(key=lambda t: t.child)
        yield Message(seq, self.tf_static_topic, first, "tf_static", "", first, static)
        seq += 1
        for ts, group in groupby(self.rows, key=lambda sd: sd["timestamp"]):
            group = list(group)
            pose = self.nusc.get("ego_pose", group[0]["ego_pose_token"])
            yield Message(seq, self.tf_topic, ts, "tf", "", ts, [Transform(
                POSE_PARENT, POSE_CHILD, ts, np.asarray(pose["translation"], np.float64),
                np.asarray(pose["rotation"], np.float64))])
            seq += 1
            for sd in group:
                ch, mod = sd["channel"], sd["sensor_modality"]
                path = self.dataroot / sd["filename"]
                topic = BAG_TOPICS[mod].topic(ch) if mod in BAG_TOPICS else f"/{mod}/{ch}"
                kind, _ = self.roles.get(topic, ("unknown", ""))
                m = Message(seq, topic, ts, kind, ch if kind != "ignored" else "", ts)
                seq += 1
                try:
                    if kind == "ignored":
                        m.reason = "ignored"
                    elif mod == "camera":
                        data = path.read_bytes()
                        m.payload = decode_image(data, self.draft_width)
                    elif mod == "radar":
                        rec = read_radar_records(path)
                        check_cloud(rec)
                        m.payload = rec
                    elif mod == "lidar":  # x, y, z, intensity of the .pcd.bin (its ring column is not needed)
                        m.payload = lidar_points(read_lidar_bin(path))
                    else:
                        m.reason = "ignored"
                except DecodeError as err:
                    m.reason, m.detail = err.reason, err.detail
                except (SensorFileError, OSError) as err:
                    m.reason, m.detail = "undecodable", str(err)
                yield m
                if mod == "camera":  # CameraInfo beside every image, as in the bag
                    cs = self.nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
                    yield Message(seq, BAG_TOPICS["camera_info"].topic(ch), ts, "camera_info", ch, ts,
                                  CameraInfo(int(sd["width"]), int(sd["height"]),
                                             np.asarray(cs["camera_intrinsic"], np.float64), "plumb_bob", ()))
                    seq += 1
