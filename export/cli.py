"""perception-export: a checkpoint to an ONNX graph within the TensorRT-native op budget, with model.json."""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from perception.cli.common import EXIT_OK, HelpFormatter, checkpoint_errors, error_line, number, run
from perception.outputs import OutputError, atomic_write, folder_output

EXAMPLES = """examples:
  perception-export --checkpoint checkpoints/synthetic_tiny.pt --out exports/tiny
  perception-export --checkpoint checkpoints/synthetic_tiny.pt --out exports/tiny --int8 \\
      --dataroot data/synth --version v1.0-synth --split synth_train --calib-frames 16
  perception-test --onnx exports/tiny --dataroot data/synth --version v1.0-synth --split synth_val --out eval/onnx
  perception-test --onnx exports/tiny --precision int8 ...          # the INT8 Q/DQ graph in ONNX Runtime
  perception-engine build --onnx exports/tiny --precision fp16 --out engines/tiny_fp16   # on the target GPU
  perception-export --checkpoint checkpoints/synthetic_tiny.pt --out exports/tiny_wide \
      --rig my_vehicle.yaml --cameras-per-voxel 3     # a rig whose cameras overlap three-fold (see the warning)

Writes OUT/model.onnx (opset 17, simplified with onnxslim, onnx.checker + shape inference + the op budget
checked; classes, camera channels and config hash also in the graph's metadata) and OUT/model.json
(inputs/outputs with shapes and dtypes, classes, preprocessing config, the sha256 of each graph file and of the
weights, checked by every runtime on load);
with --int8 also OUT/model_int8.onnx (explicit Q/DQ on the convolutions, symmetric int8, calibrated on
--calib-frames Frames of --dataroot/--version/--split).
Everything is written into a staging folder beside OUT and renamed to OUT when complete: an interrupted export
leaves an existing OUT as it was, and OUT never mixes two exports. An OUT holding files is refused unless
--overwrite (which replaces the whole folder); an OUT in use by another export (.OUT.lock) is refused.
The camera count, image size and batch are fixed at export; the calibration (img_from_ego) stays an input.
exit codes: 0 ok; 1 invalid input (checkpoint, rig, budget violation, --int8 or --check-parity without --dataroot,
parity outside tolerance); 2 bad arguments."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perception-export", description=__doc__, epilog=EXAMPLES,
                                formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="export folder")
    p.add_argument("--overwrite", action="store_true", help="replace the export (the whole folder) in --out")
    p.add_argument("--config", help="export with this config instead of the one stored in the checkpoint: the "
                                    "network is rebuilt from it and loaded with the checkpoint's weights, which "
                                    "must fit (e.g. another input image_size or cameras_per_voxel; not another "
                                    "backbone or width: a clear error names the mismatched weights)")
    p.add_argument("--rig", help="rig YAML deciding the camera count (default: the config's rig)")
    p.add_argument("--cameras-per-voxel", type=number(int, min=0, max=64), metavar="K",
                   help="cameras the camera lift samples per voxel (model.camera.cameras_per_voxel; 0: every "
                        "camera). The weights do not depend on it: raise it for a rig whose cameras overlap more "
                        "(the export reports the rig's overlap)")
    p.add_argument("--opset", type=number(int, min=13, max=21), default=17)
    p.add_argument("--batch", type=number(int, min=1, max=256), default=1)
    p.add_argument("--no-simplify", action="store_true", help="skip onnxslim")
    p.add_argument("--int8", action="store_true", help="also write model_int8.onnx: explicit Q/DQ INT8, calibrated on "
                                                       "Frames of --dataroot/--version/--split")
    p.add_argument("--calib-frames", type=number(int, min=1), default=16)
    p.add_argument("--check-parity", type=number(int, min=0), default=0, metavar="N",
                   help="after exporting, compare ONNX Runtime with PyTorch on N Frames of --dataroot/--version/"
                        "--split (decoded detections, stated tolerances; OUT/parity.json); exit 1 if they differ")
    p.add_argument("--dataroot")
    p.add_argument("--version", default="v1.0-synth")
    p.add_argument("--split", default="synth_train")
    return p


def example_inputs(cfg, n_cameras: int, batch: int) -> dict[str, np.ndarray]:
    """Inputs of the right shapes and dtypes (values matter only for parity checks, not for the graph)."""
    h, w = cfg.data.image_size
    p, f = cfg.data.radar.max_points, len(cfg.data.radar.fields)
    pp, npts = cfg.model.radar.max_pillars, cfg.model.radar.max_points_per_pillar
    rng = np.random.default_rng(0)
    eye = np.tile(np.eye(4, dtype=np.float32), (batch, n_cameras, 1, 1))
    eye[..., 0, 0] = eye[..., 1, 1] = 0.5 * w
    return {"images": rng.integers(0, 255, (batch, n_cameras, 3, h, w), dtype=np.uint8),
            "img_from_ego": eye, "camera_valid": np.ones((batch, n_cameras), bool),
            "radar_points": np.zeros((batch, p, f), np.float32), "radar_valid": np.zeros((batch, p), bool),
            "pillar_features": np.zeros((batch, pp, npts, 9), np.float32),
            "pillar_point_mask": np.zeros((batch, pp, npts), bool),
            "pillar_cells": np.full((batch, pp), cfg.data.grid.bev_shape[0] * cfg.data.grid.bev_shape[1], np.int64),
            "pillar_mask": np.zeros((batch, pp), bool), **temporal_example(cfg, batch)}


def temporal_example(cfg, batch: int) -> dict[str, np.ndarray]:
    """A temporal network's state inputs (``TEMPORAL_INPUT_NAMES``): a warm state moved by 2 m and 5 degrees, so
    that the parity check exercises the warp; empty for a single-frame config."""
    if not cfg.model.temporal.enabled:
        return {}
    rng = np.random.default_rng(1)
    c, s = np.cos(np.radians(5.0)), np.sin(np.radians(5.0))
    motion = np.array([[c, -s, 0, 2.0], [s, c, 0, 0.3], [0, 0, 1, 0], [0, 0, 0, 1]], np.float32)
    return {"prev_bev": rng.normal(size=(batch, cfg.model.fusion.channels, *cfg.data.grid.bev_shape)).astype(np.float32),
            "cur_from_prev": np.tile(motion, (batch, 1, 1)), "prev_dt": np.full(batch, 0.5, np.float32),
            "prev_valid": np.ones(batch, bool)}


def export_checkpoint(checkpoint: str | Path, out: str | Path, opset: int = 17, batch: int = 1,
                      simplify: bool = True, rig_path: str | Path | None = None,
                      cameras_per_voxel: int | None = None, config_path: str | Path | None = None,
                      build_options: dict | None = None) -> dict:
    """Writes OUT/model.onnx and OUT/model.json; returns the metadata. ``config_path``: build the network from
    that config instead of the checkpoint's and load the checkpoint's weights into it (strict). ``cameras_per_voxel``
    overrides model.camera.cameras_per_voxel (the same weights; only the lift's sampling changes).
    ``build_options``: keyword arguments of ``build_model`` (other forms of blocks, for before/after benchmarks)."""
    import onnx
    import torch

    from calibration.io import load_rig
    from export.budget import check_budget
    from export.onnx import GEOMETRY_INPUTS, export_onnx, fp32_geometry_nodes, stamp_metadata
    from perception.config import config_hash, config_to_dict, rig_path as cfg_rig_path
    from perception.coverage import rig_coverage
    from export.onnx import graph_output_names
    from perception.model.network import STATE_OUTPUT, TEMPORAL_INPUT_NAMES
    from perception.pipeline import load_network
    from perception.runtime.onnxruntime import MODEL_JSON_SCHEMA, file_sha256
    from perception.train.checkpoint import weights_sha256

    overrides = [] if cameras_per_voxel is None else [f"model.camera.cameras_per_voxel={cameras_per_voxel}"]
    net, cfg, stereo = load_network(checkpoint, config_path, overrides, **(build_options or {}))
    net.eval()
    rig = load_rig(rig_path or cfg_rig_path(cfg))
    n_cams = len(rig.cameras)
    arrays = example_inputs(cfg, n_cams, batch)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    input_names, output_names = net.input_names, graph_output_names(net)
    path = export_onnx(net, [torch.from_numpy(arrays[k]) for k in input_names], out / "model.onnx", opset)
    model = onnx.load(str(path))
    if simplify:
        import onnxslim

        model = onnxslim.slim(model)
    identity = {"classes": list(cfg.classes), "camera_channels": list(rig.cameras), "config_hash": config_hash(cfg)}
    stamp_metadata(model, identity)
    onnx.save(model, str(path))
    onnx.checker.check_model(model)
    model = onnx.shape_inference.infer_shapes(model)
    counts = check_budget(model)
    with torch.no_grad():
        ref = net.detect(*[torch.from_numpy(arrays[k]) for k in input_names])
    outputs = [{"name": n, "shape": list(ref[n].shape), "dtype": str(ref[n].numpy().dtype)} for n in output_names]
    meta = {
        "schema": MODEL_JSON_SCHEMA, "opset": opset, "batch": batch,
        "inputs": [{"name": k, "shape": list(arrays[k].shape), "dtype": str(arrays[k].dtype)} for k in input_names],
        "outputs": outputs, **identity,
        # a temporal graph's state: the runners feed state_inputs and keep state_output (perception/streaming.py)
        "temporal": {"state_inputs": list(TEMPORAL_INPUT_NAMES), "state_output": STATE_OUTPUT,
                     "state_shape": list(net.state_shape)} if net.temporal is not None else None,
        "stereo_pairs": [list(p) for p in stereo], "config": config_to_dict(cfg),
        "checkpoint_sha256": hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()[:16],
        "weights_sha256": weights_sha256(net.state_dict()), "files": {"model.onnx": file_sha256(path)},
        "op_counts": counts,
    }
    if cfg.model.camera.enabled:
        cov = rig_coverage(cfg, rig)
        meta["lift_coverage"] = {"voxels_by_camera_count": list(cov.counts),
                                 "cameras_per_voxel": cov.cameras_per_voxel, "voxels_over": cov.voxels_over,
                                 "summary": cov.summary()}
    # the layers a reduced-precision TensorRT build keeps in FP32, for trtexec --layerPrecisions (docs/deploy.md)
    meta["fp32_layers"] = {"inputs": list(GEOMETRY_INPUTS), "layers": fp32_geometry_nodes(model)}
    atomic_write(out / "model.json", json.dumps(meta, indent=1))
    return meta


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if (args.int8 or args.check_parity) and not args.dataroot:
        raise CheckpointErrorArgs("--int8 and --check-parity need --dataroot (and --version/--split) for Frames")
    with folder_output(args.out, args.overwrite, what="an export") as staging:
        return _export(args, staging)


def _export(args: argparse.Namespace, staging: Path) -> int:
    """The whole export into ``staging``; folder_output renames it to --out when this returns (also after a parity
    failure, whose parity.json explains the exit 1)."""
    meta = export_checkpoint(args.checkpoint, staging, args.opset, args.batch, not args.no_simplify, args.rig,
                             args.cameras_per_voxel, args.config)
    ops = sum(meta["op_counts"].values())
    print(f"wrote {Path(args.out) / 'model.onnx'} (opset {meta['opset']}, {ops} nodes, {len(meta['op_counts'])} op "
          f"types, all TensorRT-native) and model.json")
    if "lift_coverage" in meta:
        cov = meta["lift_coverage"]
        print(("warning: " if cov["voxels_over"] else "") + f"rig {meta['camera_channels']}: {cov['summary']}",
              file=sys.stderr if cov["voxels_over"] else sys.stdout)
    if args.int8:
        import onnx

        from export.budget import check_budget
        from export.quantize import quantize_int8
        from perception.config import config_from_dict
        from perception.data.nuscenes import NuScenesFrames

        cfg = config_from_dict(meta["config"])
        path = quantize_int8(staging, NuScenesFrames(cfg, args.dataroot, args.version, args.split), args.calib_frames)
        counts = check_budget(onnx.load(str(path)))
        print(f"wrote {Path(args.out) / path.name}: {counts.get('QuantizeLinear', 0)} Q/DQ pairs (convolutions and skip-connection Adds), "
              f"calibrated on {args.calib_frames} Frames of {args.split}")
    if args.check_parity:
        from export.verify import detection_parity
        from perception.data.nuscenes import NuScenesFrames
        from perception.pipeline import Pipeline

        ref = Pipeline.from_checkpoint(args.checkpoint, score_threshold=0.0)
        frames = NuScenesFrames(ref.cfg, args.dataroot, args.version, args.split)
        n = min(args.check_parity, len(frames))
        par = detection_parity(ref, Pipeline.from_onnx(staging, score_threshold=0.0), (frames[i] for i in range(n)))
        atomic_write(staging / "parity.json", json.dumps(par, indent=1))
        print(f"parity ONNX Runtime vs PyTorch on {par['frames']} Frames of {args.split}: max |d score| "
              f"{par['score']:.1e}, max |d box| {par['box']:.1e} m over {par['strong_detections']} confident "
              f"detections: {'ok' if par['ok'] else 'DIFFERENT'} (tolerances {par['tolerances']})")
        if not par["ok"]:
            print(error_line(ParityError(f"ONNX Runtime differs from PyTorch beyond tolerance; see "
                                         f"{Path(args.out) / 'parity.json'}")), file=sys.stderr)
            return 1  # the export is still published (its parity.json says why it failed)
    return EXIT_OK


class ParityError(ValueError):
    """The exported graph does not reproduce PyTorch within tolerance."""


class CheckpointErrorArgs(ValueError):
    """Inconsistent export options."""


def _errors() -> tuple[type[BaseException], ...]:
    from export.budget import BudgetError

    from perception.runtime.onnxruntime import RuntimeConfigError

    return (BudgetError, CheckpointErrorArgs, ParityError, OutputError, RuntimeConfigError, *checkpoint_errors())


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv, _errors)  # errors resolved lazily: --help works without torch


if __name__ == "__main__":
    raise SystemExit(main())
