"""Write a nuScenes-format scene as a ROS 2 bag (rosbag2 directory, MCAP storage, ROS 2 Humble types).

One bag per scene holds every ``sample_data`` row of the scene (key frames and sweeps, all channels), so
that the replay pipeline and ROS tools (``ros2 bag play``, Foxglove) see the drive as the car logged it.

Topic layout (``perception.replay.topics.BAG_TOPICS``: the one table of patterns and message types, which the
replay side parses with):

=====================================  ================================  ==========================================
topic                                  type                              content
=====================================  ================================  ==========================================
/cameras/<CHANNEL>/image/compressed    sensor_msgs/msg/CompressedImage   the JPEG file's bytes unchanged, "jpeg"
/cameras/<CHANNEL>/camera_info         sensor_msgs/msg/CameraInfo        K of calibrated_sensor, plumb_bob, no d
/radars/<CHANNEL>/points               sensor_msgs/msg/PointCloud2       every PCD field with its own type, packed
                                                                         as the PCD binary records (43 B/point)
/lidar/<CHANNEL>/points                sensor_msgs/msg/PointCloud2       x y z intensity ring, FLOAT32 (20 B/point)
/tf                                    tf2_msgs/msg/TFMessage            map -> base_link (ego pose) at every
                                                                         distinct sample_data timestamp
/tf_static                             tf2_msgs/msg/TFMessage            base_link -> <CHANNEL> for every sensor
                                                                         of the scene, once, latched
=====================================  ================================  ==========================================

Conventions: sensor messages have ``header.frame_id`` = the channel name and ``header.stamp`` = the
sample_data timestamp (nuScenes integer microseconds, converted exactly); the bag's log time of every
message is that stamp in nanoseconds, and messages are written in non-decreasing log time.
Transforms are ``parent_from_child`` (nuScenes ``global_from_ego`` and ``ego_from_sensor``), with the
quaternion reordered from nuScenes [w, x, y, z] to ROS (x, y, z, w).
"""
from __future__ import annotations

import shutil
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np

from perception.data.io import SensorFileError, read_lidar_bin, read_radar_pcd
from perception.data.nuscenes import scene_sample_data
from perception.replay.topics import BAG_TOPICS, POSE_CHILD, POSE_PARENT

CAMERA_IMAGE_TYPE = BAG_TOPICS["camera"].msgtype
CAMERA_INFO_TYPE = BAG_TOPICS["camera_info"].msgtype
POINTCLOUD_TYPE = BAG_TOPICS["radar"].msgtype
TF_TYPE = BAG_TOPICS["tf"].msgtype

# rosbags writes rosbag2 metadata v8 or v9 only. v8 stores offered_qos_profiles as a YAML string with
# integer enums, the form Humble's rosbag2 itself writes; v9 switched to a nested list.
ROSBAG2_VERSION = 8

# PCD (TYPE, SIZE) -> sensor_msgs/PointField datatype. PointField has no 64-bit integers (and no half
# floats), so PCD I8/U8/F2 fields cannot be carried and are refused.
_POINTFIELD_DATATYPE = {("I", 1): 1, ("U", 1): 2, ("I", 2): 3, ("U", 2): 4,
                        ("I", 4): 5, ("U", 4): 6, ("F", 4): 7, ("F", 8): 8}
_NUMPY_DTYPE = {1: "i1", 2: "u1", 3: "<i2", 4: "<u2", 5: "<i4", 6: "<u4", 7: "<f4", 8: "<f8"}

_LIDAR_FIELDS = ("x", "y", "z", "intensity", "ring")
_FLOAT32 = 7


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE)


