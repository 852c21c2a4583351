"""perception-infer: one frame in, detections out (nuScenes results JSON and a preview picture).

The model: a PyTorch checkpoint, an ONNX export (ONNX Runtime) or a TensorRT engine folder; with --onnx or
--engine no torch is imported. The frame: one entry of an mmdet3d v1.1 info file, one sample of a nuScenes-format
root, or raw files with the rig they were captured with. The logic is perception.infer (a library)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from perception.cli.common import EXIT_OK, HelpFormatter, number, run
from perception.outputs import folder_output

EXAMPLES = """examples:
  perception-infer --checkpoint checkpoints/synthetic_tiny.pt --out infer/demo \\
      --info ../shared/realdata/nuscenes_demo/n015-2018-07-24-11-22-45+0800.pkl --index 0
  perception-infer --onnx demo_out/export --out infer/synth \\
      --dataroot demo_out/synth --version v1.0-synth --sample-token 3f6e...
  perception-infer --checkpoint ckpt.pt --out infer/raw --rig configs/rigs/nuscenes.yaml \\
      --image CAM_FRONT=front.jpg --image CAM_BACK=back.jpg --radar RADAR_FRONT=front.pcd --lidar top.pcd.bin
  perception-infer --engine engines/tiny_fp16 --out infer/trt --info infos_val.pkl --index 12 --data-prefix /data/nuscenes

Sources (exactly one):
  --info FILE.pkl [--index I] [--data-prefix DIR]   one entry of an mmdet3d v1.1 info file (no OpenMMLab needed);
        images at DIR/img_path, default: beside the info file or under its samples/<CAM>/; GT boxes come with it
  --dataroot D --version V --sample-token T          one sample of a nuScenes-format root (any version, v1.0-test
        included), built exactly as training and perception-test build it
  --rig RIG.yaml --image CHANNEL=PATH ...            raw files: JPEG/PNG images (any size of the rig's aspect
        [--radar CHANNEL=PATH ...] [--lidar PATH]    ratio), radar sweeps (.pcd nuScenes, .bin View-of-Delft, in
                                                     the radar's frame), lidar (.pcd.bin / .bin / .npy; preview
                                                     only); cameras without an image are masked; no pose: ego = global

Writes OUT/results_nusc.json (nuScenes detection result format with its meta block, global frame; checked with
the devkit's loader) and OUT/preview.png (cameras with the 3D boxes; BEV with boxes, heading, velocity arrows,
forecast modes with probabilities, GT boxes in grey, radar and lidar points); prints one summary line
(--json: the whole summary).
exit codes: 0 ok; 1 invalid input (the message names file, sensor, field and value); 2 bad arguments."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perception-infer", description=__doc__, epilog=EXAMPLES,
                                formatter_class=HelpFormatter)
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", help="PyTorch checkpoint (carries its config)")
    model.add_argument("--onnx", metavar="DIR", help="export folder (model.onnx, model.json): ONNX Runtime, no torch")
    model.add_argument("--engine", metavar="DIR", help="TensorRT engine folder (perception-engine build), no torch")
    p.add_argument("--precision", choices=["fp32", "int8"], default="fp32",
                   help="with --onnx: model.onnx or the INT8 Q/DQ graph model_int8.onnx")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder (written in a staging folder and swapped in whole; refused while another run "
                        "writes there)")
    p.add_argument("--overwrite", action="store_true", help="replace the results an existing --out holds")
    info = p.add_argument_group("source: an mmdet3d info entry")
    info.add_argument("--info", metavar="FILE.pkl", help="mmdet3d v1.1 info file")
    info.add_argument("--index", type=number(int, min=0), default=0, help="entry of its data_list")
    info.add_argument("--data-prefix", metavar="DIR", help="folder the entries' img_path names are relative to")
    nusc = p.add_argument_group("source: a nuScenes sample")
    nusc.add_argument("--dataroot")
    nusc.add_argument("--version", help="e.g. v1.0-mini, v1.0-test, v1.0-synth")
    nusc.add_argument("--sample-token")
    raw = p.add_argument_group("source: raw files")
    raw.add_argument("--rig", metavar="RIG.yaml", help="the rig the files were captured with")
    raw.add_argument("--image", action="append", default=[], metavar="CHANNEL=PATH", help="a camera image (repeat)")
    raw.add_argument("--radar", action="append", default=[], metavar="CHANNEL=PATH", help="a radar sweep (repeat)")
    raw.add_argument("--lidar", metavar="PATH", help="a lidar sweep, drawn in the preview (not a model input)")
    p.add_argument("--score-threshold", type=number(float, min=0, max=1), default=0.05, help="detections above this score are kept")
    p.add_argument("--json", action="store_true", help="print the whole summary as JSON")
    return p


