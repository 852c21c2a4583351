"""Experiment configuration: frozen, typed dataclasses loaded from YAML.

- ``load_config(path, overrides)`` reads YAML with ``yaml.safe_load``, applies
  ``--set a.b.c=value`` overrides (the value parsed as YAML, then checked against the
  dataclass field's type), builds the dataclasses and validates them in ``__post_init__``.
- Unknown keys are errors that list the known ones; derived values are properties.
- ``dump_config(cfg)`` writes the fully resolved config (``config.resolved.yaml`` of a run).
- Switches are booleans named ``enabled``. YAML 1.1 reads ``on/off/yes/no`` as booleans,
  so a string field that receives a boolean is an error asking for quotes.

Each later part of the system adds its section here; everything goes through this one loader.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml

REPO = Path(__file__).resolve().parents[1]

DETECTION_CLASSES = (
    "car", "truck", "bus", "trailer", "construction_vehicle",
    "pedestrian", "motorcycle", "bicycle", "traffic_cone", "barrier",
)


class ConfigError(ValueError):
    """A config value is unusable. Names the file, the dotted key and the value."""


# ---------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------


# the BEV grid's (H, W) must be divisible by this: perception/model/bev_decoder.py halves and restores the grid
BEV_STRIDE = 2


@dataclass(frozen=True)
class GridConfig:
    """The BEV grid in ego@t0: x forward, y left, z up; metres."""

    x_range: tuple[float, float] = (-51.2, 51.2)
    y_range: tuple[float, float] = (-51.2, 51.2)
    z_range: tuple[float, float] = (-5.0, 3.0)
    resolution: float = 0.8  # metres per BEV cell

    def __post_init__(self) -> None:
        for name in ("x_range", "y_range", "z_range"):
            lo, hi = getattr(self, name)
            if not lo < hi:
                raise ConfigError(f"grid.{name}: must be ordered [low, high], got [{lo}, {hi}]")
        if self.resolution <= 0:
            raise ConfigError(f"grid.resolution: must be > 0 metres, got {self.resolution}")
        for name, (lo, hi) in (("x_range", self.x_range), ("y_range", self.y_range)):
            cells = (hi - lo) / self.resolution
            if abs(cells - round(cells)) > 1e-6:
                raise ConfigError(f"grid.{name}: extent {hi - lo} m is not a whole number of "
                                  f"{self.resolution} m cells ({cells:.3f})")
            if round(cells) % BEV_STRIDE:
                raise ConfigError(f"grid.{name}: {round(cells)} cells of {self.resolution} m over [{lo}, {hi}]; the "
                                  f"BEV decoder's stride-{BEV_STRIDE} context branch needs a multiple of {BEV_STRIDE}: "
                                  f"widen or narrow the range by one cell ({self.resolution} m) or change the "
                                  "resolution")

    @property
    def bev_shape(self) -> tuple[int, int]:
        """(H, W) = (cells along x, cells along y)."""
        return (round((self.x_range[1] - self.x_range[0]) / self.resolution),
                round((self.y_range[1] - self.y_range[0]) / self.resolution))


@dataclass(frozen=True)
class SyncConfig:
    """Time alignment of every sensor to t0 through the ego poses (false = all treated as captured at t0)."""

    enabled: bool = True
    max_extrapolation_ms: float = 100.0

    def __post_init__(self) -> None:
        if self.max_extrapolation_ms < 0:
            raise ConfigError(f"data.sync.max_extrapolation_ms: must be >= 0, got {self.max_extrapolation_ms}")


RADAR_POINT_FIELDS = ("x", "y", "z", "rcs", "vx", "vy", "dt", "sensor")
# The radar encoder's per-point features, one source for the pillariser (perception/data/batch.py), the network
# (perception/model/network.py) and its input scales (perception/model/radar/encoder.py): these Frame radar fields,
# then the point's offset from its pillar's centre, which the pillariser appends.
PILLAR_POINT_FIELDS = ("x", "y", "z", "rcs", "vx", "vy", "dt")
PILLAR_FEATURES = PILLAR_POINT_FIELDS + ("dx", "dy")


@dataclass(frozen=True)
class RadarFilterConfig:
    """Which nuScenes radar states to keep; null keeps every value. The devkit's defaults are dyn_prop 0-6
    (dropping 7 "stopped"), invalid_state [0], ambig_state [3]; a fusion model wants stationary returns too."""

    dyn_prop: tuple[int, ...] | None = None
    invalid_state: tuple[int, ...] | None = (0,)
    ambig_state: tuple[int, ...] | None = (3,)


@dataclass(frozen=True)
class RadarDataConfig:
    """Multi-sweep radar input. Sweeps of each unit are taken newest first from ``t0 + future_tolerance_ms``
    back to ``t0 - window_ms`` (offline is non-causal: nuScenes key-frame radar sweeps straddle t0)."""

    sweeps: int = 6
    window_ms: float = 500.0
    future_tolerance_ms: float = 50.0
    max_points: int = 1500  # P_max: newest points first when there are more
    filter: RadarFilterConfig = field(default_factory=RadarFilterConfig)
    fields: tuple[str, ...] = RADAR_POINT_FIELDS

    def __post_init__(self) -> None:
        if self.sweeps < 1:
            raise ConfigError(f"data.radar.sweeps: must be >= 1, got {self.sweeps}")
        if self.max_points < 1:
            raise ConfigError(f"data.radar.max_points: must be >= 1, got {self.max_points}")
        if self.window_ms < 0 or self.future_tolerance_ms < 0:
            raise ConfigError("data.radar.window_ms and future_tolerance_ms: must be >= 0")
        unknown = [f for f in self.fields if f not in RADAR_POINT_FIELDS]
        if unknown or not {"x", "y", "z", "rcs", "vx", "vy", "dt"} <= set(self.fields):
            raise ConfigError(f"data.radar.fields: {list(self.fields)} must include x, y, z, rcs, vx, vy, dt and "
                              f"only use {list(RADAR_POINT_FIELDS)}")


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation (never applied at evaluation). BEV: rotation about z, scaling and flips
    applied to boxes, velocities, radar, trajectories and img_from_ego together. Image: resize jitter,
    crop jitter and horizontal flip per camera, with img_from_ego updated."""

    enabled: bool = True
    bev_rotate_deg: float = 22.5
    bev_scale: tuple[float, float] = (0.95, 1.05)
    bev_flip: bool = True
    image_scale: tuple[float, float] = (0.94, 1.06)
    image_crop_jitter: float = 0.05  # of the input height/width
    image_flip: bool = True
    image_rotate_deg: float = 0.0  # in-plane rotation about the input's centre, uniform in +-this (BEVDepth: 5.4)

    def __post_init__(self) -> None:
        for name in ("bev_scale", "image_scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ConfigError(f"data.augment.{name}: must be 0 < low <= high, got [{lo}, {hi}]")
        if not 0.0 <= self.image_rotate_deg <= 45.0:
            raise ConfigError(f"data.augment.image_rotate_deg: must be in [0, 45] degrees, got {self.image_rotate_deg}")


@dataclass(frozen=True)
class DropoutConfig:
    """Training-time modality dropout probabilities (per frame): the sensors are masked invalid."""

    camera_one: float = 0.0
    camera_all: float = 0.0
    radar_one: float = 0.0
    radar_all: float = 0.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            p = getattr(self, f.name)
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"data.dropout.{f.name}: must be a probability in [0, 1], got {p}")


