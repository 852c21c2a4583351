"""TensorRT runner: ``infer(inputs) -> outputs`` on numpy arrays from a serialised engine (TensorRT 10.x tensor
API, ``execute_async_v3``); no torch import (device buffers through ``polygraphy.cuda``, pure Python over
libcudart), so it runs on a Jetson with only JetPack's TensorRT bindings and numpy.

An engine folder (written by ``perception-engine build``) holds ``model.engine``, ``engine.json`` (schema
``perception-engine/1``: TensorRT version, precision, device, ONNX sha256) and a copy of the export's
``model.json`` (inputs, outputs, config), so it is self-contained. Engines are tied to the TensorRT version and
the GPU they were built with: a mismatch is a clear error, not a crash inside TensorRT.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from perception.runtime.onnxruntime import RuntimeConfigError, check_inputs, read_model_json, read_sidecar_json

ENGINE_JSON_SCHEMA = "perception-engine/1"
SUPPORTED_TENSORRT_MAJOR = 10

INSTALL_HINT = (
    "install TensorRT 10.x with its Python bindings: on a Jetson Orin, JetPack 6.1 or later (JetPack 6.x ships "
    "TensorRT 10.3 from 6.1 on; 6.0 had 8.6) via apt install nvidia-jetpack (or python3-libnvinfer), in a venv "
    "created with --system-site-packages so that it sees them; on an x86 host with an NVIDIA GPU, NVIDIA's "
    "TensorRT 10 tarball (pip install its python/tensorrt-10.*.whl) or pip install tensorrt-cu12 from NVIDIA's "
    "index (https://pypi.nvidia.com)")


class TensorRTNotAvailable(RuntimeError):
    """``tensorrt`` does not import, or is not the supported major version (the message says what to install)."""


def import_tensorrt(equivalent: str = "") -> Any:
    """The ``tensorrt`` module, checked to be 10.x. ``equivalent``: a trtexec command doing the same job, appended
    to the message when TensorRT is missing."""
    try:
        import tensorrt as trt
    except ImportError as err:
        tail = f" Without the Python bindings, the same with trtexec: {equivalent}" if equivalent else ""
        raise TensorRTNotAvailable(f"TensorRT's Python module does not import ({err}); {INSTALL_HINT}.{tail}") from None
    major = int(str(trt.__version__).split(".")[0])
    if major != SUPPORTED_TENSORRT_MAJOR:
        raise TensorRTNotAvailable(
            f"TensorRT {trt.__version__} is installed; this code supports the TensorRT {SUPPORTED_TENSORRT_MAJOR}.x "
            "Python API only (named I/O tensors, execute_async_v3, explicit batch; JetPack 6.x on Jetson Orin). "
            f"{INSTALL_HINT}")
    return trt


def read_engine_json(folder: str | Path) -> dict[str, Any]:
    return read_sidecar_json(Path(folder) / "engine.json", ENGINE_JSON_SCHEMA, "build the engine folder with "
                             f"perception-engine build --onnx EXPORT_DIR --out {folder}",
                             "rebuild with perception-engine build")


def device_info() -> dict[str, Any]:
    """Name and compute capability of CUDA device 0 through libcudart (ctypes, via polygraphy's loader):
    {"name": str, "compute_capability": "8.7"}; "unknown" entries with the reason when they cannot be read."""
    import ctypes

    try:
        from polygraphy import cuda

        lib = cuda.wrapper().handle
        # cudaDeviceProp starts with char name[256] in every CUDA version; the buffer is larger than the struct.
        props = ctypes.create_string_buffer(8192)
        get = getattr(lib, "cudaGetDeviceProperties_v2", None) or lib.cudaGetDeviceProperties
        if get(props, 0) != 0:
            raise OSError("cudaGetDeviceProperties failed")
        major, minor = ctypes.c_int(), ctypes.c_int()
        lib.cudaDeviceGetAttribute(ctypes.byref(major), 75, 0)  # cudaDevAttrComputeCapabilityMajor
        lib.cudaDeviceGetAttribute(ctypes.byref(minor), 76, 0)  # cudaDevAttrComputeCapabilityMinor
        return {"name": props.raw[:256].split(b"\0", 1)[0].decode(errors="replace"),
                "compute_capability": f"{major.value}.{minor.value}"}
    except Exception as err:  # noqa: BLE001 - metadata only: the build itself reports real CUDA failures
        return {"name": f"unknown ({type(err).__name__}: {err})", "compute_capability": "unknown"}


class TensorRTRunner:
    """Runs ``<folder>/model.engine`` with TensorRT on CUDA device 0, checking inputs against the folder's
    ``model.json`` exactly as ``OnnxRunner`` does; outputs come back with ``model.json``'s dtypes.

    Inputs and outputs keep the export's dtypes: TensorRT 10 takes BOOL, UINT8 and INT64 network I/O, so the
    masks (bool), images (uint8) and pillar cells (int64) are copied as they are.

    A temporal export (model.json ``temporal``) is run the same way: its state inputs (``prev_bev``,
    ``cur_from_prev``, ``prev_dt``, ``prev_valid``) and output (``bev_state``) are I/O tensors like the others, and
    ``Pipeline`` keeps the state per stream on the host (one C x H x W copy each way per frame; unverified here:
    no TensorRT on the development machines)."""

    def __init__(self, folder: str | Path, engine_file: str = "model.engine"):
        trt = import_tensorrt()
        from polygraphy import cuda

        self.folder = Path(folder)
        self.meta = read_model_json(folder)
        self.sidecar = read_engine_json(folder)
        if self.sidecar["tensorrt_version"] != trt.__version__:
            raise RuntimeConfigError(
                f"{self.folder / 'engine.json'}: the engine was built with TensorRT {self.sidecar['tensorrt_version']} "
                f"but {trt.__version__} is installed; engines are not portable across TensorRT versions: rebuild with "
                f"perception-engine build --onnx EXPORT_DIR --precision {self.sidecar['precision']} --out {folder}")
        here = device_info()
        built = self.sidecar.get("device", {})
        if "unknown" not in (here["compute_capability"], built.get("compute_capability", "unknown")) and \
                here["compute_capability"] != built["compute_capability"]:
            raise RuntimeConfigError(
                f"{self.folder / 'engine.json'}: built on {built.get('name')} (compute capability "
                f"{built['compute_capability']}), this is {here['name']} ({here['compute_capability']}); engines are "
                f"tied to the GPU: rebuild on this machine with perception-engine build")
        path = self.folder / engine_file
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: build it with perception-engine build")
        self._logger = trt.Logger(trt.Logger.WARNING)  # must outlive runtime and engine
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise RuntimeConfigError(f"{path}: TensorRT could not deserialise the engine (see its log above); "
                                     "rebuild it on this machine with perception-engine build")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        engine_outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.output_names = [o["name"] for o in self.meta["outputs"]]
        expected_inputs = [i["name"] for i in self.meta["inputs"]]
        if sorted(self.input_names) != sorted(expected_inputs) or not set(self.output_names) <= set(engine_outputs):
            raise RuntimeConfigError(
                f"{path}: engine inputs {self.input_names} / outputs {engine_outputs} do not match "
                f"{self.folder / 'model.json'} (inputs {expected_inputs}, outputs {self.output_names}): the engine "
                "was built from another export; rebuild it")
        self.stream = cuda.Stream()
        self.buffers: dict[str, Any] = {}
        self.dtypes: dict[str, np.dtype] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        for name in names:
            shape = tuple(self.engine.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise RuntimeConfigError(f"{path}: tensor '{name}' has a dynamic shape {shape}; the export has "
                                         "static shapes: rebuild from perception-export's model.onnx")
            self.shapes[name] = shape
            self.dtypes[name] = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            self.buffers[name] = cuda.DeviceArray(shape=shape, dtype=self.dtypes[name])
            if not self.context.set_tensor_address(name, self.buffers[name].ptr):
                raise RuntimeConfigError(f"{path}: TensorRT refused the device address of tensor '{name}'")
        self._out_dtypes = {o["name"]: np.dtype(o["dtype"]) for o in self.meta["outputs"]}

    def infer(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = check_inputs(self.meta, self.folder, arrays)
        hosts = []  # kept alive until the stream is synchronised
        for name in self.input_names:
            host = np.ascontiguousarray(feeds[name], dtype=self.dtypes[name])
            hosts.append(host)
            self.buffers[name].copy_from(host, self.stream)
        if not self.context.execute_async_v3(self.stream.ptr):
            raise RuntimeError(f"TensorRT execute_async_v3 failed on {self.folder / 'model.engine'} (see its log)")
        out = {}
        for name in self.output_names:
            out[name] = np.empty(self.shapes[name], self.dtypes[name])
            self.buffers[name].copy_to(out[name], self.stream)
        self.stream.synchronize()
        return {k: v.astype(self._out_dtypes[k], copy=False) for k, v in out.items()}

    def close(self) -> None:
        """Free the device buffers and the stream (also done by the process exit)."""
        for buf in self.buffers.values():
            buf.free()
        self.buffers = {}
        if self.stream is not None:
            self.stream.free()
            self.stream = None
