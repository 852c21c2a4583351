"""Camera backbone (torchvision-compatible ResNet), the export-friendly GroupNorm and the FPN neck.

torchvision is not installed here (and must not be), so its layout is written out by hand: the key list
follows torchvision/models/resnet.py (``conv1, bn1, layer1..4, fc``; blocks ``conv1, bn1, conv2, bn2[, conv3,
bn3], downsample.0/.1``) and the parameter counts are torchvision's published totals minus ``fc``."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from numpy.testing import assert_allclose

from perception.model.camera.backbone import GroupNorm, ResNet, group_norm, group_norm_groups, load_pretrained
from perception.model.camera.neck import FPNNeck

BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

# torchvision resnet18: 11,689,512 parameters, fc = 512*1000 + 1000 = 513,000 -> 11,176,512.
# torchvision resnet50: 25,557,032 parameters, fc = 2048*1000 + 1000 = 2,049,000 -> 23,508,032.
R18_PARAMS = 11_176_512
R50_PARAMS = 23_508_032


def torchvision_keys(bottleneck: bool, blocks: tuple[int, ...]) -> list[str]:
    """The state-dict keys of torchvision's resnet (without fc), in torchvision's order."""
    keys = ["conv1.weight"] + [f"bn1.{k}" for k in BN_KEYS]
    convs = (1, 2, 3) if bottleneck else (1, 2)
    for stage, n in enumerate(blocks, start=1):
        for b in range(n):
            p = f"layer{stage}.{b}"
            for c in convs:
                keys += [f"{p}.conv{c}.weight"] + [f"{p}.bn{c}.{k}" for k in BN_KEYS]
            # First block of each stage projects the shortcut, except ResNet-18/34 layer1 (64 -> 64, stride 1).
            if b == 0 and (bottleneck or stage > 1):
                keys += [f"{p}.downsample.0.weight"] + [f"{p}.downsample.1.{k}" for k in BN_KEYS]
    return keys


R18_SHAPES = {
    "conv1.weight": (64, 3, 7, 7),
    "bn1.running_var": (64,),
    "bn1.num_batches_tracked": (),
    "layer1.0.conv1.weight": (64, 64, 3, 3),
    "layer1.1.bn2.bias": (64,),
    "layer2.0.conv1.weight": (128, 64, 3, 3),
    "layer2.0.downsample.0.weight": (128, 64, 1, 1),
    "layer2.0.downsample.1.running_mean": (128,),
    "layer3.1.conv2.weight": (256, 256, 3, 3),
    "layer4.0.conv1.weight": (512, 256, 3, 3),
    "layer4.1.bn2.running_mean": (512,),
}
R50_SHAPES = {
    "conv1.weight": (64, 3, 7, 7),
    "layer1.0.conv1.weight": (64, 64, 1, 1),
    "layer1.0.conv3.weight": (256, 64, 1, 1),
    "layer1.0.downsample.0.weight": (256, 64, 1, 1),
    "layer1.2.bn3.weight": (256,),
    "layer2.0.conv1.weight": (128, 256, 1, 1),
    "layer2.0.conv2.weight": (128, 128, 3, 3),
    "layer2.3.conv3.weight": (512, 128, 1, 1),
    "layer3.5.bn3.running_var": (1024,),
    "layer4.0.conv1.weight": (512, 1024, 1, 1),
    "layer4.0.downsample.0.weight": (2048, 1024, 1, 1),
    "layer4.2.conv3.weight": (2048, 512, 1, 1),
}


@pytest.mark.parametrize("depth, bottleneck, blocks, shapes, n_params", [
    (18, False, (2, 2, 2, 2), R18_SHAPES, R18_PARAMS),
    (50, True, (3, 4, 6, 3), R50_SHAPES, R50_PARAMS),
])
def test_state_dict_matches_torchvision_layout(depth, bottleneck, blocks, shapes, n_params):
    # The meta device skips allocating and initialising 23 M weights; names and shapes are all we need.
    with torch.device("meta"):
        model = ResNet(depth=depth)
    state = model.state_dict()
    assert list(state) == torchvision_keys(bottleneck, blocks)
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert sum(p.numel() for p in model.parameters()) == n_params
    assert model.out_channels == ([256, 512] if depth == 18 else [1024, 2048])


def _save(tmp_path, model: ResNet, name: str, with_fc: bool = True, drop_counters: bool = False):
    state = dict(model.state_dict())
    if with_fc:
        c = model.out_channels[-1]
        state["fc.weight"], state["fc.bias"] = torch.randn(1000, c), torch.randn(1000)
    if drop_counters:  # checkpoints saved before torch 0.4.1 lack the BatchNorm counters
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / name
    torch.save(state, path)
    return path


def _calibrate_batchnorm(model: torch.nn.Module, images: torch.Tensor) -> None:
    """Running statistics measured on ``images`` (cumulative average), as in a trained network: activations
    of order 1 after every BatchNorm. Random statistics instead grow the activations layer by layer (outputs
    of std ~10 here), and float32 rounding then exceeds an absolute tolerance of 1e-5 on small outputs."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(images)
    model.eval()


