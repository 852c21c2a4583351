"""Losses: Gaussian focal loss on heatmaps, masked L1 on the regressions gathered at GT centres, and for the
trajectories (``TrajectoryLossConfig``, ``train.trajectory_loss``):

- regression: winner-takes-all L1 (only the mode closest to the truth is regressed), or with ``median_mode`` mode
  0 regressed on every agent (L1, so its optimum is the coordinate-wise conditional median future: the best
  single guess an L1 learner can make, which a cluster centre of WTA is not) and modes 1..M-1 winner-takes-all
  among themselves. Without features that tell the outcomes apart, WTA modes are cluster centres and none of them
  sits at the median, so the mode ranked first does worse than constant velocity even on ground truth
  (``benchmarks/bench_trajectory_modes.py``);
- mode logits: cross-entropy towards the winner over all M modes (one-hot), or with ``soft_mode_target`` towards
  ``softmax(-ADE_m / temperature)`` over the modes (HiVT, Zhou et al. CVPR 2022; ADE = mean L2 over the valid
  steps, metres, without gradient). The winner target estimates P(mode m is the closest), whose argmax need not
  be the mode of smallest expected error: when a frequent outcome is shared by several similar modes, a rarer
  outcome held by a single mode wins the argmax. The soft target credits every mode by how close it came, so for
  a temperature large against the spread of the modes' errors its argmax tends to the mode of smallest expected
  ADE (first order: exp(-a / tau) ~ 1 - a / tau), i.e. what minADE1 scores; as tau -> 0 it becomes the winner.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from perception.config import TrajectoryLossConfig
from perception.train.targets import Targets

REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)  # offset x2, z, log size x3, sin, cos; then vel x2 (argument)


def gaussian_focal_loss(logits: Tensor, target: Tensor, alpha: float = 2.0, gamma: float = 4.0) -> Tensor:
    """CenterNet focal loss. logits, target: (B, K, H, W); target 1 at centres, Gaussian around. Normalised by
    the number of centres (at least 1)."""
    pred = logits.sigmoid().clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    neg = 1.0 - pos
    pos_loss = -torch.log(pred) * (1 - pred) ** alpha * pos
    neg_loss = -torch.log(1 - pred) * pred ** alpha * (1 - target) ** gamma * neg
    return (pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1.0)


def gather_cells(maps: Tensor, ind: Tensor) -> Tensor:
    """maps (B, C, H, W), ind (B, G) flat cell -> (B, G, C)."""
    b, c = maps.shape[:2]
    flat = maps.reshape(b, c, -1)  # (B, C, H*W)
    return flat.gather(2, ind.unsqueeze(1).expand(b, c, ind.shape[1])).transpose(1, 2)


def detection_losses(out: dict[str, Tensor], t: Targets,
                     trajectory: TrajectoryLossConfig = TrajectoryLossConfig(),
                     velocity_weight: float = 0.2) -> dict[str, Tensor]:
    """out: the network's head maps; t: targets; trajectory: the trajectory supervision (module docstring;
    ``cfg.train.trajectory_loss``); velocity_weight: the vx, vy L1 against the other regressions
    (``cfg.train.velocity_weight``). Returns named scalar losses (their sum is trained)."""
    heat = gaussian_focal_loss(out["heatmap"], t.heatmap)
    pred = torch.cat([gather_cells(out[name], t.ind) for name in ("offset", "z", "log_size", "rotation", "velocity")],
                     dim=2)  # (B, G, 10)
    m = t.mask.unsqueeze(-1).float()
    w = pred.new_tensor(REG_WEIGHTS + (velocity_weight, velocity_weight))
    n = t.mask.sum().clamp(min=1).float()
    reg = (F.l1_loss(pred, t.regression, reduction="none") * m * w).sum() / n
    # trajectories: (B, G, M, T, 2)
    offs = gather_cells(out["traj_offsets"], t.ind)  # (B, G, M*T*2)
    logits = gather_cells(out["traj_mode_logits"], t.ind)  # (B, G, M)
    b, g, modes = logits.shape
    steps = t.traj.shape[2]
    offs = offs.view(b, g, modes, steps, 2)
    valid = t.traj_valid.float()  # (B, G, T)
    err = (offs - t.traj.unsqueeze(2)).abs().sum(-1)  # (B, G, M, T)
    steps_n = valid.sum(-1).clamp(min=1).unsqueeze(-1)  # (B, G, 1)
    ade = (err * valid.unsqueeze(2)).sum(-1) / steps_n  # (B, G, M)
    has = (valid.sum(-1) > 0) & t.mask  # (B, G)
    best = ade.argmin(dim=2)  # (B, G) winner mode over all M: the one-hot mode target
    if trajectory.median_mode.enabled:
        # mode 0 on every agent; the alternatives winner-takes-all among themselves
        fit = ade[..., 0] + (ade[..., 1:].min(dim=2).values if modes > 1 else 0.0)  # (B, G)
    else:
        fit = ade.gather(2, best.unsqueeze(-1)).squeeze(-1)  # (B, G)
    k = has.sum().clamp(min=1).float()
    traj = (fit * has.float()).sum() / k
    smt = trajectory.soft_mode_target
    if smt.enabled:
        with torch.no_grad():
            ade_l2 = ((offs - t.traj.unsqueeze(2)).norm(dim=-1) * valid.unsqueeze(2)).sum(-1) / steps_n  # (B, G, M)
            target = (-ade_l2 / smt.temperature).softmax(dim=2)  # (B, G, M)
        ce_all = -(target * logits.log_softmax(dim=2)).sum(-1)  # (B, G)
    else:
        ce_all = F.cross_entropy(logits.reshape(-1, modes), best.reshape(-1), reduction="none").view(b, g)
    ce = (ce_all * has.float()).sum() / k
    return {"heatmap": heat, "regression": 2.0 * reg, "trajectory": 0.5 * traj, "mode": 0.5 * ce}
