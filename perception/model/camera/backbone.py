"""Camera image backbone: a ResNet (He et al. 2016, v1.5 strides) written from scratch, with parameter and
buffer names identical to torchvision's ``resnet18/34/50`` (minus ``fc``), so that a torchvision ImageNet
checkpoint file loads into it with :func:`load_pretrained` without torchvision installed.

Also home of the normalisation layers shared by the camera blocks (:func:`make_norm`), including the one
export-friendly GroupNorm (:func:`group_norm`): torch's GroupNorm exports as ONNX InstanceNormalization
(both the dynamo and the TorchScript exporter, torch 2.13), which is outside the TensorRT-native op budget
(``export/budget.py``, docs/deploy.md), so GroupNorm is written with Reshape + ReduceMean + elementwise ops, in training too.
"""
from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

# depth -> (block type, blocks per stage), as torchvision's resnet18/34/50.
_ARCHS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
}
# Known torchvision layouts, only to name what a mismatched checkpoint is in error messages.
_KNOWN_LAYOUTS: dict[tuple[str, tuple[int, ...]], str] = {
    ("basic", (2, 2, 2, 2)): "ResNet-18", ("basic", (3, 4, 6, 3)): "ResNet-34",
    ("bottleneck", (3, 4, 6, 3)): "ResNet-50", ("bottleneck", (3, 4, 23, 3)): "ResNet-101",
    ("bottleneck", (3, 8, 36, 3)): "ResNet-152",
}
GROUP_NORM_MAX_GROUPS = 8


