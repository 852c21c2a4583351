"""perception-engine and the TensorRT runtime.

Always run (no TensorRT needed): the missing-TensorRT message and exit code, no torch in the engine and runtime
modules, and the build logic (flags, files, sidecar, FP32 geometry pinning, parser errors) against a stand-in
``tensorrt`` module that records what the TensorRT 10 API is asked to do.

Run where ``tensorrt`` imports and a CUDA device exists (marked ``tensorrt``, skipped with the reason
elsewhere): FP32/FP16 engines vs ONNX Runtime on raw head maps, an INT8 engine from the Q/DQ graph,
perception-test --engine vs --onnx. Tolerances, as a fraction of each head map's range over the BEV grid (see
test_parity.py for why the range): FP32 engine 1e-3 (TF32 off; kernel reassociation only); FP16 engine max 5e-2
and mean 1e-2 (10-bit mantissa through ~30 layers); NDS of the FP16 engine within 0.01 of ONNX Runtime's.
"""
import hashlib
import json
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from export.engine_cli import main as engine_main
from export.tensorrt import EngineBuildError, build_engine, pin_geometry_fp32, trtexec_command
from perception.runtime.onnxruntime import RuntimeConfigError
from perception.runtime.tensorrt import TensorRTNotAvailable, import_tensorrt

REPO = Path(__file__).resolve().parents[2]
TRT_REASON = ("TensorRT 10 Python bindings are not installed here (JetPack >= 6.1 on a Jetson Orin; NVIDIA's "
              "tensorrt wheel on an x86 GPU host); engine build and parity tests run only there")


def _fake_export(folder: Path, int8: bool = False) -> Path:
    """An export folder as perception-export writes it, with tiny stand-in ONNX bytes (enough for the CLI and
    the build logic; the parser is the stand-in's)."""
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"schema": "perception-model/1", "config": {}, "stereo_pairs": [],
            "inputs": [{"name": "img_from_ego", "shape": [1, 6, 4, 4], "dtype": "float32"},
                       {"name": "images", "shape": [1, 6, 3, 8, 8], "dtype": "uint8"}],
            "outputs": [{"name": "scores", "shape": [1, 5], "dtype": "float32"}]}
    (folder / "model.json").write_text(json.dumps(meta))
    (folder / "model.onnx").write_bytes(b"onnx-fp32")
    if int8:
        (folder / "model_int8.onnx").write_bytes(b"onnx-qdq-int8")
    return folder


# -- a stand-in for the TensorRT 10 Python API (only what export.tensorrt touches) --------------------------------

class _T:
    def __init__(self, name, dtype, shape=(1,)):
        self.name, self.dtype, self.shape = name, dtype, shape


class _L:
    def __init__(self, name, type_, inputs, outputs):
        self.name, self.type, self._in, self._out = name, type_, inputs, outputs
        self.precision, self.output_types = None, {}

    num_inputs = property(lambda self: len(self._in))
    num_outputs = property(lambda self: len(self._out))

    def get_input(self, j):
        return self._in[j]

    def get_output(self, j):
        return self._out[j]

    def set_output_type(self, j, t):
        self.output_types[j] = t


class _Net:
    def __init__(self, inputs, layers):
        self._inputs, self._layers = inputs, layers

    num_inputs = property(lambda self: len(self._inputs))
    num_layers = property(lambda self: len(self._layers))

    def get_input(self, i):
        return self._inputs[i]

    def get_layer(self, i):
        return self._layers[i]


LAYER = SimpleNamespace(CONVOLUTION="conv", DECONVOLUTION="deconv", GRID_SAMPLE="grid_sample", ELEMENTWISE="ew",
                        MATRIX_MULTIPLY="mm", SELECT="select", CAST="cast")


