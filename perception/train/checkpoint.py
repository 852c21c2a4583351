"""Checkpoints: the model weights with everything needed to rebuild the network (the resolved config and the
rig's stereo topology), written atomically and read with ``torch.load(weights_only=True)`` (a checkpoint is
untrusted input: no pickle beyond tensors and plain containers).

Every checkpoint carries ``weights_sha256``, a hash of its weights (names, dtypes, shapes, bytes), and
``config_hash``; both are checked on load, and NaN or infinite weights are refused, so a flipped byte, a truncated
copy or an edited config is a clear error instead of a model that loads and scores nonsense. Checkpoints written
before the hash existed load with a warning (their weights are still checked to be finite)."""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from perception.config import Config, config_from_dict, config_hash, config_to_dict

SCHEMA = "perception-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint cannot be used with this code (names the file and the mismatch)."""


def weights_sha256(state: dict[str, Any]) -> str:
    """sha256 over the state dict in key order: each tensor's name, dtype, shape and bytes (CPU, contiguous)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def stored_config_sha256(config: dict[str, Any]) -> str:
    """sha256 of the config dict as stored (canonical JSON), independent of later config-schema changes (unlike
    ``config_hash``, which hashes the config as this code resolves it)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def check_finite(state: dict[str, Any], path: str | Path) -> None:
    """Refuse NaN or infinite floating-point weights (a diverged run, a corrupted file)."""
    bad = [name for name, t in state.items()
           if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} weight tensors hold NaN or inf (first: {bad[0]}); the run diverged "
                              "or the file is corrupted: use an earlier checkpoint")


def save_checkpoint(path: str | Path, model: torch.nn.Module, cfg: Config, stereo_pairs: tuple = (),
                    extra: dict[str, Any] | None = None) -> Path:
    """Write atomically: a temporary file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    config = config_to_dict(cfg)
    payload = {"schema": SCHEMA, "config": config, "config_hash": config_hash(cfg),
               "stereo_pairs": [list(map(int, p)) for p in stereo_pairs], "model": state,
               **(extra or {}), "weights_sha256": weights_sha256(state), "config_sha256": stored_config_sha256(config)}
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
    state = payload.get("model")
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise CheckpointError(f"{path}: 'model' is not a state dict of tensors; not a checkpoint of this project")
    if not isinstance(payload.get("config"), dict):
        raise CheckpointError(f"{path}: 'config' is missing or not a mapping; not a checkpoint of this project")
    stored = payload.get("weights_sha256")
    if stored is None:
        print(f"warning: {path} carries no weights hash (written before perception-checkpoint hashes); its weights "
              "cannot be checked for corruption", file=sys.stderr)
    elif stored != weights_sha256(state):
        raise CheckpointError(f"{path}: the weights do not match their hash (weights_sha256 {str(stored)[:16]}...): "
                              "the file is corrupted or was edited; copy it again from its source")
    check_finite(state, path)
    stored_cfg = payload.get("config_sha256")
    if stored_cfg is not None and stored_cfg != stored_config_sha256(payload["config"]):
        raise CheckpointError(f"{path}: its config (classes, model section) does not match its config_sha256: the "
                              "file was edited or corrupted after training; use the original checkpoint")
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
