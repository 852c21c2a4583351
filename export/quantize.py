"""INT8 by explicit quantisation: a Q/DQ graph (onnxruntime.quantization, QDQ format, symmetric int8,
per-channel weights), calibrated on real Frames, so that ONNX Runtime measures its accuracy here and TensorRT
builds it as an explicitly quantised network.

Only convolutions are quantised: the geometry (projection through img_from_ego, depth interpolation,
deformable sampling offsets) needs float precision, and TensorRT keeps those layers in FP16/FP32 anyway.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def quantize_int8(folder: str | Path, frames: Any, calib_frames: int = 16, out_name: str = "model_int8.onnx") -> Path:
    """Quantise ``<folder>/model.onnx`` with ``calib_frames`` Frames spread over ``frames`` (a NuScenesFrames).
    Writes ``<folder>/<out_name>`` and returns its path."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    from perception.data.batch import PillarSpec, input_arrays

    folder = Path(folder)
    spec = PillarSpec.from_config(frames.cfg)
    step = max(len(frames) // max(calib_frames, 1), 1)
    indices = list(range(0, len(frames), step))[:calib_frames]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(indices)

        def get_next(self):  # noqa: ANN201 - onnxruntime's interface
            i = next(self.it, None)
            return None if i is None else input_arrays([frames[i]], spec)

    out = folder / out_name
    quantize_static(str(folder / "model.onnx"), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                    op_types_to_quantize=["Conv"], calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    return out
