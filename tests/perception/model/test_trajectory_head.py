"""Trajectory waypoints as residuals over constant velocity (``model.head.trajectory_residual``): a zero residual
decodes to exactly the constant-velocity extrapolation of the detection's own velocity, the frame and the
formula of the evaluation's baseline (``perception.eval.trajectory.constant_velocity``), in the head + decode,
through ``Pipeline`` and the forecasting metrics, and in the exported graph in ONNX Runtime (inside the op
budget); the velocity gets no gradient from the trajectories; the switch is off for the shipped checkpoint."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from torch import nn

from perception.eval.trajectory import constant_velocity
from perception.model.decode import BevGrid, decode
from perception.model.heads.center_head import REGRESSIONS
from perception.model.heads.trajectory_head import WAYPOINT_STEP_S, TrajectoryHead

REPO = Path(__file__).resolve().parents[3]
GRID = BevGrid((-25.6, 25.6), (-38.4, 38.4), (16, 24))
RESIDUAL = "model.head.trajectory_residual.enabled=true"


def _zero_residual(head: TrajectoryHead) -> None:
    """The last convolution of the offsets branch outputs 0 everywhere (an untrained residual at its ideal)."""
    nn.init.zeros_(head.offsets[-1].weight)
    nn.init.zeros_(head.offsets[-1].bias)


def _give_motion(net) -> None:
    """An untrained velocity map is ~0 m/s: bias it to a clear motion so residual and direct offsets differ."""
    with torch.no_grad():
        net.center_head.regressions["velocity"][-1].bias.copy_(torch.tensor([6.0, -3.0]))


def _center_maps(seed: int, b: int = 2, k: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    h, w = GRID.shape
    maps = {name: torch.randn(b, c, h, w, generator=g) for name, c in REGRESSIONS}
    maps["heatmap"] = torch.randn(b, k, h, w, generator=g) * 2
    maps["velocity"] = maps["velocity"] * 8.0  # m/s: cars at urban speeds, either direction
    return maps


def _assert_constant_velocity(boxes: np.ndarray, trajectories: np.ndarray) -> None:
    """boxes (P, 9) ego@t0, trajectories (P, M, T, 2): every mode equals the evaluation's baseline."""
    steps = trajectories.shape[2]
    cv = constant_velocity(boxes[:, :2].astype(np.float64), boxes[:, 7:9].astype(np.float64), steps)  # (P, 1, T, 2)
    assert np.abs(boxes[:, 7:9]).max() > 1.0, "velocities near 0 would not tell a residual from a direct offset"
    assert_allclose(trajectories, np.broadcast_to(cv, trajectories.shape), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("seed", [0, 1])
def test_zero_residual_decodes_to_the_constant_velocity_baseline(seed):
    torch.manual_seed(seed)
    head = TrajectoryHead(8, modes=3, steps=12, head_channels=8, residual=True).eval()
    direct = TrajectoryHead(8, modes=3, steps=12, head_channels=8, residual=False).eval()
    _zero_residual(head)
    _zero_residual(direct)
    center = _center_maps(seed)
    bev = torch.randn(2, 8, *GRID.shape)
    with torch.no_grad():
        out = decode(center, GRID, head(bev, center["velocity"]), max_detections=20)
        plain = decode(center, GRID, direct(bev), max_detections=20)
    valid = (out["labels"] >= 0).numpy()
    assert valid.sum() >= 20
    boxes, traj = out["boxes"].numpy()[valid], out["trajectories"].numpy()[valid]
    _assert_constant_velocity(boxes, traj)
    # the last waypoint is 6 s ahead: x + 6 vx, by hand
    assert_allclose(traj[:, 0, -1], boxes[:, :2] + 12 * WAYPOINT_STEP_S * boxes[:, 7:9], rtol=1e-5, atol=1e-4)
    assert (out["trajectories"].numpy()[~valid] == 0).all()  # padding stays 0
    # the same zero output without the switch stays at the box centre: the test tells the two apart
    assert_allclose(plain["trajectories"].numpy()[valid], np.broadcast_to(boxes[:, None, None, :2], traj.shape),
                    atol=1e-5)


def test_residual_adds_to_constant_velocity_and_velocity_gets_no_gradient():
    torch.manual_seed(0)
    head = TrajectoryHead(8, modes=2, steps=3, head_channels=8, residual=True)
    bev = torch.randn(1, 8, 4, 5)
    velocity = torch.randn(1, 2, 4, 5, requires_grad=True)
    out = head(bev, velocity)["offsets"]  # (1, M*T*2, H, W)
    residual = head.offsets(head.shared(bev))
    # channel (m * T + t) * 2 + c = residual + v_c * 0.5 (t + 1)
    times = torch.tensor([0.5, 1.0, 1.5])
    want = residual.view(1, 2, 3, 2, 4, 5) + velocity.view(1, 1, 1, 2, 4, 5) * times.view(1, 1, 3, 1, 1, 1)
    torch.testing.assert_close(out, want.reshape(1, 12, 4, 5))
    out.square().sum().backward()
    assert velocity.grad is None  # detached: the trajectory loss never moves the velocity head
    assert head.offsets[-1].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="velocity map"):
        head(bev)
    assert "waypoint_time" not in head.state_dict()  # checkpoints load strictly with the switch on or off


