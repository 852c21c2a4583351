"""Trajectory supervision: the targets of an agent moving at constant velocity are exactly the constant-velocity
extrapolation of its box velocity after the BEV augmentation (rotation, scale, flips), so a residual head at zero
with the true velocity has zero trajectory loss; the median mode and the soft mode target
(``train.trajectory_loss``) by hand and trained to their optimum."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from perception.config import ConfigError, SoftModeTargetConfig, Switch, TrajectoryLossConfig
from perception.data.loader import PillarSpec, collate_frames
from perception.data.nuscenes import NuScenesFrames
from perception.data.synthetic.generate import VERSION
from perception.data.transforms import apply_bev, bev_matrix
from perception.model.decode import BevGrid
from perception.model.heads.center_head import REGRESSIONS
from perception.model.heads.trajectory_head import WAYPOINT_STEP_S, TrajectoryHead
from perception.train.losses import detection_losses
from perception.train.targets import Targets, build_targets
from small_model import small_config


def _maps_with_velocity(t: Targets, grid: BevGrid, head: TrajectoryHead) -> dict[str, torch.Tensor]:
    """Head maps whose velocity map holds the target velocity at every GT cell, trajectories from ``head``."""
    h, w = grid.shape
    b = t.ind.shape[0]
    out = {name: torch.zeros(b, c, h, w) for name, c in REGRESSIONS}
    out["heatmap"] = torch.zeros(b, t.heatmap.shape[1], h, w)
    vel = out["velocity"].view(b, 2, h * w)
    for bi in range(b):
        for gi in np.flatnonzero(t.mask[bi].numpy()):
            vel[bi, :, t.ind[bi, gi]] = t.regression[bi, gi, 8:10]
    traj = head(torch.randn(b, 4, h, w), out["velocity"])
    out.update({"traj_offsets": traj["offsets"], "traj_mode_logits": traj["mode_logits"]})
    return out


@pytest.mark.parametrize("rotation,scale,flip_x,flip_y", [(0.0, 1.0, False, False), (0.35, 1.04, False, True),
                                                          (-0.2, 0.96, True, False), (1.1, 1.0, True, True)])
def test_constant_velocity_truth_is_a_zero_residual_after_bev_augmentation(synth_root, rotation, scale, flip_x,
                                                                           flip_y):
    cfg = small_config("data.loader.workers=0")
    frame = NuScenesFrames(cfg, synth_root, VERSION, "synth_train", train=False)[5]
    boxes = frame.gt_boxes.astype(np.float64)
    times = WAYPOINT_STEP_S * np.arange(1, 13)
    # every agent moves at exactly its box velocity for 6 s (ego@t0, the frame of the evaluation)
    future = boxes[:, None, :2] + boxes[:, None, 7:9] * times[None, :, None]
    frame = replace(frame, gt_future=future.astype(np.float32), gt_future_valid=np.ones(future.shape[:2], bool))
    aug = apply_bev(frame, bev_matrix(rotation, scale, flip_x, flip_y))
    batch = collate_frames([aug], 200, PillarSpec.from_config(cfg))
    grid = BevGrid.from_config(cfg.data.grid)
    t = build_targets(batch["gt_boxes"], batch["gt_labels"], batch["gt_mask"], batch["gt_future"],
                      batch["gt_future_valid"], grid, cfg.num_classes)
    moving = t.mask & (t.regression[..., 8:10].norm(dim=-1) > 1.0)
    assert moving.sum() >= 3, "the frame needs moving agents for the check to mean anything"
    # the target offsets are the augmented box velocity times the waypoint time
    cv = t.regression[..., None, 8:10] * torch.tensor(times, dtype=torch.float32)[:, None]  # (B, G, T, 2)
    torch.testing.assert_close(t.traj[t.mask], cv[t.mask], atol=2e-4, rtol=1e-5)

    # one velocity per cell: agents sharing a cell (a group of pedestrians in 3.2 m) are left out of the loss
    ind = t.ind[0][t.mask[0]]
    shared = t.mask.clone()
    shared[0, t.mask[0]] = (ind[:, None] == ind[None, :]).sum(1) > 1
    t = replace(t, traj_valid=t.traj_valid & ~shared[..., None])
    assert (t.traj_valid.any(-1) & moving).sum() >= 3

    torch.manual_seed(0)
    residual = TrajectoryHead(4, modes=3, steps=12, head_channels=4, residual=True)
    direct = TrajectoryHead(4, modes=3, steps=12, head_channels=4, residual=False)
    for head in (residual, direct):
        nn.init.zeros_(head.offsets[-1].weight)
        nn.init.zeros_(head.offsets[-1].bias)
    assert detection_losses(_maps_with_velocity(t, grid, residual), t)["trajectory"] < 1e-4
    assert detection_losses(_maps_with_velocity(t, grid, direct), t)["trajectory"] > 0.5


def _soft(temperature: float) -> TrajectoryLossConfig:
    return TrajectoryLossConfig(soft_mode_target=SoftModeTargetConfig(True, temperature))


MEDIAN = TrajectoryLossConfig(median_mode=Switch(True))


def _one_agent(mode_offsets: list[list[float]], logits: list[float]) -> tuple[dict, Targets]:
    """One GT agent at rest (target offsets 0 at T = 2 steps) on a 1 x 1 grid; each mode at a fixed offset."""
    m = len(mode_offsets)
    offs = torch.tensor(mode_offsets, dtype=torch.float32)[:, None, :].expand(m, 2, 2)  # (M, T, 2)
    out = {name: torch.zeros(1, c, 1, 1) for name, c in REGRESSIONS}
    out.update({"heatmap": torch.zeros(1, 1, 1, 1), "traj_offsets": offs.reshape(1, -1, 1, 1),
                "traj_mode_logits": torch.tensor(logits).view(1, m, 1, 1)})
    t = Targets(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, dtype=torch.int64), torch.ones(1, 1, dtype=torch.bool),
                torch.zeros(1, 1, 10), torch.zeros(1, 1, dtype=torch.int64), torch.zeros(1, 1, 2, 2),
                torch.ones(1, 1, 2, dtype=torch.bool))
    return out, t


def test_soft_mode_target_by_hand():
    # mode 0 at (0.6, 0.8): L2 error 1 m (L1 1.4); mode 1 at (0, 3): 3 m
    out, t = _one_agent([[0.6, 0.8], [0.0, 3.0]], [1.0, 0.0])
    log_p = [1 - math.log(math.e + 1), -math.log(math.e + 1)]
    q0 = math.exp(-1 / 2) / (math.exp(-1 / 2) + math.exp(-3 / 2))  # temperature 2 m
    soft = -(q0 * log_p[0] + (1 - q0) * log_p[1])
    assert detection_losses(out, t, _soft(2.0))["mode"].item() == pytest.approx(0.5 * soft, rel=1e-6)
    winner = -log_p[0]
    assert detection_losses(out, t)["mode"].item() == pytest.approx(0.5 * winner, rel=1e-6)
    assert detection_losses(out, t, _soft(1e-3))["mode"].item() == pytest.approx(0.5 * winner, rel=1e-6)
    # the regression stays winner-takes-all (L1 of mode 0) whatever the mode target
    assert detection_losses(out, t, _soft(2.0))["trajectory"].item() == pytest.approx(0.5 * 1.4, rel=1e-6)


@pytest.mark.parametrize("temperature,ranked_first", [(0.0, {0}), (20.0, {1, 2})])
def test_soft_mode_target_ranks_first_the_mode_of_smallest_expected_error(temperature, ranked_first):
    """Agents seen through identical features (one cell): 4 in 10 stop, 3 go on slightly left, 3 slightly right;
    mode 0 sits at 'stop', modes 1 and 2 at the two 'go' outcomes. The 'go' modes cost less expected ADE
    (0.4 x 9 m + 0.3 x 0.2 m vs 0.6 x 9 m), but they split the 'go' wins: the winner target ranks 'stop' first
    (P(closest) 0.4 vs 0.3). The soft target at a temperature large against the 9 m spread ranks a 'go' mode
    first. The mode logits are trained by the loss itself to its optimum."""
    stop, left, right = [0.0, 0.0], [9.0, 0.1], [9.0, -0.1]
    truths = torch.tensor([stop] * 4 + [left] * 3 + [right] * 3)  # (G, 2)
    g = len(truths)
    modes = torch.tensor([stop, left, right])[:, None, :].expand(3, 2, 2)  # (M, T, 2)
    logits = torch.zeros(1, 3, 1, 1, requires_grad=True)
    out = {name: torch.zeros(1, c, 1, 1) for name, c in REGRESSIONS}
    out.update({"heatmap": torch.zeros(1, 1, 1, 1), "traj_offsets": modes.reshape(1, -1, 1, 1)})
    t = Targets(torch.zeros(1, 1, 1, 1), torch.zeros(1, g, dtype=torch.int64), torch.ones(1, g, dtype=torch.bool),
                torch.zeros(1, g, 10), torch.zeros(1, g, dtype=torch.int64),
                truths[None, :, None, :].expand(1, g, 2, 2).contiguous(), torch.ones(1, g, 2, dtype=torch.bool))
    opt = torch.optim.Adam([logits], lr=0.05)
    for _ in range(400):
        cfg = _soft(temperature) if temperature else TrajectoryLossConfig()
        loss = detection_losses({**out, "traj_mode_logits": logits}, t, cfg)["mode"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    probs = logits.detach().flatten().softmax(0)
    assert int(probs.argmax()) in ranked_first, probs
    if temperature == 0.0:  # the winner target's optimum is the frequency of each mode being closest
        torch.testing.assert_close(probs, torch.tensor([0.4, 0.3, 0.3]), atol=0.02, rtol=0)


def test_median_mode_by_hand():
    # mode 0 at (0, 3): L1 ADE 3; mode 1 at (0.6, 0.8): 1.4; mode 2 at (2, 0): 2
    out, t = _one_agent([[0.0, 3.0], [0.6, 0.8], [2.0, 0.0]], [0.0, 0.0, 0.0])
    assert detection_losses(out, t)["trajectory"].item() == pytest.approx(0.5 * 1.4, rel=1e-6)
    assert detection_losses(out, t, MEDIAN)["trajectory"].item() == pytest.approx(0.5 * (3 + 1.4), rel=1e-6)
    # the mode target stays the winner over all modes, mode 0 included
    assert detection_losses(out, t, MEDIAN)["mode"].item() == pytest.approx(0.5 * math.log(3), rel=1e-6)
    out, t = _one_agent([[0.6, 0.8], [0.0, 3.0], [2.0, 0.0]], [0.0, 0.0, 0.0])  # mode 0 wins: regressed once
    assert detection_losses(out, t, MEDIAN)["trajectory"].item() == pytest.approx(0.5 * (1.4 + 2), rel=1e-6)


@pytest.mark.parametrize("median", [False, True])
def test_median_mode_converges_to_the_median_future(median):
    """Five agents through identical features (one cell), moving 0, 1, 2, 10 and 20 m along x at every step:
    trained by the loss itself, mode 0 reaches their median (2 m; the mean is 6.6 m) with ``median_mode``;
    winner-takes-all alone leaves it wherever the competition puts it."""
    truths = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [10.0, 0.0], [20.0, 0.0]])
    g = len(truths)
    modes = torch.tensor([[5.0, 0.0], [0.5, 0.0], [15.0, 0.0]])[:, None, :].repeat(1, 2, 1)  # (M, T, 2)
    modes.requires_grad_(True)
    out = {name: torch.zeros(1, c, 1, 1) for name, c in REGRESSIONS}
    out.update({"heatmap": torch.zeros(1, 1, 1, 1), "traj_mode_logits": torch.zeros(1, 3, 1, 1)})
    t = Targets(torch.zeros(1, 1, 1, 1), torch.zeros(1, g, dtype=torch.int64), torch.ones(1, g, dtype=torch.bool),
                torch.zeros(1, g, 10), torch.zeros(1, g, dtype=torch.int64),
                truths[None, :, None, :].expand(1, g, 2, 2).contiguous(), torch.ones(1, g, 2, dtype=torch.bool))
    opt = torch.optim.Adam([modes], lr=0.05)
    for _ in range(600):
        loss = detection_losses({**out, "traj_offsets": modes.reshape(1, -1, 1, 1)}, t,
                                MEDIAN if median else TrajectoryLossConfig())["trajectory"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    mode0 = modes.detach()[0, :, 0]
    if median:
        torch.testing.assert_close(mode0, torch.full((2,), 2.0), atol=0.15, rtol=0)
    else:
        assert (mode0 - 2.0).abs().min() > 1.0, mode0  # WTA: mode 0 takes the 10 m agent, not the median


def test_trajectory_loss_config():
    cfg = small_config("train.trajectory_loss.median_mode.enabled=true",
                       "train.trajectory_loss.soft_mode_target.enabled=true",
                       "train.trajectory_loss.soft_mode_target.temperature=3.0").train.trajectory_loss
    assert cfg.median_mode.enabled and cfg.soft_mode_target == SoftModeTargetConfig(True, 3.0)
    assert small_config().train.trajectory_loss == TrajectoryLossConfig()  # both off by default
    with pytest.raises(ConfigError, match="temperature"):
        small_config("train.trajectory_loss.soft_mode_target.temperature=0")