def _latched_qos():
    """The QoS a tf2_ros StaticTransformBroadcaster offers: reliable, transient_local, keep_last 1.
    Durations 0/0 are rmw's "unspecified" (the default, i.e. infinite), which every rosbag2 release reads."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL,
               zero, zero, QosLiveliness.AUTOMATIC, zero, avoid_ros_namespace_conventions=False)


def _pcd_layout(path: Path) -> list[tuple[str, int]]:
    """[(field name, PointField datatype), ...] in record order, from the PCD header of ``path``.

    ``read_radar_pcd`` returns every field as float32; the header gives the types the file stores."""
    raw = path.read_bytes()
    end = raw.find(b"\nDATA")  # the header ends at the DATA line; binary records follow
    fields: list[str] = []
    types: list[str] = []
    sizes: list[str] = []
    for line in raw[:end if end >= 0 else len(raw)].split(b"\n"):
        words = line.decode("ascii", errors="replace").split()
        if not words:
            continue
        key, *values = words
        if key == "FIELDS":
            fields = values
        elif key == "TYPE":
            types = values
        elif key == "SIZE":
            sizes = values
    layout = []
    for name, kind, size in zip(fields, types, sizes):
        datatype = _POINTFIELD_DATATYPE.get((kind, int(size)))
        if datatype is None:
            raise SensorFileError(path, f"PCD field '{name}' has TYPE {kind} SIZE {size}, which "
                                        "sensor_msgs/PointField cannot represent",
                                  "supported: I1 I2 I4 U1 U2 U4 F4 F8")
        layout.append((name, datatype))
    return layout


class _Messages:
    """Builds serialized (CDR) messages from nuScenes rows. One instance per bag: holds the typestore."""

    def __init__(self) -> None:
        self.store = _typestore()
        t = self.store.types
        self.Time, self.Header = t["builtin_interfaces/msg/Time"], t["std_msgs/msg/Header"]
        self.CompressedImage, self.CameraInfo = t[CAMERA_IMAGE_TYPE], t[CAMERA_INFO_TYPE]
        self.RegionOfInterest = t["sensor_msgs/msg/RegionOfInterest"]
        self.PointCloud2, self.PointField = t[POINTCLOUD_TYPE], t["sensor_msgs/msg/PointField"]
        self.TFMessage, self.TransformStamped = t[TF_TYPE], t["geometry_msgs/msg/TransformStamped"]
        self.Transform, self.Vector3 = t["geometry_msgs/msg/Transform"], t["geometry_msgs/msg/Vector3"]
        self.Quaternion = t["geometry_msgs/msg/Quaternion"]

    def header(self, timestamp_us: int, frame_id: str):
        # Integer arithmetic: a float round trip would lose microseconds at 1.6e15 us.
        sec, usec = divmod(int(timestamp_us), 1_000_000)
        return self.Header(stamp=self.Time(sec=sec, nanosec=usec * 1000), frame_id=frame_id)

    def serialize(self, msg: Any, msgtype: str) -> bytes:
        return bytes(self.store.serialize_cdr(msg, msgtype))

    def image(self, timestamp_us: int, channel: str, jpeg: bytes) -> bytes:
        msg = self.CompressedImage(header=self.header(timestamp_us, channel), format="jpeg",
                                   data=np.frombuffer(jpeg, dtype=np.uint8))
        return self.serialize(msg, CAMERA_IMAGE_TYPE)

    def camera_info(self, timestamp_us: int, channel: str, width: int, height: int, k: np.ndarray) -> bytes:
        """k: (3, 3) float64 intrinsics, pixels."""
        p = np.zeros((3, 4))
        p[:, :3] = k  # [K | 0]: a monocular camera, no rectification
        msg = self.CameraInfo(
            header=self.header(timestamp_us, channel), height=int(height), width=int(width),
            distortion_model="plumb_bob", d=np.zeros(0), k=k.reshape(9).astype(np.float64),
            r=np.eye(3).reshape(9), p=p.reshape(12), binning_x=0, binning_y=0,
            roi=self.RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
        return self.serialize(msg, CAMERA_INFO_TYPE)

    def point_cloud(self, timestamp_us: int, channel: str, points: np.ndarray,
                    layout: list[tuple[str, int]]) -> bytes:
        """points: (N, F) float32, columns in ``layout`` order. layout: [(name, PointField datatype)].
        Each point is packed as one little-endian record, fields back to back with no padding (as PCD)."""
        assert points.ndim == 2 and points.shape[1] == len(layout), f"points {points.shape} vs {len(layout)} fields"
        dtype = np.dtype([(name, _NUMPY_DTYPE[dt]) for name, dt in layout])  # packed: itemsize = sum of sizes
        rec = np.empty(points.shape[0], dtype=dtype)
        for i, (name, _) in enumerate(layout):
            rec[name] = points[:, i]  # integer fields hold integral float32 values: the cast is exact
        fields = [self.PointField(name=name, offset=dtype.fields[name][1], datatype=dt, count=1)
                  for name, dt in layout]
        msg = self.PointCloud2(
            header=self.header(timestamp_us, channel), height=1, width=rec.shape[0], fields=fields,
            is_bigendian=False, point_step=dtype.itemsize, row_step=dtype.itemsize * rec.shape[0],
            data=np.frombuffer(rec.tobytes(), dtype=np.uint8), is_dense=False)
        return self.serialize(msg, POINTCLOUD_TYPE)

    def transform(self, timestamp_us: int, parent: str, child: str, translation, rotation_wxyz):
        """translation: (3,) metres, rotation_wxyz: (4,) nuScenes quaternion; both ``parent_from_child``."""
        w, x, y, z = (float(v) for v in rotation_wxyz)
        tx, ty, tz = (float(v) for v in translation)
        return self.TransformStamped(
            header=self.header(timestamp_us, parent), child_frame_id=child,
            transform=self.Transform(translation=self.Vector3(x=tx, y=ty, z=tz),
                                     rotation=self.Quaternion(x=x, y=y, z=z, w=w)))

    def tf(self, transforms: list) -> bytes:
        return self.serialize(self.TFMessage(transforms=transforms), TF_TYPE)


def _check_files(nusc, rows: list[dict]) -> None:
    """Fail before the bag exists if any sensor file is missing (a half-written bag is worse than none)."""
    for sd in rows:
        path = Path(nusc.dataroot) / sd["filename"]
        if not path.is_file():
            raise SensorFileError(path, f"file does not exist (sample_data token {sd['token']}, "
                                        f"channel {sd['channel']}, filename '{sd['filename']}')",
                                  f"check that the sensor files are under the dataroot {nusc.dataroot}")


def write_scene_bag(nusc, scene_token: str, out_path: Path) -> dict:
    """Write one scene of a nuScenes-format dataset as a ROS 2 bag (see the module docstring for topics).

    nusc: a ``nuscenes.nuscenes.NuScenes`` instance; sensor files are read from ``nusc.dataroot``.
    scene_token: token of a row of the scene table.
    out_path: the rosbag2 directory to create (must not exist); it receives ``metadata.yaml`` and
        ``<out_path.name>.mcap``.
    Writes every sample_data row of the scene (key frames and sweeps, all cameras, radars and lidars) in
    timestamp order. Returns {topic: message_count} for every topic written.
    Raises SensorFileError naming the file and the sample_data token when a sensor file is missing or
    unreadable (nothing is left at ``out_path`` then), FileExistsError when ``out_path`` exists.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    out_path = Path(out_path)
    if out_path.exists():
        raise FileExistsError(f"{out_path}: bag output exists already; rosbag2 writers never overwrite, "
                              "remove it or choose another path")
    rows = scene_sample_data(nusc, scene_token)
    _check_files(nusc, rows)
    build = _Messages()
    counts: dict[str, int] = {}
    opened = False
    try:
        with Writer(out_path, version=ROSBAG2_VERSION, storage_plugin=StoragePlugin.MCAP) as writer:
            opened = True  # the Writer created out_path (it refuses paths that exist)
            connections: dict[str, Any] = {}

            def write(topic: str, msgtype: str, timestamp_us: int, data: bytes, qos=()) -> None:
                if topic not in connections:
                    connections[topic] = writer.add_connection(topic, msgtype, typestore=build.store,
                                                               offered_qos_profiles=qos)
                writer.write(connections[topic], int(timestamp_us) * 1000, data)
                counts[topic] = counts.get(topic, 0) + 1

            _write_static_tf(nusc, rows, build, write)
            for _, group in groupby(rows, key=lambda sd: sd["timestamp"]):
                same_stamp = list(group)
                _write_ego_tf(nusc, same_stamp, build, write)  # the pose first, then the data it locates
                for sd in same_stamp:
                    _write_sensor(nusc, sd, build, write)
    except BaseException:
        # rosbags aborts the writer (no index, no metadata.yaml); remove that unreadable remainder.
        if opened:
            shutil.rmtree(out_path, ignore_errors=True)
        raise
    return counts


