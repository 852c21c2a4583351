"""The player: messages in arrival order -> Frames at the reference camera's rate, causally.

Semantics (docs/replay.md, "The player"): a frame is triggered by an image of the reference camera; its ``t0`` is
that image's stamp; it is emitted ``max_wait`` after the trigger *arrived* (the arrival clock is the bag's log
time), using only messages that arrived by then:

- each other camera: its image with the stamp closest to ``t0`` within ``camera_tolerance`` (else masked);
- each radar: up to ``sweeps`` sweeps with stamps in ``[t0 - window, t0 + future_tolerance]``, closest first
  (``perception.data.radar.select_sweeps``, the dataset's selection, among the sweeps that have arrived);
- ego poses: every pose received so far (interpolated, extrapolated up to the config's limit);
- each lidar of the topic map (not a network input: passed through to the MCAP): its sweep with the stamp
  closest to ``t0`` within ``camera_tolerance``, one not given to an earlier frame (none: the frame has no lidar).

Messages are kept in per-sensor stores ordered by stamp; a message whose stamp is older than the newest stamp
seen minus ``reorder`` is beyond the reorder buffer and dropped. Every input message ends in exactly one
category of the ledger: used (it went into a frame or the pose/calibration state), late (it arrived after
the frame that would have used it was emitted, and no later frame used it) or dropped with a reason
(``perception.replay.messages.DROP_REASONS``): received = used + late + dropped, per topic.
"""
from __future__ import annotations

import statistics
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from calibration.rig import CalibrationError, Camera, Distortion, Lidar, Radar, Rig
from calibration.sync import PoseStream, SyncError
from perception.data.radar import select_sweeps
from perception.replay.messages import DROP_REASONS, Message, ReplayInputError
from perception.replay.topics import TopicMap


@dataclass(frozen=True)
class PlayerConfig:
    reference: str
    camera_order: tuple[str, ...]
    radar_order: tuple[str, ...]  # index order of the radars (the Frame's ``sensor`` field)
    max_wait_us: int = 60_000
    camera_tolerance_us: int = 60_000
    reorder_us: int = 200_000
    radar_window_us: int = 500_000
    radar_future_us: int = 50_000
    radar_sweeps: int = 6
    max_extrapolation_us: int = 100_000
    # a sensor message or pose stamped further ahead of the stream's time than this is dropped (stamp_outlier)
    max_stamp_lead_us: int = 1_000_000


@dataclass
class FrameJob:
    """What the player decided for one frame; ``build_frame`` turns it into a Frame."""

    index: int
    t0: int
    emit_us: int
    trigger: Message
    cameras: dict[str, Message]
    radars: list[Message]
    poses: PoseStream
    camera_calib: dict[str, Camera]
    radar_calib: dict[str, Radar]
    missing: list[str] = field(default_factory=list)  # sensors masked in this frame
    lidars: list[Message] = field(default_factory=list)  # lidar sweeps passed through to the MCAP (not the network)
    lidar_calib: dict[str, Lidar] = field(default_factory=dict)


