"""Geometry checked against the real world: the nuScenes demo keyframe and View-of-Delft frames
(from ../shared/realdata; skipped with a reason when absent)."""
import json

import numpy as np
import pytest
from numpy.testing import assert_allclose

from calibration.io import load_rig, read_mmdet3d_info, rig_from_kitti, save_rig
from calibration.sync import PoseStream, camera_img_from_ego
from calibration.transforms import make_transform, project_points, quaternion_to_matrix, transform_points
from perception.data.io import image_size, read_vod_radar

pytestmark = pytest.mark.realdata


def box_corners(centre, size_lwh, rotation) -> np.ndarray:
    """(8, 3) corners of a box with gravity centre ``centre``, dims (l, w, h) along its (x, y, z), rotated."""
    l, w, h = size_lwh
    x = np.array([1, 1, 1, 1, -1, -1, -1, -1]) * l / 2
    y = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * w / 2
    z = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * h / 2
    return np.c_[x, y, z] @ np.asarray(rotation).T + np.asarray(centre)


def yaw_matrix(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


@pytest.fixture(scope="module")
def demo(realdata, tmp_path_factory):
    pkl = next((realdata / "nuscenes_demo").glob("*.pkl"))
    entry = read_mmdet3d_info(pkl)["data_list"][0]
    rig_path = tmp_path_factory.mktemp("demo") / "rig.yaml"
    from calibration.io import rig_from_mmdet3d_info

    save_rig(rig_from_mmdet3d_info(pkl), rig_path)  # image sizes read from the JPEGs beside the pkl
    return entry, load_rig(rig_path)  # through the YAML, as a user would


def test_demo_gt_boxes_project_like_the_static_mmdet3d_chain(demo):
    entry, rig = demo
    lidar2ego = np.array(entry["lidar_points"]["lidar2ego"])
    assert_allclose(rig.lidars["LIDAR_TOP"].ego_from_lidar, lidar2ego, atol=1e-6)
    visible = {}
    for channel, img in entry["images"].items():
        cam = rig.cameras[channel]
        assert (cam.width, cam.height) == (1600, 900)
        ref_m = np.eye(4)
        ref_m[:3, :3] = np.array(img["cam2img"])
        ref_m = ref_m @ np.linalg.inv(np.array(img["cam2ego"])) @ lidar2ego
        n = 0
        for inst in entry["instances"]:
            x, y, z, l, w, h, yaw = inst["bbox_3d"]
            corners_lidar = box_corners([x, y, z], [l, w, h], yaw_matrix(yaw))
            ours = project_points(cam.img_from_ego, transform_points(rig.lidars["LIDAR_TOP"].ego_from_lidar,
                                                                     corners_lidar))
            ref = project_points(ref_m, corners_lidar)
            front = ref[:, 2] > 0.5
            assert_allclose(ours[:, 2], ref[:, 2], atol=1e-3)
            if front.all():
                err = np.abs(ours[:, :2] - ref[:, :2]).max()
                assert err < 0.5, f"{channel}: {err:.3f} px"
                inside = (ref[:, 0] > 0) & (ref[:, 0] < 1600) & (ref[:, 1] > 0) & (ref[:, 1] < 900)
                n += int(inside.any())
        visible[channel] = n
    assert sum(visible.values()) >= 40, visible  # the boxes really fall into the images


def test_demo_lidar2cam_contains_the_ego_motion(demo, capsys):
    """mmdet3d's lidar2cam includes the ego's motion between the lidar time and each camera's capture time.
    The implied ego displacement is speed x time offset, one speed for all six cameras; and our sync
    (calibration/sync.py) with that ego motion reproduces lidar2cam where the static chain does not."""
    entry, rig = demo
    lidar2ego = np.array(entry["lidar_points"]["lidar2ego"])
    t_lidar = round(entry["timestamp"] * 1e6)
    rows = []
    for channel, img in entry["images"].items():
        ego_tc_from_ego_tl = np.array(img["cam2ego"]) @ np.array(img["lidar2cam"]) @ np.linalg.inv(lidar2ego)
        dt = round(img["timestamp"] * 1e6) - t_lidar
        rows.append((channel, dt, ego_tc_from_ego_tl))
    shifts = np.array([np.linalg.norm(m[:3, 3]) for _, _, m in rows])
    dts = np.array([dt for _, dt, _ in rows]) * 1e-6
    with capsys.disabled():
        print("\n[nuScenes demo keyframe] ego motion inside lidar2cam: "
              + ", ".join(f"{c} {dt / 1000:+.1f} ms -> {s:.3f} m" for (c, dt, _), s in zip(rows, shifts)))
    assert 0.3 < shifts.max() < 0.45  # up to ~0.4 m: a visible error if ignored
    far = np.abs(dts) > 0.005
    speeds = shifts[far] / np.abs(dts[far])
    assert speeds.std() / speeds.mean() < 0.02  # one ego speed explains every camera (~9.2 m/s)
    assert 8.5 < speeds.mean() < 10.0
    # Rebuild an ego-pose stream from a constant velocity along ego x (the fitted speed) and check that
    # sync gives lidar2cam's projection of the GT boxes.
    v = speeds.mean()
    ts = np.array([t_lidar - 100_000, t_lidar, t_lidar + 100_000])
    poses = PoseStream(ts, np.stack([make_transform(np.eye(3), [v * (t - t_lidar) * 1e-6, 0, 0]) for t in ts]))
    corners = np.concatenate([box_corners(i["bbox_3d"][:3], i["bbox_3d"][3:6], yaw_matrix(i["bbox_3d"][6]))
                              for i in entry["instances"]])
    corners_ego = transform_points(lidar2ego, corners)
    worst_sync, worst_static = 0.0, 0.0
    for channel, dt, _ in rows:
        img = entry["images"][channel]
        ref_m = np.eye(4)
        ref_m[:3, :3] = np.array(img["cam2img"])
        ref = project_points(ref_m @ np.array(img["lidar2cam"]), corners)
        synced, _ = camera_img_from_ego(rig.cameras[channel], t_lidar, t_lidar + dt, poses)
        ok = (ref[:, 2] > 2.0) & (np.abs(ref[:, 0] - 800) < 800) & (np.abs(ref[:, 1] - 450) < 450)
        if not ok.any():
            continue
        worst_sync = max(worst_sync, np.abs(project_points(synced, corners_ego)[ok, :2] - ref[ok, :2]).max())
        static = project_points(rig.cameras[channel].img_from_ego, corners_ego)
        worst_static = max(worst_static, np.abs(static[ok, :2] - ref[ok, :2]).max())
    with capsys.disabled():
        print(f"[nuScenes demo keyframe] GT corners vs lidar2cam: synced {worst_sync:.2f} px, "
              f"static chain {worst_static:.1f} px")
    assert worst_sync < 3.0  # residual: the real motion is not exactly constant-velocity straight
    assert worst_static > 5 * worst_sync


VOD_FRAMES = ["00549", "01047", "01201"]


def vod_boxes_in_radar_frame(label_path):
    """View-of-Delft labels are written in a frame the JSON calls LIDAR; measured here, a 180 degree
    rotation about x (negating y and z) puts them on the radar returns."""
    flip = np.diag([1.0, -1.0, -1.0])
    boxes = []
    for obj in json.loads(label_path.read_text()):
        g = obj["geometry"]
        c = np.array([g["center"][k] for k in "xyz"])
        q = g["quaternion"]
        rot = quaternion_to_matrix([q["w"], q["x"], q["y"], q["z"]])
        size = [g["size"]["length"], g["size"]["width"], g["size"]["height"]]
        boxes.append((obj["className"], flip @ c, flip @ rot, size))
    return boxes


@pytest.mark.parametrize("frame", VOD_FRAMES)
def test_vod_radar_returns_land_on_labelled_objects(realdata, tmp_path, frame, capsys):
    root = realdata / "vod" / "radar" / "training"
    rig = rig_from_kitti(root / "calib" / f"{frame}.txt", image_size(root / "image_2" / f"{frame}.jpg"))
    cam = rig.cameras["CAM_FRONT"]
    cloud = read_vod_radar(root / "velodyne" / f"{frame}.bin")
    xyz = cloud.xyz.astype(np.float64)
    margin = 0.3
    hits, in_3d, hits_as_written = 0, 0, 0
    for _, centre, rot, size in vod_boxes_in_radar_frame(root / "label_2" / f"{frame}.json"):
        local = (xyz - centre) @ rot  # points in the box frame
        inside = np.all(np.abs(local) <= np.array(size) / 2 + margin, axis=1)
        if not inside.any():
            continue
        corners = box_corners(centre, np.array(size) + 2 * margin, rot)  # the same box the 3D test used
        fp = project_points(cam.img_from_ego, corners)
        if np.any(fp[:, 2] <= 0):
            continue
        uv = project_points(cam.img_from_ego, xyz[inside])
        # The footprint test alone holds for any projection; requiring the returns inside the image too
        # checks that the calibrated camera really looks at these labelled objects.
        in_fp = ((uv[:, 0] >= fp[:, 0].min()) & (uv[:, 0] <= fp[:, 0].max())
                 & (uv[:, 1] >= fp[:, 1].min()) & (uv[:, 1] <= fp[:, 1].max())
                 & (uv[:, 0] >= 0) & (uv[:, 0] < cam.width) & (uv[:, 1] >= 0) & (uv[:, 1] < cam.height))
        hits += int(in_fp.sum())
        in_3d += int(inside.sum())
    flip = np.diag([1.0, -1.0, -1.0])  # the frame as written, for contrast
    for _, centre, rot, size in vod_boxes_in_radar_frame(root / "label_2" / f"{frame}.json"):
        local = (xyz - flip @ centre) @ (flip @ rot)
        hits_as_written += int(np.all(np.abs(local) <= np.array(size) / 2 + margin, axis=1).sum())
    with capsys.disabled():
        print(f"\n[VoD {frame}] {in_3d} radar returns inside labelled boxes (0.3 m margin), {hits} of them inside "
              f"the boxes' image footprints and the image "
              f"({hits_as_written} with the label frame as written)")
    assert hits >= 60
    assert hits_as_written < hits / 2
