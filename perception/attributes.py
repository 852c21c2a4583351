"""nuScenes attributes from (class, predicted speed): outside the graph, in numpy, because they are strings
(ONNX/TensorRT outputs are tensors) and a pure function of (label, speed), so every backend derives them alike
after inference. No torch import (the TensorRT/ONNX Runtime inference path uses this)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

# CenterPoint's rule (det3d nusc_common): above the speed threshold vehicles move and cycles have a rider; at
# rest pedestrians stand and buses are stopped; anything else falls back to the nuScenes default per class.
_MOVING = {
    "car": "vehicle.moving", "truck": "vehicle.moving", "bus": "vehicle.moving", "trailer": "vehicle.moving",
    "construction_vehicle": "vehicle.moving", "bicycle": "cycle.with_rider", "motorcycle": "cycle.with_rider",
    "pedestrian": "pedestrian.moving", "traffic_cone": "", "barrier": "",
}
_STATIC = {
    "car": "vehicle.parked", "truck": "vehicle.parked", "bus": "vehicle.stopped", "trailer": "vehicle.parked",
    "construction_vehicle": "vehicle.parked", "bicycle": "cycle.without_rider",
    "motorcycle": "cycle.without_rider", "pedestrian": "pedestrian.standing", "traffic_cone": "", "barrier": "",
}


def attribute_from_class_and_speed(labels: np.ndarray, speed: np.ndarray, class_names: Sequence[str],
                                   moving_threshold: float = 0.2) -> list:
    """labels: (...) int class indices into ``class_names`` (-1: padding -> ""); speed: (...) m/s over ground
    (``hypot(vx, vy)`` of the boxes). Returns nuScenes attribute names as a (nested) list of the same shape;
    moving iff speed > ``moving_threshold`` (CenterPoint's 0.2 m/s)."""
    labels, speed = np.asarray(labels), np.asarray(speed)
    if labels.shape != speed.shape:
        raise ValueError(f"labels {labels.shape} and speed {speed.shape} must have the same shape")
    unknown = [c for c in class_names if c not in _MOVING]
    if unknown:
        raise ValueError(f"no attribute rule for classes {unknown}; known: {sorted(_MOVING)}")
    if labels.size and (labels.min() < -1 or labels.max() >= len(class_names)):
        raise ValueError(f"labels must be in [-1, {len(class_names) - 1}] for {len(class_names)} classes, "
                         f"got [{labels.min()}, {labels.max()}]")
    moving = np.array([_MOVING[c] for c in class_names] + [""])  # index -1 -> the trailing "" (padding)
    static = np.array([_STATIC[c] for c in class_names] + [""])
    return np.where(speed > moving_threshold, moving[labels], static[labels]).tolist()
