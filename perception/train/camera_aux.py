"""Training-only camera supervision around the fusion network: lidar depth and the perspective-view head.

``TrainNet`` wraps ``FusionNet`` for training (and is what DDP wraps, so the auxiliary head's gradients are
synchronised): it runs the network unchanged and taps, with forward hooks for the duration of the call, the
neck's image features (B*N, C, Hf, Wf) and the depth head's distribution (B, N, D, Hf, Wf). The perspective head
(``train.perspective``) lives here, not in ``FusionNet``: inference checkpoints (``model.pt``), their strict loading
and the exported graph do not change when it is on; ``last.pt`` keeps its weights under ``aux`` for resuming.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from perception.config import Config
from perception.model.heads.perspective_head import PerspectiveHead
from perception.model.lift import DepthBins
from perception.train.depth_targets import depth_loss, depth_targets
from perception.train.perspective_targets import build_perspective_targets, perspective_losses


def depth_bins(cfg: Config) -> DepthBins:
    c = cfg.model.camera
    return DepthBins(c.depth_range[0], c.depth_range[1], c.depth_bins)


class TrainNet(nn.Module):
    """``net`` (FusionNet) + the training-only perspective head. ``forward(*inputs)`` returns the network's head
    maps and ``extras``: ``depth_prob`` (B, N, D, Hf, Wf) and ``perspective`` (the head's maps) when used."""

    def __init__(self, net: nn.Module, cfg: Config):
        super().__init__()
        self.net = net
        tc = cfg.train
        self.tap_depth = bool(tc.depth_loss.enabled and net.camera is not None)
        self.perspective = None
        if tc.perspective.enabled and net.camera is not None:
            self.perspective = PerspectiveHead(cfg.model.camera.neck_channels, cfg.num_classes,
                                               cfg.model.head.channels)

    def forward(self, *inputs: Tensor, previous: tuple[Tensor, ...] | None = None,
                temporal: tuple[Tensor, Tensor, Tensor] | None = None) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """``inputs``: the network's ``INPUT_NAMES`` tensors. A temporal network (BEVDet4D style): ``previous``, the
        earlier frames' ``INPUT_NAMES`` tensors, whose BEV is computed here without gradient (before the hooks, so
        the taps hold the current frame's), and ``temporal`` = (cur_from_prev, prev_dt, prev_valid)."""
        extra: tuple[Tensor, ...] = ()
        if previous is not None:
            with torch.no_grad():
                prev_bev = self.net.single_frame_bev(*previous)  # (B, C, H, W)
            extra = (prev_bev, *temporal)
        taps: dict[str, Tensor] = {}
        handles = []
        cam = self.net.camera
        if self.tap_depth:
            handles.append(cam.depth.register_forward_hook(lambda m, i, o: taps.__setitem__("depth_prob", o[0])))
        if self.perspective is not None:
            handles.append(cam.neck.register_forward_hook(lambda m, i, o: taps.__setitem__("features", o)))
        try:
            out = self.net(*inputs, *extra)
        finally:
            for h in handles:
                h.remove()
        extras: dict[str, Any] = {}
        if "depth_prob" in taps:
            extras["depth_prob"] = taps["depth_prob"]
        if self.perspective is not None:
            extras["perspective"] = self.perspective(taps["features"])
        return out, extras

    def aux_state_dict(self) -> dict[str, Tensor]:
        """The training-only weights (for ``last.pt``; empty when no auxiliary head is on)."""
        return {} if self.perspective is None else self.perspective.state_dict()

    def load_aux_state_dict(self, state: dict[str, Tensor]) -> None:
        if self.perspective is not None:
            self.perspective.load_state_dict(state, strict=True)


def camera_aux_losses(extras: dict[str, Any], batch: dict[str, Any], cfg: Config) -> dict[str, Tensor]:
    """The weighted training-only camera losses for one batch (empty when none is on): ``depth`` (lidar BCE,
    ``train.depth_loss.weight``) and ``perspective_heatmap`` / ``perspective_regression``
    (``train.perspective.weight``). ``batch`` is the collated batch (lidar, calibration, GT on the CPU)."""
    losses: dict[str, Tensor] = {}
    image_hw = tuple(cfg.data.image_size)
    if "depth_prob" in extras:
        prob = extras["depth_prob"]
        dev = prob.device
        target = depth_targets(batch["lidar_points"].to(dev), batch["lidar_valid"].to(dev),
                               batch["img_from_ego"].to(dev), batch["camera_valid"].to(dev), image_hw,
                               tuple(prob.shape[-2:]))
        losses["depth"] = cfg.train.depth_loss.weight * depth_loss(prob, target, depth_bins(cfg))
    if "perspective" in extras:
        out = extras["perspective"]
        dev = out["heatmap"].device
        t = build_perspective_targets(batch["gt_boxes"], batch["gt_labels"], batch["gt_mask"], batch["img_from_ego"],
                                      batch["camera_valid"], image_hw, tuple(out["heatmap"].shape[-2:]),
                                      cfg.num_classes)
        t = type(t)(*(v.to(dev) for v in (t.heatmap, t.ind, t.mask, t.regression)))
        w = cfg.train.perspective.weight
        losses.update({k: w * v for k, v in perspective_losses(out, t).items()})
    return losses
