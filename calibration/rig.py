"""The sensor rig: cameras, radars, optional lidars and stereo pairs, validated on construction.

Every sensor carries its mount as ``ego_from_<sensor>`` (4x4, metres), the
nuScenes ``calibrated_sensor`` convention: the sensor's pose in the ego frame.
Camera frames are OpenCV-style (x right, y down, z forward); the ego frame is
x forward, y left, z up. A ``Rig`` is immutable; a recalibrated vehicle is a new
``Rig`` (the network takes the matrices as run-time inputs).
"""
from __future__ import annotations

import math
import re
import reprlib
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from calibration.transforms import intrinsics_to_4x4, invert, nearest_rotation

DOPPLER_KINDS = ("cartesian", "radial")
DISTORTION_MODELS = {"opencv": (4, 5, 8), "fisheye": (4,)}  # allowed coefficient counts
ORTHONORMAL_TOL = 1e-3
QUATERNION_NORM_TOL = 1e-3
MIN_STEREO_BASELINE_M = 0.01
# Sensor and rig names become folder and file names (perception-synth writes samples/<CHANNEL>/...): a safe
# character set, so that no name can climb out of a dataset root or hide a path separator.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
MAX_MOUNT_OFFSET_M = 100.0  # a sensor further from the ego origin is a unit error (mm, or a global pose)
MAX_IMAGE_SIDE_PX = 100_000


class CalibrationError(ValueError):
    """A calibration value is unusable. The message names sensor, field and value and says what to do."""

    def __init__(self, sensor: str, field_name: str, value: Any, problem: str, hint: str = "", source: str = ""):
        self.sensor = sensor
        self.field = field_name
        self.value = value
        self.problem = problem
        self.hint = hint
        self.source = source
        where = f"{source}: " if source else ""
        msg = f"{where}{sensor}: field '{field_name}' {problem} (value: {_short(value)})"
        if hint:
            msg += f"; {hint}"
        super().__init__(msg)


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 3, 8, 8, 120, 120


def _short(value: Any) -> str:
    """A bounded repr: depth and length are capped, so a hostile value (a YAML alias bomb: a list that shares its
    items 2^30 times over) prints in microseconds."""
    if isinstance(value, np.ndarray):
        value = np.round(value, 6).tolist() if value.size <= 64 else f"array of shape {list(value.shape)}"
    text = _REPR.repr(value)
    return text if len(text) <= 160 else text[:157] + "..."


def check_name(sensor: Any, field_name: str = "name") -> str:
    """A sensor or rig name: a string of letters, digits and '_', '.', '+', '-' (not first), at most 64
    characters. Names become file and folder names; anything else could climb out of a dataset root."""
    if not isinstance(sensor, str):
        raise CalibrationError(_short(sensor), field_name, sensor, "must be a string",
                               "use letters, digits and _ . + - (e.g. CAM_FRONT)")
    if not NAME_PATTERN.fullmatch(sensor):
        raise CalibrationError(_short(sensor), field_name, sensor,
                               "is not a safe name (letters, digits and _ . + -, starting with a letter or digit, "
                               "at most 64 characters)", "rename it, e.g. CAM_FRONT_LEFT")
    return sensor


