"""Batch arrays for the network in numpy only (no torch): the pillarised radar and the model inputs.

Shared by the PyTorch DataLoader (``perception.data.loader``) and the torch-free runtimes (ONNX Runtime,
TensorRT), so every backend sees the same preprocessing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from perception.config import PILLAR_POINT_FIELDS
from perception.data.frame import Frame



@dataclass(frozen=True)
class PillarSpec:
    """Radar pillars on the BEV grid (one pillar per BEV cell) for the network's radar encoder."""

    x_range: tuple[float, float]
    y_range: tuple[float, float]
    resolution: float
    max_pillars: int
    max_points: int

    @classmethod
    def from_config(cls, cfg: Any) -> "PillarSpec":
        g = cfg.data.grid
        return cls(g.x_range, g.y_range, g.resolution, cfg.model.radar.max_pillars,
                   cfg.model.radar.max_points_per_pillar)


def pillar_arrays(frames: Sequence[Frame], spec: PillarSpec) -> dict[str, np.ndarray]:
    """Pillarise each frame's radar (numba) into the encoder's fixed-shape inputs."""
    from perception.data.radar_pillars import PillarGrid, pillarize

    grid = PillarGrid(spec.x_range, spec.y_range, spec.resolution)
    out: dict[str, list[np.ndarray]] = {"pillar_features": [], "pillar_point_mask": [], "pillar_cells": [],
                                        "pillar_mask": []}
    for f in frames:
        cols = [list(f.radar_fields).index(name) for name in PILLAR_POINT_FIELDS]
        p = pillarize(np.ascontiguousarray(f.radar_points[:, cols]), f.radar_valid, PILLAR_POINT_FIELDS, grid,
                      spec.max_pillars, spec.max_points)
        out["pillar_features"].append(p.features)
        out["pillar_point_mask"].append(p.point_mask)
        out["pillar_cells"].append(p.cells)
        out["pillar_mask"].append(p.pillar_mask)
    return {k: np.stack(v) for k, v in out.items()}




def input_arrays(frames: Sequence[Frame], spec: PillarSpec) -> dict[str, np.ndarray]:
    """The network inputs (``perception.model.network.INPUT_NAMES``) of a batch of Frames as numpy arrays."""
    out = {"images": np.ascontiguousarray(np.stack([f.images for f in frames]).transpose(0, 1, 4, 2, 3)),
           "img_from_ego": np.stack([f.img_from_ego for f in frames]).astype(np.float32),
           "camera_valid": np.stack([f.camera_valid for f in frames]),
           "radar_points": np.stack([f.radar_points for f in frames]).astype(np.float32),
           "radar_valid": np.stack([f.radar_valid for f in frames])}
    out.update(pillar_arrays(frames, spec))
    return out