def _write_static_tf(nusc, rows: list[dict], build: _Messages, write) -> None:
    """base_link -> <CHANNEL> (ego_from_sensor) for every sensor of the scene, at the first timestamp."""
    first = rows[0]["timestamp"]
    sensors: dict[str, dict] = {}
    for sd in rows:
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        seen = sensors.setdefault(sd["channel"], cs)
        if seen["token"] != cs["token"] and (seen["translation"] != cs["translation"]
                                             or seen["rotation"] != cs["rotation"]):
            # One static transform per frame cannot carry a recalibration in the middle of a scene.
            raise ValueError(f"channel {sd['channel']} changes calibration within the scene (calibrated_sensor "
                             f"{seen['token']} then {cs['token']}, at sample_data {sd['token']}); "
                             "/tf_static can hold only one base_link -> sensor transform per channel")
    transforms = [build.transform(first, POSE_CHILD, channel, cs["translation"], cs["rotation"])
                  for channel, cs in sorted(sensors.items())]
    write(BAG_TOPICS["tf_static"].topic(), TF_TYPE, first, build.tf(transforms), qos=[_latched_qos()])


def _write_ego_tf(nusc, same_stamp: list[dict], build: _Messages, write) -> None:
    """map -> base_link = the ego pose (global_from_ego) of the rows ``same_stamp``, which share one
    timestamp. Their poses must agree: one /tf message stands for all of them."""
    sd = same_stamp[0]
    ts = sd["timestamp"]
    pose = nusc.get("ego_pose", sd["ego_pose_token"])
    for other in same_stamp[1:]:
        if other["ego_pose_token"] != pose["token"]:
            o = nusc.get("ego_pose", other["ego_pose_token"])
            if not (np.allclose(o["translation"], pose["translation"], rtol=0, atol=1e-6)
                    and np.allclose(o["rotation"], pose["rotation"], rtol=0, atol=1e-9)):
                raise ValueError(f"ego_pose {pose['token']} (sample_data {sd['token']}) and ego_pose {o['token']} "
                                 f"(sample_data {other['token']}) share timestamp {ts} but differ; "
                                 "/tf holds one ego pose per timestamp")
    write(BAG_TOPICS["tf"].topic(), TF_TYPE, ts, build.tf([build.transform(ts, POSE_PARENT, POSE_CHILD,
                                                            pose["translation"], pose["rotation"])]))


