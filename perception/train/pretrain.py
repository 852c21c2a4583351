"""Backbone pretraining on the training split's own images (``perception-train --stage backbone``).

ImageNet weights cannot be downloaded here, so the image backbone can first learn to see on the synthetic
world's images with dense, image-space tasks and nothing else of the network:

- **task**: the perspective-view targets of ``perception.train.perspective_targets`` (class heatmap of the
  projected box centres, 2D size, centre depth) on the neck's stride-16 features, plus, where the frames have
  lidar, the lidar depth distribution over the D bins of ``model.camera`` (a 1x1 conv head, BCE as
  ``train.depth_loss``); the radar, the lift, the BEV and the detection heads are not built into the step;
- **what is trained**: backbone + neck + the two small heads, AdamW with the one-cycle schedule of ``train``
  over ``train.steps`` (the stage's own budget; pass ``--set train.steps=N``);
- **output**: ``OUT/backbone.pt``, the backbone's flat state dict (torchvision parameter names), which
  ``model.camera.pretrained: OUT/backbone.pt`` loads (``weights_only=True``) as the init of a detection run;
  ``OUT/pretrain_history.jsonl`` holds the losses and the seconds per step (the stage's cost).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from perception.config import Config


class BackbonePretrainNet(nn.Module):
    """Backbone + neck of the camera branch with the perspective head and a lidar depth head on the features."""

    def __init__(self, cfg: Config, init: str | Path = ""):
        """``init``: a weights file to start the backbone from ("" = from scratch)."""
        super().__init__()
        from perception.model.camera.backbone import ResNet, load_pretrained
        from perception.model.camera.neck import FPNNeck
        from perception.model.heads.perspective_head import PerspectiveHead
        from perception.model.network import IMAGENET_MEAN, IMAGENET_STD

        c, m = cfg.model.camera, cfg.model
        self.backbone = ResNet(depth=c.backbone_depth, width=c.backbone_width, blocks=c.backbone_blocks,
                               out_indices=(2, 3), norm=m.norm, frozen_stages=c.frozen_stages)
        if init:
            load_pretrained(self.backbone, init)
        self.neck = FPNNeck(self.backbone.out_channels, c.neck_channels, norm=m.norm)
        self.perspective = PerspectiveHead(c.neck_channels, cfg.num_classes, m.head.channels)
        self.depth = nn.Conv2d(c.neck_channels, c.depth_bins, 1)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0, persistent=False)

    def forward(self, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """images: (B, N, 3, H, W) uint8. Returns the perspective maps (B*N, *, Hf, Wf) and the depth
        distribution (B, N, D, Hf, Wf)."""
        b, n = images.shape[:2]
        x = (images.float().flatten(0, 1) - self.mean) / self.std  # (B*N, 3, H, W)
        feats = self.neck(self.backbone(x))  # (B*N, C, Hf, Wf)
        prob = self.depth(feats).softmax(dim=1)
        return self.perspective(feats), prob.view(b, n, *prob.shape[1:])


def pretrain_backbone(cfg: Config, dataroot: str | Path, version: str, out_dir: str | Path, progress: bool = True,
                      device: str | None = None) -> dict[str, Any]:
    """Train ``BackbonePretrainNet`` for ``train.steps`` on ``train.split`` and write ``OUT/backbone.pt``.
    Returns a summary: steps, minutes, seconds per step, final losses, the weights file."""
    from perception.data.loader import make_loader
    from perception.data.nuscenes import DatasetError, NuScenesFrames
    from perception.outputs import atomic_file
    from perception.train.camera_aux import depth_bins
    from perception.train.depth_targets import depth_loss, depth_targets
    from perception.train.loop import seed_everything
    from perception.train.perspective_targets import build_perspective_targets, perspective_losses

    if not cfg.model.camera.enabled:
        raise ValueError("model.camera.enabled is false: there is no image backbone to pretrain")
    tc = cfg.train
    seed_everything(tc.seed, tc.deterministic)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = NuScenesFrames(cfg, dataroot, version, tc.split, train=True, seed=tc.seed)
    frames.clips = False  # single images: a temporal model's previous frames play no part in backbone pretraining
    bs = cfg.data.loader.batch_size
    if len(frames) < bs:
        raise DatasetError(f"split {tc.split} has {len(frames)} samples: fewer than one batch of {bs}")
    # a config that names this stage's own output as its init (the two-stage recipe of synthetic_tiny_shipped.yaml)
    # starts the stage from scratch; any other file (ImageNet weights, an earlier stage) is the stage's init
    init = cfg.model.camera.pretrained
    if init and Path(init).resolve() == (out / "backbone.pt").resolve():
        init = ""
    net = BackbonePretrainNet(cfg, init).to(dev).train()
    opt = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tc.lr, total_steps=tc.steps, pct_start=0.3,
                                                div_factor=10.0, final_div_factor=100.0)
    bins = depth_bins(cfg)
    image_hw = tuple(cfg.data.image_size)
    history = out / "pretrain_history.jsonl"
    history.write_text("")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=tc.steps, desc="pretrain backbone", unit="step")
    step, epoch, t0 = 0, 0, time.time()
    losses: dict[str, torch.Tensor] = {}
    while step < tc.steps:
        frames.set_epoch(epoch)
        loader = make_loader(frames, bs, cfg.data.loader.max_boxes, shuffle=True, workers=cfg.data.loader.workers,
                             seed=tc.seed, drop_last=True, epoch=epoch)
        for batch in loader:
            persp, prob = net(batch["images"].to(dev))
            feat_hw = tuple(prob.shape[-2:])
            t = build_perspective_targets(batch["gt_boxes"], batch["gt_labels"], batch["gt_mask"],
                                          batch["img_from_ego"], batch["camera_valid"], image_hw, feat_hw,
                                          cfg.num_classes)
            t = type(t)(*(v.to(dev) for v in (t.heatmap, t.ind, t.mask, t.regression)))
            losses = {k: tc.perspective.weight * v for k, v in perspective_losses(persp, t).items()}
            target = depth_targets(batch["lidar_points"].to(dev), batch["lidar_valid"].to(dev),
                                   batch["img_from_ego"].to(dev), batch["camera_valid"].to(dev), image_hw, feat_hw)
            losses["depth"] = tc.depth_loss.weight * depth_loss(prob, target, bins)
            loss = sum(losses.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), tc.grad_clip)
            opt.step()
            sched.step()
            step += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
            if step % tc.log_every == 0 or step == tc.steps:
                row = {"step": step, "loss": loss.item(), **{k: v.item() for k, v in losses.items()},
                       "seconds_per_step": (time.time() - t0) / step}
                with open(history, "a") as f:
                    f.write(json.dumps(row) + "\n")
            if step >= tc.steps:
                break
        epoch += 1
    if bar is not None:
        bar.close()
    weights = out / "backbone.pt"
    with atomic_file(weights) as tmp:
        torch.save({k: v.detach().cpu() for k, v in net.backbone.state_dict().items()}, tmp)
    minutes = (time.time() - t0) / 60
    return {"stage": "backbone", "steps": step, "minutes": minutes, "seconds_per_step": minutes * 60 / max(step, 1),
            "losses": {k: v.item() for k, v in losses.items()}, "weights": str(weights),
            "use": f"model.camera.pretrained: {weights}"}
