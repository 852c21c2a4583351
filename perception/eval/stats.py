"""Sensor statistics of any nuScenes-format root (``perception-stats``): how much radar and lidar see.

The figures that decide whether a radar is realistic, all measured the nuScenes devkit's way:

- radar returns per key frame: every radar's key-frame sweep of a sample, summed, after the devkit's default
  filters (``RadarPointCloud``'s class defaults: ``dyn_prop`` 0-6, ``invalid_state`` 0, ``ambig_state`` 3);
- the share of annotations within their class's evaluation range (``detection_cvpr_2019``'s ``class_range``,
  distance in x-y from the ego pose of the sample's LIDAR_TOP key frame, as ``DetectionEval`` measures it) with
  ``num_radar_pts == 0``: overall, per class, per distance band; the same for ``num_lidar_pts`` and for both;
- ``num_radar_pts`` recounted from the point files: returns inside each box (3-D, edges included), all radars,
  key-frame sweep, no filtering (the nuScenes schema's definition), against the table's value;
- the share of returns inside any annotated box, the RCS of in-box returns per class, and the error of the
  compensated radial velocity of in-box returns against the annotation's velocity along the line of sight;
- the distributions of the sensor's state fields (``dyn_prop``, ``ambig_state``, ``invalid_state``, ``pdh0``,
  ``x_rms``, ``y_rms``, ``vx_rms``, ``vy_rms``) over all key-frame returns.

Tables load through ``perception.data.nuscenes.load_tables`` (nuscenes-devkit's ``NuScenes``, with a broken table
a DatasetError naming the file and the field); the devkit supplies the conventions (class ranges, category names,
filters, splits, annotation velocities).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from calibration.transforms import make_transform, quaternions_to_matrices
from perception.data.io import RadarFilter, SensorFileError, read_radar_pcd
from perception.data.nuscenes import DatasetError, load_tables, split_scene_names
from perception.outputs import confined

SCHEMA = "perception-stats/1"
DISTANCE_BANDS = ((0.0, 20.0), (20.0, 30.0), (30.0, 40.0), (40.0, 50.0))
MOVING_MPS = 0.5  # a box faster than this over ground is moving; a return with |v_r| above it shows motion
STATE_FIELDS = ("dyn_prop", "ambig_state", "invalid_state", "pdh0", "x_rms", "y_rms", "vx_rms", "vy_rms")


def devkit_conventions() -> tuple[dict[str, float], RadarFilter, Callable[[str], str | None]]:
    """(class ranges of detection_cvpr_2019, the devkit's default radar filter, category -> detection name),
    taken from nuscenes-devkit itself so that they follow it."""
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.detection.utils import category_to_detection_name
    from nuscenes.utils.data_classes import RadarPointCloud

    ranges = dict(config_factory("detection_cvpr_2019").class_range)
    filt = RadarFilter(tuple(int(v) for v in RadarPointCloud.dynprop_states),
                       tuple(int(v) for v in RadarPointCloud.invalid_states),
                       tuple(int(v) for v in RadarPointCloud.ambig_states))
    return ranges, filt, category_to_detection_name


# ---------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------


def pose_matrix(row: dict) -> np.ndarray:
    """(4, 4) a_from_b of an ego_pose or calibrated_sensor row (quaternion [w, x, y, z])."""
    return make_transform(np.asarray(row["rotation"], float), np.asarray(row["translation"], float))


def points_in_box_counts(points: np.ndarray, centres: np.ndarray, sizes_wlh: np.ndarray,
                         rotations: np.ndarray) -> np.ndarray:
    """points: (N, 3) global metres; centres (A, 3); sizes_wlh (A, 3) nuScenes [w, l, h]; rotations (A, 3, 3)
    global_from_box. Returns (A,) int64: points inside each box, faces included (nuscenes-devkit
    ``points_in_box`` with ``wlh_factor=1``: box x along l, y along w, z along h)."""
    return inside_boxes(points, centres, sizes_wlh, rotations).sum(1).astype(np.int64)


def inside_boxes(points: np.ndarray, centres: np.ndarray, sizes_wlh: np.ndarray, rotations: np.ndarray) -> np.ndarray:
    """(A, N) bool: point n inside box a (arguments as ``points_in_box_counts``)."""
    assert points.ndim == 2 and points.shape[1] == 3, points.shape
    if len(centres) == 0 or len(points) == 0:
        return np.zeros((len(centres), len(points)), bool)
    rel = points[None, :, :] - centres[:, None, :]  # (A, N, 3)
    local = np.einsum("aji,anj->ani", rotations, rel)  # (A, N, 3) = R^T rel, box frame
    half = np.stack([sizes_wlh[:, 1], sizes_wlh[:, 0], sizes_wlh[:, 2]], 1)[:, None, :] / 2  # (A, 1, 3) l, w, h
    return np.all(np.abs(local) <= half, axis=2)


# ---------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------


@dataclass
class _Acc:
    """Per-annotation and per-return columns collected over samples."""

    returns_filtered: list[int]
    returns_raw: list[int]
    ann_class: list[str]
    ann_dist: list[float]
    ann_radar: list[int]
    ann_lidar: list[int]
    ann_recount: list[int]
    ann_speed: list[float]  # |annotation velocity| over ground, m/s (NaN where the devkit has none)
    ann_doppler: list[float]  # max |compensated radial velocity| of the filtered returns inside the box (0: none)
    ret_in_box: list[np.ndarray]
    ret_class: list[np.ndarray]  # class index of the box a return lies in (-1 none)
    ret_rcs: list[np.ndarray]
    ret_vr_err: list[np.ndarray]  # measured - annotated radial velocity, in-box returns with a known velocity
    ret_dist: list[np.ndarray]
    ret_fields: dict[str, list[np.ndarray]]


def measure(dataroot: str | Path, version: str, split: str | None = None, progress: Callable[[int], Any] | None = None,
            radar_filter: RadarFilter | None = None) -> dict:
    """All figures of a root as a JSON-ready dict (``"schema": "perception-stats/1"``).
    ``progress(total)`` may return a tqdm-like object (update/close)."""
    ranges, default_filter, to_detection = devkit_conventions()
    radar_filter = radar_filter or default_filter
    root = Path(dataroot)
    if not (root / version).is_dir():
        raise DatasetError(f"{root / version}: no such folder; --dataroot is the root holding '{version}/' with the "
                           "tables, --version the name of that folder (v1.0-mini, v1.0-trainval, v1.0-synth, ...)")
    nusc = load_tables(root, version)
    scenes = set(split_scene_names(root, version, split)) if split else None
    samples = [s for s in nusc.sample if scenes is None or nusc.get("scene", s["scene_token"])["name"] in scenes]
    if not samples:
        raise DatasetError(f"{root / version / 'sample.json'}: no sample in "
                           + (f"split '{split}' (its scenes: {sorted(scenes)[:5]})" if split else "the table"))
    classes = list(ranges)
    acc = _Acc([], [], [], [], [], [], [], [], [], [], [], [], [], [], {f: [] for f in STATE_FIELDS})
    bar = progress(len(samples)) if progress else None
    n_radars = set()
    for s in samples:
        radar_sds, lidar_pose = [], None
        for channel, sd_token in s["data"].items():
            sd = nusc.get("sample_data", sd_token)
            cal = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
            modality = nusc.get("sensor", cal["sensor_token"])["modality"]
            if modality == "radar":
                radar_sds.append((sd, cal, channel))
            elif channel == "LIDAR_TOP":
                lidar_pose = nusc.get("ego_pose", sd["ego_pose_token"])
        if lidar_pose is None:
            raise DatasetError(f"{root / version / 'sample_data.json'}: sample {s['token']} has no LIDAR_TOP key "
                               "frame; the devkit measures box distances from its ego pose")
        anns = [nusc.get("sample_annotation", t) for t in s["anns"]]
        centres = np.array([a["translation"] for a in anns], float).reshape(-1, 3)
        sizes = np.array([a["size"] for a in anns], float).reshape(-1, 3)
        rots = quaternions_to_matrices(np.array([a["rotation"] for a in anns], float).reshape(-1, 4))
        cls = [to_detection(a["category_name"]) for a in anns]
        cls_idx = np.array([classes.index(c) if c in classes else -1 for c in cls], np.int64)
        vel = np.array([nusc.box_velocity(a["token"]) for a in anns], float).reshape(-1, 3)
        recount = np.zeros(len(anns), np.int64)
        doppler = np.zeros(len(anns), np.float64)
        n_filtered = n_raw = 0
        for sd, cal, channel in radar_sds:
            n_radars.add(channel)
            path = confined(root, sd["filename"])
            cloud = read_radar_pcd(path)
            missing = [f for f in ("x", "y", "z", "rcs", "vx_comp", "vy_comp") if f not in cloud.fields]
            if missing:
                raise SensorFileError(path, f"radar {channel} file lacks field(s) {missing}",
                                      "nuScenes radar files have 18 fields")
            keep = radar_filter.mask(cloud)
            n_filtered += int(keep.sum())
            n_raw += len(cloud)
            full_xyz = cloud.xyz
            cloud = cloud.select(np.all(np.isfinite(cloud.xyz), axis=1))
            g_from_r = pose_matrix(nusc.get("ego_pose", sd["ego_pose_token"])) @ pose_matrix(cal)
            pts = cloud.xyz.astype(np.float64) @ g_from_r[:3, :3].T + g_from_r[:3, 3]  # (N, 3) global
            inside = inside_boxes(pts, centres, sizes, rots)  # (A, N)
            recount += inside.sum(1)
            # per return: the box it lies in (the first one; boxes rarely overlap)
            any_in = inside.any(0)
            owner = np.where(any_in, inside.argmax(0), -1)
            los = pts[:, :2] - g_from_r[:2, 3]
            dist_r = np.linalg.norm(los, axis=1)
            los = los / np.maximum(dist_r, 1e-6)[:, None]
            v_comp = np.stack([cloud.column("vx_comp"), cloud.column("vy_comp"), np.zeros(len(cloud))], 1) @ g_from_r[:3, :3].T
            vr_meas = np.sum(v_comp[:, :2] * los, axis=1)
            if len(anns) and len(cloud):  # what the network sees: filtered returns' Doppler per box
                seen = inside & keep[np.all(np.isfinite(full_xyz), axis=1)][None, :]
                doppler = np.maximum(doppler, np.where(seen, np.abs(vr_meas)[None, :], 0.0).max(1))
            in_idx = np.flatnonzero(any_in)
            v_true = vel[owner[in_idx], :2] if len(in_idx) else np.zeros((0, 2))
            vr_true = np.sum(v_true * los[in_idx], axis=1)
            ok = np.isfinite(vr_true)
            acc.ret_vr_err.append((vr_meas[in_idx] - vr_true)[ok])
            acc.ret_in_box.append(any_in)
            acc.ret_class.append(np.where(any_in, cls_idx[np.maximum(owner, 0)] if len(anns) else -1, -1))
            acc.ret_rcs.append(cloud.column("rcs").astype(np.float64))
            acc.ret_dist.append(dist_r)
            for f in STATE_FIELDS:
                if f in cloud.fields:
                    acc.ret_fields[f].append(cloud.column(f).astype(np.int64))
        acc.returns_filtered.append(n_filtered)
        acc.returns_raw.append(n_raw)
        ego_xy = np.asarray(lidar_pose["translation"], float)[:2]
        for a, c, n, v, d in zip(anns, cls, recount, vel, doppler):
            if c is None:
                continue
            acc.ann_speed.append(float(np.hypot(v[0], v[1])))
            acc.ann_doppler.append(float(d))
            acc.ann_class.append(c)
            acc.ann_dist.append(float(np.linalg.norm(np.asarray(a["translation"][:2], float) - ego_xy)))
            acc.ann_radar.append(int(a["num_radar_pts"]))
            acc.ann_lidar.append(int(a["num_lidar_pts"]))
            acc.ann_recount.append(int(n))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return _summarise(acc, ranges, classes, root, version, split, len(samples), sorted(n_radars), radar_filter)


def no_return_fractions(classes: Sequence[str], dist: np.ndarray, counts: np.ndarray,
                        ranges: dict[str, float]) -> dict:
    """Share of annotations within their class range with ``counts == 0``: overall, per class, per distance band.
    Each entry is {"fraction", "zero", "total"} (fraction None where total is 0)."""
    classes = np.asarray(classes, dtype=object)
    dist = np.asarray(dist, float)
    counts = np.asarray(counts)
    limit = np.array([ranges.get(c, -1.0) for c in classes], float)
    in_range = dist <= limit

    def frac(m: np.ndarray) -> dict:
        total = int(m.sum())
        zero = int((m & (counts == 0)).sum())
        return {"fraction": zero / total if total else None, "zero": zero, "total": total}

    return {"overall": frac(in_range),
            "per_class": {c: frac(in_range & (classes == c)) for c in ranges},
            "per_band": {f"{lo:g}-{hi:g}": frac(in_range & (dist >= lo) & (dist < hi)) for lo, hi in DISTANCE_BANDS}}


def doppler_fractions(classes: Sequence[str], dist: np.ndarray, speed: np.ndarray, doppler: np.ndarray,
                      ranges: dict[str, float], threshold: float = MOVING_MPS) -> dict:
    """What one key frame's radar says about motion, per annotation within its class range: ``moving`` = of the
    boxes faster than ``threshold`` (m/s over ground), the share with a filtered return inside whose compensated
    radial velocity exceeds it (the motion is in the frame's Doppler); ``static`` = of the slower ones, the share
    with such a return (false motion). Boxes without a devkit velocity are left out. Entries as
    ``no_return_fractions``' ({"fraction", "zero", "total"}, "zero" counting the boxes with such a return)."""
    classes = np.asarray(classes, dtype=object)
    dist, speed, doppler = (np.asarray(x, float) for x in (dist, speed, doppler))
    limit = np.array([ranges.get(c, -1.0) for c in classes], float)
    known = (dist <= limit) & np.isfinite(speed)
    hit = doppler > threshold

    def frac(m: np.ndarray) -> dict:
        total, n = int(m.sum()), int((m & hit).sum())
        return {"fraction": n / total if total else None, "zero": n, "total": total}

    out = {}
    for name, group in (("moving", known & (speed > threshold)), ("static", known & (speed <= threshold))):
        out[name] = {"overall": frac(group), "per_class": {c: frac(group & (classes == c)) for c in ranges}}
    return {**out, "threshold_mps": threshold}


def _describe(x: np.ndarray) -> dict:
    x = np.asarray(x, float)
    if x.size == 0:
        return {"n": 0}
    return {"n": int(x.size), "mean": float(x.mean()), "std": float(x.std()), "min": float(x.min()),
            "p10": float(np.percentile(x, 10)), "median": float(np.median(x)), "p90": float(np.percentile(x, 90)),
            "max": float(x.max())}


def _summarise(acc: _Acc, ranges: dict, classes: list[str], root: Path, version: str, split: str | None,
               n_samples: int, radars: list[str], radar_filter: RadarFilter) -> dict:
    cat = lambda parts, dt=float: np.concatenate(parts) if parts else np.zeros(0, dt)  # noqa: E731
    in_box, ret_cls, rcs = cat(acc.ret_in_box, bool), cat(acc.ret_class, np.int64), cat(acc.ret_rcs)
    radar, lidar = np.array(acc.ann_radar, np.int64), np.array(acc.ann_lidar, np.int64)
    recount = np.array(acc.ann_recount, np.int64)
    dist = np.array(acc.ann_dist, float)
    vr_err = cat(acc.ret_vr_err)
    return {
        "schema": SCHEMA, "dataroot": str(root), "version": version, "split": split, "samples": n_samples,
        "radars": radars,
        "radar_filter": {"dyn_prop": list(radar_filter.dyn_prop or []), "invalid_state": list(radar_filter.invalid_state or []),
                         "ambig_state": list(radar_filter.ambig_state or [])},
        "class_range": ranges,
        "returns_per_key_frame": {"filtered": _describe(acc.returns_filtered), "raw": _describe(acc.returns_raw),
                                  "values_filtered": [int(v) for v in acc.returns_filtered]},
        "no_radar": no_return_fractions(acc.ann_class, dist, radar, ranges),
        "no_lidar": no_return_fractions(acc.ann_class, dist, lidar, ranges),
        "no_radar_no_lidar": no_return_fractions(acc.ann_class, dist, radar + lidar, ranges),
        "doppler": doppler_fractions(acc.ann_class, dist, np.array(acc.ann_speed, float),
                                     np.array(acc.ann_doppler, float), ranges),
        "num_radar_pts_recount": {
            "annotations": int(len(recount)), "equal": int((recount == radar).sum()),
            "equal_fraction": float((recount == radar).mean()) if len(recount) else None,
            "table_total": int(radar.sum()), "recount_total": int(recount.sum()),
            "mean_abs_difference": float(np.abs(recount - radar).mean()) if len(recount) else None},
        "returns_in_boxes": {"returns": int(in_box.size), "in_any_box": int(in_box.sum()),
                             "fraction": float(in_box.mean()) if in_box.size else None},
        "rcs_in_box_per_class": {c: _describe(rcs[ret_cls == i]) for i, c in enumerate(classes)},
        "rcs_outside_boxes": _describe(rcs[~in_box]),
        "radial_velocity_error": {**_describe(vr_err), "mean_abs": float(np.abs(vr_err).mean()) if vr_err.size else None,
                                  "median_abs": float(np.median(np.abs(vr_err))) if vr_err.size else None,
                                  "note": "vx_comp/vy_comp along the line of sight minus the annotation velocity "
                                          "(prev/next centre difference) along it; in-box returns"},
        "fields": {f: {str(int(k)): int(v) for k, v in zip(*np.unique(cat(acc.ret_fields[f], np.int64), return_counts=True))}
                   for f in STATE_FIELDS},
        "_per_annotation": {"class": list(acc.ann_class), "distance": dist.tolist(), "num_radar_pts": radar.tolist(),
                            "num_lidar_pts": lidar.tolist()},
    }


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def _pct(entry: dict) -> str:
    return "n/a" if entry["fraction"] is None else f"{100 * entry['fraction']:.1f} % ({entry['zero']}/{entry['total']})"


def to_markdown(stats: dict) -> str:
    """The figures of ``measure`` as a Markdown page."""
    r = stats["returns_per_key_frame"]["filtered"]
    raw = stats["returns_per_key_frame"]["raw"]
    rc = stats["num_radar_pts_recount"]
    ib = stats["returns_in_boxes"]
    ve = stats["radial_velocity_error"]
    f = stats["radar_filter"]
    lines = [f"# Sensor statistics: `{stats['dataroot']}` ({stats['version']}, split {stats['split'] or 'all'})", "",
             f"{stats['samples']} samples, radars {', '.join(stats['radars']) or 'none'}. Distances in x-y from the "
             "ego pose of the LIDAR_TOP key frame; class ranges of `detection_cvpr_2019`.", "",
             "## Radar returns per key frame (all radars, key-frame sweep of each)", "",
             "| | mean | min | median | max |", "|---|---|---|---|---|"]
    for name, d in ((f"after the default filters (dyn_prop {f['dyn_prop']}, invalid_state {f['invalid_state']}, "
                     f"ambig_state {f['ambig_state']})", r), ("unfiltered", raw)):
        lines.append(f"| {name} | {d.get('mean', 0):.1f} | {d.get('min', 0):.0f} | {d.get('median', 0):.0f} | "
                     f"{d.get('max', 0):.0f} |" if d["n"] else f"| {name} | n/a | | | |")
    lines += ["", "## Annotations in class range without returns", "",
              "| | no radar return | no lidar point | neither |", "|---|---|---|---|",
              f"| **all classes** | {_pct(stats['no_radar']['overall'])} | {_pct(stats['no_lidar']['overall'])} | "
              f"{_pct(stats['no_radar_no_lidar']['overall'])} |"]
    for c in stats["no_radar"]["per_class"]:
        lines.append(f"| {c} | {_pct(stats['no_radar']['per_class'][c])} | {_pct(stats['no_lidar']['per_class'][c])} | "
                     f"{_pct(stats['no_radar_no_lidar']['per_class'][c])} |")
    for b in stats["no_radar"]["per_band"]:
        lines.append(f"| {b} m | {_pct(stats['no_radar']['per_band'][b])} | {_pct(stats['no_lidar']['per_band'][b])} | "
                     f"{_pct(stats['no_radar_no_lidar']['per_band'][b])} |")
    dop = stats.get("doppler")
    if dop:
        lines += ["", "## Motion in one frame's Doppler", "",
                  f"Boxes in class range with a devkit velocity; \"shows motion\": a return inside the box that passes "
                  f"the filters and whose compensated radial velocity exceeds {dop['threshold_mps']:g} m/s. Moving: "
                  f"faster than {dop['threshold_mps']:g} m/s over ground (the rest: a crossing target's radial "
                  "component is small, or no return); static: the false-motion rate.", "",
                  "| | moving boxes showing motion | static boxes showing motion |", "|---|---|---|",
                  f"| **all classes** | {_pct(dop['moving']['overall'])} | {_pct(dop['static']['overall'])} |"]
        for c in dop["moving"]["per_class"]:
            lines.append(f"| {c} | {_pct(dop['moving']['per_class'][c])} | {_pct(dop['static']['per_class'][c])} |")
    lines += ["", "## `num_radar_pts` recounted from the radar files", "",
              "Returns inside each box (faces included), all radars, key-frame sweep, no filtering.", "",
              f"- equal to the table: {rc['equal']} of {rc['annotations']} annotations"
              + (f" ({100 * rc['equal_fraction']:.1f} %)" if rc["equal_fraction"] is not None else ""),
              f"- totals: table {rc['table_total']}, recount {rc['recount_total']}; mean |difference| "
              f"{rc['mean_abs_difference'] if rc['mean_abs_difference'] is None else round(rc['mean_abs_difference'], 3)}",
              "", "## Returns inside boxes, RCS, radial velocity", "",
              f"- returns inside any annotated box: {ib['in_any_box']} of {ib['returns']}"
              + (f" ({100 * ib['fraction']:.1f} %); the rest is scenery, clutter and ghosts" if ib["fraction"] is not None else ""),
              f"- compensated radial velocity minus the annotation's velocity along the line of sight (in-box "
              f"returns, {ve['n']}): " + (f"mean {ve['mean']:+.3f}, std {ve['std']:.3f}, median |e| "
                                          f"{ve['median_abs']:.3f} (p10 {ve['p10']:+.3f}, "
                                          f"p90 {ve['p90']:+.3f}), mean |e| {ve['mean_abs']:.3f} m/s"
                                          if ve["n"] else "n/a"),
              "", "| class | in-box returns | RCS median (dBsm) | p10 | p90 |", "|---|---|---|---|---|"]
    for c, d in list(stats["rcs_in_box_per_class"].items()) + [("outside any box", stats["rcs_outside_boxes"])]:
        lines.append(f"| {c} | {d['n']} | " + (f"{d['median']:.1f} | {d['p10']:.1f} | {d['p90']:.1f} |" if d["n"] else "| | |"))
    lines += ["", "## State fields (all key-frame returns, unfiltered)", "", "| field | value: count |", "|---|---|"]
    for name, hist in stats["fields"].items():
        lines.append(f"| {name} | " + (", ".join(f"{k}: {v}" for k, v in hist.items()) or "absent") + " |")
    return "\n".join(lines) + "\n"


def write_report(stats: dict, out: str | Path, plots: bool = True) -> list[Path]:
    """Write stats.json, stats.md and (``plots``) PNG figures into the folder ``out`` (the CLI passes a staging
    folder that ``perception.outputs.folder_output`` publishes whole); returns the written paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    public = {k: v for k, v in stats.items() if not k.startswith("_")}
    paths = [out / "stats.json", out / "stats.md"]
    paths[0].write_text(json.dumps(public, indent=1) + "\n")
    paths[1].write_text(to_markdown(stats))
    if plots:
        paths += _plots(stats, out)
    return paths


def _plots(stats: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(out / name)

    values = stats["returns_per_key_frame"]["values_filtered"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(values, bins=30, color="#3b75af")
    ax.axvline(196.8, color="k", ls="--", lw=1, label="nuScenes v1.0-mini mean 196.8")
    ax.set_xlabel("radar returns per key frame (5 radars, default filters)")
    ax.set_ylabel("key frames")
    ax.legend(fontsize=8)
    save(fig, "returns_per_key_frame.png")

    ann = stats["_per_annotation"]
    cls = np.array(ann["class"], dtype=object)
    dist = np.array(ann["distance"], float)
    nr = np.array(ann["num_radar_pts"], float)
    edges = np.arange(0, 55, 5.0)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for c in stats["class_range"]:
        m = cls == c
        if not m.any():
            continue
        b = np.digitize(dist[m], edges) - 1
        mids, mean, zero = [], [], []
        for i in range(len(edges) - 1):
            sel = b == i
            if sel.sum() >= 3 and edges[i] < stats["class_range"][c]:
                mids.append(edges[i] + 2.5)
                mean.append(nr[m][sel].mean())
                zero.append((nr[m][sel] == 0).mean())
        axes[0].plot(mids, mean, marker="o", ms=3, label=c)
        axes[1].plot(mids, zero, marker="o", ms=3, label=c)
    axes[0].set_ylabel("mean num_radar_pts per box")
    axes[1].set_ylabel("share of boxes without radar return")
    axes[1].set_ylim(0, 1.02)
    for ax in axes:
        ax.set_xlabel("distance from the ego (m)")
    axes[1].legend(fontsize=7, ncol=2)
    save(fig, "radar_pts_vs_distance.png")

    classes = list(stats["class_range"])
    fig, ax = plt.subplots(figsize=(9, 3.5))
    x = np.arange(len(classes))
    for k, (key, label) in enumerate((("no_radar", "no radar return"), ("no_lidar", "no lidar point"))):
        vals = [stats[key]["per_class"][c]["fraction"] or 0.0 for c in classes]
        ax.bar(x + (k - 0.5) * 0.4, vals, 0.4, label=label)
    ax.set_xticks(x, classes, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("share of boxes in class range")
    ax.axhline(0.612, color="k", ls="--", lw=1, label="nuScenes val, no radar: 61.2 %")
    ax.legend(fontsize=8)
    save(fig, "no_return_by_class.png")

    fig, axes = plt.subplots(2, 4, figsize=(12, 5))
    for ax, (name, hist) in zip(axes.ravel(), stats["fields"].items()):
        ax.bar([str(k) for k in hist], list(hist.values()), color="#6a9f58")
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    save(fig, "state_fields.png")
    return written
