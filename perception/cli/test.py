"""perception-test: score a model (or the GT oracle) on a nuScenes-format split with the official devkit metrics,
forecasting metrics against a constant-velocity baseline, latency, and a report."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from perception.cli.common import EXIT_OK, HelpFormatter, checkpoint_errors, number, run, torch_device
from perception.outputs import OutputError, folder_output

EXAMPLES = """examples:
  perception-test --checkpoint checkpoints/synthetic_tiny.pt --dataroot data/synth --version v1.0-synth \\
      --split synth_val --out eval/tiny
  perception-test --oracle gt --config configs/synthetic_tiny.yaml --dataroot data/synth --version v1.0-synth \\
      --split synth_val --out eval/oracle                                 # NDS 1.000 by construction
  perception-test --checkpoint ckpt.pt ... --drop-sensors CAM_FRONT,RADAR_FRONT --calib-noise-deg 1.0
  torchrun --no-python --nproc_per_node 2 perception-test --checkpoint ckpt.pt ...   # sharded, same metrics
                                                     # (a temporal model: by scene, each scene in time order)
  perception-test --onnx exports/tiny ...            # ONNX Runtime (--precision int8: the Q/DQ graph)
  perception-test --engine engines/tiny_fp16 ...     # TensorRT engine from perception-engine build
  perception-test --checkpoint ckpt.pt --dataroot data/nuscenes --version v1.0-test --split test \\
      --out submission --results-only                # the submission JSON (checked by the devkit's loader)