def _write_sensor(nusc, sd: dict, build: _Messages, write) -> None:
    path = Path(nusc.dataroot) / sd["filename"]
    channel, ts, modality = sd["channel"], sd["timestamp"], sd["sensor_modality"]
    try:
        if modality == "camera":
            cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
            k = np.asarray(cs["camera_intrinsic"], dtype=np.float64)
            if k.shape != (3, 3):
                raise ValueError(f"calibrated_sensor {cs['token']} (channel {channel}) has camera_intrinsic of "
                                 f"shape {k.shape}, expected (3, 3)")
            write(BAG_TOPICS["camera"].topic(channel), CAMERA_IMAGE_TYPE, ts,
                  build.image(ts, channel, path.read_bytes()))
            write(BAG_TOPICS["camera_info"].topic(channel), CAMERA_INFO_TYPE, ts,
                  build.camera_info(ts, channel, sd["width"], sd["height"], k))
        elif modality == "radar":
            cloud = read_radar_pcd(path)
            layout = _pcd_layout(path)
            if tuple(name for name, _ in layout) != cloud.fields:
                raise SensorFileError(path, f"PCD header fields {[n for n, _ in layout]} differ from the "
                                            f"fields read {list(cloud.fields)}")
            write(BAG_TOPICS["radar"].topic(channel), POINTCLOUD_TYPE, ts,
                  build.point_cloud(ts, channel, cloud.points, layout))
        elif modality == "lidar":
            cloud = read_lidar_bin(path)
            layout = [(name, _FLOAT32) for name in _LIDAR_FIELDS]
            write(BAG_TOPICS["lidar"].topic(channel), POINTCLOUD_TYPE, ts,
                  build.point_cloud(ts, channel, cloud.points, layout))
        else:
            raise ValueError(f"sample_data {sd['token']} (channel {channel}) has sensor modality '{modality}'; "
                             "expected camera, radar or lidar")
    except SensorFileError as err:
        # Name the row too: a reader of the error can then look it up in sample_data.json.
        raise SensorFileError(path, f"{err.problem} (sample_data token {sd['token']}, channel {channel})") from None
    except FileNotFoundError:
        raise SensorFileError(path, f"file does not exist (sample_data token {sd['token']}, channel {channel})",
                              f"check that the sensor files are under the dataroot {nusc.dataroot}") from None
