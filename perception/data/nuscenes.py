"""Frames from any nuScenes-format root through nuscenes-devkit.

Works on real nuScenes (v1.0-trainval / v1.0-mini / v1.0-test with the devkit's splits), on the generated
``v1.0-synth`` (splits from ``splits.json``, stereo pairs from ``rig.yaml``) and on roots written by others.

Per sample: ``t0`` is the sample timestamp (the LIDAR_TOP key frame); the rig comes from ``calibrated_sensor``;
each camera keeps its own capture time and ego pose and is aligned to t0 by ``calibration/sync.py``; radar
sweeps of every unit are taken from ``[t0 - window, t0 + tolerance]`` (offline is non-causal: nuScenes'
key-frame radar sweeps straddle t0 by up to ~40 ms), closest to t0 first (``perception.data.radar.select_sweeps``),
each through its own ego pose. The Frame itself is built by ``perception.data.assemble.assemble_frame``, as in replay.

Bad files never stop a run: an unreadable image masks that camera (image zeros, ``camera_valid`` False), an
unreadable radar sweep is skipped, a NaN point is dropped; each is recorded in ``Frame.issues``. With
``data.on_bad_file: skip`` a sample with any bad file is replaced by the next good one instead (and reported).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from calibration.io import load_rig
from calibration.rig import CalibrationError, Camera, Radar, Rig
from calibration.sync import PoseStream
from calibration.transforms import invert, make_transform, transform_points
from perception.config import Config, DataConfig
from perception.data.assemble import CameraShot, assemble_frame, stereo_indices
from perception.data.frame import ClipSample, Frame
from perception.data.io import RadarFilter
from perception.data.lidar import LidarShot
from perception.data.radar import SweepRef, select_sweeps

CAMERA_ORDER = ["CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"]


class DatasetError(ValueError):
    """The dataset root, version or split is unusable (names it and says what to do)."""


def split_scene_names(dataroot: str | Path, version: str, split: str) -> list[str]:
    """Scene names of ``split``: the devkit's built-in splits, else ``<dataroot>/<version>/splits.json``."""
    from nuscenes.utils.splits import create_splits_scenes

    builtin = create_splits_scenes()
    if split in builtin and not split.startswith("synth"):
        return list(builtin[split])
    path = Path(dataroot) / version / "splits.json"
    if not path.exists():
        raise DatasetError(f"split '{split}' is not a nuScenes split and {path} does not exist; "
                           f"built-in splits: {sorted(builtin)}")
    splits = json.loads(path.read_text())
    if split not in splits:
        raise DatasetError(f"split '{split}' is not in {path}; it has {sorted(splits)}")
    return list(splits[split])


def scene_sample_data(nusc, scene_token: str) -> list[dict]:
    """Every sample_data row of the scene (key frames and sweeps), sorted by (timestamp, channel).

    A sweep's ``sample_token`` is the key frame it belongs to, so membership of that sample in the scene
    decides, whatever the prev/next chains look like."""
    scene = nusc.get("scene", scene_token)
    samples = {s["token"] for s in nusc.sample if s["scene_token"] == scene["token"]}
    rows = [sd for sd in nusc.sample_data if sd["sample_token"] in samples]
    if not rows:
        raise ValueError(f"scene {scene_token} ('{scene['name']}') has no sample_data rows; "
                         "check the sample and sample_data tables of this dataset version")
    return sorted(rows, key=lambda sd: (sd["timestamp"], sd["channel"]))


@dataclass
class _SampleIndex:
    token: str
    scene: str


