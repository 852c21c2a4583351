"""perception-inspect: write one Frame exactly as the model receives it at evaluation time."""
from __future__ import annotations

import argparse
from typing import Sequence

from perception.cli.common import EXIT_OK, HelpFormatter, checkpoint_errors, number, run
from perception.outputs import atomic_file, check_file_target

EXAMPLES = """examples:
  perception-inspect --config configs/synthetic_tiny.yaml --dataroot data/synth --version v1.0-synth \\
      --split synth_val --index 0 --out frame.npz --png frame.png
  perception-inspect --config configs/synthetic_tiny.yaml --dataroot data/nuscenes --version v1.0-mini \\
      --split mini_val --index 3 --set data.sync.enabled=false --out naive.npz
  perception-inspect --config configs/synthetic_tiny.yaml --dataroot data/synth --version v1.0-synth \
      --split synth_val --index 0 --out frame.npz --png frame.png --checkpoint checkpoints/synthetic_tiny.pt

With --png, a second picture PNG_depth.png shows per camera the lidar depth targets (nearest return per stride-16
cell) and, with --checkpoint, the model's predicted depth and its relative error against them.

The .npz loads with numpy.load(path, allow_pickle=False); its keys are listed in perception/data/frame.py.
--index counts the samples of the split: scenes in split order, samples by timestamp.
exit codes: 0 ok; 1 invalid input (config, dataset, index); 2 bad arguments."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perception-inspect", description=__doc__, epilog=EXAMPLES,
                                formatter_class=HelpFormatter)
    p.add_argument("--config", required=True, help="experiment YAML (its data section is used)")
    p.add_argument("--dataroot", required=True, help="nuScenes-format root")
    p.add_argument("--version", required=True, help="version folder, e.g. v1.0-synth, v1.0-mini, v1.0-trainval")
    p.add_argument("--split", required=True, help="split name (devkit splits or splits.json of the root)")
    p.add_argument("--index", type=number(int, min=0), required=True,
                   help="sample index within the split (0 .. N-1)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--out", required=True, help=".npz file to write")
    p.add_argument("--png", help="also draw the Frame: cameras with GT boxes and radar, and a BEV panel; and "
                                 "PNG_depth.png: lidar depth targets per camera (against the prediction with --checkpoint)")
    p.add_argument("--checkpoint", help="with --png: run this PyTorch checkpoint on the frame and draw its camera "
                                        "depth against the lidar targets")
    return p


def _main(argv: Sequence[str] | None) -> int:
    from perception.config import load_config
    from perception.data.nuscenes import NuScenesFrames

    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.out.endswith(".npz"):
        parser.error(f"--out must name a .npz file; got '{args.out}'")
    if args.checkpoint and not args.png:
        parser.error("--checkpoint draws the predicted depth: it needs --png")
    depth_png = args.png[:-4] + "_depth.png" if args.png and args.png.endswith(".png") else \
        (args.png + "_depth.png" if args.png else None)
    for path in (args.out, args.png, depth_png):
        if path:
            check_file_target(path)  # before the work: a folder or a file-in-the-way is refused up front
    cfg = load_config(args.config, args.set)
    frames = NuScenesFrames(cfg, args.dataroot, args.version, args.split, train=False)
    if args.index >= len(frames):
        raise IndexError(f"--index {args.index} is out of range: split {args.split} has {len(frames)} samples "
                         f"(0 .. {len(frames) - 1})")
    frame = frames[args.index]
    with atomic_file(args.out) as tmp:
        frame.save_npz(tmp)
    print(f"wrote {args.out}: sample {frame.sample_token} (index {args.index} of {len(frames)} in {args.split}), "
          f"{frame.num_cameras} cameras {tuple(frame.images.shape[1:3])}, {int(frame.radar_valid.sum())} radar points, "
          f"{len(frame.gt_boxes)} GT boxes")
    for issue in frame.issues:
        print(f"  issue: {issue}")
    if args.png:
        from perception.visualize import draw_frame

        with atomic_file(args.png) as tmp:
            draw_frame(frame, tmp, f"{args.version}/{args.split}[{args.index}] {frame.sample_token}")
        print(f"wrote {args.png}")
        _draw_depth(frame, cfg, args, depth_png)
    return EXIT_OK


def _draw_depth(frame, cfg, args: argparse.Namespace, path: str) -> None:
    """PNG_depth.png: lidar targets per camera, against the checkpoint's predicted depth when given."""
    from perception.config import ConfigError
    from perception.eval.depth import draw_depth
    from perception.train.camera_aux import depth_bins

    if not len(frame.lidar_points):
        print(f"no {path}: the sample has no lidar (no depth targets)")
        return
    pred, bins = None, depth_bins(cfg)
    h, w = frame.images.shape[1:3]
    feat_hw = (h // 16, w // 16)
    if args.checkpoint:
        from perception.eval.depth import DepthProbe
        from perception.pipeline import Pipeline

        pipe = Pipeline.from_checkpoint(args.checkpoint)
        if pipe.runner.net.camera is None:
            raise ConfigError(f"{args.checkpoint}: the model has no camera branch (model.camera.enabled false); "
                             "there is no depth to draw")
        if tuple(pipe.cfg.data.image_size) != (h, w):
            raise ConfigError(f"{args.checkpoint}: the model takes {list(pipe.cfg.data.image_size)} images but --config "
                             f"gives {[h, w]}; pass --set data.image_size={list(pipe.cfg.data.image_size)} or the "
                             "checkpoint's config")
        bins = depth_bins(pipe.cfg)
        probe = DepthProbe(pipe.runner.net, bins)
        pipe.infer(frame)
        probe.close()
        pred = probe.last[0]
        feat_hw = pred.shape[-2:]
    with atomic_file(path) as tmp:
        draw_depth(frame, pred, feat_hw, bins, tmp, f"{args.version}/{args.split}[{args.index}] camera depth")
    print(f"wrote {path}")


def _errors() -> tuple[type[BaseException], ...]:
    from perception.data.nuscenes import DatasetError

    return (DatasetError, IndexError, *checkpoint_errors())


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv, _errors)  # errors resolved lazily: --help works without torch


if __name__ == "__main__":
    raise SystemExit(main())
