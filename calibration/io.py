"""Rig loaders and writers: the rig YAML, nuScenes tables, KITTI-style calib files, mmdet3d v1.1 info files.

The rig YAML (user-facing, nuScenes conventions; ``translation``/``rotation`` are
``ego_from_sensor``, quaternion ``[w, x, y, z]``)::

    name: example_rig
    cameras:
      CAM_FRONT_L: {width: 1600, height: 900, intrinsics: [[...], [...], [...]],
                    distortion: null, translation: [x, y, z], rotation: [w, x, y, z]}
    radars:
      RADAR_FRONT: {translation: [...], rotation: [...], doppler: cartesian}
    stereo_pairs:
      - {left: CAM_FRONT_L, right: CAM_FRONT_R}
    lidars:            # optional
      LIDAR_TOP: {translation: [...], rotation: [...]}
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import yaml

from calibration.rig import (
    QUATERNION_NORM_TOL,
    CalibrationError,
    Camera,
    Distortion,
    Lidar,
    Radar,
    Rig,
    StereoPair,
    check_name,
    check_pose,
)
from calibration.transforms import invert, make_transform, matrix_to_quaternion

RIG_KEYS = {"name", "cameras", "radars", "stereo_pairs", "lidars"}
CAMERA_KEYS = {"width", "height", "intrinsics", "distortion", "translation", "rotation"}
RADAR_KEYS = {"translation", "rotation", "doppler"}
LIDAR_KEYS = {"translation", "rotation"}
PAIR_KEYS = {"left", "right"}


# ---------------------------------------------------------------------------
# YAML with duplicate-key detection
# ---------------------------------------------------------------------------


MAX_YAML_NODES = 100_000  # a rig of 100 sensors is ~5,000 nodes; more, once aliases are expanded, is an attack


def _check_unique_keys(root: yaml.Node) -> None:
    """Refuse duplicate keys in any mapping of a composed YAML tree (plain YAML silently keeps the last one,
    which would hide a duplicated camera), and a document whose aliases expand to more than MAX_YAML_NODES nodes
    (a "billion laughs" bomb, which every consumer of the loaded data would then walk). Each node is visited once:
    an aliased node is the same object wherever it is referenced, so its expanded size is memoised."""
    expanded: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:  # iterative post-order: no recursion limit on deep documents
        node, done = stack.pop()
        if id(node) in expanded:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        if not done:
            if isinstance(node, yaml.MappingNode):
                seen: set[str] = set()
                for key_node, _ in node.value:
                    key = key_node.value
                    if isinstance(key, str) and key in seen:
                        raise CalibrationError(key[:64], "name", key[:64],
                                               f"appears twice in one mapping (line {key_node.start_mark.line + 1})",
                                               "sensor channel names and fields must be unique")
                    if isinstance(key, str):
                        seen.add(key)
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in expanded)
            continue
        size = 1 + sum(expanded[id(c)] for c in children)
        if size > MAX_YAML_NODES:
            raise CalibrationError("rig", "(yaml)", f"line {node.start_mark.line + 1}",
                                   f"expands to more than {MAX_YAML_NODES} values (YAML aliases referencing each "
                                   "other)", "write the rig without nested aliases")
        expanded[id(node)] = size


def safe_load_unique(text: str) -> Any:
    """``yaml.safe_load`` plus an error on duplicate keys and on alias bombs (checked on the composed node tree,
    which builds no objects, then constructed from that same tree)."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        _check_unique_keys(root)
        return loader.construct_document(root)
    finally:
        loader.dispose()


# ---------------------------------------------------------------------------
# Rig <-> dict / YAML
# ---------------------------------------------------------------------------


def _require(sensor: str, d: Any, keys: Iterable[str], allowed: set[str], source: str) -> None:
    if not isinstance(d, dict):
        raise CalibrationError(sensor, "(entry)", d, "must be a mapping", source=source)
    missing = [k for k in keys if k not in d]
    if missing:
        raise CalibrationError(sensor, missing[0], None, "is required but missing",
                               f"required fields: {sorted(keys)}", source=source)
    unknown = sorted(set(d) - allowed, key=str)
    if unknown:
        raise CalibrationError(sensor, unknown[0], d[unknown[0]], "is not a known field",
                               f"known fields: {sorted(allowed)}", source=source)


