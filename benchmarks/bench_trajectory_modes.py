"""How much room a world leaves beyond constant velocity, and whether the mode-ranking rule matters (issue 22).

    python -m benchmarks.bench_trajectory_modes --dataroot data/synth            # synth_train -> synth_val
    python -m benchmarks.bench_trajectory_modes --dataroot /data/nuscenes --version v1.0-trainval \\
        --train-split train --val-split val

Ground truth only, no network: every agent of the class (cars by default) with 6 s of future becomes its
future as a residual over the constant-velocity extrapolation of its annotated velocity (devkit
``box_velocity``), in its heading frame. Per speed bin (a stand-in for what a network sees), M modes are fit
on the training split by winner-takes-all (k-means on the mean L2 displacement, k-means++ seeds, best of 5), or
with mode 0 the median residual and the others winner-takes-all (``train.trajectory_loss.median_mode``); the
modes' probabilities by each ranking rule on the training split, and the validation split is scored: minADE1 of
the mode each rule ranks first, the constant-velocity ADE (the zero residual), and minADE of all M modes. Rules:
the winner target (frequency of being the closest mode, what the one-hot cross-entropy estimates), the soft
target ``softmax(-ADE / T)`` at several T (``train.soft_mode_target``), and the mode of smallest expected ADE
(the ideal for minADE1).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.report import publish, table
from perception.data.nuscenes import load_tables, split_scene_names
from perception.model.heads.trajectory_head import WAYPOINT_STEP_S

NAME = "trajectory_modes"
SPEED_BINS = (0.0, 1.0, 4.0, 8.0, 1e9)  # m/s
TEMPERATURES = (1.0, 2.0, 5.0, 20.0)


def residuals(nusc, scene_names: list[str], name: str, steps: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """(N, T, 2) future minus constant velocity, heading frame (x forward), and (N,) speeds, m/s, of every
    annotation of detection class ``name`` with ``steps`` future key frames."""
    from nuscenes.eval.detection.utils import category_to_detection_name

    wanted = set(scene_names)
    t = WAYPOINT_STEP_S * np.arange(1, steps + 1)[:, None]  # (T, 1)
    res, speed = [], []
    for scene in nusc.scene:
        if scene["name"] not in wanted:
            continue
        token = scene["first_sample_token"]
        while token:
            sample = nusc.get("sample", token)
            for ann_token in sample["anns"]:
                ann = nusc.get("sample_annotation", ann_token)
                if category_to_detection_name(ann["category_name"]) != name:
                    continue
                v = nusc.box_velocity(ann_token)[:2]
                future, nxt = [], ann["next"]
                while nxt and len(future) < steps:
                    nxt_ann = nusc.get("sample_annotation", nxt)
                    future.append(nxt_ann["translation"][:2])
                    nxt = nxt_ann["next"]
                if len(future) < steps or not np.isfinite(v).all():
                    continue
                w, x, y, z = ann["rotation"]
                yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
                r = np.asarray(future) - np.asarray(ann["translation"][:2]) - v * t  # (T, 2) global axes
                c, s = np.cos(yaw), np.sin(yaw)
                res.append(r @ np.array([[c, -s], [s, c]]))  # rotate by -yaw: heading frame
                speed.append(float(np.linalg.norm(v)))
            token = sample["next"]
    return np.asarray(res, np.float64).reshape(-1, steps, 2), np.asarray(speed)


def ade(modes: np.ndarray, r: np.ndarray) -> np.ndarray:
    """modes (M, T, 2), r (N, T, 2) -> (N, M) mean L2 displacement."""
    return np.linalg.norm(modes[None] - r[:, None], axis=-1).mean(-1)


def fit_modes(r: np.ndarray, m: int, seed: int = 0, restarts: int = 5, iters: int = 60) -> np.ndarray:
    """Winner-takes-all modes: k-means under the mean L2 displacement, k-means++ seeds, the best of ``restarts``."""
    rng = np.random.default_rng(seed)
    best, best_cost = None, np.inf
    for _ in range(restarts):
        modes = [r[rng.integers(len(r))]]
        while len(modes) < min(m, len(r)):
            d = ade(np.asarray(modes), r).min(1) ** 2
            modes.append(r[rng.choice(len(r), p=d / d.sum())] if d.sum() > 0 else r[rng.integers(len(r))])
        modes = np.asarray(modes)
        for _ in range(iters):
            win = ade(modes, r).argmin(1)
            modes = np.asarray([r[win == k].mean(0) if (win == k).any() else modes[k] for k in range(len(modes))])
        cost = ade(modes, r).min(1).mean()
        if cost < best_cost:
            best, best_cost = modes, cost
    return best


def fit_with_median(r: np.ndarray, m: int, iters: int = 60) -> np.ndarray:
    """``train.trajectory_loss.median_mode``: mode 0 the coordinate-wise median of ``r`` (the L1 optimum on every
    agent), modes 1..m-1 winner-takes-all among themselves, seeded by ``fit_modes``."""
    med = np.median(r, axis=0)[None]  # (1, T, 2)
    alt = fit_modes(r, m - 1)
    for _ in range(iters):
        win = ade(alt, r).argmin(1)
        alt = np.asarray([r[win == k].mean(0) if (win == k).any() else alt[k] for k in range(len(alt))])
    return np.concatenate([med, alt])


def evaluate(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], m: int,
             median_mode: bool) -> dict:
    """ADE on ``val`` of the mode each rule ranks first (rules fit on ``train``), constant velocity, minADE_m."""
    rules = ["winner"] + [f"soft T={t:g} m" for t in TEMPERATURES] + ["smallest expected ADE"]
    scores: dict[str, list[float]] = {k: [] for k in rules + ["constant velocity", f"minADE{m}"]}
    for lo, hi in zip(SPEED_BINS[:-1], SPEED_BINS[1:]):
        tr = train[0][(train[1] >= lo) & (train[1] < hi)]
        va = val[0][(val[1] >= lo) & (val[1] < hi)]
        if not len(va):
            continue
        cv = np.linalg.norm(va, axis=-1).mean(-1)  # (N,) the zero residual
        scores["constant velocity"] += list(cv)
        if len(tr) < m:  # too few to fit: constant velocity for every rule
            for k in rules + [f"minADE{m}"]:
                scores[k] += list(cv)
            continue
        modes = fit_with_median(tr, m) if median_mode else fit_modes(tr, m)
        a_tr, a_va = ade(modes, tr), ade(modes, va)
        first = {"winner": np.bincount(a_tr.argmin(1), minlength=len(modes)).argmax(),
                 "smallest expected ADE": a_tr.mean(0).argmin()}
        for t in TEMPERATURES:
            q = np.exp(-(a_tr - a_tr.min(1, keepdims=True)) / t)
            first[f"soft T={t:g} m"] = (q / q.sum(1, keepdims=True)).mean(0).argmax()
        for k in rules:
            scores[k] += list(a_va[:, first[k]])
        scores[f"minADE{m}"] += list(a_va.min(1))
    counts = {"val_agents": len(val[0]), "train_agents": len(train[0])}
    return {k: float(np.mean(v)) for k, v in scores.items()} | counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataroot", type=Path, default=Path("data/synth"))
    ap.add_argument("--version", default="v1.0-synth")
    ap.add_argument("--train-split", default="synth_train")
    ap.add_argument("--val-split", default="synth_val")
    ap.add_argument("--classes", default="car,pedestrian")
    ap.add_argument("--modes", type=int, default=6)
    args = ap.parse_args()
    nusc = load_tables(args.dataroot, args.version)
    names = {s: split_scene_names(args.dataroot, args.version, s) for s in (args.train_split, args.val_split)}
    results: dict[str, dict] = {}
    for cls in args.classes.split(","):
        train = residuals(nusc, names[args.train_split], cls)
        val = residuals(nusc, names[args.val_split], cls)
        results[cls] = {f"{'median + ' if med else ''}WTA": evaluate(train, val, args.modes, med)
                        for med in (False, True)}
    first = next(iter(next(iter(results.values())).values()))
    keys = [k for k in first if not k.endswith("_agents")]
    rows = [[cls, modes, r["train_agents"], r["val_agents"]] + [f"{r[k]:.3f}" for k in keys]
            for cls, per in results.items() for modes, r in per.items()]
    gen_path = args.dataroot / args.version / "generator.json"
    gen = json.loads(gen_path.read_text()) if gen_path.exists() else {}
    world = (f"world `{gen.get('generator')}` seed {gen.get('seed')}, {gen.get('scenes')} scenes x "
             f"{gen.get('samples_per_scene')} samples; " if gen else "")
    md = "\n".join([
        "## Trajectory modes on ground truth: room beyond constant velocity (issue 22)",
        "",
        f"Command: `python -m benchmarks.bench_trajectory_modes --dataroot {args.dataroot} --version {args.version}` "
        f"({world}{args.train_split} -> {args.val_split}; ground truth only, no network). Futures as residuals "
        "over the "
        f"constant-velocity extrapolation of the annotated velocity, heading frame; {args.modes} winner-takes-all "
        f"modes per speed bin {list(SPEED_BINS[1:-1])} m/s fit on the training split; ADE in metres on the "
        "validation split of the mode each rule ranks first, beside constant velocity (the zero residual) and "
        f"the best of all {args.modes} modes.",
        "",
        table(["class", "modes", "train agents", "val agents"] + keys, rows),
        "",
        "Modes `WTA`: all modes winner-takes-all (the default loss); `median + WTA`: mode 0 the median residual of "
        "the bin (`train.trajectory_loss.median_mode`), the others winner-takes-all among themselves. A rule ranks "
        "one mode first per speed bin from the training split: `winner` = most often the closest (the one-hot "
        "target), `soft T` = largest mean `softmax(-ADE / T)` (`train.trajectory_loss.soft_mode_target`), "
        "`smallest expected ADE` = the ideal for minADE1.",
    ])
    publish(NAME, {"dataroot": str(args.dataroot), "version": args.version, "generator": gen, "modes": args.modes,
                   "speed_bins": list(SPEED_BINS), "results": results}, md)


if __name__ == "__main__":
    main()
