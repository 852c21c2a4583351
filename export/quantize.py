"""INT8 by explicit quantisation: a Q/DQ graph (onnxruntime.quantization, QDQ format, symmetric int8,
per-channel weights), calibrated on real Frames, so that ONNX Runtime measures its accuracy here and TensorRT
builds it as an explicitly quantised network.

Quantised: the convolutions and the residual Adds of the convolutional trunks (``residual_adds``: an Add of two
convolution / ReLU / max-pool outputs whose result goes only to ReLUs or convolutions, i.e. the ResNet blocks'
skip connections and the BEV decoder's). Quantising the skip connection is the placement NVIDIA's TensorRT
quantisation guidance recommends (the Add can then fuse into the preceding convolution as an int8 residual); on
ONNX Runtime it becomes an integer QLinearAdd and removes the float round trip (and the NHWC <-> NCHW layout
Transposes around it) between two integer convolutions. Everything else stays float: the geometry (projection
through img_from_ego, depth interpolation, deformable sampling offsets) needs float precision, and TensorRT keeps
those layers in FP16/FP32 anyway.

Q/DQ placement: every consumer of a quantised tensor gets its own QuantizeLinear -> DequantizeLinear pair (with
its own copies of the scale and zero point), see ``dedicated_qdq_pairs``. The arithmetic is unchanged (the same
scale, zero point and input for every copy), but ONNX Runtime's CPU provider can only fuse DQ -> Conv -> Q into
an integer QLinearConv when the activation's Q -> DQ pair is private to that convolution: on x86 it rewrites
symmetric int8 activations to uint8 pair by pair and keeps int8 convolutions in float otherwise (with a
shared pair, a ResNet block's first convolution, its downsample and the heads' first convolutions stayed float,
dequantising their weights on every run: the INT8 graph was no faster than FP32).
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any


def record_file_hash(folder: Path, name: str) -> None:
    """Add ``name``'s sha256 to ``<folder>/model.json`` (``files``), which the runtimes check on load."""
    import json

    from perception.outputs import atomic_write
    from perception.runtime.onnxruntime import file_sha256

    path = folder / "model.json"
    if path.exists():
        meta = json.loads(path.read_text())
        meta.setdefault("files", {})[name] = file_sha256(folder / name)
        atomic_write(path, json.dumps(meta, indent=1))


def quantize_int8(folder: str | Path, frames: Any, calib_frames: int = 16, out_name: str = "model_int8.onnx") -> Path:
    """Quantise ``<folder>/model.onnx`` with ``calib_frames`` Frames spread over ``frames`` (a NuScenesFrames).
    Writes ``<folder>/<out_name>`` (a Q/DQ pair per consumer) and returns its path. A temporal graph is calibrated
    with real states: each calibration frame after its scene's previous key frame, run first by the FP32 graph
    (``Pipeline.from_onnx``, the state threaded as at inference)."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    from perception.data.batch import PillarSpec, input_arrays

    folder = Path(folder)
    spec = PillarSpec.from_config(frames.cfg)
    fp32 = None
    if frames.cfg.model.temporal.enabled:
        from perception.pipeline import Pipeline

        fp32 = Pipeline.from_onnx(folder)
    step = max(len(frames) // max(calib_frames, 1), 1)
    indices = list(range(0, len(frames), step))[:calib_frames]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(indices)

        def get_next(self):  # noqa: ANN201 - onnxruntime's interface
            i = next(self.it, None)
            if i is None:
                return None
            if fp32 is None:
                return input_arrays([frames[i]], spec)
            return temporal_calibration_arrays(fp32, frames, i)

    import onnx

    out = folder / out_name
    graph = onnx.load(str(folder / "model.onnx"))
    nodes = [n.name for n in graph.graph.node if n.op_type == "Conv"] + residual_adds(graph)
    quantize_static(str(folder / "model.onnx"), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                    op_types_to_quantize=["Conv", "Add"], nodes_to_quantize=nodes,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    model = dedicated_qdq_pairs(onnx.load(str(out)))
    for prop in graph.metadata_props:  # the graph's own record of classes / cameras / config (see export.onnx)
        if prop.key not in {p.key for p in model.metadata_props}:
            model.metadata_props.add(key=prop.key, value=prop.value)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    record_file_hash(folder, out_name)
    return out


def temporal_calibration_arrays(pipe: Any, frames: Any, index: int) -> dict[str, Any]:
    """A temporal graph's inputs for frame ``index`` with a real state: the previous key frame of its scene is run
    first by ``pipe`` (a Pipeline over the FP32 graph); a scene's first frame is a cold start, as at inference."""
    pipe.reset_streams()
    prev = frames.previous_index(index, 1)
    if prev is not None:
        pipe.infer(frames[prev])
    frame = frames[index]
    batch = pipe.prepare(frame)
    return {**batch, **pipe.stream().inputs(frame.scene_token, frame.t0, frame.global_from_ego)}


