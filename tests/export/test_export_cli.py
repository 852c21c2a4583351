"""perception-export and the ONNX Runtime backend: the exported model serves the same Pipeline as the checkpoint."""
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from export.budget import check_budget
from export.cli import main as export_main
from perception.data.nuscenes import NuScenesFrames
from perception.data.synthetic.generate import VERSION
from perception.model.network import build_model
from perception.pipeline import Pipeline
from perception.train.checkpoint import save_checkpoint
from small_model import small_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cfg = small_config()
    torch.manual_seed(0)
    net = build_model(cfg)
    for mod in net.modules():  # non-trivial BatchNorm statistics, as after training
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    root = tmp_path_factory.mktemp("exp")
    ckpt = root / "small.pt"
    save_checkpoint(ckpt, net, cfg)
    assert export_main(["--checkpoint", str(ckpt), "--out", str(root / "onnx")]) == 0
    return ckpt, root / "onnx"


def test_files_budget_and_metadata(exported):
    _, folder = exported
    model = onnx.load(str(folder / "model.onnx"))
    counts = check_budget(model)
    assert counts["GridSample"] >= 4 and model.opset_import[0].version == 17
    meta = json.loads((folder / "model.json").read_text())
    assert meta["schema"] == "perception-model/1" and len(meta["classes"]) == 10
    assert [i["name"] for i in meta["inputs"]][:2] == ["images", "img_from_ego"]
    assert meta["inputs"][0]["shape"] == [1, 6, 3, 64, 176]


def test_onnx_pipeline_equals_checkpoint_pipeline(exported, synth_root):
    ckpt, folder = exported
    a = Pipeline.from_checkpoint(ckpt, score_threshold=0.0)
    b = Pipeline.from_onnx(folder, score_threshold=0.0)
    frames = NuScenesFrames(a.cfg, synth_root, VERSION, "synth_val")
    for i in (0, 7):
        da, db = a.infer(frames[i]), b.infer(frames[i])
        strong = da.scores > 0.05
        np.testing.assert_allclose(db.scores, da.scores, rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(db.boxes[strong][:, :6], da.boxes[strong][:, :6], rtol=1e-3, atol=1e-3)
        np.testing.assert_array_equal(db.labels[strong], da.labels[strong])


def test_recalibration_needs_no_reexport(exported, synth_root):
    """One export, two rigs: a camera moved and rotated in the calibration gives the same change in PyTorch and in
    ONNX Runtime (calibration is a run-time input)."""
    from dataclasses import replace

    ckpt, folder = exported
    a = Pipeline.from_checkpoint(ckpt, score_threshold=0.0)
    b = Pipeline.from_onnx(folder, score_threshold=0.0)
    frame = NuScenesFrames(a.cfg, synth_root, VERSION, "synth_val")[3]
    m = frame.img_from_ego.astype(np.float64).copy()
    c, s = np.cos(0.05), np.sin(0.05)
    moved = np.array([[c, -s, 0, 0.2], [s, c, 0, -0.1], [0, 0, 1, 0.05], [0, 0, 0, 1]])
    m[1] = m[1] @ moved
    frame2 = replace(frame, img_from_ego=m.astype(np.float32))
    d1, d2 = a.infer(frame2), b.infer(frame2)
    assert not np.allclose(a.infer(frame).scores, d1.scores)  # the calibration reached the network
    np.testing.assert_allclose(d2.scores, d1.scores, rtol=1e-3, atol=1e-5)


def test_perception_test_onnx_equals_checkpoint(exported, synth_root, tmp_path):
    from perception.cli.test import main

    ckpt, folder = exported
    common = ["--dataroot", str(synth_root), "--version", VERSION, "--split", "synth_val", "--no-progress"]
    assert main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "a"), *common]) == 0
    assert main(["--onnx", str(folder), "--out", str(tmp_path / "b"), *common]) == 0
    sa = json.loads((tmp_path / "a" / "metrics_summary.json").read_text())
    sb = json.loads((tmp_path / "b" / "metrics_summary.json").read_text())
    assert abs(sa["nd_score"] - sb["nd_score"]) <= 0.001


def test_wrong_camera_count_is_a_clear_error(exported):
    from perception.runtime.onnxruntime import OnnxRunner, RuntimeConfigError

    _, folder = exported
    runner = OnnxRunner(folder)
    arrays = {i["name"]: np.zeros(i["shape"], i["dtype"]) for i in runner.meta["inputs"]}
    arrays["images"] = np.zeros((1, 5, 3, 64, 176), np.uint8)
    with pytest.raises(RuntimeConfigError, match="camera count, image size and batch are fixed at export"):
        runner.infer(arrays)


def test_int8_qdq_graph_runs_in_onnxruntime(exported, synth_root, tmp_path):
    """The explicit Q/DQ graph stays inside the budget and runs in ONNX Runtime; its detections stay close to FP32
    (accuracy on the trained checkpoint is in docs/BENCHMARKS.md)."""
    import shutil

    from export.quantize import quantize_int8

    ckpt, folder = exported
    q = tmp_path / "q"
    shutil.copytree(folder, q)
    fp32 = Pipeline.from_onnx(q, score_threshold=0.0)
    frames = NuScenesFrames(fp32.cfg, synth_root, VERSION, "synth_train")
    path = quantize_int8(q, frames, calib_frames=4)
    counts = check_budget(onnx.load(str(path)))
    assert counts["QuantizeLinear"] > 10 and counts["DequantizeLinear"] > 10
    int8 = Pipeline.from_onnx(q, score_threshold=0.0, model_file="model_int8.onnx")
    val = NuScenesFrames(fp32.cfg, synth_root, VERSION, "synth_val")[2]
    a, b = fp32.infer(val), int8.infer(val)
    assert np.isfinite(b.boxes).all() and np.isfinite(b.scores).all()
    # untrained weights: scores sit near the focal-loss prior, so compare absolute error, not ranking
    assert np.abs(np.sort(a.scores) - np.sort(b.scores)).max() < 0.05


def test_onnx_inference_path_imports_no_torch(exported, synth_root, tmp_path):
    """What runs on a Jetson (Pipeline.from_onnx + infer, also the TensorRT path's pre/post-processing) must work
    where torch is not installed: a fresh interpreter runs it and torch is never imported."""
    import subprocess
    import sys

    _, folder = exported
    cfg = Pipeline.from_onnx(folder).cfg
    NuScenesFrames(cfg, synth_root, VERSION, "synth_val")[0].save_npz(tmp_path / "f.npz")
    code = ("import sys\nfrom perception.pipeline import Pipeline\nfrom perception.data.frame import Frame\n"
            f"d = Pipeline.from_onnx({str(folder)!r}, score_threshold=0.0).infer(Frame.load_npz({str(tmp_path / 'f.npz')!r}))\n"
            "assert len(d) > 0, len(d)\nprint('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_check_parity_option_writes_parity_json(exported, synth_root, tmp_path, capsys):
    ckpt, _ = exported
    out = tmp_path / "p"
    assert export_main(["--checkpoint", str(ckpt), "--out", str(out), "--dataroot", str(synth_root), "--version",
                        VERSION, "--split", "synth_val", "--check-parity", "2"]) == 0
    par = json.loads((out / "parity.json").read_text())
    assert par["ok"] is True and par["frames"] == 2 and par["score"] < 1e-3
    assert "parity ONNX Runtime vs PyTorch on 2 Frames" in capsys.readouterr().out
    assert export_main(["--checkpoint", str(ckpt), "--out", str(out), "--check-parity", "2"]) == 1
