"""Replay a drive: reader -> player -> Frames -> Pipeline -> tracker -> writers, with a report.

``replay(reader, pipeline, out)`` runs at ``rate`` x real time (``None``: as fast as possible) and returns the
report it writes to ``OUT/report.json`` (schema ``perception-replay-report/1``): per-topic accounting
(received = used + late + dropped, with reasons), frames emitted/skipped, masked sensors, latency
percentiles, processing rate vs sensor rate, and stream events (truncation).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from perception.replay.frames import build_frame
from perception.replay.messages import DROP_REASONS
from perception.replay.player import Player, PlayerConfig

REPORT_SCHEMA = "perception-replay-report/1"


def model_cameras(pipeline: Any) -> tuple[str, ...]:
    """The camera channels the model expects, in its input order (model.json, else the config's rig)."""
    meta = getattr(getattr(pipeline.runner, "runtime", None), "meta", None)
    if meta and meta.get("camera_channels"):
        return tuple(meta["camera_channels"])
    from calibration.io import load_rig
    from perception.config import rig_path

    return tuple(load_rig(rig_path(pipeline.cfg)).cameras)


def player_config(pipeline: Any, radar_order: Iterable[str], reference: str, max_wait_ms: float,
                  camera_tolerance_ms: float | None = None, reorder_ms: float = 200.0) -> PlayerConfig:
    d = pipeline.cfg.data
    return PlayerConfig(reference, model_cameras(pipeline), tuple(sorted(radar_order)), int(max_wait_ms * 1000),
                        int((camera_tolerance_ms if camera_tolerance_ms is not None else max_wait_ms) * 1000),
                        int(reorder_ms * 1000), int(d.radar.window_ms * 1000), int(d.radar.future_tolerance_ms * 1000),
                        d.radar.sweeps, int(d.sync.max_extrapolation_ms * 1000))


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    a = np.asarray(values) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 2), "p90_ms": round(float(np.percentile(a, 90)), 2),
            "p99_ms": round(float(np.percentile(a, 99)), 2), "max_ms": round(float(a.max()), 2)}


