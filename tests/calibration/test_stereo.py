import numpy as np
import pytest
from numpy.testing import assert_allclose

from calibration.rig import Camera, Rig, StereoPair
from calibration.stereo import depth_to_disparity, disparity_to_depth, rectify
from calibration.transforms import make_transform, project_points, quaternion_to_matrix, transform_points, yaw_to_quaternion

FORWARD = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float)  # ego_from_camera rotation, looking along ego +x


def toed_in_rig() -> Rig:
    """A front pair that is not parallel: each camera yawed 2 degrees inwards, right one 3 cm lower, different f."""
    def cam(name, y, yaw_deg, z, f):
        rot = quaternion_to_matrix(yaw_to_quaternion(np.radians(yaw_deg))) @ FORWARD
        return Camera(name, 1280, 720, [[f, 0, 640], [0, f, 360], [0, 0, 1]], make_transform(rot, [1.5, y, z]))
    left, right = cam("L", 0.3, -2.0, 1.5, 1000.0), cam("R", -0.3, 2.0, 1.47, 1010.0)
    return Rig("toe_in", {"L": left, "R": right}, {}, (StereoPair("L", "R"),))


@pytest.mark.parametrize("which", ["toe_in", "stereo_radar_front", "stereo_radar_back"])
def test_rectified_rows_align_and_disparity_gives_depth(which, stereo_rig):
    if which == "toe_in":
        rig = toed_in_rig()
        pair = rig.stereo_pairs[0]
    else:
        rig = stereo_rig
        pair = rig.stereo_pairs[0 if which.endswith("front") else 1]
    rect = rectify(rig, pair)
    left, right = rig.cameras[pair.left], rig.cameras[pair.right]
    assert rect.baseline == pytest.approx(rig.baseline(pair))
    rng = np.random.default_rng(0)
    # points in front of the rectified pair at 4-80 m
    depth = rng.uniform(4, 80, 300)
    pts_rect = np.c_[rng.uniform(-0.4, 0.4, 300) * depth, rng.uniform(-0.2, 0.2, 300) * depth, depth]
    pts_ego = transform_points(rect.ego_from_rect_left, pts_rect)
    # rectified pixels via the homography applied to each camera's original pixels
    uv = {}
    for cam in (left, right):
        orig = project_points(cam.img_from_ego, pts_ego)
        hom = np.c_[orig[:, :2], np.ones(len(orig))] @ rect.homography(cam).T
        uv[cam.name] = hom[:, :2] / hom[:, 2:]
    assert_allclose(uv[left.name][:, 1], uv[right.name][:, 1], atol=1e-6)  # same row
    disparity = uv[left.name][:, 0] - uv[right.name][:, 0]
    assert np.all(disparity > 0)
    assert_allclose(disparity_to_depth(disparity, rect.focal, rect.baseline), depth, rtol=1e-6)
    assert_allclose(depth_to_disparity(depth, rect.focal, rect.baseline), disparity, rtol=1e-6)


def test_source_coordinates_invert_the_homography():
    rig = toed_in_rig()
    rect = rectify(rig, rig.stereo_pairs[0])
    src = rect.source_coordinates(rig.cameras["R"])
    assert src.shape == (720, 1280, 2)
    v, u = 100, 900
    hom = rect.homography(rig.cameras["R"]) @ np.array([src[v, u, 0], src[v, u, 1], 1.0])
    assert_allclose(hom[:2] / hom[2], [u, v], atol=1e-3)


def test_disparity_edge_cases():
    assert np.isinf(disparity_to_depth(np.array([0.0]), 1000, 0.5))[0]
    with pytest.raises(ValueError, match="depth must be > 0"):
        depth_to_disparity(np.array([0.0, 5.0]), 1000, 0.5)
