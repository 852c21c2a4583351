"""The one Frame assembler: camera images, radar sweeps and ego poses around ``t0`` -> a ``Frame``.

Every producer of Frames goes through ``assemble_frame``: the nuScenes dataset (``data/nuscenes.py``, files found
through the devkit's tables), replay (``replay/frames.py``, messages chosen by the causal player), the mmdet3d
info adapter (``integrations/mmdet3d/infos.py``) and one-frame inference from raw files. The producers only
*choose* the inputs (which image per camera, which sweeps -- ``perception.data.radar.select_sweeps`` --, which
poses, which ``t0``); the assembler does everything after that, once:

1. per camera: ``img_from_ego`` at ``t0`` through the ego motion to the capture time (``calibration.sync``),
   unless the producer gives it; undistortion; resize/crop (+ augmentation) with ``img_from_ego`` updated;
2. radar: the sweeps read, filtered, carried into ego@t0 and truncated/padded to ``P_max``
   (``perception.data.radar.accumulate``);
3. training only: the BEV augmentation and the modality dropout of ``data.augment`` / ``data.dropout``.

Bad inputs mask a sensor and are recorded in ``Frame.issues``; they never stop the frame.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibration.rig import Camera, StereoPair
from calibration.sync import PoseStream, SyncError, camera_img_from_ego
from perception.config import DataConfig
from perception.data.frame import Frame
from perception.data.io import RadarFilter, SensorFileError, read_image
from perception.data.lidar import LidarShot, lidar_to_ego
from perception.data.radar import SweepRef, accumulate
from perception.data.transforms import (
    ImageAug,
    apply_bev,
    modality_dropout,
    preprocess_image,
    random_bev,
    random_image_aug,
    undistort,
)

# an ego standing still: one pose that holds at every time (one-frame inference without a pose stream)
_STILL_US = 1 << 62


@dataclass(frozen=True)
class CameraShot:
    """One camera's input to a frame.

    channel: the camera's name (``Frame.camera_channels``).
    camera: its calibration (``calibration.rig.Camera``: K, image size, distortion, ``ego_from_camera``); ``None``
        when it is unknown (replay before calibration arrived): the camera is masked, identity projection.
    image: the raw capture, (H0, W0, 3) uint8 RGB at the calibration's size, distorted as captured; or a path to an
        image file (read here; an unreadable file masks the camera); or ``None`` (missing: masked, zeros).
    timestamp: capture time, µs (``None``: ``t0``).
    img_from_ego: (4, 4) pixels of the raw image <- ego@t0, when the producer already knows it (mmdet3d infos carry
        ``lidar2cam`` with the ego motion folded in); ``None``: computed from ``camera`` and the poses.
    """

    channel: str
    camera: Camera | None
    image: np.ndarray | str | Path | None
    timestamp: int | None = None
    img_from_ego: np.ndarray | None = None


def still_poses(global_from_ego: np.ndarray | None = None) -> PoseStream:
    """A pose stream of an ego standing still at ``global_from_ego`` (default identity): for one frame from raw
    files without ego poses (every sensor time maps to the same pose, so no motion compensation happens)."""
    m = np.eye(4) if global_from_ego is None else np.asarray(global_from_ego, np.float64)
    return PoseStream(np.zeros(1, np.int64), m[None], _STILL_US)


def stereo_indices(pairs: Iterable[StereoPair], channels: Sequence[str]) -> np.ndarray:
    """(S, 2) int64 (left, right) indices into ``channels`` of the pairs whose two cameras are both present."""
    order = list(channels)
    return np.array([[order.index(p.left), order.index(p.right)] for p in pairs
                     if p.left in order and p.right in order], np.int64).reshape(-1, 2)


def assemble_frame(data: DataConfig, t0: int, poses: PoseStream, cameras: Sequence[CameraShot],
                   sweeps: Sequence[SweepRef] = (), *, token: str = "", stereo_pairs: np.ndarray | None = None,
                   targets: Mapping[str, np.ndarray] | None = None, issues: Sequence[str] = (),
                   train: bool = False, rng: np.random.Generator | None = None,
                   lidar: LidarShot | None = None, scene: str = "", bev_aug: np.ndarray | None = None) -> Frame:
    """Build the Frame of reference time ``t0`` (µs) from chosen sensor inputs.

    data: ``cfg.data`` (network image size, radar fields / filter / ``max_points``, ``sync.enabled``, and for
        ``train`` the augmentation and dropout).
    poses: ego poses (global <- ego) covering ``t0`` and every capture time (``still_poses()`` when there are none).
    cameras: one ``CameraShot`` per camera, in the Frame's camera order.
    sweeps: the radar sweeps to accumulate (files or in-memory records, ``SweepRef``), any order; the radars'
        ``index`` is the Frame's ``sensor`` field. Empty: no radar (all points masked).
    token: ``Frame.sample_token``. stereo_pairs: (S, 2) camera indices (``stereo_indices``); default none.
    targets: the Frame's ground-truth fields by name (``gt_boxes``, ``gt_labels``, ...), already in ego@t0.
    issues: the producer's own findings, kept first in ``Frame.issues``.
    train: apply ``data.augment`` (image scale/crop/flip per camera, then BEV rotation/scale/flip when enabled)
        and ``data.dropout``, drawn from ``rng`` in that order (per camera, BEV, dropout).
    lidar: the key frame's lidar sweep (training targets and the depth metric only; the network never takes it),
        carried into ``Frame.lidar_points`` in ego@t0 (and moved by the BEV augmentation with everything else).
        ``None``: no lidar (empty ``lidar_points``).
    scene: ``Frame.scene_token`` (the scene or drive; temporal networks reset their state when it changes).
    bev_aug: with ``train``, this (4, 4) augmented_from_ego BEV augmentation instead of a random one (the previous
        frame of a training clip takes its current frame's, ``NuScenesFrames.load_clip``); the draw still happens,
        so the random stream is the same either way.

    One-frame inference from raw files (no poses, sync off or a still ego)::

        rig = load_rig("rig.yaml")
        shots = [CameraShot(ch, cam, f"{ch}.jpg") for ch, cam in rig.cameras.items()]
        sweeps = [SweepRef(r, i, f"{ch}.pcd", t0) for i, (ch, r) in enumerate(sorted(rig.radars.items()))]
        frame = assemble_frame(cfg.data, t0, still_poses(), shots, sweeps,
                               stereo_pairs=stereo_indices(rig.stereo_pairs, list(rig.cameras)))
    """
    t0 = int(t0)
    if train and rng is None:
        raise ValueError("assemble_frame(train=True) needs an rng (augmentation and dropout are random)")
    sync = data.sync.enabled
    h, w = data.image_size
    n = len(cameras)
    out_issues = list(issues)
    images = np.zeros((n, h, w, 3), np.uint8)
    img_from_ego = np.zeros((n, 4, 4), np.float32)
    valid = np.zeros(n, bool)
    times = np.full(n, t0, np.int64)
    aug_cfg = data.augment
    for i, shot in enumerate(cameras):
        cam, ch = shot.camera, shot.channel
        t_cap = t0 if shot.timestamp is None else int(shot.timestamp)
        times[i] = t_cap
        if cam is None:
            img_from_ego[i] = np.eye(4)
            out_issues.append(f"camera {ch}: no calibration; masked")
            continue
        raw, mat = shot.image, shot.img_from_ego
        if mat is None:
            try:
                mat, _ = camera_img_from_ego(cam, t0, t_cap, poses, enabled=sync)
            except SyncError as err:
                mat, raw = cam.img_from_ego, None
                out_issues.append(f"{err}; camera {ch} masked")
        aug = ImageAug()
        if train and aug_cfg.enabled:
            aug = random_image_aug(rng, (cam.height, cam.width), (h, w), aug_cfg.image_scale,
                                   aug_cfg.image_crop_jitter, aug_cfg.image_flip, aug_cfg.image_rotate_deg)
        if raw is not None:
            try:
                raw = _checked_image(raw, cam)
            except SensorFileError as err:
                out_issues.append(f"{err.path}: {err.problem}; camera {ch} masked")
                raw = None
        if raw is not None:
            raw = undistort(raw, cam)
        valid[i] = raw is not None
        images[i], img_from_ego[i] = preprocess_image(
            raw if raw is not None else np.zeros((cam.height, cam.width, 3), np.uint8), mat, (h, w), aug)
    rcfg = data.radar
    f = rcfg.filter
    try:
        pts, r_valid, r_issues = accumulate(list(sweeps), t0, poses, RadarFilter(f.dyn_prop, f.invalid_state,
                                            f.ambig_state), rcfg.fields, rcfg.max_points, sync)
    except SyncError as err:
        pts, r_valid = np.zeros((rcfg.max_points, len(rcfg.fields)), np.float32), np.zeros(rcfg.max_points, bool)
        r_issues = [f"{err}; radar masked"]
    out_issues += r_issues
    lidar_pts = np.zeros((0, 3), np.float32)
    if lidar is not None:
        lidar_pts, l_issues = lidar_to_ego(lidar, t0, poses, sync)
        out_issues += l_issues
    stereo = np.zeros((0, 2), np.int64) if stereo_pairs is None else np.asarray(stereo_pairs, np.int64).reshape(-1, 2)
    frame = Frame(token, t0, poses.at(t0), images, img_from_ego, np.array([s.channel for s in cameras]), valid,
                  times, pts, np.array(rcfg.fields), r_valid, stereo, **dict(targets or {}), lidar_points=lidar_pts,
                  scene_token=scene, issues=out_issues)
    if train:
        if aug_cfg.enabled:
            drawn = random_bev(rng, aug_cfg.bev_rotate_deg, aug_cfg.bev_scale, aug_cfg.bev_flip)
            frame = apply_bev(frame, drawn if bev_aug is None else bev_aug)
        elif bev_aug is not None:
            frame = apply_bev(frame, bev_aug)
        d = data.dropout
        frame = modality_dropout(frame, rng, d.camera_one, d.camera_all, d.radar_one, d.radar_all)
    return frame


def _checked_image(image: np.ndarray | str | Path, cam: Camera) -> np.ndarray:
    """The raw image as an array at the calibration's size (read from a file when given a path)."""
    path = "(image)"
    if isinstance(image, (str, Path)):
        path = Path(image)
        image = read_image(path)
    if image.shape[:2] != (cam.height, cam.width):
        raise SensorFileError(path, f"image is {image.shape[1]}x{image.shape[0]} but the calibration of {cam.name} "
                                    f"says {cam.width}x{cam.height}")
    return image