@dataclass(frozen=True)
class LoaderConfig:
    batch_size: int = 4
    workers: int = 2
    pin_memory: bool = True
    max_boxes: int = 200  # GT boxes per frame after padding (a batch has fixed shapes)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.workers < 0 or self.max_boxes < 1:
            raise ConfigError("data.loader: batch_size >= 1, workers >= 0, max_boxes >= 1")


@dataclass(frozen=True)
class LidarDataConfig:
    """The key frame's LIDAR_TOP returns in ``Frame.lidar_points`` (depth targets and the depth metric only; never
    a network input). Empty where the root has no lidar."""

    enabled: bool = True


@dataclass(frozen=True)
class DataConfig:
    """Frames: camera images resized to fit ``image_size`` in width, then cropped to its height keeping the
    bottom (the sky carries nothing); radar from several sweeps; GT in ego@t0."""

    image_size: tuple[int, int] = (256, 704)  # (H, W) of the network input
    grid: GridConfig = field(default_factory=GridConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    radar: RadarDataConfig = field(default_factory=RadarDataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    dropout: DropoutConfig = field(default_factory=DropoutConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    lidar: LidarDataConfig = field(default_factory=LidarDataConfig)
    future_steps: int = 12  # 2 Hz trajectory targets (6 s)
    on_bad_file: Literal["mask", "skip"] = "mask"

    def __post_init__(self) -> None:
        h, w = self.image_size
        if h < 8 or w < 8 or h % 8 or w % 8:
            raise ConfigError(f"data.image_size: (H, W) must be multiples of 8 and >= 8, got [{h}, {w}]")


@dataclass(frozen=True)
class Switch:
    """A sub-feature that can be turned off (``enabled``)."""

    enabled: bool = True


@dataclass(frozen=True)
class CameraModelConfig:
    """Camera branch: ResNet (torchvision parameter names) + FPN neck at stride 16, depth net, backward lift."""

    enabled: bool = True
    backbone_depth: int = 18
    backbone_width: float = 1.0  # channel multiplier (narrow CPU variants < 1)
    backbone_blocks: tuple[int, int, int, int] | None = None  # None: the depth's standard blocks per stage
    pretrained: str = ""  # local torchvision ImageNet checkpoint (.pth), loaded with weights_only=True
    frozen_stages: int = -1
    neck_channels: int = 64
    depth_bins: int = 48
    depth_range: tuple[float, float] = (1.0, 60.0)
    heights: int = 8  # voxel centres per BEV cell for the backward lift
    # cameras the lift samples per voxel (those that see it, lowest index first; 0: every camera): 2 is exact for
    # a ring of monocular cameras, where neighbours overlap only pairwise (docs/decisions.md)
    cameras_per_voxel: int = 2
    radar_depth: Switch = field(default_factory=Switch)  # radar projected into the image feeds the depth net
    stereo: Switch = field(default_factory=Switch)  # plane-sweep cost volume for the rig's stereo pairs

    def __post_init__(self) -> None:
        if self.backbone_depth not in (18, 34, 50):
            raise ConfigError(f"model.camera.backbone_depth: must be 18, 34 or 50, got {self.backbone_depth}")
        lo, hi = self.depth_range
        if not 0 < lo < hi:
            raise ConfigError(f"model.camera.depth_range: must be 0 < min < max metres, got [{lo}, {hi}]")
        if self.depth_bins < 2 or self.heights < 1:
            raise ConfigError("model.camera.depth_bins >= 2 and heights >= 1 required")
        if isinstance(self.cameras_per_voxel, bool) or not isinstance(self.cameras_per_voxel, int) \
                or self.cameras_per_voxel < 0:
            raise ConfigError(f"model.camera.cameras_per_voxel: must be an integer >= 0 (0: every camera), got "
                              f"{self.cameras_per_voxel!r}")


@dataclass(frozen=True)
class RadarModelConfig:
    """Radar branch: pillars on the BEV grid (one pillar per BEV cell), point MLP, max, canvas, CNN."""

    enabled: bool = True
    channels: int = 64
    max_pillars: int = 1024
    max_points_per_pillar: int = 8


@dataclass(frozen=True)
class FusionConfig:
    kind: Literal["cross_attention", "conv"] = "cross_attention"
    channels: int = 64
    layers: int = 2
    heads: int = 4
    points: int = 4


@dataclass(frozen=True)
class HeadConfig:
    channels: int = 64
    max_detections: int = 200
    modes: int = 6
    steps: int = 12  # 2 Hz
    # waypoints as residuals over the constant-velocity extrapolation of the cell's predicted velocity
    # (perception/model/heads/trajectory_head.py); off for checkpoints trained before it (their offsets are direct)
    trajectory_residual: Switch = field(default_factory=lambda: Switch(False))
    # the heads read this frame's radar BEV beside the decoded BEV (issue 23: a short path from Doppler to the
    # velocity branch); off for checkpoints trained before it (their heads have fewer input channels)
    radar_skip: Switch = field(default_factory=lambda: Switch(False))


@dataclass(frozen=True)
class TemporalConfig:
    """Streaming temporal fusion (``perception/model/temporal.py``, docs/model.md): the single-frame BEV of an
    earlier processed frame, warped into the current ego frame, fused with the current BEV before the heads.

    Network: the graph takes the previous BEV, ``cur_from_prev`` (4x4), the gap and a validity flag; it returns the
    current single-frame BEV for a later call (the runners keep it: ``perception/streaming.py``).
    State policy (every runner, offline and replay): the previous state is the processed frame of the same stream
    whose age is nearest to ``target_gap_s``, used when that age is within ``gap_tolerance_s`` of the target and at
    most ``max_gap_s``; otherwise a cold start (validity 0). The state is dropped on a new scene, a time jump
    backwards, or when every kept state is older than ``max_gap_s``; at most ``history`` states are kept.
    Training (BEVDet4D style, docs/decisions.md): the previous key frame ``train_gaps`` key frames back (drawn
    uniformly, the largest available in the scene), with the current frame's BEV augmentation, its BEV computed
    without gradient; dropped (validity 0) with probability ``drop_previous`` so that a cold start works."""

    enabled: bool = False
    max_gap_s: float = 1.25
    target_gap_s: float = 0.5
    gap_tolerance_s: float = 0.25
    history: int = 16
    train_gaps: tuple[int, ...] = (1, 2)
    drop_previous: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.target_gap_s <= self.max_gap_s:
            raise ConfigError(f"model.temporal: need 0 < target_gap_s ({self.target_gap_s}) <= max_gap_s "
                              f"({self.max_gap_s})")
        if not 0 <= self.gap_tolerance_s < self.target_gap_s:
            raise ConfigError(f"model.temporal.gap_tolerance_s: must be in [0, target_gap_s = {self.target_gap_s}), "
                              f"got {self.gap_tolerance_s}")
        if self.history < 1:
            raise ConfigError(f"model.temporal.history: must be >= 1 kept states, got {self.history}")
        if not self.train_gaps or any(g < 1 for g in self.train_gaps):
            raise ConfigError(f"model.temporal.train_gaps: key frames back, each >= 1, got {list(self.train_gaps)}")
        if not 0.0 <= self.drop_previous <= 1.0:
            raise ConfigError(f"model.temporal.drop_previous: a probability in [0, 1], got {self.drop_previous}")


@dataclass(frozen=True)
class ModelConfig:
    camera: CameraModelConfig = field(default_factory=CameraModelConfig)
    radar: RadarModelConfig = field(default_factory=RadarModelConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    bev_channels: int = 64
    norm: Literal["batch", "group"] = "batch"
    temporal: TemporalConfig = field(default_factory=TemporalConfig)

    def __post_init__(self) -> None:
        if not (self.camera.enabled or self.radar.enabled):
            raise ConfigError("model.camera.enabled and model.radar.enabled are both false: enable at least one")
        if self.head.radar_skip.enabled and not self.radar.enabled:
            raise ConfigError("model.head.radar_skip.enabled needs model.radar.enabled (the heads read the radar BEV)")


@dataclass(frozen=True)
class AuxLossConfig:
    """A training-only loss term (``enabled``) and its weight in the total loss."""

    enabled: bool = False
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.weight >= 0:
            raise ConfigError(f"train: an auxiliary loss weight must be >= 0, got {self.weight}")


def _depth_loss_default() -> AuxLossConfig:
    return AuxLossConfig(False, 3.0)  # BEVDepth's depth_loss_factor


@dataclass(frozen=True)
class EmaConfig:
    """Exponential moving average of the weights (evaluated and saved in ``model.pt``); the effective decay ramps
    up as min(decay, (1 + step) / (10 + step)) so early averages do not hold the random init."""

    enabled: bool = False
    decay: float = 0.999

    def __post_init__(self) -> None:
        if not 0.0 < self.decay < 1.0:
            raise ConfigError(f"train.ema.decay: must be in (0, 1), got {self.decay}")


@dataclass(frozen=True)
class SoftModeTargetConfig:
    """The trajectory mode-probability target: off, one-hot on the mode closest to the truth (the winner); on,
    ``softmax(-ADE_m / temperature)`` over the modes (HiVT), ADE in metres (perception/train/losses.py says why)."""

    enabled: bool = False
    temperature: float = 2.0  # metres; HiVT uses 1 (benchmarks/bench_trajectory_modes.py, docs/decisions.md)

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ConfigError(f"train.trajectory_loss.soft_mode_target.temperature: must be > 0 (metres), got "
                              f"{self.temperature}")


@dataclass(frozen=True)
class TrajectoryLossConfig:
    """Trajectory supervision (perception/train/losses.py). ``median_mode``: mode 0 is regressed on every agent
    (its L1 optimum is the conditional median future), the other modes winner-takes-all among themselves; off,
    all modes winner-takes-all. ``soft_mode_target``: the mode-probability target."""

    median_mode: Switch = field(default_factory=lambda: Switch(False))
    soft_mode_target: SoftModeTargetConfig = field(default_factory=SoftModeTargetConfig)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation (AdamW + one-cycle), budget (steps and/or minutes), logging, evaluation and checkpoints."""

    split: str = "synth_train"
    val_split: str = "synth_val"
    steps: int = 2000  # optimiser steps (the one-cycle schedule spans them)
    max_minutes: float = 0.0  # 0: no time limit; otherwise stop (and checkpoint) after this wall time
    lr: float = 2e-3
    weight_decay: float = 0.01
    grad_clip: float = 35.0
    seed: int = 0
    amp: bool = True  # mixed precision where available (CUDA); ignored on CPU
    log_every: int = 10
    eval_every: int = 0  # 0: evaluate at the end only
    checkpoint_every: int = 200
    deterministic: bool = False
    # lidar depth supervision of the camera depth distribution (BCE over the bins at cells with a lidar return)
    depth_loss: AuxLossConfig = field(default_factory=_depth_loss_default)
    # perspective-view auxiliary head on the image features (2D centre heatmap, 2D size, centre depth); training only
    perspective: AuxLossConfig = field(default_factory=AuxLossConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    cbgs: Switch = field(default_factory=lambda: Switch(False))  # class-balanced grouping and sampling (CBGS)
    trajectory_loss: TrajectoryLossConfig = field(default_factory=TrajectoryLossConfig)
    # weight of the velocity (vx, vy) L1 against the other box regressions (1.0 each); 0.2 is CenterPoint's
    velocity_weight: float = 0.2

    def __post_init__(self) -> None:
        if self.steps < 1 or self.lr <= 0 or self.log_every < 1 or self.checkpoint_every < 1:
            raise ConfigError("train: steps >= 1, lr > 0, log_every >= 1 and checkpoint_every >= 1 required")
        if not self.velocity_weight >= 0:
            raise ConfigError(f"train.velocity_weight: must be >= 0, got {self.velocity_weight}")


@dataclass(frozen=True)
class Config:
    """One experiment. ``rig`` is a rig YAML path (relative to the config file's folder, or absolute)."""

    name: str
    rig: str = ""
    classes: tuple[str, ...] = DETECTION_CLASSES
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("name: must be a non-empty string")
        unknown = [c for c in self.classes if c not in DETECTION_CLASSES]
        if unknown:
            raise ConfigError(f"classes: {unknown} are not nuScenes detection classes; known: {list(DETECTION_CLASSES)}")
        if len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"classes: duplicates in {list(self.classes)}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# ---------------------------------------------------------------------------
# Generic typed construction
# ---------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert one YAML value against a field type. Raises ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} matches none of {_type_name(tp)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)} ({value!r})")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        vt = args[1] if args else Any
        return {str(k): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a string, got the boolean {value!r} (YAML 1.1 reads "
                              f"on/off/yes/no/true/false unquoted as booleans): quote the value")
        if not isinstance(value, (str, int, float)) or value is None:
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{key}: unsupported field type {_type_name(tp)}")


def _build(cls: type, data: Any, prefix: str = "") -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or '(top level)'}: expected a mapping for {cls.__name__}, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"{where}: unknown key; known keys here: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, hints[name], f"{prefix}.{name}" if prefix else name)
    missing = [n for n, f in fields.items()
               if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        where = f"{prefix}.{missing[0]}" if prefix else missing[0]
        raise ConfigError(f"{where}: required key is missing")
    try:
        return cls(**kwargs)
    except ConfigError as err:
        # Section validators name keys relative to the root; keep their message.
        raise ConfigError(str(err)) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """'a.b.c=value' -> (['a', 'b', 'c'], value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected KEY=VALUE, e.g. data.sync.enabled=false")
    key, _, raw = text.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override '{text}': empty key segment")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override '{text}': value is not valid YAML ({err})") from None
    return parts, value


def _check_override_path(cls: type, parts: list[str], text: str) -> None:
    """Refuse an override whose key does not exist in the dataclass tree, listing the valid keys."""
    tp: Any = cls
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(tp):
            raise ConfigError(f"override '{text}': '{'.'.join(parts[:i])}' is a value, not a section")
        hints = typing.get_type_hints(tp)
        if part not in hints:
            raise ConfigError(f"override '{text}': unknown key '{'.'.join(parts[:i + 1])}'; "
                              f"known keys here: {sorted(hints)}")
        tp = hints[part]
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
            tp = inner[0] if inner else tp


def apply_overrides(data: dict, overrides: Sequence[str], cls: type = Config) -> dict:
    """Return a copy of the raw YAML dict with ``a.b.c=value`` overrides applied (checked against ``cls``)."""
    out = copy.deepcopy(data) if data else {}
    for text in overrides:
        parts, value = parse_override(text)
        _check_override_path(cls, parts, text)
        node = out
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return out


def config_from_dict(data: dict, overrides: Sequence[str] = (), source: str = "") -> Config:
    try:
        return _build(Config, apply_overrides(data, overrides))
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}" if source else str(err)) from None


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A config file's mapping with its ``base:`` chain merged underneath (paths relative to the file)."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file does not exist") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    base_path = (path.parent / str(base)).resolve()
    if base_path in seen:
        raise ConfigError(f"{path}: 'base' chain loops back to {base_path}")
    parent = _read_yaml(base_path, seen + (path.resolve(),))
    # a relative rig path in the base is relative to the base file
    if isinstance(parent.get("rig"), str) and parent["rig"] and not Path(parent["rig"]).is_absolute() \
            and "rig" not in data:
        parent["rig"] = str((base_path.parent / parent["rig"]).resolve())
    return _deep_merge(parent, data)


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Load, override, type-check and validate an experiment config.

    ``base: other.yaml`` (relative to the file) merges that config underneath: an experiment states only its
    differences. A relative ``rig`` path is resolved against the config file's folder.
    """
    path = Path(path)
    data = _read_yaml(path)
    cfg = config_from_dict(data, overrides, str(path))
    if cfg.rig:
        # relative to the config file; stored relative to the repository when inside it, so that the resolved
        # config (and its hash in checkpoints) is the same on every machine
        rig = (path.parent / cfg.rig).resolve() if not Path(cfg.rig).is_absolute() else Path(cfg.rig)
        try:
            rig_text = str(rig.relative_to(REPO))
        except ValueError:
            rig_text = str(rig)
        cfg = dataclasses.replace(cfg, rig=rig_text)
    return cfg


def rig_path(cfg: Config) -> Path:
    """The rig file of a config as a path (repository-relative paths resolved against the repository)."""
    p = Path(cfg.rig)
    return p if p.is_absolute() else REPO / p


def config_to_dict(cfg: Any) -> Any:
    """Dataclasses -> plain YAML-safe structures (tuples become lists)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [config_to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: config_to_dict(v) for k, v in cfg.items()}
    return cfg


def dump_config(cfg: Config) -> str:
    """The fully resolved config as YAML; ``config_from_dict(yaml.safe_load(dump_config(c))) == c``."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def config_hash(cfg: Config) -> str:
    """Short content hash of the resolved config (carried by checkpoints)."""
    return hashlib.sha256(dump_config(cfg).encode()).hexdigest()[:16]
