"""perception.coverage: how many cameras see each lift voxel, against model.camera.cameras_per_voxel."""
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from calibration.io import load_rig, rig_from_mmdet3d_info
from perception.config import ConfigError, load_config
from perception.coverage import CoverageCheck, cameras_seeing, rig_coverage, voxel_centres
from perception.data.transforms import ImageAug, input_affine, preprocess_image
from perception.model.geometry import pixel_to_grid, project
from perception.model.lift import BevGridPoints

REPO = Path(__file__).resolve().parents[2]


def _config(name: str, *overrides: str):
    return load_config(REPO / "configs" / f"{name}.yaml", list(overrides))


def test_voxel_centres_and_counts_match_the_lift():
    """The numpy voxel centres are the lift's BevGridPoints, and the numpy count equals the lift's own torch
    visibility test (inside the image, depth above half the first bin's edge) on the nuScenes-like ring."""
    cfg = _config("synthetic_tiny")
    g = cfg.data.grid
    grid = BevGridPoints(g.x_range, g.y_range, g.z_range, g.bev_shape, cfg.model.camera.heights)
    np.testing.assert_array_equal(voxel_centres(cfg), grid.points.numpy())

    rig = load_rig(REPO / "configs" / "rigs" / "nuscenes.yaml")
    mats = np.stack([input_affine((c.height, c.width), cfg.data.image_size) @ c.img_from_ego
                     for c in rig.cameras.values()]).astype(np.float32)
    u, v, d = project(grid.points.view(1, 1, -1, 3), torch.from_numpy(mats)[None])
    inside = (pixel_to_grid(u, v, cfg.data.image_size[1], cfg.data.image_size[0]).abs() <= 1).all(-1)
    torch_count = (inside & (d > cfg.model.camera.depth_range[0] * 0.5)).sum(1)[0].numpy()
    seen = cameras_seeing(grid.points.numpy(), mats, cfg.data.image_size, cfg.model.camera.depth_range[0])
    np.testing.assert_array_equal(seen, torch_count)
    valid = np.ones(len(mats), bool)
    valid[0] = False
    assert cameras_seeing(grid.points.numpy(), mats, cfg.data.image_size, cfg.model.camera.depth_range[0],
                          valid).sum() < seen.sum()


def test_input_affine_is_the_preprocessing_matrix():
    k = np.eye(4)
    k[:3, :3] = [[1260.0, 0, 800.0], [0, 1260.0, 450.0], [0, 0, 1]]
    for aug in (ImageAug(), ImageAug(1.05, 12, 300, True), ImageAug(0.94, -5, None, False)):
        _, m = preprocess_image(np.zeros((900, 1600, 3), np.uint8), k, (128, 352), aug)
        np.testing.assert_allclose(input_affine((900, 1600), (128, 352), aug) @ k, m)


@pytest.mark.parametrize("config, rig, k", [("synthetic_tiny", "nuscenes", 2),
                                            ("nuscenes_r18_256x704", "nuscenes", 2),
                                            ("synthetic_tiny_stereo", "stereo_radar", 3)])
def test_shipped_configs_sample_every_camera_their_rig_needs(config, rig, k):
    """cameras_per_voxel of each shipped config is exact for its rig (no voxel seen by more cameras), and one
    camera fewer would not be: the setting is as small as it can be."""

    cfg = _config(config)
    assert cfg.model.camera.cameras_per_voxel == k
    cov = rig_coverage(cfg, load_rig(REPO / "configs" / "rigs" / f"{rig}.yaml"))
    assert cov.max_overlap == k and cov.voxels_over == 0
    assert rig_coverage(_config(config, f"model.camera.cameras_per_voxel={k - 1}"),
                        load_rig(REPO / "configs" / "rigs" / f"{rig}.yaml")).voxels_over > 0


def test_real_nuscenes_rig_overlaps_pairwise(realdata):
    """The real keyframe's six cameras (calibrated_sensor of a nuScenes log) at the R18 input size: no voxel is
    seen by more than 2 cameras, so cameras_per_voxel = 2 is exact on nuScenes."""
    rig = rig_from_mmdet3d_info(next((realdata / "nuscenes_demo").glob("*.pkl")))
    cov = rig_coverage(_config("nuscenes_r18_256x704"), rig)
    assert len(rig.cameras) == 6
    assert cov.max_overlap == 2 and cov.voxels_over == 0
    assert cov.counts[2] > 0.05 * sum(cov.counts)


def test_coverage_check_warns_once_per_camera_set(caplog, stereo_rig):
    cfg = _config("synthetic_tiny")  # cameras_per_voxel 2; the stereo rig needs 3
    check = CoverageCheck(cfg)
    mats = np.stack([input_affine((c.height, c.width), cfg.data.image_size) @ c.img_from_ego
                     for c in stereo_rig.cameras.values()])
    names = tuple(stereo_rig.cameras)
    with caplog.at_level(logging.WARNING, logger="perception.coverage"):
        cov = check(names, mats)
        assert check(names, mats) is None  # the same cameras: checked once
    assert cov.voxels_over > 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "cameras_per_voxel >= 3" in warnings[0] and "perception-export --cameras-per-voxel 3" in warnings[0]
    assert CoverageCheck(_config("synthetic_tiny_stereo"))(names, mats).voxels_over == 0


def test_cameras_per_voxel_must_be_a_non_negative_integer():
    with pytest.raises(ConfigError, match="cameras_per_voxel"):
        _config("synthetic_tiny", "model.camera.cameras_per_voxel=-1")


def test_coverage_check_does_not_count_masked_cameras(caplog, nuscenes_rig):
    """A 1-camera source through a 6-camera model: the 5 missing cameras are masked with an identity matrix (as
    the replay's frame builder does). Counted, those identities 'see' thousands of voxels (the bug: "seen by 6");
    with camera_valid they see nothing and no warning is given."""
    cfg = _config("synthetic_tiny")  # cameras_per_voxel 2
    front = input_affine((900, 1600), cfg.data.image_size) @ nuscenes_rig.cameras["CAM_FRONT"].img_from_ego
    mats = np.stack([front] + [np.eye(4)] * 5).astype(np.float32)
    valid = np.array([True] + [False] * 5)
    names = tuple(nuscenes_rig.cameras)
    with caplog.at_level(logging.WARNING, logger="perception.coverage"):
        counted = CoverageCheck(cfg)(names, mats)  # the old call: every camera counted
        assert counted is not None and counted.max_overlap > 2 and counted.voxels_over > 0
        caplog.clear()
        check = CoverageCheck(cfg)
        assert check(names, mats, valid) is None  # one valid camera cannot exceed 2
        assert not [r for r in caplog.records if r.levelno == logging.WARNING]
        three = np.array([True, True, True, False, False, False])
        mats3 = np.stack([input_affine((900, 1600), cfg.data.image_size) @ c.img_from_ego
                          for c in list(nuscenes_rig.cameras.values())[:3]] + [np.eye(4)] * 3).astype(np.float32)
        cov = check(names, mats3, three)
    assert cov is not None and cov.max_overlap <= 2 and cov.voxels_over == 0
