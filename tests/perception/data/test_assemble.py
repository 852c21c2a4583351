"""The one Frame assembler: the dataset path and the replay path give the same Frame for the same key frame; the one
radar sweep selection; a Frame from raw files (the one-frame inference route)."""
from pathlib import Path

import numpy as np
import pytest

from calibration.io import load_rig
from calibration.sync import PoseStream
from perception.config import load_config
from perception.data.assemble import CameraShot, assemble_frame, still_poses, stereo_indices
from perception.data.nuscenes import NuScenesFrames
from perception.data.radar import SweepRef, select_sweeps
from perception.data.synthetic.generate import VERSION
from perception.replay.player import FrameJob, Player, PlayerConfig
from perception.replay.frames import build_frame
from perception.replay.readers import NuScenesSceneReader

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def cfg():
    return load_config(REPO / "configs" / "synthetic_tiny.yaml")


def test_select_sweeps_window_order_and_ties():
    t0 = 1_000_000
    stamps = [t0 - 600_000, t0 - 80_000, t0 + 40_000, t0 - 40_000, t0 + 60_000, t0 - 10_000, t0]
    # window 500 ms back, 50 ms ahead: the -600 ms and +60 ms sweeps are outside
    assert select_sweeps(stamps, t0, 500_000, 50_000, 10) == [6, 5, 2, 3, 1]  # +-40 ms tie: the newer first
    assert select_sweeps(stamps, t0, 500_000, 50_000, 2) == [6, 5]
    assert select_sweeps(stamps, t0, 500_000, 0, 10) == [6, 5, 3, 1]  # causal: nothing after t0
    assert select_sweeps([], t0, 500_000, 50_000, 6) == []


def test_dataset_and_replay_paths_give_the_same_frame(cfg, synth_sweeps):
    """A key frame assembled from the tables (NuScenesFrames: files through the devkit, sweeps walked along
    sample_data prev/next) equals the same key frame assembled from the replayed message stream (decoded
    messages, calibration from /tf_static + CameraInfo, poses from /tf, sweeps chosen among all messages)."""
    splits = __import__("json").loads((synth_sweeps / VERSION / "splits.json").read_text())
    ds = NuScenesFrames(cfg, synth_sweeps, VERSION, "synth_val" if splits["synth_val"] else "synth_train")
    index = 1  # the middle key frame: sweeps on both sides of t0
    want = ds.load(index)
    sample = ds.nusc.get("sample", ds.samples[index].token)
    key_stamps = {ds.nusc.get("sample_data", tok)["channel"]: ds.nusc.get("sample_data", tok)["timestamp"]
                  for tok in sample["data"].values()}

    reader = NuScenesSceneReader(synth_sweeps, VERSION, ds.samples[index].scene, nusc=ds.nusc)
    tmap = reader.topic_map
    radar_order = tuple(sorted(tmap.radars))
    cameras = tuple(str(c) for c in want.camera_channels)
    player = Player(PlayerConfig("CAM_FRONT", cameras, radar_order), tmap)
    images, sweeps = {}, {ch: [] for ch in radar_order}
    for m in reader:
        if m.kind in ("tf_static", "camera_info", "tf"):
            player.push(m)  # calibration and poses only: the frame's data are chosen below
        elif m.kind == "camera" and m.stamp_us == key_stamps.get(m.channel):
            images[m.channel] = m
        elif m.kind == "radar":
            sweeps[m.channel].append(m)
    r = cfg.data.radar
    chosen = []
    for ch in radar_order:
        msgs = sweeps[ch]
        chosen += [msgs[k] for k in select_sweeps([m.stamp_us for m in msgs], want.t0, int(r.window_ms * 1000),
                                                  int(r.future_tolerance_ms * 1000), r.sweeps)]
    ts = np.array(sorted(player.poses), np.int64)
    poses = PoseStream(ts, np.stack([player.poses[t] for t in ts]), int(cfg.data.sync.max_extrapolation_ms * 1000))
    job = FrameJob(0, want.t0, want.t0, images["CAM_FRONT"], images, chosen, poses,
                   {ch: player.camera(ch)[0] for ch in cameras}, {ch: player.radar(ch)[0] for ch in radar_order})
    got = build_frame(job, cfg, cameras, radar_order, want.stereo_pairs)

    assert not want.issues and not got.issues, (want.issues, got.issues)
    assert len(chosen) == 5 * r.sweeps
    np.testing.assert_array_equal(got.camera_channels, want.camera_channels)
    np.testing.assert_array_equal(got.camera_valid, want.camera_valid)
    np.testing.assert_array_equal(got.camera_time, want.camera_time)
    np.testing.assert_array_equal(got.images, want.images)
    np.testing.assert_allclose(got.img_from_ego, want.img_from_ego, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(got.global_from_ego, want.global_from_ego, atol=1e-9)
    np.testing.assert_array_equal(got.radar_valid, want.radar_valid)
    np.testing.assert_allclose(got.radar_points, want.radar_points, atol=1e-4)


def test_frame_from_raw_files_equals_the_dataset_frame(cfg, synth_sweeps):
    """The one-frame inference route: the rig, image files and radar files given by hand, sync off and an ego
    standing still, gives the dataset's Frame of the same key frame with sync off."""
    from dataclasses import replace

    cfg = replace(cfg, data=replace(cfg.data, sync=replace(cfg.data.sync, enabled=False),
                                    radar=replace(cfg.data.radar, sweeps=1)))
    ds = NuScenesFrames(cfg, synth_sweeps, VERSION, "synth_train")
    want = ds.load(0)
    sample = ds.nusc.get("sample", ds.samples[0].token)
    sd = {ds.nusc.get("sample_data", t)["channel"]: ds.nusc.get("sample_data", t) for t in sample["data"].values()}
    rig = load_rig(synth_sweeps / VERSION / "rig.yaml")
    shots = [CameraShot(ch, rig.cameras[ch], synth_sweeps / sd[ch]["filename"], sd[ch]["timestamp"])
             for ch in want.camera_channels]
    radars = sorted(rig.radars)
    r = cfg.data.radar
    sweeps = []
    for i, ch in enumerate(radars):  # each radar's closest file in the window, among all of the scene's files
        rows = [row for row in ds.nusc.sample_data if row["channel"] == ch]
        (k,) = select_sweeps([row["timestamp"] for row in rows], want.t0, int(r.window_ms * 1000),
                             int(r.future_tolerance_ms * 1000), 1)
        sweeps.append(SweepRef(rig.radars[ch], i, synth_sweeps / rows[k]["filename"], rows[k]["timestamp"]))
    got = assemble_frame(cfg.data, want.t0, still_poses(want.global_from_ego), shots, sweeps,
                         stereo_pairs=stereo_indices(rig.stereo_pairs, list(want.camera_channels)))
    np.testing.assert_array_equal(got.images, want.images)
    np.testing.assert_allclose(got.img_from_ego, want.img_from_ego, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(got.radar_points, want.radar_points, atol=1e-4)
    np.testing.assert_array_equal(got.radar_valid, want.radar_valid)
    # an unreadable file masks its camera and says which file
    shots[1] = CameraShot(shots[1].channel, shots[1].camera, synth_sweeps / "no_such.jpg", shots[1].timestamp)
    bad = assemble_frame(cfg.data, want.t0, still_poses(), shots, sweeps)
    assert not bad.camera_valid[1] and bad.camera_valid[[0, 2]].all() and not bad.images[1].any()
    assert any("no_such.jpg" in i and f"camera {shots[1].channel} masked" in i for i in bad.issues)
