"""Multi-modal trajectory head: per BEV cell, M future trajectories of T waypoints and M mode logits.

Parametrisation: each waypoint is an (x, y) offset in metres, ego@t0 axes, from the agent's position at t0
(not per-step increments to be summed): the target is ``gt_future[t] - gt_box[:2]``, errors do not accumulate
along the horizon, and the loss on each channel is the displacement error itself. ``perception.model.decode``
adds the decoded box centre, giving absolute positions in ego@t0.

With ``residual`` (``model.head.trajectory_residual.enabled``) the convolution predicts each waypoint as a
residual over the constant-velocity extrapolation of the same cell's predicted velocity, and the head returns
their sum: ``offsets[m, t] = velocity * (t + 1) * step_s + residual[m, t]``. The output keeps its meaning
(offsets from the t0 position), so the loss, ``decode``, the exported graph and every runtime are unchanged,
and a zero residual decodes to exactly the detection's constant-velocity forecast (the evaluation's baseline).
The velocity enters without gradient: the trajectory loss must not pull the velocity head (scored by mAVE as
the velocity at t0) towards the mean velocity over the horizon, which the residual can absorb anyway.
The extra graph ops are Tile, Mul and Add on 4-D maps (inside the exported-op budget).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from perception.model.heads.center_head import ConvBranch, conv_bn_relu

WAYPOINT_STEP_S = 0.5  # the targets are nuScenes key frames at 2 Hz: waypoint t at t0 + 0.5 s * (t + 1)


class TrajectoryHead(nn.Module):
    """BEV features (and, with ``residual``, the velocity map) -> per-cell trajectory offsets and mode logits."""

    def __init__(self, in_channels: int, modes: int = 6, steps: int = 12, head_channels: int = 64,
                 residual: bool = False, step_s: float = WAYPOINT_STEP_S) -> None:
        super().__init__()
        self.modes, self.steps, self.residual = modes, steps, residual
        self.shared = conv_bn_relu(in_channels, head_channels)
        self.offsets = ConvBranch(head_channels, head_channels, modes * steps * 2)
        self.mode_logits = ConvBranch(head_channels, head_channels, modes)
        # time of the waypoint of each offset channel (m * T + t) * 2 + c: step_s * (t + 1); not in the state
        # dict, so checkpoints load strictly whatever the switch
        times = step_s * torch.arange(1, steps + 1, dtype=torch.float32).repeat_interleave(2).repeat(modes)
        self.register_buffer("waypoint_time", times.view(1, modes * steps * 2, 1, 1), persistent=False)

    def forward(self, bev: Tensor, velocity: Tensor | None = None) -> dict[str, Tensor]:
        """bev: (B, C_in, H, W) float32, ego@t0 BEV (row i along x, column j along y); velocity: (B, 2, H, W)
        float32 (vx, vy) m/s over ground in ego axes (CenterHead's ``velocity``), required with ``residual``.

        Returns ``offsets`` (B, M*T*2, H, W) float32: metres from the agent's t0 position, channel
        ``(m * T + t) * 2 + c`` with c = 0 for x, 1 for y (waypoint t at t0 + step_s * (t + 1));
        ``mode_logits`` (B, M, H, W) float32 (softmax over M gives the mode probabilities)."""
        x = self.shared(bev)  # (B, head_channels, H, W)
        offsets = self.offsets(x)  # (B, M*T*2, H, W)
        if self.residual:
            if velocity is None or velocity.shape[1] != 2 or velocity.shape[2:] != offsets.shape[2:]:
                raise ValueError(f"TrajectoryHead(residual=True) needs the (B, 2, H, W) velocity map, got "
                                 f"{None if velocity is None else tuple(velocity.shape)}")
            # constant velocity: channel (m*T + t)*2 + c gets v_c * time(t); repeat keeps every tensor 4-D (Tile)
            offsets = offsets + velocity.detach().repeat(1, self.modes * self.steps, 1, 1) * self.waypoint_time
        return {"offsets": offsets, "mode_logits": self.mode_logits(x)}
