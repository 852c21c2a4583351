"""Cameras that count (issue 21): what each piece of camera supervision is worth, on the synth/2 ablation world.

    python -m benchmarks.bench_cameras --dataroot D --stereo-dataroot DS --run cam_base,cam_depth   # train + test
    python -m benchmarks.bench_cameras --dataroot D --stereo-dataroot DS --run all                  # every row, ~3 h
    python -m benchmarks.bench_cameras --publish-only                # rewrite the table from what is on disk
    python -m benchmarks.bench_cameras --dry-run --run all           # the commands, and which are done

Every row is one ``perception-train`` from scratch (``configs/synthetic_tiny.yaml`` or the stereo config, the
ablation budget of 700 optimiser steps x batch 4 unless the row says otherwise, ``--no-eval``) followed by
``perception-test`` on ``synth_val`` (devkit metrics, trajectory metrics and camera depth against lidar); test-time
rows re-test a trained row with sensors masked. Resumable: a training continues from ``run/last.pt``
(``--resume``), finished steps leave ``train.done`` / ``test.done`` (their wall seconds) and are skipped.
``D`` is the ablation world (``perception-synth --out D --scenes 60 --samples-per-scene 20 --seed 0
--keyframes-only``, generator synth/2); ``DS`` the same world through ``configs/rigs/stereo_radar.yaml``.
Outputs: ``benchmarks/out/cameras/<row>/`` (``train.log``, ``run/``, ``test.log``, ``test/``); the table goes to
the ``cameras`` section of docs/BENCHMARKS.md and to benchmarks/out/cameras.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.report import REPO, publish, table

NAME = "cameras"
GLIBC_TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736:glibc.malloc.top_pad=268435456"
MONO, STEREO = "configs/synthetic_tiny.yaml", "configs/synthetic_tiny_stereo.yaml"
RADARS = "RADAR_FRONT,RADAR_FRONT_LEFT,RADAR_FRONT_RIGHT,RADAR_BACK_LEFT,RADAR_BACK_RIGHT"
STEREO_CAMERAS = ("CAM_FRONT_L", "CAM_FRONT_R", "CAM_BACK_L", "CAM_BACK_R")
CLASSES = ("car", "pedestrian", "bicycle", "traffic_cone")
CAM = ("model.radar.enabled=false",)
DEPTH = ("train.depth_loss.enabled=true",)
PERSP = ("train.perspective.enabled=true",)
PRE = ("model.camera.pretrained={out}/backbone_pre/run/backbone.pt",)


@dataclass(frozen=True)
class Row:
    name: str
    title: str
    sets: tuple[str, ...] = ()
    steps: int = 700
    config: str = MONO
    stereo: bool = False           # on the stereo root
    pretrain: bool = False         # perception-train --stage backbone (no test)
    needs: tuple[str, ...] = ()    # rows that must be trained first
    test_of: str = ""              # a test-time row: re-test this row's checkpoint ...
    drop: str = ""                 # ... with these channels masked


ROWS = (
    Row("cam_base", "camera only, no camera supervision", CAM),
    Row("cam_depth", "camera only + lidar depth loss", CAM + DEPTH),
    Row("cam_depth_persp", "camera only + depth + perspective head", CAM + DEPTH + PERSP),
    Row("backbone_pre", "backbone pretraining stage (perspective + depth targets)", CAM, pretrain=True),
    Row("cam_depth_persp_pre", "camera only + depth + perspective + pretrained backbone", CAM + DEPTH + PERSP + PRE,
        needs=("backbone_pre",)),
)
BY_NAME = {r.name: r for r in ROWS}


def row_dir(out: Path, row: Row) -> Path:
    return out / row.name


def train_cmd(row: Row, out: Path, dataroot: str, stereo_root: str) -> list[str]:
    run = row_dir(out, row) / "run"
    cmd = [sys.executable, "-m", "perception.cli.train", row.config, "--dataroot",
           stereo_root if row.stereo else dataroot, "--version", "v1.0-synth", "--out", str(run), "--no-progress",
           "--no-eval", "--stage", "backbone" if row.pretrain else "detect", "--set", f"train.steps={row.steps}",
           "--set", "train.checkpoint_every=100"]
    for s in row.sets:
        cmd += ["--set", s.format(out=out)]
    if (run / "last.pt").exists():
        cmd.append("--resume")
    return cmd


def test_cmd(row: Row, out: Path, dataroot: str, stereo_root: str) -> list[str]:
    src = BY_NAME[row.test_of] if row.test_of else row
    cmd = [sys.executable, "-m", "perception.cli.test", "--checkpoint", str(row_dir(out, src) / "run" / "model.pt"),
           "--dataroot", stereo_root if src.stereo else dataroot, "--version", "v1.0-synth", "--split", "synth_val",
           "--out", str(row_dir(out, row) / "test"), "--overwrite", "--no-progress"]
    if row.drop:
        cmd += ["--drop-sensors", row.drop]
    return cmd


def step(marker: Path, cmd: list[str], log: Path, dry: bool) -> bool:
    """Run ``cmd`` once (skipped when ``marker`` exists); the marker holds its wall seconds. False on failure."""
    if marker.exists():
        print(f"done    {marker.parent.name}/{marker.stem}: {float(marker.read_text()):.0f} s")
        return True
    print(("would run " if dry else "run     ") + " ".join(cmd), flush=True)
    if dry:
        return True
    log.parent.mkdir(parents=True, exist_ok=True)
    t = time.time()
    with open(log, "a") as f:
        rc = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                            env={**os.environ, "GLIBC_TUNABLES": GLIBC_TUNABLES}).returncode
    if rc != 0:
        print(f"FAILED  {' '.join(cmd[:4])} (exit {rc}); see {log}", flush=True)
        return False
    marker.write_text(f"{time.time() - t:.1f}")
    return True


def run_row(row: Row, out: Path, dataroot: str, stereo_root: str, dry: bool) -> bool:
    d = row_dir(out, row)
    if not row.test_of and not step(d / "train.done", train_cmd(row, out, dataroot, stereo_root), d / "train.log", dry):
        return False
    return row.pretrain or step(d / "test.done", test_cmd(row, out, dataroot, stereo_root), d / "test.log", dry)


# ---------------------------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------------------------


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def collect(out: Path) -> dict[str, dict[str, Any]]:
    res: dict[str, dict[str, Any]] = {}
    for row in ROWS:
        d = row_dir(out, row)
        r: dict[str, Any] = {"title": row.title, "steps": row.steps, "sets": list(row.sets)}
        if (d / "train.done").exists():
            r["train_min"] = float((d / "train.done").read_text()) / 60
        if row.pretrain:
            r["pretrain"] = _read(d / "run" / "summary.json")
        m = _read(d / "test" / "metrics_summary.json")
        if m:
            r.update(nds=m["nd_score"], map=m["mean_ap"], mate=m["tp_errors"]["trans_err"],
                     mave=m["tp_errors"]["vel_err"], ap={c: m["mean_dist_aps"][c] for c in CLASSES})
        dep = _read(d / "test" / "depth_metrics.json")
        if dep:
            r["depth"] = {"all": dep["all"], "in_boxes": dep["in_boxes"],
                          "per_camera": dep.get("per_camera", {})}
        res[row.name] = r
    return res


def _f(v: Any, nd: int = 3) -> str:
    return "pending" if v is None else f"{v:.{nd}f}"


def markdown(res: dict[str, dict[str, Any]]) -> str:
    rows = []
    for row in ROWS:
        r = res[row.name]
        if row.pretrain:
            s = r.get("pretrain") or {}
            rows.append([f"`{row.name}`", row.title, row.steps, _f(r.get("train_min"), 1)] + ["-"] * 9 +
                        [f"{s.get('seconds_per_step', float('nan')):.2f} s/step" if s else "pending"])
            continue
        dep = r.get("depth") or {}
        rows.append([f"`{row.name}`", row.title + (f" (test: {row.drop and 'radar masked'})" if row.drop else ""),
                     row.steps if not row.test_of else f"= {row.test_of}", _f(r.get("train_min"), 1),
                     _f(r.get("nds")), _f(r.get("map")), _f(r.get("mate")), _f(r.get("mave"))] +
                    [_f((r.get("ap") or {}).get(c)) for c in CLASSES] +
                    [_f((dep.get("all") or {}).get("abs_rel")), _f((dep.get("in_boxes") or {}).get("abs_rel"))])
    header = ["row", "what", "steps", "train min", "NDS", "mAP", "mATE", "mAVE"] + [f"{c} AP" for c in CLASSES] + \
        ["depth AbsRel all", "AbsRel in boxes"]
    return "\n".join([
        "Issue 21, on the synth/2 ablation world (seed 0, 60 x 20 key frames), `synth_val` (240 samples), devkit "
        "metrics; depth AbsRel of the camera depth head against the nearest lidar return per stride-16 cell. "
        "Command: `python -m benchmarks.bench_cameras --dataroot D --stereo-dataroot DS --run all` "
        "(docs/ablations.md#issue-21-cameras-that-count). Train minutes on a shared 2-core machine (helpers and "
        "data generation ran beside some rows).", "", table(header, rows)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataroot", help="the synth/2 ablation world (mono nuScenes rig)")
    p.add_argument("--stereo-dataroot", help="the same world through the stereo rig")
    p.add_argument("--run", default="", help="comma-separated rows, or 'all'")
    p.add_argument("--out-dir", default=str(REPO / "benchmarks" / "out" / NAME))
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--publish-only", action="store_true")
    a = p.parse_args(argv)
    out = Path(a.out_dir)
    names = [r.name for r in ROWS] if a.run == "all" else [n for n in a.run.split(",") if n]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        p.error(f"unknown rows {unknown}; known: {', '.join(BY_NAME)}")
    if names and not a.publish_only:
        if not a.dataroot:
            p.error("--dataroot is required to run rows")
        failed: set[str] = set()
        for n in names:
            row = BY_NAME[n]
            blocked = [x for x in row.needs + ((row.test_of,) if row.test_of else ()) if x in failed]
            if blocked or (row.stereo and not a.stereo_dataroot):
                print(f"blocked {n}: needs {blocked or '--stereo-dataroot'}")
                failed.add(n)
                continue
            if not run_row(row, out, a.dataroot, a.stereo_dataroot or "", a.dry_run):
                failed.add(n)
            if not a.dry_run:
                res = collect(out)
                publish(NAME, {"rows": res}, markdown(res))
    if a.publish_only:
        res = collect(out)
        publish(NAME, {"rows": res}, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
