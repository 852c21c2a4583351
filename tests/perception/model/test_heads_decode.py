"""CenterHead, TrajectoryHead and decode: shapes and gradients, decode against its Python-loop reference
(random maps, ties, a hand-computed golden case, adjacent peaks), and the exported graph against eager PyTorch
in ONNX Runtime inside the TensorRT-native op budget."""
from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from torch import nn

from perception.config import GridConfig
from perception.model.decode import (
    OUTPUT_NAMES,
    BevGrid,
    Decoder,
    decode,
    max_pool_nms,
)
from perception.attributes import attribute_from_class_and_speed
from reference.model import decode_reference
from perception.model.heads.center_head import REGRESSIONS, CenterHead
from perception.model.heads.trajectory_head import TrajectoryHead

GRID = BevGrid(x_range=(-10.0, 10.0), y_range=(-20.0, 20.0), shape=(10, 20))  # 2 m x 2 m cells
EMPTY = -200.0  # heatmap logit whose sigmoid is exactly 0 in float32: a suppressed / padding cell


def _random_maps(seed: int, b: int = 2, k: int = 3, grid: BevGrid = GRID, modes: int = 3, steps: int = 4):
    g = torch.Generator().manual_seed(seed)
    h, w = grid.shape
    center = {"heatmap": torch.randn(b, k, h, w, generator=g) * 2}
    center.update({name: torch.randn(b, c, h, w, generator=g) for name, c in REGRESSIONS})
    trajectory = {"offsets": torch.randn(b, modes * steps * 2, h, w, generator=g) * 5,
                  "mode_logits": torch.randn(b, modes, h, w, generator=g)}
    return center, trajectory


def _empty_maps(k: int = 2, modes: int = 2, steps: int = 3):
    h, w = GRID.shape
    center = {"heatmap": torch.full((1, k, h, w), EMPTY)}
    center.update({name: torch.zeros(1, c, h, w) for name, c in REGRESSIONS})
    trajectory = {"offsets": torch.zeros(1, modes * steps * 2, h, w), "mode_logits": torch.zeros(1, modes, h, w)}
    return center, trajectory


def _assert_matches_reference(out: dict, ref: dict) -> None:
    assert_array_equal(out["labels"].numpy(), ref["labels"])
    assert_array_equal(out["scores"].numpy(), ref["scores"])  # same float32 sigmoid values, same order
    assert_allclose(out["boxes"].numpy(), ref["boxes"], rtol=1e-5, atol=1e-5)
    if "trajectories" in ref:
        assert_allclose(out["trajectories"].numpy(), ref["trajectories"], rtol=1e-5, atol=1e-4)
        assert_allclose(out["mode_probs"].numpy(), ref["mode_probs"], rtol=1e-5, atol=1e-6)


# -- the grid ---------------------------------------------------------------------------------------------------


def test_bev_grid_cell_centres_and_encoder():
    assert (GRID.res_x, GRID.res_y) == (2.0, 2.0)
    ij, off = GRID.cell_and_offset(torch.tensor([[-3.0, -9.0], [-2.5, -9.2], [9.99, -20.0]]))
    assert_array_equal(ij.numpy(), [[3, 5], [3, 5], [9, 0]])  # (-3, -9) is the centre of cell (3, 5)
    assert_allclose(off.numpy(), [[0.0, 0.0], [0.25, -0.1], [0.495, -0.5]], atol=1e-5)
    assert BevGrid.from_config(GridConfig(), stride=2) == BevGrid((-51.2, 51.2), (-51.2, 51.2), (64, 64))
    with pytest.raises(ValueError, match="not divisible"):
        BevGrid.from_config(GridConfig(), stride=3)
    with pytest.raises(ValueError, match="ordered"):
        BevGrid((1.0, -1.0), (0.0, 1.0), (2, 2))


def test_encoder_and_decode_round_trip():
    """Centres encoded by BevGrid.cell_and_offset (the training-target convention) decode back exactly."""
    centres = torch.tensor([[-9.3, 17.1], [0.2, 0.3], [6.0, -19.9]])
    center, trajectory = _empty_maps()
    ij, off = GRID.cell_and_offset(centres)
    for (i, j), o, logit in zip(ij.tolist(), off, (3.0, 2.0, 1.0)):
        center["heatmap"][0, 0, i, j] = logit
        center["offset"][0, :, i, j] = o
    out = decode(center, GRID, trajectory, max_detections=4)
    assert_allclose(out["boxes"][0, :3, :2].numpy(), centres.numpy(), atol=1e-5)
    assert out["labels"][0].tolist() == [0, 0, 0, -1]


# -- heads ------------------------------------------------------------------------------------------------------


