"""Replay a drive: reader -> player -> Frames -> Pipeline -> tracker -> writers, with a report.

``replay(reader, pipeline, out)`` runs at ``rate`` x real time (``None``: as fast as possible) and returns the
report it writes to ``OUT/report.json`` (schema ``perception-replay-report/1``): per-topic accounting
(received = used + late + dropped + pending, with reasons), frames emitted/skipped/late, masked sensors, latency
percentiles, per-stage times, processing rate vs sensor rate, and stream events (truncation).

Four stages, each in its own thread, joined by bounded queues, so that the CPU work of frame t+1 overlaps the
network of frame t (ONNX Runtime, TensorRT, PyTorch's kernels, PIL's JPEG decoder and OpenCV release the GIL):

  read     reader (bag records, CDR, JPEG decoded at the network's size) -> player (paced at ``rate``) -> FrameJob
  prepare  FrameJob -> Frame (``build_frame``) -> the network's input arrays (``Pipeline.prepare``, pillars)
  infer    the network and its post-processing (``Pipeline.infer_prepared``)            [the calling thread]
  output   tracker -> writers (MCAP with the input radar, lidar and GT, JSONL, PNG previews)

Backpressure: at ``rate=None`` every queue blocks, so every frame the player emits is processed (the same frames
at any speed). When paced (``rate`` set) a stage never waits for the next one: a frame that a newer one overtakes
in the read -> prepare or prepare -> infer queue is stale; it is skipped (``frames.late``) and its messages become
``late`` unless another frame uses them, so that the network always gets the newest frame and the result lag stays
bounded instead of growing without limit.
"""
from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from calibration.sync import SyncError
from calibration.transforms import transform_points
from perception.replay.frames import build_frame
from perception.replay.messages import DROP_REASONS, LidarCloud
from perception.replay.player import FrameJob, Player, PlayerConfig

REPORT_SCHEMA = "perception-replay-report/1"
_END = object()  # end of stream marker passed down the queues


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


@dataclass
class _Item:
    """One frame on its way through the stages."""

    job: FrameJob
    due: float | None  # perf_counter time at which the paced clock reaches the frame's emission (rate set)
    frame: Any = None
    batch: Any = None
    det: Any = None
    error: str | None = None
    submitted: float = 0.0  # perf_counter when the player built it
    started: float = 0.0  # perf_counter when the prepare stage took it
    times: dict[str, float] = field(default_factory=dict)


class _Stats:
    """What the stages measure; each list is appended by one thread only."""

    def __init__(self) -> None:
        self.stage_s: dict[str, list[float]] = {"read": [], "build_frame": [], "input_arrays": [], "network": [],
                                                "postprocess": [], "track_write": []}
        self.processing_s: list[float] = []  # per frame: prepare start -> tracked
        self.lag_s: list[float] = []  # per frame: tracked - due (paced runs)
        self.queued_s: list[float] = []  # per frame: built by the player -> taken by the prepare stage
        self.frame_errors: dict[str, int] = {}
        self.frame_issues: list[str] = []  # problems inside used messages (e.g. a sweep without Doppler fields)
        self.frames_with_issues = 0
        self.late_frames = 0  # stale frames skipped because a newer one overtook them (paced runs)
        self.behind = 0
        self.n_frames = 0
        self.t0_first: int | None = None
        self.t0_last: int | None = None
        self.first_start: float | None = None  # perf_counter: the prepare stage took the first frame
        self.last_done: float | None = None  # perf_counter: the last frame was tracked
        self.lock = threading.Lock()  # for the counters that several stages update

    def error(self, err: BaseException) -> str:
        key = f"{type(err).__name__}: {str(err)[:160]}"
        with self.lock:
            self.frame_errors[key] = self.frame_errors.get(key, 0) + 1
        return key


class _Handoff:
    """A bounded queue between two stages. ``latest`` (paced runs): ``put`` never blocks; an item still waiting
    when a newer one arrives is stale and handed to ``on_stale``. Otherwise ``put`` blocks while the queue is full
    (backpressure up to the reader)."""

    def __init__(self, size: int, latest: bool, on_stale: Callable[[_Item], None], stop: threading.Event):
        self.q: queue.Queue = queue.Queue(maxsize=size)
        self.latest, self.on_stale, self.stop = latest, on_stale, stop

    def put(self, item: Any) -> None:
        if item is _END or not self.latest:
            while not self.stop.is_set():
                try:
                    self.q.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue
            if item is not _END:
                self.on_stale(item)
            return
        while True:
            try:
                self.q.put_nowait(item)
                return
            except queue.Full:
                try:
                    old = self.q.get_nowait()
                except queue.Empty:
                    continue
                if old is _END:  # never overtake the end marker (cannot happen: END is put last)
                    self.q.put(old)
                else:
                    self.on_stale(old)

    def get(self) -> Any:
        while True:
            try:
                return self.q.get(timeout=0.1)
            except queue.Empty:
                if self.stop.is_set():
                    return _END

    def drain(self) -> list[Any]:
        out = []
        while True:
            try:
                out.append(self.q.get_nowait())
            except queue.Empty:
                return out


