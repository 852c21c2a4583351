"""Temporal fusion: the BEV warp against hand-placed cells (translation, rotation, flip, out of bounds), against a
slow per-cell reference, the fusion's cold start, and the temporal network's export inside the op budget."""
import numpy as np
import pytest
import torch

from perception.model.temporal import BevWarp, TemporalFusion

# a 16 x 16 grid of 1 m cells over [-8, 8] m: cell (i, j) has its centre at (-7.5 + i, -7.5 + j)
RANGE, SHAPE = (-8.0, 8.0), (16, 16)


def _motion(yaw_deg: float = 0.0, tx: float = 0.0, ty: float = 0.0, flip_y: bool = False) -> torch.Tensor:
    c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
    m = np.array([[c, -s, 0, tx], [s, c, 0, ty], [0, 0, 1, 0], [0, 0, 0, 1]])
    if flip_y:
        m = np.diag([1.0, -1.0, 1.0, 1.0]) @ m
    return torch.tensor(m, dtype=torch.float32)[None]


def _hot(i: int, j: int, channels: int = 2) -> torch.Tensor:
    bev = torch.zeros(1, channels, *SHAPE)
    bev[0, :, i, j] = torch.arange(1, channels + 1, dtype=torch.float32)
    return bev


def _cell_of(xy) -> tuple[int, int]:
    return int(np.floor(xy[0] - RANGE[0])), int(np.floor(xy[1] - RANGE[0]))


@pytest.mark.parametrize("yaw, tx, ty, flip", [(0, 3, 0, False), (0, -2, 4, False), (90, 0, 0, False),
                                                (-90, 2, -1, False), (180, 1, 1, False), (0, 0, 0, True),
                                                (90, -3, 2, True)])
def test_a_hand_placed_cell_lands_where_the_motion_puts_it(yaw, tx, ty, flip):
    """An object at cell (3, 11) of the previous frame appears at cur_from_prev @ its centre in the current frame
    (whole-cell moves and quarter turns map centres onto centres, so bilinear sampling gives the value exactly)."""
    warp = BevWarp(RANGE, RANGE, SHAPE)
    i, j = 3, 11
    centre = np.array([RANGE[0] + i + 0.5, RANGE[0] + j + 0.5, 0.0, 1.0])
    m = _motion(yaw, tx, ty, flip)
    ci, cj = _cell_of(m[0].double().numpy() @ centre)
    warped, inside = warp(_hot(i, j), m)
    assert inside.shape == (1, 1, *SHAPE) and warped.shape == (1, 2, *SHAPE)
    expected = torch.zeros(1, 2, *SHAPE)
    expected[0, :, ci, cj] = torch.tensor([1.0, 2.0])
    torch.testing.assert_close(warped, expected, atol=1e-5, rtol=0)


def test_cells_coming_from_outside_the_previous_grid_are_zero_and_marked_outside():
    warp = BevWarp(RANGE, RANGE, SHAPE)
    prev = torch.ones(1, 3, *SHAPE)
    warped, inside = warp(prev, _motion(tx=-5.0))  # the ego moved 5 m forward: the front 5 rows are new ground
    assert torch.all(inside[0, 0, -5:] == 0) and torch.all(inside[0, 0, :-5] == 1)
    assert torch.all(warped[0, :, -5:] == 0)
    torch.testing.assert_close(warped[0, :, :-5], torch.ones(3, 11, 16))


def test_sample_points_equal_a_per_cell_reference_with_numpy_inverse():
    """The in-graph 2x2 inverse against np.linalg.inv of the full 4x4, per cell, on random motions with scale."""
    rng = np.random.default_rng(0)
    warp = BevWarp((-51.2, 51.2), (-40.0, 40.0), (8, 10))
    mats = []
    for _ in range(3):
        s = rng.uniform(0.9, 1.1)
        m = _motion(rng.uniform(-180, 180), *rng.uniform(-10, 10, 2))[0].double().numpy()
        m[:2, :2] *= s
        mats.append(m)
    px, py = warp.sample_points(torch.tensor(np.stack(mats), dtype=torch.float32))
    for b, m in enumerate(mats):
        inv = np.linalg.inv(m)
        for i in range(8):
            for j in range(10):
                cur = np.array([-51.2 + (i + 0.5) * 12.8, -40.0 + (j + 0.5) * 8.0, 0.0, 1.0])
                want = inv @ cur
                assert abs(px[b, i, j].item() - want[0]) < 1e-3 and abs(py[b, i, j].item() - want[1]) < 1e-3


