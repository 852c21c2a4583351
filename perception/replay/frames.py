"""A player's FrameJob -> a Frame through ``perception.data.assemble.assemble_frame``, the assembler of the dataset
path (``perception.data.nuscenes``): only the inputs differ (messages chosen by the causal player, not files)."""
from __future__ import annotations

import numpy as np

from perception.config import Config
from perception.data.assemble import CameraShot, assemble_frame
from perception.data.frame import Frame
from perception.data.radar import SweepRef
from perception.replay.player import FrameJob


def build_frame(job: FrameJob, cfg: Config, camera_order: tuple[str, ...], radar_order: tuple[str, ...],
                stereo_pairs: np.ndarray, name: str = "replay") -> Frame:
    """The Frame of ``job`` for a network with ``camera_order`` / ``radar_order`` (the radar index order is the
    Frame's ``sensor`` field) and ``stereo_pairs`` (S, 2); ``sample_token`` is ``"{name}:{t0}"``."""
    shots = []
    for ch in camera_order:
        m = job.cameras.get(ch)
        shots.append(CameraShot(ch, job.camera_calib.get(ch), m.payload.rgb if m is not None else None,
                                m.stamp_us if m is not None else None))
    index = {ch: k for k, ch in enumerate(radar_order)}
    sweeps = [SweepRef(job.radar_calib[m.channel], index[m.channel], f"{m.topic}@{m.stamp_us}", m.stamp_us, m.payload)
              for m in job.radars if m.channel in job.radar_calib]
    return assemble_frame(cfg.data, job.t0, job.poses, shots, sweeps, token=f"{name}:{job.t0}",
                          stereo_pairs=stereo_pairs)
