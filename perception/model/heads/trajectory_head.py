"""Multi-modal trajectory head: per BEV cell, M future trajectories of T waypoints and M mode logits.

Parametrisation: each waypoint is predicted directly as an (x, y) offset in metres, ego axes, from the
agent's position at t0 (not as per-step increments to be summed): the target is ``gt_future[t] - gt_box[:2]``,
errors do not accumulate along the horizon, and the loss on each channel is the displacement error itself.
``perception.model.decode`` adds the decoded box centre, giving absolute positions in ego@t0.
"""
from __future__ import annotations

from torch import Tensor, nn

from perception.model.heads.center_head import ConvBranch, conv_bn_relu


class TrajectoryHead(nn.Module):
    """BEV features -> per-cell trajectory offsets and mode logits."""

    def __init__(self, in_channels: int, modes: int = 6, steps: int = 12, head_channels: int = 64) -> None:
        super().__init__()
        self.modes, self.steps = modes, steps
        self.shared = conv_bn_relu(in_channels, head_channels)
        self.offsets = ConvBranch(head_channels, head_channels, modes * steps * 2)
        self.mode_logits = ConvBranch(head_channels, head_channels, modes)

    def forward(self, bev: Tensor) -> dict[str, Tensor]:
        """bev: (B, C_in, H, W) float32, ego@t0 BEV (row i along x, column j along y).

        Returns ``offsets`` (B, M*T*2, H, W) float32: metres from the agent's t0 position, channel
        ``(m * T + t) * 2 + c`` with c = 0 for x, 1 for y (waypoint t at t0 + 0.5 s * (t + 1) for the 2 Hz
        targets); ``mode_logits`` (B, M, H, W) float32 (softmax over M gives the mode probabilities)."""
        x = self.shared(bev)  # (B, head_channels, H, W)
        return {"offsets": self.offsets(x), "mode_logits": self.mode_logits(x)}
