"""A player's FrameJob -> a Frame: the same preprocessing and radar accumulation as the dataset path
(``perception.data.nuscenes``), on messages instead of files."""
from __future__ import annotations

import numpy as np

from calibration.sync import SyncError, camera_img_from_ego
from perception.config import Config
from perception.data.frame import Frame
from perception.data.io import RadarFilter
from perception.data.radar import SweepRef, accumulate
from perception.data.transforms import preprocess_image
from perception.replay.player import FrameJob


def build_frame(job: FrameJob, cfg: Config, camera_order: tuple[str, ...], radar_order: tuple[str, ...],
                stereo_pairs: np.ndarray, name: str = "replay") -> Frame:
    from perception.data.nuscenes import _undistort

    d = cfg.data
    h, w = d.image_size
    n = len(camera_order)
    sync = d.sync.enabled
    images = np.zeros((n, h, w, 3), np.uint8)
    img_from_ego = np.zeros((n, 4, 4), np.float32)
    valid = np.zeros(n, bool)
    times = np.full(n, job.t0, np.int64)
    issues: list[str] = []
    for i, ch in enumerate(camera_order):
        cam = job.camera_calib.get(ch)
        m = job.cameras.get(ch)
        if cam is None:
            img_from_ego[i] = np.diag([1.0, 1.0, 1.0, 1.0])
            issues.append(f"camera {ch}: no calibration; masked")
            continue
        t_cap = m.stamp_us if m is not None else job.t0
        try:
            mat, _ = camera_img_from_ego(cam, job.t0, t_cap, job.poses, enabled=sync)
        except SyncError as err:
            mat, m = cam.img_from_ego, None
            issues.append(f"{err}; camera {ch} masked")
        if m is None:
            raw = np.zeros((cam.height, cam.width, 3), np.uint8)
        else:
            raw = m.payload.rgb
            if m.payload.reduction > 1:
                if cam.distortion is not None and any(cam.distortion.coeffs):
                    # the undistortion maps are for the full image: back to full size first (no saving here)
                    import cv2

                    raw = cv2.resize(raw, (cam.width, cam.height), interpolation=cv2.INTER_LINEAR)
                else:  # the decoded pixels: the network input is resized from them, the geometry follows
                    mat = m.payload.full_from_decoded() @ mat
            raw = _undistort(raw, cam)
        img, m_out = preprocess_image(raw, mat, (h, w))
        images[i] = img
        img_from_ego[i] = m_out
        valid[i] = m is not None
        times[i] = t_cap
    f = d.radar.filter
    index = {ch: k for k, ch in enumerate(radar_order)}
    sweeps = [SweepRef(job.radar_calib[m.channel], index[m.channel], f"{m.topic}@{m.stamp_us}", m.stamp_us, m.payload)
              for m in job.radars if m.channel in job.radar_calib]
    try:
        pts, r_valid, r_issues = accumulate(sweeps, job.t0, job.poses, RadarFilter(f.dyn_prop, f.invalid_state,
                                            f.ambig_state), d.radar.fields, d.radar.max_points, sync)
    except SyncError as err:
        pts, r_valid = np.zeros((d.radar.max_points, len(d.radar.fields)), np.float32), np.zeros(d.radar.max_points, bool)
        r_issues = [f"{err}; radar masked"]
    issues += r_issues
    return Frame(f"{name}:{job.t0}", job.t0, job.poses.at(job.t0), images, img_from_ego, np.array(camera_order),
                 valid, times, pts, np.array(d.radar.fields), r_valid, np.asarray(stereo_pairs, np.int64).reshape(-1, 2),
                 issues=issues)
