"""The fusion network as an mmdet3d detector (``FusionDetector``, registered in mmdet3d's ``MODELS``).

It wraps ``perception.model.network.build_model(cfg)`` unchanged (the same module that training, evaluation and
export use) and speaks mmengine's protocol:

- ``loss(inputs, data_samples)``: the GT of ``data_samples[i].gt_instances_3d`` (``LiDARInstance3DBoxes`` in
  ego@t0, as ``dataset.collate_fusion_frames`` writes them) -> ``perception.train.targets.build_targets`` ->
  ``perception.train.losses.detection_losses``, exactly as perception/train/loop.py computes a batch's loss;
  returned as ``loss_heatmap``, ``loss_regression``, ``loss_trajectory``, ``loss_mode`` (mmengine sums them).
- ``predict``: ``FusionNet.detect`` (decoding in the graph, fixed size; padding slots dropped) ->
  ``pred_instances_3d`` with ``bboxes_3d`` (``LiDARInstance3DBoxes``, box_dim 9 with velocity), ``scores_3d``,
  ``labels_3d`` (index into the project config's classes), plus ``trajectories`` (N, M, T, 2) and ``mode_probs``
  (N, M) in ego@t0. With ``output_frame="lidar"`` (default: mmdet3d's nuScenes convention, which its
  ``NuScenesMetric`` expects) boxes are carried to the lidar frame by the sample's ``lidar2ego``; ``"ego"``
  keeps ego@t0.
- ``_forward`` (mode ``"tensor"``): the raw head maps.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmdet3d.models.detectors import Base3DDetector
from mmdet3d.registry import MODELS
from mmdet3d.structures import LiDARInstance3DBoxes
from mmengine.structures import InstanceData
from torch import Tensor

from calibration.transforms import invert
from perception.config import Config
from perception.integrations.mmdet3d.boxes import (
    from_mmdet3d,
    to_mmdet3d,
    transform_boxes,
)
from perception.integrations.mmdet3d.dataset import project_config
from perception.model.decode import BevGrid
from perception.model.network import INPUT_NAMES, build_model
from perception.train.losses import detection_losses
from perception.train.targets import Targets, build_targets
from perception.train.checkpoint import load_checkpoint, load_weights


@MODELS.register_module()
class FusionDetector(Base3DDetector):
    """``config`` (+ ``overrides``): this project's experiment YAML, or ``checkpoint``: a project checkpoint
    (``model.pt`` / ``last.pt``), whose resolved config and stereo topology build the network and whose weights
    it loads (with ``config`` too, the weights must fit the network of ``config``). ``stereo_pairs``: the rig's
    (left, right) camera indices when built from a config (mmdet3d info files cannot express stereo pairs)."""

    def __init__(self, config: str | None = None, overrides: Sequence[str] = (), checkpoint: str | None = None,
                 stereo_pairs: Sequence[Sequence[int]] = (), output_frame: str = "lidar",
                 data_preprocessor: dict | None = None, init_cfg: dict | None = None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if output_frame not in ("lidar", "ego"):
            raise ValueError(f"output_frame must be 'lidar' or 'ego', got {output_frame!r}")
        if config is None and checkpoint is None:
            raise ValueError("FusionDetector needs config= (an experiment YAML) or checkpoint= (a model.pt)")
        state = None
        stereo = tuple((int(a), int(b)) for a, b in stereo_pairs)
        if checkpoint is not None:
            ck = load_checkpoint(checkpoint)
            state = ck["model"]
            stereo = tuple(tuple(int(v) for v in p) for p in ck.get("stereo_pairs", ())) or stereo
        cfg: Config = project_config(str(config), tuple(overrides)) if config is not None else ck["config"]
        self.project_cfg = cfg
        self.output_frame = output_frame
        self.net = build_model(cfg, stereo)
        if state is not None:
            load_weights(self.net, state, Path(checkpoint))
        self.grid = BevGrid.from_config(cfg.data.grid)

    # -- mmengine's three modes ---------------------------------------------------------------------------
    def _run_net(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        missing = [k for k in INPUT_NAMES if k not in inputs]
        if missing:
            raise KeyError(f"inputs lack {missing}: batch with perception.integrations.mmdet3d.dataset."
                           "collate_fusion_frames (the dataloader's collate_fn)")
        return self.net(*[inputs[k] for k in INPUT_NAMES])

    def _forward(self, inputs: dict[str, Tensor], data_samples: Any = None) -> dict[str, Tensor]:
        """The head maps (``FusionNet.forward``), each (B, *, H, W) on the BEV grid."""
        return self._run_net(inputs)

    def extract_feat(self, batch_inputs: Any) -> Any:
        raise NotImplementedError("FusionDetector has no separate feature stage in mmdet's sense: the fused BEV "
                                  "is internal to FusionNet; use mode='tensor' for the head maps")

    def loss(self, inputs: dict[str, Tensor], data_samples: Sequence[Any]) -> dict[str, Tensor]:
        targets = self._targets(data_samples)
        out = self._run_net(inputs)
        dev = next(iter(out.values())).device
        targets = replace(targets, **{f.name: getattr(targets, f.name).to(dev) for f in fields(targets)})
        losses = detection_losses({k: v.float() for k, v in out.items()}, targets,
                                  self.project_cfg.train.trajectory_loss, self.project_cfg.train.velocity_weight)
        return {f"loss_{k}": v for k, v in losses.items()}

    @torch.no_grad()
    def predict(self, inputs: dict[str, Tensor], data_samples: Sequence[Any]) -> Sequence[Any]:
        det = self.net.detect(*[inputs[k] for k in INPUT_NAMES])
        results = []
        for i, sample in enumerate(data_samples):
            keep = det["labels"][i] >= 0  # padding slots have label -1
            boxes = det["boxes"][i][keep]  # (N, 9) ego@t0, this project's convention
            if self.output_frame == "lidar":
                if "lidar2ego" not in sample.metainfo:
                    raise KeyError("output_frame='lidar' needs 'lidar2ego' in each data sample's metainfo "
                                   "(FusionInfoDataset puts it there); use output_frame='ego' otherwise")
                lidar_from_ego = invert(np.asarray(sample.metainfo["lidar2ego"], np.float64))
                boxes = boxes.new_tensor(transform_boxes(lidar_from_ego, boxes.double().cpu().numpy()))
            inst = InstanceData()
            inst.bboxes_3d = LiDARInstance3DBoxes(to_mmdet3d(boxes), box_dim=9)
            inst.scores_3d = det["scores"][i][keep]
            inst.labels_3d = det["labels"][i][keep]
            inst.trajectories = det["trajectories"][i][keep]  # (N, M, T, 2) ego@t0
            inst.mode_probs = det["mode_probs"][i][keep]  # (N, M)
            results.append(inst)
        return self.add_pred_to_datasample(list(data_samples), results)

    # -- GT ----------------------------------------------------------------------------------------------
    def _targets(self, data_samples: Sequence[Any]) -> Targets:
        """``gt_instances_3d`` of each sample (ego@t0) padded to the batch's largest G -> training targets
        (built on the CPU in numpy, as in the project's loop)."""
        gts = [s.gt_instances_3d for s in data_samples]
        g = max([len(gt) for gt in gts] + [1])
        steps = self.project_cfg.data.future_steps
        b = len(gts)
        boxes = torch.zeros(b, g, 9)
        labels = torch.full((b, g), -1, dtype=torch.int64)
        mask = torch.zeros(b, g, dtype=torch.bool)
        future = torch.zeros(b, g, steps, 2)
        fvalid = torch.zeros(b, g, steps, dtype=torch.bool)
        for i, gt in enumerate(gts):
            n = len(gt)
            if n == 0:
                continue
            t = gt.bboxes_3d.tensor.detach().cpu().float()
            if t.shape[1] != 9:
                raise ValueError(f"gt bboxes_3d have box_dim {t.shape[1]}; the network trains velocity and needs "
                                 "box_dim 9 ([x, y, z, l, w, h, yaw, vx, vy])")
            boxes[i, :n] = from_mmdet3d(t)
            labels[i, :n] = gt.labels_3d.cpu()
            mask[i, :n] = True
            if "future" in gt:
                future[i, :n] = gt.future.cpu().float()
                fvalid[i, :n] = gt.future_valid.cpu()
        return build_targets(boxes, labels, mask, future, fvalid, self.grid, len(self.project_cfg.classes))
