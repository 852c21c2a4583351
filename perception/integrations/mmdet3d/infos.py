"""mmdet3d v1.1 nuScenes info files <-> this project's Frames. No OpenMMLab import (runs in the core venv too).

An info file (``mmdet3d/tools/create_data.py nuscenes`` + ``update_infos_to_v2``, or ``write_infos`` below) is a
pickle ``{"metainfo": {"categories": {name: index}, ...}, "data_list": [entry, ...]}``; one entry per key frame:

- ``token``, ``timestamp`` (float **seconds**, the LIDAR_TOP key frame: this project's ``t0``), ``ego2global``
  (4x4 at that time);
- ``lidar_points``: ``lidar2ego`` (4x4), ``lidar_path``;
- ``images[CAM]``: ``img_path`` (file name; the folder is the dataset's ``data_prefix[CAM]``), ``cam2img`` (K),
  ``cam2ego``, ``timestamp`` (capture time, s) and ``lidar2cam``, which mmdet3d's converter computes through the
  camera's own ego pose, so it **includes the ego motion** between t0 and the capture;
- ``instances``: ``bbox_3d = [x, y, z, l, w, h, yaw]`` in the **lidar** frame with z the box's gravity centre,
  ``bbox_label_3d`` (index into ``metainfo.categories``; -1 = not a detection class), ``velocity`` (lidar axes,
  may be NaN), ``num_lidar_pts``, ``num_radar_pts``, ``bbox_3d_isvalid``.

The Frame (perception/data/frame.py) is in ego@t0: ``img_from_ego = K @ lidar2cam @ inv(lidar2ego)`` (with
``data.sync.enabled``; the same time alignment ``calibration.sync.camera_img_from_ego`` makes from the pose
stream), then the shared assembler ``perception.data.assemble.assemble_frame``; boxes carried lidar -> ego by
``lidar2ego``.

What the format does not carry, and the Frame therefore lacks: radar (nuScenes v1.1 infos have none: the radar
inputs are empty and masked, ``radar_valid`` all False), future trajectories (``gt_future_valid`` all False, so
the trajectory loss is zero), attributes and instance tokens (empty strings), lens distortion (pinhole assumed),
stereo pairs (none).
"""
from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from calibration.io import read_mmdet3d_info
from calibration.rig import CalibrationError, Camera, check_pose
from calibration.transforms import intrinsics_to_4x4, invert, make_transform, quaternion_to_matrix
from perception.config import Config
from perception.data.assemble import CameraShot, assemble_frame, still_poses
from perception.data.frame import Frame
from perception.data.io import SensorFileError, read_image
from perception.data.nuscenes import CAMERA_ORDER, DatasetError, split_scene_names
from perception.integrations.mmdet3d.boxes import transform_boxes, wrap_angle

# metainfo.categories of mmdet3d's nuScenes infos (its NuScenesDataset.METAINFO order, not this project's)
MMDET3D_NUSCENES_CLASSES = ("car", "truck", "trailer", "bus", "construction_vehicle", "bicycle", "motorcycle",
                            "pedestrian", "traffic_cone", "barrier")
# mmdet3d's nuScenes configs: data_root = the nuScenes root, each camera's images under samples/<CAM>
NUSCENES_DATA_PREFIX = {ch: f"samples/{ch}" for ch in CAMERA_ORDER}


class InfoError(ValueError):
    """An info file or entry cannot be turned into a Frame (names the file, the entry and the key)."""


def info_boxes_to_frame(bbox_3d: np.ndarray, velocity: np.ndarray, ego_from_lidar: np.ndarray) -> np.ndarray:
    """bbox_3d: (G, 7) info rows ``[x, y, z, l, w, h, yaw]`` lidar frame, z = gravity centre; velocity: (G, 2)
    m/s lidar axes (NaN = unknown -> 0, as mmdet3d's NuScenesDataset does). Returns (G, 9) float64 Frame boxes
    ``[x, y, z, w, l, h, yaw, vx, vy]`` in ego (``ego_from_lidar`` = the entry's ``lidar2ego``)."""
    bbox_3d = np.asarray(bbox_3d, np.float64).reshape(-1, 7)
    vel = np.nan_to_num(np.asarray(velocity, np.float64).reshape(-1, 2), nan=0.0)
    lidar = np.concatenate([bbox_3d[:, :3], bbox_3d[:, [4, 3, 5]], bbox_3d[:, 6:7], vel], axis=1)
    ego = transform_boxes(ego_from_lidar, lidar)
    ego[:, 6] = wrap_angle(ego[:, 6])
    return ego