def _pose_from_fields(sensor: str, d: dict, source: str) -> np.ndarray:
    t = d["translation"]
    q = d["rotation"]
    try:
        q_arr = np.array(q, dtype=np.float64)
        t_arr = np.array(t, dtype=np.float64)
    except (TypeError, ValueError):
        bad, val = ("rotation", q) if not _is_numeric_list(q) else ("translation", t)
        raise CalibrationError(sensor, bad, val, "must be a list of numbers", source=source) from None
    if q_arr.shape != (4,):
        raise CalibrationError(sensor, "rotation", q, "must be a quaternion [w, x, y, z] (4 numbers)", source=source)
    if t_arr.shape != (3,):
        raise CalibrationError(sensor, "translation", t, "must be [x, y, z] in metres (3 numbers)", source=source)
    for name, arr, val in (("rotation", q_arr, q), ("translation", t_arr, t)):
        if not np.all(np.isfinite(arr)):
            raise CalibrationError(sensor, name, val, "contains NaN or inf", source=source)
    norm = float(np.linalg.norm(q_arr))
    if abs(norm - 1.0) > QUATERNION_NORM_TOL:
        raise CalibrationError(sensor, "rotation", q, f"is not a unit quaternion (norm={norm:.4f})",
                               "rotation is [w, x, y, z] with norm 1 (tolerance 1e-3)", source=source)
    return make_transform(q_arr / norm, t_arr)


def _is_numeric_list(v: Any) -> bool:
    try:
        np.array(v, dtype=np.float64)
        return True
    except (TypeError, ValueError):
        return False


def rig_from_dict(data: Any, source: str = "") -> Rig:
    """Build and validate a Rig from the YAML structure. ``source`` (a path) prefixes error messages."""
    if not isinstance(data, dict):
        raise CalibrationError("rig", "(document)", type(data).__name__, "must be a mapping with 'name' and 'cameras'",
                               source=source)
    _require("rig", data, ["name"], RIG_KEYS, source)
    name = data["name"]
    for key, kind in (("cameras", dict), ("radars", dict), ("lidars", dict), ("stereo_pairs", list)):
        if data.get(key) is not None and not isinstance(data[key], kind):
            raise CalibrationError("rig", key, data[key], f"must be a {'mapping of sensors' if kind is dict else 'list'}",
                                   source=source)
    try:
        cams: dict[str, Camera] = {}
        for cname, c in (data.get("cameras") or {}).items():
            check_name(cname)
            _require(cname, c, ["width", "height", "intrinsics", "translation", "rotation"], CAMERA_KEYS, source)
            dist = c.get("distortion")
            if dist is not None:
                if not isinstance(dist, dict) or set(dist) != {"model", "coeffs"}:
                    raise CalibrationError(cname, "distortion", dist, "must be null or {model: opencv, coeffs: [...]}")
                try:
                    dist = Distortion(str(dist["model"]), tuple(float(x) for x in dist["coeffs"]))
                except (TypeError, ValueError):
                    raise CalibrationError(cname, "distortion.coeffs", dist["coeffs"], "must be a list of numbers") from None
            cams[str(cname)] = Camera(str(cname), c["width"], c["height"], c["intrinsics"],
                                      _pose_from_fields(cname, c, source), dist)
        radars: dict[str, Radar] = {}
        for rname, r in (data.get("radars") or {}).items():
            check_name(rname)
            _require(rname, r, ["translation", "rotation"], RADAR_KEYS, source)
            radars[str(rname)] = Radar(str(rname), _pose_from_fields(rname, r, source), r.get("doppler", "cartesian"))
        lidars: dict[str, Lidar] = {}
        for lname, l in (data.get("lidars") or {}).items():
            check_name(lname)
            _require(lname, l, ["translation", "rotation"], LIDAR_KEYS, source)
            lidars[str(lname)] = Lidar(str(lname), _pose_from_fields(lname, l, source))
        pairs = []
        for i, p in enumerate(data.get("stereo_pairs") or []):
            _require(f"stereo_pairs[{i}]", p, ["left", "right"], PAIR_KEYS, source)
            pairs.append(StereoPair(str(p["left"]), str(p["right"])))
        return Rig(name, cams, radars, tuple(pairs), lidars)
    except CalibrationError as err:
        if source and not err.source:
            raise CalibrationError(err.sensor, err.field, err.value, err.problem, err.hint, source) from None
        raise


