import copy

import numpy as np
import pytest
import yaml
from numpy.testing import assert_allclose

from calibration.io import dump_rig, load_rig, rig_from_dict, rig_to_dict
from calibration.rig import CalibrationError, Camera
from calibration.transforms import make_transform

EXAMPLE = """
name: example_rig
cameras:
  CAM_FRONT_L:
    width: 1600
    height: 900
    intrinsics: [[1266.4, 0.0, 816.3], [0.0, 1266.4, 491.5], [0.0, 0.0, 1.0]]
    distortion: null
    translation: [1.70, 0.25, 1.51]
    rotation: [0.5, -0.5, 0.5, -0.5]
  CAM_FRONT_R:
    width: 1600
    height: 900
    intrinsics: [[1266.4, 0.0, 816.3], [0.0, 1266.4, 491.5], [0.0, 0.0, 1.0]]
    distortion: {model: opencv, coeffs: [-0.1, 0.01, 0.0, 0.0, 0.0]}
    translation: [1.70, -0.25, 1.51]
    rotation: [0.5, -0.5, 0.5, -0.5]
radars:
  RADAR_FRONT:
    translation: [3.41, 0.0, 0.50]
    rotation: [1.0, 0.0, 0.0, 0.0]
    doppler: cartesian
stereo_pairs:
  - {left: CAM_FRONT_L, right: CAM_FRONT_R}
"""


def example() -> dict:
    return yaml.safe_load(EXAMPLE)


def test_issue_example_loads_and_round_trips(tmp_path):
    rig = rig_from_dict(example())
    assert rig.camera_names == ["CAM_FRONT_L", "CAM_FRONT_R"]
    assert rig.baseline(rig.stereo_pairs[0]) == pytest.approx(0.5)
    assert rig.stereo_indices().tolist() == [[0, 1]]
    assert rig.cameras["CAM_FRONT_R"].distortion.coeffs[0] == -0.1
    # translation/rotation are ego_from_sensor: the optical axis of the front camera points along ego +x
    assert_allclose(rig.cameras["CAM_FRONT_L"].ego_from_camera[:3, 2], [1, 0, 0], atol=1e-12)
    assert_allclose(rig.cameras["CAM_FRONT_L"].position, [1.70, 0.25, 1.51])
    path = tmp_path / "rig.yaml"
    path.write_text(dump_rig(rig))
    again = load_rig(path)
    assert rig_to_dict(again) == rig_to_dict(rig)
    for name in rig.cameras:
        assert_allclose(again.cameras[name].img_from_ego, rig.cameras[name].img_from_ego, rtol=1e-12, atol=1e-9)


def test_shipped_rigs_are_valid(nuscenes_rig, stereo_rig):
    assert len(nuscenes_rig.cameras) == 6 and len(nuscenes_rig.radars) == 5
    assert len(stereo_rig.stereo_pairs) == 2
    # every stereo pair's right camera is to the image-right of its left camera (positive x in the left camera)
    for pair in stereo_rig.stereo_pairs:
        left, right = stereo_rig.cameras[pair.left], stereo_rig.cameras[pair.right]
        right_in_left = left.camera_from_ego[:3, :3] @ (right.position - left.position)
        assert right_in_left[0] > 0.45


def _mutate(path: list, value) -> dict:
    d = example()
    node = d
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return d


