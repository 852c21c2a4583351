"""ONNX Runtime vs PyTorch on the raw head maps of real (synthetic) Frames at the config's full input size, before
and after onnxslim, and the same comparison through ``polygraphy run --onnxrt``.

Tolerance: every head map of every frame must agree to 1e-4 of that map's range (max - min) over the BEV grid.
The range, not the magnitude, because an untrained heatmap sits on the focal-loss prior (-2.19) and a relative
error on the magnitude would hide errors in the signal riding on it. Measured: ~1e-6 of the range (FP32
reassociation in different kernels); a misplaced sample (grid_sample alignment, a transposed calibration) moves
the maps by a sizeable fraction of their range.
"""
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from export.budget import check_budget
from export.onnx import RAW_OUTPUT_NAMES, export_onnx
from perception.data.batch import PillarSpec, input_arrays
from perception.data.nuscenes import NuScenesFrames
from perception.data.synthetic.generate import VERSION
from perception.model.network import INPUT_NAMES
from small_model import small_config, small_net

pytestmark = pytest.mark.slow  # full-size exports of real Frames, ONNX Runtime and polygraphy

FRAMES = (0, 5, 11)  # three synth_val key frames
RANGE_RTOL = 1e-4


@pytest.fixture(scope="module")
def raw_models(tmp_path_factory, synth_root):
    """The small network (non-trivial BatchNorm statistics, as after training), its raw-output ONNX export as
    written and after onnxslim, the input arrays of FRAMES and PyTorch's head maps on them."""
    import onnxslim

    cfg = small_config()
    net = small_net(cfg)
    frames = NuScenesFrames(cfg, synth_root, VERSION, "synth_val")
    spec = PillarSpec.from_config(cfg)
    batches = [input_arrays([frames[i]], spec) for i in FRAMES]
    root = tmp_path_factory.mktemp("raw")
    plain = export_onnx(net, [torch.from_numpy(batches[0][k]) for k in INPUT_NAMES], root / "raw.onnx", raw=True)
    slim = onnxslim.slim(onnx.load(str(plain)))
    onnx.checker.check_model(slim)
    onnx.save(slim, str(root / "raw_slim.onnx"))
    refs = []
    with torch.no_grad():
        for b in batches:
            out = net(*[torch.from_numpy(b[k]) for k in INPUT_NAMES])
            refs.append({k: out[k].numpy() for k in RAW_OUTPUT_NAMES})
    return {"plain": plain, "slim": root / "raw_slim.onnx", "batches": batches, "refs": refs, "root": root}


def test_frames_are_full_size_and_carry_radar(raw_models):
    """The comparison runs on what the pipeline feeds: the config's image size, every camera, real radar."""
    cfg = small_config()
    for b in raw_models["batches"]:
        assert b["images"].shape == (1, 6, 3, *cfg.data.image_size)
        assert b["camera_valid"].all() and b["pillar_mask"].sum() > 50 and b["radar_valid"].sum() > 50


@pytest.mark.parametrize("which", ["plain", "slim"])
def test_onnxruntime_equals_pytorch_on_raw_head_maps(raw_models, which):
    import onnxruntime as ort

    model = onnx.load(str(raw_models[which]))
    check_budget(model)  # simplification must not leave the budget
    sess = ort.InferenceSession(str(raw_models[which]), providers=["CPUExecutionProvider"])
    for i, b, ref in zip(FRAMES, raw_models["batches"], raw_models["refs"], strict=True):
        got = dict(zip(RAW_OUTPUT_NAMES, sess.run(list(RAW_OUTPUT_NAMES), b)))
        for name in RAW_OUTPUT_NAMES:
            r = ref[name]
            spread = float(r.max() - r.min())
            assert spread > 1e-3, f"{name}: a constant map would make the comparison vacuous"
            err = float(np.abs(got[name] - r).max())
            assert err <= RANGE_RTOL * spread, (f"{which} frame {i} {name}: max |ORT - PyTorch| {err:.3g} > "
                                                f"{RANGE_RTOL} x range {spread:.3g}")


def test_simplification_shrinks_the_graph_and_keeps_its_interface(raw_models):
    plain, slim = onnx.load(str(raw_models["plain"])), onnx.load(str(raw_models["slim"]))
    assert len(slim.graph.node) < len(plain.graph.node)
    assert [i.name for i in slim.graph.input] == list(INPUT_NAMES)
    assert [o.name for o in slim.graph.output] == list(RAW_OUTPUT_NAMES)


def _polygraphy(model: Path, inputs: Path, outputs: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("polygraphy")
    # atol 1e-5: 1e-4 of the smallest head-map range (~0.1); an element fails only if outside both atol and rtol
    return subprocess.run([str(exe), "run", str(model), "--onnxrt", "--load-inputs", str(inputs), "--load-outputs",
                           str(outputs), "--atol", "1e-5", "--rtol", "1e-4"], capture_output=True, text=True,
                          timeout=300)


def test_polygraphy_run_onnxrt_matches_pytorch(raw_models):
    """``polygraphy run --onnxrt`` on the simplified graph with the real Frames' inputs, compared with PyTorch's
    saved outputs; a 0.1 % change of the reference heatmap makes the same command fail (the check is live)."""
    from polygraphy.comparator import IterationResult, RunResults
    from polygraphy.json import save_json

    root = raw_models["root"]
    save_json(raw_models["batches"], str(root / "inputs.json"))
    for name, refs in (("pytorch", raw_models["refs"]),
                       ("pytorch_off", [dict(r, heatmap=r["heatmap"] * 1.001) for r in raw_models["refs"]])):
        results = RunResults()
        results.append(("pytorch", [IterationResult(r, runner_name="pytorch") for r in refs]))
        results.save(str(root / f"{name}.json"))
    good = _polygraphy(raw_models["slim"], root / "inputs.json", root / "pytorch.json")
    assert good.returncode == 0, good.stdout[-3000:] + good.stderr[-3000:]
    log = good.stdout + good.stderr
    assert "PASSED" in log and f"Passed: {len(FRAMES)}/{len(FRAMES)} iterations" in log
    bad = _polygraphy(raw_models["slim"], root / "inputs.json", root / "pytorch_off.json")
    assert bad.returncode != 0 and "FAILED" in bad.stdout + bad.stderr