class NuScenesFrames:
    """Indexable Frames of one split. ``train=True`` applies the config's augmentation and dropout; with a temporal
    model (``model.temporal.enabled``) a training item is a ``ClipSample`` (``load_clip``: the frame and an earlier
    key frame of its scene), otherwise a Frame.

    Index order: scenes in split order, samples by timestamp (``perception-inspect --index`` counts this way), so
    iterating the indices runs every scene in time order.
    """

    def __init__(self, cfg: Config, dataroot: str | Path, version: str, split: str, train: bool = False,
                 seed: int = 0, nusc: Any = None):
        self.cfg = cfg
        self.dcfg: DataConfig = cfg.data
        self.dataroot = Path(dataroot)
        self.version = version
        self.split = split
        self.train = train
        self.seed = seed
        self.epoch = 0  # set_epoch() varies the augmentation draw per epoch
        if not (self.dataroot / version).is_dir():
            raise DatasetError(f"{self.dataroot / version} does not exist: check --dataroot and --version "
                               "(for the synthetic world: perception-synth --out DIR ...)")
        if nusc is None:
            nusc = load_tables(self.dataroot, version)
        self.nusc = nusc
        names = split_scene_names(self.dataroot, version, split)
        by_name = {s["name"]: s for s in nusc.scene}
        missing = [n for n in names if n not in by_name]
        if len(missing) == len(names):
            raise DatasetError(f"none of the {len(names)} scenes of split '{split}' are in {self.dataroot / version}")
        self.samples: list[_SampleIndex] = []
        for name in names:
            if name not in by_name:
                continue
            tok = by_name[name]["first_sample_token"]
            rows = []
            while tok:
                s = nusc.get("sample", tok)
                rows.append(s)
                tok = s["next"]
            for s in sorted(rows, key=lambda r: r["timestamp"]):
                self.samples.append(_SampleIndex(s["token"], name))
        rig_file = self.dataroot / version / "rig.yaml"
        self.file_rig: Rig | None = load_rig(rig_file) if rig_file.exists() else None
        f = self.dcfg.radar.filter
        self.radar_filter = RadarFilter(f.dyn_prop, f.invalid_state, f.ambig_state)
        self._calib_cache: dict = {}  # calibrated_sensor token -> Camera / Radar (validated once)
        self.clips = bool(train and cfg.model.temporal.enabled)  # items are ClipSamples (load_clip)

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    # -- calibration -----------------------------------------------------------
    def _sample_data(self, sample: dict) -> dict[str, dict]:
        return {ch: self.nusc.get("sample_data", tok) for ch, tok in sample["data"].items()}

    def _sensor(self, sd: dict) -> tuple[dict, dict]:
        cs = self.nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        return cs, self.nusc.get("sensor", cs["sensor_token"])

    def _camera(self, channel: str, sd: dict, cs: dict) -> Camera:
        key = (cs["token"], sd["width"], sd["height"])
        if key not in self._calib_cache:
            self._calib_cache[key] = self._make_camera(channel, sd, cs)
        return self._calib_cache[key]

    def _radar(self, channel: str, cs: dict) -> Radar:
        if cs["token"] not in self._calib_cache:
            doppler = "cartesian"
            if self.file_rig is not None and channel in self.file_rig.radars:
                doppler = self.file_rig.radars[channel].doppler
            self._calib_cache[cs["token"]] = Radar(channel, make_transform(cs["rotation"], cs["translation"]), doppler)
        return self._calib_cache[cs["token"]]

    def _make_camera(self, channel: str, sd: dict, cs: dict) -> Camera:
        dist = None
        if self.file_rig is not None and channel in self.file_rig.cameras:
            dist = self.file_rig.cameras[channel].distortion
        try:
            return Camera(channel, int(sd["width"]), int(sd["height"]), cs["camera_intrinsic"],
                          make_transform(cs["rotation"], cs["translation"]), dist)
        except CalibrationError as err:
            raise CalibrationError(err.sensor, err.field, err.value, err.problem, err.hint,
                                   f"calibrated_sensor {cs['token']}") from None

    def _camera_order(self, channels: list[str]) -> list[str]:
        if self.file_rig is not None:
            known = [c for c in self.file_rig.cameras if c in channels]
            return known + sorted(c for c in channels if c not in known)
        order = {c: i for i, c in enumerate(CAMERA_ORDER)}
        return sorted(channels, key=lambda c: (order.get(c, len(order)), c))

    # -- frames ----------------------------------------------------------------
    def __getitem__(self, index: int) -> Frame | ClipSample:
        load = self.load_clip if self.clips else self.load
        item = load(index)
        frame = item.frame if self.clips else item
        if self.dcfg.on_bad_file == "skip" and frame.issues:
            reasons = list(frame.issues)
            for step in range(1, len(self)):
                item = load((index + step) % len(self))
                frame = item.frame if self.clips else item
                if not frame.issues:
                    frame.issues = [f"sample {self.samples[index].token} skipped: {r}" for r in reasons]
                    break
        return item

    def previous_index(self, index: int, gap: int) -> int | None:
        """The index ``gap`` key frames before ``index`` in the same scene, else the farthest available of fewer
        (None at a scene's first key frame)."""
        scene = self.samples[index].scene
        for g in range(gap, 0, -1):
            if index - g >= 0 and self.samples[index - g].scene == scene:
                return index - g
        return None

    def load_clip(self, index: int) -> ClipSample:
        """Training clip (BEVDet4D style, docs/decisions.md): frame ``index`` and the key frame ``g`` back in its
        scene, ``g`` drawn from ``model.temporal.train_gaps``, under the SAME BEV augmentation (its own image
        augmentation and sensor dropout); the previous frame is left out (cold start) with probability
        ``model.temporal.drop_previous`` and at a scene's first key frame. A pure function of (seed, epoch, index),
        so a resumed run sees the same clips."""
        rng = np.random.default_rng([self.seed, self.epoch, index])
        frame, pose = self._load(index, rng)
        t = self.cfg.model.temporal
        gap = int(rng.choice(np.asarray(t.train_gaps)))
        dropped = bool(rng.random() < t.drop_previous)
        prev_index = self.previous_index(index, gap)
        if dropped or prev_index is None:
            return ClipSample(frame, None)
        # the current frame's augmented_from_ego: frame.global_from_ego = pose @ inv(aug)
        aug = np.linalg.solve(frame.global_from_ego, pose)
        prev, _ = self._load(prev_index, np.random.default_rng([self.seed, self.epoch, index, 1]), aug)
        return ClipSample(frame, prev)

    def load(self, index: int, rng: np.random.Generator | None = None) -> Frame:
        """Frame ``index`` (with augmentation when training; ``rng`` defaults to one seeded by index and seed)."""
        if rng is None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
        return self._load(index, rng)[0]

    def _load(self, index: int, rng: np.random.Generator,
              bev_aug: np.ndarray | None = None) -> tuple[Frame, np.ndarray]:
        """(Frame ``index``, its un-augmented global <- ego at t0); ``bev_aug``: ``assemble_frame``'s."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for split '{self.split}' ({len(self)} samples)")
        sample = self.nusc.get("sample", self.samples[index].token)
        t0 = int(sample["timestamp"])
        sds = self._sample_data(sample)
        # every sample_data has its own ego pose: the stream holds those of the sensors used here
        pose_rows: dict[int, dict] = {}
        cameras: dict[str, tuple[Camera, dict]] = {}
        radars: list[tuple[str, Radar, dict]] = []
        lidar = None
        for ch, sd in sds.items():
            cs, sensor = self._sensor(sd)
            pose_rows[sd["timestamp"]] = self.nusc.get("ego_pose", sd["ego_pose_token"])
            if sensor["modality"] == "camera":
                cameras[ch] = (self._camera(ch, sd, cs), sd)
            elif sensor["modality"] == "radar":
                radars.append((ch, self._radar(ch, cs), sd))
            elif sensor["modality"] == "lidar" and ch == "LIDAR_TOP" and self.dcfg.lidar.enabled:
                lidar = LidarShot(make_transform(cs["rotation"], cs["translation"]), self.dataroot / sd["filename"],
                                  int(sd["timestamp"]))
        radars.sort(key=lambda r: r[0])
        sweeps: list[SweepRef] = []
        rcfg = self.dcfg.radar
        window, future = int(rcfg.window_ms * 1000), int(rcfg.future_tolerance_ms * 1000)
        for idx, (_, radar, sd) in enumerate(radars):
            chain = self._sweep_chain(sd, t0 - window, t0 + future)
            for k in select_sweeps([c["timestamp"] for c in chain], t0, window, future, rcfg.sweeps):
                c = chain[k]
                pose_rows[c["timestamp"]] = self.nusc.get("ego_pose", c["ego_pose_token"])
                sweeps.append(SweepRef(radar, idx, f"{self.dataroot}/{c['filename']}", int(c["timestamp"])))
        poses = PoseStream.from_records(pose_rows.values(),
                                        max_extrapolation_us=int(self.dcfg.sync.max_extrapolation_ms * 1000))
        order = self._camera_order(list(cameras))
        shots = [CameraShot(ch, cameras[ch][0], self.dataroot / cameras[ch][1]["filename"],
                            int(cameras[ch][1]["timestamp"])) for ch in order]
        stereo = None
        if self.file_rig is not None and self.file_rig.stereo_pairs:
            stereo = stereo_indices(self.file_rig.stereo_pairs, order)
        gt = self._targets(sample, poses.at(t0))
        frame = assemble_frame(self.dcfg, t0, poses, shots, sweeps, token=sample["token"], stereo_pairs=stereo,
                               targets=gt, train=self.train, rng=rng, lidar=lidar, scene=sample["scene_token"],
                               bev_aug=bev_aug)
        return frame, poses.at(t0)

    def _sweep_chain(self, sd: dict, lo: int, hi: int) -> list[dict]:
        """The radar's sample_data rows around key-frame row ``sd``: walked along ``next`` and ``prev`` until
        outside ``[lo, hi]`` (µs); ``select_sweeps`` then chooses among them."""
        chain = [sd]
        nxt = sd
        while nxt["next"]:
            nxt = self.nusc.get("sample_data", nxt["next"])
            if nxt["timestamp"] > hi:
                break
            chain.append(nxt)
        prv = sd
        while prv["prev"]:
            prv = self.nusc.get("sample_data", prv["prev"])
            if prv["timestamp"] < lo:
                break
            chain.append(prv)
        return chain

    # -- targets ---------------------------------------------------------------
    def _targets(self, sample: dict, global_from_ego: np.ndarray) -> dict[str, np.ndarray]:
        ego_from_global = invert(global_from_ego)
        steps = self.dcfg.future_steps
        kept, futures, fvalid = [], [], []
        for tok in sample["anns"]:
            ann = self.nusc.get("sample_annotation", tok)
            a = _annotation(self.nusc, ann)
            if a is None or a.name not in self.cfg.classes:
                continue
            kept.append(a)
            fut = np.zeros((steps, 2))
            fv = np.zeros(steps, bool)
            nxt = ann["next"]
            for k in range(steps):
                if not nxt:
                    break
                a2 = self.nusc.get("sample_annotation", nxt)
                fut[k] = transform_points(ego_from_global, np.array([a2["translation"]], np.float64))[0, :2]
                fv[k] = True
                nxt = a2["next"]
            futures.append(fut)
            fvalid.append(fv)
        return _gt_fields(kept, global_from_ego, list(self.cfg.classes), np.array(futures).reshape(len(kept), steps, 2),
                          np.array(fvalid, bool).reshape(len(kept), steps))


@dataclass(frozen=True)
class _Ann:
    """One annotation in global coordinates: centre (3,), yaw about z, size [w, l, h], velocity [vx, vy]."""

    instance: str
    name: str
    attribute: str
    centre: np.ndarray
    yaw: float
    size: np.ndarray
    velocity: np.ndarray


def _annotation(nusc: Any, ann: dict) -> _Ann | None:
    """A sample_annotation row as an ``_Ann`` (None when its category is no detection class). The velocity is the
    devkit's ``box_velocity`` (centre differences to the neighbouring annotations; 0 where it is undefined)."""
    from nuscenes.eval.detection.utils import category_to_detection_name

    name = category_to_detection_name(ann["category_name"])
    if name is None:
        return None
    q = ann["rotation"]  # [w, x, y, z]: yaw of the box in global
    yaw = float(np.arctan2(2 * (q[0] * q[3] + q[1] * q[2]), 1 - 2 * (q[2] ** 2 + q[3] ** 2)))
    v = np.asarray(nusc.box_velocity(ann["token"])[:2], np.float64)
    attr = nusc.get("attribute", ann["attribute_tokens"][0])["name"] if ann["attribute_tokens"] else ""
    return _Ann(ann["instance_token"], name, attr, np.asarray(ann["translation"], np.float64), yaw,
                np.asarray(ann["size"], np.float64), np.where(np.isfinite(v), v, 0.0))


