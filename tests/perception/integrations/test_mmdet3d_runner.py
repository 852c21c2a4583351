"""The registered detector and dataset inside mmengine's Runner (CPU): the shipped config builds, one training
step updates the weights, one test pass writes ``Det3DDataSample`` predictions equal to the network's own decoded
output, and the loss through mmdet3d's data structures equals the project loop's loss on the same frames."""
from __future__ import annotations

import copy
import pickle
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mmdet3d", reason="mmdet3d lives in .venv-mmdet3d: run `make test-mmdet3d`")

import torch
from mmdet3d.structures import LiDARInstance3DBoxes
from mmengine.config import Config
from mmengine.runner import Runner
from small_model import SMALL_OVERRIDES

from calibration.transforms import invert
from perception.data.batch import PillarSpec
from perception.data.loader import collate_frames
from perception.data.nuscenes import NuScenesFrames
from perception.integrations.mmdet3d.boxes import to_mmdet3d, transform_boxes
from perception.integrations.mmdet3d.dataset import (
    FusionInfoDataset,
    collate_fusion_frames,
)
from perception.integrations.mmdet3d.detector import FusionDetector
from perception.model.decode import BevGrid
from perception.model.network import INPUT_NAMES
from perception.train.losses import detection_losses
from perception.train.targets import build_targets

REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "configs" / "mmdet3d" / "fusion_tiny_nuscenes.py"
PROJECT = {"config": str(REPO / "configs" / "synthetic_tiny.yaml"), "overrides": list(SMALL_OVERRIDES)}
DEMO_PKL = "n015-2018-07-24-11-22-45+0800.pkl"


def _runner_config(work: Path, train_ann: Path, test_ann: Path, data_root: Path, data_prefix: dict | None) -> Config:
    """The shipped config with the small model, tiny data and one iteration (what a user edits the same way)."""
    cfg = Config.fromfile(str(CONFIG))
    cfg.model.update(PROJECT)
    for key, ann in (("train_dataloader", train_ann), ("test_dataloader", test_ann)):
        loader = cfg[key]
        loader.update(batch_size=2, num_workers=0, persistent_workers=False)
        loader.collate_fn.update(PROJECT)
        loader.dataset.update(PROJECT, ann_file=str(ann), data_root=str(data_root), data_prefix=data_prefix)
    cfg.train_cfg.max_iters = 1
    cfg.default_hooks.checkpoint.interval = 1
    cfg.test_evaluator.out_file_path = str(work / "predictions.pkl")
    cfg.work_dir = str(work)
    return cfg


def _train_and_test(cfg: Config) -> tuple[Runner, float, list[dict]]:
    runner = Runner.from_cfg(cfg)
    before = {k: v.detach().clone() for k, v in runner.model.state_dict().items() if v.dtype.is_floating_point}
    runner.train()
    after = runner.model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    weights = [k for k in before if k.endswith(".weight")]
    assert len([k for k in changed if k.endswith(".weight")]) > 0.9 * len(weights), "the optimiser step moved too few"
    loss = runner.message_hub.get_scalar("train/loss").current()
    assert np.isfinite(loss) and loss > 0
    assert any(Path(cfg.work_dir).glob("iter_1.pth")), "mmengine's checkpoint of the step is missing"
    runner.test()
    with open(cfg.test_evaluator.out_file_path, "rb") as f:
        return runner, loss, pickle.load(f)


def test_shipped_config_builds_the_registered_classes():
    cfg = Config.fromfile(str(CONFIG))
    assert cfg.model.type is FusionDetector
    assert cfg.train_dataloader.dataset.type is FusionInfoDataset
    assert cfg.train_dataloader.collate_fn.type is collate_fusion_frames
    assert cfg.model.config == cfg.train_dataloader.dataset.config == cfg.test_dataloader.collate_fn.config