def test_pipeline_and_forecasting_metrics_score_a_zero_residual_as_constant_velocity(synth_root):
    """Through the whole evaluation path: Pipeline (ego@t0 Detections) -> the SampleForecast perception-test
    builds -> forecasting_metrics: the model's figures equal the constant-velocity baseline's."""
    from perception.data.nuscenes import NuScenesFrames
    from perception.data.synthetic.generate import VERSION
    from perception.eval.benchmark import model_predictor
    from perception.eval.trajectory import forecasting_metrics
    from perception.pipeline import Pipeline
    from small_model import small_config, small_net

    cfg = small_config(RESIDUAL)
    net = small_net(cfg)
    _zero_residual(net.trajectory_head)
    _give_motion(net)
    predict = model_predictor(Pipeline.from_module(net, cfg))
    frames = NuScenesFrames(cfg, synth_root, VERSION, "synth_val")
    forecasts = [predict(frames[i]).forecast for i in (0, 4, 7, 11)]
    for fc in forecasts:
        assert len(fc.pred_xy) > 5
        _assert_constant_velocity(np.concatenate([fc.pred_xy, np.zeros((len(fc.pred_xy), 5)), fc.pred_vel], 1),
                                  fc.pred_traj)
    kw = dict(score_threshold=0.0, match_dist=100.0)  # an untrained heatmap: match whatever is near
    model = forecasting_metrics(forecasts, **kw)
    baseline = forecasting_metrics(forecasts, constant_velocity_baseline=True, **kw)
    assert model["all"]["matched"] >= 3  # per-class matching of an untrained detector: few, but scored
    for group in model:
        for key, value in model[group].items():
            if not (isinstance(value, float) and math.isnan(value)):
                assert value == pytest.approx(baseline[group][key], rel=1e-5, abs=1e-4), (group, key)


@pytest.mark.slow
def test_exported_residual_graph_matches_pytorch_in_onnxruntime_within_the_budget(synth_root, tmp_path):
    """The decoded graph with the switch on: in the op budget (GridSample ranks included), ONNX Runtime equal to
    PyTorch on every output; with a zero residual ONNX Runtime's trajectories are its boxes' constant velocity."""
    import onnx
    import onnxruntime as ort

    from export.budget import ALLOWED_OPS, check_budget
    from export.onnx import export_onnx
    from perception.data.batch import PillarSpec, input_arrays
    from perception.data.nuscenes import NuScenesFrames
    from perception.data.synthetic.generate import VERSION
    from perception.model.decode import OUTPUT_NAMES
    from perception.model.network import INPUT_NAMES
    from small_model import small_config, small_net

    cfg = small_config(RESIDUAL)
    frames = NuScenesFrames(cfg, synth_root, VERSION, "synth_val")
    arrays = input_arrays([frames[3]], PillarSpec.from_config(cfg))
    example = [torch.from_numpy(arrays[k]) for k in INPUT_NAMES]
    for zero in (False, True):
        net = small_net(cfg)
        _give_motion(net)
        if zero:
            _zero_residual(net.trajectory_head)
        path = export_onnx(net, example, tmp_path / f"residual_{zero}.onnx")
        counts = check_budget(onnx.load(str(path)))
        assert set(counts) <= ALLOWED_OPS and "Tile" in counts
        got = dict(zip(OUTPUT_NAMES, ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
            list(OUTPUT_NAMES), arrays)))
        with torch.no_grad():
            want = {k: v.numpy() for k, v in net.detect(*example).items()}
        np.testing.assert_array_equal(got["labels"], want["labels"])
        for name in ("boxes", "scores", "trajectories", "mode_probs"):
            assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-4, err_msg=name)
        if zero:
            valid = got["labels"][0] >= 0
            _assert_constant_velocity(got["boxes"][0][valid], got["trajectories"][0][valid])


def test_switch_is_off_for_the_shipped_checkpoint_and_travels_in_checkpoints(tmp_path):
    from perception.config import load_config
    from perception.pipeline import Pipeline
    from perception.train.checkpoint import load_checkpoint, save_checkpoint
    from small_model import small_config, small_net

    shipped = load_checkpoint(REPO / "checkpoints" / "synthetic_tiny.pt")["config"]
    assert not shipped.model.head.trajectory_residual.enabled  # trained with direct offsets
    assert not load_config(REPO / "configs" / "synthetic_tiny.yaml").model.head.trajectory_residual.enabled
    cfg = small_config(RESIDUAL)
    save_checkpoint(tmp_path / "r.pt", small_net(cfg), cfg)
    pipe = Pipeline.from_checkpoint(tmp_path / "r.pt")
    assert pipe.runner.net.trajectory_head.residual
