"""The shipped checkpoint's training run, reported: devkit metrics on synth_val, time, the training curve.

    perception-synth --out data/synth --scenes 60 --samples-per-scene 20 --seed 0 --keyframes-only
    GLIBC_TUNABLES=... perception-train configs/synthetic_tiny.yaml --dataroot data/synth --out runs/synthetic_tiny
    python -m benchmarks.bench_train runs/synthetic_tiny --ship     # table + curve into docs/, checkpoint into checkpoints/

Reads RUN/summary.json, RUN/history.jsonl and RUN/eval/metrics_summary.json (written by the devkit); with
--ship copies RUN/model.pt to checkpoints/synthetic_tiny.pt and writes its model card, docs/model_card.md: file
hash, data hash, config hash, steps, wall time (with the backbone pretraining stage when the config names one),
machine, commit, metrics.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from benchmarks.report import GLIBC_TUNABLES, REPO, machine, publish, table
from perception.outputs import atomic_write

MODEL_CARD = REPO / "docs" / "model_card.md"


def _machine_line(m: dict[str, Any] | None) -> str:
    if not m:
        return "not recorded (a run older than the machine field of summary.json)"
    dev = m.get("gpu") or m.get("device", "cpu")
    return f"{m.get('cpus')} x {m.get('cpu')} ({dev}, {m.get('processes', 1)} process(es), torch {m.get('torch')})"


def model_card(run: Path, checkpoint: Path) -> str:
    """docs/model_card.md for ``checkpoint`` trained in ``run``: what a user needs to trust or reproduce it."""
    summary = json.loads((run / "summary.json").read_text())
    metrics = json.loads((run / "eval" / "metrics_summary.json").read_text())
    cfg = _config(run)
    sha = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    steps, batch = summary["steps"], cfg["data"]["loader"]["batch_size"]
    minutes = summary["minutes"]
    stages = [f"detection training {steps} steps x batch {batch}: {minutes:.1f} min"]
    pre, ps = _pretraining(cfg)
    if ps is not None:
        minutes += ps.get("minutes", 0.0)
        stages.insert(0, f"backbone pretraining ({pre}): {ps.get('steps')} steps, {ps.get('minutes', 0.0):.1f} min")
    tp = metrics["tp_errors"]
    rows = [["file", f"`{checkpoint.relative_to(REPO) if checkpoint.is_relative_to(REPO) else checkpoint}`, "
                     f"sha256 `{sha[:16]}...`"],
            ["config", f"`{cfg.get('name')}` (config hash {summary.get('config_hash')}; the resolved config travels in "
                       "the checkpoint)"],
            ["data", f"generator {summary.get('generator_version')}, data hash {summary.get('data_hash')}"],
            ["budget", "; ".join(stages) + f"; **{minutes:.1f} min** in all"],
            ["machine", _machine_line(summary.get("machine"))],
            ["recorded", f"{machine()['date']}, commit {machine()['commit']}"],
            ["synth_val", f"NDS **{metrics['nd_score']:.3f}**, mAP {metrics['mean_ap']:.3f}, mATE {tp['trans_err']:.3f}, "
                          f"mAVE {tp['vel_err']:.3f} (devkit detection_cvpr_2019)"]]
    return ("# Model card: the shipped checkpoint\n\n"
            "Written by `python -m benchmarks.bench_train RUN --ship` when the checkpoint is shipped; do not edit by "
            "hand. How it was trained, the masked-sensor figures and the targets: "
            "[BENCHMARKS.md](BENCHMARKS.md) (sections `train_synthetic_tiny` and the ablations' `shipped` rows).\n\n"
            + table(["", ""], rows) + "\n")


def _config(run: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((run / "config.resolved.yaml").read_text()) or {}


def _pretraining(cfg: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """The config's ``model.camera.pretrained`` ("" without one) and the summary.json of the backbone stage that
    wrote it (None when there is none beside it)."""
    pre = str(((cfg.get("model") or {}).get("camera") or {}).get("pretrained") or "")
    summary = Path(pre).parent / "summary.json" if pre else None
    return pre, json.loads(summary.read_text()) if summary and summary.exists() else None


def train_commands(run: Path) -> str:
    """The commands that train RUN's config from scratch: the backbone stage first when the config loads one."""
    config = _config(run)
    name = config.get("name", "synthetic_tiny")
    cfg = f"configs/{name}.yaml"
    lines = ["perception-synth --out data/synth --scenes 60 --samples-per-scene 20 --seed 0 --keyframes-only",
             f"export GLIBC_TUNABLES={GLIBC_TUNABLES}"]
    pre, _ = _pretraining(config)
    if pre:
        lines.append(f"perception-train {cfg} --dataroot data/synth --stage backbone --out {Path(pre).parent} "
                     "--set train.steps=700")
    lines += [f"perception-train {cfg} --dataroot data/synth --out runs/{name} --resume",
              f"python -m benchmarks.bench_train runs/{name} --ship"]
    return "\n".join(lines)


def pretrain_note(run: Path) -> str:
    _, ps = _pretraining(_config(run))
    if ps is None:
        return ""
    return f" after a backbone pretraining stage of {ps.get('steps')} steps in {ps.get('minutes', 0.0):.1f} min"


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
        atomic_write(MODEL_CARD, model_card(run, REPO / "checkpoints" / "synthetic_tiny.pt"))
    nds = metrics["nd_score"]
    table1 = table(["NDS", "mAP", "mATE", "mASE", "mAOE", "mAVE", "mAAE", "target"],
                   [[f"**{nds:.3f}**", f"{metrics['mean_ap']:.3f}", f"{tp['trans_err']:.3f}", f"{tp['scale_err']:.3f}",
                     f"{tp['orient_err']:.3f}", f"{tp['vel_err']:.3f}", f"{tp['attr_err']:.3f}",
                     f"NDS >= 0.55 (issue 23): {'met' if round(nds, 6) >= 0.55 else 'missed'}"]])
    per_class = table(["class", "AP (mean over 0.5/1/2/4 m)"],
                      [[k, f"{v:.3f}"] for k, v in sorted(metrics["mean_dist_aps"].items())])
    md = ("## Shipped checkpoint `checkpoints/synthetic_tiny.pt` (issues 6, 23)\n\n"
          "Commands (2 CPU cores, from scratch):\n\n```bash\n" + train_commands(run) + "\n```\n\n"
          f"Training: {summary['steps']} steps of batch 4 ({summary['steps'] * 4} samples) in "
          f"{summary['minutes']:.1f} min{pretrain_note(run)}; final loss {rows[-1]['loss']:.2f} (start "
          f"{rows[0]['loss']:.2f}). Data hash {summary['data_hash']}, config hash {summary['config_hash']}, generator "
          f"{summary['generator_version']}; [model card](model_card.md).\n\n`synth_val` (12 scenes, 240 samples), "
          "nuscenes-devkit `DetectionEval` (detection_cvpr_2019):\n\n" + table1 + "\n\n" + per_class
          + "\n\n![training curve](images/training_curve_synthetic_tiny.png)")
    publish("train_synthetic_tiny", {"summary": summary, "metrics": {"NDS": nds, "mAP": metrics["mean_ap"], **tp}}, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
