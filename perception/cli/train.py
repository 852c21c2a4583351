"""perception-train: train a config on a nuScenes-format root (synthetic or real), one process or DDP."""
from __future__ import annotations

import argparse
import json
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Sequence

from perception.cli.common import EXIT_OK, HelpFormatter, checkpoint_errors, run, torch_device
from perception.outputs import OutputError, atomic_write, check_folder_target, output_lock

EXAMPLES = """examples:
  perception-synth --out data/synth --scenes 40 --samples-per-scene 20 --keyframes-only
  perception-train configs/synthetic_tiny.yaml --dataroot data/synth --out runs/tiny
  perception-train configs/synthetic_tiny.yaml --dataroot data/synth --out runs/tiny --resume
  perception-train configs/synthetic_tiny.yaml --dataroot data/synth --out runs/quick --set train.steps=50
  perception-train configs/synthetic_tiny.yaml --stage backbone --out runs/backbone --set train.steps=700
  perception-train configs/synthetic_tiny.yaml --out runs/tiny_pre --set model.camera.pretrained=runs/backbone/backbone.pt
  torchrun --nproc_per_node 8 -m perception.cli.train configs/nuscenes_r50_256x704.yaml \\
      --dataroot data/nuscenes --version v1.0-trainval --out runs/r50

An --out that already holds a run's weights is refused unless --resume (continue it from last.pt; refused,
touching nothing, when last.pt is unreadable or from another config) or --overwrite (delete it and start again);
a run folder in use by another perception-train (its lock file .OUT.lock) is refused.
The run folder holds config.resolved.yaml, history.jsonl, tb/ (tensorboard --logdir RUN/tb), last.pt (resumable),
model.pt (for perception-test / Pipeline.from_checkpoint), eval/ (devkit metrics) and training_curve.png.
--stage backbone pretrains the image backbone alone on the split's images (perspective-view targets from the GT
boxes + lidar depth; perception/train/pretrain.py) and writes OUT/backbone.pt (flat state dict, torchvision names)
and OUT/pretrain_history.jsonl; a detection run loads it with --set model.camera.pretrained=OUT/backbone.pt.
exit codes: 0 ok; 1 invalid input (config, dataset, checkpoint); 2 bad arguments."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perception-train", description=__doc__, epilog=EXAMPLES,
                                formatter_class=HelpFormatter)
    p.add_argument("config", help="experiment YAML")
    p.add_argument("--dataroot", help="nuScenes-format root (default: data/synth for synthetic configs)")
    p.add_argument("--version", default=None, help="version folder (default: v1.0-synth for synth_* splits, "
                                                   "else v1.0-trainval)")
    p.add_argument("--out", default=None, help="run folder (default: runs/<config name>)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue from OUT/last.pt (an empty or missing OUT "
                                                            "starts a new run)")
    mode.add_argument("--overwrite", action="store_true", help="delete the run in OUT and start a new one")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--device", type=torch_device, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--no-eval", action="store_true", help="skip the devkit evaluation on the val split at the end "
                                                          "(score later with perception-test)")
    p.add_argument("--stage", choices=["detect", "backbone"], default="detect",
                   help="detect: train the whole network (default); backbone: pretrain the image backbone alone and "
                        "write OUT/backbone.pt (no --resume)")
    p.add_argument("--no-progress", action="store_true")
    return p


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # before the torch import: --help works on a torch-free install
    if args.stage == "backbone" and args.resume:
        parser.error("--stage backbone runs are short and not resumable: drop --resume (or --overwrite to redo one)")
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
    out = check_folder_target(args.out or f"runs/{cfg.name}")
    main_rank = os.environ.get("RANK", "0") == "0"  # one writer under torchrun: rank 0 checks and locks
    with output_lock(out) if main_rank else nullcontext():
        if main_rank:
            _claim_run_folder(out, cfg, args.resume, args.overwrite)
        if args.stage == "backbone":
            from perception.train.pretrain import pretrain_backbone

            summary = pretrain_backbone(cfg, dataroot, version, out, progress=not args.no_progress, device=args.device)
            atomic_write(out / "summary.json", json.dumps(summary, indent=1, default=str))
            print(f"done: backbone pretrained for {summary['steps']} steps in {summary['minutes']:.1f} min "
                  f"({summary['seconds_per_step']:.2f} s/step); use it with --set {summary['use'].replace(': ', '=')}")
            return EXIT_OK
        summary = train(cfg, dataroot, version, out, resume=args.resume, progress=not args.no_progress,
                        device=args.device, evaluate=not args.no_eval)
        if summary and main_rank:
            atomic_write(out / "summary.json", json.dumps(summary, indent=1, default=str))
    if "metrics" in summary:
        m = summary["metrics"]
        print(f"done: {summary['steps']} steps in {summary['minutes']:.1f} min; {cfg.train.val_split}: "
              f"NDS {m['NDS']:.3f} mAP {m['mAP']:.3f} mATE {m['trans_err']:.3f} mAVE {m['vel_err']:.3f}; "
              f"weights {out / 'model.pt'}")
    elif summary:
        print(f"done: {summary['steps']} steps in {summary['minutes']:.1f} min (not evaluated: --no-eval); "
              f"weights {out / 'model.pt'}")
    return EXIT_OK


def _claim_run_folder(out: Path, cfg, resume: bool, overwrite: bool) -> None:
    """Before anything is written: refuse a folder holding a run with weights (last.pt or model.pt) unless --resume
    (whose last.pt must load and match the config) or --overwrite (which empties it). A refusal leaves OUT exactly
    as it was."""
    import shutil

    from perception.config import config_hash
    from perception.train.checkpoint import CheckpointError, load_checkpoint

    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not held:
        return
    if overwrite:
        for p in out.iterdir():
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        return
    weights = [n for n in ("model.pt", "last.pt", "backbone.pt") if (out / n).exists()]
    if not weights:
        return  # a run stopped before its first checkpoint: nothing to lose, start again (as before)
    if not resume:
        finished = "model.pt" in weights
        raise OutputError(f"--out {out} already holds a {'finished' if finished else 'started'} run ("
                          f"{', '.join(held[:4])}{' ...' if len(held) > 4 else ''}); pass --resume to continue it, "
                          "--overwrite to delete it and start again, or choose another --out")
    last = out / "last.pt"
    if not last.exists():
        raise OutputError(f"--resume: {out} holds files ({', '.join(held[:4])}) but no last.pt to resume from; "
                          "pass --overwrite to start again or choose another --out")
    ck = load_checkpoint(last)  # CheckpointError names a truncated or corrupted file
    if ck.get("config_hash") != config_hash(cfg):
        raise CheckpointError(f"--resume: {last} was trained with another config (hash {ck.get('config_hash')} vs "
                              f"{config_hash(cfg)}); resume with the same config and --set values, or choose another "
                              "--out")


def _errors() -> tuple[type[BaseException], ...]:
    from perception.data.nuscenes import DatasetError

    return (DatasetError, OutputError, *checkpoint_errors())


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv, _errors)  # errors resolved lazily: --help works without torch


if __name__ == "__main__":
    raise SystemExit(main())
