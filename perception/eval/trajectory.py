"""End-to-end forecasting metrics on detections (UniAD / ViP3D protocol).

Per sample and class, detections above a score threshold are matched to GT agents greedily by score at
``match_dist`` (2 m) centre distance. For matched pairs with a valid future, over the k most probable modes:
minADE_k (mean L2 over the valid steps, best mode), minFDE_k (L2 at the last valid step, best mode), miss rate
MR_k (the best mode's maximum pointwise error exceeds ``miss_dist``, 2 m). EPA (ViP3D):
(hits - alpha * false positives) / GT agents with a future, a hit being a matched GT agent whose best-of-k final error is
within ``miss_dist``, a false positive a detection matched to no GT agent; alpha = 0.5.
A constant-velocity extrapolation of each detection's velocity is scored the same way (the baseline).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

GROUPS = {"car": ("car",), "pedestrian": ("pedestrian",), "all": None}


@dataclass
class SampleForecast:
    """One sample. Predictions: centres (P, 2), names (P,), scores (P,), trajectories (P, M, T, 2) absolute,
    mode_probs (P, M), velocities (P, 2). GT: centres (G, 2), names (G,), future (G, T, 2) absolute,
    future_valid (G, T). All in one frame (ego@t0 or global) and metres."""

    pred_xy: np.ndarray
    pred_names: np.ndarray
    pred_scores: np.ndarray
    pred_traj: np.ndarray
    pred_mode_probs: np.ndarray
    pred_vel: np.ndarray
    gt_xy: np.ndarray
    gt_names: np.ndarray
    gt_future: np.ndarray
    gt_future_valid: np.ndarray


def constant_velocity(xy: np.ndarray, vel: np.ndarray, steps: int = 12, dt: float = 0.5) -> np.ndarray:
    """(P, 2), (P, 2) -> (P, 1, T, 2) positions at t = dt, 2 dt, ... (one mode)."""
    t = dt * np.arange(1, steps + 1)
    return (xy[:, None, None, :] + vel[:, None, None, :] * t[None, None, :, None]).astype(np.float64)


def match(pred_xy: np.ndarray, pred_scores: np.ndarray, gt_xy: np.ndarray, dist: float) -> list[tuple[int, int]]:
    """Greedy by descending score: each prediction takes the nearest unmatched GT within ``dist``."""
    pairs = []
    used = np.zeros(len(gt_xy), bool)
    for p in np.argsort(-pred_scores, kind="stable"):
        if not len(gt_xy):
            break
        d = np.linalg.norm(gt_xy - pred_xy[p], axis=1)
        d[used] = np.inf
        g = int(np.argmin(d))
        if d[g] <= dist:
            used[g] = True
            pairs.append((int(p), g))
    return pairs


@dataclass
class _Acc:
    ade: dict = field(default_factory=lambda: {1: [], 6: []})
    fde: dict = field(default_factory=lambda: {1: [], 6: []})
    miss: dict = field(default_factory=lambda: {1: [], 6: []})
    hits: int = 0
    fps: int = 0
    gts: int = 0


def forecasting_metrics(samples: list[SampleForecast], score_threshold: float = 0.3, match_dist: float = 2.0,
                        miss_dist: float = 2.0, alpha: float = 0.5, ks: tuple[int, ...] = (1, 6),
                        constant_velocity_baseline: bool = False) -> dict:
    """Metrics per group (car, pedestrian, all): minADE/minFDE/MR for each k, EPA, and counts."""
    acc = {g: _Acc(ade={k: [] for k in ks}, fde={k: [] for k in ks}, miss={k: [] for k in ks}) for g in GROUPS}
    for s in samples:
        keep = s.pred_scores >= score_threshold
        traj = s.pred_traj
        probs = s.pred_mode_probs
        if constant_velocity_baseline:
            traj = constant_velocity(s.pred_xy, s.pred_vel, s.gt_future.shape[1] if len(s.gt_future) else 12)
            probs = np.ones((len(s.pred_xy), 1))
        for group, classes in GROUPS.items():
            pm = keep & (np.isin(s.pred_names, classes) if classes else True)
            gm = np.isin(s.gt_names, classes) if classes else np.ones(len(s.gt_names), bool)
            a = acc[group]
            # EPA counts the agents that have a future to forecast (the last samples of a scene have none)
            a.gts += int((gm & s.gt_future_valid.any(axis=1)).sum()) if len(s.gt_names) else 0
            p_idx, g_idx = np.flatnonzero(pm), np.flatnonzero(gm)
            # match within each class (a car forecast never matches a pedestrian)
            pairs = []
            for cls in np.unique(np.concatenate([s.pred_names[p_idx], s.gt_names[g_idx]])):
                pi = p_idx[s.pred_names[p_idx] == cls]
                gi = g_idx[s.gt_names[g_idx] == cls]
                pairs += [(pi[p], gi[g]) for p, g in match(s.pred_xy[pi], s.pred_scores[pi], s.gt_xy[gi], match_dist)]
            a.fps += len(p_idx) - len(pairs)
            for p, g in pairs:
                valid = s.gt_future_valid[g]
                if not valid.any():
                    continue
                last = int(np.flatnonzero(valid)[-1])
                order = np.argsort(-probs[p], kind="stable")
                err = np.linalg.norm(traj[p][:, : valid.shape[0]] - s.gt_future[g][None], axis=-1)  # (M, T)
                for k in ks:
                    top = order[:k]
                    ade = (err[top][:, valid]).mean(axis=1)
                    a.ade[k].append(float(ade.min()))
                    a.fde[k].append(float(err[top, last].min()))
                    a.miss[k].append(float(err[top][:, valid].max(axis=1).min() > miss_dist))
                if err[order[:max(ks)], last].min() <= miss_dist:
                    a.hits += 1
    out = {}
    for group, a in acc.items():
        res = {"matched": len(a.ade[ks[0]]), "gt_agents": a.gts, "false_positives": a.fps,
               "EPA": (a.hits - alpha * a.fps) / a.gts if a.gts else float("nan")}
        for k in ks:
            n = len(a.ade[k])
            res[f"minADE_{k}"] = float(np.mean(a.ade[k])) if n else float("nan")
            res[f"minFDE_{k}"] = float(np.mean(a.fde[k])) if n else float("nan")
            res[f"MR_{k}"] = float(np.mean(a.miss[k])) if n else float("nan")
        out[group] = res
    return out
