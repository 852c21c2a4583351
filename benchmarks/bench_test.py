"""The shipped checkpoint's full perception-test report, as a table in docs/BENCHMARKS.md.

    python -m benchmarks.bench_test --dataroot data/synth            # synth_val of the training root (held out)

Runs ``perception-test --checkpoint checkpoints/synthetic_tiny.pt`` on the split and reports NDS/mAP/TP errors,
forecasting metrics of the model against the constant-velocity baseline (target: minADE6 on matched cars at
least 15 % below the baseline) and latency.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.report import REPO, publish, table


def describe_world(generator_json: Path, checkpoint: Path) -> str:
    """Which world was scored (the root's generator.json) and which data the checkpoint was trained on (its
    recorded data hash), so the table says what it measured; "unknown" parts where a file does not say."""
    try:
        g = json.loads(generator_json.read_text())
        world = (f"generator {g.get('generator')}, `perception-synth --scenes {g.get('scenes')} --samples-per-scene "
                 f"{g.get('samples_per_scene')} --seed {g.get('seed')}"
                 + (" --keyframes-only`" if g.get("keyframes_only") else "`"))
    except (OSError, ValueError):
        world = "not a synthetic root (no generator.json)"
    try:
        from perception.train.checkpoint import load_checkpoint

        trained = load_checkpoint(checkpoint).get("data_hash") or "unknown"
    except Exception as err:  # noqa: BLE001 - a description, never a reason to lose the report
        trained = f"unknown ({type(err).__name__})"
    return f"{world}; the checkpoint was trained on data hash {trained}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataroot", default="data/synth")
    ap.add_argument("--version", default="v1.0-synth")
    ap.add_argument("--split", default="synth_val")
    ap.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "synthetic_tiny.pt"))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "test_synthetic_tiny"))
    args = ap.parse_args(argv)
    from perception.cli.test import main as test_main

    rc = test_main(["--checkpoint", args.checkpoint, "--dataroot", args.dataroot, "--version", args.version,
                    "--split", args.split, "--out", args.out, "--overwrite", "--no-progress"])
    if rc != 0:
        raise SystemExit(f"perception-test failed with {rc}")
    out = Path(args.out)
    m = json.loads((out / "metrics_summary.json").read_text())
    traj = json.loads((out / "trajectory_metrics.json").read_text())
    lat = json.loads((out / "latency.json").read_text())
    tp = m["tp_errors"]
    det = table(["NDS", "mAP", "mATE", "mASE", "mAOE", "mAVE", "mAAE"],
                [[f"**{m['nd_score']:.3f}**", f"{m['mean_ap']:.3f}", *(f"{tp[k]:.3f}" for k in (
                    "trans_err", "scale_err", "orient_err", "vel_err", "attr_err"))]])
    rows = []
    for group in ("car", "pedestrian", "all"):
        for method in ("model", "constant_velocity"):
            r = traj[method][group]
            rows.append([group, method, *(f"{r[k]:.3f}" for k in ("minADE_1", "minFDE_1", "MR_1", "minADE_6",
                                                                  "minFDE_6", "MR_6", "EPA")), r["matched"]])
    car_model, car_cv = traj["model"]["car"]["minADE_6"], traj["constant_velocity"]["car"]["minADE_6"]
    gain = 1.0 - car_model / car_cv if car_cv else float("nan")
    lat_rows = [[k, f"{v['median_ms']:.1f}", f"{v['p90_ms']:.1f}"] for k, v in lat.items() if isinstance(v, dict)]
    world = describe_world(Path(args.dataroot) / args.version / "generator.json", Path(args.checkpoint))
    md = ("## Offline benchmark of the shipped checkpoint (issue 7)\n\n"
          f"Command: `python -m benchmarks.bench_test --dataroot {args.dataroot}` ({args.dataroot}: {world}; "
          "= `perception-test --checkpoint "
          f"checkpoints/synthetic_tiny.pt --dataroot {args.dataroot} --version {args.version} --split {args.split}`; "
          "held-out scenes, 2 CPU cores).\n\n" + det + "\n\nForecasting on matched detections:\n\n"
          + table(["group", "method", "minADE1", "minFDE1", "MR1", "minADE6", "minFDE6", "MR6", "EPA", "matched"], rows)
          + f"\n\nTarget: minADE6 on matched cars at least 15 % below constant velocity: {car_model:.3f} vs "
            f"{car_cv:.3f} m = {100 * gain:.0f} % lower: **{'met' if gain >= 0.15 else 'missed'}**.\n\n"
          "Latency per frame (ms, batch 1, PyTorch eager; data = loading and preprocessing incl. pillarisation, "
          "network = the graph incl. its in-graph NMS/top-k decoding, decode = post-processing):\n\n"
          + table(["stage", "median", "p90"], lat_rows))
    publish("test_synthetic_tiny", {"metrics": m, "trajectory": traj, "latency": lat}, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
