"""Class-balanced grouping and sampling (CBGS, Zhu et al. 2019, arXiv 1908.09492) as a resampled view of a split.

For each class the samples that contain it are drawn ``len(samples) * ratio`` times (with replacement), with
ratio = (1 / K) / (that class's share of the per-class sample lists), so that every class is seen in about the
same number of samples; the epoch is longer than the split (a sample with rare classes appears several times).
Same algorithm as mmdetection3d's ``CBGSDataset``. The index list is a pure function of (seed, class lists), so
runs and resumes see the same epochs; ``train.cbgs.enabled`` switches it on.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from perception.data.frame import Frame


def cbgs_indices(sample_classes: Sequence[set[int]], num_classes: int, seed: int = 0) -> np.ndarray:
    """sample_classes: the class indices present in each sample. Returns the resampled sample indices (int64),
    shuffled. Classes no sample has are ignored; samples with no class are not drawn."""
    rng = np.random.default_rng(seed)
    per_class = [np.array([i for i, cs in enumerate(sample_classes) if k in cs], np.int64) for k in range(num_classes)]
    present = [idx for idx in per_class if len(idx)]
    if not present:
        return np.arange(len(sample_classes), dtype=np.int64)
    total = sum(len(idx) for idx in present)
    frac = 1.0 / len(present)
    out = [rng.choice(idx, int(len(idx) * frac / (len(idx) / total))) for idx in present]
    order = np.concatenate(out)
    return order[rng.permutation(len(order))]


def split_sample_classes(frames: Any) -> list[set[int]]:
    """The config's class indices present in each sample of a ``NuScenesFrames`` split, from the annotation
    tables alone (no sensor file is read)."""
    from nuscenes.eval.detection.utils import category_to_detection_name

    classes = list(frames.cfg.classes)
    out = []
    for s in frames.samples:
        names = (category_to_detection_name(frames.nusc.get("sample_annotation", a)["category_name"])
                 for a in frames.nusc.get("sample", s.token)["anns"])
        out.append({classes.index(n) for n in names if n in classes})
    return out


class ResampledFrames:
    """``frames`` seen through an index list (``cbgs_indices``): item i is sample ``indices[i]``, augmented with
    draws from (seed, epoch, i) so that repeats of a sample in one epoch differ. Passes ``set_epoch`` and the
    attributes the training loop reads (``samples``, ``dataroot``, ``version``, ``nusc``) through."""

    def __init__(self, frames: Any, indices: np.ndarray):
        self.frames = frames
        self.indices = np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getattr__(self, name: str) -> Any:
        if name in ("frames", "indices") or name.startswith("__"):  # unpickling in DataLoader workers
            raise AttributeError(name)
        return getattr(self.frames, name)

    def set_epoch(self, epoch: int) -> None:
        self.frames.set_epoch(epoch)

    def __getitem__(self, i: int) -> Frame:
        j = int(self.indices[i])
        if self.frames.dcfg.on_bad_file == "skip":
            return self.frames[j]  # the skip policy lives in __getitem__
        rng = np.random.default_rng([self.frames.seed, self.frames.epoch, i, 1])
        return self.frames.load(j, rng=rng)
