"""The exported-op budget: ONNX op types TensorRT 10 runs natively (no plugins), and the checks an exported
graph must pass (op types, GridSample input ranks via shape inference, no custom domains)."""
from __future__ import annotations

from typing import Any

ALLOWED_OPS = frozenset({
    "Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Exp", "Log", "Abs",
    "Neg", "Reciprocal", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Erf", "Softmax", "LayerNormalization",
    "BatchNormalization", "GridSample", "Gather", "GatherElements", "TopK", "MaxPool", "AveragePool",
    "GlobalAveragePool", "Resize", "Concat", "Slice", "Split", "Reshape", "Transpose", "Flatten", "Squeeze",
    "Unsqueeze", "Expand", "Tile", "Pad", "Cast", "Constant", "ConstantOfShape", "Shape", "Identity", "Where",
    "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "IsNaN", "Clip", "Min", "Max",
    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "Floor", "Ceil", "Round", "Sin", "Cos", "Atan", "Mod",
    "Range", "ArgMax", "CumSum", "ScatterElements", "ScatterND", "QuantizeLinear", "DequantizeLinear",
})


class BudgetError(ValueError):
    """An exported graph uses something TensorRT 10 cannot run natively."""


def check_budget(model: Any) -> dict[str, int]:
    """model: an ``onnx.ModelProto``. Raises BudgetError naming every violation; returns op-type counts.

    Checks: every node's op type is in ``ALLOWED_OPS`` and in the default domain; scatters have no reduction;
    every GridSample input is 4-D after shape inference (5-D GridSample is outside the budget)."""
    import onnx
    from onnx import shape_inference

    inferred = shape_inference.infer_shapes(model)
    ranks: dict[str, int] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            ranks[vi.name] = len(vi.type.tensor_type.shape.dim)
    for init in inferred.graph.initializer:
        ranks[init.name] = len(init.dims)
    problems: list[str] = []
    counts: dict[str, int] = {}

    def visit(graph: Any) -> None:
        for node in graph.node:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
            if node.domain not in ("", "ai.onnx"):
                problems.append(f"node {node.name}: custom domain '{node.domain}' (op {node.op_type})")
            if node.op_type not in ALLOWED_OPS:
                problems.append(f"node {node.name}: op {node.op_type} is outside the TensorRT-native budget")
            if node.op_type in ("ScatterElements", "ScatterND"):
                for attr in node.attribute:
                    if attr.name == "reduction" and onnx.helper.get_attribute_value(attr) not in (b"none", "none"):
                        problems.append(f"node {node.name}: {node.op_type} with reduction "
                                        f"{onnx.helper.get_attribute_value(attr)!r}")
            if node.op_type == "GridSample":
                for name in node.input[:2]:
                    rank = ranks.get(name)
                    if rank is None:
                        problems.append(f"node {node.name}: GridSample input {name} has no inferred rank")
                    elif rank != 4:
                        problems.append(f"node {node.name}: GridSample input {name} is {rank}-D (only 4-D allowed)")
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g)

    visit(inferred.graph)
    if problems:
        raise BudgetError("; ".join(problems))
    return counts
