"""The trtexec route: model.json lists the layers a reduced-precision build keeps in FP32, from the ONNX graph alone,
and the trtexec command built from it holds every GridSample that the calibration steers."""
import json
import subprocess
import sys
from pathlib import Path

import onnx

REPO = Path(__file__).resolve().parents[2]


FEATURES = ("Conv", "ConvTranspose", "GridSample")  # their outputs are image/BEV features, not geometry


def _geometry_sources(graph, name):
    """The tensors that ``name`` is computed from by geometry alone: backwards over the graph, not through the
    outputs of convolutions and GridSamples (features: the deformable attention's offsets are learned from BEV
    features, which depend on the calibration only through the image content). A backward walk, independent of
    the forward walk of fp32_geometry_nodes."""
    producer = {o: n for n in graph.node for o in n.output}
    seen, todo = set(), [name]
    while todo:
        t = todo.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in producer and producer[t].op_type not in FEATURES:
            todo.extend(i for i in producer[t].input if i)
    return seen


def test_every_gridsample_fed_by_the_calibration_is_listed(small_onnx_export):
    meta = json.loads((small_onnx_export / "model.json").read_text())
    listed = meta["fp32_layers"]["layers"]
    graph = onnx.load(str(small_onnx_export / "model.onnx")).graph
    nodes = {n.name: n for n in graph.node}
    assert listed and len(set(listed)) == len(listed) and all(n in nodes for n in listed)
    assert not {nodes[n].op_type for n in listed} & {"Conv", "ConvTranspose"}
    steered = [n.name for n in graph.node if n.op_type == "GridSample"
               and "img_from_ego" in _geometry_sources(graph, n.input[1])]
    assert len(steered) >= 2, steered  # the lift's feature and depth lookups at least
    assert set(steered) <= set(listed), sorted(set(steered) - set(listed))
    # and the projection itself: MatMul / Div nodes computed from the calibration
    assert {"MatMul", "Div"} <= {nodes[n].op_type for n in listed}


def test_engine_hint_prints_the_complete_trtexec_command(small_onnx_export, tmp_path):
    """Without TensorRT (this machine), perception-engine build's message carries the trtexec command with the FP32
    constraints for every listed layer."""
    code = ("import sys\nfrom export.engine_cli import main\n"
            f"sys.exit(main(['build', '--onnx', {str(small_onnx_export)!r}, '--out', {str(tmp_path / 'e')!r}]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    layers = json.loads((small_onnx_export / "model.json").read_text())["fp32_layers"]["layers"]
    cmd = out.stderr[out.stderr.index("trtexec --onnx="):]
    assert "--fp16" in cmd and "--precisionConstraints=obey" in cmd
    spec = ",".join(f"{n}:fp32" for n in layers)
    assert f"'--layerPrecisions={spec}'" in cmd and f"'--layerOutputTypes={spec}'" in cmd