class Ledger:
    """One final status per input message: used, late or dropped (with a reason); counts per topic.

    A frame that the real-time replay skips after the player built it (a stale frame, when the network falls
    behind) gives its messages back (``release``): a message no other frame uses becomes late, or pending when
    the run stopped (``--max-frames``) before the frame was processed. A released message that a later frame uses
    becomes used again."""

    def __init__(self) -> None:
        self.topics: dict[str, dict[str, Any]] = {}
        self.status: dict[int, str] = {}
        self.refs: dict[int, int] = defaultdict(int)  # frames using the message
        self.examples: dict[str, list[str]] = defaultdict(list)

    def _topic(self, topic: str) -> dict[str, Any]:
        return self.topics.setdefault(topic, {"received": 0, "used": 0, "late": 0, "dropped": {}})

    def receive(self, m: Message) -> None:
        self._topic(m.topic)["received"] += 1
        self.status[m.seq] = "pending"

    def _final(self, m: Message, status: str) -> bool:
        if self.status.get(m.seq) != "pending":
            return False
        self.status[m.seq] = status
        return True

    def use(self, m: Message) -> None:
        st = self.status.get(m.seq)
        if st == "late" and m.meta.get("released"):  # a skipped frame gave it back; this frame uses it
            self._topic(m.topic)["late"] -= 1
            self.status[m.seq] = "pending"
        if self._final(m, "used"):
            self._topic(m.topic)["used"] += 1
        if self.status.get(m.seq) == "used":
            self.refs[m.seq] += 1

    def release(self, m: Message, to: str = "late") -> None:
        """A frame that used ``m`` was not processed: ``m`` becomes ``to`` ("late" or "pending") unless another
        frame uses it."""
        assert to in ("late", "pending"), to
        if self.status.get(m.seq) != "used":
            return
        self.refs[m.seq] -= 1
        if self.refs[m.seq] > 0:
            return
        self._topic(m.topic)["used"] -= 1
        self.status[m.seq] = to
        m.meta["released"] = True
        if to == "late":
            self._topic(m.topic)["late"] += 1

    def late(self, m: Message) -> None:
        if self._final(m, "late"):
            self._topic(m.topic)["late"] += 1

    def drop(self, m: Message, reason: str, detail: str = "") -> None:
        assert reason in DROP_REASONS, reason
        if self._final(m, "dropped"):
            d = self._topic(m.topic)["dropped"]
            d[reason] = d.get(reason, 0) + 1
            if len(self.examples[reason]) < 5:
                self.examples[reason].append(f"{m.topic} seq {m.seq} stamp {m.stamp_us}: {detail or m.detail}")

    def pending(self) -> int:
        return sum(1 for s in self.status.values() if s == "pending")

    def totals(self) -> dict[str, Any]:
        """received, used, late, dropped and pending (not settled: only when a run stopped early) over all topics;
        received = used + late + dropped + pending."""
        out = {"received": 0, "used": 0, "late": 0, "dropped": 0}
        for t in self.topics.values():
            out["received"] += t["received"]
            out["used"] += t["used"]
            out["late"] += t["late"]
            out["dropped"] += sum(t["dropped"].values())
        out["pending"] = self.pending()
        return out


@dataclass
class _Emitted:
    index: int
    t0: int
    cameras: dict[str, int]  # channel -> |stamp - t0| of the image (or lidar sweep) used


