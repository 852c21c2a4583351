"""Lidar depth targets: golden cells on a hand-built camera, the binning, the BCE loss, and targets that move with
every augmentation (points of a GT box stay inside that box's projected extent and inside the box in 3D)."""
import math

import numpy as np
import pytest
import torch

from perception.data.nuscenes import NuScenesFrames
from perception.data.synthetic.generate import VERSION
from perception.data.transforms import ImageAug, preprocess_image
from perception.eval.depth import points_in_boxes_mask
from perception.model.lift import DepthBins
from perception.train.depth_targets import depth_bin_targets, depth_loss, depth_targets, expected_depth
from perception.visualize import box_corners
from hand_camera import FEAT_HW, IMAGE_HW, forward_camera
from small_model import small_config

def test_nearest_return_per_cell_on_a_hand_built_camera():
    m = torch.from_numpy(np.stack([forward_camera(), forward_camera()]))[None]  # (1, 2, 4, 4)
    pts = torch.tensor([[[10, 0, 0], [5, 0, 0], [20, 2, 0], [-5, 0, 0], [10, 50, 0], [3, 0, 0]]], dtype=torch.float32)
    valid = torch.tensor([[True, True, True, True, True, False]])  # the 3 m return is padding
    cam_valid = torch.tensor([[True, False]])
    t = depth_targets(pts, valid, m, cam_valid, IMAGE_HW, FEAT_HW)
    assert t.shape == (1, 2, 4, 11)
    # (10, 0, 0) and (5, 0, 0) hit pixel (87.5, 31.5): cell (row 2, col 5), the nearest (5 m) wins;
    # (20, 2, 0) hits u = 87.5 - 100 * 2 / 20 = 77.5: cell (2, 4); behind / outside / padding: nothing
    expected = torch.zeros(4, 11)
    expected[2, 5], expected[2, 4] = 5.0, 20.0
    torch.testing.assert_close(t[0, 0], expected)
    assert not t[0, 1].any()  # masked camera
    assert not depth_targets(pts[:, :0], valid[:, :0], m, cam_valid, IMAGE_HW, FEAT_HW).any()


def test_binning_and_the_bce_loss_golden():
    bins = DepthBins(1.0, 17.0, 16)  # 1 m bins
    depth = torch.zeros(1, 1, 4, 11)
    depth[0, 0, 2, 5], depth[0, 0, 2, 4], depth[0, 0, 0, 0] = 5.0, 20.0, 0.5
    one_hot, mask = depth_bin_targets(depth, bins)
    assert mask.sum() == 1 and mask[0, 0, 2, 5]  # 20 m and 0.5 m are outside [1, 17)
    assert one_hot[0, 0, :, 2, 5].argmax() == 4 and one_hot.sum() == 1  # 5 m is in [5, 6): bin 4
    prob = torch.full((1, 1, 16, 4, 11), 1 / 16)
    expected = -math.log(1 / 16) - 15 * math.log(15 / 16)  # BCE summed over the bins, one cell
    assert depth_loss(prob, depth, bins).item() == pytest.approx(expected, rel=1e-5)
    peaked = torch.full((1, 1, 16, 4, 11), 1e-3)
    peaked[:, :, 4] = 1 - 15e-3
    assert depth_loss(peaked, depth, bins) < 0.1 * depth_loss(prob, depth, bins)
    assert depth_loss(prob, torch.zeros_like(depth), bins).item() == 0.0
    assert expected_depth(peaked[0, 0], bins)[2, 5].item() == pytest.approx(
        float((peaked[0, 0, :, 2, 5] * bins.centres()).sum()))


def test_rotation_augmentation_keeps_img_from_ego_on_the_image():
    """A bright dot drawn where a 3D point projects is found where the rotated/scaled/cropped/flipped
    img_from_ego projects the point."""
    raw_hw = (450, 800)
    k = np.array([[400.0, 0, 399.5], [0, 400.0, 224.5], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3] = k @ np.array([[0, -1, 0], [0, 0, -1], [1, 0, 0]])
    p = np.array([10.0, 1.5, -0.4, 1.0])
    u, v, d = (m @ p)[:3] / (m @ p)[2] * [1, 1, (m @ p)[2]]
    img = np.zeros(raw_hw + (3,), np.float32)
    yy, xx = np.mgrid[:raw_hw[0], :raw_hw[1]]
    img[..., 0] = np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * 12.0 ** 2))  # a blob centred on the projection
    for aug in (ImageAug(rotate=7.0), ImageAug(1.05, 10, 30, True, -5.4)):
        out, mat = preprocess_image(img, m, IMAGE_HW, aug)
        q = mat @ p
        uu, vv = q[0] / q[2], q[1] / q[2]
        wgt = out[..., 0]
        oy, ox = np.mgrid[:IMAGE_HW[0], :IMAGE_HW[1]]
        cx, cy = (wgt * ox).sum() / wgt.sum(), (wgt * oy).sum() / wgt.sum()  # the blob's centroid
        assert abs(cx - uu) < 0.5 and abs(cy - vv) < 0.5, (aug, cx, uu, cy, vv)


@pytest.fixture(scope="module")
def augmented_frames(synth_root):
    cfg = small_config("data.augment.image_rotate_deg=5.4", "data.augment.bev_rotate_deg=30",
                       "data.dropout.camera_one=0", "data.dropout.camera_all=0")
    train = NuScenesFrames(cfg, synth_root, VERSION, "synth_train", train=True, seed=4)
    plain = NuScenesFrames(cfg, synth_root, VERSION, "synth_train")
    return [(train[i], plain[i]) for i in (0, 7)]


def test_targets_move_with_the_augmentation(augmented_frames):
    checked = 0
    for aug, plain in augmented_frames:
        assert len(aug.lidar_points) == len(plain.lidar_points) > 1000
        assert not np.allclose(aug.lidar_points, plain.lidar_points)  # the BEV augmentation moved them
        for box_a, box_p in zip(aug.gt_boxes, plain.gt_boxes):
            # the same returns are inside the box in 3D before and after (lidar moved with the boxes)
            inside_p = points_in_boxes_mask(plain.lidar_points, box_p[None])
            inside_a = points_in_boxes_mask(aug.lidar_points, box_a[None])
            assert abs(int(inside_a.sum()) - int(inside_p.sum())) <= max(2, 0.02 * inside_p.sum())
            if inside_a.sum() < 5:
                continue
            corners = box_corners(box_a[None])[0]
            for k in range(aug.num_cameras):
                mk = aug.img_from_ego[k].astype(np.float64)
                hom_c = corners @ mk[:3, :3].T + mk[:3, 3]
                hom_p = aug.lidar_points[inside_a].astype(np.float64) @ mk[:3, :3].T + mk[:3, 3]
                if (hom_c[:, 2] < 1.0).any():
                    continue
                uc, vc = hom_c[:, 0] / hom_c[:, 2], hom_c[:, 1] / hom_c[:, 2]
                up, vp = hom_p[:, 0] / hom_p[:, 2], hom_p[:, 1] / hom_p[:, 2]
                h, w = aug.images.shape[1:3]
                on_image = (up >= 0) & (up < w) & (vp >= 0) & (vp < h)
                if on_image.sum() < 3:
                    continue
                # points of the box project inside the box's projected 2D extent (0.5 px for rounding)
                assert (up >= uc.min() - 0.5).all() and (up <= uc.max() + 0.5).all()
                assert (vp >= vc.min() - 0.5).all() and (vp <= vc.max() + 0.5).all()
                checked += 1
    assert checked >= 3
