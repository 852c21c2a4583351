"""The Frame: the contract between data producers (datasets, replay) and consumers (model, evaluation).

One Frame holds everything about one reference time ``t0`` (integer microseconds), in the ego frame at t0:

=====================  ==============  =======================================================================
field                  shape / dtype   meaning
=====================  ==============  =======================================================================
sample_token           str             nuScenes sample token (or a replay frame id)
t0                     int64           reference time, µs
global_from_ego        (4, 4) f64      ego pose at t0
images                 (N, H, W, 3) u8 RGB, preprocessed (one size for all cameras)
img_from_ego           (N, 4, 4) f32   ``M @ [x, y, z, 1] = [u*d, v*d, d, 1]`` in pixels of ``images``
camera_channels        (N,) str
camera_valid           (N,) bool       False: missing, unreadable or dropped camera (its image is zeros)
camera_time            (N,) int64      capture time of each image, µs
radar_points           (P, F) f32      P = P_max, padded; fields below; ego@t0, velocities over ground
radar_fields           (F,) str        at least x, y, z, rcs, vx, vy, dt (s, t0 - sweep time), sensor (index)
radar_valid            (P,) bool
stereo_pairs           (S, 2) int64    (left, right) indices into the cameras
gt_boxes               (G, 9) f32      [x, y, z, w, l, h, yaw, vx, vy]: centre (m), nuScenes size order,
                                       yaw about z (rad, 0 = along ego x), velocity over ground (m/s)
gt_labels              (G,) int64      index into the config's classes
gt_names               (G,) str        detection class names
gt_attributes          (G,) str        nuScenes attribute name or ""
gt_instance_tokens     (G,) str
gt_future              (G, T, 2) f32   absolute future x, y (m) in ego@t0 at 2 Hz (T = 12: 6 s)
gt_future_valid        (G, T) bool
lidar_points           (L, 3) f32      optional, training/evaluation only: the key frame's LIDAR_TOP returns
                                       x, y, z in ego@t0 (L = 0 where the data has no lidar). Depth targets and
                                       the depth metric project them through ``img_from_ego``; the model and
                                       the exported graph never take them
scene_token            str             the scene (nuScenes) or drive (replay) the frame belongs to; "" when
                                       unknown. Temporal networks reset their state when it changes
=====================  ==============  =======================================================================

``issues`` (not saved) lists what went wrong while building the Frame (file, reason) under the stated
policy (a bad sensor file masks that sensor; nothing is silently dropped).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

NPZ_KEYS = ("sample_token", "t0", "global_from_ego", "images", "img_from_ego", "camera_channels", "camera_valid",
            "camera_time", "radar_points", "radar_fields", "radar_valid", "stereo_pairs", "gt_boxes", "gt_labels",
            "gt_names", "gt_attributes", "gt_instance_tokens", "gt_future", "gt_future_valid")
OPTIONAL_NPZ_KEYS = ("lidar_points", "scene_token")  # written always, read when present (files from before the field load)
BOX_FIELDS = ("x", "y", "z", "w", "l", "h", "yaw", "vx", "vy")


@dataclass
class Frame:
    sample_token: str
    t0: int
    global_from_ego: np.ndarray
    images: np.ndarray
    img_from_ego: np.ndarray
    camera_channels: np.ndarray
    camera_valid: np.ndarray
    camera_time: np.ndarray
    radar_points: np.ndarray
    radar_fields: np.ndarray
    radar_valid: np.ndarray
    stereo_pairs: np.ndarray
    gt_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 9), np.float32))
    gt_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    gt_names: np.ndarray = field(default_factory=lambda: np.zeros(0, "<U32"))
    gt_attributes: np.ndarray = field(default_factory=lambda: np.zeros(0, "<U32"))
    gt_instance_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, "<U32"))
    gt_future: np.ndarray = field(default_factory=lambda: np.zeros((0, 12, 2), np.float32))
    gt_future_valid: np.ndarray = field(default_factory=lambda: np.zeros((0, 12), bool))
    lidar_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))
    scene_token: str = ""
    issues: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def num_cameras(self) -> int:
        return int(self.images.shape[0])

    def radar_column(self, name: str) -> np.ndarray:
        return self.radar_points[:, list(self.radar_fields).index(name)]

    def validate(self) -> None:
        """Check shapes and dtypes against the contract (raises ValueError naming the field)."""
        n = self.images.shape[0]
        checks = [
            ("global_from_ego", self.global_from_ego.shape == (4, 4)),
            ("images", self.images.ndim == 4 and self.images.shape[3] == 3 and self.images.dtype == np.uint8),
            ("img_from_ego", self.img_from_ego.shape == (n, 4, 4) and self.img_from_ego.dtype == np.float32),
            ("camera_channels", self.camera_channels.shape == (n,)),
            ("camera_valid", self.camera_valid.shape == (n,) and self.camera_valid.dtype == bool),
            ("camera_time", self.camera_time.shape == (n,) and self.camera_time.dtype == np.int64),
            ("radar_points", self.radar_points.ndim == 2 and self.radar_points.dtype == np.float32
             and self.radar_points.shape[1] == len(self.radar_fields)),
            ("radar_valid", self.radar_valid.shape == (self.radar_points.shape[0],) and self.radar_valid.dtype == bool),
            ("stereo_pairs", self.stereo_pairs.ndim == 2 and self.stereo_pairs.shape[1] == 2),
            ("lidar_points", self.lidar_points.ndim == 2 and self.lidar_points.shape[1] == 3
             and self.lidar_points.dtype == np.float32),
            ("gt_boxes", self.gt_boxes.ndim == 2 and self.gt_boxes.shape[1] == 9 and self.gt_boxes.dtype == np.float32),
        ]
        g = self.gt_boxes.shape[0]
        checks += [(name, getattr(self, name).shape[0] == g) for name in
                   ("gt_labels", "gt_names", "gt_attributes", "gt_instance_tokens", "gt_future", "gt_future_valid")]
        bad = [name for name, ok in checks if not ok]
        if bad:
            name = bad[0]
            arr = getattr(self, name)
            raise ValueError(f"Frame {self.sample_token}: field '{name}' has shape {getattr(arr, 'shape', None)} "
                             f"dtype {getattr(arr, 'dtype', None)}, which breaks the Frame contract "
                             f"(perception/data/frame.py)")

    def save_npz(self, path: str | Path) -> None:
        """Write the contract fields (``NPZ_KEYS``) to ``path``; strings as fixed-width unicode, no pickle."""
        arrays = {}
        for key in NPZ_KEYS + OPTIONAL_NPZ_KEYS:
            value = getattr(self, key)
            if key in ("sample_token", "scene_token"):
                value = np.array(value, dtype=f"<U{max(len(value), 1)}")
            elif key == "t0":
                value = np.array(value, dtype=np.int64)
            elif isinstance(value, np.ndarray) and value.dtype.kind == "O":
                value = value.astype(str)
            arrays[key] = value
        np.savez_compressed(path, **arrays)

    @classmethod
    def load_npz(cls, path: str | Path) -> "Frame":
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in NPZ_KEYS if k not in data.files]
            if missing:
                raise ValueError(f"{path}: not a Frame file, missing keys {missing}")
            kw = {k: data[k] for k in NPZ_KEYS + OPTIONAL_NPZ_KEYS if k in data.files}
        kw["sample_token"] = str(kw["sample_token"])
        if "scene_token" in kw:
            kw["scene_token"] = str(kw["scene_token"])
        kw["t0"] = int(kw["t0"])
        return cls(**kw)


@dataclass
class ClipSample:
    """A training item of a temporal model: ``frame`` and an earlier key frame of its scene under the same BEV
    augmentation (``previous``; None: a cold start, dropped on purpose or at the scene's first key frame)."""

    frame: Frame
    previous: Frame | None = None


def frame_field_names() -> list[str]:
    return [f.name for f in fields(Frame)]
