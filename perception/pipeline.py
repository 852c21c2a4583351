"""One ``infer(frame) -> Detections`` for every backend, sharing the data pipeline's preprocessing.

Frame -> ``perception.data.batch.input_arrays`` (the same pillarisation and tensors for every backend) -> a
``Runner`` (input arrays by ``perception.model.network.INPUT_NAMES`` -> decoded output arrays by
``perception.model.decode.OUTPUT_NAMES``) -> ``postprocess`` -> ``Detections``. Runners:

- ``TorchRunner``: the PyTorch network (``Pipeline.from_checkpoint(path)``, or ``Pipeline.from_module(net, cfg,
  stereo)`` for a network already in memory, e.g. during training);
- ``ArrayRunner`` over ``perception.runtime``'s ``OnnxRunner`` (``from_onnx(export_dir)``) or ``TensorRTRunner``
  (``from_engine(engine_dir)``); these import no torch (the config travels in model.json).

``load_network(checkpoint, config, overrides)`` is the one way to rebuild a checkpoint's network (export, tests,
``from_checkpoint``).

A temporal network (``model.temporal.enabled``) is stateless as a graph; the Pipeline keeps its state per stream
(``perception.streaming.StreamState``: ``infer(frame, stream=...)``, default one stream), adds the temporal inputs
to every runner call and keeps the returned ``bev_state``, so ``infer(frame)`` stays the API for every backend. The
state is reset on a new scene (``Frame.scene_token``), a time jump backwards or a gap above the configured maximum;
``temporal_counts()`` says how often and why.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol, Sequence

import numpy as np

from calibration.transforms import yaw_to_quaternion
from perception.attributes import attribute_from_class_and_speed
from perception.config import Config, config_from_dict, config_to_dict, load_config
from perception.coverage import CoverageCheck
from perception.data.batch import PillarSpec, input_arrays
from perception.data.frame import Frame
from perception.runtime.onnxruntime import OnnxRunner
from perception.runtime.tensorrt import TensorRTRunner
from perception.streaming import StreamState, merge_counts

STATE_OUTPUT = "bev_state"  # perception.model.network.STATE_OUTPUT (not imported: it would import torch)


@dataclass
class Detections:
    """Detections of one Frame in ego@t0 (K detections above the score threshold, highest score first).

    boxes: (K, 9) [x, y, z, w, l, h, yaw, vx, vy] (m, rad, m/s over ground in ego axes); scores (K,);
    labels (K,) class indices; names / attributes (K,) str; trajectories (K, M, T, 2) absolute ego@t0 positions
    at 2 Hz; mode_probs (K, M)."""

    sample_token: str
    t0: int
    global_from_ego: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    names: np.ndarray
    attributes: np.ndarray
    trajectories: np.ndarray
    mode_probs: np.ndarray
    timing: dict[str, float] = field(default_factory=dict)
    # temporal networks: {"warm": bool, "gap_s": age of the previous state or None, "reset": reason or None}
    temporal: dict[str, Any] | None = None

    def __len__(self) -> int:
        return len(self.scores)

    def to_nuscenes(self) -> list[dict[str, Any]]:
        """nuScenes detection results (global frame): translation, size [w, l, h], rotation [w, x, y, z],
        velocity [vx, vy] (global axes), detection_name, float detection_score, attribute_name."""
        g = self.global_from_ego
        out = []
        ego_yaw = np.arctan2(g[1, 0], g[0, 0])
        for b, s, name, attr in zip(self.boxes.astype(np.float64), self.scores, self.names, self.attributes):
            centre = g[:3, :3] @ b[:3] + g[:3, 3]
            vel = g[:2, :2] @ b[7:9]
            # yaw about the global z; ego roll/pitch are ignored for the box orientation (boxes are upright)
            q = yaw_to_quaternion(float(b[6] + ego_yaw))
            out.append({"sample_token": self.sample_token, "translation": [float(v) for v in centre],
                        "size": [float(v) for v in b[3:6]], "rotation": [float(v) for v in q],
                        "velocity": [float(v) for v in vel], "detection_name": str(name),
                        "detection_score": float(s), "attribute_name": str(attr)})
        return out


def postprocess(raw: dict[str, np.ndarray], frame: Frame, class_names: tuple[str, ...], score_threshold: float,
                index: int = 0) -> Detections:
    """Fixed-size decoded outputs (batch item ``index``) -> Detections above ``score_threshold``."""
    scores = np.asarray(raw["scores"][index])
    keep = (scores > score_threshold) & (np.asarray(raw["labels"][index]) >= 0)
    boxes = np.asarray(raw["boxes"][index])[keep]
    labels = np.asarray(raw["labels"][index])[keep].astype(np.int64)
    speed = np.hypot(boxes[:, 7], boxes[:, 8]) if len(boxes) else np.zeros(0)
    attrs = np.array(attribute_from_class_and_speed(labels, speed, class_names), dtype="<U40").reshape(-1)
    return Detections(frame.sample_token, frame.t0, frame.global_from_ego, boxes, scores[keep], labels,
                      np.array([class_names[i] for i in labels], dtype="<U32"), attrs,
                      np.asarray(raw["trajectories"][index])[keep], np.asarray(raw["mode_probs"][index])[keep])


class Runner(Protocol):
    """What a Pipeline runs: network input arrays (``INPUT_NAMES``, batch first) -> decoded outputs
    (``OUTPUT_NAMES``: boxes, scores, labels, trajectories, mode_probs), numpy in and out."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class LoadedNetwork(NamedTuple):
    """A checkpoint's network rebuilt: ``net`` (FusionNet, weights loaded, in training mode as built), its
    ``cfg`` and the ``stereo_pairs`` it was built for."""

    net: Any
    cfg: Config
    stereo_pairs: tuple[tuple[int, int], ...]


