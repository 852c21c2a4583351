"""benchmarks/bench_temporal.py: replay scored on the key frames it emits (camera rate and key frames only), and
the issue-22 target rows computed from the results."""
import json

import pytest

from benchmarks.bench_temporal import _targets, replay_keyframe_scores


@pytest.mark.slow  # two replays of a scene through a network, the devkit twice
def test_replay_is_scored_on_its_key_frames(synth_sweeps, tmp_path):
    from perception.train.checkpoint import save_checkpoint
    from small_model import small_config, small_net

    cfg = small_config("model.temporal.enabled=true")
    save_checkpoint(tmp_path / "t.pt", small_net(cfg), cfg)
    splits = json.loads((synth_sweeps / "v1.0-synth" / "splits.json").read_text())
    split = next(k for k, v in splits.items() if v)
    kf = replay_keyframe_scores(str(tmp_path / "t.pt"), str(synth_sweeps), "v1.0-synth", split, tmp_path / "kf", True)
    assert kf["key_frames"] == kf["key_frames_emitted"] == kf["frames_emitted"] == 3
    assert kf["temporal_state"] == {"warm": 2, "resets": {"stream_start": 1}}
    full = replay_keyframe_scores(str(tmp_path / "t.pt"), str(synth_sweeps), "v1.0-synth", split, tmp_path / "f",
                                  False)
    assert full["key_frames_emitted"] == 3 and full["frames_emitted"] >= 10
    assert 0.0 <= full["nd_score"] <= 1.0 and (tmp_path / "f" / "devkit" / "metrics_summary.json").exists()


def test_target_rows():
    tp = {"vel_err": 1.0}
    single = {"nd_score": 0.40, "tp_errors": tp, "cold_start": {"first_frames": {"nd_score": 0.30}}}
    temporal = {"nd_score": 0.43, "tp_errors": {"vel_err": 0.8}, "car_minADE_1": 1.3, "cv_minADE_1": 1.2,
                "car_minADE_6": 0.8, "cv_minADE_6": 1.2, "cold_start": {"first_frames": {"nd_score": 0.26}}}
    rows = {r[0]: r[3] for r in _targets(single, temporal, {"nd_score": 0.42})}
    assert rows["mAVE temporal / single"] == "met" and rows["NDS temporal - single"] == "met"
    assert rows["car minADE1 temporal / CV"] == "**missed**" and rows["car minADE6 temporal / CV"] == "met"
    assert rows["cold-start NDS temporal - single (scene first frames)"] == "**missed**"
    assert rows["replay (camera rate) NDS - offline, key frames"] == "met"
    rows = {r[0]: r[3] for r in _targets(single, temporal, None, {"nds_drop": 0.011})}
    assert rows["INT8 Q/DQ NDS drop (ONNX Runtime, FP32 - INT8)"] == "**missed**"
    assert "replay (camera rate) NDS - offline, key frames" not in rows
    rows = {r[0]: r[3] for r in _targets(single, temporal, None, {"nds_drop": -0.002})}
    assert rows["INT8 Q/DQ NDS drop (ONNX Runtime, FP32 - INT8)"] == "met"


@pytest.mark.slow  # an export with INT8 calibration and two ONNX Runtime evaluations
def test_int8_drop_scores_both_graphs_of_a_temporal_model(synth_sweeps, tmp_path):
    from benchmarks.bench_temporal import int8_drop
    from perception.train.checkpoint import save_checkpoint
    from small_model import small_config, small_net

    cfg = small_config("model.temporal.enabled=true")
    save_checkpoint(tmp_path / "t.pt", small_net(cfg), cfg)
    splits = json.loads((synth_sweeps / "v1.0-synth" / "splits.json").read_text())
    split = next(k for k, v in splits.items() if v)
    r = int8_drop(str(tmp_path / "t.pt"), str(synth_sweeps), "v1.0-synth", split, tmp_path / "i8", calib_frames=2,
                  calib_split=split)
    assert (tmp_path / "i8" / "onnx" / "model_int8.onnx").exists()
    for p in ("fp32", "int8"):
        s = json.loads((tmp_path / "i8" / f"test_{p}" / "summary.json").read_text())
        assert r[p]["nd_score"] == s["nd_score"] and 0.0 <= s["nd_score"] <= 1.0
    assert r["nds_drop"] == pytest.approx(r["fp32"]["nd_score"] - r["int8"]["nd_score"])
