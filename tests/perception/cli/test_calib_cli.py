import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from numpy.testing import assert_allclose

from perception.cli.calib import main

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = (Path(__file__).resolve().parents[2] / "calibration" / "test_rig.py").read_text().split('EXAMPLE = """')[1] \
    .split('"""')[0]


def write(tmp_path, text: str, name: str = "rig.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_validate_ok(tmp_path, capsys):
    assert main(["validate", str(write(tmp_path, EXAMPLE))]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: ") and "2 cameras, 1 radars, 1 stereo pairs" in out and "baseline 0.500 m" in out
    assert len(out.strip().splitlines()) == 1


# Each validate failure of the issue, as a text edit of the example, and what the message must name.
FAILURES = {
    "non-orthonormal rotation (quaternion norm off)": (
        ("rotation: [0.5, -0.5, 0.5, -0.5]\n  CAM_FRONT_R", "rotation: [0.5, -0.5, 0.5, -0.52]\n  CAM_FRONT_R"),
        ["CAM_FRONT_L", "'rotation'", "not a unit quaternion", "[0.5, -0.5, 0.5, -0.52]"]),
    "non-positive focal length": (
        ("[[1266.4, 0.0, 816.3], [0.0, 1266.4, 491.5]", "[[-1266.4, 0.0, 816.3], [0.0, 1266.4, 491.5]"),
        ["CAM_FRONT_L", "'intrinsics'", "non-positive focal length", "fx=-1266.4"]),
    "principal point outside the image": (
        ("width: 1600\n    height: 900\n    intrinsics: [[1266.4, 0.0, 816.3]",
         "width: 800\n    height: 900\n    intrinsics: [[1266.4, 0.0, 816.3]"),
        ["CAM_FRONT_L", "principal point is outside the 800x900 image", "816.3"]),
    "NaN": (("translation: [3.41, 0.0, 0.50]", "translation: [3.41, .nan, 0.50]"),
            ["RADAR_FRONT", "'translation'", "NaN or inf", "nan"]),
    "inf": (("translation: [1.70, 0.25, 1.51]", "translation: [1.70, .inf, 1.51]"),
            ["CAM_FRONT_L", "'translation'", "NaN or inf", "inf"]),
    "stereo pair names a missing camera": (("right: CAM_FRONT_R}", "right: CAM_REAR}"),
                                           ["stereo_pairs[0]", "'right'", "'CAM_REAR'", "not in the rig"]),
    "zero baseline": (("translation: [1.70, -0.25, 1.51]", "translation: [1.70, 0.25, 1.51]"),
                      ["stereo_pairs[0]", "'baseline'", "0.0", "same place"]),
    "duplicate channel names": (("  CAM_FRONT_R:\n", "  CAM_FRONT_L:\n"),
                                ["CAM_FRONT_L", "appears twice", "line 11"]),
    "missing required field": (("    height: 900\n    intrinsics: [[1266.4, 0.0, 816.3]", "    intrinsics: [[1266.4, 0.0, 816.3]"),
                               ["CAM_FRONT_L", "'height'", "required but missing"]),
    "unknown doppler kind": (("doppler: cartesian", "doppler: polar"),
                             ["RADAR_FRONT", "'doppler'", "'polar'", "not a known Doppler kind"]),
    "not YAML": (("stereo_pairs:", "stereo_pairs: [unclosed"), ["not valid YAML"]),
}


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_validate_failures_name_sensor_field_value(tmp_path, capsys, case):
    (old, new), fragments = FAILURES[case]
    assert old in EXAMPLE, old
    path = write(tmp_path, EXAMPLE.replace(old, new, 1))
    assert main(["validate", str(path)]) == 1
    captured = capsys.readouterr()
    err = captured.err
    assert captured.out == "" and "Traceback" not in err
    assert err.startswith(f"error: CalibrationError: {path}: ")
    assert len(err.strip().splitlines()) == 1
    for frag in fragments:
        assert frag in err, f"{frag!r} not in {err!r}"


def test_validate_missing_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_console_script_has_no_traceback_and_exit_codes(tmp_path):
    exe = Path(sys.executable).parent / "perception-calib"
    bad = write(tmp_path, EXAMPLE.replace("doppler: cartesian", "doppler: polar"))
    r = subprocess.run([str(exe), "validate", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr and "polar" in r.stderr
    r = subprocess.run([str(exe), "validate"], capture_output=True, text=True)
    assert r.returncode == 2  # usage error from argparse
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "examples:" in r.stdout and "exit codes" in r.stdout


def test_project(tmp_path, capsys, nuscenes_rig):
    rig_path = REPO / "configs" / "rigs" / "nuscenes.yaml"
    pts = np.array([[20.0, 0.0, 1.0], [-20.0, 0.0, 1.0], [10.0, 2.0, 0.0]])
    np.save(tmp_path / "p.npy", pts)
    assert main(["project", "--rig", str(rig_path), "--channel", "CAM_FRONT", "--points", str(tmp_path / "p.npy"),
                 "--out", str(tmp_path / "uvd.npy")]) == 0
    assert "2 inside the 1600x900 image of CAM_FRONT" in capsys.readouterr().out
    uvd = np.load(tmp_path / "uvd.npy")
    assert uvd.shape == (3, 3)
    cam = nuscenes_rig.cameras["CAM_FRONT"]
    hom = cam.img_from_ego @ np.r_[pts[0], 1.0]
    assert_allclose(uvd[0], [hom[0] / hom[2], hom[1] / hom[2], hom[2]])
    assert uvd[1, 2] < 0 and np.isnan(uvd[1, 0])  # behind the camera
    np.save(tmp_path / "bad.npy", np.zeros((4, 2)))
    assert main(["project", "--rig", str(rig_path), "--channel", "CAM_FRONT", "--points", str(tmp_path / "bad.npy"),
                 "--out", str(tmp_path / "uvd.npy")]) == 1
    assert "expected (N, 3)" in capsys.readouterr().err
    assert main(["project", "--rig", str(rig_path), "--channel", "CAM_NOPE", "--points", str(tmp_path / "p.npy"),
                 "--out", str(tmp_path / "uvd.npy")]) == 1
    assert "cameras: ['CAM_FRONT_LEFT'" in capsys.readouterr().err


def test_overlay_draws_points_where_they_project(tmp_path, capsys):
    """A synthetic grey image and three ego points: the PNG has coloured pixels at their projections."""
    from PIL import Image

    rig = yaml.safe_load(EXAMPLE)
    rig["cameras"] = {"CAM_FRONT_L": rig["cameras"]["CAM_FRONT_L"]}
    rig["stereo_pairs"] = []
    rig_path = write(tmp_path, yaml.safe_dump(rig))
    Image.fromarray(np.full((900, 1600, 3), 128, np.uint8)).save(tmp_path / "img.png")
    pts = np.array([[10.0, 0.25, 1.51], [20.0, 3.0, 1.0], [-5.0, 0.0, 0.0]])
    np.save(tmp_path / "pts.npy", pts)
    out = tmp_path / "o.png"
    assert main(["overlay", "--rig", str(rig_path), "--image", f"CAM_FRONT_L={tmp_path / 'img.png'}",
                 "--points", str(tmp_path / "pts.npy"), "--out", str(out)]) == 0
    assert "2 of 3 points inside the image" in capsys.readouterr().out
    png = np.asarray(Image.open(out).convert("RGB")).astype(int)
    # the image occupies the left 1600 of the figure's columns at 1:1 scale
    colourful = np.abs(png[..., 0] - png[..., 2]) > 40
    # the first point lies on the optical axis: principal point (816.3, 491.5)
    assert colourful[488:495, 813:820].any()
    assert not colourful[600:700, 100:200].any()
    # half-size image: intrinsics scaled, with a note
    Image.fromarray(np.full((450, 800, 3), 128, np.uint8)).save(tmp_path / "half.png")
    assert main(["overlay", "--rig", str(rig_path), "--image", f"CAM_FRONT_L={tmp_path / 'half.png'}",
                 "--points", str(tmp_path / "pts.npy"), "--out", str(out)]) == 0
    assert "intrinsics scaled by 0.5" in capsys.readouterr().out
    Image.fromarray(np.full((500, 500, 3), 128, np.uint8)).save(tmp_path / "square.png")
    assert main(["overlay", "--rig", str(rig_path), "--image", f"CAM_FRONT_L={tmp_path / 'square.png'}",
                 "--points", str(tmp_path / "pts.npy"), "--out", str(out)]) == 1
    assert "nor its aspect ratio" in capsys.readouterr().err


@pytest.mark.realdata
def test_real_data_commands(realdata, tmp_path, capsys):
    """perception-calib on the real samples: convert both real formats, validate, overlay lidar and radar."""
    pkl = next((realdata / "nuscenes_demo").glob("*.pkl"))
    assert main(["convert", "--from", "mmdet3d-info", str(pkl), "--out", str(tmp_path / "demo.yaml")]) == 0
    assert main(["validate", str(tmp_path / "demo.yaml")]) == 0
    front = next((realdata / "nuscenes_demo").glob("*__CAM_FRONT__*.jpg"))
    lidar = next((realdata / "nuscenes_demo").glob("*.pcd.bin"))
    assert main(["overlay", "--rig", str(tmp_path / "demo.yaml"), "--image", f"CAM_FRONT={front}",
                 "--points", str(lidar), "--frame", "sensor:LIDAR_TOP", "--out", str(tmp_path / "l.png")]) == 0
    out = capsys.readouterr().out
    n_lidar = int(out.strip().splitlines()[-1].split(": ")[1].split(" of ")[0])
    assert 2000 < n_lidar < 6000  # the front camera sees a ~65 degree slice of the 34,688-point sweep
    vod = realdata / "vod" / "radar" / "training"
    assert main(["convert", "--from", "kitti", str(vod / "calib" / "00549.txt"), "--image",
                 str(vod / "image_2" / "00549.jpg"), "--out", str(tmp_path / "vod.yaml")]) == 0
    assert main(["overlay", "--rig", str(tmp_path / "vod.yaml"), "--image", f"CAM_FRONT={vod / 'image_2' / '00549.jpg'}",
                 "--points", str(vod / "velodyne" / "00549.bin"), "--points-format", "vod-radar",
                 "--out", str(tmp_path / "v.png")]) == 0
    assert (tmp_path / "v.png").stat().st_size > 100_000
    assert main(["convert", "--from", "kitti", str(vod / "calib" / "00549.txt"), "--out", str(tmp_path / "x.yaml")]) == 1
    assert "--image-size" in capsys.readouterr().err


def test_validate_with_config_reports_the_lift_overlap(capsys):
    """--config adds the lift coverage: the nuScenes ring fits the tiny config's 2 cameras per voxel; the
    multi-stereo rig needs 3, a warning on stderr that names the setting (exit 0: it still runs)."""
    rigs, cfg = REPO / "configs" / "rigs", str(REPO / "configs" / "synthetic_tiny.yaml")
    assert main(["validate", str(rigs / "nuscenes.yaml"), "--config", cfg]) == 0
    out = capsys.readouterr()
    assert "3957 by 2; the model samples up to 2 camera(s) per voxel" in out.out and out.err == ""
    assert main(["validate", str(rigs / "stereo_radar.yaml"), "--config", cfg]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and "816 voxel(s) are seen by more (up to 3)" in err
    assert "cameras_per_voxel >= 3" in err


def test_overlay_mosaic_doppler_colours_and_gt_boxes(tmp_path, capsys):
    """Two --image: a mosaic of two 800-px tiles (+ the colour bar); --color-by doppler: an approaching return blue,
    a receding one red, where they project; --labels (View-of-Delft JSON): the car's box drawn in its class colour
    in the tile that sees it."""
    import json

    from PIL import Image

    from calibration.io import load_rig
    from calibration.transforms import project_points
    from perception.visualize import CLASS_COLOURS, hex_to_rgb, mosaic_layout

    rig_path = write(tmp_path, EXAMPLE)
    rig = load_rig(rig_path)
    for name in ("l", "r"):
        Image.fromarray(np.full((900, 1600, 3), 128, np.uint8)).save(tmp_path / f"{name}.png")
    pts = np.zeros((2, 7), np.float32)  # x, y, z, rcs, v_r, v_r_compensated, time
    pts[0, :3], pts[0, 5] = [10.0, 0.25, 1.51], 4.0  # receding
    pts[1, :3], pts[1, 5] = [20.0, 3.0, 1.0], -4.0  # approaching
    pts.tofile(tmp_path / "radar.bin")
    label = [{"className": "car", "geometry": {"center": {"x": 15.0, "y": 1.0, "z": -0.8},
                                               "size": {"length": 4.5, "width": 1.9, "height": 1.6},
                                               "quaternion": {"x": 0.0, "y": 0.0, "z": 0.0, "w": 1.0}}}]
    (tmp_path / "labels.json").write_text(json.dumps(label))
    out = tmp_path / "m.png"
    assert main(["overlay", "--rig", str(rig_path), "--image", f"CAM_FRONT_L={tmp_path / 'l.png'}",
                 "--image", f"CAM_FRONT_R={tmp_path / 'r.png'}", "--points", str(tmp_path / "radar.bin"),
                 "--points-format", "vod-radar", "--color-by", "doppler", "--labels", str(tmp_path / "labels.json"),
                 "--out", str(out)]) == 0
    assert "4 projections of 2 points inside the 2 images (coloured by doppler); 1 GT boxes" in capsys.readouterr().out
    places, (tw, th) = mosaic_layout([(900, 1600)] * 2)
    assert places == [(0, 0, 0.5), (800, 0, 0.5)] and (tw, th) == (1600, 450)
    png = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert png.shape[:2] == (450, round(1600 * 1.08))
    for i, channel in enumerate(("CAM_FRONT_L", "CAM_FRONT_R")):
        uvd = project_points(rig.cameras[channel].img_from_ego, pts[:, :3].astype(np.float64)) * 0.5
        for (u, v, _), redder in zip(uvd, (True, False)):
            patch = png[int(v) - 2:int(v) + 3, 800 * i + int(u) - 2:800 * i + int(u) + 3].reshape(-1, 3)
            diff = patch[:, 0] - patch[:, 2]
            assert (diff.max() > 80) if redder else (diff.min() < -80), (channel, patch)
        # the car's box: class-coloured pixels around its projected centre (the box spans ~110 px here)
        centre = project_points(rig.cameras[channel].img_from_ego, np.array([[15.0, -1.0, 0.8]]))[0] * 0.5
        u, v = int(centre[0]) + 800 * i, int(centre[1])
        region = png[v - 60:v + 60, u - 80:u + 80].reshape(-1, 3)
        assert (np.abs(region - hex_to_rgb(CLASS_COLOURS["car"])).sum(axis=1) < 60).sum() > 50, channel


def test_overlay_rejects_colour_fields_the_points_lack(tmp_path, capsys):
    from PIL import Image

    rig_path = write(tmp_path, EXAMPLE)
    Image.fromarray(np.full((900, 1600, 3), 128, np.uint8)).save(tmp_path / "img.png")
    np.save(tmp_path / "p.npy", np.array([[10.0, 0.0, 1.0]]))
    for colour in ("doppler", "rcs"):
        assert main(["overlay", "--rig", str(rig_path), "--image", f"CAM_FRONT_L={tmp_path / 'img.png'}",
                     "--points", str(tmp_path / "p.npy"), "--color-by", colour, "--out", str(tmp_path / "o.png")]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "p.npy" in err[0] and f"--color-by {colour}" in err[0]


def test_nuscenes_radar_doppler_is_the_radial_compensated_speed():
    from perception.cli.calib import _point_values
    from perception.data.io import PointCloud

    fields = ("x", "y", "z", "vx_comp", "vy_comp")
    cloud = PointCloud(np.array([[10, 0, 0, 2, 0], [0, 10, 0, 2, 0], [-3, -4, 0, 3, 4]], np.float32), fields)
    np.testing.assert_allclose(_point_values(cloud, "doppler", "x.pcd"), [2.0, 0.0, -5.0], atol=1e-6)


@pytest.mark.realdata
def test_real_six_camera_mosaic_with_info_gt_and_vod_labels(realdata, tmp_path, capsys):
    """The real key frame: six 1600x900 images -> a 3x2 mosaic of 800x450 tiles with the lidar sweep and the info
    file's 69 GT boxes; View-of-Delft: Doppler colours and the label file's boxes."""
    from PIL import Image

    demo = realdata / "nuscenes_demo"
    pkl = next(demo.glob("*.pkl"))
    assert main(["convert", "--from", "mmdet3d-info", str(pkl), "--out", str(tmp_path / "demo.yaml")]) == 0
    images = [f"{c}={next(demo.glob(f'*__{c}__*.jpg'))}" for c in
              ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT")]
    argv = ["overlay", "--rig", str(tmp_path / "demo.yaml"), "--points", str(next(demo.glob("*.pcd.bin"))),
            "--frame", "sensor:LIDAR_TOP", "--info", str(pkl), "--out", str(tmp_path / "m.png")]
    assert main(argv + [a for img in images for a in ("--image", img)]) == 0
    assert "inside the 6 images (coloured by depth); 69 GT boxes" in capsys.readouterr().out
    assert Image.open(tmp_path / "m.png").size == (round(2400 * 1.08), 900)
    vod = realdata / "vod" / "radar" / "training"
    assert main(["convert", "--from", "kitti", str(vod / "calib" / "00549.txt"), "--image",
                 str(vod / "image_2" / "00549.jpg"), "--out", str(tmp_path / "vod.yaml")]) == 0
    assert main(["overlay", "--rig", str(tmp_path / "vod.yaml"), "--image", f"CAM_FRONT={vod / 'image_2' / '00549.jpg'}",
                 "--points", str(vod / "velodyne" / "00549.bin"), "--points-format", "vod-radar", "--color-by",
                 "doppler", "--labels", str(vod / "label_2" / "00549.json"), "--out", str(tmp_path / "v.png")]) == 0
    assert "(coloured by doppler); 15 GT boxes" in capsys.readouterr().out
