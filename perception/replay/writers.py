"""What a replay writes, per emitted frame: a Foxglove-viewable MCAP, a JSONL of detections, PNG previews.

``OUT/detections.mcap`` (foxglove-sdk, protobuf-encoded Foxglove schemas; ``log_time`` = the frame's t0):

=================================  ======================  ===================================================
topic                              schema                  content
=================================  ======================  ===================================================
``/tf``                            foxglove.FrameTransform ``map`` -> ``base_link`` from ``global_from_ego`` (at t0,
                                                           and at each lidar sweep's stamp); ``base_link`` -> each
                                                           camera (with its calibration)
``/detections``                    foxglove.SceneUpdate    per box one entity (id = track ID) in ``base_link``:
                                                           a cube, a velocity arrow (1 s of travel), every
                                                           forecast mode (line strips from the centre, opacity
                                                           by probability), a text label, metadata (class,
                                                           score, track, attribute, speed, mode_probs)
``/gt``                            foxglove.SceneUpdate    GT boxes where the source has them (light grey cubes,
                                                           velocity arrows, metadata class / attribute / instance
                                                           token) in ``base_link`` at t0; absent otherwise
``/radar``                         foxglove.PointCloud     the input radar points (accumulated sweeps in
                                                           ego@t0), float32 x, y, z, vx, vy, rcs, dt
``/lidar``                         foxglove.PointCloud     the input lidar sweep closest to t0 (float32 x, y, z[,
                                                           intensity]) in ``base_link`` at the sweep's own stamp
                                                           (its header time; a ``/tf`` pose at that stamp places
                                                           it exactly); a second lidar on ``/lidar/<CH>``; absent
                                                           when the drive has none (or ``--no-lidar``)
``/cameras/<CH>/image/compressed`` foxglove.CompressedImage the original JPEG bytes, stamped at capture time
``/cameras/<CH>/calibration``      foxglove.CameraCalibration the camera's K and distortion (Image panel overlays)
=================================  ======================  ===================================================

``docs/foxglove_layout.json`` opens all of it in Foxglove in one step (Layouts -> Import from file).

``OUT/detections.jsonl``: a header line ``{"schema": "perception-detections/1", ...}`` then one line per frame
(``read_jsonl`` reads it back). ``OUT/preview/frame_XXXXXX.png`` (``XXXXXX`` = the frame's index in this run):
every ``preview_every``-th frame, at most ``preview_max`` of them.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from calibration.transforms import invert, matrix_to_quaternion, transform_points
from perception.data.frame import Frame
from perception.pipeline import Detections
from perception.replay.messages import LidarCloud
from perception.visualize import CLASS_COLOURS, draw_detections_preview, hex_to_rgb

JSONL_SCHEMA = "perception-detections/1"
BOX_FIELDS = ("track_id", "label", "score", "centre", "size", "yaw", "velocity", "attribute", "mode",
              "trajectory", "mode_probs")
BOX_UNITS = {
    "centre": "[x, y, z] m, ego@t0 (x forward, y left, z up; box centre)",
    "size": "[w, l, h] m (nuScenes order; l along the heading)",
    "yaw": "rad about z, 0 = along ego x",
    "velocity": "[vx, vy] m/s over ground, ego axes",
    "mode": "index of the most probable trajectory mode",
    "trajectory": "(T, 2) [x, y] m, ego@t0, the most probable mode, 2 Hz from t0 + 0.5 s",
    "mode_probs": "(M,) probabilities of all modes",
}
RADAR_FIELDS = ("x", "y", "z", "vx", "vy", "rcs", "dt")
LIDAR_FIELDS = ("x", "y", "z", "intensity")
PARENT_FRAME, EGO_FRAME = "map", "base_link"


def _round(values: Any, decimals: int) -> Any:
    """numpy array/scalar -> nested lists of Python floats rounded to ``decimals`` (JSON-ready)."""
    return np.round(np.asarray(values, dtype=np.float64), decimals).tolist()


def _timestamp(t_us: int):
    from foxglove.messages import Timestamp

    return Timestamp(int(t_us) // 1_000_000, (int(t_us) % 1_000_000) * 1000)


def _quaternion_xyzw_from_matrix(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """Foxglove's (x, y, z, w) order of ``calibration.transforms.matrix_to_quaternion`` (which re-orthonormalises
    the ~1e-7 rounding poses carry and imports no torch). Memoised on the matrix's bytes: the camera mounts repeat
    every frame."""
    return _quaternion_of_bytes(np.ascontiguousarray(rotation, np.float64).tobytes())


@functools.lru_cache(maxsize=64)
def _quaternion_of_bytes(raw: bytes) -> tuple[float, float, float, float]:
    w, x, y, z = (float(v) for v in matrix_to_quaternion(np.frombuffer(raw, np.float64).reshape(3, 3)))
    return x, y, z, w


def _pose(x: float = 0.0, y: float = 0.0, z: float = 0.0, yaw: float = 0.0):
    from foxglove.messages import Pose, Quaternion, Vector3

    return Pose(position=Vector3(x=x, y=y, z=z),
                orientation=Quaternion(x=0.0, y=0.0, z=float(np.sin(yaw / 2)), w=float(np.cos(yaw / 2))))


def _cube(box: np.ndarray, rgb: tuple[float, float, float], alpha: float):
    """A box ``[x, y, z, w, l, h, yaw, ...]`` as a Foxglove cube (its size is along the pose's x, y, z: our l
    (along the heading), w, h)."""
    from foxglove.messages import Color, CubePrimitive, Vector3

    x, y, z, w, l, h, yaw = (float(v) for v in box[:7])
    return CubePrimitive(pose=_pose(x, y, z, yaw), size=Vector3(x=l, y=w, z=h),
                         color=Color(r=rgb[0], g=rgb[1], b=rgb[2], a=alpha))


def _velocity_arrow(box: np.ndarray, rgb: tuple[float, float, float]) -> list:
    """An arrow from the box's top centre along its velocity, as long as the distance covered in 1 s ([] when the
    box moves slower than 0.2 m/s or has no velocity)."""
    from foxglove.messages import ArrowPrimitive, Color

    if len(box) < 9 or np.hypot(box[7], box[8]) < 0.2:
        return []
    speed = float(np.hypot(box[7], box[8]))
    head = min(0.6, 0.4 * speed)
    return [ArrowPrimitive(pose=_pose(float(box[0]), float(box[1]), float(box[2] + box[5] / 2),
                                      float(np.arctan2(box[8], box[7]))),
                           shaft_length=max(speed - head, 0.05), shaft_diameter=0.12, head_length=head,
                           head_diameter=0.35, color=Color(r=rgb[0], g=rgb[1], b=rgb[2], a=1.0))]


def _mode_line(box: np.ndarray, traj: np.ndarray, prob: float, best: float, rgb: tuple[float, float, float]):
    """One forecast mode as a line strip from the box centre (z of the centre); the most probable mode is opaque
    and thickest, the others fade and thin with their probability relative to it."""
    from foxglove.messages import Color, LinePrimitive, LinePrimitiveLineType, Point3

    z = float(box[2])
    rel = float(prob) / max(float(best), 1e-6)
    path = [Point3(x=float(box[0]), y=float(box[1]), z=z)] + [Point3(x=float(px), y=float(py), z=z)
                                                              for px, py in np.asarray(traj, np.float64)]
    return LinePrimitive(type=LinePrimitiveLineType.LineStrip, pose=_pose(), thickness=0.05 + 0.1 * rel,
                         points=path, color=Color(r=rgb[0], g=rgb[1], b=rgb[2], a=0.25 + 0.75 * rel))


def _point_cloud(t_us: int, points: np.ndarray, names: Sequence[str]):
    """(P, F) points in base_link as a Foxglove PointCloud of little-endian float32 fields ``names``."""
    from foxglove.messages import PackedElementField, PackedElementFieldNumericType, PointCloud

    pts = np.ascontiguousarray(points, dtype="<f4")
    return PointCloud(timestamp=_timestamp(t_us), frame_id=EGO_FRAME, pose=_pose(), point_stride=4 * len(names),
                      fields=[PackedElementField(name=f, offset=4 * i, type=PackedElementFieldNumericType.Float32)
                              for i, f in enumerate(names)], data=pts.tobytes())


class ReplayWriter:
    """Writes every emitted frame to ``out_dir`` (see the module docstring). Call ``close()`` (or use ``with``).

    class_names: the model's classes (recorded in the JSONL header). preview_every: a PNG every N-th frame
    (0: none); preview_max: at most this many PNGs. write_images: put the camera JPEGs into the MCAP.
    frame_period_s: the nominal frame period (12 Hz camera); Foxglove entities live 1.5 periods, so boxes of a
    dropped frame vanish instead of freezing, and every SceneUpdate also deletes the previous frame's entities.
    """

    def __init__(self, out_dir: str | Path, class_names: Sequence[str], preview_every: int = 10,
                 preview_max: int = 50, write_images: bool = True, frame_period_s: float = 1.0 / 12.0) -> None:
        import foxglove
        from foxglove.channels import (
            FrameTransformChannel,
            PointCloudChannel,
            SceneUpdateChannel,
        )

        if preview_every < 0 or preview_max < 0:
            raise ValueError(f"ReplayWriter: preview_every ({preview_every}) and preview_max ({preview_max}) "
                             "must be >= 0 (0 disables previews)")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.class_names = tuple(class_names)
        self.preview_every, self.preview_max = int(preview_every), int(preview_max)
        self.write_images = bool(write_images)
        self.lifetime_s = 1.5 * float(frame_period_s)
        self.mcap_path = self.out_dir / "detections.mcap"
        self.jsonl_path = self.out_dir / "detections.jsonl"
        self.preview_dir = self.out_dir / "preview"
        # One Context per writer: channels of two writers in one process (tests, sharded replay) stay apart.
        self._context = foxglove.Context()
        self._mcap = foxglove.open_mcap(self.mcap_path, allow_overwrite=True, context=self._context)
        self._tf = FrameTransformChannel("/tf", context=self._context)
        self._scene = SceneUpdateChannel("/detections", context=self._context)
        self._radar = PointCloudChannel("/radar", context=self._context)
        self._gt: Any = None  # SceneUpdateChannel "/gt", created on the first frame with GT boxes
        self._lidar: dict[str, Any] = {}  # topic -> PointCloudChannel, created on a lidar's first sweep
        self._lidar_main = ""  # the lidar on "/lidar" (the first one seen); others on "/lidar/<CH>"
        self._cameras: dict[str, Any] = {}  # channel name -> CompressedImageChannel, created on first image
        self._calibrations: dict[str, Any] = {}  # topic -> CameraCalibrationChannel
        self._jsonl = open(self.jsonl_path, "w", encoding="utf-8")
        self._jsonl.write(json.dumps({"schema": JSONL_SCHEMA, "classes": list(self.class_names),
                                      "box_fields": list(BOX_FIELDS), "units": BOX_UNITS,
                                      "times": "t0, t_emit: integer microseconds"}) + "\n")
        self.frames = 0
        self.boxes = 0
        self.messages: dict[str, int] = {}
        self.previews: list[str] = []
        self._closed = False

    def __enter__(self) -> "ReplayWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def write(self, frame: Frame, det: Detections, track_ids: np.ndarray | None,
              camera_jpegs: dict[str, tuple[int, bytes]] | None, t_emit_us: int,
              cameras: dict[str, Any] | None = None, lidar: LidarCloud | Sequence[LidarCloud] | None = None) -> None:
        """One emitted frame. det: the Detections of ``frame`` (ego@t0). track_ids: (K,) int (None: untracked,
        written as -1). camera_jpegs: channel -> (capture stamp µs, original JPEG bytes) of the images used.
        t_emit_us: when the player emitted the frame (µs, the same clock as t0). cameras: channel ->
        ``calibration.rig.Camera`` of those images (original resolution): with it each image gets a Foxglove
        CameraCalibration and a base_link -> camera transform, so the Image panel draws the 3D boxes on it.
        lidar: the input lidar sweep(s) of the frame (``LidarCloud``: points in base_link at the sweep's own stamp,
        with the ego pose there), or None. They go to the MCAP and, moved into ego@t0, to the preview."""
        if self._closed:
            raise RuntimeError(f"ReplayWriter({self.out_dir}) is closed")
        k = len(det)
        ids = np.full(k, -1, np.int64) if track_ids is None else np.asarray(track_ids, np.int64).reshape(-1)
        if ids.shape != (k,):
            raise ValueError(f"ReplayWriter.write({det.sample_token}): {len(ids)} track IDs for {k} detections")
        if track_ids is not None and len(np.unique(ids)) != k:
            raise ValueError(f"ReplayWriter.write({det.sample_token}): duplicate track IDs {ids.tolist()}; each "
                             "box is one Foxglove entity keyed by its track ID")
        if int(det.t0) != int(frame.t0):
            raise ValueError(f"ReplayWriter.write: detections at t0={det.t0} us for a frame at t0={frame.t0} us")
        clouds = [lidar] if isinstance(lidar, LidarCloud) else list(lidar or [])
        self._write_mcap(frame, det, ids, camera_jpegs or {}, cameras or {}, clouds)
        self._write_jsonl(det, ids, t_emit_us)
        if (self.preview_every and self.frames % self.preview_every == 0
                and len(self.previews) < self.preview_max):
            path = self.preview_dir / f"frame_{self.frames:06d}.png"
            draw_detections_preview(frame, det, ids, path, lidar=_lidar_at_t0(frame, clouds))
            self.previews.append(str(path))
        self.frames += 1
        self.boxes += k

    def close(self) -> dict[str, Any]:
        """Finish the files. Returns paths written and counts (frames, boxes, previews, messages per topic)."""
        if not self._closed:
            self._mcap.close()
            self._jsonl.close()
            self._closed = True
        return {"mcap": str(self.mcap_path), "jsonl": str(self.jsonl_path), "previews": list(self.previews),
                "frames": self.frames, "boxes": self.boxes, "messages": dict(self.messages)}

    # -- MCAP ---------------------------------------------------------------------------------------------------

    def _log(self, channel: Any, topic: str, message: Any, log_time_ns: int) -> None:
        channel.log(message, log_time=log_time_ns)
        self.messages[topic] = self.messages.get(topic, 0) + 1

    def _write_mcap(self, frame: Frame, det: Detections, ids: np.ndarray,
                    camera_jpegs: dict[str, tuple[int, bytes]], cameras: dict[str, Any],
                    clouds: list[LidarCloud]) -> None:
        log_time = int(frame.t0) * 1000  # ns
        self._log_pose(det.global_from_ego, det.t0, log_time)
        self._log_detections(det, ids, log_time)
        if len(frame.gt_boxes):
            self._log_gt(frame, log_time)
        self._log_radar(frame, log_time)
        for cloud in clouds:
            self._log_lidar(frame, cloud, log_time)
        if self.write_images:
            for channel, (stamp_us, jpeg) in camera_jpegs.items():
                self._log_camera(channel, stamp_us, jpeg, cameras.get(channel), log_time)

    def _log_pose(self, global_from_ego: np.ndarray, t_us: int, log_time: int) -> None:
        """map -> base_link at ``t_us`` on /tf."""
        from foxglove.messages import FrameTransform, Quaternion, Vector3

        g = np.asarray(global_from_ego, np.float64)
        qx, qy, qz, qw = _quaternion_xyzw_from_matrix(g[:3, :3])
        self._log(self._tf, "/tf", FrameTransform(
            timestamp=_timestamp(t_us), parent_frame_id=PARENT_FRAME, child_frame_id=EGO_FRAME,
            translation=Vector3(x=float(g[0, 3]), y=float(g[1, 3]), z=float(g[2, 3])),
            rotation=Quaternion(x=qx, y=qy, z=qz, w=qw)), log_time)

    def _scene_update(self, t_us: int, entities: list) -> Any:
        """A SceneUpdate that first deletes every entity older than ``t_us`` (tracks that ended disappear even when
        frames come faster than the lifetime), then adds ``entities``."""
        from foxglove.messages import SceneEntityDeletion, SceneEntityDeletionType, SceneUpdate

        deletion = SceneEntityDeletion(timestamp=_timestamp(t_us), type=SceneEntityDeletionType.All)
        return SceneUpdate(deletions=[deletion], entities=entities)

    def _log_detections(self, det: Detections, ids: np.ndarray, log_time: int) -> None:
        """One entity per box (id = track ID): a cube, a velocity arrow, every forecast mode (line strips from the
        centre, most probable first; opacity and width by probability), a text label, metadata."""
        from foxglove.messages import Color, Duration, KeyValuePair, SceneEntity, TextPrimitive

        stamp = _timestamp(det.t0)
        lifetime = Duration.from_secs(self.lifetime_s)
        boxes = np.asarray(det.boxes, np.float64).reshape(len(det), 9)
        entities = []
        for b, (box, score, name, attr, tid) in enumerate(zip(boxes, det.scores, det.names, det.attributes, ids)):
            rgb = tuple(c / 255.0 for c in hex_to_rgb(CLASS_COLOURS.get(str(name), "#bbbbbb")))
            probs = np.asarray(det.mode_probs[b], np.float64)
            lines = [_mode_line(box, det.trajectories[b, m], probs[m], probs.max(), rgb)
                     for m in np.argsort(-probs, kind="stable")]  # the most probable mode first
            x, y, z, h = float(box[0]), float(box[1]), float(box[2]), float(box[5])
            text = TextPrimitive(pose=_pose(x, y, z + h / 2 + 0.5), billboard=True, font_size=14.0,
                                 scale_invariant=True, color=Color(r=1.0, g=1.0, b=1.0, a=1.0),
                                 text=f"#{int(tid)} {name} {float(score):.2f}")
            speed = float(np.hypot(box[7], box[8]))
            metadata = [KeyValuePair(key="class", value=str(name)), KeyValuePair(key="score", value=f"{score:.3f}"),
                        KeyValuePair(key="track_id", value=str(int(tid))),
                        KeyValuePair(key="attribute", value=str(attr)),
                        KeyValuePair(key="speed_mps", value=f"{speed:.2f}"),
                        KeyValuePair(key="mode_probs", value=" ".join(f"{p:.3f}" for p in probs))]
            entities.append(SceneEntity(timestamp=stamp, frame_id=EGO_FRAME,
                                        id=str(int(tid)) if tid >= 0 else f"det{b}", lifetime=lifetime,
                                        frame_locked=False, metadata=metadata, cubes=[_cube(box, rgb, 0.45)],
                                        arrows=_velocity_arrow(box, rgb), lines=lines, texts=[text]))
        self._log(self._scene, "/detections", self._scene_update(det.t0, entities), log_time)

    def _log_gt(self, frame: Frame, log_time: int) -> None:
        """The frame's GT boxes (where the source has them) on ``/gt``: grey wireframe-like cubes with velocity."""
        from foxglove.channels import SceneUpdateChannel
        from foxglove.messages import Duration, KeyValuePair, SceneEntity

        if self._gt is None:
            self._gt = SceneUpdateChannel("/gt", context=self._context)
        grey = (0.75, 0.75, 0.75)
        entities = [SceneEntity(timestamp=_timestamp(frame.t0), frame_id=EGO_FRAME, id=f"gt{g}",
                                lifetime=Duration.from_secs(self.lifetime_s), frame_locked=False,
                                metadata=[KeyValuePair(key="class", value=str(frame.gt_names[g])),
                                          KeyValuePair(key="attribute", value=str(frame.gt_attributes[g])),
                                          KeyValuePair(key="instance", value=str(frame.gt_instance_tokens[g]))],
                                cubes=[_cube(box, grey, 0.2)], arrows=_velocity_arrow(box, grey))
                    for g, box in enumerate(np.asarray(frame.gt_boxes, np.float64))]
        self._log(self._gt, "/gt", self._scene_update(frame.t0, entities), log_time)

    def _log_radar(self, frame: Frame, log_time: int) -> None:
        fields = list(frame.radar_fields)
        missing = [f for f in RADAR_FIELDS if f not in fields]
        if missing:
            raise ValueError(f"ReplayWriter.write({frame.sample_token}): radar fields {missing} missing from "
                             f"{fields} (the Frame contract requires them)")
        pts = frame.radar_points[frame.radar_valid][:, [fields.index(f) for f in RADAR_FIELDS]]
        self._log(self._radar, "/radar", _point_cloud(frame.t0, pts, RADAR_FIELDS), log_time)

    def _log_lidar(self, frame: Frame, cloud: LidarCloud, log_time: int) -> None:
        """The sweep in base_link at its own stamp, and the ego pose at that stamp on /tf (Foxglove then places the
        cloud where the car was when it was captured, exactly, whatever the interpolation between frames)."""
        from foxglove.channels import PointCloudChannel

        pts = np.asarray(cloud.points, np.float32)
        if pts.ndim != 2 or pts.shape[1] < 3:
            raise ValueError(f"ReplayWriter.write({frame.sample_token}): lidar points must be (N, >=3) x, y, z[, "
                             f"intensity] in base_link, got {pts.shape}")
        names = LIDAR_FIELDS[:min(pts.shape[1], len(LIDAR_FIELDS))]
        if not self._lidar:
            self._lidar_main = cloud.channel
        topic = "/lidar" if cloud.channel == self._lidar_main else f"/lidar/{cloud.channel}"
        if topic not in self._lidar:
            self._lidar[topic] = PointCloudChannel(topic, context=self._context)
        if int(cloud.stamp_us) != int(frame.t0):
            self._log_pose(cloud.global_from_ego, cloud.stamp_us, log_time)
        self._log(self._lidar[topic], topic, _point_cloud(cloud.stamp_us, pts[:, :len(names)], names), log_time)

    def _log_camera(self, channel: str, stamp_us: int, jpeg: bytes, cam: Any, log_time: int) -> None:
        """The original JPEG; with the camera's calibration also a base_link -> camera transform and a Foxglove
        CameraCalibration (so the Image panel draws the 3D boxes on it)."""
        from foxglove.channels import CameraCalibrationChannel, CompressedImageChannel
        from foxglove.messages import CameraCalibration, CompressedImage, FrameTransform, Quaternion, Vector3

        topic = f"/cameras/{channel}/image/compressed"
        if channel not in self._cameras:
            self._cameras[channel] = CompressedImageChannel(topic, context=self._context)
        self._log(self._cameras[channel], topic, CompressedImage(
            timestamp=_timestamp(stamp_us), frame_id=str(channel), data=bytes(jpeg), format="jpeg"), log_time)
        if cam is None:
            return
        m = np.asarray(cam.ego_from_camera, np.float64)
        cx, cy, cz, cw = _quaternion_xyzw_from_matrix(m[:3, :3])
        self._log(self._tf, "/tf", FrameTransform(
            timestamp=_timestamp(stamp_us), parent_frame_id=EGO_FRAME, child_frame_id=str(channel),
            translation=Vector3(x=float(m[0, 3]), y=float(m[1, 3]), z=float(m[2, 3])),
            rotation=Quaternion(x=cx, y=cy, z=cz, w=cw)), log_time)
        k = np.asarray(cam.intrinsics, np.float64)
        model, d = "plumb_bob", [0.0] * 5
        if cam.distortion is not None:
            model = "kannala_brandt" if cam.distortion.model == "fisheye" else "plumb_bob"
            d = [float(v) for v in cam.distortion.coeffs]
        p = np.zeros((3, 4))
        p[:, :3] = k
        ctopic = f"/cameras/{channel}/calibration"
        if ctopic not in self._calibrations:
            self._calibrations[ctopic] = CameraCalibrationChannel(ctopic, context=self._context)
        self._log(self._calibrations[ctopic], ctopic, CameraCalibration(
            timestamp=_timestamp(stamp_us), frame_id=str(channel), width=int(cam.width),
            height=int(cam.height), distortion_model=model, D=d, K=k.reshape(-1).tolist(),
            R=np.eye(3).reshape(-1).tolist(), P=p.reshape(-1).tolist()), log_time)

    # -- JSONL --------------------------------------------------------------------------------------------------

    def _write_jsonl(self, det: Detections, ids: np.ndarray, t_emit_us: int) -> None:
        boxes = np.asarray(det.boxes, np.float64).reshape(len(det), 9)
        out = []
        for b, box in enumerate(boxes):
            mode = int(np.argmax(det.mode_probs[b]))
            out.append({"track_id": int(ids[b]), "label": str(det.names[b]), "score": _round(det.scores[b], 4),
                        "centre": _round(box[:3], 3), "size": _round(box[3:6], 3), "yaw": _round(box[6], 4),
                        "velocity": _round(box[7:9], 3), "attribute": str(det.attributes[b]), "mode": mode,
                        "trajectory": _round(det.trajectories[b, mode], 3),
                        "mode_probs": _round(det.mode_probs[b], 4)})
        record = {"t0": int(det.t0), "t_emit": int(t_emit_us), "sample_token": str(det.sample_token),
                  # rotation to 1e-7, translation to 0.1 µm: enough for global coordinates of ~1e4 m
                  "global_from_ego": _round(det.global_from_ego, 7), "boxes": out}
        self._jsonl.write(json.dumps(record, allow_nan=False) + "\n")