def _randomise_norm_stats(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics and affine parameters, so that loading and BN folding are tested."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)):
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))


def test_load_pretrained_round_trip_drops_fc(tmp_path):
    torch.manual_seed(0)
    src = ResNet(depth=18)
    _randomise_norm_stats(src)
    path = _save(tmp_path, src, "resnet18.pth")
    dst = ResNet(depth=18)
    summary = load_pretrained(dst, path)
    assert summary["loaded"] == 120
    assert summary["skipped"] == ["fc.bias", "fc.weight"]
    assert summary["missing_counters"] == []
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(src.eval()(x), dst.eval()(x)):
            assert torch.equal(a, b)


def test_load_pretrained_accepts_checkpoint_without_bn_counters(tmp_path):
    src = ResNet(depth=18, width=0.25, blocks=(1, 1, 1, 1))
    _randomise_norm_stats(src)
    path = _save(tmp_path, src, "old.pth", drop_counters=True)
    dst = ResNet(depth=18, width=0.25, blocks=(1, 1, 1, 1))
    summary = load_pretrained(dst, path)
    assert "bn1.num_batches_tracked" in summary["missing_counters"]
    assert torch.equal(dst.bn1.running_var, src.bn1.running_var)


def test_load_pretrained_wrong_depth_is_explained(tmp_path):
    path = _save(tmp_path, ResNet(depth=18), "resnet18.pth")
    with pytest.raises(ValueError) as err:
        load_pretrained(ResNet(depth=34), path)
    msg = str(err.value)
    assert str(path) in msg and "ResNet-18 layout" in msg and "depth=34" in msg
    assert "layer1.2.conv1.weight" in msg  # the first key a ResNet-34 has and a ResNet-18 lacks


def test_load_pretrained_wrong_width_is_explained(tmp_path):
    path = _save(tmp_path, ResNet(depth=18), "resnet18.pth")
    with pytest.raises(ValueError) as err:
        load_pretrained(ResNet(depth=18, width=0.5), path)
    msg = str(err.value)
    assert str(path) in msg and "width=1.0" in msg
    assert "conv1.weight: checkpoint (64, 3, 7, 7) vs model (32, 3, 7, 7)" in msg


def test_load_pretrained_groupnorm_model_refuses_batchnorm_checkpoint(tmp_path):
    path = _save(tmp_path, ResNet(depth=18, width=0.25, blocks=(1, 1, 1, 1)), "bn.pth")
    model = ResNet(depth=18, width=0.25, blocks=(1, 1, 1, 1), norm="group")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError) as err:
        load_pretrained(model, path)
    msg = str(err.value)
    assert str(path) in msg and "bn1.running_mean" in msg and "norm='batch'" in msg
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # nothing half-loaded


def test_load_pretrained_bad_files(tmp_path):
    model = ResNet(depth=18, width=0.25, blocks=(1, 1, 1, 1))
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_pretrained(model, tmp_path / "nope.pth")
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, wrapped)
    with pytest.raises(ValueError, match="not a flat state dict"):
        load_pretrained(model, wrapped)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pth"):
        load_pretrained(model, garbage)


