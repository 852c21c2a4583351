"""perception-replay: feed a recorded drive (a ROS 2 bag or a nuScenes-format scene) through the perception at
real sensor timing, track what it detects, and write what it saw (Foxglove MCAP, JSONL, PNG previews, report)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from perception.cli.common import EXIT_INPUT, EXIT_OK, HelpFormatter, checkpoint_errors, number, run
from perception.outputs import folder_output

EXAMPLES = """examples:
  perception-replay --bag demo_out/synth/bags/scene-0000 --onnx demo_out/export --out replay/scene-0000   # after make demo
  perception-replay --dataroot data/synth --version v1.0-synth --scene scene-0059 \\
      --checkpoint checkpoints/synthetic_tiny.pt --out replay/s59 --rate 1.0
  perception-replay --bag my_drive.mcap --topics my_topics.yaml --rig my_rig.yaml --engine engines/orin --out r
  perception-replay --bag big_drive --onnx export --out r --no-lidar   # a smaller MCAP, no lidar decoding
  perception-replay --dataroot data/synth --scene scene-0059 --checkpoint temporal.pt --out r_kf --keyframes
                                  # key frames only: the frames perception-test sees (2 Hz)

A temporal model (model.temporal) carries its state from frame to frame, causally: the previous state is the
processed frame nearest to model.temporal.target_gap_s back (0.5 s: the key-frame gap it was trained at); frames
dropped or skipped leave holes, which cold-start the model with a reason counted in report.json's "temporal".

