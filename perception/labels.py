"""GT boxes from label files, as ``(names, boxes)`` with boxes ``(G, 7) [x, y, z, w, l, h, yaw]`` (this project's
convention: centre, nuScenes size order, yaw about +z): mmdet3d v1.1 info entries and View-of-Delft labels.
For pictures (``perception-calib overlay``) and checks; the training data path has its own readers."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from perception.data.io import SensorFileError

# View-of-Delft labels are written in a frame the JSON calls LIDAR; measured on the real samples (docs/calibration.md,
# tests/calibration/test_realdata_geometry.py), a 180 degree rotation about x (negating y and z) puts them on the
# radar returns, i.e. into the radar frame.
VOD_LABEL_TO_RADAR = np.diag([1.0, -1.0, -1.0])


def read_vod_labels(path: str | Path) -> tuple[list[str], np.ndarray]:
    """A View-of-Delft ``label_2/*.json`` (a list of objects with ``className`` and ``geometry``: ``center``,
    ``size`` (length, width, height), ``quaternion``) -> names and (G, 7) boxes in the **radar** frame."""
    from calibration.transforms import quaternion_to_matrix

    try:
        objects = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SensorFileError(path, "file does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SensorFileError(path, f"not JSON ({err})", "expected a View-of-Delft label_2 .json") from None
    names, boxes = [], []
    for i, obj in enumerate(objects if isinstance(objects, list) else []):
        try:
            g = obj["geometry"]
            centre = VOD_LABEL_TO_RADAR @ np.array([g["center"][k] for k in "xyz"], np.float64)
            q = g["quaternion"]
            rot = VOD_LABEL_TO_RADAR @ quaternion_to_matrix([q["w"], q["x"], q["y"], q["z"]])
            size = g["size"]
            boxes.append([*centre, size["width"], size["length"], size["height"], np.arctan2(rot[1, 0], rot[0, 0])])
            names.append(str(obj["className"]))
        except (KeyError, TypeError) as err:
            raise SensorFileError(path, f"object {i} lacks {err} (className, geometry.center/size/quaternion)") from None
    if not isinstance(objects, list):
        raise SensorFileError(path, f"top level is {type(objects).__name__}, expected a list of labelled objects")
    return names, np.array(boxes, np.float64).reshape(-1, 7)


def read_info_gt(info_file: str | Path, index: int = 0) -> tuple[list[str], np.ndarray]:
    """GT boxes of entry ``index`` of an mmdet3d v1.1 info file, in the **ego** frame (lidar -> ego by the entry's
    ``lidar2ego``), every labelled class (``bbox_label_3d`` -1 kept as 'ignore')."""
    from calibration.io import read_mmdet3d_info
    from perception.integrations.mmdet3d.infos import MMDET3D_NUSCENES_CLASSES, InfoError, info_boxes_to_frame

    info = read_mmdet3d_info(info_file)
    entries = info.get("data_list", [])
    if not 0 <= index < len(entries):
        raise InfoError(f"{info_file}: --index {index} is out of range ({len(entries)} entries)")
    entry = entries[index]
    cats = info.get("metainfo", {}).get("categories")
    by_index = ({int(i): str(n) for n, i in cats.items()} if isinstance(cats, dict) else
                dict(enumerate(cats if cats is not None else MMDET3D_NUSCENES_CLASSES)))
    inst = entry.get("instances", [])
    bbox = np.array([x["bbox_3d"] for x in inst], np.float64).reshape(-1, 7)
    vel = np.array([x.get("velocity", [np.nan, np.nan]) for x in inst], np.float64).reshape(-1, 2)
    boxes = info_boxes_to_frame(bbox, vel, np.asarray(entry["lidar_points"]["lidar2ego"], np.float64))
    return [by_index.get(int(x.get("bbox_label_3d", -1)), "ignore") for x in inst], boxes[:, :7]
