"""BEV decoder: a small residual 2-D CNN on the fused BEV, at the BEV grid's resolution."""
from __future__ import annotations

from torch import Tensor, nn

from perception.config import BEV_STRIDE


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                                  nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(x + self.body(x))


class BevDecoder(nn.Module):
    """(B, C_in, H, W) -> (B, C_out, H, W): a 1x1 projection, ``blocks`` residual blocks, and a second scale
    (stride ``BEV_STRIDE`` = 2 and back) for context wider than a few cells; H and W must be multiples of the
    stride (``GridConfig`` refuses other grids at load)."""

    def __init__(self, in_channels: int, out_channels: int, blocks: int = 2):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels),
                                  nn.ReLU(inplace=True))
        self.fine = nn.Sequential(*[ResidualBlock(out_channels) for _ in range(blocks)])
        self.down = nn.Sequential(nn.Conv2d(out_channels, out_channels, 3, stride=BEV_STRIDE, padding=1, bias=False),
                                  nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True), ResidualBlock(out_channels))
        self.up = nn.Sequential(nn.ConvTranspose2d(out_channels, out_channels, BEV_STRIDE, stride=BEV_STRIDE,
                                                   bias=False),
                                nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))

    def forward(self, bev: Tensor) -> Tensor:
        x = self.fine(self.proj(bev))  # (B, C, H, W)
        return x + self.up(self.down(x))  # (B, C, H, W)