def _source_kind(p: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """Exactly one source, complete; anything else is a usage error (exit 2)."""
    given = {"info": args.info is not None, "sample": any(v is not None for v in (args.dataroot, args.version,
                                                                                   args.sample_token)),
             "files": args.rig is not None or bool(args.image or args.radar or args.lidar)}
    kinds = [k for k, v in given.items() if v]
    if len(kinds) != 1:
        p.error("give exactly one source: --info FILE.pkl, or --dataroot/--version/--sample-token, or --rig with "
                f"--image CHANNEL=PATH ...; got {kinds or 'none'}")
    if kinds == ["sample"]:
        missing = [f"--{n.replace('_', '-')}" for n in ("dataroot", "version", "sample_token") if getattr(args, n) is None]
        if missing:
            p.error(f"a nuScenes sample needs --dataroot, --version and --sample-token; missing {missing}")
    if kinds == ["files"] and (args.rig is None or not args.image):
        p.error("raw files need --rig RIG.yaml and at least one --image CHANNEL=PATH")
    if args.index != 0 and kinds != ["info"] or args.data_prefix and kinds != ["info"]:
        p.error("--index and --data-prefix go with --info")
    return kinds[0]


def _pipeline(args: argparse.Namespace):
    from perception.pipeline import Pipeline

    if args.onnx:
        return Pipeline.from_onnx(args.onnx, score_threshold=args.score_threshold,
                                  model_file="model_int8.onnx" if args.precision == "int8" else "model.onnx")
    if args.engine:
        return Pipeline.from_engine(args.engine, score_threshold=args.score_threshold)
    from perception.infer import InferInputError
    from perception.train.checkpoint import CheckpointError  # imports torch: only on this path

    try:
        return Pipeline.from_checkpoint(args.checkpoint, score_threshold=args.score_threshold)
    except CheckpointError as err:
        raise InferInputError(f"CheckpointError: {err}") from None


def _infer(args: argparse.Namespace, kind: str, out_dir: Path) -> tuple[dict, object]:
    from perception import infer

    pipe = _pipeline(args)
    if kind == "info":
        source = infer.frame_from_info(pipe.cfg, args.info, args.index, args.data_prefix)
    elif kind == "sample":
        source = infer.frame_from_sample(pipe.cfg, args.dataroot, args.version, args.sample_token)
    else:
        source = infer.frame_from_files(pipe.cfg, args.rig, infer.parse_assignments(args.image, "--image"),
                                        infer.parse_assignments(args.radar, "--radar"), args.lidar,
                                        infer.exported_cameras(pipe))
    return infer.infer_one(pipe, source, out_dir), source


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    kind = _source_kind(parser, args)
    if args.precision != "fp32" and not args.onnx:
        parser.error("--precision applies to --onnx (an engine's precision is fixed when it is built)")
    with folder_output(args.out, args.overwrite, what="inference results") as staging:
        summary, source = _infer(args, kind, staging)
    out = Path(args.out)
    summary["results"], summary["preview"] = str(out / "results_nusc.json"), str(out / "preview.png")
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        by_class = ", ".join(f"{n} {c}" for n, c in sorted(summary["by_class"].items())) or "none"
        masked = [c for c, v in summary["cameras"].items() if not v]
        print(f"{source.description}: {summary['detections']} detections ({by_class}); {summary['gt_boxes']} GT "
              f"boxes; {summary['radar_points']} radar points; masked cameras: {masked or 'none'}; wrote "
              f"{summary['results']} and {summary['preview']}")
        for issue in summary["issues"][:5]:
            print(f"note: {issue}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    from perception.data.nuscenes import DatasetError
    from perception.eval.detection import ResultsFormatError
    from perception.infer import InferInputError
    from perception.integrations.mmdet3d.infos import InfoError
    from perception.runtime.onnxruntime import RuntimeConfigError
    from perception.runtime.tensorrt import TensorRTNotAvailable

    return run(_main, argv, (InferInputError, DatasetError, InfoError, RuntimeConfigError, ResultsFormatError,
                             TensorRTNotAvailable))


if __name__ == "__main__":
    raise SystemExit(main())
