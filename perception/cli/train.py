"""perception-train: train a config on a nuScenes-format root (synthetic or real), one process or DDP."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Sequence

from perception.cli.common import EXIT_OK, HelpFormatter, checkpoint_errors, run

EXAMPLES = """examples:
  perception-synth --out data/synth --scenes 40 --samples-per-scene 20 --keyframes-only
  perception-train configs/synthetic_tiny.yaml --dataroot data/synth --out runs/tiny
  perception-train configs/synthetic_tiny.yaml --dataroot data/synth --out runs/tiny --resume
  perception-train configs/synthetic_tiny.yaml --dataroot data/synth --out runs/quick --set train.steps=50
  torchrun --nproc_per_node 8 -m perception.cli.train configs/nuscenes_r50_256x704.yaml \\
      --dataroot data/nuscenes --version v1.0-trainval --out runs/r50

The run folder holds config.resolved.yaml, history.jsonl, tb/ (tensorboard --logdir RUN/tb), last.pt (resumable),
model.pt (for perception-test / Pipeline.from_checkpoint), eval/ (devkit metrics) and training_curve.png.
exit codes: 0 ok; 1 invalid input (config, dataset, checkpoint); 2 bad arguments."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perception-train", description=__doc__, epilog=EXAMPLES,
                                formatter_class=HelpFormatter)
    p.add_argument("config", help="experiment YAML")
    p.add_argument("--dataroot", help="nuScenes-format root (default: data/synth for synthetic configs)")
    p.add_argument("--version", default=None, help="version folder (default: v1.0-synth for synth_* splits, "
                                                   "else v1.0-trainval)")
    p.add_argument("--out", default=None, help="run folder (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--no-eval", action="store_true", help="skip the devkit evaluation on the val split at the end "
                                                          "(score later with perception-test)")
    p.add_argument("--no-progress", action="store_true")
    return p


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)  # before the torch import: --help works on a torch-free install
    from perception.config import load_config
    from perception.data.nuscenes import DatasetError
    from perception.train.loop import train

    cfg = load_config(args.config, args.set)
    synthetic = cfg.train.split.startswith("synth")
    version = args.version or ("v1.0-synth" if synthetic else "v1.0-trainval")
    dataroot = Path(args.dataroot or ("data/synth" if synthetic else "data/nuscenes"))
    if not (dataroot / version).is_dir():
        hint = ("generate it first: perception-synth --out {} --scenes 40 --samples-per-scene 20 --keyframes-only"
                .format(dataroot) if synthetic else "point --dataroot at a nuScenes root (see docs/nuscenes.md)")
        raise DatasetError(f"{dataroot / version} does not exist; {hint}")
    out = Path(args.out or f"runs/{cfg.name}")
    summary = train(cfg, dataroot, version, out, resume=args.resume, progress=not args.no_progress,
                    device=args.device, evaluate=not args.no_eval)
    if "metrics" in summary:
        m = summary["metrics"]
        print(f"done: {summary['steps']} steps in {summary['minutes']:.1f} min; {cfg.train.val_split}: "
              f"NDS {m['NDS']:.3f} mAP {m['mAP']:.3f} mATE {m['trans_err']:.3f} mAVE {m['vel_err']:.3f}; "
              f"weights {out / 'model.pt'}")
    elif summary:
        print(f"done: {summary['steps']} steps in {summary['minutes']:.1f} min (not evaluated: --no-eval); "
              f"weights {out / 'model.pt'}")
    if summary and os.environ.get("RANK", "0") == "0":  # one writer under torchrun
        (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return EXIT_OK


def _errors() -> tuple[type[BaseException], ...]:
    from perception.data.nuscenes import DatasetError

    return (DatasetError, *checkpoint_errors())


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv, _errors)  # errors resolved lazily: --help works without torch


if __name__ == "__main__":
    raise SystemExit(main())
