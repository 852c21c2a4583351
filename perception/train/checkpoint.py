"""Checkpoints: the model weights with everything needed to rebuild the network (the resolved config and the
rig's stereo topology), written atomically and read with ``torch.load(weights_only=True)`` (a checkpoint is
untrusted input: no pickle beyond tensors and plain containers)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from perception.config import Config, config_from_dict, config_hash, config_to_dict

SCHEMA = "perception-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint cannot be used with this code (names the file and the mismatch)."""


def save_checkpoint(path: str | Path, model: torch.nn.Module, cfg: Config, stereo_pairs: tuple = (),
                    extra: dict[str, Any] | None = None) -> Path:
    """Write atomically: a temporary file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"schema": SCHEMA, "config": config_to_dict(cfg), "config_hash": config_hash(cfg),
               "stereo_pairs": [list(map(int, p)) for p in stereo_pairs], "model": model.state_dict(),
               **(extra or {})}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint (weights_only=True) and check its schema. Returns the payload with ``config`` parsed."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(payload, dict) or payload.get("schema") != SCHEMA:
        raise CheckpointError(f"{path}: schema {payload.get('schema') if isinstance(payload, dict) else None!r}, "
                              f"expected {SCHEMA!r}")
    payload["config"] = config_from_dict(payload["config"], source=str(path))
    return payload


def load_weights(model: torch.nn.Module, state: dict, path: str | Path) -> None:
    """Strict load with a message naming the mismatched keys and shapes (another config or an older network)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs network {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing in the checkpoint: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"not in this network: {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if shapes:
            parts.append(f"shape mismatches: {shapes[:3]}")
        raise CheckpointError(f"{path}: the checkpoint does not match the network built from its config ("
                              + "; ".join(parts) + "); it comes from another config or an older network: "
                              "retrain or use the matching code version")
    model.load_state_dict(state, strict=True)