def _consumers(nodes: Any) -> dict[str, list]:
    """Tensor name -> the nodes that read it, in graph order; a node using a tensor twice (Add(x, x)) is one
    consumer."""
    consumers: dict[str, list] = defaultdict(list)
    for node in nodes:
        for name in dict.fromkeys(node.input):
            consumers[name].append(node)
    return consumers


def residual_adds(model: Any) -> list[str]:
    """Names of the skip-connection Adds of ``model`` (an ``onnx.ModelProto``): both inputs produced by a Conv,
    Relu or MaxPool node, the result consumed only by Relu or Conv nodes. (The fusion's query initialisation, an
    Add of two projections that feeds the attention, and every Add of the geometry fall outside.)"""
    producer = {out: node for node in model.graph.node for out in node.output}
    consumers = _consumers(model.graph.node)
    return [node.name for node in model.graph.node
            if node.op_type == "Add"
            and all(i in producer and producer[i].op_type in ("Conv", "Relu", "MaxPool") for i in node.input)
            and consumers[node.output[0]]
            and all(c.op_type in ("Relu", "Conv") for c in consumers[node.output[0]])]


def dedicated_qdq_pairs(model: Any) -> Any:
    """``model``: an ``onnx.ModelProto`` in QDQ format. Gives every consumer of a QuantizeLinear -> DequantizeLinear
    pair its own copy of the pair (and of its scale and zero-point initializers, so that ONNX Runtime's common
    subexpression elimination does not merge the copies back); modifies and returns ``model``.

    Numerically a no-op: each copy quantises the same tensor with the same parameters. Pairs that reach a graph
    output are left alone. (onnxruntime.quantization's ``DedicatedQDQPair`` option does this only among quantised
    consumers, so a convolution sharing its input with a residual Add still lost its integer kernel.)"""
    import copy

    graph = model.graph
    consumers = _consumers(graph.node)
    initializers = {t.name: t for t in graph.initializer}
    graph_outputs = {o.name for o in graph.output}
    extra_after: dict[int, list] = defaultdict(list)  # index of a Q node -> its copies, inserted right after it
    new_initializers = []
    for index, q in enumerate(graph.node):
        if q.op_type != "QuantizeLinear" or q.output[0] in graph_outputs:
            continue
        dqs = consumers[q.output[0]]
        if not dqs or any(d.op_type != "DequantizeLinear" or d.output[0] in graph_outputs for d in dqs):
            continue
        uses = [(dq, node, i) for dq in dqs for node in consumers[dq.output[0]]
                for i, name in enumerate(node.input) if name == dq.output[0]]
        for k, (dq, node, i) in enumerate(uses[1:], start=1):
            q2, dq2 = copy.deepcopy(q), copy.deepcopy(dq)
            q2.name, dq2.name = f"{q.name}_use{k}", f"{dq.name}_use{k}"
            q2.output[0], dq2.output[0] = f"{q.output[0]}_use{k}", f"{dq.output[0]}_use{k}"
            dq2.input[0] = q2.output[0]
            for n in (q2, dq2):
                for j in (1, 2):  # scale, zero point
                    if j < len(n.input) and n.input[j] in initializers:
                        t = copy.deepcopy(initializers[n.input[j]])
                        t.name = f"{n.input[j]}_{n.name}"
                        new_initializers.append(t)
                        n.input[j] = t.name
            node.input[i] = dq2.output[0]
            extra_after[index] += [q2, dq2]
    if extra_after:
        nodes = []
        for index, node in enumerate(graph.node):
            nodes.append(copy.deepcopy(node))
            nodes.extend(extra_after.get(index, []))  # after Q: its input is computed, so still topological
        used = {name for n in nodes for name in n.input} | graph_outputs
        nodes = [n for n in nodes if n.op_type != "DequantizeLinear" or n.output[0] in used]  # DQs left unused
        used = {name for n in nodes for name in n.input} | graph_outputs
        nodes = [n for n in nodes if n.op_type != "QuantizeLinear" or n.output[0] in used]  # and their Qs
        del graph.node[:]
        graph.node.extend(nodes)
        graph.initializer.extend(new_initializers)
    return model