def _pose_fields(pose: np.ndarray) -> dict:
    return {"translation": [round(float(x), 9) for x in pose[:3, 3]],
            "rotation": [round(float(x), 12) for x in matrix_to_quaternion(pose[:3, :3])]}


def rig_to_dict(rig: Rig) -> dict:
    """The YAML structure of a rig (inverse of ``rig_from_dict``)."""
    out: dict[str, Any] = {"name": rig.name, "cameras": {}, "radars": {}, "stereo_pairs": []}
    for name, cam in rig.cameras.items():
        out["cameras"][name] = {
            "width": int(cam.width),
            "height": int(cam.height),
            "intrinsics": [[round(float(x), 9) for x in row] for row in cam.intrinsics],
            "distortion": None if cam.distortion is None else
            {"model": cam.distortion.model, "coeffs": [float(c) for c in cam.distortion.coeffs]},
            **_pose_fields(cam.ego_from_camera),
        }
    for name, radar in rig.radars.items():
        out["radars"][name] = {**_pose_fields(radar.ego_from_radar), "doppler": radar.doppler}
    out["stereo_pairs"] = [{"left": p.left, "right": p.right} for p in rig.stereo_pairs]
    if rig.lidars:
        out["lidars"] = {name: _pose_fields(l.ego_from_lidar) for name, l in rig.lidars.items()}
    return out


