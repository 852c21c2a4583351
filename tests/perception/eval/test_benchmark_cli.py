"""perception-test end to end on a small generated dataset: files, devkit-readable results, the oracle's NDS,
robustness knobs, sharded == single process."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from perception.cli.test import main
from perception.data.synthetic.generate import VERSION

pytestmark = pytest.mark.slow  # perception-test end to end in subprocesses, sharded

REPO = Path(__file__).resolve().parents[3]


def _args(root, out, *extra):
    return ["--dataroot", str(root), "--version", VERSION, "--split", "synth_val", "--out", str(out),
            "--no-progress", *extra]


def test_oracle_scores_one_and_writes_everything(synth_root, tmp_path, capsys):
    out = tmp_path / "oracle"
    assert main(["--oracle", "gt", "--config", str(REPO / "configs" / "synthetic_tiny.yaml"), *_args(synth_root, out)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("NDS 1.000 mAP 1.000")
    # scored apart: the scene's first frame (1 sample) and the 13 later ones, the GT scoring 1 where every class
    # of the split appears (the single first frame lacks some: the devkit scores them 0)
    cold = json.loads((out / "summary.json").read_text())["cold_start"]
    assert cold["first_frames"]["samples"] == 1 and cold["later_frames"]["samples"] == 13
    assert cold["later_frames"]["nd_score"] == pytest.approx(1.0) and cold["temporal_state"] is None
    for name in ("results_nusc.json", "metrics_summary.json", "metrics_details.json", "trajectory_metrics.json",
                 "latency.json", "report.md", "pr_curves.png", "tp_errors.png", "bev_0.png"):
        assert (out / name).exists(), name
    traj = json.loads((out / "trajectory_metrics.json").read_text())
    assert traj["model"]["car"]["minADE_6"] == 0.0 and traj["model"]["car"]["EPA"] == 1.0
    assert traj["constant_velocity"]["car"]["minADE_1"] > 0.0


def test_model_results_load_in_the_devkit_and_knobs_change_them(synth_root, small_ckpt, tmp_path):
    from nuscenes.eval.common.loaders import load_prediction
    from nuscenes.eval.detection.data_classes import DetectionBox

    base = tmp_path / "base"
    assert main(["--checkpoint", str(small_ckpt), *_args(synth_root, base)]) == 0
    boxes, meta = load_prediction(str(base / "results_nusc.json"), 500, DetectionBox)
    assert len(boxes.sample_tokens) == 14 and meta["use_radar"]
    dropped = tmp_path / "dropped"
    assert main(["--checkpoint", str(small_ckpt), *_args(synth_root, dropped, "--drop-sensors",
                                                         "CAM_FRONT,RADAR_FRONT", "--calib-noise-deg", "2")]) == 0
    a = json.loads((base / "results_nusc.json").read_text())["results"]
    b = json.loads((dropped / "results_nusc.json").read_text())["results"]
    tok = next(iter(a))
    assert a[tok] != b[tok]
    assert main(["--onnx", "x", *_args(synth_root, tmp_path / "o")]) == 1


def test_device_choice():
    from perception.cli.test import _device

    assert _device("cpu") == "cpu"
    assert _device(None) == ("cuda:0" if torch.cuda.is_available() else "cpu")


def test_unknown_drop_sensor_is_an_error(synth_root, small_ckpt, tmp_path, capsys):
    assert main(["--checkpoint", str(small_ckpt), *_args(synth_root, tmp_path / "t", "--drop-sensors",
                                                         "CAM_FRONT_L", "--max-samples", "1")]) == 1
    assert "CAM_FRONT_L" in capsys.readouterr().err


def test_sharded_equals_single_process(synth_root, small_ckpt, tmp_path):
    single = tmp_path / "single"
    assert main(["--checkpoint", str(small_ckpt), *_args(synth_root, single, "--max-samples", "6")]) == 0
    sharded = tmp_path / "sharded"
    torchrun = Path(sys.executable).parent / "torchrun"
    # --standalone: a free rendezvous port (the default 29500 may be held by another job on the machine)
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "--no-python",
           str(Path(sys.executable).parent / "perception-test"),
           "--checkpoint", str(small_ckpt), *_args(synth_root, sharded, "--max-samples", "6")]
    r = subprocess.run(cmd, capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    s1 = json.loads((single / "metrics_summary.json").read_text())
    s2 = json.loads((sharded / "metrics_summary.json").read_text())
    assert round(s1["nd_score"], 4) == round(s2["nd_score"], 4) and round(s1["mean_ap"], 4) == round(s2["mean_ap"], 4)
    r1 = json.loads((single / "results_nusc.json").read_text())["results"]
    r2 = json.loads((sharded / "results_nusc.json").read_text())["results"]
    assert r1.keys() == r2.keys()


def _unannotated_copy(root: Path, dst: Path) -> Path:
    """The synthetic root as a test split looks: the same sensor data, no annotations (v1.0-test style)."""
    (dst / VERSION).mkdir(parents=True)
    for item in root.iterdir():
        if item.name != VERSION:
            (dst / item.name).symlink_to(item)
    for table in (root / VERSION).iterdir():
        if table.name in ("sample_annotation.json", "instance.json"):
            (dst / VERSION / table.name).write_text("[]")
        else:
            (dst / VERSION / table.name).symlink_to(table)
    return dst


def test_results_only_writes_a_checked_submission_for_a_split_without_annotations(synth_root, small_ckpt, tmp_path,
                                                                                   capsys):
    from nuscenes.eval.common.loaders import load_prediction
    from nuscenes.eval.detection.data_classes import DetectionBox

    from perception.data.nuscenes import NuScenesFrames
    from small_model import small_config

    root = _unannotated_copy(synth_root, tmp_path / "test_root")
    out = tmp_path / "sub"
    assert main(["--checkpoint", str(small_ckpt), *_args(root, out, "--results-only")]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "accepted by the nuScenes devkit's loader" in line and "14 samples" in line
    boxes, meta = load_prediction(str(out / "results_nusc.json"), 500, DetectionBox)
    tokens = [s.token for s in NuScenesFrames(small_config(), root, VERSION, "synth_val").samples]
    assert sorted(boxes.sample_tokens) == sorted(tokens)
    assert set(meta) == {"use_camera", "use_lidar", "use_radar", "use_map", "use_external"}
    assert sorted(p.name for p in out.iterdir()) == ["results_nusc.json"]  # no evaluation, no temporary file


def test_no_progress_silences_every_progress_bar(synth_root, tmp_path, capsys):
    """--no-progress: nothing on stderr (the devkit's GT loader drew its own bar regardless); without it the bars
    are there."""
    argv = ["--oracle", "gt", "--config", str(REPO / "configs" / "synthetic_tiny.yaml"), "--max-samples", "2"]
    assert main([*argv, *_args(synth_root, tmp_path / "quiet")]) == 0
    assert capsys.readouterr().err == ""
    noisy = [a for a in _args(synth_root, tmp_path / "noisy") if a != "--no-progress"]
    assert main([*argv, *noisy]) == 0
    err = capsys.readouterr().err
    assert "test:" in err and err.count("it/s]") + err.count("frame/s]") + err.count("s/it]") >= 2