def test_runner_train_step_and_test_step_synthetic(tmp_path, synth_infos):
    cfg = _runner_config(tmp_path / "work", synth_infos["synth_train"], synth_infos["synth_val"],
                         synth_infos["root"], synth_infos["data_prefix"])
    runner, _, preds = _train_and_test(cfg)
    assert len(preds) == 2
    # the dumped predictions are the network's decoded output, padding dropped, carried to the lidar frame
    model: FusionDetector = runner.model
    model.eval()
    batch = next(iter(runner.test_dataloader))
    with torch.no_grad():
        det = model.net.detect(*[batch["inputs"][k] for k in INPUT_NAMES])
    for i, (pred, sample) in enumerate(zip(preds, batch["data_samples"])):
        assert pred["token"] == sample.metainfo["token"]
        inst = pred["pred_instances_3d"]
        assert isinstance(inst["bboxes_3d"], LiDARInstance3DBoxes) and inst["bboxes_3d"].tensor.shape[1] == 9
        keep = det["labels"][i] >= 0
        n = int(keep.sum())
        assert n > 0 and len(inst["scores_3d"]) == len(inst["labels_3d"]) == len(inst["bboxes_3d"]) == n
        np.testing.assert_allclose(inst["scores_3d"].numpy(), det["scores"][i][keep].numpy(), rtol=1e-5)
        np.testing.assert_array_equal(inst["labels_3d"].numpy(), det["labels"][i][keep].numpy())
        lidar = transform_boxes(invert(sample.metainfo["lidar2ego"]), det["boxes"][i][keep].double().numpy())
        np.testing.assert_allclose(inst["bboxes_3d"].tensor.numpy(), to_mmdet3d(lidar), rtol=1e-4, atol=1e-3)
        assert inst["trajectories"].shape[:1] == (n,)


def test_runner_train_step_and_test_step_real_keyframe(tmp_path, realdata):
    """The real nuScenes key frame (six 1600x900 images resized to 176x64): the same path on real input."""
    pkl = realdata / "nuscenes_demo" / DEMO_PKL
    cfg = _runner_config(tmp_path / "work", pkl, pkl, pkl.parent, {})
    cfg.train_dataloader.batch_size = cfg.test_dataloader.batch_size = 1
    _, _, preds = _train_and_test(cfg)
    assert len(preds) == 1 and preds[0]["token"] == "ca9a282c9e77460f8360f564131a8af5"
    assert len(preds[0]["pred_instances_3d"]["bboxes_3d"]) > 0


def test_detector_loss_equals_the_project_loop(synth_infos):
    """The same two Frames (the nuScenes loader's, with radar and future trajectories) through mmdet3d's data
    structures (GT as LiDARInstance3DBoxes in Det3DDataSamples) and through perception/train/loop.py's path
    (collate_frames -> build_targets -> detection_losses) give the same four losses."""
    detector = FusionDetector(**PROJECT)
    detector.eval()  # BatchNorm statistics frozen: both paths see the same network
    cfg = detector.project_cfg
    frames = NuScenesFrames(cfg, synth_infos["root"], synth_infos["version"], "synth_train")
    pair = [frames[0], frames[1]]
    # not vacuous: radar in both, trajectory targets in the first (the second is its scene's last key frame)
    assert all(f.radar_valid.any() for f in pair) and pair[0].gt_future_valid.any()
    items = [{"frame": f, "sample_idx": i, "lidar2ego": np.eye(4), "ego2global": f.global_from_ego}
             for i, f in enumerate(pair)]
    mm = collate_fusion_frames(items, **PROJECT)
    with torch.no_grad():
        got = detector.loss(mm["inputs"], mm["data_samples"])
        batch = collate_frames(copy.deepcopy(pair), cfg.data.loader.max_boxes, PillarSpec.from_config(cfg))
        targets = build_targets(batch["gt_boxes"], batch["gt_labels"], batch["gt_mask"], batch["gt_future"],
                                batch["gt_future_valid"], BevGrid.from_config(cfg.data.grid), len(cfg.classes))
        ref = detection_losses(detector.net(*[batch[k] for k in INPUT_NAMES]), targets)
    assert set(got) == {f"loss_{k}" for k in ref}
    for k, v in ref.items():
        assert v.item() > 0, k
        np.testing.assert_allclose(got[f"loss_{k}"].item(), v.item(), rtol=1e-5, err_msg=k)
