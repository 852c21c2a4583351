import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from calibration.transforms import (
    interpolate_pose,
    invert,
    invert_torch,
    make_transform,
    matrix_to_quaternion,
    nearest_rotation,
    project_points,
    quaternion_to_matrix,
    rotate_vectors,
    transform_points,
    transform_points_torch,
    yaw_to_quaternion,
)


def _random_pose(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    return make_transform(q / np.linalg.norm(q), rng.normal(size=3) * 5)


def test_quaternion_golden_values():
    # 90 degrees about z: x -> y, y -> -x (hand-computed).
    r = quaternion_to_matrix([np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)])
    assert_allclose(r, [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    # The forward-looking camera mount of the rig YAML example: camera z (optical axis) -> ego +x,
    # camera x (image right) -> ego -y, camera y (image down) -> ego -z.
    r = quaternion_to_matrix([0.5, -0.5, 0.5, -0.5])
    assert_allclose(r @ [0, 0, 1], [1, 0, 0], atol=1e-12)
    assert_allclose(r @ [1, 0, 0], [0, -1, 0], atol=1e-12)
    assert_allclose(r @ [0, 1, 0], [0, 0, -1], atol=1e-12)


def test_closed_form_equals_pyquaternion():
    from pyquaternion import Quaternion

    rng = np.random.default_rng(5)
    for _ in range(100):
        q = rng.normal(size=4)
        assert_allclose(quaternion_to_matrix(q), Quaternion(q / np.linalg.norm(q)).rotation_matrix, atol=1e-12)


def test_vectorised_quaternions():
    from calibration.transforms import quaternions_to_matrices

    rng = np.random.default_rng(6)
    q = rng.normal(size=(20, 4))
    out = quaternions_to_matrices(q)
    for i in range(20):
        assert_allclose(out[i], quaternion_to_matrix(q[i]), atol=1e-12)


def test_quaternion_matrix_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(50):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        q = q if q[0] >= 0 else -q
        assert_allclose(matrix_to_quaternion(quaternion_to_matrix(q)), q, atol=1e-10)


def test_matrix_to_quaternion_accepts_file_rounding():
    r = quaternion_to_matrix(yaw_to_quaternion(0.3))
    noisy = np.round(r, 6)  # as calibration files store it
    q = matrix_to_quaternion(noisy)
    assert_allclose(q, yaw_to_quaternion(0.3), atol=1e-6)
    assert np.linalg.det(nearest_rotation(noisy)) == pytest.approx(1.0)


def test_invert_and_chain():
    rng = np.random.default_rng(1)
    a_from_b, b_from_c = _random_pose(rng), _random_pose(rng)
    assert_allclose(invert(a_from_b) @ a_from_b, np.eye(4), atol=1e-12)
    pts = rng.normal(size=(20, 3))
    # chain reads right to left
    assert_allclose(transform_points(a_from_b @ b_from_c, pts), transform_points(a_from_b, transform_points(b_from_c, pts)),
                    atol=1e-12)
    # vectors ignore translation
    assert_allclose(rotate_vectors(a_from_b, pts), pts @ a_from_b[:3, :3].T, atol=1e-12)


def test_torch_matches_numpy():
    rng = np.random.default_rng(2)
    poses = np.stack([_random_pose(rng) for _ in range(3)])
    pts = rng.normal(size=(3, 7, 3))
    out = transform_points_torch(torch.from_numpy(poses), torch.from_numpy(pts)).numpy()
    for i in range(3):
        assert_allclose(out[i], transform_points(poses[i], pts[i]), atol=1e-12)
    assert_allclose(invert_torch(torch.from_numpy(poses)).numpy(), np.stack([invert(p) for p in poses]), atol=1e-12)


def test_project_points_hand_computed():
    k = np.array([[1000.0, 0, 800], [0, 1000.0, 450], [0, 0, 1]])
    img_from_cam = np.eye(4)
    img_from_cam[:3, :3] = k
    uvd = project_points(img_from_cam, np.array([[1.0, -0.5, 10.0], [0.0, 0.0, -2.0]]))
    assert_allclose(uvd[0], [900.0, 400.0, 10.0])
    assert np.isnan(uvd[1, 0]) and np.isnan(uvd[1, 1]) and uvd[1, 2] == -2.0


def test_interpolate_pose_midpoint_and_extrapolation():
    a = make_transform(yaw_to_quaternion(0.0), [0, 0, 0])
    b = make_transform(yaw_to_quaternion(np.pi / 2), [2, 4, 0])
    mid = interpolate_pose(a, b, 0.5)
    assert_allclose(mid[:3, 3], [1, 2, 0])
    assert_allclose(mid[:3, :3], quaternion_to_matrix(yaw_to_quaternion(np.pi / 4)), atol=1e-12)
    ext = interpolate_pose(a, b, 1.5)  # constant angular and linear velocity
    assert_allclose(ext[:3, :3], quaternion_to_matrix(yaw_to_quaternion(3 * np.pi / 4)), atol=1e-12)
    assert_allclose(ext[:3, 3], [3, 6, 0])
    # shortest arc across the +-pi seam
    c = make_transform(yaw_to_quaternion(np.radians(170)), [0, 0, 0])
    d = make_transform(yaw_to_quaternion(np.radians(-170)), [0, 0, 0])
    m = interpolate_pose(c, d, 0.5)
    assert_allclose(m[:3, :3], quaternion_to_matrix(yaw_to_quaternion(np.pi)), atol=1e-9)
