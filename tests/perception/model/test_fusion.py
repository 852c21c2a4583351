"""Deformable cross-attention fusion: the grid_sample op against a Python-loop reference, golden checks of the
pixel-centre convention and of the offset units, modality switches, gradients, and ONNX export inside the
TensorRT-native op budget with ONNX Runtime parity."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from perception.model.fusion import (ConvFusion, CrossAttentionFusion, DeformableCrossAttention, FusionLayer,
                                     deformable_sample)
from reference.model import deformable_sample_reference


def _random_sample_inputs(gen: torch.Generator, B: int, C: int, heads: int, shapes: list[tuple[int, int]], Q: int,
                          P: int, offset_scale: float):
    values = [torch.randn(B, C, h, w, generator=gen) for h, w in shapes]
    ref_uv = torch.rand(B, Q, 2, generator=gen)
    offsets = torch.randn(B, Q, heads, len(shapes), P, 2, generator=gen) * offset_scale
    logits = torch.randn(B, Q, heads, len(shapes) * P, generator=gen)
    weights = logits.softmax(-1).reshape(B, Q, heads, len(shapes), P)  # (B, Q, heads, L, P)
    return values, ref_uv, offsets, weights


@pytest.mark.parametrize("B,C,heads,shapes,Q,P,offset_scale", [
    (2, 8, 2, [(6, 6), (6, 6)], 7, 3, 0.1),  # square maps, samples mostly inside
    (2, 12, 3, [(5, 9), (5, 9)], 6, 4, 0.4),  # non-square; large offsets push many samples outside
    (1, 4, 1, [(4, 7)], 9, 2, 0.8),  # one level, one head, most samples outside
    (2, 8, 4, [(8, 5), (3, 11), (6, 6)], 5, 2, 0.3),  # levels of different sizes
])
def test_deformable_sample_matches_reference(B, C, heads, shapes, Q, P, offset_scale):
    gen = torch.Generator().manual_seed(B * 100 + C * 10 + Q)
    values, ref_uv, offsets, weights = _random_sample_inputs(gen, B, C, heads, shapes, Q, P, offset_scale)
    loc = ref_uv[:, :, None, None, None, :] + offsets  # (B, Q, heads, L, P, 2)
    outside = ((loc < 0) | (loc > 1)).any(-1).float().mean()
    assert outside > 0.02, "the random offsets must push some samples outside the map"
    fast = deformable_sample(values, ref_uv, offsets, weights, heads)
    slow = deformable_sample_reference(values, ref_uv, offsets, weights, heads)
    assert fast.shape == (B, Q, C)
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-5)


def test_deformable_sample_reads_cell_centres_exactly():
    """Golden: grid_sample(align_corners=False) reads value[:, :, i, j] at ((j + 0.5) / W, (i + 0.5) / H)."""
    H, W, heads, C, P = 5, 7, 2, 6, 3
    gen = torch.Generator().manual_seed(0)
    values = [torch.randn(1, C, H, W, generator=gen), torch.randn(1, C, H, W, generator=gen)]
    cells = [(i, j) for i in range(H) for j in range(W)]
    ref_uv = torch.tensor([[((j + 0.5) / W, (i + 0.5) / H) for i, j in cells]])  # (1, Q, 2)
    offsets = torch.zeros(1, len(cells), heads, 2, P, 2)
    for level in (0, 1):
        weights = torch.zeros(1, len(cells), heads, 2, P)
        weights[..., level, 1] = 1.0  # all attention on point 1 of this level
        out = deformable_sample(values, ref_uv, offsets, weights, heads)  # (1, Q, C)
        expected = values[level][0].flatten(1).T  # (H*W, C), row-major cells as in `cells`
        torch.testing.assert_close(out[0], expected, rtol=0, atol=1e-6)


def test_deformable_sample_golden_interpolation_and_zero_padding():
    """Hand-computed values: the corner shared by four cells averages them; half a cell beyond the left edge
    the bilinear weight of the (missing) outside column is zero-padded, so half of the edge value remains."""
    value = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])[None, None]  # (1, 1, H=2, W=3)
    ref_uv = torch.tensor([[[1 / 3, 0.5], [0.0, 0.25], [2 / 3, 1.0]]])  # (1, 3, 2)
    offsets = torch.zeros(1, 3, 1, 1, 1, 2)
    weights = torch.ones(1, 3, 1, 1, 1)
    out = deformable_sample([value], ref_uv, offsets, weights, 1)[0, :, 0]  # (3,)
    # corner between cells (0,0),(0,1),(1,0),(1,1): mean(1, 2, 4, 5); left edge of cell (0,0): 0.5 * 1;
    # x at the corner between columns 1 and 2, y half a cell below the bottom row centre: 0.5 * mean(5, 6)
    torch.testing.assert_close(out, torch.tensor([3.0, 0.5, 2.75]), rtol=0, atol=1e-6)


def test_attention_offsets_are_in_cells_of_each_level():
    """Golden at module level: with identity projections, one attended point and its offset set to (+1, -1)
    cells, the query at cell (i, j) reads value[:, :, i - 1, j + 1] (the neighbour one column right, one row up),
    on non-square maps of different sizes per level."""
    C, heads, P = 4, 2, 2
    attn = DeformableCrossAttention(C, num_heads=heads, num_levels=2, num_points=P)
    with torch.no_grad():
        for conv in attn.value_proj:
            conv.weight.copy_(torch.eye(C)[:, :, None, None])
            conv.bias.zero_()
        attn.output_proj.weight.copy_(torch.eye(C))
        attn.output_proj.bias.zero_()
        attn.sampling_offsets.bias.zero_()
        offset_bias = attn.sampling_offsets.bias.view(heads, 2, P, 2)  # (heads, L, P, 2), cells
        offset_bias[:, :, 0] = torch.tensor([1.0, -1.0])
        logit_bias = attn.attention_weights.bias.view(heads, 2, P)  # (heads, L, P)
        logit_bias.fill_(-1e4)
        logit_bias[:, 1, 0] = 0.0  # all attention on point 0 of level 1
    gen = torch.Generator().manual_seed(1)
    values = [torch.randn(1, C, 4, 6, generator=gen), torch.randn(1, C, 5, 9, generator=gen)]
    H, W = 5, 9
    cells = [(2, 3), (4, 0), (1, 7)]
    ref_uv = torch.tensor([[((j + 0.5) / W, (i + 0.5) / H) for i, j in cells]])  # (1, 3, 2), level-1 centres
    query = torch.randn(1, len(cells), C, generator=gen)
    out = attn(query, torch.zeros_like(query), ref_uv, values)  # (1, 3, C)
    expected = torch.stack([values[1][0, :, i - 1, j + 1] for i, j in cells])  # (3, C)
    torch.testing.assert_close(out[0], expected, rtol=0, atol=1e-5)


def test_attention_init_is_a_uniform_ring():
    attn = DeformableCrossAttention(16, num_heads=4, num_levels=2, num_points=3)
    rings = attn.sampling_offsets.bias.detach().view(4, 2, 3, 2)  # (heads, L, P, 2), cells
    expected_dirs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])  # 4 heads at 90 degrees
    for p in range(3):
        torch.testing.assert_close(rings[:, 0, p], expected_dirs * (p + 1), rtol=0, atol=1e-6)
        torch.testing.assert_close(rings[:, 1, p], expected_dirs * (p + 1), rtol=0, atol=1e-6)
    assert not attn.attention_weights.weight.any() and not attn.attention_weights.bias.any()


def _assert_all_parameters_get_gradient(module: torch.nn.Module, out: torch.Tensor) -> None:
    # a random projection of the output: out.sum() would give zero gradient through the final LayerNorm
    probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(7))
    (out * probe).sum().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} got an all-zero gradient"


def test_deformable_cross_attention_and_layer_shapes_and_gradients():
    torch.manual_seed(0)
    B, Q, C = 2, 10, 16
    layer = FusionLayer(C, heads=4, levels=2, points=3)
    query, pos = torch.randn(B, Q, C), torch.randn(1, Q, C)
    ref_uv = torch.rand(B, Q, 2)
    values = [torch.randn(B, C, 6, 8), torch.randn(B, C, 6, 8)]
    out = layer(query, pos, ref_uv, values)
    assert out.shape == (B, Q, C) and torch.isfinite(out).all()
    _assert_all_parameters_get_gradient(layer, out)
    with pytest.raises(ValueError, match="num_levels=2"):
        layer.cross_attn(query, pos, ref_uv, values[:1])


CAM_C, RADAR_C, CH, BEV = 12, 6, 16, (8, 10)


def _inputs(B: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(B, CAM_C, *BEV, generator=gen), torch.randn(B, RADAR_C, *BEV, generator=gen)


def _fusion(kind: str, camera: bool, radar: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "attention":
        return CrossAttentionFusion(CAM_C, RADAR_C, CH, layers=2, heads=4, points=2, bev_shape=BEV,
                                    camera_enabled=camera, radar_enabled=radar)
    return ConvFusion(CAM_C, RADAR_C, CH, camera_enabled=camera, radar_enabled=radar)


@pytest.mark.parametrize("kind", ["attention", "conv"])
@pytest.mark.parametrize("camera,radar", [(True, True), (True, False), (False, True)])
def test_fusion_modalities_shapes_and_gradients(kind, camera, radar):
    model = _fusion(kind, camera, radar)
    cam, rad = _inputs()
    out = model(cam if camera else None, rad if radar else None)
    assert out.shape == (2, CH, *BEV) and torch.isfinite(out).all()
    _assert_all_parameters_get_gradient(model, out)
    if kind == "attention":
        assert all(layer.cross_attn.num_levels == camera + radar for layer in model.layers)


@pytest.mark.parametrize("kind", ["attention", "conv"])
def test_fusion_with_zero_radar_map(kind):
    model = _fusion(kind, True, True)
    cam, rad = _inputs(seed=3)
    out = model(cam, torch.zeros_like(rad))
    assert out.shape == (2, CH, *BEV) and torch.isfinite(out).all()
    (out * torch.randn_like(out)).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # a zero radar map is not a switched-off radar: the output depends on which radar map is given
    with torch.no_grad():
        assert not torch.allclose(model(cam, torch.zeros_like(rad)), model(cam, rad))


@pytest.mark.parametrize("kind", ["attention", "conv"])
def test_fusion_rejects_inputs_that_disagree_with_construction(kind):
    cam, rad = _inputs()
    with pytest.raises(ValueError, match="radar_enabled=False"):
        _fusion(kind, True, True)(cam, None)
    with pytest.raises(ValueError, match="disabled at construction"):
        _fusion(kind, True, False)(cam, rad)
    if kind == "attention":
        with pytest.raises(ValueError, match="bev_shape"):
            _fusion(kind, True, True)(cam[..., :-1], rad[..., :-1])


# -- export ------------------------------------------------------------------------------------------------


def _export_and_check(model: torch.nn.Module, inputs: dict[str, torch.Tensor | None], tmp_path, dynamo: bool):
    """Export with torch.onnx.export at opset 17, check the op budget and ONNX Runtime parity."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from export.budget import check_budget

    model.eval()
    args = tuple(inputs.values())
    names = [k for k, v in inputs.items() if v is not None]
    path = tmp_path / f"fusion_{'dynamo' if dynamo else 'legacy'}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings of the legacy exporter, deprecation notices
        torch.onnx.export(model, args, str(path), opset_version=17, dynamo=dynamo, input_names=names,
                          output_names=["fused_bev"])
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    # the dynamo exporter builds opset 18 and converts down; it keeps 18 silently if the conversion fails
    assert {o.domain: o.version for o in proto.opset_import}.get("", None) == 17
    counts = check_budget(proto)  # op types, default domain only, GridSample inputs 4-D
    levels = sum(v is not None for v in args)
    expected_grid_samples = 2 * levels if isinstance(model, CrossAttentionFusion) else 0  # 2 layers x levels
    assert counts.get("GridSample", 0) == expected_grid_samples
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {k: v.numpy() for k, v in inputs.items() if v is not None}
    got = session.run(None, feeds)[0]
    with torch.no_grad():
        want = model(*args).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _small_attention_fusion(camera: bool = True, radar: bool = True) -> CrossAttentionFusion:
    torch.manual_seed(0)
    model = CrossAttentionFusion(24, 8, 32, layers=2, heads=4, points=4, bev_shape=(16, 16),
                                 camera_enabled=camera, radar_enabled=radar)
    with torch.no_grad():  # move offsets and weights off their init, so the parity check exercises them
        for layer in model.layers:
            layer.cross_attn.sampling_offsets.weight.normal_(0.0, 0.05)
            layer.cross_attn.attention_weights.weight.normal_(0.0, 0.05)
    return model


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo-default", "legacy-torchscript"])
def test_cross_attention_fusion_exports_within_budget(tmp_path, dynamo):
    gen = torch.Generator().manual_seed(5)
    inputs = {"camera_bev": torch.randn(2, 24, 16, 16, generator=gen),
              "radar_bev": torch.randn(2, 8, 16, 16, generator=gen)}
    _export_and_check(_small_attention_fusion(), inputs, tmp_path, dynamo)


def test_camera_only_fusion_exports_within_budget(tmp_path):
    inputs = {"camera_bev": torch.randn(1, 24, 16, 16, generator=torch.Generator().manual_seed(6)),
              "radar_bev": None}
    _export_and_check(_small_attention_fusion(radar=False), inputs, tmp_path, dynamo=True)


def test_conv_fusion_exports_within_budget(tmp_path):
    torch.manual_seed(0)
    model = ConvFusion(24, 8, 32)
    model.train()(torch.randn(4, 24, 16, 16), torch.randn(4, 8, 16, 16))  # non-trivial BatchNorm statistics
    gen = torch.Generator().manual_seed(7)
    inputs = {"camera_bev": torch.randn(2, 24, 16, 16, generator=gen),
              "radar_bev": torch.randn(2, 8, 16, 16, generator=gen)}
    _export_and_check(model, inputs, tmp_path, dynamo=True)
