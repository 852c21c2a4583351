"""One frame in, detections out: the library behind ``perception-infer``.

A Frame comes from whatever a user has at hand (``frame_from_*`` below), goes through any ``Pipeline``
(PyTorch checkpoint, ONNX Runtime export, TensorRT engine) and ``write_outputs`` writes:

- ``results_nusc.json``: the nuScenes detection result format (``meta`` block + ``results`` keyed by sample token,
  boxes in the global frame), checked with the devkit's own loader before it is renamed into place;
- ``preview.png``: the camera mosaic with the detections' 3D boxes, and the BEV with boxes, heading, velocity
  arrows, every forecast mode with its probability, GT boxes (where the source has them), radar and lidar points.

Sources:

- ``frame_from_info``: one entry of an mmdet3d v1.1 info file (``perception.integrations.mmdet3d.infos``;
  no OpenMMLab needed). GT boxes come with it; it carries no radar.
- ``frame_from_sample``: one sample token of any nuScenes-format root (real nuScenes, v1.0-test, synthetic).
- ``frame_from_files``: raw files and a rig YAML: camera images (JPEG/PNG), radar sweeps in the readers' formats
  (``perception.data.io.read_points``: nuScenes radar ``.pcd``, View-of-Delft ``.bin``), an optional lidar file.
  No pose: ego = global (identity), every file is taken as captured at the same instant.

The ONNX Runtime and TensorRT paths import no torch (tested with torch made unimportable).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from perception.data.frame import Frame
from perception.data.io import read_image, read_points

RAW_T0 = 0  # µs: raw files carry no time; every file is taken as captured at t0


class InferInputError(ValueError):
    """A source cannot be turned into a Frame for this model (names the file, sensor or field and what to do)."""


@dataclass
class Source:
    """A Frame and what the preview shows beside it: lidar points (N, 3) in ego@t0, where the source has them."""

    frame: Frame
    lidar: np.ndarray | None = None
    description: str = ""
    notes: list[str] = field(default_factory=list)


# -- sources ----------------------------------------------------------------------------------------------------


def _lidar_in_ego(path: str | Path, ego_from_lidar: np.ndarray, fmt: str = "auto") -> np.ndarray:
    from calibration.transforms import transform_points

    return transform_points(np.asarray(ego_from_lidar, np.float64), read_points(path, fmt).xyz.astype(np.float64))


def frame_from_info(cfg: Any, info_file: str | Path, index: int = 0, data_prefix: str | Path | None = None) -> Source:
    """Entry ``index`` of an mmdet3d v1.1 info file. Images are read from ``data_prefix / img_path`` when
    ``data_prefix`` is given, else from the info file's folder: ``samples/<CAM>/img_path`` (mmdet3d's nuScenes
    layout) where that file exists, else ``img_path`` beside the info file."""
    from calibration.io import read_mmdet3d_info
    from perception.integrations.mmdet3d.infos import frame_from_info as info_entry_frame

    info = read_mmdet3d_info(info_file)
    entries = list(info["data_list"])
    if not 0 <= index < len(entries):
        raise InferInputError(f"{info_file}: --index {index} is out of range: the file has {len(entries)} entries "
                              f"(0..{len(entries) - 1})")
    entry = entries[index]
    if data_prefix is not None:
        root, prefix = Path(data_prefix), {}
    else:
        root = Path(info_file).parent
        prefix = {ch: (f"samples/{ch}" if (root / "samples" / ch / img["img_path"]).exists() else "")
                  for ch, img in entry.get("images", {}).items()}
    frame = info_entry_frame(entry, info.get("metainfo", {}), cfg, root, prefix, source=str(info_file))
    lidar = None
    lp = entry.get("lidar_points", {})
    if lp.get("lidar_path"):
        for cand in (root / lp["lidar_path"], root / "samples" / "LIDAR_TOP" / lp["lidar_path"]):
            if cand.exists():
                lidar = _lidar_in_ego(cand, lp["lidar2ego"], "nuscenes-lidar")
                break
    return Source(frame, lidar, f"{Path(info_file).name} entry {index} ({entry.get('token', '?')})")


def frame_from_sample(cfg: Any, dataroot: str | Path, version: str, sample_token: str) -> Source:
    """One sample of a nuScenes-format root, as ``NuScenesFrames`` builds it for training and evaluation (same
    sync, radar accumulation, preprocessing). The sample's scene must be in a split the root knows (the devkit's
    splits or ``<dataroot>/<version>/splits.json``)."""
    from nuscenes.nuscenes import NuScenes
    from nuscenes.utils.splits import create_splits_scenes

    from perception.data.nuscenes import DatasetError, NuScenesFrames

    if not (Path(dataroot) / version).is_dir():
        raise DatasetError(f"{Path(dataroot) / version} does not exist: check --dataroot and --version")
    nusc = NuScenes(version=version, dataroot=str(dataroot), verbose=False)
    try:
        sample = nusc.get("sample", sample_token)
    except KeyError:
        raise DatasetError(f"--sample-token {sample_token} is not a sample of {Path(dataroot) / version} "
                           f"(it has {len(nusc.sample)} samples, e.g. {nusc.sample[0]['token']})") from None
    scene = nusc.get("scene", sample["scene_token"])["name"]
    splits = {k: v for k, v in create_splits_scenes().items() if not k.startswith("synth")}
    custom = Path(dataroot) / version / "splits.json"
    if custom.exists():
        splits.update(json.loads(custom.read_text()))
    split = next((k for k, names in splits.items() if scene in names), None)
    if split is None:
        raise DatasetError(f"scene {scene} of sample {sample_token} is in no split: neither the devkit's nor "
                           f"{custom}; add it to {custom} (a JSON object: split name -> scene names)")
    frames = NuScenesFrames(cfg, dataroot, version, split, nusc=nusc)
    index = next(i for i, s in enumerate(frames.samples) if s.token == sample_token)
    frame = frames.load(index)
    lidar = None
    if "LIDAR_TOP" in sample["data"]:
        sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        path = Path(dataroot) / sd["filename"]
        if path.exists():
            from calibration.transforms import make_transform

            cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
            lidar = _lidar_in_ego(path, make_transform(cs["rotation"], cs["translation"]), "nuscenes-lidar")
    return Source(frame, lidar, f"{version} sample {sample_token} (scene {scene}, split {split})")


def parse_assignments(values: Sequence[str], option: str) -> dict[str, str]:
    """['CAM_FRONT=a.jpg', ...] -> {'CAM_FRONT': 'a.jpg'}; a malformed or repeated entry is an InferInputError."""
    out: dict[str, str] = {}
    for v in values:
        ch, sep, path = v.partition("=")
        if not sep or not ch or not path:
            raise InferInputError(f"{option} {v!r} must be CHANNEL=PATH, e.g. {option} CAM_FRONT=front.jpg")
        if ch in out:
            raise InferInputError(f"{option} names {ch} twice ({out[ch]} and {path}); give each channel once")
        out[ch] = path
    return out


def _radar_records(path: str | Path) -> np.ndarray:
    """Any radar file the readers know -> the structured records the radar accumulation takes."""
    from perception.data.io import read_radar_records

    if str(path).endswith(".pcd"):
        return read_radar_records(path)
    cloud = read_points(path)
    rec = np.zeros(len(cloud), dtype=[(f, "<f4") for f in cloud.fields])
    for i, f in enumerate(cloud.fields):
        rec[f] = cloud.points[:, i]
    return rec


def assemble_raw_frame(cfg: Any, rig: Any, images: Mapping[str, np.ndarray], radars: Mapping[str, np.ndarray],
                       camera_order: Sequence[str], name: str) -> Frame:
    """Decoded camera images and radar records of one instant -> a Frame, through the one Frame assembler
    (``perception.data.assemble.assemble_frame``: the same undistortion, preprocessing and radar accumulation as
    every other path), with a still ego (no poses). Cameras of ``camera_order`` without an image are masked."""
    from perception.data.assemble import CameraShot, assemble_frame, still_poses, stereo_indices
    from perception.data.radar import SweepRef

    shots = [CameraShot(ch, rig.cameras.get(ch), images.get(ch), RAW_T0) for ch in camera_order]
    index = {ch: k for k, ch in enumerate(sorted(rig.radars))}  # the sensor field: radars by name, as the dataset
    sweeps = [SweepRef(rig.radars[ch], index[ch], f"--radar {ch}", RAW_T0, rec) for ch, rec in radars.items()]
    return assemble_frame(cfg.data, RAW_T0, still_poses(), shots, sweeps, token=name,
                          stereo_pairs=stereo_indices(rig.stereo_pairs, list(camera_order)))


def frame_from_files(cfg: Any, rig_path: str | Path, images: Mapping[str, str], radars: Mapping[str, str] = {},
                     lidar: str | None = None, camera_order: Sequence[str] | None = None) -> Source:
    """Raw files of one instant and the rig they were captured with. ``camera_order``: the cameras the model
    takes, in its order (an export fixes them; default: the rig's cameras); a camera without an image is masked.
    Images may be any size with the rig's aspect ratio (the intrinsics are scaled, as ``perception-calib
    overlay`` does). Radar points are in their radar's frame, lidar points in the rig's lidar frame (the ego
    frame when the rig has no lidar)."""
    from calibration.io import load_rig

    rig = load_rig(rig_path)
    order = list(camera_order) if camera_order is not None else list(rig.cameras)
    notes: list[str] = []
    for ch in images:
        if ch not in rig.cameras:
            raise InferInputError(f"--image {ch}: {rig_path} has no camera {ch}; its cameras are {rig.camera_names}")
        if ch not in order:
            raise InferInputError(f"--image {ch}: the model takes the cameras {order}, not {ch} (an export fixes "
                                  "its cameras: re-export with perception-export --rig for this rig)")
    for ch in radars:
        if ch not in rig.radars:
            raise InferInputError(f"--radar {ch}: {rig_path} has no radar {ch}; its radars are {list(rig.radars)}")
    missing = [ch for ch in order if ch not in rig.cameras]
    if missing:
        raise InferInputError(f"{rig_path}: the model takes the cameras {order}; the rig lacks {missing} "
                              "(re-export with perception-export --rig for this rig)")
    decoded: dict[str, np.ndarray] = {}
    scaled = {}
    for ch, path in images.items():
        img = read_image(path)
        cam = rig.cameras[ch]
        h, w = img.shape[:2]
        if (w, h) != (cam.width, cam.height):
            scale = w / cam.width
            if abs(h / cam.height - scale) > 1e-3:
                raise InferInputError(f"{path}: image is {w}x{h} but the rig's {ch} is {cam.width}x{cam.height} "
                                      "(another aspect ratio); use the image the rig was calibrated for")
            scaled[ch] = cam.scaled(scale)
            notes.append(f"{path} is {w}x{h}; {ch}'s intrinsics scaled by {scale:g}")
        decoded[ch] = img
    if scaled:
        from dataclasses import replace

        rig = replace(rig, cameras={**rig.cameras, **scaled})
    records = {ch: _radar_records(path) for ch, path in radars.items()}
    for ch in order:
        if ch not in images:
            notes.append(f"camera {ch}: no --image; masked")
    frame = assemble_raw_frame(cfg, rig, decoded, records, order, f"file:{Path(next(iter(images.values()))).stem}")
    pts = None
    if lidar:
        lidar_mount = next(iter(rig.lidars.values())).ego_from_lidar if rig.lidars else np.eye(4)
        pts = _lidar_in_ego(lidar, lidar_mount)
    return Source(frame, pts, f"{len(images)} image(s), {len(radars)} radar file(s) with {Path(rig_path).name}", notes)


# -- the run ----------------------------------------------------------------------------------------------------


def exported_cameras(pipeline: Any) -> tuple[str, ...] | None:
    """The camera channels an export or engine was built for (model.json), or None for a checkpoint (any rig)."""
    meta = getattr(getattr(pipeline.runner, "runtime", None), "meta", None)
    return tuple(meta["camera_channels"]) if meta and meta.get("camera_channels") else None


def fit_cameras(frame: Frame, cameras: Sequence[str] | None) -> Frame:
    """``frame`` with its cameras in the export's order. The same set in another order is reordered; another set
    is an InferInputError saying what to do."""
    from dataclasses import replace

    have = [str(c) for c in frame.camera_channels]
    if cameras is None or list(cameras) == have:
        return frame
    if sorted(cameras) != sorted(have):
        raise InferInputError(f"the export takes the cameras {list(cameras)} but the source has {have}; re-export "
                              "for this rig (perception-export --rig RIG.yaml) or run the checkpoint (--checkpoint)")
    idx = [have.index(c) for c in cameras]
    pairs = np.array([[idx.index(a), idx.index(b)] for a, b in frame.stereo_pairs], np.int64).reshape(-1, 2)
    return replace(frame, images=frame.images[idx], img_from_ego=frame.img_from_ego[idx],
                   camera_channels=frame.camera_channels[idx], camera_valid=frame.camera_valid[idx],
                   camera_time=frame.camera_time[idx], stereo_pairs=pairs)


def above(det: Any, score: float) -> Any:
    """The Detections with a score of at least ``score`` (same order)."""
    from dataclasses import replace

    keep = np.asarray(det.scores) >= score
    return replace(det, boxes=det.boxes[keep], scores=det.scores[keep], labels=det.labels[keep], names=det.names[keep],
                   attributes=det.attributes[keep], trajectories=det.trajectories[keep],
                   mode_probs=det.mode_probs[keep])


def write_outputs(source: Source, det: Any, out_dir: str | Path, max_range: float = 60.0,
                  preview_score: float = 0.3) -> dict[str, Any]:
    """``results_nusc.json`` (every detection; checked with the devkit's loader) and ``preview.png`` (detections
    scoring at least ``preview_score``) in ``out_dir``, each written to a temporary name and renamed. Returns a
    summary (paths, counts, timing)."""
    from perception.eval.detection import check_results_file, results_json
    from perception.outputs import atomic_file
    from perception.visualize import draw_detections_preview

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame = source.frame
    results = results_json({frame.sample_token: det.to_nuscenes()}, [frame.sample_token])
    path = out / "results_nusc.json"
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(results))
        check_results_file(tmp, [frame.sample_token])
    preview = out / "preview.png"
    shown = above(det, preview_score)
    with atomic_file(preview) as tmp:
        draw_detections_preview(frame, shown, None, tmp, max_range=max_range, lidar=source.lidar,
                                title=f"{source.description}: {len(shown)} of {len(det)} detections (score >= "
                                      f"{preview_score:g})")
    counts: dict[str, int] = {}
    for name in det.names:
        counts[str(name)] = counts.get(str(name), 0) + 1
    return {"results": str(path), "preview": str(preview), "sample_token": frame.sample_token,
            "detections": len(det), "by_class": counts, "in_preview": len(shown), "preview_score": preview_score, "gt_boxes": len(frame.gt_boxes),
            "cameras": {str(c): bool(v) for c, v in zip(frame.camera_channels, frame.camera_valid)},
            "radar_points": int(frame.radar_valid.sum()), "issues": list(frame.issues) + source.notes,
            "timing_ms": {k: round(v * 1e3, 1) for k, v in det.timing.items()}}


def infer_one(pipeline: Any, source: Source, out_dir: str | Path) -> dict[str, Any]:
    """Run ``pipeline`` on the source's Frame (cameras put in an export's order) and write the outputs."""
    source.frame = fit_cameras(source.frame, exported_cameras(pipeline))
    det = pipeline.infer(source.frame)
    return write_outputs(source, det, out_dir)