class Player:
    def __init__(self, cfg: PlayerConfig, topic_map: TopicMap, rig: Rig | None = None):
        if cfg.reference not in cfg.camera_order:
            raise ReplayInputError(f"reference camera '{cfg.reference}' is not one of the model's cameras "
                             f"{list(cfg.camera_order)}; choose --reference among them")
        self.cfg = cfg
        self.map = topic_map
        self.rig = rig
        self.ledger = Ledger()
        self.images: dict[str, list[Message]] = defaultdict(list)
        self.sweeps: dict[str, list[Message]] = defaultdict(list)
        self.lidar_sweeps: dict[str, list[Message]] = defaultdict(list)
        self.poses: dict[int, np.ndarray] = {}
        self.static: dict[str, tuple[str, np.ndarray]] = {}  # child frame -> (parent frame, parent_from_child)
        self.infos: dict[str, Any] = {}
        self._cam_cache: dict[tuple, Camera] = {}
        # per channel, valid until the next /tf_static message: its mount, and its validated Radar/Lidar (built on
        # every message, the pose check was a third of the read thread's time, issue 25)
        self._mounts: dict[str, tuple[np.ndarray | None, str]] = {}
        self._sensors: dict[tuple[type, str], tuple[Any, str]] = {}
        self.pending: list[Message] = []  # triggers waiting for their deadline, in arrival order
        self.recent: list[_Emitted] = []
        self.newest_stamp: int | None = None
        self._offsets: deque[int] = deque(maxlen=64)  # arrival - stamp of recent accepted sensor messages and poses
        self.last_t0: int | None = None
        self.frames = 0
        self.skipped: dict[str, int] = defaultdict(int)  # frames not built: reason -> count
        self.masked: dict[str, int] = defaultdict(int)  # sensor -> frames where it was masked

    # -- calibration ------------------------------------------------------------
    def _mount(self, ch: str) -> tuple[np.ndarray | None, str]:
        """ego_from_sensor of a channel (its TF frame per the topic map): the /tf_static transforms from the
        sensor's frame up to the pose child frame (``base_link``), composed; a chain of any length. Cached until
        the next /tf_static message."""
        if ch not in self._mounts:
            self._mounts[ch] = self._compose_mount(ch)
        return self._mounts[ch]

    def _compose_mount(self, ch: str) -> tuple[np.ndarray | None, str]:
        frame, root = self.map.frame_of(ch), self.map.pose_child
        ego_from_cur, cur, seen = np.eye(4), frame, set()
        while cur != root:
            if cur in seen:
                return None, f"/tf_static has a cycle through {cur} (from {frame})"
            if cur not in self.static:
                gap = f" (the chain stops at {cur})" if cur != frame else ""
                return None, f"no /tf_static chain {root} -> {frame}{gap}"
            seen.add(cur)
            parent, parent_from_cur = self.static[cur]
            ego_from_cur = parent_from_cur @ ego_from_cur
            cur = parent
        return ego_from_cur, ""

    def camera(self, ch: str) -> tuple[Camera | None, str]:
        if self.rig is not None:
            cam = self.rig.cameras.get(ch)
            return cam, "" if cam else f"camera {ch} is not in the rig"
        mount, why = self._mount(ch)
        if mount is None:
            return None, why
        info = self.infos.get(ch)
        if info is None:
            return None, f"no CameraInfo for {ch} yet"
        key = (ch, info.width, info.height, info.k.tobytes(), info.d, mount.tobytes())
        if key not in self._cam_cache:
            dist = None
            if any(info.d):
                model = {"plumb_bob": "opencv", "rational_polynomial": "opencv", "equidistant": "fisheye"}.get(
                    info.distortion_model)
                if model is None:
                    return None, (f"CameraInfo distortion model '{info.distortion_model}' of {ch} is not supported "
                                  "(plumb_bob, rational_polynomial, equidistant); pass --rig")
                dist = Distortion(model, tuple(info.d[:4]) if model == "fisheye" else tuple(info.d))
            try:
                self._cam_cache[key] = Camera(ch, info.width, info.height, info.k, mount, dist)
            except CalibrationError as err:
                return None, f"calibration of {ch} is invalid ({err})"
        return self._cam_cache[key], ""

    def radar(self, ch: str) -> tuple[Radar | None, str]:
        if self.rig is not None:
            r = self.rig.radars.get(ch)
            return r, "" if r else f"radar {ch} is not in the rig"
        mount, why = self._mount(ch)
        if mount is None:
            return None, why
        doppler = self.map.radars[ch].doppler if ch in self.map.radars else "cartesian"
        return self._calibrated(Radar, ch, mount, doppler)

    def lidar(self, ch: str) -> tuple[Lidar | None, str]:
        if self.rig is not None and ch in self.rig.lidars:
            return self.rig.lidars[ch], ""
        mount, why = self._mount(ch)
        if mount is None:
            return None, why + (" and the --rig has no such lidar" if self.rig is not None else "")
        return self._calibrated(Lidar, ch, mount)

    def _calibrated(self, kind: type, ch: str, mount: np.ndarray, *args: Any) -> tuple[Any, str]:
        """The validated Radar/Lidar of ``ch`` on ``mount`` (its current ``_mount``), built once until the next
        /tf_static message (an invalid one is remembered with its reason)."""
        if (kind, ch) not in self._sensors:
            try:
                self._sensors[kind, ch] = (kind(ch, mount, *args), "")
            except CalibrationError as err:
                self._sensors[kind, ch] = (None, f"calibration of {ch} is invalid ({err})")
        return self._sensors[kind, ch]

    # -- input ------------------------------------------------------------------
    def push(self, m: Message) -> list[FrameJob]:
        """Take one message (arrival order); returns the frames whose deadline passed before it arrived."""
        out = self._emit_due(m.log_time_us)
        self.ledger.receive(m)
        if m.reason:
            self.ledger.drop(m, m.reason, m.detail)
        elif m.kind == "tf_static":
            self._static(m)
        elif m.kind == "camera_info":
            self.infos[m.channel] = m.payload
            self.ledger.use(m)
        elif m.kind in ("tf", "odometry"):
            self._pose(m)
        elif m.kind in ("camera", "radar", "lidar"):
            self._sensor(m)
        else:
            self.ledger.drop(m, "unknown_topic", m.kind)
        self._prune()
        return out

    def finish(self) -> list[FrameJob]:
        """End of stream: emit the frames still waiting, settle every stored message."""
        out = self._emit_due(None)
        for store in (self.images, self.sweeps, self.lidar_sweeps):
            for msgs in store.values():
                for m in msgs:
                    self._settle(m, "after the last frame" if self.last_t0 is not None and m.stamp_us > self.last_t0
                                 else "no frame needed it")
            store.clear()
        return out

    def _static(self, m: Message) -> None:
        """Every static transform is kept (a sensor may hang below intermediate frames: ``_mount`` composes)."""
        for t in m.payload:
            self.static[t.child] = (t.parent, t.matrix())
        self._mounts.clear()
        self._sensors.clear()
        if m.payload:
            self.ledger.use(m)
        else:
            self.ledger.drop(m, "unused_transform", "an empty /tf_static message")

    def _stamp_outlier(self, m: Message, stamp_us: int) -> bool:
        """Drop (stamp_outlier) a message stamped far ahead of the stream's time: arrival - stamp compared with the
        median of the last 64 accepted messages (at least 3 needed). A stamp far *behind* needs no rule: it is
        older than the reorder buffer and dropped alone (out_of_order); one far ahead would move the newest stamp
        and push every later message out of the buffer."""
        offset = m.log_time_us - stamp_us
        if len(self._offsets) >= 3:
            lead = statistics.median(self._offsets) - offset  # 64 ints: ~10x cheaper than np.median per message
            if lead > self.cfg.max_stamp_lead_us:
                self.ledger.drop(m, "stamp_outlier", f"stamp {lead / 1e6:.1f} s ahead of the stream's time (limit "
                                                     f"{self.cfg.max_stamp_lead_us / 1e6:g} s)")
                return True
        self._offsets.append(offset)
        return False

    def _pose(self, m: Message) -> None:
        if m.payload and self._stamp_outlier(m, max(t.stamp_us for t in m.payload)):
            return
        reason = "unused_transform"
        for t in m.payload:
            if (t.parent, t.child) != (self.map.pose_parent, self.map.pose_child):
                continue
            if t.stamp_us in self.poses:
                reason = "duplicate"
                continue
            if self.newest_stamp is not None and t.stamp_us < self.newest_stamp - self.cfg.reorder_us:
                reason = "out_of_order"
                continue
            self.poses[t.stamp_us] = t.matrix()
            self.newest_stamp = max(self.newest_stamp or t.stamp_us, t.stamp_us)
            reason = ""
        if reason:
            self.ledger.drop(m, reason, f"{self.map.pose_parent} -> {self.map.pose_child}")
        else:
            self.ledger.use(m)

    def _sensor(self, m: Message) -> None:
        c = self.cfg
        if self._stamp_outlier(m, m.stamp_us):
            return
        if self.newest_stamp is not None and m.stamp_us < self.newest_stamp - c.reorder_us:
            self.ledger.drop(m, "out_of_order", f"stamp {(self.newest_stamp - m.stamp_us) / 1000:.0f} ms behind the "
                                                f"newest ({c.reorder_us / 1000:.0f} ms buffer)")
            return
        if m.kind == "camera":
            if m.channel not in c.camera_order:
                self.ledger.drop(m, "ignored", f"camera {m.channel} is not an input of the model")
                return
            store = self.images[m.channel]
        else:
            store = (self.sweeps if m.kind == "radar" else self.lidar_sweeps)[m.channel]
        # calibration may arrive after the data (a CameraInfo written after its image): checked now when it is
        # known, and again when a frame would use the message
        reason, why = self._unusable(m)
        if reason and reason != "no_calibration":
            self.ledger.drop(m, reason, why)
            return
        if any(o.stamp_us == m.stamp_us for o in store):
            self.ledger.drop(m, "duplicate", f"stamp {m.stamp_us} already received on {m.topic}")
            return
        if m.kind == "camera" and m.channel == c.reference and self.last_t0 is not None and m.stamp_us <= self.last_t0:
            self.ledger.drop(m, "out_of_order", f"reference image older than the last frame ({self.last_t0})")
            return
        self.newest_stamp = max(self.newest_stamp or m.stamp_us, m.stamp_us)
        for f in self.recent:  # would an emitted frame have used it?
            if self._eligible(m, f.t0) and (m.kind == "radar" or abs(m.stamp_us - f.t0) < f.cameras.get(m.channel, 1 << 62)):
                m.meta["late_for"] = f.index
        if m.kind == "camera" and m.channel == c.reference:
            self.pending.append(m)
        else:
            store.append(m)

    def _unusable(self, m: Message) -> tuple[str, str]:
        """("", "") when the message can be used now, else (drop reason, detail)."""
        if m.kind == "camera":
            cam, why = self.camera(m.channel)
            if cam is None:
                return "no_calibration", why
            w, h = m.payload.size
            if (w, h) != (cam.width, cam.height):
                return "wrong_size", f"image {w}x{h}, calibration {cam.width}x{cam.height}"
            return "", ""
        r, why = (self.radar if m.kind == "radar" else self.lidar)(m.channel)
        return ("", "") if r is not None else ("no_calibration", why)

    def _usable(self, m: Message) -> bool:
        reason, why = self._unusable(m)
        if reason:
            self.ledger.drop(m, reason, why)
        return not reason

    def _eligible(self, m: Message, t0: int) -> bool:
        c = self.cfg
        if m.kind == "camera":
            return m.channel != c.reference and abs(m.stamp_us - t0) <= c.camera_tolerance_us
        if m.kind == "lidar":
            return abs(m.stamp_us - t0) <= c.camera_tolerance_us
        return t0 - c.radar_window_us <= m.stamp_us <= t0 + c.radar_future_us

    # -- output -----------------------------------------------------------------
    def _emit_due(self, now: int | None) -> list[FrameJob]:
        out = []
        while self.pending and (now is None or self.pending[0].log_time_us + self.cfg.max_wait_us < now):
            trig = self.pending.pop(0)
            job = self._emit(trig, trig.log_time_us + self.cfg.max_wait_us)
            if job is not None:
                out.append(job)
        return out

    def _emit(self, trig: Message, emit_us: int) -> FrameJob | None:
        c = self.cfg
        t0 = trig.stamp_us
        if self.last_t0 is not None and t0 <= self.last_t0:
            self.ledger.drop(trig, "out_of_order", f"reference image older than the last frame ({self.last_t0})")
            return None
        if not self.poses:
            self.ledger.drop(trig, "no_pose", "no ego pose received yet")
            self.skipped["no ego pose"] += 1
            return None
        ts = np.array(sorted(self.poses), np.int64)
        poses = PoseStream(ts, np.stack([self.poses[t] for t in ts]), c.max_extrapolation_us)
        try:
            poses.at(t0, c.reference)
        except SyncError as err:
            self.ledger.drop(trig, "no_pose", str(err))
            self.skipped["no ego pose near t0"] += 1
            return None
        if not self._usable(trig):
            self.skipped["reference image unusable"] += 1
            return None
        cams: dict[str, Message] = {c.reference: trig}
        cam_calib: dict[str, Camera] = {}
        missing: list[str] = []
        for ch in c.camera_order:
            cam, _ = self.camera(ch)
            if cam is not None:
                cam_calib[ch] = cam
            if ch == c.reference:
                continue
            cands = [m for m in self.images.get(ch, []) if self._eligible(m, t0) and self._usable(m)]
            if cands:
                cams[ch] = min(cands, key=lambda m: (abs(m.stamp_us - t0), -m.stamp_us))
            else:
                missing.append(ch)
        radar_calib: dict[str, Radar] = {}
        radars: list[Message] = []
        for ch in c.radar_order:
            r, _ = self.radar(ch)
            if r is not None:
                radar_calib[ch] = r
            usable = [m for m in self.sweeps.get(ch, []) if self._eligible(m, t0) and self._usable(m)]
            cands = [usable[k] for k in select_sweeps([m.stamp_us for m in usable], t0, c.radar_window_us,
                                                      c.radar_future_us, c.radar_sweeps)]
            if not cands:
                missing.append(ch)
            radars += cands
        lidars: list[Message] = []
        lidar_calib: dict[str, Lidar] = {}
        for ch in self.map.lidars:  # not a network input: never masked; a sweep goes to one frame only
            cands = [m for m in self.lidar_sweeps.get(ch, []) if self._eligible(m, t0) and self._usable(m)]
            if cands:
                best = min(cands, key=lambda m: (abs(m.stamp_us - t0), -m.stamp_us))
                self.lidar_sweeps[ch] = [m for m in self.lidar_sweeps[ch] if m is not best]
                lidars.append(best)
                lidar_calib[ch] = self.lidar(ch)[0]
        for m in [*cams.values(), *radars, *lidars]:
            self.ledger.use(m)
        for ch in missing:
            self.masked[ch] += 1
        job = FrameJob(self.frames, t0, emit_us, trig, cams, radars, poses, cam_calib, radar_calib, missing, lidars,
                       lidar_calib)
        chosen = {ch: abs(m.stamp_us - t0) for ch, m in [*cams.items(), *((m.channel, m) for m in lidars)]}
        self.recent.append(_Emitted(self.frames, t0, chosen))
        self.frames += 1
        self.last_t0 = t0
        return job

    def _settle(self, m: Message, why: str) -> None:
        reason, detail = self._unusable(m)
        if reason:
            self.ledger.drop(m, reason, detail)
        elif "late_for" in m.meta:
            self.ledger.late(m)
        else:
            self.ledger.drop(m, "not_selected", why)

    def _prune(self) -> None:
        if self.last_t0 is None:
            return
        c = self.cfg
        horizon = self.last_t0 - c.reorder_us
        for store, keep in ((self.images, c.camera_tolerance_us), (self.sweeps, c.radar_window_us),
                            (self.lidar_sweeps, c.camera_tolerance_us)):
            for ch, msgs in store.items():
                if msgs and msgs[0].stamp_us < horizon - keep:
                    old = [m for m in msgs if m.stamp_us < horizon - keep]
                    for m in old:
                        self._settle(m, "a closer message of the sensor was used or no frame needed it")
                    store[ch] = [m for m in msgs if m.stamp_us >= horizon - keep]
        self.recent = [f for f in self.recent if f.t0 >= horizon - c.radar_window_us]
        if len(self.poses) > 64:
            old_t = sorted(t for t in self.poses if t < horizon - c.radar_window_us - 2 * c.max_extrapolation_us)
            for t in old_t[:-2]:  # keep two poses before the horizon for interpolation
                del self.poses[t]
