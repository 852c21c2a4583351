"""Replay messages: what a reader yields and the player consumes, whatever the source (bag or nuScenes tables).

A ``Message`` is one input message with its arrival (log) time, its role from the topic map (``kind``,
``channel``), its header stamp and a decoded payload, or a drop ``reason`` when it could not be decoded.
Readers of different sources produce the same payload types (and the same numbers), so the player and the
detections cannot tell a bag from a nuScenes scene.

Drop reasons (``report.json`` counts each per topic): see ``DROP_REASONS``.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from calibration.transforms import make_transform

DROP_REASONS = {
    "undecodable": "the payload could not be decoded (corrupt CDR, corrupt JPEG, unsupported encoding, bad layout)",
    "wrong_size": "the image size differs from the camera's calibration",
    "non_finite": "NaN or inf in a radar cloud, a transform or camera intrinsics",
    "unknown_topic": "the topic is not in the topic map",
    "ignored": "a known topic this replay does not use (a camera the model lacks, lidar under --no-lidar)",
    "out_of_order": "the stamp is older than the reorder buffer (or than the last emitted frame, for a trigger)",
    "no_calibration": "no /tf_static transform or CameraInfo for the sensor, and no --rig",
    "no_pose": "no ego pose within the extrapolation limit at the frame time",
    "not_selected": "arrived in time but a closer message of the same sensor was used, or no frame needed it",
    "duplicate": "the same stamp again on the same topic",
    "unused_transform": "a transform between frames the replay does not use",
    "stamp_outlier": "the stamp is far ahead of the stream's time (more than the player's max_stamp_lead, 1 s by "
                     "default, ahead of the arrival clock's usual offset); kept, it would push every later message "
                     "out of the reorder buffer",
}


@dataclass
class CameraImage:
    """A decoded camera image. ``rgb`` may be a reduced decode (JPEG DCT scaling, ``decode_image(draft_width=)``):
    ``reduction`` is then 2, 4 or 8 and pixel (u', v') of ``rgb`` covers the full image's pixels
    [s u', s u' + s) x [s v', s v' + s), s = ``reduction``; ``size`` is always the full image's (width, height),
    the size the calibration refers to."""

    rgb: np.ndarray  # (H, W, 3) uint8; (ceil(H0 / s), ceil(W0 / s), 3) for a reduced decode
    jpeg: bytes | None = None  # the original compressed bytes (kept for the MCAP output)
    reduction: int = 1
    full_size: tuple[int, int] | None = None  # (W0, H0) when reduced

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the full image."""
        return self.full_size or (int(self.rgb.shape[1]), int(self.rgb.shape[0]))

    def decoded_from_full(self) -> np.ndarray:
        """(3, 3) pixels of the decoded ``rgb`` <- pixels of the full image (``decoded_from_full``)."""
        return decoded_from_full(self.reduction)


def decoded_from_full(reduction: int) -> np.ndarray:
    """(3, 3) pixels of an image decoded at 1/``reduction`` of its size <- pixels of the full image (pixel centres
    at integers): u' = (u + 0.5) / s - 0.5, the same for v. The identity for a full-size decode."""
    s = float(reduction)
    return np.array([[1 / s, 0, 0.5 / s - 0.5], [0, 1 / s, 0.5 / s - 0.5], [0, 0, 1]])


@dataclass
class CameraInfo:
    width: int
    height: int
    k: np.ndarray  # (3, 3)
    distortion_model: str = ""
    d: tuple[float, ...] = ()


@dataclass
class Transform:
    parent: str
    child: str
    stamp_us: int
    translation: np.ndarray  # (3,)
    rotation_wxyz: np.ndarray  # (4,)

    def matrix(self) -> np.ndarray:
        return make_transform(self.rotation_wxyz, self.translation)


