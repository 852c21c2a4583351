"""perception-infer: one frame from each kind of source through each backend -> a results JSON the nuScenes
devkit's loader accepts, equal to what the library pipeline gives for the same Frame, and a preview."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from perception.cli.infer import main
from perception.data.synthetic.generate import VERSION
from perception.eval.detection import ResultsFormatError, check_results_file
from perception.pipeline import Pipeline

REPO = Path(__file__).resolve().parents[3]
DEMO_PKL = "n015-2018-07-24-11-22-45+0800.pkl"


@pytest.fixture(scope="module")
def synth_sample(synth_root):
    from nuscenes.nuscenes import NuScenes

    nusc = NuScenes(version=VERSION, dataroot=str(synth_root), verbose=False)
    return nusc, nusc.sample[3]


@pytest.fixture(scope="module")
def exported(small_ckpt, tmp_path_factory):
    from export.cli import main as export_main

    out = tmp_path_factory.mktemp("infer_onnx") / "onnx"
    assert export_main(["--checkpoint", str(small_ckpt), "--out", str(out), "--no-simplify"]) == 0
    return out


def _devkit_boxes(path: Path, token: str) -> list:
    from nuscenes.eval.common.loaders import load_prediction
    from nuscenes.eval.detection.data_classes import DetectionBox

    boxes, meta = load_prediction(str(path), 500, DetectionBox)
    assert set(meta) == {"use_camera", "use_lidar", "use_radar", "use_map", "use_external"}
    assert boxes.sample_tokens == [token]
    return boxes.boxes[token]


def test_sample_token_source_equals_the_library_pipeline(small_ckpt, synth_root, synth_sample, tmp_path, capsys):
    """--dataroot/--version/--sample-token: the JSON holds exactly the pipeline's detections of that sample's Frame
    (the same Frame NuScenesFrames builds for perception-test), in the global frame."""
    from perception.data.nuscenes import NuScenesFrames

    nusc, sample = synth_sample
    out = tmp_path / "out"
    assert main(["--checkpoint", str(small_ckpt), "--out", str(out), "--dataroot", str(synth_root), "--version",
                 VERSION, "--sample-token", sample["token"]]) == 0
    line = capsys.readouterr().out
    assert "detections" in line and "results_nusc.json" in line
    boxes = _devkit_boxes(out / "results_nusc.json", sample["token"])
    pipe = Pipeline.from_checkpoint(small_ckpt)
    frames = NuScenesFrames(pipe.cfg, synth_root, VERSION, "synth_val" if any(
        s.token == sample["token"] for s in NuScenesFrames(pipe.cfg, synth_root, VERSION, "synth_val", nusc=nusc).samples)
        else "synth_train", nusc=nusc)
    frame = frames.load(next(i for i, s in enumerate(frames.samples) if s.token == sample["token"]))
    want = pipe.infer(frame).to_nuscenes()
    assert len(boxes) == len(want) > 0
    got = sorted(boxes, key=lambda b: -b.detection_score)
    np.testing.assert_allclose([b.translation for b in got], [w["translation"] for w in want], atol=1e-4)
    assert [b.detection_name for b in got] == [w["detection_name"] for w in want]
    png = Image.open(out / "preview.png")
    assert png.width > 800 and png.height >= 480
    # the folder now holds results: a second run is refused (naming --overwrite) and leaves them as they were
    before = (out / "results_nusc.json").read_bytes()
    argv = ["--checkpoint", str(small_ckpt), "--out", str(out), "--dataroot", str(synth_root), "--version", VERSION,
            "--sample-token", sample["token"]]
    capsys.readouterr()
    assert main(argv) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "results_nusc.json").read_bytes() == before
    assert main(argv + ["--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["preview.png", "results_nusc.json"]


def test_raw_files_source_masks_the_cameras_without_an_image(small_ckpt, synth_root, synth_sample, tmp_path, capsys):
    """--rig with one --image and one --radar: the other cameras are masked (named in the summary), the radar
    sweep arrives in the Frame (points in the BEV), and the results JSON is valid."""
    nusc, sample = synth_sample
    sd = {ch: nusc.get("sample_data", tok) for ch, tok in sample["data"].items()}
    rig = synth_root / VERSION / "rig.yaml"
    out = tmp_path / "raw"
    assert main(["--checkpoint", str(small_ckpt), "--out", str(out), "--rig", str(rig),
                 "--image", f"CAM_FRONT={synth_root / sd['CAM_FRONT']['filename']}",
                 "--radar", f"RADAR_FRONT={synth_root / sd['RADAR_FRONT']['filename']}",
                 "--lidar", str(synth_root / sd["LIDAR_TOP"]["filename"]), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["cameras"]["CAM_FRONT"] is True
    assert sum(not v for v in summary["cameras"].values()) == len(summary["cameras"]) - 1 >= 5
    assert summary["radar_points"] > 0
    check_results_file(out / "results_nusc.json", [summary["sample_token"]])
    assert (out / "preview.png").stat().st_size > 10_000


@pytest.mark.parametrize("argv, code, words", [
    ([], 2, "exactly one source"),
    (["--dataroot", "x", "--version", "v"], 2, "--sample-token"),
    (["--rig", "configs/rigs/nuscenes.yaml"], 2, "--image"),
    (["--rig", "configs/rigs/nuscenes.yaml", "--image", "CAM_NOSE=a.jpg"], 1, "has no camera CAM_NOSE"),
    (["--rig", "configs/rigs/nuscenes.yaml", "--image", "CAM_FRONT"], 1, "CHANNEL=PATH"),
    (["--rig", "configs/rigs/nuscenes.yaml", "--image", "CAM_FRONT=missing.jpg"], 1, "missing.jpg"),
])
def test_bad_input_is_one_line_and_the_right_exit_code(small_ckpt, tmp_path, capsys, monkeypatch, argv, code, words):
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) if code == 2 else _nullcontext():
        rc = main(["--checkpoint", str(small_ckpt), "--out", str(tmp_path / "o")] + argv)
        assert rc == code
    err = capsys.readouterr().err.strip().splitlines()
    assert words in err[-1] and (code == 2 or len(err) == 1), err
    assert not (tmp_path / "o" / "results_nusc.json").exists()


def _nullcontext():
    import contextlib

    return contextlib.nullcontext()


def test_results_check_rejects_what_the_devkit_rejects(tmp_path):
    good = {"sample_token": "t", "translation": [1.0, 2.0, 0.5], "size": [1.9, 4.5, 1.6], "rotation": [1, 0, 0, 0],
            "velocity": [0.0, 0.0], "detection_name": "car", "detection_score": 0.5, "attribute_name": "vehicle.parked"}
    meta = {"use_camera": True, "use_lidar": False, "use_radar": True, "use_map": False, "use_external": False}
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"meta": meta, "results": {"t": [good]}}))
    assert check_results_file(path, ["t"]) == 1
    for results, m, tokens, words in [
        ({"t": [{**good, "detection_name": "lorry"}]}, meta, ["t"], "Unknown detection_name"),
        ({"t": [{**good, "attribute_name": "vehicle.flying"}]}, meta, ["t"], "Unknown attribute_name"),
        ({"t": [{**good, "rotation": [1, 0, 0]}]}, meta, ["t"], "rotation|4|len"),
        ({"t": [good] * 501}, meta, ["t"], "500"),
        ({"t": [good]}, {k: v for k, v in meta.items() if k != "use_map"}, ["t"], "use_map"),
        ({"t": [good]}, meta, ["t", "u"], "1 missing"),
    ]:
        path.write_text(json.dumps({"meta": m, "results": results}))
        with pytest.raises(ResultsFormatError, match=words):
            check_results_file(path, tokens)


# torch made unimportable as if it were not installed: a meta-path finder refuses it (a sys.modules['torch'] = None
# shim would also break libraries that look torch up in sys.modules, e.g. scipy's array-API helpers)
NO_TORCH = """import importlib.abc, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'torch':
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)")
sys.meta_path.insert(0, NoTorch())
from perception.cli.infer import main
code = main({argv!r})
assert 'torch' not in sys.modules
raise SystemExit(code)
"""


def _run_without_torch(argv: list[str]) -> subprocess.CompletedProcess:
    """perception-infer in a fresh interpreter where ``import torch`` fails (and is never imported)."""
    return subprocess.run([sys.executable, "-c", NO_TORCH.format(argv=argv)], capture_output=True, text=True,
                          cwd=REPO, timeout=600)


@pytest.mark.slow
def test_onnx_path_runs_with_torch_unimportable(exported, synth_root, synth_sample, tmp_path):
    """--onnx with a nuScenes sample: works where torch cannot be imported, and the shim really blocks torch
    (the same command with --checkpoint fails on the torch import)."""
    _, sample = synth_sample
    src = ["--dataroot", str(synth_root), "--version", VERSION, "--sample-token", sample["token"]]
    out = tmp_path / "onnx"
    run = _run_without_torch(["--onnx", str(exported), "--out", str(out)] + src)
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(_devkit_boxes(out / "results_nusc.json", sample["token"])) > 0
    blocked = _run_without_torch(["--checkpoint", str(exported.parent / "x.pt"), "--out", str(tmp_path / "c")] + src)
    assert blocked.returncode != 0 and "torch" in blocked.stderr


@pytest.mark.realdata
@pytest.mark.slow
def test_real_nuscenes_key_frame_end_to_end(realdata, exported, small_ckpt, tmp_path):
    """The real 1600x900 key frame (mmdet3d info entry): ONNX Runtime without torch, and the checkpoint, give the
    same detections; the JSON passes the devkit's loader; the preview shows the six cameras and the 68 GT boxes'
    BEV. (The small test network is untrained: what it detects is not the point; see docs/quickstart.md.)"""
    pkl = realdata / "nuscenes_demo" / DEMO_PKL
    a, b = tmp_path / "onnx", tmp_path / "ckpt"
    run = _run_without_torch(["--onnx", str(exported), "--out", str(a), "--info", str(pkl), "--json"])
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads(run.stdout)
    assert summary["sample_token"] == "ca9a282c9e77460f8360f564131a8af5"
    assert all(summary["cameras"].values()) and len(summary["cameras"]) == 6 and summary["gt_boxes"] > 50
    assert main(["--checkpoint", str(small_ckpt), "--out", str(b), "--info", str(pkl)]) == 0
    onnx_boxes = _devkit_boxes(a / "results_nusc.json", summary["sample_token"])
    torch_boxes = _devkit_boxes(b / "results_nusc.json", summary["sample_token"])
    assert len(onnx_boxes) == len(torch_boxes) > 0
    np.testing.assert_allclose(sorted(x.detection_score for x in onnx_boxes),
                               sorted(x.detection_score for x in torch_boxes), atol=2e-3)


@pytest.mark.realdata
def test_real_raw_files_with_a_real_radar_sweep(realdata, small_ckpt, tmp_path, capsys):
    """Raw files: two real 1600x900 images, a real nuScenes radar PCD and the real lidar sweep with the nuScenes
    rig; the radar's points reach the Frame, the other four cameras are masked."""
    demo = realdata / "nuscenes_demo"
    radar = next((realdata / "nuscenes_radar").glob("*RADAR_BACK_LEFT*.pcd"))
    out = tmp_path / "raw"
    assert main(["--checkpoint", str(small_ckpt), "--out", str(out), "--rig", str(REPO / "configs/rigs/nuscenes.yaml"),
                 "--image", f"CAM_FRONT={next(demo.glob('*__CAM_FRONT__*.jpg'))}",
                 "--image", f"CAM_BACK={next(demo.glob('*__CAM_BACK__*.jpg'))}",
                 "--radar", f"RADAR_BACK_LEFT={radar}", "--lidar", str(next(demo.glob('*.pcd.bin'))), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert sum(summary["cameras"].values()) == 2 and summary["radar_points"] > 50


@pytest.mark.parametrize("args", [["--score-threshold", "nan"], ["--score-threshold", "2"], ["--index", "-1"]])
def test_bad_numbers_are_exit_2(args, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--onnx", str(tmp_path), "--out", str(tmp_path / "o"), "--info", str(tmp_path / "x.pkl"), *args])
    assert e.value.code == 2
    assert args[0] in capsys.readouterr().err