def _gt_fields(anns: list[_Ann], global_from_ego: np.ndarray, classes: list[str], future: np.ndarray,
               future_valid: np.ndarray) -> dict[str, np.ndarray]:
    """The Frame's gt_* fields of ``anns`` (global) in ego@t0 (``global_from_ego`` = the pose at t0)."""
    ego_from_global = invert(global_from_ego)
    ego_yaw = np.arctan2(global_from_ego[1, 0], global_from_ego[0, 0])
    g = len(anns)
    boxes = np.zeros((g, 9), np.float32)
    for i, a in enumerate(anns):
        centre = transform_points(ego_from_global, a.centre[None])[0]
        boxes[i] = [*centre, *a.size, np.angle(np.exp(1j * (a.yaw - ego_yaw))), *(ego_from_global[:2, :2] @ a.velocity)]
    return {"gt_boxes": boxes, "gt_labels": np.array([classes.index(a.name) for a in anns], np.int64),
            "gt_names": np.array([a.name for a in anns], "<U32"),
            "gt_attributes": np.array([a.attribute for a in anns], "<U40"),
            "gt_instance_tokens": np.array([a.instance for a in anns], "<U40"),
            "gt_future": np.asarray(future, np.float32), "gt_future_valid": np.asarray(future_valid, bool)}


