"""TensorRT engines from the exported ONNX files alone (no torch import: this is what runs on a Jetson), with the
TensorRT 10.x Python API (JetPack 6.x on Jetson Orin).

``build_engine(EXPORT_DIR, OUT)`` parses ``model.onnx`` (FP32 / FP16) or the explicit Q/DQ graph
``model_int8.onnx`` (INT8: the Q/DQ scales come from the graph, no calibrator), builds a serialised engine and
writes ``OUT/model.engine``, ``OUT/engine.json`` (schema ``perception-engine/1``) and a copy of ``model.json``,
so that ``Pipeline.from_engine(OUT)`` / ``perception-test --engine OUT`` need nothing else.

Precision: with FP16 or INT8 the builder may run any layer in FP16. The camera geometry computed from the
run-time calibration (``img_from_ego``, radar points projected into the images) is pinned to FP32 by default.
At 256x704 (f ~ 557 px) the projection numerator K(Rp + t) reaches (f + c_x) * 60 m ~ 5.5e4, near FP16's 65504;
the plane sweep's u * d ~ 704 * 60; the determinant in ``inverse_projective`` ~ f^2 ~ 3e5 overflows; and FP16
pixel coordinates above 512 are 0.5 px apart.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from perception.runtime.onnxruntime import read_model_json
from perception.runtime.tensorrt import ENGINE_JSON_SCHEMA, device_info, import_tensorrt

PRECISIONS = ("fp16", "int8", "fp32")
ONNX_FILES = {"fp32": "model.onnx", "fp16": "model.onnx", "int8": "model_int8.onnx"}
# the inputs carrying the run-time geometry: the calibration, the radar points (projected into the images) and a
# temporal network's ego motion (the BEV warp's grid; absent from single-frame graphs)
GEOMETRY_INPUTS = ("img_from_ego", "radar_points", "cur_from_prev")


class EngineBuildError(ValueError):
    """The ONNX file does not parse or the engine does not build (the message names the nodes and the fix)."""


def trtexec_command(onnx_file: str | Path, engine_file: str | Path, precision: str, workspace_gb: float,
                    fp32_layers: Sequence[str] = ()) -> str:
    """The trtexec command building the same engine. ``fp32_layers`` (model.json's ``fp32_layers.layers``, from
    ``export.onnx.fp32_geometry_nodes``): under fp16/int8 these layers are held to FP32 with
    ``--precisionConstraints=obey`` (the build fails rather than run them in FP16) and FP32 outputs."""
    flags = {"fp32": "", "fp16": " --fp16", "int8": " --int8 --fp16"}[precision] + " --noTF32"
    cmd = (f"trtexec --onnx={onnx_file} --saveEngine={engine_file}{flags} "
           f"--memPoolSize=workspace:{round(workspace_gb * 1024)}M")
    if precision != "fp32" and fp32_layers:
        spec = ",".join(f"{name}:fp32" for name in fp32_layers)
        cmd += f" --precisionConstraints=obey '--layerPrecisions={spec}' '--layerOutputTypes={spec}'"
    return cmd


def pin_geometry_fp32(trt: Any, network: Any, inputs: Sequence[str] = GEOMETRY_INPUTS) -> list[str]:
    """Ask for FP32 on every layer computed from the network inputs ``inputs`` (the calibration and the radar
    points), following the data flow up to the convolutions and up to and including the GridSample layers that
    consume the geometry (their outputs are features again). Layers whose outputs are not floating point (masks,
    indices) are followed but not constrained. Returns the names of the constrained layers.

    Layers are visited in network order, which the ONNX parser keeps topological."""
    floats = (trt.float32, trt.float16)
    stop = (trt.LayerType.CONVOLUTION, trt.LayerType.DECONVOLUTION)
    tainted = {network.get_input(i).name for i in range(network.num_inputs)} & set(inputs)
    pinned = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in stop:
            continue
        ins = [layer.get_input(j) for j in range(layer.num_inputs)]
        if not any(t is not None and t.name in tainted for t in ins):
            continue
        outs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if outs and all(o.dtype in floats for o in outs):
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
            pinned.append(layer.name)
        if layer.type != trt.LayerType.GRID_SAMPLE:
            tainted.update(o.name for o in outs)
    return pinned


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _parse_errors(parser: Any) -> str:
    lines = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        lines.append(f"node {e.node()} '{e.node_name()}' ({e.node_operator()}): {e.desc()} [{e.code()}]")
    return "; ".join(lines)


def build_engine(onnx_folder: str | Path, out_folder: str | Path, precision: str = "fp16", workspace_gb: float = 2.0,
                 fp32_geometry: bool = True, verbose: bool = False) -> dict[str, Any]:
    """Build ``<out_folder>/model.engine`` from the export folder ``onnx_folder`` (perception-export's output).

    precision: "fp32"; "fp16" (model.onnx, BuilderFlag.FP16); "int8" (model_int8.onnx, explicit Q/DQ:
    BuilderFlag.INT8 + FP16, no calibrator). workspace_gb: the builder's WORKSPACE memory-pool limit.
    fp32_geometry: pin the calibration-dependent layers to FP32 (``pin_geometry_fp32``) under FP16/INT8.
    Writes model.engine, engine.json and a copy of model.json; returns the engine.json contents.
    Raises TensorRTNotAvailable (with the install hint and the trtexec equivalent) when ``tensorrt`` does not
    import, FileNotFoundError for a missing input, EngineBuildError when parsing or building fails."""
    if precision not in PRECISIONS:
        raise EngineBuildError(f"precision {precision!r} is not one of {PRECISIONS}")
    if workspace_gb <= 0:
        raise EngineBuildError(f"workspace_gb must be positive, got {workspace_gb}")
    src, out = Path(onnx_folder), Path(out_folder)
    meta = read_model_json(src)
    onnx_file = src / ONNX_FILES[precision]
    if not onnx_file.exists():
        fix = ("export the Q/DQ graph with perception-export --int8 --dataroot D ..." if precision == "int8"
               else "export with perception-export --checkpoint CKPT --out " + str(src))
        raise FileNotFoundError(f"{onnx_file} does not exist: {fix}")
    engine_file = out / "model.engine"
    fp32_layers = meta.get("fp32_layers", {}).get("layers", []) if fp32_geometry else []
    trt = import_tensorrt(trtexec_command(onnx_file, engine_file, precision, workspace_gb, fp32_layers))

    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_file)) or parser.num_errors:
        raise EngineBuildError(f"TensorRT's ONNX parser rejected {onnx_file}: {_parse_errors(parser)}; the export "
                               "should stay within export.budget (check_budget), re-export with perception-export")
    net_inputs = {network.get_input(i).name: list(network.get_input(i).shape) for i in range(network.num_inputs)}
    want = {i["name"]: i["shape"] for i in meta["inputs"]}
    if net_inputs != want:
        raise EngineBuildError(f"{onnx_file} inputs {net_inputs} differ from {src / 'model.json'} {want}: the folder "
                               "mixes two exports; re-export")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    flags = []
    if precision in ("fp16", "int8"):
        flags.append("FP16")
    if precision == "int8":
        flags.append("INT8")  # explicit quantisation: scales from the Q/DQ nodes, no int8_calibrator
    pinned: list[str] = []
    if fp32_geometry and precision != "fp32":
        pinned = pin_geometry_fp32(trt, network)
        if pinned:
            flags.append("PREFER_PRECISION_CONSTRAINTS")  # FP32 where asked, with a warning where no kernel exists
    for flag in flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    # TF32 (on by default on Ampere, Orin included) rounds FP32 matmul/conv inputs to 10-bit mantissas: 1e-3
    # relative, 0.7 px at u = 704, in the pinned geometry. FP32 stays FP32.
    config.clear_flag(trt.BuilderFlag.TF32)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT could not build an engine from {onnx_file} (its log above says why); try "
                               "a larger --workspace-gb, or --precision fp32 to tell precision problems apart")
    out.mkdir(parents=True, exist_ok=True)
    tmp = engine_file.with_suffix(".engine.tmp")
    with open(tmp, "wb") as f:
        f.write(serialized)
    os.replace(tmp, engine_file)
    if (src / "model.json").resolve() != (out / "model.json").resolve():
        shutil.copyfile(src / "model.json", out / "model.json")
    sidecar = {
        "schema": ENGINE_JSON_SCHEMA, "tensorrt_version": trt.__version__, "precision": precision,
        "builder_flags": flags, "builder_flags_cleared": ["TF32"], "workspace_gb": workspace_gb, "device": device_info(),
        "onnx_file": onnx_file.name, "onnx_sha256": _sha256(onnx_file),
        "model_json_sha256": _sha256(src / "model.json"), "engine_sha256": _sha256(engine_file),
        "fp32_geometry": {"inputs": list(GEOMETRY_INPUTS) if pinned else [], "layers": pinned},
        "trtexec_equivalent": trtexec_command(onnx_file, engine_file, precision, workspace_gb, fp32_layers),
        "built_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (out / "engine.json").write_text(json.dumps(sidecar, indent=1))
    return sidecar