def replay(reader: Any, pipeline: Any, out: str | Path, *, rate: float | None = None, reference: str = "CAM_FRONT",
           max_wait_ms: float = 60.0, max_frames: int | None = None, rig: Any = None, name: str = "replay",
           progress: bool = True, preview_every: int = 10, writer: Any = None) -> dict:
    """Replay every message of ``reader`` (a BagReader or NuScenesSceneReader) through ``pipeline``."""
    from tqdm import tqdm

    from perception.replay.tracker import Tracker
    from perception.replay.writers import ReplayWriter

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmap = reader.topic_map
    radar_order = tuple(rig.radars) if rig is not None else tuple(tmap.radars)
    pcfg = player_config(pipeline, radar_order, reference, max_wait_ms)
    player = Player(pcfg, tmap, rig)
    stereo = np.array(pipeline.stereo_pairs, np.int64).reshape(-1, 2)
    tracker = Tracker(pipeline.cfg.classes)
    # a long box lifetime is harmless: each update deletes the older entities (keyframe-only data is 2 Hz)
    writer = writer or ReplayWriter(out, pipeline.cfg.classes, preview_every=preview_every, frame_period_s=0.5)
    proc_s: list[float] = []
    lag_s: list[float] = []
    frame_errors: dict[str, int] = {}
    frame_issues: list[str] = []  # problems inside used messages (e.g. a sweep without Doppler fields), per frame
    frames_with_issues = 0
    behind = 0
    first_log = None
    wall0 = time.perf_counter()
    n_frames = 0
    t0_first = t0_last = None
    stopped_early = False
    total = len(reader) if hasattr(reader, "__len__") else None
    bar = tqdm(total=total, unit="msg", disable=not progress, desc=f"replay {name}")

    def handle(jobs: list) -> bool:
        nonlocal n_frames, behind, t0_first, t0_last, frames_with_issues
        for job in jobs:
            start = time.perf_counter()
            try:
                frame = build_frame(job, pipeline.cfg, pcfg.camera_order, pcfg.radar_order, stereo, name)
                if frame.issues:
                    frames_with_issues += 1
                    frame_issues.extend(f"t0 {job.t0}: {i}" for i in frame.issues[:2] if len(frame_issues) < 10)
                det = pipeline.infer(frame)
                ids = tracker.update(det)
                jpegs = {ch: (m.stamp_us, m.payload.jpeg) for ch, m in job.cameras.items() if m.payload.jpeg}
                writer.write(frame, det, ids, jpegs, job.emit_us, cameras=job.camera_calib)
            except Exception as err:  # one bad frame must not end a long replay: count it and go on
                key = f"{type(err).__name__}: {str(err)[:160]}"
                frame_errors[key] = frame_errors.get(key, 0) + 1
                continue
            done = time.perf_counter()
            proc_s.append(done - start)
            n_frames += 1
            t0_first = job.t0 if t0_first is None else t0_first
            t0_last = job.t0
            if rate is not None:  # how far behind the paced clock the result is
                due = wall0 + (job.emit_us - first_log) / 1e6 / rate
                lag_s.append(max(0.0, done - due))
                if done - due > 1.0 / 12:
                    behind += 1
            if max_frames is not None and n_frames >= max_frames:
                return True
        return False

    for msg in reader:
        bar.update(1)
        if first_log is None:
            first_log = msg.log_time_us
        if rate is not None:
            wait = wall0 + (msg.log_time_us - first_log) / 1e6 / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        if handle(player.push(msg)):
            stopped_early = True
            break
    if not stopped_early:
        handle(player.finish())
    bar.close()
    wall = time.perf_counter() - wall0
    written = writer.close()
    span_s = (t0_last - t0_first) / 1e6 if n_frames > 1 else 0.0
    sensor_rate = (n_frames - 1) / span_s if span_s > 0 else None
    proc_rate = len(proc_s) / sum(proc_s) if proc_s else None
    totals = player.ledger.totals()
    report = {
        "schema": REPORT_SCHEMA, "source": name, "rate": "max" if rate is None else rate,
        "reference": reference, "max_wait_ms": max_wait_ms, "camera_tolerance_ms": pcfg.camera_tolerance_us / 1000,
        "reorder_ms": pcfg.reorder_us / 1000,
        "frames": {"emitted": n_frames, "errors": frame_errors, "skipped": dict(player.skipped),
                   "masked_sensors": dict(player.masked), "with_issues": frames_with_issues,
                   "issue_examples": frame_issues},
        "messages": {"totals": totals, "identity_holds": totals["received"] == totals["used"] + totals["late"]
                     + totals["dropped"] and player.ledger.pending() == 0 if not stopped_early else None,
                     "per_topic": player.ledger.topics, "reasons": {k: DROP_REASONS[k] for k in sorted(
                         {r for t in player.ledger.topics.values() for r in t["dropped"]})},
                     "examples": dict(player.ledger.examples)},
        "stopped_after_max_frames": stopped_early,
        "events": list(getattr(reader, "events", [])),
        "latency": {"processing": _percentiles(proc_s), "behind_real_time": _percentiles(lag_s) if rate else None,
                    "frames_behind": behind if rate else None},
        "throughput": {"processing_fps": round(proc_rate, 2) if proc_rate else None,
                       "sensor_fps": round(sensor_rate, 2) if sensor_rate else None,
                       "wall_s": round(wall, 2), "frames_per_wall_s": round(n_frames / wall, 2) if wall > 0 else None},
        "outputs": written,
    }
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    return report


def one_line(report: dict) -> str:
    m = report["messages"]["totals"]
    lat = report["latency"]["processing"]
    return (f"{report['frames']['emitted']} frames; messages received {m['received']} = used {m['used']} + late "
            f"{m['late']} + dropped {m['dropped']}; processing p50 {lat['p50_ms']} ms "
            f"({report['throughput']['processing_fps']} fps vs sensor {report['throughput']['sensor_fps']} fps)")