def load_network(checkpoint: str | Path, config: str | Path | None = None, overrides: Sequence[str] = (),
                 **build_options: Any) -> LoadedNetwork:
    """The network of ``checkpoint``'s config, or of ``config`` (a YAML) when given, with ``overrides`` (KEY=VALUE,
    as ``--set``) applied, loaded with the checkpoint's weights (strict: weights that do not fit the network are a
    CheckpointError naming them). The checkpoint is read once. ``build_options`` go to ``build_model`` (other
    forms of blocks with the same weights, e.g. the defining lift of ``tests/reference/model.py``)."""
    from perception.model.network import build_model
    from perception.train.checkpoint import load_checkpoint, load_weights

    ckpt = load_checkpoint(checkpoint)
    if config is not None:
        cfg = load_config(config, overrides)
    elif overrides:
        cfg = config_from_dict(config_to_dict(ckpt["config"]), overrides, source=str(checkpoint))
    else:
        cfg = ckpt["config"]
    stereo = tuple(tuple(int(i) for i in p) for p in ckpt.get("stereo_pairs", []))
    # the checkpoint's weights replace any initialisation: model.camera.pretrained (a backbone file used when the
    # run started) is not read, so a checkpoint loads where that file does not exist
    net = build_model(cfg, stereo, init_weights=False, **build_options)
    load_weights(net, ckpt["model"], checkpoint if config is None else f"{checkpoint} (into the network of {config})")
    return LoadedNetwork(net, cfg, stereo)