def frame_boxes_to_info(boxes_ego: np.ndarray, lidar_from_ego: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of ``info_boxes_to_frame``: (G, 9) Frame boxes in ego -> ((G, 7) info ``bbox_3d`` rows in lidar,
    (G, 2) velocity in lidar axes)."""
    lidar = transform_boxes(lidar_from_ego, np.asarray(boxes_ego, np.float64).reshape(-1, 9))
    lidar[:, 6] = wrap_angle(lidar[:, 6])
    return np.concatenate([lidar[:, :3], lidar[:, [4, 3, 5]], lidar[:, 6:7]], axis=1), lidar[:, 7:9]


def _matrix(entry_source: str, key: str, value: Any, shape: tuple[int, int]) -> np.ndarray:
    m = np.asarray(value, np.float64)
    if m.shape != shape:
        raise InfoError(f"{entry_source}: '{key}' has shape {m.shape}, expected {shape}")
    return m


def _category_names(metainfo: Mapping[str, Any]) -> dict[int, str]:
    cats = metainfo.get("categories")
    if cats is None:  # older files without metainfo use mmdet3d's nuScenes order
        return dict(enumerate(MMDET3D_NUSCENES_CLASSES))
    if isinstance(cats, Mapping):
        return {int(i): str(n) for n, i in cats.items()}
    return dict(enumerate(str(n) for n in cats))


def _ordered_cameras(channels: list[str]) -> list[str]:
    order = {c: i for i, c in enumerate(CAMERA_ORDER)}
    return sorted(channels, key=lambda c: (order.get(c, len(order)), c))


def frame_from_info(entry: Mapping[str, Any], metainfo: Mapping[str, Any], cfg: Config, data_root: str | Path,
                    data_prefix: Mapping[str, str] | None = None, train: bool = False,
                    rng: np.random.Generator | None = None, source: str = "info") -> Frame:
    """One info entry as a Frame for ``cfg`` (image size, radar fields, classes, sync, and with ``train`` the
    augmentation and modality dropout of ``cfg.data``, drawn from ``rng``). Images are read from
    ``data_root / data_prefix[CAM] / img_path`` (``data_prefix`` default: ``NUSCENES_DATA_PREFIX``; a channel
    missing from it: ``data_root / img_path``). An unreadable image masks its camera (recorded in ``issues``)."""
    src = f"{source} entry {entry.get('token', '?')}"
    for key in ("token", "timestamp", "ego2global", "images", "lidar_points"):
        if key not in entry:
            raise InfoError(f"{src}: key '{key}' is missing; not an mmdet3d v1.1 nuScenes info entry "
                            "(convert older infos with mmdet3d's tools/dataset_converters/update_infos_to_v2.py)")
    if "lidar2ego" not in entry["lidar_points"]:
        raise InfoError(f"{src}: lidar_points.lidar2ego is missing: the boxes are in the lidar frame and cannot be "
                        "carried to ego without it")
    dcfg = cfg.data
    rng = rng if rng is not None else np.random.default_rng(0)
    prefix = NUSCENES_DATA_PREFIX if data_prefix is None else data_prefix
    t0 = round(float(entry["timestamp"]) * 1e6)
    global_from_ego = _matrix(src, "ego2global", entry["ego2global"], (4, 4))
    ego_from_lidar = check_pose("LIDAR_TOP", "lidar2ego", _matrix(src, "lidar2ego", entry["lidar_points"]["lidar2ego"],
                                                                  (4, 4)))
    issues: list[str] = []
    # -- cameras: read first, so that a missing image can borrow the rig's image size
    order = _ordered_cameras(list(entry["images"]))
    raws: dict[str, np.ndarray | None] = {}
    for ch in order:
        img = entry["images"][ch]
        path = Path(data_root) / prefix.get(ch, "") / img["img_path"]
        try:
            raws[ch] = read_image(path)
        except SensorFileError as err:
            issues.append(f"{err.path}: {err.problem}; camera {ch} masked")
            raws[ch] = None
    sizes = [r.shape[:2] for r in raws.values() if r is not None]
    shots = []
    for ch in order:
        img = entry["images"][ch]
        k = _matrix(src, f"images.{ch}.cam2img", img["cam2img"], (3, 3))
        # nuScenes rigs share one image size; (2 cx, 2 cy) only when no image of the entry could be read
        h0, w0 = raws[ch].shape[:2] if raws[ch] is not None else (sizes[0] if sizes else
                                                                   (round(2 * k[1, 2]), round(2 * k[0, 2])))
        try:
            cam = Camera(ch, int(w0), int(h0), k, _matrix(src, f"images.{ch}.cam2ego", img["cam2ego"], (4, 4)))
        except CalibrationError as err:
            raise CalibrationError(err.sensor, err.field, err.value, err.problem, err.hint, src) from None
        if dcfg.sync.enabled and "lidar2cam" in img:
            cam_from_lidar = check_pose(ch, "lidar2cam", _matrix(src, f"images.{ch}.lidar2cam", img["lidar2cam"],
                                                                 (4, 4)))
            m = intrinsics_to_4x4(k) @ cam_from_lidar @ invert(ego_from_lidar)
        else:
            if dcfg.sync.enabled:
                issues.append(f"{src}: images.{ch}.lidar2cam is missing: static projection, the ego motion to the "
                              "capture time is ignored")
            m = cam.img_from_ego
        shots.append(CameraShot(ch, cam, raws[ch], round(float(img.get("timestamp", entry["timestamp"])) * 1e6), m))
    # -- GT: detection classes of the config only, as NuScenesFrames keeps them
    names_by_index = _category_names(metainfo)
    classes = list(cfg.classes)
    keep = [inst for inst in entry.get("instances", [])
            if names_by_index.get(int(inst.get("bbox_label_3d", -1))) in classes]
    g = len(keep)
    bbox = np.array([inst["bbox_3d"] for inst in keep], np.float64).reshape(g, 7)
    vel = np.array([inst.get("velocity", [np.nan, np.nan]) for inst in keep], np.float64).reshape(g, 2)
    boxes = info_boxes_to_frame(bbox, vel, ego_from_lidar)
    names = [names_by_index[int(inst["bbox_label_3d"])] for inst in keep]
    steps = dcfg.future_steps
    targets = {"gt_boxes": boxes.astype(np.float32), "gt_labels": np.array([classes.index(n) for n in names], np.int64),
               "gt_names": np.array(names, "<U32"), "gt_attributes": np.full(g, "", "<U40"),
               "gt_instance_tokens": np.full(g, "", "<U40"), "gt_future": np.zeros((g, steps, 2), np.float32),
               "gt_future_valid": np.zeros((g, steps), bool)}
    # radar: not in the format (no sweeps: empty, masked); the projections are given, so one still pose suffices
    return assemble_frame(dcfg, t0, still_poses(global_from_ego), shots, (), token=str(entry["token"]),
                          targets=targets, issues=issues, train=train, rng=rng)


class InfoFrames:
    """Indexable Frames of one mmdet3d v1.1 info file (the adapter; ``NuScenesFrames``'s counterpart).

    ``data_root`` defaults to the info file's folder; ``data_prefix`` maps a camera channel to its image folder
    under ``data_root`` (mmdet3d's ``data_prefix``; default ``samples/<CAM>``). ``train=True`` applies the config's
    augmentation and dropout, drawn per (seed, epoch, index) as NuScenesFrames does.
    """

    def __init__(self, cfg: Config, ann_file: str | Path, data_root: str | Path | None = None,
                 data_prefix: Mapping[str, str] | None = None, train: bool = False, seed: int = 0):
        self.cfg = cfg
        self.ann_file = Path(ann_file)
        info = read_mmdet3d_info(self.ann_file)
        self.metainfo: dict = dict(info.get("metainfo", {}))
        self.entries: list[dict] = list(info["data_list"])
        self.data_root = Path(data_root) if data_root is not None else self.ann_file.parent
        self.data_prefix = dict(NUSCENES_DATA_PREFIX if data_prefix is None else data_prefix)
        self.train, self.seed, self.epoch = train, seed, 0

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def ego_from_lidar(self, index: int) -> np.ndarray:
        """(4, 4) ``lidar2ego`` of entry ``index`` (mmdet3d's nuScenes boxes and metrics live in the lidar frame)."""
        return np.asarray(self.entries[index]["lidar_points"]["lidar2ego"], np.float64)

    def load(self, index: int, rng: np.random.Generator | None = None) -> Frame:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {self.ann_file} ({len(self)} entries)")
        if rng is None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
        return frame_from_info(self.entries[index], self.metainfo, self.cfg, self.data_root, self.data_prefix,
                               self.train, rng, str(self.ann_file))

    def __getitem__(self, index: int) -> Frame:
        return self.load(index)


# ---------------------------------------------------------------------------
# The converter: any nuScenes-format root (the synthetic one included) -> a v1.1 info file
# ---------------------------------------------------------------------------


def write_infos(dataroot: str | Path, version: str, split: str, out: str | Path, nusc: Any = None) -> dict[str, str]:
    """Write the key frames of ``split`` (scenes in split order, samples by time) as an mmdet3d v1.1 nuScenes info
    file at ``out``, computed as mmdet3d's converter does (boxes and velocities in the LIDAR_TOP frame at its key
    frame pose, z the gravity centre, ``[l, w, h]``; ``lidar2cam`` through each camera's own ego pose; labels in
    mmdet3d's nuScenes category order, -1 for other categories). Returns the ``data_prefix`` (camera -> image
    folder under ``dataroot``) to read it back with."""
    from nuscenes.eval.detection.utils import category_to_detection_name

    if nusc is None:
        from nuscenes.nuscenes import NuScenes

        nusc = NuScenes(version=version, dataroot=str(dataroot), verbose=False)
    categories = {n: i for i, n in enumerate(MMDET3D_NUSCENES_CLASSES)}
    by_name = {s["name"]: s for s in nusc.scene}
    prefix: dict[str, str] = {}
    data_list = []
    for scene in split_scene_names(dataroot, version, split):
        if scene not in by_name:
            continue
        samples, tok = [], by_name[scene]["first_sample_token"]
        while tok:
            samples.append(nusc.get("sample", tok))
            tok = samples[-1]["next"]
        for sample in sorted(samples, key=lambda s: s["timestamp"]):
            if "LIDAR_TOP" not in sample["data"]:
                raise DatasetError(f"sample {sample['token']} has no LIDAR_TOP: v1.1 infos are keyed on it")
            lidar_sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
            lcs = nusc.get("calibrated_sensor", lidar_sd["calibrated_sensor_token"])
            lpose = nusc.get("ego_pose", lidar_sd["ego_pose_token"])
            ego_from_lidar = make_transform(lcs["rotation"], lcs["translation"])
            global_from_ego = make_transform(lpose["rotation"], lpose["translation"])
            images = {}
            for ch, sd_tok in sample["data"].items():
                sd = nusc.get("sample_data", sd_tok)
                cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
                if nusc.get("sensor", cs["sensor_token"])["modality"] != "camera":
                    continue
                folder, name = str(Path(sd["filename"]).parent), Path(sd["filename"]).name
                if prefix.setdefault(ch, folder) != folder:
                    raise DatasetError(f"camera {ch} has images in {prefix[ch]} and {folder}: one data_prefix per "
                                       "camera cannot address both")
                pose = nusc.get("ego_pose", sd["ego_pose_token"])
                ego_from_cam = make_transform(cs["rotation"], cs["translation"])
                global_from_ego_cam = make_transform(pose["rotation"], pose["translation"])
                cam_from_lidar = (invert(ego_from_cam) @ invert(global_from_ego_cam) @ global_from_ego
                                  @ ego_from_lidar)
                images[ch] = {"img_path": name, "cam2img": np.asarray(cs["camera_intrinsic"]).tolist(),
                              "cam2ego": ego_from_cam.tolist(), "sample_data_token": sd["token"],
                              "timestamp": sd["timestamp"] / 1e6, "lidar2cam": cam_from_lidar.tolist()}
            lidar_from_global = invert(global_from_ego @ ego_from_lidar)
            instances = []
            for ann_tok in sample["anns"]:
                ann = nusc.get("sample_annotation", ann_tok)
                heading = quaternion_to_matrix(ann["rotation"])[:, 0]  # the box's x axis (its length) in global
                v = nusc.box_velocity(ann_tok)[:2]
                box_g = np.array([[*ann["translation"], *ann["size"], np.arctan2(heading[1], heading[0]), *v]])
                bbox, vel = frame_boxes_to_info(box_g, lidar_from_global)
                name = category_to_detection_name(ann["category_name"])
                instances.append({"bbox_3d": bbox[0].tolist(), "bbox_label_3d": categories.get(name, -1),
                                  "bbox_label": categories.get(name, -1), "velocity": vel[0].tolist(),
                                  "num_lidar_pts": int(ann["num_lidar_pts"]), "num_radar_pts": int(ann["num_radar_pts"]),
                                  "bbox_3d_isvalid": bool(ann["num_lidar_pts"] + ann["num_radar_pts"] > 0)})
            data_list.append({"sample_idx": len(data_list), "token": sample["token"],
                              "timestamp": sample["timestamp"] / 1e6, "ego2global": global_from_ego.tolist(),
                              "images": images, "instances": instances,
                              "lidar_points": {"num_pts_feats": 5, "lidar_path": Path(lidar_sd["filename"]).name,
                                               "lidar2ego": ego_from_lidar.tolist()}})
    if not data_list:
        raise DatasetError(f"split '{split}' of {dataroot}/{version} has no samples to write")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        pickle.dump({"metainfo": {"categories": categories, "dataset": "nuscenes", "version": version,
                                  "info_version": "1.1"}, "data_list": data_list}, f)
    return prefix