def _geometry_network():
    """images -> cast -> conv -> feats; img_from_ego -> matmul -> div -> (mask) -> where -> grid_sample(feats)
    -> mul; div -> conv -> add. Names say what pin_geometry_fp32 must do with each layer."""
    calib, images = _T("img_from_ego", "float32", (1, 6, 4, 4)), _T("images", "uint8", (1, 6, 3, 8, 8))
    t = {n: _T(n, "float32") for n in ("x", "feats", "uvw", "uv", "grid", "sampled", "mixed", "d", "after")}
    mask = _T("mask", "bool")
    layers = [
        _L("free_cast", LAYER.CAST, [images], [t["x"]]),
        _L("free_conv", LAYER.CONVOLUTION, [t["x"]], [t["feats"]]),
        _L("pin_matmul", LAYER.MATRIX_MULTIPLY, [calib, None], [t["uvw"]]),
        _L("pin_div", LAYER.ELEMENTWISE, [t["uvw"]], [t["uv"]]),
        _L("follow_mask", LAYER.ELEMENTWISE, [t["uvw"]], [mask]),
        _L("pin_where", LAYER.SELECT, [mask, t["uv"]], [t["grid"]]),
        _L("pin_grid_sample", LAYER.GRID_SAMPLE, [t["feats"], t["grid"]], [t["sampled"]]),
        _L("free_after_sampling", LAYER.ELEMENTWISE, [t["sampled"], t["feats"]], [t["mixed"]]),
        _L("free_conv_on_geometry", LAYER.CONVOLUTION, [t["uv"]], [t["d"]]),
        _L("free_after_conv", LAYER.ELEMENTWISE, [t["d"]], [t["after"]]),
    ]
    return _Net([calib, images], layers)


def _fake_tensorrt(version="10.3.0", parse_ok=True, build_ok=True):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.float32, trt.float16 = "float32", "float16"
    trt.LayerType = LAYER
    trt.MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.BuilderFlag = SimpleNamespace(**{f: f for f in ("FP16", "INT8", "TF32", "PREFER_PRECISION_CONSTRAINTS",
                                                         "OBEY_PRECISION_CONSTRAINTS")})
    trt.calls = calls = {"flags": set(), "cleared": set(), "pools": {}}

    class Logger:
        WARNING, VERBOSE = "warning", "verbose"

        def __init__(self, severity):
            calls["log_severity"] = severity

    class Config:
        def set_memory_pool_limit(self, pool, size):
            calls["pools"][pool] = size

        def set_flag(self, flag):
            calls["flags"].add(flag)

        def clear_flag(self, flag):
            calls["cleared"].add(flag)

        def __setattr__(self, name, value):  # e.g. int8_calibrator: explicit quantisation must not set one
            calls[f"config.{name}"] = value

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls["network_flags"] = flags
            calls["network"] = _geometry_network()
            return calls["network"]

        def create_builder_config(self):
            return Config()

        def build_serialized_network(self, network, config):
            return b"serialised-engine" if build_ok else None

    class Error:
        def node(self):
            return 17

        def node_name(self):
            return "/camera/lift/GridSample_3"

        def node_operator(self):
            return "GridSample"

        def desc(self):
            return "5-D input is not supported"

        def code(self):
            return "ErrorCode.UNSUPPORTED_NODE"

    class OnnxParser:
        def __init__(self, network, logger):
            pass

        num_errors = property(lambda self: 0 if parse_ok else 1)

        def parse_from_file(self, path):
            calls["parsed"] = path
            return parse_ok

        def get_error(self, i):
            return Error()

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, OnnxParser
    return trt


# -- always run ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("precision,flags,onnx_file", [("fp16", "--fp16", "model.onnx"),
                                                       ("int8", "--int8 --fp16", "model_int8.onnx")])
def test_build_without_tensorrt_says_what_to_install(tmp_path, monkeypatch, capsys, precision, flags, onnx_file):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # absent, even where it is installed
    src = _fake_export(tmp_path / "exp", int8=True)
    rc = engine_main(["build", "--onnx", str(src), "--precision", precision, "--out", str(tmp_path / "eng")])
    err = capsys.readouterr().err
    assert rc == 1
    assert "Traceback" not in err and err.strip().count("\n") == 0  # one paragraph, no traceback
    assert err.startswith("error: TensorRTNotAvailable:")
    assert "JetPack 6" in err and "TensorRT 10" in err and "pypi.nvidia.com" in err
    assert f"trtexec --onnx={src / onnx_file} --saveEngine={tmp_path / 'eng' / 'model.engine'} {flags}" in err
    assert "--memPoolSize=workspace:2048M" in err
    assert not (tmp_path / "eng").exists()


