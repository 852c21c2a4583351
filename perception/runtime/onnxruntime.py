"""ONNX Runtime runner: ``infer(inputs) -> outputs`` on numpy arrays; no torch import (runs where only
onnxruntime is installed)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

MODEL_JSON_SCHEMA = "perception-model/1"


class RuntimeConfigError(ValueError):
    """An export folder is unusable (names the file and what is wrong)."""


def read_model_json(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / "model.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: export with perception-export --out {folder}")
    meta = json.loads(path.read_text())
    if meta.get("schema") != MODEL_JSON_SCHEMA:
        raise RuntimeConfigError(f"{path}: schema {meta.get('schema')!r}, expected {MODEL_JSON_SCHEMA!r}")
    return meta


def check_inputs(meta: dict[str, Any], folder: str | Path, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inputs ``model.json`` lists, in its order, checked for presence and shape and cast to its dtypes.
    Shared by every runtime (ONNX Runtime, TensorRT), so a rig mismatch is the same clear error everywhere."""
    feeds = {}
    names = [i["name"] for i in meta["inputs"]]
    for spec in meta["inputs"]:
        name = spec["name"]
        if name not in arrays:
            raise RuntimeConfigError(f"input '{name}' is missing (model.json lists {names})")
        a = np.asarray(arrays[name])
        if list(a.shape) != spec["shape"]:
            raise RuntimeConfigError(f"input '{name}' has shape {list(a.shape)} but {Path(folder) / 'model.json'} "
                                     f"expects {spec['shape']} (camera count, image size and batch are fixed at "
                                     "export: re-export for this rig)")
        feeds[name] = a.astype(spec["dtype"], copy=False)
    return feeds


class OnnxRunner:
    """Runs ``<folder>/model.onnx`` (or another file of the folder) with ONNX Runtime on the CPU (or the first
    provider available), checking input shapes and dtypes against ``model.json``."""

    def __init__(self, folder: str | Path, model_file: str = "model.onnx", threads: int | None = None,
                 providers: list[str] | None = None, spin: bool = False):
        """``spin``: let ONNX Runtime's intra-op threads busy-wait between operators (its default). Off here: the
        real-time replay runs its other stages on the same cores, and spinning threads take their time (measured on
        the 2-core development machine while busy, load ~13: the tiny network alone 1.9x and the replay 2.3x faster
        without spinning)."""
        import onnxruntime as ort

        self.folder = Path(folder)
        self.meta = read_model_json(folder)
        path = self.folder / model_file
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self.session = ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])
        self.inputs = {i["name"]: i for i in self.meta["inputs"]}
        self.output_names = [o["name"] for o in self.meta["outputs"]]

    def infer(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = check_inputs(self.meta, self.folder, arrays)
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))