class _Replay:
    """The stages of one replay run and the state they share (see the module docstring)."""

    def __init__(self, reader: Any, pipeline: Any, player: Player, tracker: Any, writer: Any, *, rate: float | None,
                 max_frames: int | None, name: str, bar: Any):
        self.reader, self.pipeline, self.player = reader, pipeline, player
        self.tracker, self.writer = tracker, writer
        self.rate, self.max_frames, self.name, self.bar = rate, max_frames, name, bar
        self.stats = _Stats()
        self.stop = threading.Event()  # --max-frames reached, or a stage failed
        self.stopped_early = False
        self.failure: BaseException | None = None
        self.ledger_lock = threading.Lock()  # the player's ledger: the read stage and stale-frame releases
        self.stereo = np.array(pipeline.stereo_pairs, np.int64).reshape(-1, 2)
        paced = rate is not None
        self.to_prepare = _Handoff(1, paced, self._stale, self.stop)
        self.to_infer = _Handoff(1, paced, self._stale, self.stop)
        self.to_output: queue.Queue = queue.Queue(maxsize=4)
        self.wall0 = time.perf_counter()
        self.first_log: int | None = None

    # -- accounting of frames that are not processed ----------------------------------------------------------
    def _release(self, item: _Item, to: str) -> None:
        job = item.job
        with self.ledger_lock:
            for m in [*job.cameras.values(), *job.radars, *job.lidars]:
                self.player.ledger.release(m, to)

    def _stale(self, item: _Item) -> None:
        """A frame overtaken by a newer one (paced run), or cut off by the stop: its messages are given back."""
        if self.stop.is_set():
            self._release(item, "pending")
        else:
            with self.stats.lock:
                self.stats.late_frames += 1
            self._release(item, "late")

    # -- stages -----------------------------------------------------------------------------------------------
    def _guard(self, stage: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                stage()
            except BaseException as err:  # a failing stage ends the run; the caller re-raises it
                self.failure = self.failure or err
                self.stop.set()
        return run

    def read(self) -> None:
        """Reader -> player, paced at ``rate``; FrameJobs to the prepare stage."""
        busy = 0.0
        t = time.perf_counter()
        for msg in self.reader:
            busy += time.perf_counter() - t
            if self.stop.is_set():
                break
            self.bar.update(1)
            if self.first_log is None:
                self.first_log = msg.log_time_us
            if self.rate is not None:
                wait = self._due(msg.log_time_us) - time.perf_counter()
                if wait > 0 and self.stop.wait(wait):
                    break
            t = time.perf_counter()
            with self.ledger_lock:
                jobs = self.player.push(msg)
            self._submit(jobs)
            busy += time.perf_counter() - t
            t = time.perf_counter()
        if not self.stop.is_set():
            t = time.perf_counter()
            with self.ledger_lock:
                jobs = self.player.finish()
            self._submit(jobs)
            busy += time.perf_counter() - t
        self.stats.stage_s["read"].append(busy)
        self.to_prepare.put(_END)

    def _due(self, log_time_us: int) -> float:
        return self.wall0 + (log_time_us - self.first_log) / 1e6 / self.rate

    def _submit(self, jobs: list[FrameJob]) -> None:
        for job in jobs:
            self.to_prepare.put(_Item(job, self._due(job.emit_us) if self.rate is not None else None,
                                      submitted=time.perf_counter()))

    def prepare(self) -> None:
        """FrameJob -> Frame -> input arrays."""
        cfg, pcfg = self.pipeline.cfg, self.player.cfg
        while (item := self.to_prepare.get()) is not _END:
            item.started = time.perf_counter()
            if self.stats.first_start is None:
                self.stats.first_start = item.started
            try:
                item.frame = build_frame(item.job, cfg, pcfg.camera_order, pcfg.radar_order, self.stereo, self.name,
                                         getattr(self.reader, "gt", None))
                t = time.perf_counter()
                item.batch = self.pipeline.prepare(item.frame)
                item.times = {"build_frame": t - item.started, "input_arrays": time.perf_counter() - t}
            except Exception as err:  # one bad frame must not end a long replay: count it and go on
                item.error = self.stats.error(err)
            self.to_infer.put(item)
        self.to_infer.put(_END)

    def infer(self) -> None:
        """The network (in the calling thread), then to the output stage."""
        while (item := self.to_infer.get()) is not _END:
            if item.error is None:
                try:
                    item.det = self.pipeline.infer_prepared(item.frame, item.batch, stream=self.name)
                    item.times["network"] = item.det.timing["network_s"]
                    item.times["postprocess"] = item.det.timing["postprocess_s"]
                except Exception as err:
                    item.error = self.stats.error(err)
            item.batch = None  # the arrays are not needed any more
            self._put_output(item)
        self._put_output(_END)

    def _put_output(self, item: Any) -> None:
        while not self.stop.is_set() or item is _END:
            try:
                self.to_output.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        self._stale(item)

    def output(self) -> None:
        """Tracker and writers, in frame order."""
        s = self.stats
        while (item := self.to_output.get()) is not _END:
            if item.error is not None:
                continue
            if self.stop.is_set():  # past --max-frames: not processed
                self._release(item, "pending")
                continue
            job, frame, det = item.job, item.frame, item.det
            t = time.perf_counter()
            try:
                ids = self.tracker.update(det)
                done = time.perf_counter()
                jpegs = {ch: (m.stamp_us, m.payload.jpeg) for ch, m in job.cameras.items() if m.payload.jpeg}
                self.writer.write(frame, det, ids, jpegs, job.emit_us, cameras=job.camera_calib,
                                  lidar=lidar_clouds(job))
            except Exception as err:
                s.error(err)
                continue
            item.times["track_write"] = time.perf_counter() - t
            for k, v in item.times.items():
                s.stage_s[k].append(v)
            if frame.issues:
                s.frames_with_issues += 1
                s.frame_issues.extend(f"t0 {job.t0}: {i}" for i in frame.issues[:2] if len(s.frame_issues) < 10)
            s.processing_s.append(done - item.started)
            s.queued_s.append(item.started - item.submitted)
            s.last_done = done
            s.n_frames += 1
            s.t0_first = job.t0 if s.t0_first is None else s.t0_first
            s.t0_last = job.t0
            if item.due is not None:  # how far behind the paced clock the result is
                s.lag_s.append(max(0.0, done - item.due))
                if done - item.due > 1.0 / 12:
                    s.behind += 1
            if self.max_frames is not None and s.n_frames >= self.max_frames:
                self.stopped_early = True
                self.stop.set()

    def run(self) -> None:
        threads = [threading.Thread(target=self._guard(f), name=f"replay-{f.__name__}", daemon=True)
                   for f in (self.read, self.prepare, self.output)]
        for th in threads:
            th.start()
        self._guard(self.infer)()
        for th in threads:
            th.join()
        # frames still queued when the run stopped were never processed
        for h in (self.to_prepare, self.to_infer):
            for item in h.drain():
                if item is not _END:
                    self._release(item, "pending")
        if self.failure is not None:
            raise self.failure


def lidar_clouds(job: FrameJob) -> list[LidarCloud]:
    """The frame's lidar sweeps for the MCAP: each in base_link at its own stamp (the mount only, no motion
    compensation), with the ego pose at that stamp. A sweep without a pose there is left out."""
    out = []
    for m in job.lidars:
        try:
            pose = job.poses.at(m.stamp_us, m.channel)
        except SyncError:
            continue
        pts = np.array(m.payload, np.float32)
        pts[:, :3] = transform_points(job.lidar_calib[m.channel].ego_from_lidar, pts[:, :3])
        out.append(LidarCloud(m.channel, m.stamp_us, pts, pose))
    return out


def replay(reader: Any, pipeline: Any, out: str | Path, *, rate: float | None = None, reference: str = "CAM_FRONT",
           max_wait_ms: float = 60.0, max_frames: int | None = None, rig: Any = None, name: str = "replay",
           progress: bool = True, preview_every: int = 10, writer: Any = None, draft_decode: bool = True,
           lidar: bool = True) -> dict:
    """Replay every message of ``reader`` (a BagReader or NuScenesSceneReader) through ``pipeline``.
    ``draft_decode``: decode JPEGs at the size the network needs (``messages.decode_image``) instead of full size.
    ``lidar``: pass the drive's lidar sweeps through to the MCAP (never to the network); False: its topics are
    ``ignored`` and never decoded. GT boxes go to the MCAP and previews where the reader has them (``reader.gt``)."""
    from tqdm import tqdm

    from perception.replay.tracker import Tracker
    from perception.replay.writers import ReplayWriter

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if draft_decode and hasattr(reader, "draft_width"):
        reader.draft_width = int(pipeline.cfg.data.image_size[1])
    if not lidar and reader.topic_map.lidars:
        reader.topic_map = reader.topic_map.without_lidar()
        reader.roles = reader.topic_map.roles()
    radar_order = tuple(rig.radars) if rig is not None else tuple(reader.topic_map.radars)
    pcfg = player_config(pipeline, radar_order, reference, max_wait_ms)
    player = Player(pcfg, reader.topic_map, rig)
    # a long box lifetime is harmless: each update deletes the older entities (keyframe-only data is 2 Hz)
    writer = writer or ReplayWriter(out, pipeline.cfg.classes, preview_every=preview_every, frame_period_s=0.5)
    total = len(reader) if hasattr(reader, "__len__") else None
    bar = tqdm(total=total, unit="msg", disable=not progress, desc=f"replay {name}")
    pipeline.streams.pop(name, None)  # a temporal network's state starts afresh with the drive
    run = _Replay(reader, pipeline, player, Tracker(pipeline.cfg.classes), writer, rate=rate, max_frames=max_frames,
                  name=name, bar=bar)
    try:
        run.run()
    finally:
        bar.close()
    wall = time.perf_counter() - run.wall0
    written = writer.close()
    report = _report(run, reader, pcfg, wall, written, reference, max_wait_ms)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    return report


def _report(run: _Replay, reader: Any, pcfg: PlayerConfig, wall: float, written: dict, reference: str,
            max_wait_ms: float) -> dict:
    s, player, rate = run.stats, run.player, run.rate
    span_s = (s.t0_last - s.t0_first) / 1e6 if s.n_frames > 1 else 0.0
    sensor_rate = (s.n_frames - 1) / span_s if span_s > 0 else None
    # frames over the time from the first frame's start to the last one's result: the pipeline's throughput at
    # rate max (stages overlap, so per-frame latencies do not add up); paced, it cannot exceed the sensor rate
    busy = (s.last_done - s.first_start) if s.n_frames > 1 else sum(s.processing_s)
    proc_rate = s.n_frames / busy if s.processing_s and busy > 0 else None
    totals = player.ledger.totals()
    settled = totals["used"] + totals["late"] + totals["dropped"]
    stages = {k: {"mean_ms": round(1000 * float(np.mean(v)), 2), "p50_ms": round(1000 * float(np.median(v)), 2)}
              for k, v in s.stage_s.items() if v and k != "read"}
    n_jobs = player.frames
    if s.stage_s["read"] and n_jobs:  # the read stage is one loop: its busy time (no pacing sleeps) per frame
        stages["read"] = {"mean_ms": round(1000 * s.stage_s["read"][0] / n_jobs, 2), "p50_ms": None}
    ref_topic = reader.topic_map.cameras[reference].image if reference in reader.topic_map.cameras else None
    return {
        "schema": REPORT_SCHEMA, "source": run.name, "rate": "max" if rate is None else rate,
        "reference": reference, "reference_topic": ref_topic, "max_wait_ms": max_wait_ms,
        "camera_tolerance_ms": pcfg.camera_tolerance_us / 1000, "reorder_ms": pcfg.reorder_us / 1000,
        "frames": {"emitted": s.n_frames, "built_by_player": n_jobs, "late": s.late_frames,
                   "errors": s.frame_errors, "skipped": dict(player.skipped),
                   "masked_sensors": dict(player.masked), "with_issues": s.frames_with_issues,
                   "issue_examples": s.frame_issues},
        "messages": {"totals": totals,
                     "identity_holds": totals["received"] == settled + totals["pending"]
                     and (totals["pending"] == 0 or run.stopped_early),
                     "per_topic": player.ledger.topics, "reasons": {k: DROP_REASONS[k] for k in sorted(
                         {r for t in player.ledger.topics.values() for r in t["dropped"]})},
                     "examples": dict(player.ledger.examples)},
        "stopped_after_max_frames": run.stopped_early,
        "events": list(getattr(reader, "events", [])),
        "latency": {"processing": _percentiles(s.processing_s), "queued": _percentiles(s.queued_s),
                    "behind_real_time": _percentiles(s.lag_s) if rate else None,
                    "frames_behind": s.behind if rate else None},
        "stages": stages,
        "throughput": {"processing_fps": round(proc_rate, 2) if proc_rate else None,
                       "sensor_fps": round(sensor_rate, 2) if sensor_rate else None,
                       "wall_s": round(wall, 2),
                       "frames_per_wall_s": round(s.n_frames / wall, 2) if wall > 0 else None},
        "outputs": written,
        "temporal": _temporal_report(run),
    }


def _temporal_report(run: _Replay) -> dict | None:
    """A temporal network's state over the drive: frames that had a previous state, cold starts by reason (frames
    dropped or skipped as stale leave holes: ``no_state_near_gap`` / ``gap_above_max``), the gaps used."""
    pipe = run.pipeline
    if not getattr(pipe, "temporal", False) or run.name not in pipe.streams:
        return None
    from perception.streaming import RESET_REASONS

    st = pipe.streams[run.name]
    t = pipe.cfg.model.temporal
    return {**st.counts(), "reasons": {k: RESET_REASONS[k] for k in st.resets},
            "policy": {"target_gap_s": t.target_gap_s, "gap_tolerance_s": t.gap_tolerance_s,
                       "max_gap_s": t.max_gap_s}, "gap_s": _percentiles_s(st.gaps)}


def _percentiles_s(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    a = np.asarray(values)
    return {"min": round(float(a.min()), 4), "p50": round(float(np.median(a)), 4), "max": round(float(a.max()), 4)}


def one_line(report: dict) -> str:
    m = report["messages"]["totals"]
    lat = report["latency"]["processing"]
    pending = f" + pending {m['pending']}" if m.get("pending") else ""
    late = f" ({report['frames']['late']} stale frames skipped)" if report["frames"].get("late") else ""
    temporal = ""
    if report.get("temporal"):
        t = report["temporal"]
        temporal = f"; temporal state on {t['warm']} frames, cold starts {t['resets'] or 'none'}"
    return (f"{report['frames']['emitted']} frames{late}; messages received {m['received']} = used {m['used']} + "
            f"late {m['late']} + dropped {m['dropped']}{pending}; processing p50 {lat['p50_ms']} ms "
            f"({report['throughput']['processing_fps']} fps vs sensor {report['throughput']['sensor_fps']} fps)"
            f"{temporal}")


def diagnose(report: dict, few: float = 0.5) -> list[str]:
    """Why a replay produced no frame or far fewer (under ``few`` x) than its reference camera's messages: the main
    reasons with counts and an example each, most frequent first. Empty when the frame count is as expected."""
    ref = report.get("reference_topic")
    per = report["messages"]["per_topic"]
    n_ref = per.get(ref, {}).get("received", 0) if ref else 0
    n = report["frames"]["emitted"]
    if report.get("stopped_after_max_frames") or (n > 0 and n >= few * n_ref):
        return []
    reasons: list[tuple[int, str]] = []
    if n_ref == 0:
        topics = sorted(per)
        reasons.append((1 << 30, f"no message on the reference camera's topic {ref} ({report['reference']}); the "
                                 f"drive has {topics[:8]}{'...' if len(topics) > 8 else ''}: check --reference and "
                                 "the topic map (--topics)"))
    examples = report["messages"]["examples"]
    for reason, count in per.get(ref, {}).get("dropped", {}).items():
        ex = examples.get(reason, [])
        ex = next((e for e in ex if e.startswith(f"{ref} ")), ex[0] if ex else "")
        reasons.append((count, f"{count} reference images dropped as {reason} ({DROP_REASONS[reason]}); e.g. {ex}"))
    for why, count in report["frames"]["skipped"].items():
        reasons.append((count, f"{count} frames skipped: {why}"))
    for err, count in report["frames"]["errors"].items():
        reasons.append((count, f"{count} frames failed: {err}"))
    if report["frames"].get("late"):
        c = report["frames"]["late"]
        reasons.append((c, f"{c} stale frames skipped because processing fell behind the paced clock (--rate)"))
    if ref and per.get(ref, {}).get("late"):
        c = per[ref]["late"]
        reasons.append((c, f"{c} reference images late"))
    reasons.sort(key=lambda r: -r[0])
    head = (f"no frame was produced from {n_ref} {report['reference']} images" if n == 0 else
            f"only {n} frames from {n_ref} {report['reference']} images")
    return [head + ("; main reasons:" if reasons else " (no reason recorded)")] + [f"  {r}" for _, r in reasons[:5]]