class SceneGT:
    """The annotations of one scene at any time (replay frames come at the camera rate, annotations at the 2 Hz
    key frames): each instance of the key frame nearest to ``t`` is interpolated linearly (centre, velocity; yaw
    along the shorter arc) towards its annotation in the key frame on the other side of ``t``; an instance that
    the other key frame lacks moves on at its velocity from the nearest one. At a key frame's timestamp the boxes
    are that key frame's annotations exactly. No GT more than ``max_outside_us`` before the first or after the
    last key frame. ``gt_future`` is not filled (``gt_future_valid`` all False)."""

    def __init__(self, nusc: Any, scene: dict, max_outside_us: int = 250_000):
        self.samples: list[tuple[int, dict[str, _Ann]]] = []
        tok = scene["first_sample_token"]
        while tok:
            sample = nusc.get("sample", tok)
            anns = (_annotation(nusc, nusc.get("sample_annotation", a)) for a in sample["anns"])
            self.samples.append((int(sample["timestamp"]), {a.instance: a for a in anns if a is not None}))
            tok = sample["next"]
        self.times = np.array([t for t, _ in self.samples], np.int64)  # key-frame timestamps, µs
        self.max_outside_us = int(max_outside_us)

    def __len__(self) -> int:
        return sum(len(a) for _, a in self.samples)

    def at(self, t_us: int, global_from_ego: np.ndarray, classes: list[str], future_steps: int
           ) -> dict[str, np.ndarray] | None:
        """The gt_* fields at ``t_us`` in ego@t (``global_from_ego`` at ``t_us``) for ``classes``; None outside the
        scene's key frames (see the class docstring)."""
        if not self.samples:
            return None
        ts = self.times
        k = int(np.argmin(np.abs(ts - t_us)))
        if abs(int(ts[k]) - t_us) > self.max_outside_us and not ts[0] <= t_us <= ts[-1]:
            return None
        j = k - 1 if t_us < ts[k] else k + 1
        other = self.samples[j][1] if 0 <= j < len(ts) and t_us != ts[k] else {}
        out = []
        for inst, a in self.samples[k][1].items():
            if a.name not in classes:
                continue
            b = other.get(inst)
            if b is None:
                out.append(replace(a, centre=a.centre + np.r_[a.velocity * (t_us - ts[k]) / 1e6, 0.0]))
                continue
            w = (t_us - ts[k]) / (ts[j] - ts[k])
            out.append(replace(a, centre=a.centre + w * (b.centre - a.centre),
                               yaw=a.yaw + w * float(np.angle(np.exp(1j * (b.yaw - a.yaw)))),
                               velocity=a.velocity + w * (b.velocity - a.velocity)))
        g = len(out)
        return _gt_fields(out, global_from_ego, classes, np.zeros((g, future_steps, 2)),
                          np.zeros((g, future_steps), bool))


