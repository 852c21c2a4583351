"""perception-stats: sensor statistics of a nuScenes-format root (real nuScenes, the synthetic world, converted
drives): radar returns per key frame, boxes without radar or lidar returns, num_radar_pts recounted from the
files, RCS per class, radial velocity error and the radar state fields. Writes stats.json, stats.md and plots."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from perception.cli.common import EXIT_OK, HelpFormatter, run

EXAMPLES = """examples:
  perception-stats --dataroot data/synth --version v1.0-synth --out benchmarks/out/stats_synth
  perception-stats --dataroot data/synth --version v1.0-synth --split synth_val --out stats_val --no-plots
  perception-stats --dataroot /data/nuscenes --version v1.0-mini --out stats_mini
  perception-stats --dataroot /data/nuscenes --version v1.0-trainval --split val --out stats_val

Conventions are the nuScenes devkit's: default radar filters of RadarPointCloud (dyn_prop 0-6, invalid_state 0,
ambig_state 3); class ranges of detection_cvpr_2019, distance from the LIDAR_TOP key frame's ego pose;
num_radar_pts recount = returns inside the box, all radars, key-frame sweep, no filtering.
Real nuScenes for comparison: about 197 returns per key frame (v1.0-mini), 61.2 % of in-range boxes without a
radar return (v1.0-trainval val). See docs/stats.md.
OUT is written whole or not at all (staged, then renamed); an OUT holding files is refused unless --overwrite.
exit codes: 0 ok; 1 invalid input (a missing or malformed table or point file, an occupied OUT: the message names
it); 2 bad arguments."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perception-stats", description=__doc__, epilog=EXAMPLES,
                                formatter_class=HelpFormatter)
    p.add_argument("--dataroot", required=True, help="nuScenes-format root (holds VERSION/ and the sensor files)")
    p.add_argument("--version", required=True, help="version folder, e.g. v1.0-synth, v1.0-mini, v1.0-trainval")
    p.add_argument("--split", help="only the scenes of this split (the root's splits.json, else the devkit's "
                                   "official ones: train, val, mini_val, ...); default: every scene")
    p.add_argument("--out", required=True, help="folder to write stats.json, stats.md and the PNG plots into")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--overwrite", action="store_true", help="replace the files of an existing OUT")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _main(argv: Sequence[str] | None) -> int:
    from perception.eval.stats import measure, write_report
    from perception.outputs import check_folder_target, folder_output

    args = build_parser().parse_args(argv)
    check_folder_target(args.out)  # before the work: a file at OUT is refused at once
    progress = None
    if not args.no_progress:
        from tqdm import tqdm

        def progress(total: int):  # noqa: ANN202 - a tqdm factory
            return tqdm(total=total, desc="stats", unit="sample")
    with folder_output(args.out, args.overwrite, "statistics") as staging:
        stats = measure(args.dataroot, args.version, args.split, progress)
        written = write_report(stats, staging, plots=not args.no_plots)
    paths = [Path(args.out) / p.name for p in written]
    r = stats["returns_per_key_frame"]["filtered"]
    nr = stats["no_radar"]["overall"]
    rc = stats["num_radar_pts_recount"]
    print(f"{stats['samples']} samples: {r.get('mean', 0):.1f} radar returns per key frame after the default filters "
          f"(min {r.get('min', 0):.0f}, max {r.get('max', 0):.0f}); "
          + (f"{100 * nr['fraction']:.1f} % of {nr['total']} boxes in class range without radar return; "
             if nr["fraction"] is not None else "no box in class range; ")
          + f"num_radar_pts recount equal for {rc['equal']}/{rc['annotations']}")
    print("wrote " + ", ".join(str(p) for p in paths))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    from perception.data.nuscenes import DatasetError

    return run(_main, argv, (DatasetError,))


if __name__ == "__main__":
    raise SystemExit(main())
