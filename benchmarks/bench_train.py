"""The shipped checkpoint's training run, reported: devkit metrics on synth_val, time, the training curve.

    perception-synth --out data/synth --scenes 60 --samples-per-scene 20 --seed 0 --keyframes-only
    GLIBC_TUNABLES=... perception-train configs/synthetic_tiny.yaml --dataroot data/synth --out runs/synthetic_tiny
    python -m benchmarks.bench_train runs/synthetic_tiny --ship     # table + curve into docs/, checkpoint into checkpoints/

Reads RUN/summary.json, RUN/history.jsonl and RUN/eval/metrics_summary.json (written by the devkit); with
--ship copies RUN/model.pt to checkpoints/synthetic_tiny.pt.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from benchmarks.report import REPO, publish, table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="run folder of perception-train")
    ap.add_argument("--ship", action="store_true", help="copy RUN/model.pt to checkpoints/synthetic_tiny.pt")
    args = ap.parse_args(argv)
    run = Path(args.run)
    summary = json.loads((run / "summary.json").read_text())
    metrics = json.loads((run / "eval" / "metrics_summary.json").read_text())
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines() if line.strip()]
    tp = metrics["tp_errors"]
    curve = REPO / "docs" / "images" / "training_curve_synthetic_tiny.png"
    shutil.copy(run / "training_curve.png", curve)
    if args.ship:
        (REPO / "checkpoints").mkdir(exist_ok=True)
        shutil.copy(run / "model.pt", REPO / "checkpoints" / "synthetic_tiny.pt")
    nds = metrics["nd_score"]
    table1 = table(["NDS", "mAP", "mATE", "mASE", "mAOE", "mAVE", "mAAE", "target"],
                   [[f"**{nds:.3f}**", f"{metrics['mean_ap']:.3f}", f"{tp['trans_err']:.3f}", f"{tp['scale_err']:.3f}",
                     f"{tp['orient_err']:.3f}", f"{tp['vel_err']:.3f}", f"{tp['attr_err']:.3f}",
                     f"NDS >= 0.50: {'met' if nds >= 0.5 else 'missed'}"]])
    per_class = table(["class", "AP (mean over 0.5/1/2/4 m)"],
                      [[k, f"{v:.3f}"] for k, v in sorted(metrics["mean_dist_aps"].items())])
    md = ("## Shipped checkpoint `checkpoints/synthetic_tiny.pt` (issue 6)\n\n"
          "Commands (2 CPU cores, from scratch):\n\n"
          "```bash\nperception-synth --out data/synth --scenes 60 --samples-per-scene 20 --seed 0 --keyframes-only\n"
          "GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736:glibc.malloc.top_pad=268435456 \\\n"
          "  perception-train configs/synthetic_tiny.yaml --dataroot data/synth --out runs/synthetic_tiny\n"
          "python -m benchmarks.bench_train runs/synthetic_tiny --ship\n```\n\n"
          f"Training: {summary['steps']} steps of batch 4 ({summary['steps'] * 4} samples) in "
          f"{summary['minutes']:.1f} min; final loss {rows[-1]['loss']:.2f} (start {rows[0]['loss']:.2f}). "
          f"Data hash {summary['data_hash']}, config hash {summary['config_hash']}, generator "
          f"{summary['generator_version']}.\n\n`synth_val` (12 scenes, 240 samples), nuscenes-devkit "
          "`DetectionEval` (detection_cvpr_2019):\n\n" + table1 + "\n\n" + per_class
          + "\n\n![training curve](images/training_curve_synthetic_tiny.png)")
    publish("train_synthetic_tiny", {"summary": summary, "metrics": {"NDS": nds, "mAP": metrics["mean_ap"], **tp}}, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