# -- untrusted tables: load errors and values that would otherwise give all-NaN Frames ----------------------------


def load_tables(dataroot: Path, version: str) -> Any:
    """nuscenes-devkit's NuScenes over ``dataroot/version``, with an unreadable table (truncated JSON, a missing
    field, a dangling token) a DatasetError naming the file, and the values Frames depend on checked
    (``check_tables``)."""
    from nuscenes.nuscenes import NuScenes

    try:
        nusc = NuScenes(version=version, dataroot=str(dataroot), verbose=False)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
        raise DatasetError(f"{_bad_table(dataroot / version) or dataroot / version}: the tables cannot be loaded "
                           f"({type(err).__name__}: {' '.join(str(err).split())[:200]}); re-copy or regenerate "
                           "the dataset") from None
    check_tables(nusc, dataroot / version)
    return nusc


def _bad_table(folder: Path) -> str:
    """The first nuScenes table of ``folder`` that is not a JSON list of objects ('' when they all are)."""
    tables = ("attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map", "sample",
              "sample_annotation", "sample_data", "scene", "sensor", "visibility")
    for path in (folder / f"{name}.json" for name in tables):
        if not path.exists():
            return f"{path} (missing)"
        try:
            rows = json.loads(path.read_bytes())
        except ValueError as err:  # also UnicodeDecodeError
            return f"{path} (not valid JSON: {err})"
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            return f"{path} (not a list of records)"
    return ""


