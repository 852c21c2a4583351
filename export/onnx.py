"""Export the fusion network to ONNX: preprocessed arrays in, decoded fixed-size detections out.

The graph wraps the same modules used in training (``FusionNet.detect``), never copies of them. Checked with
``onnx.checker``, shape inference and the TensorRT-native op budget (``export.budget``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from export.tensorrt import GEOMETRY_INPUTS
from perception.model.decode import OUTPUT_NAMES
from perception.model.network import STATE_OUTPUT, FusionNet

RAW_OUTPUT_NAMES = ("heatmap", "offset", "z", "log_size", "rotation", "velocity", "traj_offsets", "traj_mode_logits")


def graph_output_names(net: FusionNet, raw: bool = False) -> tuple[str, ...]:
    """The exported graph's outputs: ``OUTPUT_NAMES`` (or ``RAW_OUTPUT_NAMES``), then ``bev_state`` when the
    network is temporal (its inputs: ``net.input_names``)."""
    names = RAW_OUTPUT_NAMES if raw else OUTPUT_NAMES
    return names + ((STATE_OUTPUT,) if net.temporal is not None else ())


class DetectGraph(nn.Module):
    """FusionNet.detect as a module with tuple outputs in ``graph_output_names`` order (ONNX needs a flat
    signature)."""

    def __init__(self, net: FusionNet):
        super().__init__()
        self.net = net

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        out = self.net.detect(*inputs)
        return tuple(out[name] for name in graph_output_names(self.net))


class RawGraph(nn.Module):
    """FusionNet.forward with tuple outputs in ``graph_output_names(raw=True)`` order (parity checks on head
    maps)."""

    def __init__(self, net: FusionNet):
        super().__init__()
        self.net = net

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        out = self.net(*inputs)
        return tuple(out[name] for name in graph_output_names(self.net, raw=True))


def stamp_metadata(model, meta: dict) -> None:
    """Write model.json's identity fields into the ONNX graph (metadata_props): classes, camera channels and
    config hash travel inside the graph file, so a model.json from another export is detected on load
    (``perception.runtime.onnxruntime.check_graph_metadata``)."""
    import json

    from perception.runtime.onnxruntime import GRAPH_META_KEYS

    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in GRAPH_META_KEYS]
    del model.metadata_props[:]
    for key, value in kept:
        model.metadata_props.add(key=key, value=value)
    for key, field in GRAPH_META_KEYS.items():
        value = meta[field]
        model.metadata_props.add(key=key, value=value if isinstance(value, str) else json.dumps(value))


def export_onnx(net: FusionNet, example: Sequence[Tensor], path: str | Path, opset: int = 17,
                raw: bool = False) -> Path:
    """Export ``net`` (eval mode) with the example inputs (``net.input_names`` order: ``INPUT_NAMES``, then the
    temporal inputs of a temporal network) to ``path``; check it.

    Uses the TorchScript-based exporter (``dynamo=False``): it produces plain ONNX ops for grid_sample, gather and
    scatter within the budget, with static shapes (batch fixed by the example)."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = RawGraph(net) if raw else DetectGraph(net)
    graph.eval()
    names = graph_output_names(net, raw)
    with torch.no_grad():
        torch.onnx.export(graph, tuple(example), str(path), input_names=list(net.input_names), output_names=list(names),
                          opset_version=opset, dynamo=False, do_constant_folding=True)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    return path


def fp32_geometry_nodes(model: "onnx.ModelProto", inputs: Sequence[str] = GEOMETRY_INPUTS) -> list[str]:
    """Names of the nodes a reduced-precision TensorRT build must keep in FP32, from the ONNX graph alone: every
    node computed from ``inputs`` whose outputs are floating point, following the data flow up to the
    convolutions and up to and including the GridSample nodes that consume the grids (their outputs are image
    features again). Integer and boolean nodes (masks, indices) are followed but not listed. The same rule as
    ``export.tensorrt.pin_geometry_fp32`` applies to the parsed TensorRT network; TensorRT's ONNX parser names
    layers after these nodes, so the list feeds trtexec's ``--layerPrecisions`` (docs/deploy.md)."""
    import onnx

    graph = onnx.shape_inference.infer_shapes(model).graph
    elem = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.value_info, *graph.output]}
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
    tainted = {i.name for i in graph.input} & set(inputs)
    out = []
    for node in graph.node:  # ONNX graphs are topologically sorted
        if node.op_type in ("Conv", "ConvTranspose") or not any(i in tainted for i in node.input):
            continue
        outs = [o for o in node.output if o]
        if outs and all(elem.get(o) in floats for o in outs):
            out.append(node.name)
        if node.op_type != "GridSample":
            tainted.update(outs)
    return out
