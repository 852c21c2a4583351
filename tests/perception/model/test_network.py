"""The whole fusion network: builds from configs, tolerates missing sensors, exports within the op budget with
ONNX Runtime parity."""
from pathlib import Path

import numpy as np
import pytest
import torch

from perception.data.loader import PillarSpec, collate_frames
from perception.data.nuscenes import NuScenesFrames
from perception.data.synthetic.generate import VERSION
from perception.model.network import INPUT_NAMES, build_model
from reference.model import lift_voxels, radar_image_features_dense
from small_model import small_config, small_net

REPO = Path(__file__).resolve().parents[3]
# small_config: a small version of the tiny config so the tests run in seconds (64x176 images, 32x32 BEV).


@pytest.fixture(scope="module")
def inputs(synth_root):
    cfg = small_config()
    frames = NuScenesFrames(cfg, synth_root, VERSION, "synth_val")
    batch = collate_frames([frames[0], frames[5]], 50, PillarSpec.from_config(cfg))
    return [batch[k] for k in INPUT_NAMES]


def test_forward_shapes_and_detect(inputs):
    torch.manual_seed(0)
    net = build_model(small_config()).eval()
    with torch.no_grad():
        out = net(*inputs)
        det = net.detect(*inputs)
    assert out["heatmap"].shape == (2, 10, 32, 32) and out["traj_offsets"].shape == (2, 6 * 12 * 2, 32, 32)
    assert det["boxes"].shape == (2, 50, 9) and det["trajectories"].shape == (2, 50, 6, 12, 2)
    assert all(torch.isfinite(v.float()).all() for v in det.values())


def test_default_forms_compute_the_defining_forms(inputs):
    """The folded lift (reduce conv before sampling, depth read at two stacked rows) and the separable radar splat
    compute the same function as their defining forms, so a checkpoint trained with either runs in the other:
    raw head maps of a network with non-trivial BatchNorm statistics on two real Frames, one camera invalid."""
    net = small_net()
    defining = build_model(small_config(), lift_voxels=lift_voxels, radar_splat=radar_image_features_dense).eval()
    defining.load_state_dict(net.state_dict())  # the same weights: the forms are not parameters
    feeds = list(inputs)
    feeds[2] = feeds[2].clone()
    feeds[2][1, 3] = False
    with torch.no_grad():
        out = net(*feeds)
        ref = defining(*feeds)
    for k, r in ref.items():
        span = float(r.max() - r.min())
        assert span > 0
        assert float((out[k] - r).abs().max()) <= 1e-5 * span, k


@pytest.mark.parametrize("case", ["one_camera_dropped", "all_cameras_dropped", "all_radar_dropped"])
def test_missing_sensors_give_finite_outputs(inputs, case):
    torch.manual_seed(0)
    net = build_model(small_config()).eval()
    x = [t.clone() for t in inputs]
    names = list(INPUT_NAMES)
    if case == "one_camera_dropped":
        x[names.index("camera_valid")][:, 1] = False
        x[names.index("images")][:, 1] = 0
    elif case == "all_cameras_dropped":
        x[names.index("camera_valid")][:] = False
    else:
        for n in ("radar_valid", "pillar_mask", "pillar_point_mask"):
            x[names.index(n)][:] = False
    with torch.no_grad():
        out = net(*x)
        ref = net(*inputs)
    assert all(torch.isfinite(v).all() for v in out.values())
    assert not torch.allclose(out["heatmap"], ref["heatmap"])  # the missing sensor mattered


@pytest.mark.parametrize("overrides", [["model.camera.enabled=false"], ["model.radar.enabled=false"],
                                       ["model.fusion.kind=conv"], ["model.camera.radar_depth.enabled=false"],
                                       ["model.norm=group"], ["model.head.radar_skip.enabled=true"]])
def test_switches_build_and_run(inputs, overrides):
    cfg = small_config(*overrides)
    net = build_model(cfg, ((0, 1),)).eval()
    assert (net.camera is None) == (not cfg.model.camera.enabled)
    assert (net.radar is None) == (not cfg.model.radar.enabled)
    with torch.no_grad():
        out = net.detect(*inputs)
    assert torch.isfinite(out["boxes"]).all()


