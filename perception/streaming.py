"""The temporal state of a streaming network, kept outside the (stateless) graph: numpy only, no torch, so every
runner (PyTorch, ONNX Runtime, TensorRT) and every caller (``Pipeline``, offline evaluation, replay) shares it.

A temporal network (``model.temporal.enabled``) returns ``bev_state``, the single-frame BEV of the frame it ran
on, and takes an earlier one back as ``prev_bev`` with ``cur_from_prev``, ``prev_dt`` and ``prev_valid``
(``perception.model.network.TEMPORAL_INPUT_NAMES``). ``StreamState`` keeps the recent states of one stream (a
small ring with their times and poses) and chooses the previous state for the next frame:

- the kept state whose age (``t0 - t0_state``) is nearest to ``target_gap_s``, if that age is within
  ``gap_tolerance_s`` of it: offline at key frames (0.5 s apart) this is the previous key frame; in replay at
  camera rate (~83 ms) it is the frame processed about 0.5 s earlier, the gap the network was trained at;
- otherwise a cold start (``prev_valid`` False), counted with its reason.

Reset reasons (``RESET_REASONS``): the first frame of a stream, a new scene token, a time jump backwards, every
kept state older than ``max_gap_s`` (frames dropped or a pause), no kept state near the target gap, history
switched off (``no_history``: every frame cold, to measure what the history adds).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from perception.config import TemporalConfig

RESET_REASONS = {
    "stream_start": "first frame of the stream: no history",
    "new_scene": "the frame's scene token differs from the previous frame's",
    "time_backwards": "t0 is not after the previous frame's (a jump backwards in time)",
    "gap_above_max": "every kept state is older than model.temporal.max_gap_s (frames dropped, or a pause)",
    "no_state_near_gap": "no kept state within model.temporal.gap_tolerance_s of target_gap_s (stream younger "
                         "than the target gap, or frames dropped around it)",
    "no_history": "history switched off (perception-test --no-history: every frame a cold start)",
}


def cur_from_prev(cur_global_from_ego: np.ndarray, prev_global_from_ego: np.ndarray) -> np.ndarray:
    """(4, 4) float32: current ego <- previous ego, from the two global <- ego poses (float64 in). With a BEV
    augmentation the Frames' poses are global <- augmented ego (``perception.data.transforms.apply_bev``), so the
    same formula gives the motion between the two augmented frames."""
    cur, prev = np.asarray(cur_global_from_ego, np.float64), np.asarray(prev_global_from_ego, np.float64)
    assert cur.shape == (4, 4) and prev.shape == (4, 4), (cur.shape, prev.shape)
    return np.linalg.solve(cur, prev).astype(np.float32)


def cold_start_arrays(state_shape: tuple[int, ...], batch: int = 1) -> dict[str, np.ndarray]:
    """The temporal inputs of a cold start: zero BEV, identity motion, gap 0, invalid."""
    return {"prev_bev": np.zeros((batch, *state_shape), np.float32),
            "cur_from_prev": np.tile(np.eye(4, dtype=np.float32), (batch, 1, 1)),
            "prev_dt": np.zeros(batch, np.float32), "prev_valid": np.zeros(batch, bool)}


@dataclass
class _Kept:
    t0: int
    global_from_ego: np.ndarray
    bev: np.ndarray  # (C, H, W) float32


class StreamState:
    """The recent ``bev_state`` outputs of one stream and the choice of the previous one (module docstring).

    ``inputs(scene, t0, global_from_ego)`` -> the temporal input arrays (batch 1) for the frame about to run;
    ``push(t0, global_from_ego, bev)`` after it ran. ``resets`` counts the cold starts by reason; ``warm`` the
    frames that got a previous state."""

    def __init__(self, policy: TemporalConfig, state_shape: tuple[int, ...], no_history: bool = False):
        """``policy``: ``cfg.model.temporal`` (max_gap_s, target_gap_s, gap_tolerance_s, history). ``no_history``:
        every frame after the stream's first is a cold start with reason ``no_history``."""
        self.policy, self.state_shape = policy, tuple(state_shape)
        self.no_history = no_history
        self.kept: deque[_Kept] = deque(maxlen=policy.history)
        self.scene: str | None = None
        self.last_t0: int | None = None
        self.resets: dict[str, int] = {}
        self.warm = 0
        self.last_reason: str | None = None  # the reason of the last frame's cold start (None: it was warm)
        self.last_gap_s: float | None = None  # the gap of the last frame's previous state
        self.gaps: list[float] = []  # the gap of every warm frame, seconds (reports)

    def _reset(self, reason: str) -> None:
        self.kept.clear()
        self.last_reason = reason

    def inputs(self, scene: str, t0: int, global_from_ego: np.ndarray) -> dict[str, np.ndarray]:
        p = self.policy
        self.last_reason, self.last_gap_s = None, None
        if self.last_t0 is None:
            self._reset("stream_start")
        elif scene != self.scene:
            self._reset("new_scene")
        elif self.no_history:
            self._reset("no_history")
        elif t0 <= self.last_t0:
            self._reset("time_backwards")
        elif self.kept and all((t0 - k.t0) / 1e6 > p.max_gap_s for k in self.kept):
            self._reset("gap_above_max")
        self.scene, self.last_t0 = scene, int(t0)
        best = None
        if self.last_reason is None:
            ages = [((t0 - k.t0) / 1e6, k) for k in self.kept]
            ok = [(abs(age - p.target_gap_s), age, k) for age, k in ages
                  if abs(age - p.target_gap_s) <= p.gap_tolerance_s and age <= p.max_gap_s]
            if ok:
                best = min(ok, key=lambda r: (r[0], r[1]))  # nearest to the target; equal: the more recent
            else:
                self.last_reason = "no_state_near_gap"
        if best is None:
            self.resets[self.last_reason] = self.resets.get(self.last_reason, 0) + 1
            return cold_start_arrays(self.state_shape)
        _, age, k = best
        self.warm += 1
        self.last_gap_s = age
        self.gaps.append(age)
        return {"prev_bev": k.bev[None], "cur_from_prev": cur_from_prev(global_from_ego, k.global_from_ego)[None],
                "prev_dt": np.array([age], np.float32), "prev_valid": np.ones(1, bool)}

    def push(self, t0: int, global_from_ego: np.ndarray, bev: np.ndarray) -> None:
        """Keep the state of the frame at ``t0`` (``bev``: (C, H, W), the network's ``bev_state`` for batch item 0);
        states older than ``max_gap_s`` are dropped (they can never be chosen)."""
        bev = np.asarray(bev, np.float32)
        assert bev.shape == self.state_shape, f"bev_state {bev.shape}, expected {self.state_shape}"
        self.kept.append(_Kept(int(t0), np.asarray(global_from_ego, np.float64).copy(), bev.copy()))
        while self.kept and (t0 - self.kept[0].t0) / 1e6 > self.policy.max_gap_s:
            self.kept.popleft()

    def counts(self) -> dict[str, Any]:
        """{"warm": frames with a previous state, "resets": {reason: count}} (report.json, perception-test)."""
        return {"warm": self.warm, "resets": dict(sorted(self.resets.items()))}


def merge_counts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """``StreamState.counts()`` of several streams (or processes) added up."""
    warm, resets = 0, {}
    for c in parts:
        warm += c["warm"]
        for k, v in c["resets"].items():
            resets[k] = resets.get(k, 0) + v
    return {"warm": warm, "resets": dict(sorted(resets.items()))}