@dataclass
class Message:
    seq: int
    topic: str
    log_time_us: int  # arrival
    kind: str  # camera | camera_info | radar | lidar | tf | tf_static | odometry | ignored | unknown
    channel: str = ""
    stamp_us: int = 0
    payload: Any = None  # CameraImage | CameraInfo | np.ndarray (radar records; lidar (N, 3|4) points) | list[Transform]
    reason: str | None = None  # a DROP_REASONS key when the message cannot be used
    detail: str = ""
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class LidarCloud:
    """One lidar sweep as the replay writes it (``ReplayWriter.write(lidar=...)``): ``points`` (N, 3|4) float32
    x, y, z[, intensity] in base_link at the sweep's own ``stamp_us`` (sensor -> ego by the mount, not motion
    compensated), ``global_from_ego`` (4, 4) the ego pose at that stamp."""

    channel: str
    stamp_us: int
    points: np.ndarray
    global_from_ego: np.ndarray


class ReplayInputError(ValueError):
    """A drive or a replay option cannot be used (names the path or option and what to do)."""


class DecodeError(ValueError):
    def __init__(self, reason: str, detail: str):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}")


def stamp_us(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000 + int(header.stamp.nanosec) // 1000


def decode_image(data: bytes, draft_width: int | None = None) -> CameraImage:
    """JPEG (or PNG) bytes -> CameraImage. ``draft_width``: the width the network resizes the image to; a JPEG is
    then decoded directly at 1/2, 1/4 or 1/8 of its size by libjpeg's DCT scaling (PIL ``Image.draft``), the
    largest reduction that keeps at least ``draft_width`` columns (and the rows of the same aspect), which costs a
    fraction of a full decode followed by a resize. PNG and other formats are decoded at full size."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            w0, h0 = im.size
            reduction = 1
            if draft_width and im.format == "JPEG" and draft_width < w0:
                # draft() picks the largest scale whose result is at least the requested size
                im.draft("RGB", (draft_width, max(1, -(-h0 * draft_width // w0))))
                reduction = max(1, round(w0 / im.size[0]))
            im.load()
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as err:  # PIL raises several types for corrupt data
        raise DecodeError("undecodable", f"image bytes cannot be decoded ({type(err).__name__}: {err})") from None
    return CameraImage(rgb, data, reduction, (w0, h0) if reduction > 1 else None)


def decode_jpeg(data: bytes) -> np.ndarray:
    """Full-size decode of JPEG (or PNG) bytes -> (H, W, 3) uint8."""
    return decode_image(data).rgb


def image_from_ros(msg: Any, msgtype: str, draft_width: int | None = None) -> CameraImage:
    """sensor_msgs/CompressedImage (jpeg/png) or sensor_msgs/Image (rgb8, bgr8, mono8). ``draft_width``: see
    ``decode_image``."""
    if msgtype.endswith("CompressedImage"):
        fmt = str(msg.format).lower()
        if not any(k in fmt for k in ("jpeg", "jpg", "png")):
            raise DecodeError("undecodable", f"CompressedImage format '{msg.format}' is not jpeg or png")
        data = bytes(np.asarray(msg.data, dtype=np.uint8).tobytes())
        img = decode_image(data, draft_width)
        if "png" in fmt:
            img.jpeg = None
        return img
    enc = str(msg.encoding).lower()
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    raw = np.asarray(msg.data, dtype=np.uint8)
    channels = {"rgb8": 3, "bgr8": 3, "mono8": 1}.get(enc)
    if channels is None:
        raise DecodeError("undecodable", f"Image encoding '{msg.encoding}' is not supported (rgb8, bgr8, mono8)")
    if step < w * channels or raw.size != step * h:
        raise DecodeError("undecodable", f"Image {w}x{h} {enc} with step {step} has {raw.size} bytes")
    img = raw.reshape(h, step)[:, :w * channels].reshape(h, w, channels)
    if enc == "bgr8":
        img = img[..., ::-1]
    elif enc == "mono8":
        img = np.repeat(img, 3, axis=2)
    return CameraImage(np.ascontiguousarray(img))


def camera_info_from_ros(msg: Any) -> CameraInfo:
    k = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(k)):
        raise DecodeError("non_finite", f"CameraInfo K has non-finite values {k.tolist()}")
    return CameraInfo(int(msg.width), int(msg.height), k, str(msg.distortion_model),
                      tuple(float(v) for v in np.asarray(msg.d, dtype=np.float64)))


_POINTFIELD = {1: "i1", 2: "u1", 3: "<i2", 4: "<u2", 5: "<i4", 6: "<u4", 7: "<f4", 8: "<f8"}


def cloud_from_ros(msg: Any) -> np.ndarray:
    """sensor_msgs/PointCloud2 -> packed structured records (one named field per PointField, its own type),
    the layout ``perception.data.io.read_radar_records`` gives for a PCD file."""
    if msg.is_bigendian:
        raise DecodeError("undecodable", "big-endian PointCloud2 is not supported")
    n = int(msg.width) * int(msg.height)
    step = int(msg.point_step)
    names, formats, offsets = [], [], []
    for f in msg.fields:
        if f.datatype not in _POINTFIELD or int(f.count) != 1:
            raise DecodeError("undecodable", f"PointField '{f.name}' has datatype {f.datatype} count {f.count}")
        names.append(str(f.name))
        formats.append(_POINTFIELD[f.datatype])
        offsets.append(int(f.offset))
    try:
        dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": step})
    except (ValueError, TypeError) as err:
        raise DecodeError("undecodable", f"PointCloud2 field layout is inconsistent ({err})") from None
    data = np.asarray(msg.data, dtype=np.uint8)
    if data.size != n * step:
        raise DecodeError("undecodable", f"PointCloud2 says {n} points x {step} B but carries {data.size} B")
    if not {"x", "y", "z"} <= set(names):
        raise DecodeError("undecodable", f"PointCloud2 has no x/y/z fields (fields: {names})")
    rec = np.frombuffer(data.tobytes(), dtype=dtype, count=n)
    packed = np.dtype([(nm, fm) for nm, fm in zip(names, formats)])
    if packed.itemsize == step and all(dtype.fields[nm][1] == packed.fields[nm][1] for nm in names):
        return rec.view(packed)
    out = np.empty(n, packed)
    for nm in names:
        out[nm] = rec[nm]
    return out


def check_cloud(rec: np.ndarray) -> None:
    """A radar cloud with NaN/inf in positions or velocities is dropped whole: a sensor writing NaN is suspect."""
    bad = np.zeros(len(rec), bool)
    for nm in rec.dtype.names:
        if rec.dtype[nm].kind == "f":
            bad |= ~np.isfinite(rec[nm])
    if bad.any():
        raise DecodeError("non_finite", f"{int(bad.sum())} of {len(rec)} points have NaN/inf values")


def lidar_points(cloud: Any) -> np.ndarray:
    """Lidar records (``cloud_from_ros``) or a ``perception.data.io.PointCloud`` -> (N, 4) float32 x, y, z,
    intensity in the sensor frame ((N, 3) without an ``intensity`` field). Points with a non-finite coordinate
    are left out: organised clouds mark missing returns with NaN, which is no reason to lose the sweep."""
    if isinstance(cloud, np.ndarray):
        fields, column = cloud.dtype.names, cloud.__getitem__
    else:
        fields, column = cloud.fields, cloud.column
    names = ["x", "y", "z"] + (["intensity"] if "intensity" in fields else [])
    pts = np.stack([np.asarray(column(n), np.float32) for n in names], axis=1)
    return pts[np.isfinite(pts[:, :3]).all(axis=1)]


def transforms_from_ros(msg: Any) -> list[Transform]:
    out = []
    for t in msg.transforms:
        tr, q = t.transform.translation, t.transform.rotation
        trans = np.array([tr.x, tr.y, tr.z], np.float64)
        rot = np.array([q.w, q.x, q.y, q.z], np.float64)
        if not (np.all(np.isfinite(trans)) and np.all(np.isfinite(rot))):
            raise DecodeError("non_finite", f"transform {t.header.frame_id} -> {t.child_frame_id} is not finite")
        out.append(Transform(str(t.header.frame_id), str(t.child_frame_id), stamp_us(t.header), trans, rot))
    return out


def odometry_from_ros(msg: Any) -> list[Transform]:
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    trans = np.array([p.x, p.y, p.z], np.float64)
    rot = np.array([q.w, q.x, q.y, q.z], np.float64)
    if not (np.all(np.isfinite(trans)) and np.all(np.isfinite(rot))):
        raise DecodeError("non_finite", "odometry pose is not finite")
    return [Transform(str(msg.header.frame_id), str(msg.child_frame_id), stamp_us(msg.header), trans, rot)]
