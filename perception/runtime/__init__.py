"""Inference runners that do not import torch: ONNX Runtime and TensorRT, each ``infer(arrays) -> outputs``."""
