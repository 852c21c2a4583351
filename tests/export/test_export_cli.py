"""perception-export and the ONNX Runtime backend: the exported model serves the same Pipeline as the checkpoint."""
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from export.budget import check_budget
from export.cli import main as export_main
from perception.data.nuscenes import NuScenesFrames
from perception.data.synthetic.generate import VERSION
from perception.pipeline import Pipeline
from perception.train.checkpoint import save_checkpoint
from small_model import small_config, small_net

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cfg = small_config()
    net = small_net(cfg)
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
    # the lift samples 2 cameras per voxel (TopK over the cameras), exact on the config's ring, as model.json says
    assert any(n.op_type == "TopK" and "/camera/lift/" in n.name for n in model.graph.node)
    cov = meta["lift_coverage"]
    assert cov["cameras_per_voxel"] == 2 and cov["voxels_over"] == 0
    assert len(cov["voxels_by_camera_count"]) == 7 and cov["voxels_by_camera_count"][2] > 0


def test_cameras_per_voxel_override_exports_the_same_function(exported, synth_root, tmp_path, capsys):
    """--cameras-per-voxel 0 (every camera at every voxel) exports the same checkpoint without the camera
    selection; on the config's ring both graphs give the same outputs in ONNX Runtime. The stereo rig needs 3
    cameras per voxel: exporting for it with 2 warns and names the option."""
    from perception.data.batch import PillarSpec, input_arrays
    from perception.runtime.onnxruntime import OnnxRunner

    ckpt, folder = exported
    assert export_main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "all"), "--cameras-per-voxel", "0"]) == 0
    model = onnx.load(str(tmp_path / "all" / "model.onnx"))
    assert not any(n.op_type == "TopK" and "/camera/lift/" in n.name for n in model.graph.node)
    meta = json.loads((tmp_path / "all" / "model.json").read_text())
    assert meta["config"]["model"]["camera"]["cameras_per_voxel"] == 0
    a, b = OnnxRunner(folder), OnnxRunner(tmp_path / "all")
    cfg = Pipeline.from_onnx(folder).cfg
    arrays = input_arrays([NuScenesFrames(cfg, synth_root, VERSION, "synth_val")[5]], PillarSpec.from_config(cfg))
    ra, rb = a.infer(arrays), b.infer(arrays)
    for name in ra:
        np.testing.assert_allclose(rb[name], ra[name], rtol=1e-4, atol=1e-5, err_msg=name)
    capsys.readouterr()
    assert export_main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "stereo"), "--rig",
                        str(REPO / "configs" / "rigs" / "stereo_radar.yaml")]) == 0
    err = capsys.readouterr().err
    assert "warning: rig" in err and "--cameras-per-voxel 3" in err


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
    # the skip connections of the conv trunks are quantised (inputs dequantised, output quantised), no other Add
    from export.quantize import residual_adds

    skips = set(residual_adds(onnx.load(str(q / "model.onnx"))))
    assert any("/camera/backbone/" in s for s in skips) and any("/bev_decoder/" in s for s in skips)
    assert not any("/fusion/" in s or "/lift/" in s for s in skips)
    int8_graph = onnx.load(str(path)).graph
    producer = {o: n.op_type for n in int8_graph.node for o in n.output}
    consumers: dict[str, list[str]] = {}
    for n in int8_graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.op_type)
    quantised_adds = {n.name for n in int8_graph.node if n.op_type == "Add"
                      and all(producer.get(i) == "DequantizeLinear" for i in n.input)
                      and set(consumers.get(n.output[0], [])) == {"QuantizeLinear"}}
    assert quantised_adds == skips
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


def test_dedicated_qdq_pairs_gives_each_consumer_its_own_pair_with_the_same_numbers():
    """ONNX Runtime fuses DQ -> Conv -> Q into QLinearConv only when the activation's Q/DQ pair is private; the rewrite
    must not change the arithmetic."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from export.quantize import dedicated_qdq_pairs

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    scale = numpy_helper.from_array(np.array(0.02, np.float32), "s")
    zero = numpy_helper.from_array(np.array(0, np.int8), "z")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq"),
             helper.make_node("Conv", ["xd", "w"], ["a"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Conv", ["xd", "w"], ["b"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Add", ["xd", "xd"], ["c"], name="add")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape)
                               for n, shape in (("a", [1, 4, 8, 8]), ("b", [1, 4, 8, 8]), ("c", [1, 3, 8, 8]))],
                              [w, scale, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.normal(size=(1, 3, 8, 8)).astype(np.float32)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    before = ort.InferenceSession(model.SerializeToString(), opts).run(None, {"x": x})
    out = dedicated_qdq_pairs(model)
    onnx.checker.check_model(out)
    consumers = {}
    for node in out.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    dq_outputs = [n.output[0] for n in out.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dq_outputs) == 4 and all(len(consumers[o]) == 1 for o in dq_outputs)
    assert sum(n.op_type == "QuantizeLinear" for n in out.graph.node) == 4  # conv1, conv2 and the Add's two inputs
    after = ort.InferenceSession(out.SerializeToString(), opts).run(None, {"x": x})
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_config_option_rebuilds_the_network_around_the_checkpoint_weights(exported, tmp_path, capsys):
    """--config CONFIG exports the checkpoint's weights in the network built from CONFIG: another input size
    changes the graph's image input; a config whose weights do not fit (another neck width) is a clear error."""
    import yaml

    from perception.config import config_to_dict

    ckpt, _ = exported
    data = config_to_dict(small_config())
    data["rig"] = str(REPO / "configs" / "rigs" / "nuscenes.yaml")
    data["data"]["image_size"] = [96, 256]
    (tmp_path / "bigger.yaml").write_text(yaml.safe_dump(data))
    assert export_main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "out"),
                        "--config", str(tmp_path / "bigger.yaml")]) == 0
    meta = json.loads((tmp_path / "out" / "model.json").read_text())
    assert meta["inputs"][0]["shape"] == [1, 6, 3, 96, 256]
    assert meta["config"]["data"]["image_size"] == [96, 256]
    data["model"]["camera"]["neck_channels"] *= 2
    (tmp_path / "wider.yaml").write_text(yaml.safe_dump(data))
    capsys.readouterr()
    assert export_main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "out2"),
                        "--config", str(tmp_path / "wider.yaml")]) == 1
    err = capsys.readouterr().err
    assert "does not match the network" in err and "wider.yaml" in err and "Traceback" not in err