Scenes run in time order; a temporal model (model.temporal) carries its state from frame to frame within a scene.
Writes OUT/results_nusc.json, metrics_summary.json and metrics_details.json (nuscenes-devkit), plots/ (devkit PR
curves), trajectory_metrics.json, latency.json, depth_metrics.json (with --checkpoint on data with lidar: camera
depth AbsRel and delta<1.25 against lidar, all and inside GT boxes), report.md with pictures (BEV snapshots: boxes
with heading, velocity and every forecast mode beside the GT), cold_start/ (the devkit's metrics on each scene's
first frame apart from the later frames, also in summary.json and report.md); prints one summary line (after a
depth line when measured) and a cold-start line. With --results-only: results_nusc.json only. They are written into a staging folder beside OUT and
renamed to OUT at the end (an interrupted run leaves an existing OUT intact); an OUT holding files is refused
unless --overwrite, one in use by another run (.OUT.lock) is refused.
exit codes: 0 ok; 1 invalid input (checkpoint, dataset, options); 2 bad arguments."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perception-test", description=__doc__, epilog=EXAMPLES,
                                formatter_class=HelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="PyTorch checkpoint (carries its config)")
    src.add_argument("--onnx", help="export folder with model.onnx and model.json")
    src.add_argument("--engine", help="TensorRT engine folder (perception-engine build: model.engine, engine.json, "
                                      "model.json)")
    src.add_argument("--oracle", choices=["gt"], help="feed GT through the same path (sanity check: NDS 1.000)")
    p.add_argument("--precision", choices=["fp32", "int8"], default="fp32",
                   help="with --onnx: model.onnx or the INT8 Q/DQ graph model_int8.onnx")
    p.add_argument("--dataroot", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace the results already in --out")
    p.add_argument("--config", help="config (required with --oracle; overrides the checkpoint's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--drop-sensors", default="", help="comma-separated channels masked in every frame")
    p.add_argument("--calib-noise-deg", type=number(float, min=0.0, max=180.0), default=0.0, help="random extrinsic rotation error per sensor")
    p.add_argument("--no-history", action="store_true",
                   help="temporal networks: reset the state before every frame (each a cold start), to measure "
                        "what the history adds; an error for a single-frame network")
    p.add_argument("--max-samples", type=number(int, min=1), help="score only the first N samples of the split")
    p.add_argument("--seed", type=number(int, min=0), default=0, help="seed of the calibration noise")
    p.add_argument("--device", type=torch_device,
                   help="torch device for --checkpoint (default: cuda:LOCAL_RANK if CUDA is available, else cpu)")
    p.add_argument("--results-only", action="store_true",
                   help="for splits without annotations (v1.0-test): write OUT/results_nusc.json (the submission "
                        "format, meta block included), checked with the devkit's loader; no evaluation")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (ours nor the devkit's)")
    return p


class BackendNotAvailable(ValueError):
    """A backend that cannot run here (TensorRT not installed) or an option it does not take."""


def _main(argv: Sequence[str] | None) -> int:
    import os

    args = build_parser().parse_args(argv)
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 alone writes (and claims) --out
        return _score(args, args.out)
    with folder_output(args.out, args.overwrite) as staging:
        return _score(args, staging)


def _score(args: argparse.Namespace, out: str | Path) -> int:
    from perception.config import config_from_dict, config_to_dict, load_config
    from perception.data.nuscenes import NuScenesFrames
    from perception.eval.benchmark import model_predictor, one_line, oracle_predictor, run_benchmark

    if args.engine and args.precision != "fp32":
        raise BackendNotAvailable("--precision applies to --onnx; an engine's precision is fixed when it is built "
                                  "(perception-engine build --precision ...; see engine.json)")
    if args.oracle:
        if not args.config:
            raise BackendNotAvailable("--oracle gt needs --config (the data section decides the Frames)")
        cfg = load_config(args.config, args.set)
        frames = NuScenesFrames(cfg, args.dataroot, args.version, args.split)
        predict = oracle_predictor(frames.nusc)
    else:
        from perception.pipeline import Pipeline

        if args.onnx:
            pipe = Pipeline.from_onnx(args.onnx, model_file="model_int8.onnx" if args.precision == "int8" else "model.onnx")
        elif args.engine:
            from perception.runtime.tensorrt import TensorRTNotAvailable

            try:
                pipe = Pipeline.from_engine(args.engine)
            except TensorRTNotAvailable as err:
                raise BackendNotAvailable(f"--engine needs TensorRT: {err}") from None
        else:
            pipe = Pipeline.from_checkpoint(args.checkpoint, device=_device(args.device))
        cfg = load_config(args.config, args.set) if args.config else config_from_dict(config_to_dict(pipe.cfg), args.set)
        if cfg.model != pipe.cfg.model or cfg.classes != pipe.cfg.classes:
            raise BackendNotAvailable("--config/--set changed the model section: the network is fixed by the "
                                      "checkpoint; override data settings only (e.g. data.sync.enabled=false)")
        pipe.cfg = cfg
        frames = NuScenesFrames(cfg, args.dataroot, args.version, args.split)
        if args.no_history and not pipe.temporal:
            raise BackendNotAvailable("--no-history needs a temporal network (model.temporal.enabled in the "
                                      "checkpoint's config); this one is single-frame and has no state to reset")
        predict = model_predictor(pipe, no_history=args.no_history)
    drop = tuple(s.strip() for s in args.drop_sensors.split(",") if s.strip())
    summary = run_benchmark(predict, frames, out, drop_sensors=drop, calib_noise_deg=args.calib_noise_deg,
                            seed=args.seed, max_samples=args.max_samples, progress=not args.no_progress,
                            results_only=args.results_only)
    if summary is not None and args.results_only:
        print(f"wrote {Path(args.out) / 'results_nusc.json'}: {summary['boxes']} boxes over {summary['samples']} "
              "samples, accepted by the nuScenes devkit's loader (no evaluation: --results-only)")
    elif summary is not None:
        if summary.get("depth"):
            from perception.eval.depth import depth_line

            print(depth_line(summary["depth"]))
        cold = summary["cold_start"]
        if cold.get("first_frames") and cold.get("later_frames"):
            print(f"cold start: NDS {cold['first_frames']['nd_score']:.3f} on {cold['first_frames']['samples']} scene "
                  f"first frames, {cold['later_frames']['nd_score']:.3f} on the {cold['later_frames']['samples']} "
                  "later frames (compare models on the same subsets only: classes absent from a subset score 0)")
        print(one_line(summary))
        (Path(out) / "summary.json").write_text(json.dumps({k: summary[k] for k in (
            "nd_score", "mean_ap", "tp_errors", "depth", "cold_start")}, indent=1))
    return EXIT_OK


def _device(requested: str | None) -> str:
    """--device, else one GPU per torchrun process (LOCAL_RANK), else the CPU."""
    if requested:
        return requested
    import os

    import torch

    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"


def _errors() -> tuple[type[BaseException], ...]:
    from perception.data.nuscenes import DatasetError
    from perception.runtime.onnxruntime import RuntimeConfigError

    from perception.eval.detection import ResultsFormatError

    return (DatasetError, BackendNotAvailable, RuntimeConfigError, OutputError, ResultsFormatError,
            *checkpoint_errors())


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv, _errors)  # errors resolved lazily: --onnx/--engine and --help work without torch


if __name__ == "__main__":
    raise SystemExit(main())
