"""bevfusion-rc perception: data, model, evaluation, replay, runtimes.

The library API, imported lazily (``import perception`` stays light: no torch, no onnxruntime)::

    from perception import Pipeline            # Pipeline.from_checkpoint / from_onnx / from_engine(...).infer(frame)
    from perception import Detections, Frame
"""
from __future__ import annotations

from typing import Any

_LAZY = {"Pipeline": "perception.pipeline", "Detections": "perception.pipeline", "Frame": "perception.data.frame"}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'perception' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