def group_norm(x: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    """GroupNorm (Wu & He 2018) from ops inside the export budget (Reshape, ReduceMean, Sub, Mul, Div, Sqrt, Add).

    x: (B, C, *spatial) float, any units; C divisible by num_groups. weight, bias: (C,) or None.
    Returns x's shape and dtype: each group of C/G channels over all spatial positions normalised to zero
    mean and unit (biased) variance, then scaled and shifted per channel. Equals ``F.group_norm``.

    Statistics are computed in float32 (torch's autocast also runs group_norm in float32): a mean of squares
    in float16 loses the small variances of deep feature maps."""
    b, c = x.shape[0], x.shape[1]
    # Upcast only half precision: the TorchScript exporter records even a float32 -> float32 `.float()` as a
    # Cast, and float64 (reference computations) must stay float64.
    x32 = x if x.dtype in (torch.float32, torch.float64) else x.float()
    groups = x32.reshape(b, num_groups, -1)  # (B, G, C/G * prod(spatial))
    mean = groups.mean(dim=-1, keepdim=True)  # (B, G, 1)
    centred = groups - mean
    var = (centred * centred).mean(dim=-1, keepdim=True)  # (B, G, 1), biased as torch's
    out = (centred / torch.sqrt(var + eps)).reshape(x.shape)  # (B, C, *spatial)
    if out.dtype != x.dtype:
        out = out.to(x.dtype)
    affine_shape = (1, c) + (1,) * (x.dim() - 2)  # broadcast (C,) over batch and spatial axes
    if weight is not None:
        out = out * weight.reshape(affine_shape)
    if bias is not None:
        out = out + bias.reshape(affine_shape)
    return out


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (same parameters ``weight``/``bias``, same state-dict names) whose forward is
    :func:`group_norm`, so the trained graph and the exported graph are the same arithmetic."""

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) float. Returns (B, C, H, W), normalised per group of C/G channels."""
        return group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


def group_norm_groups(channels: int, max_groups: int = GROUP_NORM_MAX_GROUPS) -> int:
    """Number of GroupNorm groups for ``channels``: the largest divisor of ``channels`` that is <= max_groups.

    8 rather than the paper's 32 because the CPU-sized nets have stages of 8-32 channels, where 32 groups
    would be (close to) InstanceNorm; every backbone channel count is a multiple of 8 (see ``_channels``), so
    the backbone always gets exactly 8, and only odd neck widths fall back to fewer."""
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    return max(g for g in range(1, min(max_groups, channels) + 1) if channels % g == 0)


def make_norm(norm: str, channels: int) -> nn.Module:
    """The normalisation after a conv: ``"batch"`` -> BatchNorm2d (the ImageNet-checkpoint layout);
    ``"group"`` -> :class:`GroupNorm` with :func:`group_norm_groups` groups (batch-independent, so it
    behaves the same under CPU DDP, where SyncBatchNorm does not run, and at batch size 1)."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        return GroupNorm(group_norm_groups(channels), channels)
    raise ValueError(f"norm must be 'batch' or 'group', got {norm!r}")


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)


def _conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity (or 1x1-projected) shortcut; torchvision's ``BasicBlock`` names."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_ch, planes, stride)
        self.bn1 = make_norm(norm, planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = make_norm(norm, planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_ch, planes * self.expansion, stride, norm)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, in_ch, H, W). Returns (B, planes, H/stride, W/stride)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4); stride on the 3x3 as torchvision's "ResNet v1.5" ``Bottleneck``."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = _conv1x1(in_ch, planes)
        self.bn1 = make_norm(norm, planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = make_norm(norm, planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = make_norm(norm, planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_ch, planes * self.expansion, stride, norm)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, in_ch, H, W). Returns (B, 4 * planes, H/stride, W/stride)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _shortcut(in_ch: int, out_ch: int, stride: int, norm: str) -> nn.Sequential | None:
    """torchvision's ``downsample`` (keys ``downsample.0`` conv, ``downsample.1`` norm), or None for identity."""
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(_conv1x1(in_ch, out_ch, stride), make_norm(norm, out_ch))


def _channels(base: int, width: float) -> int:
    """base * width rounded to the nearest multiple of 8 (at least 8): GPU kernels and GroupNorm(8) want it."""
    return max(8, int(base * width / 8 + 0.5) * 8)


class ResNet(nn.Module):
    """ResNet-18/34/50 feature extractor with torchvision's state-dict names (``conv1``, ``bn1``,
    ``layer1..4``; no ``fc``).

    depth: 18 or 34 (BasicBlock) or 50 (Bottleneck). blocks: overrides the blocks per stage, e.g.
    (1, 1, 1, 1) for a CPU-sized net. width: scales the stem (64) and stage (64/128/256/512, x4 for
    Bottleneck outputs) channels, rounded to multiples of 8; 1.0 is torchvision exactly. out_indices:
    0-based stages (layer1..layer4, strides 4, 8, 16, 32) whose outputs ``forward`` returns, ascending.
    norm: "batch" or "group" (see :func:`make_norm`). frozen_stages: as mmdet: -1 nothing frozen, 0 the
    stem, k the stem and layer1..layer k; frozen parameters get ``requires_grad=False`` and frozen
    BatchNorms stay in eval mode (running statistics fixed) even under ``model.train()``.

    Stages after ``max(out_indices)`` are built (so a full checkpoint still loads strictly) but not run;
    their parameters get no gradient, so DDP needs them frozen or ``find_unused_parameters=True``."""

    def __init__(self, *, depth: int = 18, width: float = 1.0, blocks: tuple[int, int, int, int] | None = None,
                 out_indices: tuple[int, ...] = (2, 3), norm: str = "batch", frozen_stages: int = -1) -> None:
        super().__init__()
        if depth not in _ARCHS:
            raise ValueError(f"ResNet depth must be one of {sorted(_ARCHS)}, got {depth}")
        if not width > 0:
            raise ValueError(f"ResNet width must be > 0, got {width}")
        kind, default_blocks = _ARCHS[depth]
        blocks = tuple(default_blocks if blocks is None else blocks)
        if len(blocks) != 4 or any(int(n) != n or n < 1 for n in blocks):
            raise ValueError(f"blocks must be 4 positive integers (one per stage), got {blocks}")
        out_indices = tuple(out_indices)
        if not out_indices or list(out_indices) != sorted(set(out_indices)) or not set(out_indices) <= {0, 1, 2, 3}:
            raise ValueError(f"out_indices must be ascending, unique, within 0..3 (layer1..layer4), got {out_indices}")
        if norm not in ("batch", "group"):
            raise ValueError(f"norm must be 'batch' or 'group', got {norm!r}")
        if frozen_stages not in range(-1, 5):
            raise ValueError(f"frozen_stages must be in -1..4 (-1 none, 0 stem, k stem + layer1..k), "
                             f"got {frozen_stages}")
        self.depth, self.width, self.blocks, self.norm = depth, width, blocks, norm
        self.out_indices, self.frozen_stages = out_indices, frozen_stages
        block = BasicBlock if kind == "basic" else Bottleneck

        stem = _channels(64, width)
        self.conv1 = nn.Conv2d(3, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = make_norm(norm, stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = stem
        self._stage_channels: list[int] = []
        for i, (base, n) in enumerate(zip((64, 128, 256, 512), blocks)):
            planes = _channels(base, width)
            layers = []
            for j in range(n):
                # Stage i > 0 halves the resolution in its first block (layer1 follows the stride-4 stem).
                layers.append(block(in_ch, planes, 2 if (i > 0 and j == 0) else 1, norm))
                in_ch = planes * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
            self._stage_channels.append(in_ch)
        self._init_weights()
        self._freeze()

    @property
    def out_channels(self) -> list[int]:
        """Channels of each returned map, in out_indices order (e.g. [256, 512] for ResNet-18, (2, 3))."""
        return [self._stage_channels[i] for i in self.out_indices]

    @property
    def out_strides(self) -> list[int]:
        """Stride in input pixels of each returned map, in out_indices order."""
        return [4 * 2 ** i for i in self.out_indices]

    def _init_weights(self) -> None:
        # torchvision's initialisation, so a from-scratch run matches a torchvision from-scratch run.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        return [self.conv1, self.bn1] + [getattr(self, f"layer{k}") for k in range(1, self.frozen_stages + 1)]

    def _freeze(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> ResNet:
        """As ``nn.Module.train``, but frozen stages stay in eval mode: a frozen BatchNorm whose running
        statistics kept drifting with the new data would no longer match its frozen affine parameters."""
        super().train(mode)
        self._freeze()
        return self

    def forward(self, images: Tensor) -> list[Tensor]:
        """images: (B, 3, H, W) float32, RGB normalised with the ImageNet mean/std (the preprocessing of the
        checkpoint), camera image frame (pixel rows down, columns right).
        Returns one map per out_indices entry, ascending stride: (B, out_channels[k], ceil(H/s), ceil(W/s))
        with s = out_strides[k] (4, 8, 16 or 32), e.g. 128x352 -> 8x22 at stride 16 and 4x11 at stride 32."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))  # (B, stem, H/4, W/4)
        outs = []
        for i in range(self.out_indices[-1] + 1):
            x = getattr(self, f"layer{i + 1}")(x)  # (B, stage_channels[i], H/(4*2^i), W/(4*2^i))
            if i in self.out_indices:
                outs.append(x)
        return outs


def _describe_layout(state: Mapping[str, Tensor]) -> str:
    """Human-readable architecture of a torchvision-style state dict, e.g. 'ResNet-18 layout (BasicBlock,
    blocks (2, 2, 2, 2), stem 64 channels, BatchNorm)', for error messages."""
    kind = "bottleneck" if any(k.endswith(".conv3.weight") for k in state) else "basic"
    blocks = []
    for stage in range(1, 5):
        ids = {int(k.split(".")[1]) for k in state if k.startswith(f"layer{stage}.") and k.split(".")[1].isdigit()}
        blocks.append(max(ids) + 1 if ids else 0)
    name = _KNOWN_LAYOUTS.get((kind, tuple(blocks)), "unknown")
    stem = state["conv1.weight"].shape[0] if "conv1.weight" in state else "?"
    has_bn = any(k.endswith("running_mean") for k in state)
    return (f"{name} layout ({'Bottleneck' if kind == 'bottleneck' else 'BasicBlock'}, blocks {tuple(blocks)}, "
            f"stem {stem} channels, {'BatchNorm' if has_bn else 'no BatchNorm statistics'})")


def load_pretrained(model: ResNet, path: str | Path) -> dict:
    """Load a torchvision-style ResNet state dict (e.g. torchvision's ``resnet18-f37072fd.pth``) from a local
    file into ``model``: ``fc.*`` is dropped, everything else must match strictly.

    Checkpoints saved before torch kept ``num_batches_tracked`` lack those counters; they are the only keys
    allowed to be missing (the model keeps its own, which only matter for momentum=None BatchNorm).
    Raises FileNotFoundError if the file does not exist, ValueError naming the file, the first mismatched
    keys/shapes and the fix when the checkpoint does not fit (depth, width, blocks, norm).
    Returns {"path", "loaded": number of keys loaded, "skipped": sorted dropped keys, "missing_counters":
    sorted ``num_batches_tracked`` keys the checkpoint lacked}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained backbone checkpoint {str(path)!r} does not exist; download the "
                                f"torchvision ImageNet weights (e.g. resnet{model.depth}) on a machine with network "
                                f"access and point the config at the local .pth file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise ValueError(f"cannot read {str(path)!r} as a torch state dict (weights_only=True): {exc}") from exc
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        top = list(state)[:5] if isinstance(state, Mapping) else type(state).__name__
        raise ValueError(f"{str(path)!r} is not a flat state dict of tensors (top level: {top}); save "
                         f"`model.state_dict()` of a torchvision ResNet (no optimiser or wrapper dict)")

    skipped = sorted(k for k in state if k.startswith("fc."))
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = model.state_dict()
    fix = (f"the model is ResNet(depth={model.depth}, width={model.width}, blocks={model.blocks}, "
           f"norm={model.norm!r}); torchvision ImageNet weights fit only width=1.0, norm='batch', the default "
           f"blocks and the matching depth")
    what = f"checkpoint {str(path)!r} is a {_describe_layout(state)}"
    missing = [k for k in own if k not in state]
    missing_counters = sorted(k for k in missing if k.endswith("num_batches_tracked"))
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ValueError(f"{what}; keys do not match the model: {len(missing)} missing (first: {missing[:5]}), "
                         f"{len(unexpected)} unexpected (first: {unexpected[:5]}); {fix}")
    bad_shapes = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in state.items() if v.shape != own[k].shape]
    if bad_shapes:
        raise ValueError(f"{what}; {len(bad_shapes)} tensors differ in shape (first: {bad_shapes[:3]}); {fix}")
    for k in missing_counters:
        state[k] = own[k]
    model.load_state_dict(state, strict=True)
    return {"path": str(path), "loaded": len(state) - len(missing_counters), "skipped": skipped,
            "missing_counters": missing_counters}
