"""Synthetic world generation speed: seconds per key-frame sample at the default rig and scale.

    python -m benchmarks.bench_synth                    # 2 scenes x 10 samples per mode, 3 repeats
    python -m benchmarks.bench_synth --repeats 1 --samples 5

Modes: with sweeps (6 cameras at 12 Hz = 36 images, 5 radars at 13 Hz, a lidar key frame per sample) and
--keyframes-only (6 images per sample; radar sweeps kept). Targets (issue 3, 2 cores): under 1.5 s and 0.5 s
per sample. numba kernels are compiled (and cached) by a warm-up run that is not timed. Also reports the
per-stage split of one run (profiling off) and the on-disk size per sample.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.report import publish, table
from perception.data.synthetic.generate import SynthOptions, generate


def _size_mb(root: Path) -> float:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6


def run(scenes: int, samples: int, keyframes_only: bool, repeats: int) -> dict:
    times, size = [], 0.0
    for r in range(repeats):
        out = Path(tempfile.mkdtemp(prefix="bench_synth_"))
        t = time.perf_counter()
        generate(SynthOptions(out=out, scenes=scenes, samples_per_scene=samples, seed=100 + r,
                              keyframes_only=keyframes_only))
        times.append((time.perf_counter() - t) / (scenes * samples))
        size = _size_mb(out) / (scenes * samples)
        shutil.rmtree(out, ignore_errors=True)
    return {"s_per_sample_median": statistics.median(times), "s_per_sample_all": times, "mb_per_sample": size}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=2)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    warm = Path(tempfile.mkdtemp(prefix="bench_synth_warm_"))
    generate(SynthOptions(out=warm, scenes=1, samples_per_scene=2, seed=1))  # compile numba kernels
    shutil.rmtree(warm, ignore_errors=True)
    results = {"scenes": args.scenes, "samples_per_scene": args.samples, "repeats": args.repeats,
               "sweeps": run(args.scenes, args.samples, False, args.repeats),
               "keyframes_only": run(args.scenes, args.samples, True, args.repeats)}
    rows = []
    for mode, target in (("sweeps", 1.5), ("keyframes_only", 0.5)):
        r = results[mode]
        med = r["s_per_sample_median"]
        rows.append([f"`{mode}`" if mode != "sweeps" else "with sweeps (36 images, ~33 radar sweeps, 1 lidar)",
                     f"**{med:.2f} s**", f"< {target} s", "met" if med < target else "missed",
                     ", ".join(f"{x:.2f}" for x in r["s_per_sample_all"]), f"{r['mb_per_sample']:.1f} MB"])
    rows[1][0] = "`--keyframes-only` (6 images, ~33 radar sweeps, 1 lidar)"
    md = ("## Synthetic world generation (issue 3)\n\n"
          f"Command: `python -m benchmarks.bench_synth` ({args.scenes} scenes x {args.samples} samples per run, "
          f"{args.repeats} runs with different seeds, default rig `configs/rigs/nuscenes.yaml`, `--image-scale 0.5` "
          "= 800x450, 2 cores, numba warm).\n\n"
          + table(["mode", "s / key-frame sample (median)", "target", "", "runs", "disk / sample"], rows))
    publish("synth", results, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
