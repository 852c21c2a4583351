"""ONNX Runtime vs PyTorch parity on real Frames, with stated tolerances (used by ``make demo``; the tests check
raw head maps more strictly in tests/export/test_parity.py).

Decoded detections are compared where they are confident (score > ``strong``): scores within ``score_atol``,
box centres and sizes within ``box_atol`` metres, labels equal. Weak detections near the top-k cut-off may
legitimately swap places between backends (near ties), so they are compared by score only.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np


def detection_parity(reference: Any, candidate: Any, frames: Iterable[Any], strong: float = 0.1,
                     score_atol: float = 1e-3, box_atol: float = 1e-2) -> dict[str, Any]:
    """reference/candidate: Pipelines built with score_threshold=0 (fixed-size outputs in the same order)."""
    worst = {"score": 0.0, "box": 0.0, "label_mismatches": 0, "frames": 0, "strong_detections": 0}
    for frame in frames:
        a, b = reference.infer(frame), candidate.infer(frame)
        if len(a) != len(b):
            raise AssertionError(f"frame {frame.sample_token}: {len(a)} vs {len(b)} detections")
        worst["score"] = max(worst["score"], float(np.max(np.abs(a.scores - b.scores), initial=0.0)))
        keep = a.scores > strong
        worst["strong_detections"] += int(keep.sum())
        if keep.any():
            worst["box"] = max(worst["box"], float(np.max(np.abs(a.boxes[keep][:, :6] - b.boxes[keep][:, :6]))))
            worst["label_mismatches"] += int(np.sum(a.labels[keep] != b.labels[keep]))
        worst["frames"] += 1
    worst["ok"] = worst["score"] <= score_atol and worst["box"] <= box_atol and worst["label_mismatches"] == 0
    worst["tolerances"] = {"strong_score": strong, "score_atol": score_atol, "box_atol_m": box_atol}
    return worst
