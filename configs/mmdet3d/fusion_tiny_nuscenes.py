# mmengine config (pure-Python style: every `type` is the class itself, so a reader can jump to it) training this
# project's fusion network through mmengine's Runner on mmdet3d v1.1 nuScenes info files. Only for the separate
# .venv-mmdet3d (`make test-mmdet3d`, docs/mmdet3d.md); the project's own tools never read this file.
#
#   .venv-mmdet3d/bin/python -c "from mmengine.config import Config; from mmengine.runner import Runner; \
#       Runner.from_cfg(Config.fromfile('configs/mmdet3d/fusion_tiny_nuscenes.py')).train()"
#
# The network, its image size, BEV grid and classes come from one project config (`project`): the detector, the
# datasets and the collate function all read it, so they cannot disagree. Paths are relative to the working
# directory (run from the repository root).
from mmengine.dataset import DefaultSampler
from mmengine.evaluator import DumpResults
from mmengine.hooks import CheckpointHook, LoggerHook
from mmengine.optim import OptimWrapper
from mmengine.runner import IterBasedTrainLoop, TestLoop
from torch.optim import AdamW

from perception.integrations.mmdet3d.dataset import (
    FusionInfoDataset,
    collate_fusion_frames,
)
from perception.integrations.mmdet3d.detector import FusionDetector

project = dict(config="configs/synthetic_tiny.yaml", overrides=[])
data_root = "data/nuscenes/"  # a nuScenes root with mmdet3d's infos: tools/create_data.py nuscenes
train_ann_file = "data/nuscenes/nuscenes_infos_train.pkl"
test_ann_file = "data/nuscenes/nuscenes_infos_val.pkl"
data_prefix = None  # None: each camera under samples/<CAM>, as mmdet3d's nuScenes configs

model = dict(type=FusionDetector, output_frame="lidar", **project)

train_dataloader = dict(
    batch_size=4, num_workers=2, persistent_workers=True,
    sampler=dict(type=DefaultSampler, shuffle=True),
    collate_fn=dict(type=collate_fusion_frames, **project),
    dataset=dict(type=FusionInfoDataset, ann_file=train_ann_file, data_root=data_root, data_prefix=data_prefix,
                 test_mode=False, **project))
test_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=True,
    sampler=dict(type=DefaultSampler, shuffle=False),
    collate_fn=dict(type=collate_fusion_frames, **project),
    dataset=dict(type=FusionInfoDataset, ann_file=test_ann_file, data_root=data_root, data_prefix=data_prefix,
                 test_mode=True, **project))
# The predictions as a pickle of Det3DDataSamples. mmdet3d's NuScenesMetric (boxes in the lidar frame: the
# detector's output_frame="lidar") is the choice for a real nuScenes root with its tables; docs/mmdet3d.md.
test_evaluator = dict(type=DumpResults, out_file_path="work_dirs/fusion_tiny_nuscenes/predictions.pkl")

# as perception/train/loop.py: AdamW, gradient clipping (its one-cycle schedule is left to param_scheduler)
optim_wrapper = dict(type=OptimWrapper, optimizer=dict(type=AdamW, lr=2.0e-3, weight_decay=0.01),
                     clip_grad=dict(max_norm=35.0))
train_cfg = dict(type=IterBasedTrainLoop, max_iters=1400, val_interval=10**9)
test_cfg = dict(type=TestLoop)

default_hooks = dict(checkpoint=dict(type=CheckpointHook, interval=200, by_epoch=False),
                     logger=dict(type=LoggerHook, interval=10))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend="nccl"))
work_dir = "work_dirs/fusion_tiny_nuscenes"