def load_rig(path: str | Path) -> Rig:
    """Read and validate a rig YAML file. Raises CalibrationError (bad content) or FileNotFoundError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"rig file {path} does not exist") from None
    except IsADirectoryError:
        raise CalibrationError("rig", "(file)", str(path), "is a folder", "give the rig YAML file",
                               source=str(path)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CalibrationError("rig", "(file)", str(path), f"is not a UTF-8 text file (byte {err.start})",
                               "give the rig YAML file (perception-calib convert writes one)", source=str(path)) from None
    try:
        data = safe_load_unique(text)
    except yaml.YAMLError as err:
        raise CalibrationError("rig", "(yaml)", str(path), f"is not valid YAML: {err}".replace("\n", " "),
                               source=str(path)) from None
    except RecursionError:
        raise CalibrationError("rig", "(yaml)", str(path), "nests lists or mappings too deeply to be a rig",
                               "a rig is a few levels deep: name, cameras/radars/lidars, their fields",
                               source=str(path)) from None
    except CalibrationError as err:
        raise CalibrationError(err.sensor, err.field, err.value, err.problem, err.hint, str(path)) from None
    return rig_from_dict(data, source=str(path))


def dump_rig(rig: Rig) -> str:
    return yaml.safe_dump(rig_to_dict(rig), sort_keys=False, default_flow_style=None, width=120)


def save_rig(rig: Rig, path: str | Path) -> None:
    """Write atomically (a temporary file in the same folder, then rename): calibration/ imports nothing of
    perception, hence not perception.outputs."""
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    mask = os.umask(0o022)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)  # not mkstemp's 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(dump_rig(rig))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ---------------------------------------------------------------------------
# nuScenes calibrated_sensor / sensor rows
# ---------------------------------------------------------------------------


def rig_from_nuscenes(nusc: Any, sample_token: str, name: str | None = None,
                      image_size: tuple[int, int] | None = None) -> Rig:
    """Rig of one nuScenes sample from its ``calibrated_sensor``/``sensor`` rows (via nuscenes-devkit).

    Cameras and radars come from the sample's key-frame sample_data; the lidar too when present.
    Image size comes from the sample_data row (``width``/``height``) or ``image_size`` (W, H).
    """
    sample = nusc.get("sample", sample_token)
    cams: dict[str, Camera] = {}
    radars: dict[str, Radar] = {}
    lidars: dict[str, Lidar] = {}
    for channel, sd_token in sample["data"].items():
        sd = nusc.get("sample_data", sd_token)
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        sensor = nusc.get("sensor", cs["sensor_token"])
        src = f"calibrated_sensor {cs['token']}"
        try:
            pose = _pose_from_fields(channel, {"translation": cs["translation"], "rotation": cs["rotation"]}, src)
            modality = sensor["modality"]
            if modality == "camera":
                w, h = int(sd.get("width") or 0), int(sd.get("height") or 0)
                if (w <= 0 or h <= 0) and image_size is not None:
                    w, h = image_size
                if w <= 0 or h <= 0:
                    raise CalibrationError(channel, "width/height", [w, h], "is not in sample_data",
                                           "pass --image-size WxH", src)
                cams[channel] = Camera(channel, w, h, cs["camera_intrinsic"], pose)
            elif modality == "radar":
                radars[channel] = Radar(channel, pose, "cartesian")
            elif modality == "lidar":
                lidars[channel] = Lidar(channel, pose)
        except CalibrationError as err:
            if err.source:
                raise
            raise CalibrationError(err.sensor, err.field, err.value, err.problem, err.hint, src) from None
    scene = nusc.get("scene", sample["scene_token"])
    return Rig(name or f"nuscenes_{scene['name']}", _sorted_cameras(cams), radars, (), lidars)


_NUSC_CAMERA_ORDER = ["CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"]


def _sorted_cameras(cams: dict[str, Camera]) -> dict[str, Camera]:
    """nuScenes cameras in the customary order (front-left, front, front-right, back-left, back, back-right)."""
    order = {n: i for i, n in enumerate(_NUSC_CAMERA_ORDER)}
    return dict(sorted(cams.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


# ---------------------------------------------------------------------------
# KITTI-style calib (View-of-Delft)
# ---------------------------------------------------------------------------


def read_kitti_calib(path: str | Path) -> dict[str, np.ndarray]:
    """Parse ``KEY: v1 v2 ...`` lines; empty values (e.g. ``Tr_imu_to_velo:``) are skipped."""
    out: dict[str, np.ndarray] = {}
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        if ":" not in line:
            raise CalibrationError("calib", f"line {lineno}", line, "is not 'KEY: values'", source=str(path))
        key, _, values = line.partition(":")
        if not values.strip():
            continue
        try:
            out[key.strip()] = np.array([float(v) for v in values.split()], dtype=np.float64)
        except ValueError:
            raise CalibrationError("calib", key.strip(), values.strip(), "has a non-numeric value",
                                   source=str(path)) from None
    return out


def rig_from_kitti(path: str | Path, image_size: tuple[int, int], camera: str = "CAM_FRONT",
                   radar: str = "RADAR_FRONT", name: str | None = None) -> Rig:
    """Rig from a KITTI-style calib file as View-of-Delft ships it.

    ``P2`` (3x4) = K @ [I | t_rect] (its 4th column is an offset of the rectified camera),
    ``R0_rect`` rectifying rotation, ``Tr_velo_to_cam`` (3x4) = camera <- sensor, where for
    VoD's radar set the "velo" sensor is the radar. The ego frame is the radar frame, so the
    radar sits at the identity and its Doppler is radial.
    """
    calib = read_kitti_calib(path)
    src = str(path)
    for key, size in (("P2", 12), ("Tr_velo_to_cam", 12)):
        if key not in calib:
            raise CalibrationError(camera, key, None, "is missing from the calib file", source=src)
        if calib[key].size != size:
            raise CalibrationError(camera, key, calib[key].tolist(), f"must have {size} numbers", source=src)
    p2 = calib["P2"].reshape(3, 4)
    k = p2[:, :3]
    if abs(k[1, 0]) > 1e-9 or abs(k[2, 0]) > 1e-9 or abs(k[2, 1]) > 1e-9 or k[0, 0] <= 0 or k[1, 1] <= 0:
        raise CalibrationError(camera, "P2", p2.tolist(), "left 3x3 block is not an upper-triangular K", source=src)
    k = k / k[2, 2]
    t_rect = np.linalg.solve(p2[:, :3], p2[:, 3])  # offset of the projection centre in rectified axes
    r0 = np.eye(4)
    if "R0_rect" in calib:
        r0[:3, :3] = calib["R0_rect"].reshape(3, 3)
    cam_from_radar = np.eye(4)
    cam_from_radar[:3, :] = calib["Tr_velo_to_cam"].reshape(3, 4)
    shift = np.eye(4)
    shift[:3, 3] = t_rect
    # image = K [I|t] R0 Tr x  ->  camera frame used by this rig: shift @ R0 @ Tr
    cam_from_ego = shift @ r0 @ cam_from_radar
    try:
        ego_from_cam = invert(check_pose(camera, "Tr_velo_to_cam", cam_from_ego))
        w, h = image_size
        cam = Camera(camera, int(w), int(h), k, ego_from_cam)
        rad = Radar(radar, np.eye(4), "radial")
    except CalibrationError as err:
        raise CalibrationError(err.sensor, err.field, err.value, err.problem, err.hint, src) from None
    return Rig(name or f"kitti_{Path(path).stem}", {camera: cam}, {radar: rad})


# ---------------------------------------------------------------------------
# mmdet3d v1.1 info files (trusted foreign format: pickle)
# ---------------------------------------------------------------------------


def read_mmdet3d_info(path: str | Path) -> dict:
    """Load an mmdet3d v1.1 info file.

    This is a pickle, which can execute code when loaded: read only info files
    you made or got from a trusted source. The project's own formats never use pickle.
    """
    with open(path, "rb") as f:
        data = pickle.load(f)  # noqa: S301 - foreign format, documented as trusted-source only
    if not isinstance(data, dict) or "data_list" not in data:
        raise CalibrationError("info", "data_list", type(data).__name__, "is missing: not an mmdet3d v1.1 info file",
                               source=str(path))
    return data


def rig_from_mmdet3d_info(path: str | Path, index: int = 0, image_size: tuple[int, int] | None = None,
                          image_root: str | Path | None = None, name: str | None = None) -> Rig:
    """Rig of one entry of an mmdet3d v1.1 info file: ``cam2img``, ``cam2ego`` per camera and ``lidar2ego``.

    Image sizes (not in the file) come from ``image_size`` (W, H) or from the image files found
    under ``image_root`` (default: the info file's folder) by their ``img_path``.
    """
    info = read_mmdet3d_info(path)
    src = str(path)
    entries = info["data_list"]
    if not 0 <= index < len(entries):
        raise CalibrationError("info", "index", index, f"is out of range (the file has {len(entries)} entries)",
                               source=src)
    entry = entries[index]
    root = Path(image_root) if image_root is not None else Path(path).parent
    cams: dict[str, Camera] = {}
    for channel, img in entry.get("images", {}).items():
        if "cam2img" not in img or "cam2ego" not in img:
            raise CalibrationError(channel, "cam2img/cam2ego", sorted(img), "are missing", source=src)
        k = np.array(img["cam2img"], dtype=np.float64)[:3, :3]
        if image_size is not None:
            w, h = image_size
        else:
            w, h = _image_size_of(root / Path(img.get("img_path", "")).name, channel, src)
        try:
            cams[channel] = Camera(channel, int(w), int(h), k,
                                   check_pose(channel, "cam2ego", np.array(img["cam2ego"], dtype=np.float64)))
        except CalibrationError as err:
            raise CalibrationError(err.sensor, err.field, err.value, err.problem, err.hint, src) from None
    lidars = {}
    lidar = entry.get("lidar_points", {})
    if "lidar2ego" in lidar:
        lidars["LIDAR_TOP"] = Lidar("LIDAR_TOP", check_pose("LIDAR_TOP", "lidar2ego",
                                                            np.array(lidar["lidar2ego"], dtype=np.float64)))
    token = entry.get("token", index)
    return Rig(name or f"mmdet3d_{token}", _sorted_cameras(cams), {}, (), lidars)


def _image_size_of(path: Path, channel: str, source: str) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except (FileNotFoundError, OSError):
        raise CalibrationError(channel, "image size", str(path),
                               "is not in the info file and the image could not be opened",
                               "pass --image-size WxH", source) from None