@pytest.mark.parametrize("kwargs, hw, channels, sizes", [
    ({"depth": 18, "width": 0.25, "blocks": (1, 1, 1, 1)}, (128, 352), [64, 128], [(8, 22), (4, 11)]),
    ({"depth": 50, "width": 0.25, "blocks": (1, 1, 1, 1), "out_indices": (0, 1, 2, 3)}, (64, 96),
     [64, 128, 256, 512], [(16, 24), (8, 12), (4, 6), (2, 3)]),
    # Odd sizes round up at every stride-2 layer: ceil(100/8) = 13, ceil(150/8) = 19.
    ({"depth": 34, "width": 0.125, "blocks": (1, 2, 1, 1), "out_indices": (1,)}, (100, 150), [16],
     [(13, 19)]),
])
def test_output_strides_and_channels(kwargs, hw, channels, sizes):
    model = ResNet(**kwargs).eval()
    assert model.out_channels == channels
    with torch.no_grad():
        outs = model(torch.randn(2, 3, *hw))
    assert [tuple(o.shape) for o in outs] == [(2, c, *s) for c, s in zip(channels, sizes)]
    assert model.out_strides == [4 * 2 ** i for i in model.out_indices]


def test_width_rounds_channels_to_multiples_of_eight():
    model = ResNet(depth=18, width=0.3, blocks=(1, 1, 1, 1), out_indices=(0, 1, 2, 3))
    # 64*0.3 = 19.2 -> 16, 128*0.3 = 38.4 -> 40, 256*0.3 = 76.8 -> 80, 512*0.3 = 153.6 -> 152
    assert model.conv1.out_channels == 16
    assert model.out_channels == [16, 40, 80, 152]


def test_groupnorm_backbone_trains_at_batch_size_one():
    torch.manual_seed(0)
    model = ResNet(depth=18, width=0.25, blocks=(1, 1, 1, 1), norm="group").train()
    norms = [m for m in model.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm))]
    assert norms and all(isinstance(m, GroupNorm) and m.num_groups == 8 for m in norms)
    # 32x32 leaves layer4 at 1x1: BatchNorm in training mode would raise on a single value per channel.
    x = torch.randn(2, 3, 32, 32)
    outs = model(x[:1])
    assert [tuple(o.shape) for o in outs] == [(1, 64, 2, 2), (1, 128, 1, 1)]
    sum(o.sum() for o in outs).backward()
    assert model.conv1.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0
    # GroupNorm is per sample: a sample's features do not depend on the rest of the batch (up to float32
    # rounding of batch-size-dependent conv kernels; BatchNorm in training mode would differ at O(1)).
    with torch.no_grad():
        alone, batched = model(x[:1]), model(x)
    for a, b in zip(alone, batched):
        assert_allclose(a.numpy(), b[:1].numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape, groups", [((2, 16, 5, 7), 8), ((3, 6, 4, 4), 3), ((1, 16, 1, 1), 8),
                                           ((2, 12, 9), 4), ((2, 8, 3, 4, 5), 2)])
def test_group_norm_equals_torch(shape, groups):
    g = torch.Generator().manual_seed(1)
    x = 3.0 + 2.0 * torch.randn(shape, generator=g)  # offset and scale: the mean/variance must really be removed
    weight, bias = torch.randn(shape[1], generator=g), torch.randn(shape[1], generator=g)
    ref = F.group_norm(x, groups, weight, bias, eps=1e-5)
    assert_allclose(group_norm(x, groups, weight, bias, 1e-5).numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)
    assert_allclose(group_norm(x, groups, None, None, 1e-5).numpy(), F.group_norm(x, groups, eps=1e-5).numpy(),
                    rtol=1e-5, atol=1e-5)
    module, reference = GroupNorm(groups, shape[1]), torch.nn.GroupNorm(groups, shape[1])
    reference.load_state_dict(module.state_dict())  # same parameter names as nn.GroupNorm
    assert_allclose(module(x).detach().numpy(), reference(x).detach().numpy(), rtol=1e-5, atol=1e-5)


