"""Pieces of the BEVDepth / CRN training recipe beside the loop: weight EMA and SyncBatchNorm under DDP."""
from __future__ import annotations

import copy

import torch
from torch import nn


class WeightEma:
    """An exponential moving average of a model's parameters and buffers (``train.ema``).

    After each optimiser step ``update(model, step)`` sets ema = d * ema + (1 - d) * current with
    d = min(decay, (1 + step) / (10 + step)) (the warm-up keeps early averages off the random init); integer
    buffers (BatchNorm's ``num_batches_tracked``) are copied. ``module`` is the averaged network (eval mode), the
    one that is evaluated and saved as ``model.pt``; its state travels in ``last.pt`` for an exact resume."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def effective_decay(self, step: int) -> float:
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = self.effective_decay(step)
        current = model.state_dict()
        for name, avg in self.module.state_dict().items():
            value = current[name].detach()
            if avg.is_floating_point():
                avg.mul_(d).add_(value.to(avg.dtype), alpha=1.0 - d)
            else:
                avg.copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state, strict=True)


def sync_batchnorm(net: nn.Module, world_size: int, device: torch.device) -> nn.Module:
    """BatchNorm -> SyncBatchNorm when training with several processes on CUDA (statistics over the global
    batch, as BEVDepth and CRN train). Unchanged on one process and on CPU (gloo), where SyncBatchNorm does not run:
    there each process keeps its own statistics. Parameter and buffer names stay the same, so checkpoints load
    into the plain network (tested)."""
    if world_size > 1 and device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(net)
    return net