def test_perception_test_engine_without_tensorrt_is_a_clear_error(tmp_path, monkeypatch, capsys):
    from perception.cli.test import main

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    rc = main(["--engine", str(tmp_path), "--dataroot", str(tmp_path), "--version", "v", "--split", "s",
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert "BackendNotAvailable: --engine needs TensorRT" in err and "JetPack 6" in err


def test_missing_int8_graph_names_the_fix(tmp_path, capsys):
    src = _fake_export(tmp_path / "exp", int8=False)
    assert engine_main(["build", "--onnx", str(src), "--precision", "int8", "--out", str(tmp_path / "e")]) == 1
    assert "model_int8.onnx does not exist: export the Q/DQ graph with perception-export --int8" in \
        capsys.readouterr().err


def test_engine_and_runtime_modules_import_no_torch(tmp_path):
    """What runs on the Jetson (engine building, the TensorRT and ONNX Runtime runners, the engine CLI up to the
    point where it needs TensorRT) never imports torch."""
    src = _fake_export(tmp_path / "exp")
    code = (
        "import sys\n"
        "sys.modules['tensorrt'] = None\n"
        "import export.tensorrt, export.engine_cli, perception.runtime.tensorrt, perception.runtime.onnxruntime\n"
        "assert 'torch' not in sys.modules, 'imported torch'\n"
        f"rc = export.engine_cli.main(['build', '--onnx', {str(src)!r}, '--out', {str(tmp_path / 'e')!r}])\n"
        "assert rc == 1, rc\n"
        "export.engine_cli.main(['info', 'no-such-folder'])\n"
        "assert 'torch' not in sys.modules, 'the build path imported torch'\n"
        "print('torch-free')\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "torch-free" in res.stdout, res.stdout + res.stderr


def test_unsupported_tensorrt_major_says_what_is_supported(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(version="8.6.1"))
    with pytest.raises(TensorRTNotAvailable, match=r"TensorRT 8\.6\.1 is installed; this code supports the "
                                                   r"TensorRT 10\.x Python API only"):
        import_tensorrt()


def test_pin_geometry_follows_the_calibration_to_the_sampling():
    """FP32 on every float layer computed from img_from_ego up to and including the GridSample it steers; masks
    followed but not constrained; nothing behind a convolution or after the sampling."""
    trt = _fake_tensorrt()
    net = _geometry_network()
    pinned = pin_geometry_fp32(trt, net)
    assert pinned == ["pin_matmul", "pin_div", "pin_where", "pin_grid_sample"]
    for i in range(net.num_layers):
        layer = net.get_layer(i)
        if layer.name.startswith("pin_"):
            assert layer.precision == "float32" and layer.output_types == {0: "float32"}
        else:
            assert layer.precision is None and layer.output_types == {}


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_build_writes_a_self_contained_engine_folder(tmp_path, monkeypatch, precision):
    trt = _fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    src = _fake_export(tmp_path / "exp", int8=True)
    out = tmp_path / "eng"
    meta = build_engine(src, out, precision, workspace_gb=1.5)
    onnx_file = src / ("model_int8.onnx" if precision == "int8" else "model.onnx")
    assert trt.calls["parsed"] == str(onnx_file) and trt.calls["network_flags"] == 0
    assert trt.calls["pools"] == {"WORKSPACE": int(1.5 * 2 ** 30)}
    expected = {"fp32": set(), "fp16": {"FP16", "PREFER_PRECISION_CONSTRAINTS"},
                "int8": {"FP16", "INT8", "PREFER_PRECISION_CONSTRAINTS"}}[precision]
    assert trt.calls["flags"] == expected and trt.calls["cleared"] == {"TF32"}
    assert not any(k.startswith("config.") for k in trt.calls)  # no int8_calibrator: explicit Q/DQ scales
    assert (out / "model.engine").read_bytes() == b"serialised-engine"
    assert (out / "model.json").read_text() == (src / "model.json").read_text()
    side = json.loads((out / "engine.json").read_text())
    assert side == meta
    assert side["schema"] == "perception-engine/1" and side["tensorrt_version"] == "10.3.0"
    assert side["precision"] == precision and side["onnx_file"] == onnx_file.name
    assert side["onnx_sha256"] == hashlib.sha256(onnx_file.read_bytes()).hexdigest()
    assert set(side["device"]) == {"name", "compute_capability"}
    assert side["trtexec_equivalent"] == trtexec_command(onnx_file, out / "model.engine", precision, 1.5)
    pinned = [] if precision == "fp32" else ["pin_matmul", "pin_div", "pin_where", "pin_grid_sample"]
    assert side["fp32_geometry"]["layers"] == pinned


def test_parser_errors_name_the_node(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(parse_ok=False))
    src = _fake_export(tmp_path / "exp")
    with pytest.raises(EngineBuildError, match=r"node 17 '/camera/lift/GridSample_3' \(GridSample\): 5-D input is "
                                               r"not supported"):
        build_engine(src, tmp_path / "eng")
    assert not (tmp_path / "eng").exists()


def test_failed_build_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(build_ok=False))
    src = _fake_export(tmp_path / "exp")
    with pytest.raises(EngineBuildError, match="could not build an engine"):
        build_engine(src, tmp_path / "eng")
    assert not (tmp_path / "eng").exists()


def test_engine_from_another_tensorrt_version_is_refused(tmp_path, monkeypatch):
    from perception.runtime.tensorrt import TensorRTRunner

    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(version="10.3.0"))
    folder = _fake_export(tmp_path / "eng")
    (folder / "engine.json").write_text(json.dumps({"schema": "perception-engine/1", "tensorrt_version": "10.0.1",
                                                    "precision": "fp16", "device": {}}))
    with pytest.raises(RuntimeConfigError, match=r"built with TensorRT 10\.0\.1 but 10\.3\.0 is installed; engines "
                                                 r"are not portable"):
        TensorRTRunner(folder)


def test_info_prints_the_sidecar(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt())
    build_engine(_fake_export(tmp_path / "exp"), tmp_path / "eng", "fp16")
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # info needs no TensorRT
    assert engine_main(["info", str(tmp_path / "eng")]) == 0
    assert json.loads(capsys.readouterr().out)["precision"] == "fp16"


# -- where TensorRT and a GPU are available -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def trt_exports(tmp_path_factory, request):
    """The small network exported twice: perception-export's decoded graph (+ INT8 Q/DQ) and a raw-head-map
    graph in a folder of its own with a matching model.json, so engines of both can be built. Skips (with the
    reason) before generating any data when TensorRT or a GPU is missing."""
    pytest.importorskip("tensorrt", reason=TRT_REASON)
    from perception.runtime.tensorrt import device_info

    if device_info()["compute_capability"] == "unknown":
        pytest.skip("tensorrt imports but no CUDA device is visible; engines need a GPU")
    synth_root = request.getfixturevalue("synth_root")
    import torch

    from export.cli import main as export_main
    from export.onnx import RAW_OUTPUT_NAMES, export_onnx
    from export.quantize import quantize_int8
    from perception.data.nuscenes import NuScenesFrames
    from perception.data.synthetic.generate import VERSION
    from perception.model.network import INPUT_NAMES
    from perception.runtime.onnxruntime import file_sha256, read_model_json
    from perception.train.checkpoint import save_checkpoint
    from small_model import small_config, small_net

    cfg = small_config()
    net = small_net(cfg)
    root = tmp_path_factory.mktemp("trt")
    save_checkpoint(root / "small.pt", net, cfg)
    assert export_main(["--checkpoint", str(root / "small.pt"), "--out", str(root / "onnx")]) == 0
    quantize_int8(root / "onnx", NuScenesFrames(cfg, synth_root, VERSION, "synth_train"), calib_frames=4)
    meta = read_model_json(root / "onnx")
    example = {i["name"]: np.zeros(i["shape"], i["dtype"]) for i in meta["inputs"]}
    raw = root / "raw"
    export_onnx(net, [torch.from_numpy(example[k]) for k in INPUT_NAMES], raw / "model.onnx", raw=True)
    with torch.no_grad():
        ref = net(*[torch.from_numpy(example[k]) for k in INPUT_NAMES])
    raw_meta = dict(meta, outputs=[{"name": n, "shape": list(ref[n].shape), "dtype": "float32"}
                                   for n in RAW_OUTPUT_NAMES])
    raw_meta["files"] = {"model.onnx": file_sha256(raw / "model.onnx")}  # this folder's own graph
    (raw / "model.json").write_text(json.dumps(raw_meta))
    return {"root": root, "onnx": root / "onnx", "raw": raw, "cfg": cfg, "synth_root": synth_root}


def _val_arrays(exports, indices=(0, 5, 11)):
    from perception.data.batch import PillarSpec, input_arrays
    from perception.data.nuscenes import NuScenesFrames
    from perception.data.synthetic.generate import VERSION

    frames = NuScenesFrames(exports["cfg"], exports["synth_root"], VERSION, "synth_val")
    return [input_arrays([frames[i]], PillarSpec.from_config(exports["cfg"])) for i in indices]


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision,max_frac,mean_frac", [("fp32", 1e-3, 1e-4), ("fp16", 5e-2, 1e-2)])
def test_engine_matches_onnxruntime_on_raw_head_maps(trt_exports, tmp_path, precision, max_frac, mean_frac):
    from perception.runtime.onnxruntime import OnnxRunner
    from perception.runtime.tensorrt import TensorRTRunner

    meta = build_engine(trt_exports["raw"], tmp_path / precision, precision)
    assert meta["precision"] == precision and meta["device"]["compute_capability"] != "unknown"
    ort_runner, trt_runner = OnnxRunner(trt_exports["raw"]), TensorRTRunner(tmp_path / precision)
    for arrays in _val_arrays(trt_exports):
        a, b = ort_runner.infer(arrays), trt_runner.infer(arrays)
        for name, ref in a.items():
            spread = float(ref.max() - ref.min())
            err = np.abs(b[name].astype(np.float64) - ref)
            assert err.max() <= max_frac * spread and err.mean() <= mean_frac * spread, \
                f"{precision} {name}: max {err.max():.3g}, mean {err.mean():.3g}, range {spread:.3g}"
    trt_runner.close()


@pytest.mark.tensorrt
def test_int8_engine_from_the_qdq_graph(trt_exports, tmp_path):
    """INT8 by explicit quantisation: the engine reads model_int8.onnx and stays close to ONNX Runtime running
    the same Q/DQ graph (both quantise the convolutions with the graph's scales)."""
    from perception.runtime.onnxruntime import OnnxRunner
    from perception.runtime.tensorrt import TensorRTRunner

    meta = build_engine(trt_exports["onnx"], tmp_path / "int8", "int8")
    assert meta["onnx_file"] == "model_int8.onnx" and {"INT8", "FP16"} <= set(meta["builder_flags"])
    ort_runner = OnnxRunner(trt_exports["onnx"], model_file="model_int8.onnx")
    trt_runner = TensorRTRunner(tmp_path / "int8")
    for arrays in _val_arrays(trt_exports, (2,)):
        a, b = ort_runner.infer(arrays), trt_runner.infer(arrays)
        assert np.isfinite(b["boxes"]).all() and np.isfinite(b["scores"]).all()
        # untrained weights: scores sit near the focal-loss prior, so compare sorted scores, not ranking
        assert np.abs(np.sort(a["scores"].ravel()) - np.sort(b["scores"].ravel())).max() < 0.05


@pytest.mark.tensorrt
def test_engine_runner_rejects_another_rig(trt_exports, tmp_path):
    from perception.runtime.tensorrt import TensorRTRunner

    build_engine(trt_exports["onnx"], tmp_path / "fp16", "fp16")
    runner = TensorRTRunner(tmp_path / "fp16")
    arrays = {i["name"]: np.zeros(i["shape"], i["dtype"]) for i in runner.meta["inputs"]}
    arrays["images"] = np.zeros((1, 5, *arrays["images"].shape[2:]), np.uint8)
    with pytest.raises(RuntimeConfigError, match="camera count, image size and batch are fixed at export"):
        runner.infer(arrays)


@pytest.mark.tensorrt
def test_perception_test_engine_nds_matches_onnx(trt_exports, tmp_path):
    from perception.cli.test import main
    from perception.data.synthetic.generate import VERSION

    assert engine_main(["build", "--onnx", str(trt_exports["onnx"]), "--out", str(tmp_path / "eng")]) == 0
    common = ["--dataroot", str(trt_exports["synth_root"]), "--version", VERSION, "--split", "synth_val",
              "--no-progress"]
    assert main(["--onnx", str(trt_exports["onnx"]), "--out", str(tmp_path / "a"), *common]) == 0
    assert main(["--engine", str(tmp_path / "eng"), "--out", str(tmp_path / "b"), *common]) == 0
    sa = json.loads((tmp_path / "a" / "metrics_summary.json").read_text())
    sb = json.loads((tmp_path / "b" / "metrics_summary.json").read_text())
    assert abs(sa["nd_score"] - sb["nd_score"]) <= 0.01