def test_head_shapes_and_heatmap_prior():
    bev = torch.randn(2, 8, 10, 20)
    center = CenterHead(8, num_classes=3, head_channels=16).eval()
    traj = TrajectoryHead(8, modes=6, steps=12, head_channels=16).eval()
    with torch.no_grad():
        c, t = center(bev), traj(bev)
    assert {k: tuple(v.shape) for k, v in c.items()} == {
        "heatmap": (2, 3, 10, 20), "offset": (2, 2, 10, 20), "z": (2, 1, 10, 20), "log_size": (2, 3, 10, 20),
        "rotation": (2, 2, 10, 20), "velocity": (2, 2, 10, 20)}
    assert {k: tuple(v.shape) for k, v in t.items()} == {"offsets": (2, 144, 10, 20), "mode_logits": (2, 6, 10, 20)}
    bias = center.heatmap[-1].bias
    assert_allclose(bias.detach().numpy(), np.full(3, -math.log(9.0)), rtol=1e-6)  # -2.19: p = 0.1
    assert abs(-math.log(9.0) - (-2.19)) < 0.01


def test_gradients_reach_every_parameter_and_the_input():
    torch.manual_seed(0)
    bev = torch.randn(2, 8, 10, 20, requires_grad=True)
    center, traj = CenterHead(8, 3, head_channels=16), TrajectoryHead(8, modes=2, steps=3, head_channels=16)
    c, t = center(bev), traj(bev)
    loss = sum((v ** 2).mean() for v in list(c.values()) + list(t.values()))
    out = decode(c, GRID, t, max_detections=20)  # decode is differentiable w.r.t. the regressions it gathers
    loss = loss + out["boxes"].square().mean() + out["trajectories"].square().mean()
    loss.backward()
    for name, p in list(center.named_parameters()) + list(traj.named_parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert bev.grad is not None and bev.grad.abs().sum() > 0


# -- decode vs the reference ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed,max_detections", [(0, 40), (1, 200), (2, 600)])
def test_decode_matches_reference_on_random_maps(seed, max_detections):
    """About 90 peaks per item (a random cell is a 3x3 maximum with p = 1/9, more on the border): 40 slots
    cut the peaks, 200 and 600 (= K*H*W) pad."""
    center, trajectory = _random_maps(seed)
    out = decode(center, GRID, trajectory, max_detections)
    ref = decode_reference(center, GRID, trajectory, max_detections)
    _assert_matches_reference(out, ref)
    num_peaks = (max_pool_nms(center["heatmap"].sigmoid()) > 0).flatten(1).sum(1)  # (B,)
    assert ((out["labels"] >= 0).sum(1) == num_peaks.clamp(max=max_detections)).all()
    assert (out["labels"] == -1).any() == (max_detections > 100)
    # Without a trajectory head the box outputs are unchanged.
    det_only = decode(center, GRID, None, max_detections)
    assert set(det_only) == {"boxes", "scores", "labels"}
    assert torch.equal(det_only["boxes"], out["boxes"])


def test_equal_scores_ordered_by_flat_index():
    """40 separated peaks with one score, plus an adjacent equal pair (both survive NMS): the slots follow
    ascending (class, row, column), whatever order torch.topk returns equal values in."""
    center, trajectory = _empty_maps(k=2)
    cells = [(kk, i, j) for kk in (1, 0) for i in range(0, 10, 2) for j in range(0, 20, 5)]  # isolated cells
    cells += [(0, 9, 1), (0, 9, 2)]
    for kk, i, j in cells:
        center["heatmap"][0, kk, i, j] = 1.0
    out = decode(center, GRID, trajectory, max_detections=50)
    ij = GRID.cell_and_offset(out["boxes"][0, :42, :2])[0]  # zero offsets: the decoded centres give the cells
    got = [(label, i, j) for label, (i, j) in zip(out["labels"][0, :42].tolist(), ij.tolist())]
    assert got == sorted(cells)
    assert (out["labels"][0, 42:] == -1).all()
    _assert_matches_reference(out, decode_reference(center, GRID, trajectory, max_detections=50))


def test_golden_boxes_and_trajectories():
    """Two peaks with hand-chosen regressions; every number below is computed by hand from the grid
    convention (cell (i, j) centre = (-10 + 2 (i + 0.5), -20 + 2 (j + 0.5)))."""
    center, trajectory = _empty_maps(k=2, modes=2, steps=3)
    # Peak A: class 1 at cell (3, 5) (centre (-3, -9)), logit 3.
    center["heatmap"][0, 1, 3, 5] = 3.0
    center["offset"][0, :, 3, 5] = torch.tensor([0.25, -0.1])  # -> x = -3 + 0.5, y = -9 - 0.2
    center["z"][0, 0, 3, 5] = 0.8
    center["log_size"][0, :, 3, 5] = torch.tensor([1.9, 4.6, 1.6]).log()
    center["rotation"][0, :, 3, 5] = torch.tensor([math.sin(0.5), math.cos(0.5)]) * 3  # scale does not matter
    center["velocity"][0, :, 3, 5] = torch.tensor([3.0, -1.0])
    trajectory["offsets"][0, :, 3, 5] = torch.tensor([1, 0, 2, 0, 3, 0, 1, 1, 2, 2, 3, 3], dtype=torch.float32)
    trajectory["mode_logits"][0, :, 3, 5] = torch.tensor([math.log(3.0), 0.0])  # -> (0.75, 0.25)
    # Peak B: class 0 at cell (7, 12) (centre (5, 5)), logit 1.
    center["heatmap"][0, 0, 7, 12] = 1.0
    center["offset"][0, :, 7, 12] = torch.tensor([-0.5, 0.4])  # -> x = 5 - 1, y = 5 + 0.8
    center["z"][0, 0, 7, 12] = -0.3
    center["log_size"][0, :, 7, 12] = torch.tensor([0.6, 0.8, 1.7]).log()
    center["rotation"][0, :, 7, 12] = torch.tensor([math.sin(-2.0), math.cos(-2.0)])
    trajectory["offsets"][0, :, 7, 12] = torch.tensor([0, -1, 0, -2, 0, -3, -1, 0, -2, 0, -3, 0],
                                                      dtype=torch.float32)

    out = decode(center, GRID, trajectory, max_detections=4)
    expected_boxes = np.array([[-2.5, -9.2, 0.8, 1.9, 4.6, 1.6, 0.5, 3.0, -1.0],
                               [4.0, 5.8, -0.3, 0.6, 0.8, 1.7, -2.0, 0.0, 0.0],
                               [0.0] * 9, [0.0] * 9])
    assert_allclose(out["boxes"][0].numpy(), expected_boxes, atol=1e-5)
    assert_allclose(out["scores"][0].numpy(), [1 / (1 + math.exp(-3)), 1 / (1 + math.exp(-1)), 0, 0], rtol=1e-6)
    assert_array_equal(out["labels"][0].numpy(), [1, 0, -1, -1])
    expected_traj = np.zeros((4, 2, 3, 2))
    expected_traj[0] = [[[-1.5, -9.2], [-0.5, -9.2], [0.5, -9.2]], [[-1.5, -8.2], [-0.5, -7.2], [0.5, -6.2]]]
    expected_traj[1] = [[[4.0, 4.8], [4.0, 3.8], [4.0, 2.8]], [[3.0, 5.8], [2.0, 5.8], [1.0, 5.8]]]
    assert_allclose(out["trajectories"][0].numpy(), expected_traj, atol=1e-5)
    assert_allclose(out["mode_probs"][0].numpy(), [[0.75, 0.25], [0.5, 0.5], [0, 0], [0, 0]], atol=1e-6)
    _assert_matches_reference(out, decode_reference(center, GRID, trajectory, max_detections=4))


def test_adjacent_peaks_keep_only_local_maxima():
    center, trajectory = _empty_maps(k=2)
    heat = center["heatmap"]
    heat[0, 0, 4, 4] = 2.0  # local maximum
    heat[0, 0, 4, 5] = 1.0  # right neighbour of (4, 4): suppressed
    heat[0, 0, 5, 5] = 1.5  # diagonal neighbour of (4, 4): suppressed
    heat[0, 0, 3, 3] = 1.9  # diagonal neighbour of (4, 4): suppressed
    heat[0, 0, 4, 7] = 1.8  # two cells from (4, 5): not its neighbour, a maximum of its own
    heat[0, 1, 4, 5] = 0.5  # same cell, other class: NMS is per class
    heat[0, 0, 0, 0] = 0.2  # map corner: the outside counts as -inf
    heat[0, 0, 8, 10] = heat[0, 0, 8, 11] = 1.2  # plateau: equal neighbours both kept
    kept = max_pool_nms(heat.sigmoid())[0] > 0
    assert sorted(map(tuple, kept.nonzero().tolist())) == [(0, 0, 0), (0, 4, 4), (0, 4, 7), (0, 8, 10), (0, 8, 11),
                                                           (1, 4, 5)]
    out = decode(center, GRID, trajectory, max_detections=8)
    sig = torch.tensor([2.0, 1.8, 1.2, 1.2, 0.5, 0.2]).sigmoid().numpy()
    assert_array_equal(out["scores"][0].numpy(), np.concatenate([sig, [0.0, 0.0]]).astype(np.float32))
    assert_array_equal(out["labels"][0].numpy(), [0, 0, 0, 0, 1, 0, -1, -1])
    cells = GRID.cell_and_offset(out["boxes"][0, :6, :2])[0].tolist()  # zero offsets: decoded centres
    assert cells == [[4, 4], [4, 7], [8, 10], [8, 11], [4, 5], [0, 0]]
    _assert_matches_reference(out, decode_reference(center, GRID, trajectory, max_detections=8))


def test_decode_refuses_mismatched_grid_and_oversized_topk():
    center, trajectory = _empty_maps()
    with pytest.raises(ValueError, match="BevGrid"):
        decode(center, BevGrid((-10.0, 10.0), (-20.0, 20.0), (20, 40)), trajectory)
    with pytest.raises(ValueError, match="max_detections"):
        decode(center, GRID, trajectory, max_detections=401)


# -- attributes -------------------------------------------------------------------------------------------------


def test_attributes_follow_the_centerpoint_rule():
    classes = ("car", "truck", "bus", "trailer", "construction_vehicle", "pedestrian", "motorcycle", "bicycle",
               "traffic_cone", "barrier")
    labels = np.array([list(range(10)) + [-1]] * 2)
    speed = np.array([[1.0] * 11, [0.1] * 11])
    assert attribute_from_class_and_speed(labels, speed, classes) == [
        ["vehicle.moving"] * 5 + ["pedestrian.moving", "cycle.with_rider", "cycle.with_rider", "", "", ""],
        ["vehicle.parked", "vehicle.parked", "vehicle.stopped", "vehicle.parked", "vehicle.parked",
         "pedestrian.standing", "cycle.without_rider", "cycle.without_rider", "", "", ""]]
    assert attribute_from_class_and_speed(np.array([0, 0]), np.array([0.2, 0.2001]), ("car",)) == [
        "vehicle.parked", "vehicle.moving"]  # strictly above 0.2 m/s
    with pytest.raises(ValueError, match="labels must be"):
        attribute_from_class_and_speed(np.array([3]), np.array([0.0]), ("car",))
    with pytest.raises(ValueError, match="no attribute rule"):
        attribute_from_class_and_speed(np.array([0]), np.array([0.0]), ("tram",))


# -- export -----------------------------------------------------------------------------------------------------


class _DetectAndForecast(nn.Module):
    """The heads and the decoder as the exported graph composes them: BEV features in, OUTPUT_NAMES out."""

    def __init__(self, grid: BevGrid, num_classes: int, max_detections: int) -> None:
        super().__init__()
        self.center = CenterHead(16, num_classes, head_channels=16)
        self.trajectory = TrajectoryHead(16, modes=6, steps=12, head_channels=16)
        self.decoder = Decoder(grid, max_detections)

    def forward(self, bev: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.decoder(self.center(bev), self.trajectory(bev))
        return tuple(out[name] for name in OUTPUT_NAMES)


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_export_is_in_budget_fixed_size_and_matches_pytorch(dynamo):
    import onnx
    import onnxruntime as ort
    from onnx import shape_inference

    from export.budget import check_budget

    grid = BevGrid((-25.6, 25.6), (-38.4, 38.4), (16, 24))
    torch.manual_seed(0)
    model = _DetectAndForecast(grid, num_classes=3, max_detections=100).eval()
    bev = torch.randn(2, 16, 16, 24)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        if dynamo:
            proto = torch.onnx.export(model, (bev,), None, opset_version=17, dynamo=True, verbose=False,
                                      input_names=["bev"], output_names=list(OUTPUT_NAMES)).model_proto
        else:
            buf = io.BytesIO()
            torch.onnx.export(model, (bev,), buf, opset_version=17, dynamo=False, input_names=["bev"],
                              output_names=list(OUTPUT_NAMES))
            proto = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(proto)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    counts = check_budget(proto)
    assert "NonZero" not in counts and counts["TopK"] == 1 and counts["MaxPool"] == 1

    # Fixed sizes: every output and every intermediate tensor has a static shape.
    expected = {"boxes": [2, 100, 9], "scores": [2, 100], "labels": [2, 100], "trajectories": [2, 100, 6, 12, 2],
                "mode_probs": [2, 100, 6]}
    inferred = shape_inference.infer_shapes(proto, strict_mode=True, data_prop=True)
    dims = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
            for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    assert {name: dims[name] for name in OUTPUT_NAMES} == expected
    assert not [name for name, d in dims.items() if None in d]

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = dict(zip(OUTPUT_NAMES, session.run(None, {"bev": bev.numpy()})))
    with torch.no_grad():
        want = dict(zip(OUTPUT_NAMES, (t.numpy() for t in model(bev))))
    scores = want["scores"][want["scores"] > 0]
    assert len(np.unique(scores)) == len(scores), "tied scores in the test input: TopK may pick other cells"
    assert_array_equal(got["labels"], want["labels"])
    assert got["labels"].dtype == np.int64
    for name in ("boxes", "scores", "trajectories", "mode_probs"):
        assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-4, err_msg=name)