def test_fusion_ignores_the_previous_bev_when_invalid():
    torch.manual_seed(0)
    fusion = TemporalFusion(4, RANGE, RANGE, SHAPE).eval()
    bev = torch.randn(2, 4, *SHAPE)
    m, dt = _motion(10, 1, 2).expand(2, 4, 4), torch.tensor([0.5, 0.5])
    invalid = torch.tensor([False, False])
    a = fusion(bev, torch.randn(2, 4, *SHAPE), m, dt, invalid)
    b = fusion(bev, torch.randn(2, 4, *SHAPE), m, dt, invalid)
    torch.testing.assert_close(a, b)
    cold = fusion(bev, *fusion.cold_inputs(bev))
    torch.testing.assert_close(a, cold)
    valid = fusion(bev, torch.randn(2, 4, *SHAPE), m, dt, torch.tensor([True, True]))
    assert (valid - a).abs().max() > 1e-3  # with history the output depends on it


@pytest.fixture(scope="module")
def temporal_net():
    from small_model import small_config, small_net

    cfg = small_config("model.temporal.enabled=true")
    return cfg, small_net(cfg)


def test_a_temporal_network_returns_its_single_frame_bev_and_cold_starts_without_state(temporal_net):
    from export.cli import example_inputs
    from perception.model.network import INPUT_NAMES, TEMPORAL_INPUT_NAMES

    cfg, net = temporal_net
    assert net.input_names == INPUT_NAMES + TEMPORAL_INPUT_NAMES
    arrays = example_inputs(cfg, 6, 1)
    x = [torch.from_numpy(arrays[k]) for k in INPUT_NAMES]
    with torch.no_grad():
        out = net(*x)
        bev = net.single_frame_bev(*x)
        cold = net(*x, *net.temporal.cold_inputs(bev))
        warm = net(*x, *[torch.from_numpy(arrays[k]) for k in TEMPORAL_INPUT_NAMES])
    assert out["bev_state"].shape == (1, cfg.model.fusion.channels, *cfg.data.grid.bev_shape)
    torch.testing.assert_close(out["bev_state"], bev)
    torch.testing.assert_close(out["heatmap"], cold["heatmap"])
    assert (warm["heatmap"] - cold["heatmap"]).abs().max() > 1e-4


def test_the_temporal_export_stays_in_the_op_budget_with_one_more_4d_grid_sample(temporal_net, tmp_path):
    """Op types, default domain and 4-D GridSample inputs (export.budget); the warp adds exactly one GridSample
    to the single-frame graph, and its inputs/outputs are the single-frame ones plus the state."""
    import onnx

    from export.budget import check_budget
    from export.cli import example_inputs
    from export.onnx import export_onnx
    from small_model import small_config, small_net

    cfg, net = temporal_net
    arrays = example_inputs(cfg, 6, 1)
    path = export_onnx(net, [torch.from_numpy(arrays[k]) for k in net.input_names], tmp_path / "t.onnx")
    single_cfg = small_config()
    single = small_net(single_cfg)
    base = export_onnx(single, [torch.from_numpy(arrays[k]) for k in single.input_names], tmp_path / "s.onnx")
    counts, base_counts = check_budget(onnx.load(str(path))), check_budget(onnx.load(str(base)))
    assert counts["GridSample"] == base_counts["GridSample"] + 1
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == list(net.input_names)
    assert [o.name for o in model.graph.output][-1] == "bev_state"
