"""ONNX Runtime runner: ``infer(inputs) -> outputs`` on numpy arrays; no torch import (runs where only
onnxruntime is installed).

An export folder is untrusted input, checked on load: ``model.json`` must parse and carry the fields the runtimes
use; each graph file must match its sha256 in ``model.json`` (``files``), so a truncated copy or a graph from
another export beside this ``model.json`` is refused; the graph's own metadata (classes, camera channels, config
hash, written into the ONNX file by perception-export) must agree with ``model.json``; and the graph's input and
output names and shapes must be the ones ``model.json`` lists."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

MODEL_JSON_SCHEMA = "perception-model/1"


class RuntimeConfigError(ValueError):
    """An export folder is unusable (names the file and what is wrong)."""


# graph metadata_props written by perception-export, compared with model.json on load
GRAPH_META_KEYS = {"perception.classes": "classes", "perception.camera_channels": "camera_channels",
                   "perception.config_hash": "config_hash"}
_FIELDS = {"inputs": list, "outputs": list, "config": dict, "stereo_pairs": list}


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_sidecar_json(path: Path, schema: str, missing_fix: str, fix: str) -> dict[str, Any]:
    """A runtime's JSON sidecar (model.json, engine.json): a JSON object with the ``schema`` key, else a one-line
    error ending in what to do (``missing_fix`` when the file is absent, ``fix`` when it is unusable)."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: {missing_fix}")
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RuntimeConfigError(f"{path}: not valid JSON ({err}); {fix}") from None
    if not isinstance(meta, dict):
        raise RuntimeConfigError(f"{path}: must be a JSON object, got {type(meta).__name__}; {fix}")
    if meta.get("schema") != schema:
        raise RuntimeConfigError(f"{path}: schema {meta.get('schema')!r}, expected {schema!r}")
    return meta


def read_model_json(folder: str | Path) -> dict[str, Any]:
    """``<folder>/model.json``, parsed and checked for the fields and types the runtimes rely on."""
    path = Path(folder) / "model.json"
    meta = read_sidecar_json(path, MODEL_JSON_SCHEMA, f"export with perception-export --out {folder}",
                             "re-export with perception-export")
    for key, kind in _FIELDS.items():
        if not isinstance(meta.get(key), kind):
            raise RuntimeConfigError(f"{path}: field '{key}' is {type(meta.get(key)).__name__}, expected "
                                     f"{kind.__name__}; re-export with perception-export")
    for group in ("inputs", "outputs"):
        for i, spec in enumerate(meta[group]):
            ok = (isinstance(spec, dict) and isinstance(spec.get("name"), str) and isinstance(spec.get("shape"), list)
                  and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in spec["shape"])
                  and isinstance(spec.get("dtype"), str))
            if ok:
                try:
                    np.dtype(spec["dtype"])
                except TypeError:
                    ok = False
            if not ok:
                raise RuntimeConfigError(f"{path}: {group}[{i}] = {str(spec)[:120]} is not "
                                         "{name, shape: [ints], dtype}; re-export with perception-export")
    classes = meta.get("classes")
    if classes is not None:
        cfg_classes = meta["config"].get("classes")
        if not isinstance(classes, list) or (cfg_classes is not None and list(cfg_classes) != classes):
            raise RuntimeConfigError(f"{path}: 'classes' {str(classes)[:120]} disagrees with config.classes "
                                     f"{str(cfg_classes)[:120]}; re-export with perception-export")
    cams = meta.get("camera_channels")
    images = next((i for i in meta["inputs"] if i["name"] == "images"), None)
    if cams is not None and images is not None and len(images["shape"]) > 1 and len(cams) != images["shape"][1]:
        raise RuntimeConfigError(f"{path}: {len(cams)} camera_channels {cams} but input 'images' has "
                                 f"{images['shape'][1]} cameras; re-export with perception-export")
    return meta


def check_graph_file(meta: dict[str, Any], folder: str | Path, model_file: str) -> Path:
    """The graph file exists and matches its sha256 in model.json (``files``); one without a recorded hash (an
    export older than the hashes) is used with a warning."""
    path = Path(folder) / model_file
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    want = (meta.get("files") or {}).get(model_file)
    if want is None:
        print(f"warning: {Path(folder) / 'model.json'} records no sha256 for {model_file} (an export older than the "
              "hashes): it cannot be checked against this model.json; re-export to add it", file=sys.stderr)
    elif file_sha256(path) != want:
        raise RuntimeConfigError(f"{path}: sha256 differs from the one in {Path(folder) / 'model.json'}: the graph is "
                                 "truncated, corrupted, or from another export; re-export the whole folder "
                                 "(perception-export --out)")
    return path


def check_graph_metadata(meta: dict[str, Any], folder: str | Path, model_file: str, graph_meta: dict[str, str],
                         inputs: dict[str, list], outputs: list[str]) -> None:
    """model.json against the graph: the metadata perception-export wrote into it (classes, camera channels,
    config hash) and the input/output names and shapes."""
    src = Path(folder) / model_file
    for key, field in GRAPH_META_KEYS.items():
        if key in graph_meta and field in meta:
            have = json.loads(graph_meta[key]) if field != "config_hash" else graph_meta[key]
            if have != meta[field]:
                raise RuntimeConfigError(f"{Path(folder) / 'model.json'}: '{field}' {str(meta[field])[:120]} "
                                         f"disagrees with the graph {src} ({str(have)[:120]}): this model.json "
                                         "belongs to another export; re-export the whole folder")
    want_in = {i["name"]: i["shape"] for i in meta["inputs"]}
    if set(inputs) != set(want_in) or any(
            len(shape) != len(want_in[n]) or any(isinstance(d, int) and d != w for d, w in zip(shape, want_in[n]))
            for n, shape in inputs.items()):
        raise RuntimeConfigError(f"{src}: graph inputs {inputs} differ from {Path(folder) / 'model.json'} "
                                 f"{want_in}; re-export the whole folder")
    want_out = [o["name"] for o in meta["outputs"]]
    if sorted(outputs) != sorted(want_out):
        raise RuntimeConfigError(f"{src}: graph outputs {outputs} differ from {Path(folder) / 'model.json'} "
                                 f"{want_out}; re-export the whole folder")


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
        path = check_graph_file(self.meta, folder, model_file)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types for every unreadable graph
            text = " ".join(str(err).split())[:300]
            raise RuntimeConfigError(f"{path}: not a loadable ONNX graph ({type(err).__name__}: {text}); re-export "
                                     "with perception-export") from None
        check_graph_metadata(self.meta, folder, model_file, self.session.get_modelmeta().custom_metadata_map,
                             {i.name: i.shape for i in self.session.get_inputs()},
                             [o.name for o in self.session.get_outputs()])
        self.inputs = {i["name"]: i for i in self.meta["inputs"]}
        self.output_names = [o["name"] for o in self.meta["outputs"]]

    def infer(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = check_inputs(self.meta, self.folder, arrays)
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))
