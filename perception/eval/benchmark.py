"""The offline benchmark behind ``perception-test``: a predictor over a split, the devkit's detection metrics,
forecasting metrics against a constant-velocity baseline, latency per stage, and a Markdown report with pictures.

Robustness knobs: ``drop_sensors`` (named cameras / radars masked in every frame) and ``calib_noise_deg`` (a
random rotation of that angle applied to each sensor's calibration as the model sees it, seeded per sample and
sensor: the images and radar stay where they were, the model believes a slightly wrong extrinsic).

Sharding: under ``torchrun`` each rank predicts every world-th sample; rank 0 gathers and scores (one result).
A temporal model (``model.temporal``) is sharded by scene instead (every world-th scene, each in time order), so
that each scene's state is threaded through its frames by one process.

Cold start: the devkit's metrics are also computed on each scene's first evaluated frame (no history: a temporal
model's cold start) apart from the later frames (``summary["cold_start"]``, report.md), for every model, so that a
temporal model's first frames can be compared with a single-frame model's on the same samples.
"""
from __future__ import annotations

import json
import os
import time
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from perception.config import ConfigError
from perception.data.frame import Frame
from perception.eval.detection import gt_boxes_as_results, results_json, run_devkit, summary_line
from perception.eval.trajectory import SampleForecast, forecasting_metrics
from perception.streaming import merge_counts
from perception.visualize import draw_bev_predictions


@dataclass
class Prediction:
    """What a predictor returns for one Frame: nuScenes result boxes (global) and the forecast arrays (ego@t0)."""

    boxes: list[dict]
    forecast: SampleForecast
    timing: dict[str, float]
    ego_boxes: np.ndarray | None = None  # (K, 9) the same boxes in ego@t0 (the BEV snapshots draw them)
    depth: np.ndarray | None = None  # (N, Hf, Wf) predicted camera depth (m) where the predictor exposes it