def _as_array(sensor: str, field_name: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise CalibrationError(sensor, field_name, value, f"must be numbers of shape {list(shape)}") from None
    if arr.shape != shape:
        raise CalibrationError(sensor, field_name, value, f"must have shape {list(shape)}, got {list(arr.shape)}")
    if not np.all(np.isfinite(arr)):
        raise CalibrationError(sensor, field_name, value, "contains NaN or inf", "every entry must be finite")
    arr.setflags(write=False)
    return arr


def check_pose(sensor: str, field_name: str, pose: Any) -> np.ndarray:
    """Validate a (4, 4) rigid pose (finite, last row, rotation orthonormal within 1e-3, det +1) and return it
    with the rotation snapped to the nearest exact rotation."""
    pose = _as_array(sensor, field_name, pose, (4, 4))
    if not np.allclose(pose[3], [0.0, 0.0, 0.0, 1.0], atol=1e-9):
        raise CalibrationError(sensor, field_name, pose[3], "last row must be [0, 0, 0, 1]")
    rot = pose[:3, :3]
    ortho_err = float(np.abs(rot.T @ rot - np.eye(3)).max())
    det = float(np.linalg.det(rot))
    if ortho_err > ORTHONORMAL_TOL or abs(det - 1.0) > ORTHONORMAL_TOL:
        raise CalibrationError(
            sensor, f"{field_name} rotation", rot,
            f"is not orthonormal (max |R^T R - I| = {ortho_err:.3g}, det = {det:.4f})",
            "give a proper rotation (det +1) or a unit quaternion [w, x, y, z]",
        )
    offset = float(np.linalg.norm(pose[:3, 3]))
    if offset > MAX_MOUNT_OFFSET_M:
        raise CalibrationError(sensor, f"{field_name} translation", pose[:3, 3],
                               f"puts the sensor {offset:.4g} m from the ego origin (more than {MAX_MOUNT_OFFSET_M:g} m)",
                               "translations are in metres in the ego frame; check the unit (mm?) and the frame")
    # Files store rotations to ~7 digits: snap to the nearest rotation so that inverses stay exact.
    out = np.array(pose)
    out[:3, :3] = nearest_rotation(rot)
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class Distortion:
    """Lens distortion. model 'opencv': [k1, k2, p1, p2(, k3(, k4, k5, k6))]; 'fisheye': [k1, k2, k3, k4]."""

    model: str
    coeffs: tuple[float, ...]

    def validate(self, sensor: str) -> None:
        if self.model not in DISTORTION_MODELS:
            raise CalibrationError(sensor, "distortion.model", self.model,
                                   f"is unknown; expected one of {sorted(DISTORTION_MODELS)}")
        if len(self.coeffs) not in DISTORTION_MODELS[self.model]:
            raise CalibrationError(sensor, "distortion.coeffs", list(self.coeffs),
                                   f"must have {' or '.join(map(str, DISTORTION_MODELS[self.model]))} "
                                   f"coefficients for model '{self.model}'")
        if not all(math.isfinite(c) for c in self.coeffs):
            raise CalibrationError(sensor, "distortion.coeffs", list(self.coeffs), "contains NaN or inf")


@dataclass(frozen=True, eq=False)
class Camera:
    """A pinhole camera (optionally distorted) mounted on the ego.

    intrinsics: (3, 3) K in pixels for an image of ``width`` x ``height``.
    ego_from_camera: (4, 4), camera pose in the ego frame (OpenCV camera axes).
    """

    name: str
    width: int
    height: int
    intrinsics: np.ndarray
    ego_from_camera: np.ndarray
    distortion: Distortion | None = None

    def __post_init__(self) -> None:
        n = check_name(self.name)
        for key in ("width", "height"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 < v <= MAX_IMAGE_SIDE_PX:
                raise CalibrationError(n, key, v, f"must be a positive integer number of pixels "
                                                  f"(at most {MAX_IMAGE_SIDE_PX})")
        k = _as_array(n, "intrinsics", self.intrinsics, (3, 3))
        object.__setattr__(self, "intrinsics", k)
        if k[0, 0] <= 0 or k[1, 1] <= 0:
            raise CalibrationError(n, "intrinsics", k, f"has a non-positive focal length (fx={k[0, 0]:g}, fy={k[1, 1]:g})",
                                   "focal lengths are in pixels and must be > 0")
        if not np.allclose(k[2], [0.0, 0.0, 1.0]) or abs(k[1, 0]) > 0:
            raise CalibrationError(n, "intrinsics", k, "must be upper-triangular with last row [0, 0, 1]")
        cx, cy = k[0, 2], k[1, 2]
        if not (0.0 <= cx <= self.width and 0.0 <= cy <= self.height):
            raise CalibrationError(n, "intrinsics", [float(cx), float(cy)],
                                   f"principal point is outside the {self.width}x{self.height} image",
                                   "check that width/height match the image the intrinsics belong to")
        object.__setattr__(self, "ego_from_camera", check_pose(n, "ego_from_camera", self.ego_from_camera))
        if self.distortion is not None:
            self.distortion.validate(n)

    @property
    def camera_from_ego(self) -> np.ndarray:
        return invert(self.ego_from_camera)

    @property
    def img_from_camera(self) -> np.ndarray:
        """(4, 4): ``[x, y, z, 1]`` camera frame -> ``[u*d, v*d, d, 1]``."""
        return intrinsics_to_4x4(self.intrinsics)

    @property
    def img_from_ego(self) -> np.ndarray:
        """(4, 4) static projection (no ego motion): ``img_from_camera @ camera_from_ego``."""
        return self.img_from_camera @ self.camera_from_ego

    @property
    def position(self) -> np.ndarray:
        """(3,) optical centre in the ego frame, metres."""
        return np.array(self.ego_from_camera[:3, 3])

    def scaled(self, scale: float) -> "Camera":
        """The same camera for an image resized by ``scale`` (pixel-centre convention: u' = s*(u+0.5)-0.5)."""
        k = np.array(self.intrinsics)
        k[:2, :2] *= scale
        k[:2, 2] = scale * (k[:2, 2] + 0.5) - 0.5
        return Camera(self.name, int(round(self.width * scale)), int(round(self.height * scale)), k,
                      self.ego_from_camera, self.distortion)


@dataclass(frozen=True, eq=False)
class Radar:
    """A radar unit. doppler 'cartesian': nuScenes-style (vx, vy, vx_comp, vy_comp) in the radar frame;
    'radial': range rate only (e.g. View-of-Delft v_r, v_r_compensated)."""

    name: str
    ego_from_radar: np.ndarray
    doppler: str = "cartesian"

    def __post_init__(self) -> None:
        check_name(self.name)
        object.__setattr__(self, "ego_from_radar", check_pose(self.name, "ego_from_radar", self.ego_from_radar))
        if self.doppler not in DOPPLER_KINDS:
            raise CalibrationError(self.name, "doppler", self.doppler, "is not a known Doppler kind",
                                   f"use one of {list(DOPPLER_KINDS)}")


@dataclass(frozen=True, eq=False)
class Lidar:
    """A lidar mount. Optional in a camera+radar rig: used to place lidar points (overlays, depth supervision)."""

    name: str
    ego_from_lidar: np.ndarray

    def __post_init__(self) -> None:
        check_name(self.name)
        object.__setattr__(self, "ego_from_lidar", check_pose(self.name, "ego_from_lidar", self.ego_from_lidar))


@dataclass(frozen=True)
class StereoPair:
    """Two cameras of the rig forming a stereo pair (left/right as seen from the rig)."""

    left: str
    right: str


@dataclass(frozen=True, eq=False)
class Rig:
    """All sensors of one vehicle. Sensor names are unique across cameras, radars and lidars."""

    name: str
    cameras: Mapping[str, Camera]
    radars: Mapping[str, Radar] = field(default_factory=dict)
    stereo_pairs: tuple[StereoPair, ...] = ()
    lidars: Mapping[str, Lidar] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isprintable() or not 0 < len(self.name) <= 200:
            raise CalibrationError("rig", "name", self.name, "must be a printable string of 1 to 200 characters")
        object.__setattr__(self, "cameras", dict(self.cameras))
        object.__setattr__(self, "radars", dict(self.radars))
        object.__setattr__(self, "lidars", dict(self.lidars))
        object.__setattr__(self, "stereo_pairs", tuple(self.stereo_pairs))
        seen: dict[str, str] = {}
        for kind, group in (("camera", self.cameras), ("radar", self.radars), ("lidar", self.lidars)):
            for key, sensor in group.items():
                check_name(key)
                if key != sensor.name:
                    raise CalibrationError(key, "name", sensor.name, f"does not match its {kind} key '{key}'")
                if key in seen:
                    raise CalibrationError(key, "name", key, f"is used by a {seen[key]} and a {kind}",
                                           "sensor channel names must be unique")
                seen[key] = kind
        if not self.cameras and not self.radars:
            raise CalibrationError(self.name, "cameras", {}, "is empty and so is 'radars'",
                                   "a rig needs at least one camera or radar")
        used: set[str] = set()
        for i, pair in enumerate(self.stereo_pairs):
            label = f"stereo_pairs[{i}]"
            for side in ("left", "right"):
                cam = getattr(pair, side)
                if cam not in self.cameras:
                    raise CalibrationError(label, side, cam, "names a camera that is not in the rig",
                                           f"cameras are {sorted(self.cameras)}")
            if pair.left == pair.right:
                raise CalibrationError(label, "right", pair.right, "is the same camera as 'left'")
            baseline = self.baseline(pair)
            if baseline < MIN_STEREO_BASELINE_M:
                raise CalibrationError(label, "baseline", round(baseline, 6),
                                       f"is below {MIN_STEREO_BASELINE_M} m (the two cameras are at the same place)",
                                       "check the translations of both cameras")
            for cam in (pair.left, pair.right):
                if cam in used:
                    raise CalibrationError(label, "left/right", cam, "is already in another stereo pair")
                used.add(cam)

    # -- queries -------------------------------------------------------------
    @property
    def camera_names(self) -> list[str]:
        return list(self.cameras)

    @property
    def radar_names(self) -> list[str]:
        return list(self.radars)

    def sensor_pose(self, name: str) -> np.ndarray:
        """(4, 4) ``ego_from_<name>`` for any sensor of the rig."""
        if name in self.cameras:
            return self.cameras[name].ego_from_camera
        if name in self.radars:
            return self.radars[name].ego_from_radar
        if name in self.lidars:
            return self.lidars[name].ego_from_lidar
        raise KeyError(f"rig '{self.name}' has no sensor '{name}'; sensors: "
                       f"{sorted([*self.cameras, *self.radars, *self.lidars])}")

    def baseline(self, pair: StereoPair) -> float:
        """Distance in metres between the optical centres of a pair."""
        return float(np.linalg.norm(self.cameras[pair.right].position - self.cameras[pair.left].position))

    def stereo_indices(self) -> np.ndarray:
        """(S, 2) int64 indices of (left, right) into ``camera_names``."""
        names = self.camera_names
        return np.array([[names.index(p.left), names.index(p.right)] for p in self.stereo_pairs],
                        dtype=np.int64).reshape(-1, 2)

    def summary(self) -> str:
        return (f"rig '{self.name}': {len(self.cameras)} cameras, {len(self.radars)} radars, "
                f"{len(self.stereo_pairs)} stereo pairs"
                + "".join(f" ({p.left}/{p.right} baseline {self.baseline(p):.3f} m)" for p in self.stereo_pairs)
                + (f", {len(self.lidars)} lidars" if self.lidars else ""))
