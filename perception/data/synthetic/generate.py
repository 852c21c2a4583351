"""Write a synthetic drive dataset as a complete nuScenes-format root (and optionally ROS 2 bags).

Layout of ``out``::

    v1.0-synth/{attribute,calibrated_sensor,...,visibility}.json   all 13 tables, full schema
    v1.0-synth/splits.json                                          {"synth_train": [...], "synth_val": [...]}
    v1.0-synth/rig.yaml                                             the rig as written (stereo pairs live here)
    samples/<CHANNEL>/<log>__<CHANNEL>__<timestamp>.{jpg,pcd,pcd.bin}   key frames
    sweeps/<CHANNEL>/...                                            camera (12 Hz) and radar (13 Hz) sweeps
    maps/<token>.png                                                drivable-area mask (0.1 m/px, devkit convention)
    bags/<scene-name>/                                              with --bags: rosbag2 directory (MCAP)

Timing as in nuScenes: 2 Hz key frames (t0 = the LIDAR_TOP key frame time), each camera at 12 Hz triggered
as a spinning lidar passes it (so the cameras of one key frame are staggered by up to ~45 ms; the two cameras
of a stereo pair are triggered together), each radar at 13 Hz with its own phase. Every sample_data row has
its own ego pose.

Randomness: the world comes from ``(seed, scene)`` only (``world.generate_scene``); each sensor frame draws
from ``(seed, scene, channel, frame)``. The same seed through two rigs is the same world, and the same
arguments give byte-identical files.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from calibration.io import load_rig, save_rig
from calibration.rig import Camera, Lidar, Rig
from calibration.transforms import make_transform, matrix_to_quaternion, transform_points, yaw_to_quaternion
from perception.data.io import write_radar_pcd
from perception.data.synthetic import world as W
from perception.data.synthetic.bags import write_scene_bag
from perception.data.synthetic.lidar import points_in_boxes, simulate_lidar
from perception.data.synthetic.radar import simulate_radar
from perception.data.synthetic.render import CameraRenderer, make_textures
from perception.outputs import confined

VERSION = "v1.0-synth"
GENERATOR_VERSION = "synth/1"
KEYFRAME_US = 500_000
CAMERA_PERIOD_US = 83_333  # 12 Hz
RADAR_PERIOD_US = 76_923  # 13 Hz
RADAR_LEAD_US = 600_000  # radar sweeps start this long before the first key frame (multi-sweep history)
ANNOTATION_RANGE = 80.0  # metres from the ego: objects annotated per sample
T_BASE_US = 1_533_000_000_000_000
DEFAULT_LIDAR = Lidar("LIDAR_TOP", make_transform([0.7068, -0.0154, 0.0174, -0.7070], [0.9437, 0.0, 1.8402]))
MAP_RES = 0.1  # m/px, as nuscenes-devkit's MapMask assumes
MAX_SCENE_ATTEMPTS = 4

ATTRIBUTES = ["vehicle.moving", "vehicle.stopped", "vehicle.parked", "cycle.with_rider", "cycle.without_rider",
              "pedestrian.sitting_lying_down", "pedestrian.standing", "pedestrian.moving"]
# All nuScenes categories (so browsing tools know them), with their lidarseg indices.
CATEGORIES = [("noise", 0), ("animal", 1), ("human.pedestrian.adult", 2), ("human.pedestrian.child", 3),
              ("human.pedestrian.construction_worker", 4), ("human.pedestrian.personal_mobility", 5),
              ("human.pedestrian.police_officer", 6), ("human.pedestrian.stroller", 7),
              ("human.pedestrian.wheelchair", 8), ("movable_object.barrier", 9), ("movable_object.debris", 10),
              ("movable_object.pushable_pullable", 11), ("movable_object.trafficcone", 12),
              ("static_object.bicycle_rack", 13), ("vehicle.bicycle", 14), ("vehicle.bus.bendy", 15),
              ("vehicle.bus.rigid", 16), ("vehicle.car", 17), ("vehicle.construction", 18),
              ("vehicle.emergency.ambulance", 19), ("vehicle.emergency.police", 20), ("vehicle.motorcycle", 21),
              ("vehicle.trailer", 22), ("vehicle.truck", 23)]
VISIBILITY = [("1", "v0-40", "visibility of whole object is between 0 and 40%"),
              ("2", "v40-60", "visibility of whole object is between 40 and 60%"),
              ("3", "v60-80", "visibility of whole object is between 60 and 80%"),
              ("4", "v80-100", "visibility of whole object is between 80 and 100%")]
CLASS_RANGE = W.CLASS_RANGE


class SynthError(ValueError):
    """The generator cannot satisfy a request (names the option and what to change)."""


@dataclass(frozen=True)
class SynthOptions:
    out: Path
    scenes: int = 10
    samples_per_scene: int = 20
    seed: int = 0
    rig: Rig | None = None
    image_scale: float = 0.5
    keyframes_only: bool = False
    bags: bool = False
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        if self.scenes < 1:
            raise SynthError(f"--scenes must be >= 1, got {self.scenes}")
        if self.samples_per_scene < 2:
            raise SynthError(f"--samples-per-scene must be >= 2 (annotation chains need two), got {self.samples_per_scene}")
        if not 0.05 <= self.image_scale <= 1.0:
            raise SynthError(f"--image-scale must be in [0.05, 1], got {self.image_scale}")


def _token(*parts: Any) -> str:
    return hashlib.md5("/".join(str(p) for p in parts).encode()).hexdigest()


def _sensor_rng(seed: int, scene: int, channel: str, frame: int) -> np.random.Generator:
    return np.random.default_rng([seed, scene, 1, zlib.crc32(channel.encode()), frame])


def _camera_offsets_us(rig: Rig, rng: np.random.Generator) -> dict[str, int]:
    """Trigger offset of each camera relative to the key frame: the lidar sweeps clockwise from the front-left
    and fires each camera as it passes its azimuth (nuScenes: -43 ms front-left ... -0.5 ms back-left).
    A stereo pair is triggered together (the left camera's time)."""
    offsets = {}
    for name, cam in rig.cameras.items():
        axis = cam.ego_from_camera[:3, 2]
        az = np.degrees(np.arctan2(axis[1], axis[0]))
        offsets[name] = int(round((-43.0 + ((60.0 - az) % 360.0) / 360.0 * 50.0) * 1000)) + int(rng.integers(-300, 300))
    for pair in rig.stereo_pairs:
        offsets[pair.right] = offsets[pair.left]
    return offsets


def _attribute(actor: W.Actor, speed: float) -> str:
    if actor.cls in ("car", "truck", "bus", "trailer", "construction_vehicle"):
        return "vehicle.moving" if speed > 0.5 else ("vehicle.parked" if actor.parked else "vehicle.stopped")
    if actor.cls == "pedestrian":
        return "pedestrian.moving" if speed > 0.3 else "pedestrian.standing"
    if actor.cls in ("bicycle", "motorcycle"):
        return "cycle.with_rider" if actor.has_rider else "cycle.without_rider"
    return ""


def _visibility(hits: int, rays: int) -> str:
    frac = hits / rays if rays else 0.0
    return "1" if frac < 0.4 else "2" if frac < 0.6 else "3" if frac < 0.8 else "4"


class _Tables:
    """Accumulates nuScenes table rows."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict]] = {k: [] for k in (
            "attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map", "sample",
            "sample_annotation", "sample_data", "scene", "sensor", "visibility")}

    def add(self, table: str, **row: Any) -> str:
        self.rows[table].append(row)
        return row.get("token", "")

    def write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name, rows in self.rows.items():
            (folder / f"{name}.json").write_text(json.dumps(rows, indent=1))


def _pose_row(m: np.ndarray) -> dict:
    return {"translation": [float(x) for x in m[:3, 3]],
            "rotation": [float(x) for x in matrix_to_quaternion(m[:3, :3])]}


def scaled_rig(rig: Rig, scale: float) -> Rig:
    """The rig at the written image size, with a LIDAR_TOP added if it has none."""
    cams = {n: c.scaled(scale) for n, c in rig.cameras.items()}
    lidars = dict(rig.lidars) or {"LIDAR_TOP": DEFAULT_LIDAR}
    return Rig(rig.name, cams, rig.radars, rig.stereo_pairs, lidars)


def generate(opts: SynthOptions, progress: Callable[[str, int], Any] | None = None) -> dict:
    """Write the dataset. ``progress(desc, total)`` may return a tqdm-like object (update/close).
    Returns a summary dict (counts per class and split, timings)."""
    base_rig = opts.rig or load_rig(Path(__file__).resolve().parents[3] / "configs" / "rigs" / "nuscenes.yaml")
    rig = scaled_rig(base_rig, opts.image_scale)
    out = Path(opts.out)
    vdir = out / VERSION
    tables = _Tables()
    for name in ATTRIBUTES:
        tables.add("attribute", token=_token("attribute", name), name=name, description=name)
    for name, idx in CATEGORIES:
        tables.add("category", token=_token("category", name), name=name, description=name, index=idx)
    for tok, level, desc in VISIBILITY:
        tables.add("visibility", token=tok, level=level, description=desc)
    lidar_name = next(iter(rig.lidars))
    sensors = [(n, "camera") for n in rig.cameras] + [(n, "radar") for n in rig.radars] + [(lidar_name, "lidar")]
    cs_token = {}
    for name, modality in sensors:
        s_tok = tables.add("sensor", token=_token("sensor", name), channel=name, modality=modality)
        pose = rig.sensor_pose(name)
        k = rig.cameras[name].intrinsics.tolist() if modality == "camera" else []
        cs_token[name] = tables.add("calibrated_sensor", token=_token("cs", rig.name, name), sensor_token=s_tok,
                                    **_pose_row(pose), camera_intrinsic=k)
    tex, noise = make_textures(opts.seed)
    renderers = {n: CameraRenderer(c.intrinsics, c.width, c.height, tex, noise) for n, c in rig.cameras.items()}
    map_token = _token("map", opts.seed)
    log_tokens = []
    summary: dict = {"scenes": [], "annotations": defaultdict(int)}
    bar = progress("synth", opts.scenes * opts.samples_per_scene) if progress else None
    for si in range(opts.scenes):
        # A scene must show every class in evaluable form (in range, with lidar or radar points): a scene
        # may form the whole validation split. Rarely an object is occluded everywhere; then the scene slot
        # is drawn again (deterministically), its rows dropped and its files overwritten.
        lengths = {name: len(rows) for name, rows in tables.rows.items()}
        for attempt in range(MAX_SCENE_ATTEMPTS):
            scene_summary = _write_scene(opts, si, rig, tables, cs_token, renderers, map_token, out, lidar_name,
                                         bar if attempt == 0 else None, attempt)
            name = scene_summary["name"]
            counts = class_counts_after_filters(tables.rows, {"scene": [name]})["scene"]
            if all(counts.get(c, 0) > 0 for c in W.CLASSES) or attempt == MAX_SCENE_ATTEMPTS - 1:
                break
            for table, n in lengths.items():
                del tables.rows[table][n:]
        scene_summary["attempts"] = attempt + 1
        log_tokens.append(scene_summary.pop("log_token"))
        summary["scenes"].append(scene_summary)
    if bar is not None:
        bar.close()
    tables.add("map", token=map_token, log_tokens=log_tokens, category="semantic_prior", filename=f"maps/{map_token}.png")
    extent = max(max(p["translation"][0], p["translation"][1]) for p in tables.rows["ego_pose"]) + 150.0
    _write_map(out / "maps" / f"{map_token}.png", extent)
    tables.write(vdir)
    names = [s["name"] for s in summary["scenes"]]
    splits = split_scenes(names)
    (vdir / "splits.json").write_text(json.dumps(splits, indent=1))
    save_rig(rig, vdir / "rig.yaml")
    (vdir / "generator.json").write_text(json.dumps({
        "schema": "synth-generator/1", "generator": GENERATOR_VERSION, "seed": opts.seed, "scenes": opts.scenes,
        "samples_per_scene": opts.samples_per_scene, "image_scale": opts.image_scale,
        "keyframes_only": opts.keyframes_only, "rig": base_rig.name}, indent=1))
    counts = class_counts_after_filters(tables.rows, splits)
    summary["class_counts"] = counts
    if opts.scenes >= 5:
        missing = [(split, c) for split in splits for c in W.CLASSES if counts[split].get(c, 0) == 0]
        if missing:
            raise SynthError(f"classes without evaluable GT after the devkit's filters: {missing}; "
                             "use more --samples-per-scene or another --seed")
    if opts.bags:
        summary["bags"] = write_bags(out)
    return summary


def split_scenes(names: list[str]) -> dict[str, list[str]]:
    """About 80/20 by scene: every fifth scene is validation; with fewer than 5 scenes the last one is
    (and a single scene is in both splits)."""
    if len(names) >= 5:
        val = [n for i, n in enumerate(names) if i % 5 == 4]
    else:
        val = names[-1:]
    train = [n for n in names if n not in val] or list(names)
    return {"synth_train": train, "synth_val": val}


def class_counts_after_filters(rows: dict[str, list[dict]], splits: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    """GT boxes per class and split that survive detection_cvpr_2019's filters (class range from the ego at the
    LIDAR_TOP key frame, num_lidar_pts + num_radar_pts > 0)."""
    scene_of_sample = {}
    scene_name = {s["token"]: s["name"] for s in rows["scene"]}
    for s in rows["sample"]:
        scene_of_sample[s["token"]] = scene_name[s["scene_token"]]
    ego = {p["token"]: np.array(p["translation"]) for p in rows["ego_pose"]}
    sensor_channel = {s["token"]: s["channel"] for s in rows["sensor"]}
    cs_channel = {c["token"]: sensor_channel[c["sensor_token"]] for c in rows["calibrated_sensor"]}
    lidar_pose = {sd["sample_token"]: ego[sd["ego_pose_token"]] for sd in rows["sample_data"]
                  if sd["is_key_frame"] and cs_channel[sd["calibrated_sensor_token"]] == "LIDAR_TOP"}
    inst_cat = {i["token"]: i["category_token"] for i in rows["instance"]}
    cat_name = {c["token"]: c["name"] for c in rows["category"]}
    det_name = {W.CATEGORY[c]: c for c in W.CLASSES}
    out: dict[str, dict[str, int]] = {split: defaultdict(int) for split in splits}
    for a in rows["sample_annotation"]:
        cls = det_name.get(cat_name[inst_cat[a["instance_token"]]])
        if cls is None or a["num_lidar_pts"] + a["num_radar_pts"] == 0:
            continue
        d = np.linalg.norm(np.array(a["translation"][:2]) - lidar_pose[a["sample_token"]][:2])
        if d > CLASS_RANGE[cls]:
            continue
        for split, names in splits.items():
            if scene_of_sample[a["sample_token"]] in names:
                out[split][cls] += 1
    return {k: dict(v) for k, v in out.items()}


def _write_scene(opts: SynthOptions, si: int, rig: Rig, tables: _Tables, cs_token: dict, renderers: dict,
                 map_token: str, out: Path, lidar_name: str, bar: Any = None, attempt: int = 0) -> dict:
    seed, K = opts.seed, opts.samples_per_scene
    t_start = T_BASE_US + si * 3_600_000_000
    duration = (K - 1) * KEYFRAME_US * 1e-6 + 1.5
    wrng = np.random.default_rng([seed, si, 2])
    sample_times = [t_start + KEYFRAME_US + k * KEYFRAME_US + int(wrng.integers(-1000, 1000)) for k in range(K)]
    scene = W.generate_scene(seed, si, duration, t_start, (np.array(sample_times) - t_start) * 1e-6, attempt)
    log_name = f"n000-synth-{seed}-{scene.name}"
    log_token = tables.add("log", token=_token("log", seed, si), logfile=log_name, vehicle="synth-ego",
                           date_captured="2018-08-01", location="synth-grid-city")
    scene_token = _token("scene", seed, si)
    sample_tokens = [_token("sample", seed, si, k) for k in range(K)]
    for k, st in enumerate(sample_tokens):
        tables.add("sample", token=st, timestamp=sample_times[k], prev=sample_tokens[k - 1] if k else "",
                   next=sample_tokens[k + 1] if k + 1 < K else "", scene_token=scene_token)
    tables.add("scene", token=scene_token, log_token=log_token, nbr_samples=K, first_sample_token=sample_tokens[0],
               last_sample_token=sample_tokens[-1], name=scene.name,
               description=f"synthetic drive, seed {seed}, {len(scene.actors)} actors")
    srng = np.random.default_rng([seed, si, 3])
    cam_off = _camera_offsets_us(rig, srng)
    # (channel, timestamp, is_key_frame, sample index)
    frames: list[tuple[str, int, bool, int]] = []
    for name in rig.cameras:
        for k in range(K):
            frames.append((name, sample_times[k] + cam_off[name], True, k))
            if not opts.keyframes_only and k + 1 < K:
                for n in range(1, 6):
                    frames.append((name, sample_times[k] + cam_off[name] + n * CAMERA_PERIOD_US, False, k + 1))
    for name in rig.radars:
        phase = int(srng.integers(0, RADAR_PERIOD_US))
        times = np.arange(sample_times[0] - RADAR_LEAD_US + phase, sample_times[-1] + RADAR_PERIOD_US // 2,
                          RADAR_PERIOD_US)
        key_idx = {int(np.argmin(np.abs(times - t))): k for k, t in enumerate(sample_times)}
        for i, t in enumerate(times):
            k = key_idx.get(i)
            owner = k if k is not None else min(int(np.searchsorted(sample_times, t)), K - 1)
            frames.append((name, int(t), k is not None, owner))
    for k in range(K):
        frames.append((lidar_name, sample_times[k], True, k))
    frames.sort(key=lambda f: (f[1], f[0]))
    scene.precompute(np.array([f[1] for f in frames], np.int64))
    snapshots: dict[int, W.Snapshot] = {}

    def snap(t: int) -> W.Snapshot:
        if t not in snapshots:
            snapshots[t] = scene.snapshot(t)
        return snapshots[t]

    prev_sd: dict[str, dict] = {}
    frame_count: dict[str, int] = defaultdict(int)
    key_radar: dict[int, list[np.ndarray]] = defaultdict(list)  # global radar points per sample
    lidar_hits: dict[int, tuple] = {}
    for channel, t, is_key, k in frames:
        ego = scene.ego_pose(t)
        ep = tables.add("ego_pose", token=_token("ego_pose", seed, si, channel, t), timestamp=t, **_pose_row(ego))
        folder = "samples" if is_key else "sweeps"
        idx = frame_count[channel]
        frame_count[channel] += 1
        rng = _sensor_rng(seed, si, channel, idx)
        if channel in rig.cameras:
            cam: Camera = rig.cameras[channel]
            rel = f"{folder}/{channel}/{log_name}__{channel}__{t}.jpg"
            img, _ = renderers[channel].render(snap(t), ego @ cam.ego_from_camera, scene.sun, rng)
            _save_jpeg(confined(out, rel), img, opts.jpeg_quality)
            w, h, fmt = cam.width, cam.height, "jpg"
        elif channel in rig.radars:
            rel = f"{folder}/{channel}/{log_name}__{channel}__{t}.pcd"
            g_from_r = ego @ rig.radars[channel].ego_from_radar
            v_ego, yaw_rate = scene.ego_velocity(t)
            lever = g_from_r[:2, 3] - ego[:2, 3]
            v_sensor = v_ego + yaw_rate * np.array([-lever[1], lever[0]])
            pts = simulate_radar(snap(t), g_from_r, v_sensor, rng)
            write_radar_pcd(confined(out, rel), pts)
            if is_key:
                key_radar[k].append(transform_points(g_from_r, pts[:, :3].astype(np.float64)))
            w, h, fmt = 0, 0, "pcd"
        else:
            rel = f"{folder}/{channel}/{log_name}__{channel}__{t}.pcd.bin"
            g_from_l = ego @ rig.lidars[channel].ego_from_lidar
            sweep = simulate_lidar(snap(t), g_from_l, rng)
            confined(out, rel).parent.mkdir(parents=True, exist_ok=True)
            sweep.points.tofile(confined(out, rel))
            lidar_hits[k] = (transform_points(g_from_l, sweep.points[:, :3].astype(np.float64)), sweep.actor_hits,
                             sweep.actor_rays)
            if bar is not None:
                bar.update(1)
            w, h, fmt = 0, 0, "pcd"
        sd_token = _token("sample_data", seed, si, channel, t)
        row = tables.add("sample_data", token=sd_token, sample_token=sample_tokens[k], ego_pose_token=ep,
                         calibrated_sensor_token=cs_token[channel], timestamp=t, fileformat=fmt,
                         is_key_frame=is_key, height=h, width=w, filename=rel,
                         prev=prev_sd[channel]["token"] if channel in prev_sd else "", next="")
        if channel in prev_sd:
            prev_sd[channel]["next"] = sd_token
        prev_sd[channel] = tables.rows["sample_data"][-1]
        del row
    # annotations at the sample (LIDAR_TOP key frame) times
    last_ann: dict[int, dict] = {}
    first_ann: dict[int, str] = {}
    n_ann: dict[int, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    for k, t in enumerate(sample_times):
        s = snap(t)
        ego_xy = scene.ego_pose(t)[:2, 3]
        lidar_pts, hits, rays = lidar_hits[k]
        radar_pts = np.concatenate(key_radar[k]) if key_radar[k] else np.zeros((0, 3))
        n_lidar = points_in_boxes(lidar_pts, s.actor_boxes)
        n_radar = points_in_boxes(radar_pts, s.actor_boxes)
        for ai, actor in enumerate(scene.actors):
            x, y, z, l, w, h, yaw = s.actor_boxes[ai]
            if np.hypot(x - ego_xy[0], y - ego_xy[1]) > ANNOTATION_RANGE:
                continue
            tok = _token("ann", seed, si, ai, k)
            attr = _attribute(actor, float(np.linalg.norm(s.actor_velocity[ai])))
            row = tables.add("sample_annotation", token=tok, sample_token=sample_tokens[k],
                             instance_token=_token("instance", seed, si, ai),
                             visibility_token=_visibility(int(hits[ai]), int(rays[ai])),
                             attribute_tokens=[_token("attribute", attr)] if attr else [],
                             translation=[float(x), float(y), float(z)], size=[float(w), float(l), float(h)],
                             rotation=[float(q) for q in yaw_to_quaternion(yaw)],
                             prev=last_ann[ai]["token"] if ai in last_ann else "", next="",
                             num_lidar_pts=int(n_lidar[ai]), num_radar_pts=int(n_radar[ai]))
            if ai in last_ann:
                last_ann[ai]["next"] = tok
            else:
                first_ann[ai] = tok
            last_ann[ai] = tables.rows["sample_annotation"][-1]
            n_ann[ai] += 1
            counts[actor.cls] += 1
            del row
    for ai, actor in enumerate(scene.actors):
        if ai in first_ann:
            tables.add("instance", token=_token("instance", seed, si, ai),
                       category_token=_token("category", W.CATEGORY[actor.cls]), nbr_annotations=n_ann[ai],
                       first_annotation_token=first_ann[ai], last_annotation_token=last_ann[ai]["token"])
    return {"name": scene.name, "log_token": log_token, "actors": len(scene.actors), "annotations": dict(counts)}


def _save_jpeg(path: Path, img: np.ndarray, quality: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, format="JPEG", quality=quality, subsampling=2, optimize=False)


def _write_map(path: Path, extent_m: float) -> None:
    """Drivable-area mask from the global origin to ``extent_m`` in x and y, 0.1 m/px, origin at the bottom-left
    (the nuscenes-devkit MapMask convention; the scenes live at positive coordinates)."""
    from PIL import Image

    n = int(np.ceil(extent_m / MAP_RES))
    c = (np.arange(n) + 0.5) * MAP_RES
    road = (np.abs(((c + W.BLOCK / 2) % W.BLOCK) - W.BLOCK / 2) < W.ROAD_HALF).astype(np.uint8) * 255
    mask = np.maximum(road[::-1, None], road[None, :])  # rows: y from the top (max) down to 0
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask).save(path, compress_level=1)


def write_bags(out: Path) -> dict:
    """One rosbag2 (MCAP) per scene under out/bags/<scene name>/."""
    from nuscenes.nuscenes import NuScenes

    nusc = NuScenes(VERSION, str(out), verbose=False)
    result = {}
    for scene in nusc.scene:
        target = out / "bags" / scene["name"]
        if target.exists():
            shutil.rmtree(target)
        result[scene["name"]] = write_scene_bag(nusc, scene["token"], target)
    return result
