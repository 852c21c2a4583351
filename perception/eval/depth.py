"""Camera depth quality against lidar: AbsRel and delta < 1.25 at the depth head's cells, all and inside GT boxes.

Protocol (what ``perception-test`` reports where the data has lidar and the model runs in PyTorch):

- the target of a cell of the depth head's grid (stride 16) is the nearest lidar return projecting into it
  through the frame's ``img_from_ego`` (``perception.train.depth_targets.depth_targets``, the training targets);
  "inside GT boxes" uses only the returns inside a GT box (3D, ego@t0);
- cells whose target lies outside the head's bins ``[min_depth, max_depth)`` and masked cameras are not scored;
- the prediction is the mean of the cell's depth distribution (bin centres);
- AbsRel = mean |pred - gt| / gt and delta1 = fraction with max(pred / gt, gt / pred) < 1.25, over all scored
  cells of the split (cells, not frames, are averaged).

The exported graph has no depth output, so ONNX Runtime / TensorRT runs report no depth metric.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from perception.data.frame import Frame
from perception.model.lift import DepthBins
from perception.train.depth_targets import depth_targets, expected_depth

GROUPS = ("all", "in_boxes")


def points_in_boxes_mask(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """points (L, 3) and boxes (G, >= 7) [x y z w l h yaw] in one frame. Returns (L,) bool: inside any box."""
    inside = np.zeros(len(points), bool)
    for x, y, z, w, l, h, yaw in boxes[:, :7].astype(np.float64):
        rel = points.astype(np.float64) - (x, y, z)
        c, s = np.cos(yaw), np.sin(yaw)
        along = c * rel[:, 0] + s * rel[:, 1]
        across = -s * rel[:, 0] + c * rel[:, 1]
        inside |= (np.abs(along) <= l / 2) & (np.abs(across) <= w / 2) & (np.abs(rel[:, 2]) <= h / 2)
    return inside


def frame_depth_targets(frame: Frame, feat_hw: tuple[int, int]) -> dict[str, np.ndarray]:
    """The frame's lidar targets (N, Hf, Wf) per group (0 = no target): ``all`` returns and ``in_boxes`` only."""
    image_hw = frame.images.shape[1:3]
    m = torch.from_numpy(frame.img_from_ego)[None]
    valid = torch.from_numpy(frame.camera_valid)[None]
    out = {}
    for group, sel in (("all", np.ones(len(frame.lidar_points), bool)),
                       ("in_boxes", points_in_boxes_mask(frame.lidar_points, frame.gt_boxes))):
        pts = torch.from_numpy(frame.lidar_points[sel])[None]
        out[group] = depth_targets(pts, torch.ones(pts.shape[:2], dtype=torch.bool), m, valid, image_hw,
                                   feat_hw)[0].numpy()
    return out


def depth_error_sums(pred: np.ndarray, target: np.ndarray, bins: DepthBins) -> dict[str, float]:
    """pred, target (..., Hf, Wf) metres (target 0 = none). Sums over the scored cells: ``cells``, ``abs_rel``
    (sum of |pred - gt| / gt) and ``delta1`` (count of max ratio < 1.25)."""
    ok = (target >= bins.min_depth) & (target < bins.max_depth)
    p, t = pred[ok].astype(np.float64), target[ok].astype(np.float64)
    ratio = np.maximum(p / t, t / np.maximum(p, 1e-6))
    return {"cells": float(ok.sum()), "abs_rel": float((np.abs(p - t) / t).sum()), "delta1": float((ratio < 1.25).sum())}


def _zero() -> dict[str, float]:
    return {"cells": 0.0, "abs_rel": 0.0, "delta1": 0.0}


def _ratios(s: dict[str, float]) -> dict[str, Any]:
    n = s["cells"]
    return {"abs_rel": s["abs_rel"] / n if n else None, "delta1": s["delta1"] / n if n else None, "cells": int(n)}


class DepthMeter:
    """Accumulates ``depth_error_sums`` over frames; ``summary()`` gives AbsRel and delta1 per group, and for all
    returns per camera channel (``per_camera``: e.g. the stereo cameras against the others)."""

    def __init__(self, bins: DepthBins):
        self.bins = bins
        self.sums = {g: _zero() for g in GROUPS}
        self.per_camera: dict[str, dict[str, float]] = {}
        self.frames = 0

    def frame_sums(self, pred: np.ndarray, frame: Frame) -> dict[str, Any]:
        """pred: (N, Hf, Wf) predicted depth of the frame's cameras. The frame's sums per group and per camera
        (not added)."""
        targets = frame_depth_targets(frame, pred.shape[-2:])
        out: dict[str, Any] = {g: depth_error_sums(pred, targets[g], self.bins) for g in GROUPS}
        out["per_camera"] = {str(ch): depth_error_sums(pred[k], targets["all"][k], self.bins)
                             for k, ch in enumerate(frame.camera_channels)}
        return out

    def add(self, sums: dict[str, Any]) -> None:
        self.frames += 1
        for g in GROUPS:
            for k in self.sums[g]:
                self.sums[g][k] += sums[g][k]
        for ch, s in sums.get("per_camera", {}).items():
            acc = self.per_camera.setdefault(ch, _zero())
            for k in acc:
                acc[k] += s[k]

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"frames": self.frames, "protocol": "nearest lidar return per stride-16 cell, "
                               "targets in the depth bins' range, prediction = mean of the distribution"}
        for g in GROUPS:
            out[g] = _ratios(self.sums[g])
        out["per_camera"] = {ch: _ratios(s) for ch, s in self.per_camera.items()}
        return out