def _rotation(axis_seed: int, degrees: float) -> np.ndarray:
    rng = np.random.default_rng(axis_seed)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    a = np.radians(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    r = np.eye(4)
    r[:3, :3] = np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k
    return r


def perturb(frame: Frame, radar_channels: list[str], drop: set[str], calib_noise_deg: float, seed: int) -> Frame:
    """Drop named sensors and/or add a calibration error of ``calib_noise_deg`` to every sensor."""
    images, valid, m = frame.images, frame.camera_valid.copy(), frame.img_from_ego.astype(np.float64)
    pts, r_valid = frame.radar_points.copy(), frame.radar_valid.copy()
    sensor = frame.radar_column("sensor")
    for i, ch in enumerate(frame.camera_channels):
        if ch in drop:
            valid[i] = False
        if calib_noise_deg > 0:
            # the camera's believed pose rotated about its own centre by the error
            centre = np.linalg.solve(m[i][:3, :3], -m[i][:3, 3])
            to_c, back = np.eye(4), np.eye(4)
            to_c[:3, 3], back[:3, 3] = -centre, centre
            m[i] = m[i] @ back @ _rotation(zlib.crc32(f"{seed}/{frame.sample_token}/{ch}".encode()),
                                            calib_noise_deg) @ to_c
    if not valid.all():
        images = images.copy()
        images[~valid] = 0
    names = list(frame.radar_fields)
    for k, ch in enumerate(radar_channels):
        sel = r_valid & (sensor == k)
        if ch in drop:
            r_valid &= ~sel
        elif calib_noise_deg > 0 and sel.any():
            rot = _rotation(zlib.crc32(f"{seed}/{frame.sample_token}/{ch}".encode()), calib_noise_deg)[:3, :3]
            ix = [names.index(c) for c in ("x", "y", "z")]
            iv = [names.index(c) for c in ("vx", "vy")]
            pts[np.ix_(sel, ix)] = (pts[np.ix_(sel, ix)].astype(np.float64) @ rot.T).astype(np.float32)
            v3 = np.c_[pts[np.ix_(sel, iv)], np.zeros(int(sel.sum()))] @ rot.T
            pts[np.ix_(sel, iv)] = v3[:, :2].astype(np.float32)
    pts[~r_valid] = 0.0
    return replace(frame, images=images, camera_valid=valid, img_from_ego=m.astype(np.float32), radar_points=pts,
                   radar_valid=r_valid)


def gt_forecast(frame: Frame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return frame.gt_boxes[:, :2].astype(np.float64), frame.gt_names, frame.gt_future.astype(np.float64), \
        frame.gt_future_valid


def model_predictor(pipeline: Any, no_history: bool = False) -> Callable[[Frame], Prediction]:
    """Predictions of a ``Pipeline``; with a PyTorch network that has cameras, also the camera depth
    (``perception.eval.depth.DepthProbe``: the exported graph has no depth output). ``no_history``: a temporal
    network's state is reset before every frame (each one a cold start), which measures what the history adds."""
    if no_history:
        if not pipeline.temporal:
            raise ValueError("no_history needs a temporal network (model.temporal.enabled); this one has no state")
        pipeline.no_history = True
        pipeline.reset_streams()  # streams made from here on reset before every frame (reason no_history)
    probe = None
    net = getattr(pipeline.runner, "net", None)
    if net is not None and getattr(net, "camera", None) is not None:
        from perception.eval.depth import DepthProbe
        from perception.train.camera_aux import depth_bins

        probe = DepthProbe(net, depth_bins(pipeline.cfg))

    def predict(frame: Frame) -> Prediction:
        det = pipeline.infer(frame)
        gxy, gn, gf, gv = gt_forecast(frame)
        fc = SampleForecast(det.boxes[:, :2].astype(np.float64), det.names, det.scores, det.trajectories.astype(np.float64),
                            det.mode_probs, det.boxes[:, 7:9].astype(np.float64), gxy, gn, gf, gv)
        return Prediction(det.to_nuscenes(), fc, det.timing, det.boxes, None if probe is None else probe.last[0])
    predict.depth_bins = None if probe is None else probe.bins  # type: ignore[attr-defined]
    predict.temporal = pipeline.temporal  # type: ignore[attr-defined]  # scenes in order, sharded by scene
    predict.temporal_counts = pipeline.temporal_counts  # type: ignore[attr-defined]
    return predict


def oracle_predictor(nusc: Any) -> Callable[[Frame], Prediction]:
    """GT through the same path: the boxes the devkit evaluates as detections (score 1) and the GT futures as a
    one-mode forecast. Its NDS is 1 by construction (a test)."""
    def predict(frame: Frame) -> Prediction:
        t = time.perf_counter()
        boxes = gt_boxes_as_results(nusc, [frame.sample_token])[frame.sample_token]
        gxy, gn, gf, gv = gt_forecast(frame)
        fc = SampleForecast(gxy, gn, np.ones(len(gn)), gf[:, None], np.ones((len(gn), 1)),
                            frame.gt_boxes[:, 7:9].astype(np.float64), gxy, gn, gf, gv)
        return Prediction(boxes, fc, {"network_s": time.perf_counter() - t, "postprocess_s": 0.0, "preprocess_s": 0.0},
                          frame.gt_boxes)
    return predict


def _shard() -> tuple[int, int, bool]:
    """(rank, world size, whether this call created the process group)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    import torch.distributed as dist

    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size(), owns


def run_benchmark(predict: Callable[[Frame], Prediction], frames: Any, out_dir: str | Path, *,
                  drop_sensors: tuple[str, ...] = (), calib_noise_deg: float = 0.0, seed: int = 0,
                  max_samples: int | None = None, snapshots: int = 3, progress: bool = True,
                  results_only: bool = False) -> dict | None:
    """Predict every sample (this rank's shard), gather, score on rank 0. Returns the summary on rank 0.

    ``results_only``: no evaluation (splits without annotations, e.g. v1.0-test): only ``results_nusc.json``,
    checked with the devkit's loader (``check_results_file``), and a summary {results, samples, boxes}."""
    rank, world, owns_group = _shard()
    out = Path(out_dir)
    n = len(frames) if max_samples is None else min(max_samples, len(frames))
    temporal = bool(getattr(predict, "temporal", False))
    mine = shard_indices([frames.samples[i].scene for i in range(n)], rank, world, by_scene=temporal)
    drop = set(drop_sensors)
    rows = []
    it = mine
    if progress and rank == 0:
        from tqdm import tqdm

        it = tqdm(mine, desc="test", unit="frame")
    snaps = []
    depth_meter = None
    if getattr(predict, "depth_bins", None) is not None and not results_only:
        from perception.eval.depth import DepthMeter

        depth_meter = DepthMeter(predict.depth_bins)  # type: ignore[attr-defined]
    for i in it:
        t = time.perf_counter()
        frame = frames[i]
        sample = frames.nusc.get("sample", frame.sample_token)
        radar_channels = sorted(ch for ch in sample["data"] if frames.nusc.get("sensor", frames.nusc.get(
            "calibrated_sensor", frames.nusc.get("sample_data", sample["data"][ch])["calibrated_sensor_token"])[
            "sensor_token"])["modality"] == "radar")
        if drop:
            unknown = drop - set(frame.camera_channels) - set(radar_channels)
            if unknown:  # a typo would otherwise score the unperturbed model
                raise ConfigError(f"--drop-sensors names {sorted(unknown)}, which sample {frame.sample_token} does not "
                                 f"have; its sensors are {list(frame.camera_channels) + radar_channels}")
        if drop or calib_noise_deg > 0:
            frame = perturb(frame, radar_channels, drop, calib_noise_deg, seed)
        t_data = time.perf_counter() - t
        pred = predict(frame)
        depth_sums = None
        if depth_meter is not None and pred.depth is not None and len(frame.lidar_points):
            depth_sums = depth_meter.frame_sums(pred.depth, frame)
        rows.append({"index": i, "token": frame.sample_token, "boxes": pred.boxes, "forecast": pred.forecast,
                     "depth": depth_sums,
                     # data: loading and preprocessing (shared with training, incl. pillarisation); network: the
                     # graph including its in-graph decoding (NMS, top-k); decode: post-processing to Detections
                     "latency": {"data_s": t_data + pred.timing.get("preprocess_s", 0.0),
                                 "network_s": pred.timing.get("network_s", 0.0),
                                 "decode_s": pred.timing.get("postprocess_s", 0.0)}})
        if len(snaps) < snapshots and i % max(n // max(snapshots, 1), 1) == 0 and rank == 0:
            snaps.append((frame, pred))
    if world > 1:
        import torch.distributed as dist

        gathered: list[Any] = [None] * world
        counts = predict.temporal_counts() if temporal else None  # type: ignore[attr-defined]
        dist.all_gather_object(gathered, (rows, counts))
        rows = sorted([r for part, _ in gathered for r in part], key=lambda r: r["index"])
        state_counts = merge_counts([c for _, c in gathered if c is not None]) if temporal else None
        if owns_group:
            # exiting with a live gloo group can abort in its destructor ("terminate called without an active
            # exception", pytorch/pytorch#190489): rank 1 of a 2-process run did, under load, failing the job
            dist.destroy_process_group()
        if rank != 0:
            return None
    else:
        state_counts = predict.temporal_counts() if temporal else None  # type: ignore[attr-defined]
    out.mkdir(parents=True, exist_ok=True)
    tokens = [frames.samples[i].token for i in range(n)]
    boxes = {r["token"]: r["boxes"] for r in rows}
    if results_only:
        return write_submission(boxes, tokens, out)
    summary = run_devkit(frames.nusc, results_json(boxes, tokens), frames.split, out,
                         sample_tokens=tokens if n < len(frames) else None, render_curves=True,
                         progress=progress)
    cold = cold_start_metrics(frames, tokens, boxes, out / "cold_start")
    forecasts = [r["forecast"] for r in rows]
    traj = {"schema": "trajectory-metrics/1", "model": forecasting_metrics(forecasts),
            "constant_velocity": forecasting_metrics(forecasts, constant_velocity_baseline=True),
            "protocol": "greedy matching by score at 2 m per class, score >= 0.3, miss > 2 m, EPA alpha 0.5"}
    (out / "trajectory_metrics.json").write_text(json.dumps(traj, indent=1))
    lat = {}
    for key in ("data_s", "network_s", "decode_s"):
        v = np.array([r["latency"][key] for r in rows])
        lat[key] = {"median_ms": float(np.median(v) * 1e3), "p90_ms": float(np.percentile(v, 90) * 1e3)}
    (out / "latency.json").write_text(json.dumps({"schema": "latency/1", "frames": len(rows), **lat}, indent=1))
    depth = None
    if depth_meter is not None:
        for r in rows:
            if r["depth"] is not None:
                depth_meter.add(r["depth"])
        depth = depth_meter.summary() if depth_meter.frames else None
    if depth is not None:
        (out / "depth_metrics.json").write_text(json.dumps({"schema": "depth-metrics/1", **depth}, indent=1))
    summary["cold_start"] = {**cold, "temporal_state": state_counts}
    _report(out, summary, traj, lat, snaps, dict(drop_sensors=sorted(drop), calib_noise_deg=calib_noise_deg,
                                                 samples=n, split=frames.split), depth)
    summary["trajectory"] = traj
    summary["latency"] = lat
    summary["depth"] = depth
    return summary


def shard_indices(scenes: list[str], rank: int, world: int, by_scene: bool) -> list[int]:
    """The sample indices rank ``rank`` of ``world`` predicts (``scenes[i]``: sample i's scene, samples in scene and
    time order): every world-th sample, or with ``by_scene`` every world-th scene whole, in time order."""
    if not by_scene:
        return list(range(rank, len(scenes), world))
    order = list(dict.fromkeys(scenes))  # scenes in split order
    mine = {s for k, s in enumerate(order) if k % world == rank}
    return [i for i, s in enumerate(scenes) if s in mine]


def first_frames(scenes: list[str]) -> list[bool]:
    """Whether each sample (scene and time order) is its scene's first: a temporal model's cold start."""
    return [i == 0 or scenes[i] != scenes[i - 1] for i in range(len(scenes))]


def cold_start_metrics(frames: Any, tokens: list[str], boxes: dict[str, list[dict]], out: Path) -> dict:
    """The devkit's NDS, mAP and TP errors on each scene's first frame (``first_frames``) and on the later frames,
    apart (written under ``out/first_frames`` and ``out/later_frames``)."""
    first = first_frames([frames.samples[i].scene for i in range(len(tokens))])
    result: dict[str, Any] = {}
    for name, keep in (("first_frames", True), ("later_frames", False)):
        subset = [t for t, f in zip(tokens, first) if f == keep]
        if not subset:
            result[name] = None
            continue
        m = run_devkit(frames.nusc, results_json(boxes, subset), frames.split, out / name, sample_tokens=subset,
                       progress=False)
        result[name] = {"samples": len(subset), "nd_score": m["nd_score"], "mean_ap": m["mean_ap"],
                        "tp_errors": m["tp_errors"]}
    return result


def write_submission(boxes: dict[str, list[dict]], tokens: list[str], out: Path) -> dict:
    """``out/results_nusc.json`` in the submission format (meta block, every sample of ``tokens``), checked with the
    devkit's loader before it is renamed into place."""
    from perception.eval.detection import check_results_file

    path = out / "results_nusc.json"
    tmp = out / ".results_nusc.json.tmp"
    tmp.write_text(json.dumps(results_json(boxes, tokens)))
    count = check_results_file(tmp, tokens)
    os.replace(tmp, path)
    return {"results": str(path), "samples": len(tokens), "boxes": count}


def one_line(summary: dict) -> str:
    car = summary["trajectory"]["model"]["car"]
    return f"{summary_line(summary)} minADE6(car) {car['minADE_6']:.3f}"


def _report(out: Path, summary: dict, traj: dict, lat: dict, snaps: list, setup: dict,
            depth: dict | None = None) -> None:
    """report.md with TP-error bars, the devkit's PR curves, the trajectory table and BEV snapshots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tp = summary["tp_errors"]
    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    ax.bar(list(tp), list(tp.values()), color="#3a86ff")
    ax.set_ylabel("error (m, rad, 1-IoU, m/s)")
    ax.set_title("TP errors (lower is better)")
    fig.tight_layout()
    fig.savefig(out / "tp_errors.png")
    plt.close(fig)
    details = json.loads((out / "metrics_details.json").read_text())
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    for key, d in sorted(details.items()):
        if key.endswith(":2.0"):
            ax.plot(d["recall"], d["precision"], label=key.split(":")[0], lw=1.2)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("PR curves at 2 m (nuscenes-devkit matching)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "pr_curves.png")
    plt.close(fig)
    pics = []
    for k, (frame, pred) in enumerate(snaps):
        path = out / f"bev_{k}.png"
        fc = pred.forecast
        boxes = pred.ego_boxes if pred.ego_boxes is not None else np.c_[fc.pred_xy, np.zeros((len(fc.pred_xy), 7))]
        draw_bev_predictions(frame, boxes, fc.pred_names, fc.pred_scores, fc.pred_traj, fc.pred_mode_probs, path)
        pics.append(path.name)
    lines = ["# perception-test report", "", f"Split `{setup['split']}`, {setup['samples']} samples; dropped sensors: "
             f"{setup['drop_sensors'] or 'none'}; calibration noise {setup['calib_noise_deg']} deg.", "",
             f"**{summary_line(summary)}**", "", "| class | AP |", "|---|---|"]
    lines += [f"| {c} | {v:.3f} |" for c, v in sorted(summary["mean_dist_aps"].items())]
    lines += ["", "![PR curves](pr_curves.png)", "", "![TP errors](tp_errors.png)", "", "Devkit plots: " + ", ".join(
        f"[{p.name}](plots/{p.name})" for p in sorted((out / "plots").glob("*.pdf")) + sorted((out / "plots").glob("*.png")))
        if (out / "plots").exists() else "",
        "", "## Forecasting (matched detections)", "",
        "| group | method | minADE1 | minFDE1 | MR1 | minADE6 | minFDE6 | MR6 | EPA | matched |", "|---|---|---|---|---|---|---|---|---|---|"]
    for group in ("car", "pedestrian", "all"):
        for method in ("model", "constant_velocity"):
            m = traj[method][group]
            lines.append(f"| {group} | {method} | {m['minADE_1']:.3f} | {m['minFDE_1']:.3f} | {m['MR_1']:.3f} | "
                         f"{m['minADE_6']:.3f} | {m['minFDE_6']:.3f} | {m['MR_6']:.3f} | {m['EPA']:.3f} | {m['matched']} |")
    cold = summary.get("cold_start") or {}
    lines += ["", "## Cold start: each scene's first frame apart from the later frames", "",
              "A temporal model has no history on a scene's first frame; a single-frame model is scored the same way "
              "for comparison. Compare models on the same subset only: the devkit scores a class absent from a "
              "small subset as AP 0 (even the GT oracle scores below 1 on a one-scene split's first frame).", "", "| frames | samples | NDS | mAP | mATE | mAVE |", "|---|---|---|---|---|---|"]
    for key in ("first_frames", "later_frames"):
        c = cold.get(key)
        if c:
            lines.append(f"| {key.replace('_', ' ')} | {c['samples']} | {c['nd_score']:.3f} | {c['mean_ap']:.3f} | "
                         f"{c['tp_errors']['trans_err']:.3f} | {c['tp_errors']['vel_err']:.3f} |")
    if cold.get("temporal_state"):
        st = cold["temporal_state"]
        lines += ["", f"Temporal state: {st['warm']} frames with a previous state; cold starts by reason: "
                  f"{st['resets'] or 'none'}."]
    lines += ["", "## Camera depth against lidar", ""]
    if depth is None:
        lines += ["Not measured: the split has no lidar, or the model ran outside PyTorch (the exported graph has "
                  "no depth output)."]
    else:
        lines += [f"{depth['frames']} frames; {depth['protocol']} (`perception/eval/depth.py`).", "",
                  "| cells | AbsRel | delta < 1.25 | scored cells |", "|---|---|---|---|"]
        for g in ("all", "in_boxes"):
            d = depth[g]
            rel, d1 = (("n/a" if v is None else f"{v:.3f}") for v in (d["abs_rel"], d["delta1"]))
            lines.append(f"| {g.replace('_', ' ')} | {rel} | {d1} | {d['cells']} |")
        for ch, d in depth.get("per_camera", {}).items():
            rel, d1 = (("n/a" if v is None else f"{v:.3f}") for v in (d["abs_rel"], d["delta1"]))
            lines.append(f"| {ch} | {rel} | {d1} | {d['cells']} |")
    lines += ["", "## Latency (ms)", "", "| stage | median | p90 |", "|---|---|---|"]
    lines += [f"| {k} | {v['median_ms']:.1f} | {v['p90_ms']:.1f} |" for k, v in lat.items()]
    lines += ["", "## BEV snapshots (predictions score >= 0.3 vs GT)", ""] + [f"![{p}]({p})" for p in pics]
    (out / "report.md").write_text("\n".join(lines) + "\n")
