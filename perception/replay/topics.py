"""The topic map: which bag topics are which cameras and radars, and where ego poses come from.

A YAML file with a schema key (``perception-topics/1``)::

    schema: perception-topics/1
    cameras:                          # channel -> topics (CompressedImage or Image; CameraInfo optional with --rig)
      CAM_FRONT: {image: /cam_front/image/compressed, info: /cam_front/camera_info}
    radars:                           # channel -> PointCloud2 topic and the Doppler kind of its fields
      RADAR_FRONT: {topic: /radar_front/points, doppler: cartesian}   # cartesian: vx_comp/vy_comp; radial: v_r...
    poses: {source: tf, topic: /tf, parent: map, child: base_link}   # or {source: odometry, topic: /odom}
    static_tf: /tf_static             # base_link -> <frame_id> of each sensor (optional with --rig)
    lidars:                           # optional: channel -> PointCloud2 topic, passed through to the MCAP only
      LIDAR_TOP: {topic: /lidar/points}                              # (the network never takes lidar)
    frames: {CAM_FRONT: cam_front_optical}   # optional: the sensor's TF frame when it is not the channel name
    ignore: [/lidar/points]           # optional: topics read but deliberately not used (counted as ignored)

Bags written by ``perception-synth --bags`` need no map: ``default_topic_map`` derives it from their topic
names, the convention of ``BAG_TOPICS`` (``/cameras/<CH>/image/compressed``, ``/cameras/<CH>/camera_info``,
``/radars/<CH>/points``, ``/lidar/<CH>/points``, ``/tf``, ``/tf_static``), the one table the bag writer uses too.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

TOPIC_MAP_SCHEMA = "perception-topics/1"
DOPPLER_KINDS = ("cartesian", "radial")


@dataclass(frozen=True)
class TopicPattern:
    """One topic of the ``perception-synth --bags`` convention: ``pattern`` with ``{channel}`` for per-sensor
    topics, the ROS 2 message type, and the role (``kind``) a reader gives its messages."""

    kind: str
    pattern: str
    msgtype: str

    def topic(self, channel: str = "") -> str:
        return self.pattern.format(channel=channel)

    def channel(self, topic: str) -> str | None:
        """The channel of ``topic`` if it has this pattern ("" for a topic without a channel), else None."""
        head, _, tail = self.pattern.partition("{channel}")
        if not _:
            return "" if topic == self.pattern else None
        m = re.fullmatch(re.escape(head) + r"([^/]+)" + re.escape(tail), topic)
        return m.group(1) if m else None


# The one table of the bag topic convention: perception-synth --bags writes with it (the generator imports this
# module, never the reverse), default_topic_map and NuScenesSceneReader parse / name with it.
BAG_TOPICS: dict[str, TopicPattern] = {p.kind: p for p in (
    TopicPattern("camera", "/cameras/{channel}/image/compressed", "sensor_msgs/msg/CompressedImage"),
    TopicPattern("camera_info", "/cameras/{channel}/camera_info", "sensor_msgs/msg/CameraInfo"),
    TopicPattern("radar", "/radars/{channel}/points", "sensor_msgs/msg/PointCloud2"),
    TopicPattern("lidar", "/lidar/{channel}/points", "sensor_msgs/msg/PointCloud2"),
    TopicPattern("tf", "/tf", "tf2_msgs/msg/TFMessage"),
    TopicPattern("tf_static", "/tf_static", "tf2_msgs/msg/TFMessage"),
)}
POSE_PARENT, POSE_CHILD = "map", "base_link"  # /tf: map -> base_link is the ego pose (global_from_ego)


class TopicMapError(ValueError):
    """A topic map is unusable (names the file, the field and the value)."""


@dataclass(frozen=True)
class CameraTopics:
    image: str
    info: str | None = None


@dataclass(frozen=True)
class RadarTopic:
    topic: str
    doppler: str = "cartesian"


@dataclass(frozen=True)
class TopicMap:
    cameras: dict[str, CameraTopics]
    radars: dict[str, RadarTopic]
    lidars: dict[str, str] = field(default_factory=dict)  # channel -> PointCloud2 topic (to the MCAP, not the network)
    pose_source: str = "tf"  # tf | odometry
    pose_topic: str = BAG_TOPICS["tf"].pattern
    pose_parent: str = POSE_PARENT
    pose_child: str = POSE_CHILD
    static_tf: str | None = BAG_TOPICS["tf_static"].pattern
    frames: dict[str, str] = field(default_factory=dict)  # channel -> TF frame id (default: the channel name)
    ignore: tuple[str, ...] = ()

    def roles(self) -> dict[str, tuple[str, str]]:
        """topic -> (kind, channel); kind in camera, camera_info, radar, lidar, tf, tf_static, odometry, ignored."""
        out: dict[str, tuple[str, str]] = {}
        for ch, t in self.cameras.items():
            out[t.image] = ("camera", ch)
            if t.info:
                out[t.info] = ("camera_info", ch)
        for ch, r in self.radars.items():
            out[r.topic] = ("radar", ch)
        for ch, t in self.lidars.items():
            out[t] = ("lidar", ch)
        out[self.pose_topic] = ("tf" if self.pose_source == "tf" else "odometry", "")
        if self.static_tf:
            out[self.static_tf] = ("tf_static", "")
        for t in self.ignore:
            out.setdefault(t, ("ignored", ""))
        return out

    def frame_of(self, channel: str) -> str:
        return self.frames.get(channel, channel)

    def without_lidar(self) -> "TopicMap":
        """The same map with the lidar topics ignored (``perception-replay --no-lidar``): read, counted as
        ``ignored``, never decoded."""
        return replace(self, lidars={}, ignore=tuple(dict.fromkeys([*self.ignore, *self.lidars.values()])))


def _need(source: str, where: str, mapping: Any, key: str, kind: type = str) -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise TopicMapError(f"{source}: '{where}' needs a '{key}' entry")
    value = mapping[key]
    if not isinstance(value, kind):
        raise TopicMapError(f"{source}: '{where}.{key}' is {value!r}; expected a {kind.__name__}")
    return value


def parse_topic_map(data: Any, source: str = "<topic map>") -> TopicMap:
    if not isinstance(data, dict):
        raise TopicMapError(f"{source}: expected a mapping with 'schema: {TOPIC_MAP_SCHEMA}'")
    if data.get("schema") != TOPIC_MAP_SCHEMA:
        raise TopicMapError(f"{source}: schema is {data.get('schema')!r}; expected {TOPIC_MAP_SCHEMA!r}")
    unknown = set(data) - {"schema", "cameras", "radars", "lidars", "poses", "static_tf", "frames", "ignore"}
    if unknown:
        raise TopicMapError(f"{source}: unknown keys {sorted(unknown)} (allowed: cameras, radars, lidars, poses, "
                            "static_tf, frames, ignore)")
    cams = {}
    for ch, t in (data.get("cameras") or {}).items():
        cams[str(ch)] = CameraTopics(_need(source, f"cameras.{ch}", t, "image"), t.get("info"))
    radars = {}
    for ch, t in (data.get("radars") or {}).items():
        doppler = t.get("doppler", "cartesian") if isinstance(t, dict) else None
        if doppler not in DOPPLER_KINDS:
            raise TopicMapError(f"{source}: 'radars.{ch}.doppler' is {doppler!r}; expected one of {DOPPLER_KINDS}")
        radars[str(ch)] = RadarTopic(_need(source, f"radars.{ch}", t, "topic"), doppler)
    lidars = {str(ch): _need(source, f"lidars.{ch}", t, "topic") for ch, t in (data.get("lidars") or {}).items()}
    if not cams:
        raise TopicMapError(f"{source}: 'cameras' is empty; the reference camera triggers frames, map at least one")
    poses = data.get("poses") or {"source": "tf", "topic": BAG_TOPICS["tf"].pattern}
    src = poses.get("source", "tf")
    if src not in ("tf", "odometry"):
        raise TopicMapError(f"{source}: 'poses.source' is {src!r}; expected 'tf' or 'odometry'")
    return TopicMap(cams, radars, lidars, src, _need(source, "poses", poses, "topic"),
                    str(poses.get("parent", POSE_PARENT)), str(poses.get("child", POSE_CHILD)), data.get("static_tf", BAG_TOPICS["tf_static"].pattern),
                    {str(k): str(v) for k, v in (data.get("frames") or {}).items()},
                    tuple(str(t) for t in (data.get("ignore") or ())))


def load_topic_map(path: str | Path) -> TopicMap:
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"topic map {path} does not exist") from None
    except yaml.YAMLError as err:
        raise TopicMapError(f"{path}: not valid YAML ({err})") from None
    return parse_topic_map(data, str(path))


def default_topic_map(topics: Iterable[str], radar_doppler: dict[str, str] | None = None) -> TopicMap:
    """The map of a ``perception-synth --bags`` bag (its topic naming), from the bag's topic list."""
    topics = list(topics)
    cams: dict[str, dict] = {}
    radars: dict[str, RadarTopic] = {}
    lidars: dict[str, str] = {}
    for t in topics:
        for kind in ("camera", "camera_info", "radar", "lidar"):
            ch = BAG_TOPICS[kind].channel(t)
            if ch is None:
                continue
            if kind == "camera":
                cams.setdefault(ch, {})["image"] = t
            elif kind == "camera_info":
                cams.setdefault(ch, {})["info"] = t
            elif kind == "lidar":  # not an input of this network: passed through to the MCAP
                lidars[ch] = t
            else:
                radars[ch] = RadarTopic(t, (radar_doppler or {}).get(ch, "cartesian"))
    cameras = {ch: CameraTopics(v["image"], v.get("info")) for ch, v in cams.items() if "image" in v}
    if not cameras:
        raise TopicMapError(f"the bag has no {BAG_TOPICS['camera'].topic('<CHANNEL>')} topics "
                            f"(topics: {sorted(topics)[:12]}"
                            "...); it was not written by perception-synth --bags: pass --topics TOPICS.yaml "
                            f"(schema {TOPIC_MAP_SCHEMA}, see docs/replay.md)")
    return TopicMap(cameras, radars, lidars)
