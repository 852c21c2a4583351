"""perception-synth: write a synthetic nuScenes-format dataset (stereo cameras, physical radar, ROS 2 bags)."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Sequence

from calibration.io import load_rig
from perception.cli.common import EXIT_OK, HelpFormatter, number, run
from perception.outputs import OutputError, folder_output

EXAMPLES = """examples:
  perception-synth --out data/synth --scenes 10 --samples-per-scene 20 --seed 0
  perception-synth --out data/synth_stereo --scenes 10 --samples-per-scene 20 --seed 0 \\
      --rig configs/rigs/stereo_radar.yaml          # the same world through the stereo rig
  perception-synth --out data/synth_fast --scenes 40 --samples-per-scene 20 --keyframes-only
  perception-synth --out data/synth_bags --scenes 2 --samples-per-scene 10 --bags

The dataset is written into a staging folder beside OUT (.OUT.tmp-*) and renamed to OUT when complete: an
interrupted run leaves an existing OUT as it was. An OUT that holds files is refused unless --overwrite (which
replaces the whole folder); an OUT another perception-synth is writing (lock file .OUT.lock) is refused.
The root loads with nuscenes-devkit: NuScenes('v1.0-synth', OUT); splits 'synth_train' and 'synth_val'.
exit codes: 0 ok; 1 invalid input (rig, options, existing output); 2 bad arguments."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="perception-synth",
        description="Generate drives through a synthetic city as a nuScenes-format root: 2 Hz key frames with "
                    "annotations of all 10 detection classes, 12 Hz camera and 13 Hz radar sweeps rendered and "
                    "simulated through a rig, a LIDAR_TOP key frame per sample, splits.json, the rig, and "
                    "optionally one ROS 2 bag (MCAP) per scene. Deterministic for given arguments.",
        epilog=EXAMPLES, formatter_class=HelpFormatter)
    p.add_argument("--out", required=True, help="dataset root to write")
    p.add_argument("--scenes", type=number(int, min=1, max=10_000), default=10, help="number of scenes (drives)")
    p.add_argument("--samples-per-scene", type=number(int, min=1, max=10_000), default=20,
                   help="2 Hz key frames per scene")
    p.add_argument("--seed", type=number(int, min=0), default=0, help="world seed (the same seed is the same world in any rig)")
    p.add_argument("--rig", help="rig YAML (default: configs/rigs/nuscenes.yaml), cameras at full resolution")
    p.add_argument("--image-scale", type=number(float, min=0.01, max=4.0), default=0.5,
                   help="scale of the written images and of the intrinsics in the tables (0.5: 1600x900 -> 800x450)")
    p.add_argument("--keyframes-only", action="store_true",
                   help="camera images at key frames only (fast training data); radar keeps its 13 Hz sweeps, "
                        "which multi-sweep accumulation needs and which cost little")
    p.add_argument("--bags", action="store_true", help="also write one ROS 2 bag (MCAP) per scene under OUT/bags/")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset (the whole folder) at --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _main(argv: Sequence[str] | None) -> int:
    from perception.data.synthetic.generate import VERSION, SynthOptions, generate

    args = build_parser().parse_args(argv)
    out = Path(args.out)
    rig = load_rig(args.rig) if args.rig else None
    progress = None
    if not args.no_progress:
        from tqdm import tqdm

        def progress(desc: str, total: int):  # noqa: ANN202 - a tqdm factory
            return tqdm(total=total, desc=desc, unit="sample")
    t = time.perf_counter()
    with folder_output(out, args.overwrite, what=f"a dataset ({VERSION})" if (out / VERSION).exists() else "files") \
            as staging:
        opts = SynthOptions(out=staging, scenes=args.scenes, samples_per_scene=args.samples_per_scene, seed=args.seed,
                            rig=rig, image_scale=args.image_scale, keyframes_only=args.keyframes_only, bags=args.bags)
        summary = generate(opts, progress)
    seconds = time.perf_counter() - t
    n = args.scenes * args.samples_per_scene
    counts = summary["class_counts"]
    print(f"wrote {out} ({VERSION}): {args.scenes} scenes x {args.samples_per_scene} samples in {seconds:.1f} s "
          f"({seconds / n:.2f} s/sample)")
    for split, per_class in counts.items():
        print(f"  {split}: evaluable GT boxes per class {json.dumps(dict(sorted(per_class.items())))}")
    if args.bags:
        print(f"  bags: {out / 'bags'} ({len(summary['bags'])} scenes)")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    from perception.data.synthetic.generate import SynthError

    return run(_main, argv, (SynthError, OutputError))


if __name__ == "__main__":
    raise SystemExit(main())