class Pipeline:
    """Frame in, Detections out. Build with ``from_checkpoint``, ``from_module``, ``from_onnx`` or ``from_engine``
    (or directly from a config and any ``Runner``)."""

    def __init__(self, cfg: Config, runner: Runner, stereo_pairs: tuple = (), score_threshold: float = 0.05):
        self.cfg = cfg
        self.runner = runner
        self.stereo_pairs = tuple(tuple(p) for p in stereo_pairs)
        self.score_threshold = score_threshold
        # warns once per camera set whose overlap exceeds what the lift samples (model.camera.cameras_per_voxel)
        self.coverage_check = CoverageCheck(cfg)
        self.streams: dict[str, StreamState] = {}  # temporal networks: the state of each stream
        self.no_history = False  # True: every frame a cold start (perception-test --no-history); set before infer

    @property
    def temporal(self) -> bool:
        return bool(self.cfg.model.temporal.enabled)

    @property
    def state_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of a temporal network's ``bev_state``."""
        return (self.cfg.model.fusion.channels, *self.cfg.data.grid.bev_shape)

    def stream(self, name: str = "") -> StreamState:
        """The temporal state of stream ``name`` (created on first use)."""
        if name not in self.streams:
            self.streams[name] = StreamState(self.cfg.model.temporal, self.state_shape, self.no_history)
        return self.streams[name]

    def reset_streams(self) -> None:
        """Forget every stream's state (the next frame of each is a cold start)."""
        self.streams = {}

    def temporal_counts(self) -> dict[str, Any]:
        """Over every stream: frames that got a previous state (``warm``) and cold starts by reason (``resets``,
        reasons in ``perception.streaming.RESET_REASONS``)."""
        return merge_counts([st.counts() for st in self.streams.values()])

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu", score_threshold: float = 0.05,
                        config: str | Path | None = None, overrides: Sequence[str] = ()) -> "Pipeline":
        """``load_network(path, config, overrides)`` in eval mode on ``device``."""
        net, cfg, stereo = load_network(path, config, overrides)
        return cls.from_module(net.eval().to(device), cfg, stereo, score_threshold)

    @classmethod
    def from_module(cls, net: Any, cfg: Config, stereo_pairs: Sequence[Sequence[int]] = (),
                    score_threshold: float = 0.05) -> "Pipeline":
        """A network in memory (a FusionNet built by ``build_model(cfg, stereo_pairs)``), run as it is: on the
        device of its parameters, in its current train/eval mode (call ``net.eval()`` for inference)."""
        return cls(cfg, TorchRunner(net), stereo_pairs, score_threshold)

    @classmethod
    def from_onnx(cls, folder: str | Path, score_threshold: float = 0.05, threads: int | None = None,
                  model_file: str = "model.onnx") -> "Pipeline":
        """ONNX Runtime on ``<folder>/model.onnx`` (or ``model_int8.onnx``, the Q/DQ graph) written by
        perception-export; the config travels in model.json. No torch in the inference path."""
        runner = OnnxRunner(folder, model_file=model_file, threads=threads)
        cfg = config_from_dict(runner.meta["config"], source=str(Path(folder) / "model.json"))
        return cls(cfg, ArrayRunner(runner), tuple(tuple(p) for p in runner.meta["stereo_pairs"]), score_threshold)

    @classmethod
    def from_engine(cls, folder: str | Path, score_threshold: float = 0.05) -> "Pipeline":
        """TensorRT on ``<folder>/model.engine`` written by perception-engine build (the folder carries the
        export's model.json, hence the config). Raises TensorRTNotAvailable when ``tensorrt`` does not import."""
        runner = TensorRTRunner(folder)
        cfg = config_from_dict(runner.meta["config"], source=str(Path(folder) / "model.json"))
        return cls(cfg, ArrayRunner(runner), tuple(tuple(p) for p in runner.meta["stereo_pairs"]), score_threshold)

    def infer(self, frame: Frame, stream: str = "") -> Detections:
        """Detections of ``frame``; a temporal network uses and updates the state of ``stream`` (frames of one
        stream must come in time order; another scene token, a jump backwards or a long gap resets it)."""
        t = time.perf_counter()
        batch = self.prepare(frame)
        det = self.infer_prepared(frame, batch, stream)
        det.timing["preprocess_s"] = time.perf_counter() - t - det.timing["network_s"] - det.timing["postprocess_s"]
        return det

    def prepare(self, frame: Frame) -> dict[str, np.ndarray]:
        """The network's input arrays for one Frame (pillarisation included): the CPU work before the network,
        which a real-time caller runs in another thread while the network runs on the previous frame."""
        self.coverage_check(tuple(str(c) for c in frame.camera_channels), frame.img_from_ego, frame.camera_valid)
        return input_arrays([frame], PillarSpec.from_config(self.cfg))

    def infer_prepared(self, frame: Frame, batch: dict[str, np.ndarray], stream: str = "") -> Detections:
        """Network and post-processing on the arrays ``prepare(frame)`` returned (with a temporal network: plus
        the state of ``stream``, which this call advances; call in time order)."""
        t = time.perf_counter()
        state = None
        if self.temporal:
            state = self.stream(stream)
            batch = {**batch, **state.inputs(frame.scene_token, frame.t0, frame.global_from_ego)}
        raw = self.runner(batch)
        t_net = time.perf_counter()
        if state is not None:
            state.push(frame.t0, frame.global_from_ego, raw.pop(STATE_OUTPUT)[0])
        det = postprocess(raw, frame, self.cfg.classes, self.score_threshold)
        det.timing = {"preprocess_s": 0.0, "network_s": t_net - t, "postprocess_s": time.perf_counter() - t_net}
        if state is not None:
            det.temporal = {"warm": state.last_reason is None, "gap_s": state.last_gap_s, "reset": state.last_reason}
        return det


class TorchRunner:
    """A PyTorch FusionNet as a ``Runner`` (``net.detect`` under ``no_grad`` on the device of its parameters)."""

    def __init__(self, net: Any):
        self.net = net

    def __call__(self, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        import torch

        from perception.model.network import INPUT_NAMES

        device = next(self.net.parameters()).device
        names = getattr(self.net, "input_names", INPUT_NAMES)  # a temporal FusionNet adds its state inputs
        with torch.no_grad():
            out = self.net.detect(*[torch.as_tensor(batch[k]).to(device) for k in names])
        return {k: v.cpu().numpy() for k, v in out.items()}


class ArrayRunner:
    """A torch-free runtime (``OnnxRunner``, ``TensorRTRunner``: ``infer(arrays) -> arrays``) as a ``Runner``."""

    def __init__(self, runtime: Any):
        self.runtime = runtime

    def __call__(self, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        return self.runtime.infer(batch)
