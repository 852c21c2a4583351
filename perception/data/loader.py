"""Batching Frames with fixed shapes for the network, and the DataLoader (workers, pinned memory, DDP sampler).

A batch is a dict of tensors (B = batch size, N cameras, P = P_max radar points, G = max_boxes):

=================  ====================  ==========================================================
key                shape / dtype         meaning
=================  ====================  ==========================================================
images             (B, N, 3, H, W) u8    RGB, channels first; normalisation is the network's
img_from_ego       (B, N, 4, 4) f32
camera_valid       (B, N) bool
radar_points       (B, P, F) f32
radar_valid        (B, P) bool
stereo_pairs       (S, 2) int64          the same rig for the whole batch
gt_boxes           (B, G, 9) f32         padded with zeros; ``gt_mask`` marks real boxes
gt_labels          (B, G) int64          -1 where padded
gt_mask            (B, G) bool
gt_future          (B, G, T, 2) f32
gt_future_valid    (B, G, T) bool
lidar_points       (B, L, 3) f32         training targets only: each frame's lidar (ego@t0) padded to the
lidar_valid        (B, L) bool           batch's largest L (0 when no frame has lidar); never a network input
=================  ====================  ==========================================================

with a ``PillarSpec``, the radar encoder's inputs too: ``pillar_features`` (B, Pp, Np, 9) f32,
``pillar_point_mask`` (B, Pp, Np) bool, ``pillar_cells`` (B, Pp) int64, ``pillar_mask`` (B, Pp) bool;
plus ``meta``: a list of dicts (sample_token, t0, global_from_ego, issues, names/attributes/tokens).
Frames with more GT boxes than G keep the G nearest to the ego (reported in ``meta[i]["issues"]``).

A batch of ``ClipSample``s (temporal training, ``NuScenesFrames.load_clip``) also carries the previous frames'
network inputs as ``prev_<input name>`` (the current frame itself stands in where there is none, masked by
``prev_valid``), ``cur_from_prev`` (B, 4, 4) f32, ``prev_dt`` (B,) f32 seconds and ``prev_valid`` (B,) bool.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Sequence

import numpy as np
import torch

from perception.data.batch import PillarSpec, input_arrays, pillar_arrays  # noqa: F401 (re-exported)
from perception.data.frame import ClipSample, Frame
from perception.streaming import cur_from_prev


def pillar_inputs(frames: Sequence[Frame], spec: PillarSpec) -> dict[str, torch.Tensor]:
    """Pillarise each frame's radar (numba) into the encoder's fixed-shape inputs, as tensors."""
    return {k: torch.from_numpy(v) for k, v in pillar_arrays(frames, spec).items()}


def collate_clips(clips: Sequence[ClipSample], max_boxes: int, pillars: PillarSpec) -> dict[str, Any]:
    """``collate_frames`` of the current frames plus the previous frames' inputs and the temporal arrays."""
    batch = collate_frames([c.frame for c in clips], max_boxes, pillars)
    prevs = [c.previous if c.previous is not None else c.frame for c in clips]
    batch.update({f"prev_{k}": torch.from_numpy(v) for k, v in input_arrays(prevs, pillars).items()})
    valid = np.array([c.previous is not None for c in clips])
    batch["cur_from_prev"] = torch.from_numpy(np.stack([
        cur_from_prev(c.frame.global_from_ego, p.global_from_ego) if v else np.eye(4, dtype=np.float32)
        for c, p, v in zip(clips, prevs, valid)]))
    batch["prev_dt"] = torch.from_numpy(np.array([(c.frame.t0 - p.t0) / 1e6 if v else 0.0
                                                  for c, p, v in zip(clips, prevs, valid)], np.float32))
    batch["prev_valid"] = torch.from_numpy(valid)
    return batch


