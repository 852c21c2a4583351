"""The info-file adapter as an mmdet3d dataset, and the collate function that makes the network's inputs.

``FusionInfoDataset`` (registered in mmdet3d's ``DATASETS``) yields one Frame per info entry through
``infos.InfoFrames``; ``collate_fusion_frames`` (registered in mmengine's ``FUNCTIONS``) batches them with this
project's ``collate_frames`` (one preprocessing for every backend: images, calibration, radar pillars) into
mmengine's ``{"inputs": ..., "data_samples": ...}``:

- ``inputs``: the tensors of ``perception.model.network.INPUT_NAMES`` (shapes in that module);
- ``data_samples``: one ``Det3DDataSample`` per frame, ``gt_instances_3d`` with ``bboxes_3d`` as
  ``LiDARInstance3DBoxes`` **in ego@t0** (box_dim 9 with velocity; conversion in ``boxes``), ``labels_3d`` (index
  into the project config's classes), ``future`` / ``future_valid`` (trajectory targets, (G, T, 2) / (G, T)); the
  metainfo carries ``sample_idx``, ``token``, ``t0``, ``lidar2ego`` and ``ego2global`` (to write predictions in
  mmdet3d's lidar frame and to global), ``camera_channels`` and the Frame's ``issues``.

mmdet3d's transform pipelines (``LoadMultiViewImageFromFiles`` ...) are not used: the Frame is made by the same
code as for this project's own datasets, so training here and there sees identical inputs.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from mmdet3d.registry import DATASETS
from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
from mmengine.registry import FUNCTIONS
from mmengine.structures import InstanceData

from perception.config import Config, load_config
from perception.data.batch import PillarSpec
from perception.data.loader import collate_frames
from perception.integrations.mmdet3d.boxes import to_mmdet3d
from perception.integrations.mmdet3d.infos import InfoFrames
from perception.model.network import INPUT_NAMES


@lru_cache(maxsize=8)
def project_config(config: str, overrides: tuple[str, ...] = ()) -> Config:
    """This project's config (``perception.config.load_config``), loaded once per (path, overrides): the
    detector, the dataset and the collate function of one mmengine config name the same one."""
    return load_config(config, overrides)


@DATASETS.register_module()
class FusionInfoDataset(torch.utils.data.Dataset):
    """Frames of an mmdet3d v1.1 nuScenes info file for the project config ``config`` (+ ``overrides``,
    ``--set``-style strings). ``data_root``/``data_prefix`` as in mmdet3d (default: the info file's folder and
    ``samples/<CAM>``). ``test_mode=False`` applies the config's augmentation and modality dropout, drawn from
    numpy's global generator, which mmengine seeds per worker (``randomness.seed``)."""

    def __init__(self, ann_file: str, config: str, overrides: Sequence[str] = (), data_root: str | None = None,
                 data_prefix: Mapping[str, str] | None = None, test_mode: bool = False):
        self.cfg = project_config(str(config), tuple(overrides))
        self.test_mode = test_mode
        self.frames = InfoFrames(self.cfg, ann_file, data_root, data_prefix, train=not test_mode)

    @property
    def metainfo(self) -> dict:
        """mmengine hands this to evaluators as ``dataset_meta``: ``classes`` in the order of ``labels_3d``."""
        return {"classes": tuple(self.cfg.classes), "version": self.frames.metainfo.get("version", ""),
                "box_type_3d": "LiDAR", "ann_file": str(self.frames.ann_file)}

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = None if self.test_mode else np.random.default_rng(np.random.randint(0, 2**31 - 1, size=2))
        entry = self.frames.entries[index]
        return {"frame": self.frames.load(index, rng), "sample_idx": int(entry.get("sample_idx", index)),
                "lidar2ego": self.frames.ego_from_lidar(index),
                "ego2global": np.asarray(entry["ego2global"], np.float64)}


@FUNCTIONS.register_module()
def collate_fusion_frames(items: Sequence[Mapping[str, Any]], config: str,
                          overrides: Sequence[str] = ()) -> dict[str, Any]:
    """items: ``FusionInfoDataset`` items. Returns ``{"inputs": {name: tensor}, "data_samples": [...]}`` (module
    docstring). Frames with more GT boxes than ``data.loader.max_boxes`` keep the nearest (``collate_frames``)."""
    cfg = project_config(str(config), tuple(overrides))
    frames = [it["frame"] for it in items]
    batch = collate_frames(frames, cfg.data.loader.max_boxes, PillarSpec.from_config(cfg))
    samples = []
    for i, it in enumerate(items):
        meta = batch["meta"][i]
        sample = Det3DDataSample(metainfo={
            "sample_idx": it["sample_idx"], "token": meta["sample_token"], "t0": meta["t0"],
            "lidar2ego": it["lidar2ego"], "ego2global": it["ego2global"], "box_type_3d": LiDARInstance3DBoxes,
            "camera_channels": meta["camera_channels"], "issues": meta["issues"]})
        m = batch["gt_mask"][i]  # (G,) real boxes of the padded batch
        gt = InstanceData()
        gt.bboxes_3d = LiDARInstance3DBoxes(to_mmdet3d(batch["gt_boxes"][i][m]), box_dim=9)
        gt.labels_3d = batch["gt_labels"][i][m]
        gt.future = batch["gt_future"][i][m]  # (G, T, 2) absolute x, y in ego@t0
        gt.future_valid = batch["gt_future_valid"][i][m]  # (G, T)
        sample.gt_instances_3d = gt
        samples.append(sample)
    return {"inputs": {k: batch[k] for k in INPUT_NAMES}, "data_samples": samples}

