import pickle

import numpy as np
import pytest
from numpy.testing import assert_allclose
from pyquaternion import Quaternion

from calibration.io import load_rig, rig_from_kitti, rig_from_mmdet3d_info, rig_from_nuscenes
from calibration.rig import CalibrationError
from calibration.transforms import make_transform, project_points, transform_points, yaw_to_quaternion
from perception.cli.calib import main as calib_main


def test_projection_equals_devkit_view_points(nuscenes_fixture, nuscenes_rig):
    """Our img_from_ego chain == the devkit's box -> ego -> sensor -> view_points chain."""
    from nuscenes.nuscenes import NuScenes
    from nuscenes.utils.data_classes import Box
    from nuscenes.utils.geometry_utils import view_points

    nusc = NuScenes(nuscenes_fixture["version"], str(nuscenes_fixture["root"]), verbose=False)
    sample = nusc.get("sample", nuscenes_fixture["sample_tokens"][1])
    rng = np.random.default_rng(0)
    checked = 0
    for channel in nuscenes_rig.cameras:
        sd = nusc.get("sample_data", sample["data"][channel])
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        pose = nusc.get("ego_pose", sd["ego_pose_token"])
        cam = nuscenes_rig.cameras[channel]
        for _ in range(5):
            # a box in front of this camera, in global coordinates
            ego_pt = cam.position + cam.ego_from_camera[:3, 2] * rng.uniform(5, 40) + rng.normal(size=3)
            global_from_ego = make_transform(pose["rotation"], pose["translation"])
            centre = transform_points(global_from_ego, ego_pt[None])[0]
            box = Box(centre, [1.9, 4.5, 1.6], Quaternion(yaw_to_quaternion(rng.uniform(-3, 3))))
            corners_global = box.corners().T  # (8, 3)
            # devkit chain
            box.translate(-np.array(pose["translation"]))
            box.rotate(Quaternion(pose["rotation"]).inverse)
            box.translate(-np.array(cs["translation"]))
            box.rotate(Quaternion(cs["rotation"]).inverse)
            ref = view_points(box.corners(), np.array(cs["camera_intrinsic"]), normalize=True)[:2].T
            depth = box.corners()[2]
            # ours
            ego_from_global = np.linalg.inv(global_from_ego)
            uvd = project_points(cam.img_from_ego, transform_points(ego_from_global, corners_global))
            front = depth > 0.1
            assert front.any()
            assert_allclose(uvd[front, :2], ref[front], atol=1e-6)
            assert_allclose(uvd[:, 2], depth, atol=1e-9)
            checked += int(front.sum())
    assert checked > 100