def check_tables(nusc: Any, folder: Path) -> None:
    """Refuse (DatasetError, naming table, token, field and value) what would silently become NaN in a Frame:
    non-finite ego poses, non-finite or non-positive annotation sizes, non-finite annotation poses; and
    sample_data filenames that leave the dataset root."""
    checks = (("ego_pose", "translation", 3, False), ("ego_pose", "rotation", 4, False),
              ("sample_annotation", "translation", 3, False), ("sample_annotation", "rotation", 4, False),
              ("sample_annotation", "size", 3, True))
    for table, key, n, positive in checks:
        rows = getattr(nusc, table)
        try:
            values = np.array([r[key] for r in rows], dtype=np.float64).reshape(len(rows), n)
            good = np.isfinite(values).all(axis=1) & ((values > 0).all(axis=1) if positive else True)
        except (KeyError, TypeError, ValueError):
            good, values = None, None
        if good is None or not good.all():
            i = 0 if good is None else int(np.argmin(good))
            bad = rows[i].get(key) if isinstance(rows[i], dict) else rows[i]
            want = "3 finite sizes > 0 (w, l, h in metres)" if positive else f"{n} finite numbers"
            raise DatasetError(f"{folder / (table + '.json')}: token {rows[i].get('token', '?')}: field '{key}' is "
                               f"{str(bad)[:120]}, expected {want}; fix or drop the record and re-copy the table")
    for r in nusc.sample_data:
        name = r.get("filename", "")
        if not isinstance(name, str) or name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/"):
            raise DatasetError(f"{folder / 'sample_data.json'}: token {r.get('token', '?')}: filename {str(name)[:120]!r} "
                               "leaves the dataset root; filenames are relative to the root, without '..'")
