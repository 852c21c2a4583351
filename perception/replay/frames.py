"""A player's FrameJob -> a Frame through ``perception.data.assemble.assemble_frame``, the assembler of the dataset
path (``perception.data.nuscenes``): only the inputs differ (messages chosen by the causal player, not files)."""
from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from typing import Any

import numpy as np

from calibration.rig import Camera
from perception.config import Config
from perception.data.assemble import CameraShot, assemble_frame
from perception.data.frame import Frame
from perception.data.radar import SweepRef
from perception.replay.messages import CameraImage, decoded_from_full
from perception.replay.player import FrameJob


def build_frame(job: FrameJob, cfg: Config, camera_order: tuple[str, ...], radar_order: tuple[str, ...],
                stereo_pairs: np.ndarray, name: str = "replay", gt: Any = None) -> Frame:
    """The Frame of ``job`` for a network with ``camera_order`` / ``radar_order`` (the radar index order is the
    Frame's ``sensor`` field) and ``stereo_pairs`` (S, 2); ``sample_token`` is ``"{name}:{t0}"``, ``scene_token``
    ``name`` (one drive: a temporal network keeps its state across the frames). ``gt``: the
    source's annotations (``perception.data.nuscenes.SceneGT``, the reader's ``gt``): the Frame's gt_* fields at
    t0 (for the MCAP and the previews; the network never sees them); None: no GT."""
    shots = []
    for ch in camera_order:
        m = job.cameras.get(ch)
        cam = job.camera_calib.get(ch)
        if m is not None:
            cam = decoded_camera(cam, m.payload)
        shots.append(CameraShot(ch, cam, m.payload.rgb if m is not None else None,
                                m.stamp_us if m is not None else None))
    index = {ch: k for k, ch in enumerate(radar_order)}
    sweeps = [SweepRef(job.radar_calib[m.channel], index[m.channel], f"{m.topic}@{m.stamp_us}", m.stamp_us, m.payload)
              for m in job.radars if m.channel in job.radar_calib]
    targets = gt.at(job.t0, job.poses.at(job.t0), list(cfg.classes), cfg.data.future_steps) if gt else None
    return assemble_frame(cfg.data, job.t0, job.poses, shots, sweeps, token=f"{name}:{job.t0}",
                          stereo_pairs=stereo_pairs, targets=targets, scene=name)


def decoded_camera(cam: Camera | None, image: CameraImage) -> Camera | None:
    """The calibration of the pixels actually decoded: for a reduced (DCT-scaled) decode, the same camera with
    K' = A K and the decoded size, A mapping full-image pixels to decoded ones (``CameraImage.decoded_from_full``).
    Lens distortion acts on normalised coordinates, so the same coefficients undistort the reduced image exactly,
    and the projection (``img_from_ego``) lands in the decoded pixels: the Frame is assembled from them directly."""
    if cam is None or image.reduction == 1:
        return cam
    h, w = image.rgb.shape[:2]
    return _reduced(cam, image.reduction, int(w), int(h))


@lru_cache(maxsize=64)
def _reduced(cam: Camera, reduction: int, w: int, h: int) -> Camera:
    """Built once per (camera, decode size): the player reuses one Camera object per calibration (Camera hashes
    by identity), and a Camera validates its pose on construction (issue 25: per-frame rebuilds cost ~5 ms)."""
    return replace(cam, width=w, height=h, intrinsics=decoded_from_full(reduction) @ cam.intrinsics)
