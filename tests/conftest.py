"""Shared fixtures: the repository's rigs, the real samples (skipped with a reason when absent),
and a minimal nuScenes-format root written from a rig."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from calibration.io import load_rig
from calibration.rig import Rig
from calibration.transforms import matrix_to_quaternion
from perception.data.synthetic.generate import SynthOptions

REPO = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("PERCEPTION_REALDATA", REPO.parent / "shared" / "realdata"))


@pytest.fixture(scope="session")
def realdata() -> Path:
    if not REALDATA.is_dir():
        pytest.skip(f"real sensor samples not found at {REALDATA} (set PERCEPTION_REALDATA); they are not "
                    "shipped with the repository (non-commercial licences)")
    return REALDATA


@pytest.fixture(scope="session")
def nuscenes_rig() -> Rig:
    return load_rig(REPO / "configs" / "rigs" / "nuscenes.yaml")


@pytest.fixture(scope="session")
def stereo_rig() -> Rig:
    return load_rig(REPO / "configs" / "rigs" / "stereo_radar.yaml")


def _generate(opts):
    from perception.data.synthetic.generate import generate

    return generate(opts)


def _token(*parts: object) -> str:
    import hashlib

    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def write_minimal_nuscenes(root: Path, rig: Rig, version: str = "v1.0-fixture", n_samples: int = 2,
                           image_scale: float = 1.0) -> dict:
    """Write a small but complete nuScenes-format root (all 13 tables, a map PNG) for ``rig``: one scene,
    ``n_samples`` key frames 0.5 s apart, every sensor of the rig per sample, one annotated car.
    Returns {'sample_tokens': [...], 'version': version}."""
    from PIL import Image

    tables: dict[str, list] = {k: [] for k in (
        "attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map", "sample",
        "sample_annotation", "sample_data", "scene", "sensor", "visibility")}
    log_token, scene_token, map_token = _token("log"), _token("scene"), _token("map")
    tables["log"].append({"token": log_token, "logfile": "fixture-log", "vehicle": "fixture",
                          "date_captured": "2026-01-01", "location": "fixture-city"})
    (root / "maps").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "maps" / "fixture.png")
    tables["map"].append({"token": map_token, "log_tokens": [log_token], "category": "semantic_prior",
                          "filename": "maps/fixture.png"})
    tables["category"].append({"token": _token("cat"), "name": "vehicle.car", "description": "car", "index": 17})
    tables["attribute"].append({"token": _token("attr"), "name": "vehicle.moving", "description": "moving"})
    for level in ("v0-40", "v40-60", "v60-80", "v80-100"):
        tables["visibility"].append({"token": str(len(tables["visibility"]) + 1), "level": level, "description": level})
    sensors = ([(n, "camera", rig.cameras[n]) for n in rig.cameras] + [(n, "radar", rig.radars[n]) for n in rig.radars]
               + [(n, "lidar", rig.lidars[n]) for n in rig.lidars])
    cs_tokens = {}
    for name, modality, s in sensors:
        tables["sensor"].append({"token": _token("sensor", name), "channel": name, "modality": modality})
        pose = rig.sensor_pose(name)
        k = []
        if modality == "camera":
            k = (np.array(s.intrinsics) * [[image_scale], [image_scale], [1.0]]).tolist()
        cs_tokens[name] = _token("cs", name)
        tables["calibrated_sensor"].append({
            "token": cs_tokens[name], "sensor_token": _token("sensor", name),
            "translation": pose[:3, 3].tolist(), "rotation": matrix_to_quaternion(pose[:3, :3]).tolist(),
            "camera_intrinsic": k})
    sample_tokens = [_token("sample", i) for i in range(n_samples)]
    inst = _token("instance")
    prev_sd: dict[str, str] = {}
    for i, st in enumerate(sample_tokens):
        t = 1_600_000_000_000_000 + i * 500_000
        tables["sample"].append({"token": st, "timestamp": t, "prev": sample_tokens[i - 1] if i else "",
                                 "next": sample_tokens[i + 1] if i + 1 < n_samples else "", "scene_token": scene_token})
        for j, (name, modality, s) in enumerate(sensors):
            ts = t + j * 1000
            ep = _token("ego", i, name)
            tables["ego_pose"].append({"token": ep, "timestamp": ts, "rotation": [1.0, 0.0, 0.0, 0.0],
                                       "translation": [5.0 * i, 0.0, 0.0]})
            sd = _token("sd", i, name)
            if modality == "camera":
                w, h, ext, folder = round(s.width * image_scale), round(s.height * image_scale), "jpg", "samples"
            else:
                w, h, ext, folder = 0, 0, "pcd" if modality == "radar" else "pcd.bin", "samples"
            tables["sample_data"].append({
                "token": sd, "sample_token": st, "ego_pose_token": ep, "calibrated_sensor_token": cs_tokens[name],
                "timestamp": ts, "fileformat": ext.split(".")[0], "is_key_frame": True, "height": h, "width": w,
                "filename": f"{folder}/{name}/{name}__{ts}.{ext}", "prev": prev_sd.get(name, ""), "next": ""})
            if name in prev_sd:
                next(r for r in tables["sample_data"] if r["token"] == prev_sd[name])["next"] = sd
            prev_sd[name] = sd
        ann = _token("ann", i)
        tables["sample_annotation"].append({
            "token": ann, "sample_token": st, "instance_token": inst, "visibility_token": "4",
            "attribute_tokens": [_token("attr")], "translation": [15.0 + 5.0 * i, 2.0, 0.8],
            "size": [1.9, 4.6, 1.6], "rotation": [1.0, 0.0, 0.0, 0.0],
            "prev": _token("ann", i - 1) if i else "", "next": _token("ann", i + 1) if i + 1 < n_samples else "",
            "num_lidar_pts": 10, "num_radar_pts": 2})
    tables["instance"].append({"token": inst, "category_token": _token("cat"), "nbr_annotations": n_samples,
                               "first_annotation_token": _token("ann", 0),
                               "last_annotation_token": _token("ann", n_samples - 1)})
    tables["scene"].append({"token": scene_token, "log_token": log_token, "nbr_samples": n_samples,
                            "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1],
                            "name": "scene-fixture", "description": "fixture"})
    (root / version).mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        (root / version / f"{name}.json").write_text(json.dumps(rows))
    return {"sample_tokens": sample_tokens, "version": version}


@pytest.fixture(scope="session")
def nuscenes_fixture(tmp_path_factory, nuscenes_rig) -> dict:
    root = tmp_path_factory.mktemp("nusc")
    info = write_minimal_nuscenes(root, nuscenes_rig)
    info["root"] = root
    return info


# -- synthetic datasets shared by the data, pipeline and model tests (generated once per session) --------


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """5 scenes x 14 key frames (7 s: 6 s of future for forecasting), small images, key frames only."""
    root = tmp_path_factory.mktemp("synth5")
    _generate(SynthOptions(out=root, scenes=5, samples_per_scene=14, seed=3, image_scale=0.2, keyframes_only=True))
    return root


@pytest.fixture(scope="session")
def synth_sweeps(tmp_path_factory) -> Path:
    """1 scene x 3 key frames with all camera and radar sweeps and a bag."""
    root = tmp_path_factory.mktemp("synth_sweeps")
    _generate(SynthOptions(out=root, scenes=1, samples_per_scene=3, seed=5, image_scale=0.15, bags=True))
    return root




@pytest.fixture(scope="session")
def small_ckpt(tmp_path_factory) -> Path:
    """A checkpoint of the small test network (seed 0, untrained), shared by the CLI and replay tests."""
    import torch

    from perception.model.network import build_model
    from perception.train.checkpoint import save_checkpoint
    from small_model import small_config

    cfg = small_config()
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("small_ckpt") / "small.pt"
    save_checkpoint(path, build_model(cfg), cfg)
    return path


@pytest.fixture(scope="session")
def small_onnx_export(tmp_path_factory) -> Path:
    """perception-export of the small test network (small_net: non-trivial BatchNorm statistics): the folder."""
    from export.cli import main as export_main
    from perception.train.checkpoint import save_checkpoint
    from small_model import small_config, small_net

    cfg = small_config()
    root = tmp_path_factory.mktemp("small_onnx")
    save_checkpoint(root / "small.pt", small_net(cfg), cfg)
    assert export_main(["--checkpoint", str(root / "small.pt"), "--out", str(root / "onnx")]) == 0
    return root / "onnx"
