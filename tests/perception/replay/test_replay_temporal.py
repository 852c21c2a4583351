"""Replay with a temporal model: the state is carried causally; restricted to the key frames, replay gives the
detections of the offline path (Pipeline.infer over the same frames in time order) frame by frame; at camera rate
the previous state is the frame nearest to the target gap; report.json counts the cold starts with reasons."""
import numpy as np
import pytest

from perception.pipeline import Pipeline
from perception.replay.readers import NuScenesSceneReader
from perception.replay.run import replay
from perception.replay.writers import MemoryWriter

pytestmark = pytest.mark.slow  # replays a scene through a network
VERSION = "v1.0-synth"


@pytest.fixture(scope="module")
def temporal_ckpt(tmp_path_factory):
    from perception.train.checkpoint import save_checkpoint
    from small_model import small_config, small_net

    cfg = small_config("model.temporal.enabled=true")
    path = tmp_path_factory.mktemp("temporal_ckpt") / "t.pt"
    save_checkpoint(path, small_net(cfg), cfg)
    return path


@pytest.fixture(scope="module")
def scene_name(synth_sweeps):
    from nuscenes.nuscenes import NuScenes

    return NuScenes(VERSION, str(synth_sweeps), verbose=False).scene[0]["name"]


def test_key_frame_replay_equals_the_offline_path_frame_by_frame(synth_sweeps, scene_name, temporal_ckpt, tmp_path):
    pipe = Pipeline.from_checkpoint(temporal_ckpt, score_threshold=0.0)
    writer = MemoryWriter()
    reader = NuScenesSceneReader(synth_sweeps, VERSION, scene_name, keyframe_cameras=True)
    report = replay(reader, pipe, tmp_path, writer=writer, progress=False, name=scene_name)
    assert report["frames"]["emitted"] == len(writer.frames) == 3  # one frame per key frame, nothing dropped
    assert report["temporal"]["warm"] == 2 and report["temporal"]["resets"] == {"stream_start": 1}
    assert 0.45 < report["temporal"]["gap_s"]["min"] <= report["temporal"]["gap_s"]["max"] < 0.55
    offline = Pipeline.from_checkpoint(temporal_ckpt, score_threshold=0.0)
    cold = Pipeline.from_checkpoint(temporal_ckpt, score_threshold=0.0)
    for k, (frame, det) in enumerate(zip(writer.frames, writer.dets)):
        assert frame.scene_token == scene_name
        ref = offline.infer(frame)
        np.testing.assert_allclose(det.scores, ref.scores, atol=1e-6)
        np.testing.assert_allclose(det.boxes, ref.boxes, atol=1e-5)
        assert det.temporal == ref.temporal and det.temporal["warm"] == (k > 0)
        cold.reset_streams()
        if k > 0:  # the state matters: the same frame without history gives other scores
            assert np.abs(cold.infer(frame).scores - det.scores).max() > 1e-5


def test_camera_rate_replay_takes_the_state_nearest_to_the_target_gap(synth_sweeps, scene_name, temporal_ckpt,
                                                                      tmp_path):
    pipe = Pipeline.from_checkpoint(temporal_ckpt, score_threshold=0.0)
    writer = MemoryWriter()
    report = replay(NuScenesSceneReader(synth_sweeps, VERSION, scene_name), pipe, tmp_path, writer=writer,
                    progress=False, name=scene_name)
    n = report["frames"]["emitted"]
    t = report["temporal"]
    assert n >= 10 and t["warm"] + sum(t["resets"].values()) == n
    assert t["resets"]["stream_start"] == 1 and t["resets"].get("no_state_near_gap", 0) >= 2  # the first ~0.25 s
    assert set(t["resets"]) <= set(t["reasons"]) | {"stream_start"} and t["reasons"]
    period = np.median(np.diff([f.t0 for f in writer.frames])) / 1e6
    assert 0.05 < period < 0.12  # camera rate, not key frames
    assert abs(t["gap_s"]["p50"] - 0.5) <= period / 2 + 1e-3