class DepthProbe:
    """Records the camera depth head's distribution of the last forward of ``net`` (a FusionNet in PyTorch),
    as the mean depth (B, N, Hf, Wf) on the CPU: a forward hook, so the detection run itself is the depth run."""

    def __init__(self, net: Any, bins: DepthBins):
        self.bins = bins
        self.last: np.ndarray | None = None
        self.handle = net.camera.depth.register_forward_hook(self._hook)

    def _hook(self, module: Any, inputs: Any, output: Any) -> None:
        self.last = expected_depth(output[0].detach().float(), self.bins).cpu().numpy()

    def close(self) -> None:
        self.handle.remove()


def depth_line(depth: dict[str, Any]) -> str:
    """One line: AbsRel and delta1, all and inside boxes."""
    def fmt(v: Any) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    a, b = depth["all"], depth["in_boxes"]
    return (f"depth AbsRel {fmt(a['abs_rel'])} d<1.25 {fmt(a['delta1'])} ({a['cells']} cells); in GT boxes "
            f"AbsRel {fmt(b['abs_rel'])} d<1.25 {fmt(b['delta1'])} ({b['cells']} cells)")


def draw_depth(frame: Frame, pred: np.ndarray | None, feat_hw: tuple[int, int], bins: DepthBins, out: Any,
               title: str = "") -> None:
    """Per camera (rows): the image with its lidar depth targets (nearest return per cell, coloured by depth),
    the predicted depth map (mean of the distribution, same colours) and the relative error |pred - gt| / gt at
    the target cells. ``pred``: (N, Hf, Wf) metres, or None (targets only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = frame_depth_targets(frame, feat_hw)["all"]  # (N, Hf, Wf)
    n = frame.num_cameras
    cols = 1 if pred is None else 3
    h, w = frame.images.shape[1:3]
    fig, axes = plt.subplots(n, cols, figsize=(4.2 * cols, 1.6 * n + 0.6), dpi=100, squeeze=False)
    hf, wf = feat_hw
    rows, colsx = np.nonzero(np.ones((hf, wf)))
    cu, cv = (colsx + 0.5) * w / wf - 0.5, (rows + 0.5) * h / hf - 0.5
    vmin, vmax = bins.min_depth, bins.max_depth
    for k in range(n):
        t = target[k].reshape(-1)
        has = (t >= bins.min_depth) & (t < bins.max_depth)
        ax = axes[k, 0]
        ax.imshow(frame.images[k])
        sc = ax.scatter(cu[has], cv[has], c=t[has], s=9, cmap="turbo", vmin=vmin, vmax=vmax)
        ax.set_title(f"{frame.camera_channels[k]}: lidar targets ({int(has.sum())} cells)", fontsize=7)
        if pred is not None:
            axes[k, 1].imshow(pred[k], cmap="turbo", vmin=vmin, vmax=vmax, extent=(-0.5, w - 0.5, h - 0.5, -0.5))
            axes[k, 1].set_title("predicted depth (mean of the bins)", fontsize=7)
            p = pred[k].reshape(-1)
            err = np.abs(p[has] - t[has]) / t[has]
            axes[k, 2].imshow(frame.images[k], alpha=0.4)
            es = axes[k, 2].scatter(cu[has], cv[has], c=err, s=9, cmap="magma", vmin=0, vmax=1)
            axes[k, 2].set_title(f"|pred - lidar| / lidar: AbsRel {err.mean() if len(err) else float('nan'):.2f}",
                                 fontsize=7)
        for ax in axes[k]:
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
            ax.axis("off")
    fig.colorbar(sc, ax=axes[:, :2] if pred is not None else axes[:, 0], shrink=0.6, label="depth (m)")
    if pred is not None:
        fig.colorbar(es, ax=axes[:, 2], shrink=0.6, label="relative error")
    fig.suptitle(title or "camera depth against lidar", fontsize=9)
    fig.savefig(out)
    plt.close(fig)