def test_group_norm_keeps_low_precision_dtype():
    x = torch.randn(2, 16, 4, 4).to(torch.bfloat16)
    out = group_norm(x, 8, None, None, 1e-5)
    assert out.dtype == torch.bfloat16
    assert_allclose(out.float().numpy(), F.group_norm(x.float(), 8, eps=1e-5).numpy(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("channels, groups", [(8, 8), (16, 8), (256, 8), (12, 6), (10, 5), (9, 3), (7, 7), (3, 3)])
def test_group_norm_groups(channels, groups):
    assert group_norm_groups(channels) == groups


@pytest.mark.parametrize("frozen, prefixes", [
    (-1, ()),
    (0, ("conv1.", "bn1.")),
    (2, ("conv1.", "bn1.", "layer1.", "layer2.")),
    (4, ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")),
])
def test_frozen_stages(frozen, prefixes):
    model = ResNet(depth=18, width=0.25, blocks=(1, 1, 1, 1), frozen_stages=frozen).train()
    names = [n for n, _ in model.named_parameters()]
    expected_frozen = {n for n in names if n.startswith(prefixes)}
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == expected_frozen
    if frozen >= 0:
        assert expected_frozen  # the prefixes matched something
    # Frozen BatchNorms keep their running statistics in training mode; the others keep learning them.
    before = {n: b.clone() for n, b in model.named_buffers() if n.endswith("running_mean")}
    model(torch.randn(2, 3, 64, 64))
    for n, b in model.named_buffers():
        if n.endswith("running_mean"):
            assert torch.equal(b, before[n]) == n.startswith(prefixes), n


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="depth"):
        ResNet(depth=101)
    with pytest.raises(ValueError, match="out_indices"):
        ResNet(out_indices=(3, 2))
    with pytest.raises(ValueError, match="norm"):
        ResNet(norm="sync")
    with pytest.raises(ValueError, match="blocks"):
        ResNet(blocks=(1, 1, 1))
    with pytest.raises(ValueError, match="frozen_stages"):
        ResNet(frozen_stages=5)


def test_neck_merges_to_finest_stride():
    neck = FPNNeck([64, 128], 32).eval()
    # 900 x 1600 image at strides 16 and 32: 57 x 100 and 29 x 50 (not an exact factor of 2).
    feats = [torch.randn(2, 64, 57, 100), torch.randn(2, 128, 29, 50, requires_grad=True)]
    out = neck(feats)
    assert out.shape == (2, 32, 57, 100)
    assert (out >= 0).all()  # ends in ReLU
    out.sum().backward()
    assert feats[1].grad.abs().sum() > 0  # the coarse map reaches the output
    with pytest.raises(ValueError, match="feats\\[1\\]"):
        neck([feats[0], torch.randn(2, 64, 29, 50)])
    with pytest.raises(ValueError, match="2 inputs"):
        neck(feats[:1])


def test_neck_single_input_is_lateral_then_fuse():
    neck = FPNNeck([16], 24, norm="group").eval()
    x = torch.randn(1, 16, 6, 10)
    with torch.no_grad():
        assert torch.equal(neck([x]), neck.fuse(neck.lateral[0](x)))


class _CameraEncoder(torch.nn.Module):
    """Backbone + neck as one graph, as the camera branch of the network exports it."""

    def __init__(self, norm: str) -> None:
        super().__init__()
        self.backbone = ResNet(depth=18, width=0.25, blocks=(1, 1, 1, 1), norm=norm)
        self.neck = FPNNeck(self.backbone.out_channels, 32, norm=norm)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.neck(self.backbone(images))


@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning")
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the forward's static shape checks
@pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning")  # inside torch.onnx
@pytest.mark.parametrize("norm", ["batch", "group"])
def test_export_stays_in_budget_and_matches_onnxruntime(tmp_path, norm):
    """TorchScript exporter (``dynamo=False``): in torch 2.13 the default dynamo exporter cannot lower a graph
    with ReduceMean (GroupNorm) to opset 17 (its opset-18 -> 17 conversion fails and it silently keeps 18)."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from export.budget import check_budget

    torch.manual_seed(0)
    model = _CameraEncoder(norm)
    _randomise_norm_stats(model)  # random affine parameters (GroupNorm and BatchNorm) ...
    _calibrate_batchnorm(model, torch.randn(4, 3, 128, 352))  # ... and realistic BatchNorm statistics
    images = torch.randn(2, 3, 128, 352)
    path = tmp_path / f"camera_{norm}.onnx"
    torch.onnx.export(model, (images,), str(path), opset_version=17, dynamo=False,
                      input_names=["images"], output_names=["features"])
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    counts = check_budget(proto)
    assert "InstanceNormalization" not in counts and counts["Resize"] == 1
    if norm == "group":
        assert counts["ReduceMean"] == 2 * sum(isinstance(m, GroupNorm) for m in model.modules())
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        ref = model(images).numpy()
    assert got.shape == ref.shape == (2, 32, 8, 22)
    assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