Frames are triggered by the reference camera's image (t0 = its stamp) and emitted --max-wait-ms after it arrived,
with whatever other cameras and radar sweeps arrived by then (late or missing sensors are masked). Writes
OUT/detections.mcap (open it in Foxglove with docs/foxglove_layout.json: /detections with velocity arrows and
every forecast mode, the input /radar and /lidar, /gt boxes where the source has annotations (a nuScenes-format
scene; interpolated between key frames), the camera images),
OUT/detections.jsonl, OUT/preview/*.png and OUT/report.json (every input message accounted for: received = used
+ late + dropped, with reasons; latency percentiles; processing vs sensor rate).
Bags from perception-synth --bags need no --topics; others need a topic map (docs/replay.md).
exit codes: 0 ok (also when messages were dropped: see report.json); 1 invalid input (bag, map, rig, model), or
no frame at all was produced (the main reasons are printed, with counts and an example); 2 bad arguments."""


_POSITIVE = number(float, min=0, min_exclusive=True)


def _rate(text: str) -> float | None:
    """'max' or a positive finite factor of real time."""
    if text == "max":
        return None
    try:
        return _POSITIVE(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be a positive finite number (1.0 = real time) or 'max'; got "
                                         f"'{text}'") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perception-replay", description=__doc__, epilog=EXAMPLES,
                                formatter_class=HelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bag", help="ROS 2 bag: rosbag2 directory (MCAP or sqlite3 storage) or an .mcap file")
    src.add_argument("--dataroot", help="nuScenes-format dataset root (with --version and --scene)")
    p.add_argument("--version", default="v1.0-synth")
    p.add_argument("--scene", help="scene name, e.g. scene-0059 (with --dataroot)")
    p.add_argument("--keyframes", action="store_true",
                   help="with --dataroot: replay only the key-frame camera images (radar sweeps and poses as "
                        "recorded): one frame per key frame, the sequence perception-test scores")
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", help="PyTorch checkpoint")
    model.add_argument("--onnx", help="export folder (model.onnx + model.json)")
    model.add_argument("--engine", help="TensorRT engine folder (perception-engine build)")
    p.add_argument("--precision", choices=["fp32", "int8"], default="fp32",
                   help="with --onnx: model.onnx or the INT8 Q/DQ graph model_int8.onnx")
    p.add_argument("--out", required=True,
                   help="output folder: written in a staging folder and swapped in whole when the replay ends (a "
                        "killed replay leaves the previous results); refused while another run writes there")
    p.add_argument("--overwrite", action="store_true", help="replace the results an existing --out holds")
    p.add_argument("--rate", type=_rate, default=None, metavar="1.0|max",
                   help="playback speed: 1.0 = real time (reports when processing falls behind), max = as fast as "
                        "possible (default)")
    p.add_argument("--topics", help="topic map YAML (schema perception-topics/1); not needed for perception-synth bags")
    p.add_argument("--rig", help="rig YAML: calibration instead of /tf_static + CameraInfo")
    p.add_argument("--reference", default="CAM_FRONT", help="camera whose images trigger frames (t0)")
    p.add_argument("--max-wait-ms", type=number(float, min=0), default=60.0,
                   help="wait after a trigger for the other sensors")
    p.add_argument("--max-frames", type=number(int, min=1), help="stop after N frames")
    p.add_argument("--score-threshold", type=number(float, min=0, max=1), default=0.3,
                   help="detections below it are not output")
    p.add_argument("--preview-every", type=number(int, min=0), default=10,
                   help="write a PNG preview every N frames (0: none)")
    p.add_argument("--no-lidar", action="store_true",
                   help="do not carry the drive's lidar into the MCAP (its topics are then ignored, never decoded); "
                        "the network never takes lidar either way")
    p.add_argument("--no-progress", action="store_true")
    return p


class ReplayArgsError(ValueError):
    """Inconsistent replay options."""


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from calibration.io import load_rig
    from perception.pipeline import Pipeline
    from perception.replay.readers import BagReader, NuScenesSceneReader
    from perception.replay.run import diagnose, one_line, replay
    from perception.replay.topics import load_topic_map

    if args.precision == "int8" and not args.onnx:
        raise ReplayArgsError("--precision int8 applies to --onnx (an engine's precision is fixed when it is built)")
    if args.dataroot and not args.scene:
        raise ReplayArgsError("--dataroot needs --scene (and --version): which scene to replay")
    if args.keyframes and not args.dataroot:
        raise ReplayArgsError("--keyframes applies to --dataroot (a bag does not mark key frames)")
    with folder_output(args.out, args.overwrite, what="replay results") as staging:
        rig = load_rig(args.rig) if args.rig else None
        tmap = load_topic_map(args.topics) if args.topics else None
        if args.bag:
            reader = BagReader(args.bag, tmap)
            name = Path(args.bag).name
        else:
            if tmap is not None:
                raise ReplayArgsError("--topics applies to --bag only (a nuScenes scene has fixed channels)")
            reader = NuScenesSceneReader(args.dataroot, args.version, args.scene, keyframe_cameras=args.keyframes)
            name = args.scene
        if args.checkpoint:
            pipe = Pipeline.from_checkpoint(args.checkpoint, score_threshold=args.score_threshold)
        elif args.onnx:
            pipe = Pipeline.from_onnx(args.onnx, score_threshold=args.score_threshold,
                                      model_file="model_int8.onnx" if args.precision == "int8" else "model.onnx")
        else:
            pipe = Pipeline.from_engine(args.engine, score_threshold=args.score_threshold)
        report = replay(reader, pipe, staging, rate=args.rate, reference=args.reference, max_wait_ms=args.max_wait_ms,
                        max_frames=args.max_frames, rig=rig, name=name, progress=not args.no_progress,
                        preview_every=args.preview_every, lidar=not args.no_lidar)
    print(one_line(report))
    for e in report["events"]:
        print(f"warning: {e}")
    print(f"wrote {Path(args.out) / 'detections.mcap'} (open in Foxglove), detections.jsonl, preview/, report.json")
    why = diagnose(report)  # no frame, or far fewer than the reference camera's images: the main reasons
    if why:
        head = "error: NoFrames: " if report["frames"]["emitted"] == 0 else "warning: "
        print("\n".join([head + why[0], *why[1:]]), file=sys.stderr)
    return EXIT_INPUT if report["frames"]["emitted"] == 0 else EXIT_OK


def _errors() -> tuple[type[BaseException], ...]:
    from perception.replay.readers import ReplayInputError
    from perception.replay.topics import TopicMapError
    from perception.runtime.onnxruntime import RuntimeConfigError
    from perception.runtime.tensorrt import TensorRTNotAvailable

    return (ReplayInputError, TopicMapError, ReplayArgsError, RuntimeConfigError, TensorRTNotAvailable,
            *checkpoint_errors())


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv, _errors)  # errors resolved lazily: --onnx/--engine and --help work without torch


if __name__ == "__main__":
    raise SystemExit(main())