def collate_frames(frames: Sequence[Frame | ClipSample], max_boxes: int,
                   pillars: PillarSpec | None = None) -> dict[str, Any]:
    if frames and isinstance(frames[0], ClipSample):
        if pillars is None:
            raise ValueError("a batch of ClipSamples needs the PillarSpec (the previous frames' radar inputs)")
        return collate_clips(frames, max_boxes, pillars)
    n_cams = {f.num_cameras for f in frames}
    if len(n_cams) != 1:
        raise ValueError(f"a batch needs one camera count, got {sorted(n_cams)}")
    b = len(frames)
    t = frames[0].gt_future.shape[1] if frames[0].gt_future.ndim == 3 else 12
    boxes = np.zeros((b, max_boxes, 9), np.float32)
    labels = np.full((b, max_boxes), -1, np.int64)
    mask = np.zeros((b, max_boxes), bool)
    future = np.zeros((b, max_boxes, t, 2), np.float32)
    fvalid = np.zeros((b, max_boxes, t), bool)
    meta = []
    for i, f in enumerate(frames):
        order = np.argsort(np.hypot(f.gt_boxes[:, 0], f.gt_boxes[:, 1]), kind="stable")[:max_boxes]
        g = len(order)
        boxes[i, :g] = f.gt_boxes[order]
        labels[i, :g] = f.gt_labels[order]
        mask[i, :g] = True
        future[i, :g] = f.gt_future[order]
        fvalid[i, :g] = f.gt_future_valid[order]
        issues = list(f.issues)
        if len(f.gt_boxes) > max_boxes:
            issues.append(f"{len(f.gt_boxes) - max_boxes} GT boxes beyond data.loader.max_boxes={max_boxes} dropped "
                          "(the farthest)")
        meta.append({"sample_token": f.sample_token, "t0": f.t0, "global_from_ego": f.global_from_ego,
                     "camera_channels": list(f.camera_channels), "gt_names": f.gt_names[order].tolist(),
                     "gt_attributes": f.gt_attributes[order].tolist(),
                     "gt_instance_tokens": f.gt_instance_tokens[order].tolist(), "issues": issues})
    batch = {
        "images": torch.from_numpy(np.stack([f.images for f in frames])).permute(0, 1, 4, 2, 3).contiguous(),
        "img_from_ego": torch.from_numpy(np.stack([f.img_from_ego for f in frames])),
        "camera_valid": torch.from_numpy(np.stack([f.camera_valid for f in frames])),
        "radar_points": torch.from_numpy(np.stack([f.radar_points for f in frames])),
        "radar_valid": torch.from_numpy(np.stack([f.radar_valid for f in frames])),
        "stereo_pairs": torch.from_numpy(frames[0].stereo_pairs.astype(np.int64)),
        "gt_boxes": torch.from_numpy(boxes), "gt_labels": torch.from_numpy(labels), "gt_mask": torch.from_numpy(mask),
        "gt_future": torch.from_numpy(future), "gt_future_valid": torch.from_numpy(fvalid),
        **_lidar_batch(frames),
        "meta": meta,
    }
    if pillars is not None:
        batch.update(pillar_inputs(frames, pillars))
    return batch


def _lidar_batch(frames: Sequence[Frame]) -> dict[str, torch.Tensor]:
    """Each frame's ``lidar_points`` padded to the largest count in the batch, with a validity mask."""
    counts = [len(f.lidar_points) for f in frames]
    pts = np.zeros((len(frames), max(counts, default=0), 3), np.float32)
    valid = np.zeros(pts.shape[:2], bool)
    for i, f in enumerate(frames):
        pts[i, :counts[i]] = f.lidar_points
        valid[i, :counts[i]] = True
    return {"lidar_points": torch.from_numpy(pts), "lidar_valid": torch.from_numpy(valid)}


class _TorchFrames(torch.utils.data.Dataset):
    def __init__(self, frames: Any):
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> Frame:
        return self.frames[i]


class EpochSampler(torch.utils.data.Sampler):
    """The order of one epoch as a pure function of (seed, epoch), optionally starting ``start`` items in, so that
    a resumed run sees exactly the batches an uninterrupted one would have."""

    def __init__(self, n: int, seed: int, epoch: int, shuffle: bool, start: int = 0):
        self.n, self.seed, self.epoch, self.shuffle, self.start = n, seed, epoch, shuffle, start

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        return iter(order[self.start:])

    def __len__(self) -> int:
        return max(self.n - self.start, 0)


class _SkipFirst(torch.utils.data.Sampler):
    """Another sampler's order without its first ``skip`` items (a DDP rank resuming mid-epoch: DistributedSampler's
    order is a pure function of (seed, epoch, rank), so skipping what the rank already saw is exact)."""

    def __init__(self, sampler: Any, skip: int):
        self.sampler, self.skip = sampler, skip

    def __iter__(self):
        it = iter(self.sampler)
        for _ in range(self.skip):
            next(it, None)
        return it

    def __len__(self) -> int:
        return max(len(self.sampler) - self.skip, 0)


def make_loader(frames: Any, batch_size: int, max_boxes: int, shuffle: bool, workers: int = 0,
                pin_memory: bool = False, distributed: bool = False, seed: int = 0,
                drop_last: bool = False, pillars: PillarSpec | None = None, epoch: int = 0,
                start_batch: int = 0) -> torch.utils.data.DataLoader:
    """A DataLoader over an indexable of Frames (e.g. ``NuScenesFrames``). Single process: the order of
    ``epoch`` from ``EpochSampler`` (resumable at ``start_batch``). With ``distributed`` a ``DistributedSampler``
    shards the indices across ranks (its epoch is set here)."""
    ds = _TorchFrames(frames)
    if distributed:
        sampler = torch.utils.data.distributed.DistributedSampler(ds, shuffle=shuffle, seed=seed, drop_last=drop_last)
        sampler.set_epoch(epoch)
        if start_batch:
            sampler = _SkipFirst(sampler, start_batch * batch_size)
    else:
        sampler = EpochSampler(len(ds), seed, epoch, shuffle, start_batch * batch_size)
    shuffle = False
    gen = torch.Generator()
    gen.manual_seed(seed)
    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=shuffle, sampler=sampler, num_workers=workers,
        pin_memory=pin_memory and torch.cuda.is_available(), collate_fn=partial(collate_frames, max_boxes=max_boxes, pillars=pillars),
        generator=gen, drop_last=drop_last)  # workers are re-created per epoch, so set_epoch reaches them
