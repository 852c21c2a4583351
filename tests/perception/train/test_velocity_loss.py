"""``train.velocity_weight``: the weight of the velocity L1 among the box regressions (issue 23: at 0.2 the velocity
head learns or collapses to zero seed by seed). Built by hand: head maps equal to the targets except for a known
error in one field, so the regression loss is that error times its weight."""
from __future__ import annotations

import pytest
import torch

from perception.config import ConfigError, TrainConfig
from perception.model.heads.center_head import REGRESSIONS
from perception.train.losses import detection_losses
from perception.train.targets import Targets

H = W = 8


def _targets() -> Targets:
    """Two objects in one sample (cells 10 and 27) and an unused slot."""
    reg = torch.tensor([[[0.3, 0.6, 0.1, 0.5, 1.4, 0.4, 0.0, 1.0, 8.0, -1.0],
                         [0.5, 0.5, -0.2, -0.4, -0.1, 0.0, 1.0, 0.0, 0.0, 0.0],
                         [0.0] * 10]])
    return Targets(heatmap=torch.zeros(1, 1, H, W), ind=torch.tensor([[10, 27, 0]]),
                   mask=torch.tensor([[True, True, False]]), regression=reg, labels=torch.zeros(1, 3, dtype=torch.long),
                   traj=torch.zeros(1, 3, 2, 2), traj_valid=torch.zeros(1, 3, 2, dtype=torch.bool))


def _maps(t: Targets, error: dict[int, float]) -> dict[str, torch.Tensor]:
    """Head maps holding the targets at the object cells, plus ``error`` on the given regression channels."""
    out = {"heatmap": torch.zeros(1, 1, H, W), "traj_offsets": torch.zeros(1, 2 * 2 * 2, H, W),
           "traj_mode_logits": torch.zeros(1, 2, H, W)}
    start = 0
    for name, c in REGRESSIONS:
        m = torch.zeros(1, c, H * W)
        for g in range(2):
            m[0, :, t.ind[0, g]] = t.regression[0, g, start:start + c]
            for ch in range(c):
                m[0, ch, t.ind[0, g]] += error.get(start + ch, 0.0)
        out[name] = m.view(1, c, H, W)
        start += c
    return out


@pytest.mark.parametrize("weight", [0.0, 0.2, 1.0, 2.5])
def test_velocity_weight_scales_only_the_velocity_term(weight):
    t = _targets()
    exact = detection_losses(_maps(t, {}), t, velocity_weight=weight)["regression"]
    assert exact.item() == pytest.approx(0.0, abs=1e-6)
    # 1.5 m/s off in vx on both objects: L1 1.5 per object, mean over the 2 objects, times 2 (the regression factor)
    vel = detection_losses(_maps(t, {8: 1.5}), t, velocity_weight=weight)["regression"]
    assert vel.item() == pytest.approx(2.0 * weight * 1.5, rel=1e-5)
    # a size error is weighted 1 whatever the velocity weight
    size = detection_losses(_maps(t, {3: 0.5}), t, velocity_weight=weight)["regression"]
    assert size.item() == pytest.approx(2.0 * 0.5, rel=1e-5)


def test_default_is_centerpoint_and_matches_the_loss_default():
    t = _targets()
    maps = _maps(t, {9: -2.0})
    assert TrainConfig().velocity_weight == 0.2
    assert detection_losses(maps, t)["regression"].item() == pytest.approx(
        detection_losses(maps, t, velocity_weight=TrainConfig().velocity_weight)["regression"].item())


def test_negative_velocity_weight_is_refused():
    with pytest.raises(ConfigError, match="train.velocity_weight"):
        TrainConfig(velocity_weight=-0.1)
