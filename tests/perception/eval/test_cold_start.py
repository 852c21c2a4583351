"""perception-test with a temporal model: scenes in time order with the state threaded, sharded by scene, and the
devkit's metrics on each scene's first frame (cold start) apart from the later frames."""
import json

import pytest

from perception.data.synthetic.generate import VERSION
from perception.eval.benchmark import first_frames, shard_indices

SCENES = ["a"] * 3 + ["b"] * 2 + ["c"] * 4


def test_sharding_by_scene_keeps_each_scene_whole_and_in_order():
    parts = [shard_indices(SCENES, r, 2, by_scene=True) for r in range(2)]
    assert parts == [[0, 1, 2, 5, 6, 7, 8], [3, 4]]
    assert shard_indices(SCENES, 1, 2, by_scene=False) == [1, 3, 5, 7]
    assert sorted(parts[0] + parts[1]) == list(range(len(SCENES)))


def test_first_frames_are_each_scenes_first():
    assert first_frames(SCENES) == [True, False, False, True, False, True, False, False, False]


@pytest.mark.slow
def test_perception_test_threads_the_state_and_reports_cold_start(synth_root, tmp_path, capsys):
    from perception.cli.test import main
    from perception.train.checkpoint import save_checkpoint
    from small_model import small_config, small_net

    cfg = small_config("model.temporal.enabled=true")
    save_checkpoint(tmp_path / "t.pt", small_net(cfg), cfg)
    out = tmp_path / "eval"
    assert main(["--checkpoint", str(tmp_path / "t.pt"), "--dataroot", str(synth_root), "--version", VERSION,
                 "--split", "synth_val", "--out", str(out), "--no-progress"]) == 0
    assert "cold start: NDS" in capsys.readouterr().out
    cold = json.loads((out / "summary.json").read_text())["cold_start"]
    assert cold["first_frames"]["samples"] == 1 and cold["later_frames"]["samples"] == 13  # synth_val: 1 scene of 14
    assert cold["temporal_state"] == {"warm": 13, "resets": {"stream_start": 1}}
    assert (out / "cold_start" / "first_frames" / "metrics_summary.json").exists()
    assert "## Cold start" in (out / "report.md").read_text()


@pytest.mark.slow
def test_no_history_makes_every_frame_a_cold_start(synth_root, small_ckpt, tmp_path, capsys):
    from perception.cli.test import main
    from perception.train.checkpoint import save_checkpoint
    from small_model import small_config, small_net

    cfg = small_config("model.temporal.enabled=true")
    save_checkpoint(tmp_path / "t.pt", small_net(cfg), cfg)
    common = ["--dataroot", str(synth_root), "--version", VERSION, "--split", "synth_val", "--no-progress"]
    results = {}
    for name, extra in (("warm", []), ("cold", ["--no-history"])):
        out = tmp_path / name
        assert main(["--checkpoint", str(tmp_path / "t.pt"), *common, "--out", str(out), *extra]) == 0
        results[name] = json.loads((out / "results_nusc.json").read_text())["results"]
        state = json.loads((out / "summary.json").read_text())["cold_start"]["temporal_state"]
        assert state == ({"warm": 13, "resets": {"stream_start": 1}} if name == "warm"
                         else {"warm": 0, "resets": {"no_history": 13, "stream_start": 1}})
    tokens = sorted(results["warm"])
    scores = {k: [sorted(b["detection_score"] for b in results[k][t]) for t in tokens] for k in results}
    same = [a == b for a, b in zip(scores["warm"], scores["cold"])]
    assert len(same) == 14 and sum(same) == 1  # only the scene's first frame (cold in both runs) is the same
    capsys.readouterr()
    # a single-frame network has no state: a clear error, not a silent no-op
    rc = main(["--checkpoint", str(small_ckpt), *common, "--out", str(tmp_path / "single"), "--no-history"])
    assert rc != 0 and "--no-history needs a temporal network" in capsys.readouterr().err