def _lidar_at_t0(frame: Frame, clouds: list[LidarCloud]) -> np.ndarray | None:
    """The sweeps' x, y, z moved into ego@t0 (for the preview's BEV), None without lidar."""
    if not clouds:
        return None
    ego_t0_from_global = invert(frame.global_from_ego)
    return np.concatenate([transform_points(ego_t0_from_global @ np.asarray(c.global_from_ego, np.float64),
                                            np.asarray(c.points, np.float32)[:, :3]) for c in clouds])


class MemoryWriter:
    """A replay writer that keeps the Frames and Detections in memory (``replay(..., writer=MemoryWriter())``):
    for notebooks, tests and benchmarks that look at what the pipeline produced without writing files."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.dets: list[Detections] = []

    def write(self, frame: Frame, det: Detections, track_ids: np.ndarray | None, camera_jpegs: Any = None,
              emit_us: int | None = None, cameras: Any = None, lidar: Any = None) -> None:
        self.frames.append(frame)
        self.dets.append(det)

    def close(self) -> dict[str, int]:
        return {"frames": len(self.frames)}


def read_jsonl(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read ``detections.jsonl``: (header, one dict per frame). Raises ValueError when the header's schema is not
    ``JSONL_SCHEMA``."""
    with open(path, encoding="utf-8") as f:
        first = f.readline()
        try:
            header = json.loads(first) if first.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: first line is not JSON ({exc}); expected a {JSONL_SCHEMA} header") from None
        if not isinstance(header, dict) or header.get("schema") != JSONL_SCHEMA:
            found = header.get("schema") if isinstance(header, dict) else None
            raise ValueError(f"{path}: schema {found!r}, expected {JSONL_SCHEMA!r} (a detections.jsonl written "
                             "by perception-replay)")
        frames = [json.loads(line) for line in f if line.strip()]
    return header, frames