def test_both_modalities_off_is_a_config_error():
    from perception.config import ConfigError

    with pytest.raises(ConfigError, match="enable at least one"):
        small_config("model.camera.enabled=false", "model.radar.enabled=false")


class _ZeroFusion(torch.nn.Module):
    """A fusion that forgets its inputs: what still reaches the heads reaches them some other way."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels

    def forward(self, camera_bev, radar_bev):
        ref = radar_bev if radar_bev is not None else camera_bev
        return ref.new_zeros(ref.shape[0], self.channels, *ref.shape[2:])


@pytest.mark.parametrize("skip", [False, True])
def test_radar_skip_is_a_path_from_radar_to_the_velocity_head(inputs, skip):
    """``model.head.radar_skip``: the heads read the radar BEV beside the decoded BEV, so with the fusion cut
    the velocity map still changes with the radar's Doppler; without the skip it cannot."""
    torch.manual_seed(0)
    cfg = small_config(f"model.head.radar_skip.enabled={str(skip).lower()}")
    net = build_model(cfg).eval()
    assert net.center_head.shared[0].in_channels == cfg.model.fusion.channels + skip * cfg.model.radar.channels
    net.fusion = _ZeroFusion(cfg.model.fusion.channels)
    feeds = list(inputs)
    i = INPUT_NAMES.index("pillar_features")
    assert bool(feeds[INPUT_NAMES.index("pillar_mask")].any()), "the frames need radar pillars"
    moved = feeds[i].clone()
    moved[..., 4:6] += 8.0  # vx, vy (PILLAR_FEATURES order x y z rcs vx vy ...): every radar return moving
    with torch.no_grad():
        a = net(*feeds)["velocity"]
        feeds[i] = moved
        b = net(*feeds)["velocity"]
    assert (a - b).abs().max().item() > 1e-4 if skip else torch.equal(a, b)


def test_radar_skip_without_radar_is_a_config_error():
    from perception.config import ConfigError

    with pytest.raises(ConfigError, match="radar_skip"):
        small_config("model.radar.enabled=false", "model.head.radar_skip.enabled=true")


def test_training_step_reaches_every_parameter(inputs):
    net = build_model(small_config(), ((0, 1),)).train()
    out = net(*inputs)
    sum(v.float().square().mean() for v in out.values()).backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum())]
    assert not missing, missing[:5]


@pytest.mark.parametrize("overrides", [(), ("model.head.radar_skip.enabled=true",)], ids=["default", "radar_skip"])
def test_export_budget_and_onnxruntime_parity(inputs, tmp_path, overrides):
    """The whole network with a stereo pair, radar-assisted depth, cross-attention fusion and in-graph decoding
    (and again with the radar skip into the heads) exports to ONNX opset 17; every op is TensorRT-native, every
    GridSample 4-D; ONNX Runtime matches PyTorch on the raw head maps (rtol 1e-3, atol 1e-4) and on the decoded
    detections."""
    import onnx
    import onnxruntime as ort

    from export.budget import check_budget
    from export.onnx import RAW_OUTPUT_NAMES, export_onnx
    from perception.model.decode import OUTPUT_NAMES

    torch.manual_seed(0)
    net = build_model(small_config(*overrides), ((0, 1),)).eval()
    # make BatchNorm statistics non-trivial so that parity is not checked on a degenerate net
    for mod in net.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    x = [t[:1] for t in inputs]
    for raw, names in ((True, RAW_OUTPUT_NAMES), (False, OUTPUT_NAMES)):
        path = export_onnx(net, x, tmp_path / f"m{raw}.onnx", raw=raw)
        counts = check_budget(onnx.load(str(path)))
        assert counts["GridSample"] >= 4 and "NonZero" not in counts
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {n: t.numpy() for n, t in zip(INPUT_NAMES, x)})
        with torch.no_grad():
            ref = net(*x) if raw else net.detect(*x)
        for name, g in zip(names, got):
            r = ref[name].numpy()
            if name == "labels":
                keep = ref["scores"].numpy()[0] > 0.05
                np.testing.assert_array_equal(g[0][keep], r[0][keep])
            else:
                np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-4, err_msg=name)