# (mutation, expected fragments of the message: sensor, field, value)
BAD = {
    "non-unit quaternion": (["cameras", "CAM_FRONT_L", "rotation"], [0.5, -0.5, 0.5, -0.3],
                            ["CAM_FRONT_L", "'rotation'", "not a unit quaternion", "norm=0.9"]),
    "zero focal length": (["cameras", "CAM_FRONT_L", "intrinsics"], [[0.0, 0, 816.3], [0, 1266.4, 491.5], [0, 0, 1]],
                          ["CAM_FRONT_L", "'intrinsics'", "non-positive focal length", "fx=0"]),
    "negative focal length": (["cameras", "CAM_FRONT_R", "intrinsics"], [[1266.4, 0, 816.3], [0, -5, 491.5], [0, 0, 1]],
                              ["CAM_FRONT_R", "fy=-5"]),
    "principal point outside": (["cameras", "CAM_FRONT_L", "intrinsics"],
                                [[1266.4, 0, 1700.0], [0, 1266.4, 491.5], [0, 0, 1]],
                                ["CAM_FRONT_L", "principal point is outside", "1700", "1600x900"]),
    "NaN translation": (["cameras", "CAM_FRONT_L", "translation"], [1.7, float("nan"), 1.5],
                        ["CAM_FRONT_L", "'translation'", "NaN or inf"]),
    "inf intrinsics": (["cameras", "CAM_FRONT_R", "intrinsics"], [[float("inf"), 0, 816.3], [0, 1266.4, 491.5], [0, 0, 1]],
                       ["CAM_FRONT_R", "'intrinsics'", "NaN or inf"]),
    "NaN quaternion": (["radars", "RADAR_FRONT", "rotation"], [float("nan"), 0, 0, 0],
                       ["RADAR_FRONT", "'rotation'", "NaN or inf"]),
    "pair names a missing camera": (["stereo_pairs"], [{"left": "CAM_FRONT_L", "right": "CAM_NOPE"}],
                                    ["stereo_pairs[0]", "'right'", "CAM_NOPE", "not in the rig"]),
    "zero baseline": (["cameras", "CAM_FRONT_R", "translation"], [1.70, 0.25, 1.51],
                      ["stereo_pairs[0]", "'baseline'", "below 0.01 m"]),
    "missing required field": (["cameras", "CAM_FRONT_L", "intrinsics"], KeyError,
                               ["CAM_FRONT_L", "'intrinsics'", "required but missing"]),
    "missing width": (["cameras", "CAM_FRONT_R", "width"], KeyError, ["CAM_FRONT_R", "'width'", "required"]),
    "unknown doppler kind": (["radars", "RADAR_FRONT", "doppler"], "polar",
                             ["RADAR_FRONT", "'doppler'", "'polar'", "cartesian", "radial"]),
    "unknown field": (["radars", "RADAR_FRONT", "rotaton"], [1, 0, 0, 0], ["RADAR_FRONT", "'rotaton'", "not a known field"]),
    "non-integer width": (["cameras", "CAM_FRONT_L", "width"], 1600.5, ["CAM_FRONT_L", "'width'", "positive integer"]),
    "bad distortion model": (["cameras", "CAM_FRONT_R", "distortion"], {"model": "kb8", "coeffs": [0, 0, 0, 0]},
                             ["CAM_FRONT_R", "distortion.model", "kb8"]),
    "quaternion of 3 numbers": (["cameras", "CAM_FRONT_L", "rotation"], [0.5, 0.5, 0.5],
                                ["CAM_FRONT_L", "'rotation'", "[w, x, y, z]"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_invalid_rig_messages(case):
    path, value, fragments = BAD[case]
    with pytest.raises(CalibrationError) as err:
        rig_from_dict(_mutate(path, value), source="rig.yaml")
    msg = str(err.value)
    assert msg.startswith("rig.yaml: ")
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"


def test_non_orthonormal_rotation_matrix():
    pose = make_transform(np.eye(3), [0, 0, 0])
    pose[0, 0] = 0.9
    with pytest.raises(CalibrationError, match=r"CAM_X: field 'ego_from_camera rotation' is not orthonormal"):
        Camera("CAM_X", 100, 100, [[50, 0, 50], [0, 50, 50], [0, 0, 1]], pose)
    pose[0, 0] = 1.0 + 2e-4  # within the 1e-3 tolerance of calibration files: accepted, snapped to a rotation
    cam = Camera("CAM_X", 100, 100, [[50, 0, 50], [0, 50, 50], [0, 0, 1]], pose)
    assert_allclose(cam.ego_from_camera[:3, :3], np.eye(3), atol=1e-12)


def test_duplicate_channel_names(tmp_path):
    text = EXAMPLE.replace("  CAM_FRONT_R:\n", "  CAM_FRONT_L:\n", 1)
    p = tmp_path / "dup.yaml"
    p.write_text(text)
    with pytest.raises(CalibrationError, match=r"dup.yaml: CAM_FRONT_L: .*appears twice"):
        load_rig(p)
    d = example()
    d["radars"]["CAM_FRONT_L"] = copy.deepcopy(d["radars"]["RADAR_FRONT"])
    with pytest.raises(CalibrationError, match=r"CAM_FRONT_L: field 'name'.*used by a camera and a radar"):
        rig_from_dict(d)


def test_scaled_camera_projects_consistently():
    cam = rig_from_dict(example()).cameras["CAM_FRONT_L"]
    half = cam.scaled(0.5)
    assert (half.width, half.height) == (800, 450)
    p = np.array([[20.0, 3.0, 0.5, 1.0]])
    uvd_full = (cam.img_from_ego @ p.T).T
    uvd_half = (half.img_from_ego @ p.T).T
    u_full, u_half = uvd_full[0, :2] / uvd_full[0, 2], uvd_half[0, :2] / uvd_half[0, 2]
    # pixel-centre convention: u' = s (u + 0.5) - 0.5
    assert_allclose(u_half, 0.5 * (u_full + 0.5) - 0.5, atol=1e-9)