def test_convert_from_nuscenes_fixture(nuscenes_fixture, nuscenes_rig, tmp_path, capsys):
    out = tmp_path / "rig.yaml"
    rc = calib_main(["convert", "--from", "nuscenes", "--dataroot", str(nuscenes_fixture["root"]),
                     "--version", nuscenes_fixture["version"], "--sample-token", nuscenes_fixture["sample_tokens"][0],
                     "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    rig = load_rig(out)
    assert rig.camera_names == list(nuscenes_rig.cameras)  # customary nuScenes order
    assert sorted(rig.radars) == sorted(nuscenes_rig.radars) and list(rig.lidars) == ["LIDAR_TOP"]
    for name in nuscenes_rig.cameras:
        a, b = rig.cameras[name], nuscenes_rig.cameras[name]
        assert (a.width, a.height) == (b.width, b.height)
        assert_allclose(a.img_from_ego, b.img_from_ego, atol=1e-6)
    for name in nuscenes_rig.radars:
        assert_allclose(rig.radars[name].ego_from_radar, nuscenes_rig.radars[name].ego_from_radar, atol=1e-9)
        assert rig.radars[name].doppler == "cartesian"
    # a wrong token is a clear error, not a traceback
    rc = calib_main(["convert", "--from", "nuscenes", "--dataroot", str(nuscenes_fixture["root"]),
                     "--version", nuscenes_fixture["version"], "--sample-token", "nope", "--out", str(out)])
    assert rc == 1
    assert "--sample-token" in capsys.readouterr().err


def test_nuscenes_loader_uses_image_size_fallback(nuscenes_fixture):
    from nuscenes.nuscenes import NuScenes

    nusc = NuScenes(nuscenes_fixture["version"], str(nuscenes_fixture["root"]), verbose=False)
    token = nuscenes_fixture["sample_tokens"][0]
    for sd in nusc.sample_data:
        sd["width"] = 0  # a dataset that does not record image sizes
    with pytest.raises(CalibrationError, match="--image-size"):
        rig_from_nuscenes(nusc, token)
    rig = rig_from_nuscenes(nusc, token, image_size=(1600, 900))
    assert rig.cameras["CAM_FRONT"].width == 1600


KITTI = """P0: 1000.0 0.0 960.0 0.0 0.0 1000.0 600.0 0.0 0.0 0.0 1.0 0.0
P2: 1000.0 0.0 960.0 {p03} 0.0 1000.0 600.0 0.0 0.0 0.0 1.0 0.0
R0_rect: 1.0 0.0 0.0 0.0 1.0 0.0 0.0 0.0 1.0
Tr_velo_to_cam: 0.0 -1.0 0.0 0.1 0.0 0.0 -1.0 0.2 1.0 0.0 0.0 -0.5
Tr_imu_to_velo:
"""


@pytest.mark.parametrize("p03", [0.0, -60.0])
def test_kitti_calib_projects_like_p2_chain(tmp_path, p03):
    path = tmp_path / "calib.txt"
    path.write_text(KITTI.format(p03=p03))
    rig = rig_from_kitti(path, (1920, 1200))
    cam = rig.cameras["CAM_FRONT"]
    assert rig.radars["RADAR_FRONT"].doppler == "radial"
    assert_allclose(rig.radars["RADAR_FRONT"].ego_from_radar, np.eye(4))
    p2 = np.array(KITTI.format(p03=p03).splitlines()[1].split()[1:], dtype=float).reshape(3, 4)
    tr = np.vstack([np.array(KITTI.splitlines()[3].split()[1:], dtype=float).reshape(3, 4), [0, 0, 0, 1]])
    pts = np.array([[10.0, 1.0, 0.5], [25.0, -4.0, 1.0], [6.0, 0.0, -0.8]])  # radar frame = ego
    hom = (p2 @ tr @ np.c_[pts, np.ones(3)].T).T
    ref = hom[:, :2] / hom[:, 2:]
    assert_allclose(project_points(cam.img_from_ego, pts)[:, :2], ref, atol=1e-9)
    # the camera sits 0.5 m ahead of the radar (Tr translation), shifted by P2's offset along image x
    assert_allclose(cam.position, [0.5, 0.1 + p03 / 1000.0, 0.2], atol=1e-9)


def test_kitti_calib_errors(tmp_path):
    path = tmp_path / "calib.txt"
    path.write_text("P2: 1 2 3\n")
    with pytest.raises(CalibrationError, match=r"calib.txt: CAM_FRONT: field 'P2' must have 12 numbers"):
        rig_from_kitti(path, (100, 100))
    path.write_text(KITTI.format(p03=0).replace("Tr_velo_to_cam", "Tr_nope"))
    with pytest.raises(CalibrationError, match="'Tr_velo_to_cam' is missing"):
        rig_from_kitti(path, (100, 100))


def test_mmdet3d_info_rig(tmp_path, nuscenes_rig):
    images = {}
    for name, cam in nuscenes_rig.cameras.items():
        images[name] = {"img_path": f"{name}.jpg", "cam2img": cam.intrinsics.tolist(),
                        "cam2ego": cam.ego_from_camera.tolist()}
    info = {"metainfo": {"version": "fixture"}, "data_list": [
        {"token": "abc", "images": images,
         "lidar_points": {"lidar2ego": nuscenes_rig.lidars["LIDAR_TOP"].ego_from_lidar.tolist()}}]}
    path = tmp_path / "info.pkl"
    path.write_bytes(pickle.dumps(info))
    with pytest.raises(CalibrationError, match="--image-size"):
        rig_from_mmdet3d_info(path)  # no image files beside it
    rig = rig_from_mmdet3d_info(path, image_size=(1600, 900))
    for name, cam in nuscenes_rig.cameras.items():
        assert_allclose(rig.cameras[name].img_from_ego, cam.img_from_ego, atol=1e-9)
    with pytest.raises(CalibrationError, match="index.*out of range"):
        rig_from_mmdet3d_info(path, index=3, image_size=(1600, 900))
