"""The perspective-view auxiliary head: golden targets on a hand-built camera, and proof that it is training-only
(no hook left behind, the exported graph identical, the saved network loads strictly into the inference network,
a resume restores it); EMA, SyncBatchNorm conversion and CBGS."""
import math
from collections import Counter

import numpy as np
import pytest
import torch

from perception.data.cbgs import cbgs_indices
from perception.data.loader import PillarSpec, collate_frames
from perception.data.nuscenes import NuScenesFrames
from perception.data.synthetic.generate import VERSION
from perception.model.network import INPUT_NAMES, build_model
from perception.train.camera_aux import TrainNet, camera_aux_losses
from perception.train.perspective_targets import build_perspective_targets
from perception.train.recipe import WeightEma, sync_batchnorm
from small_model import small_config
from hand_camera import FEAT_HW, IMAGE_HW, forward_camera

AUX_ON = ("train.perspective.enabled=true", "train.depth_loss.enabled=true")


def test_perspective_targets_golden():
    m = torch.from_numpy(np.stack([forward_camera(), forward_camera()]))[None]  # (1, 2, 4, 4)
    boxes = torch.tensor([[[20, 2, 0, 2, 4, 1.5, 0, 0, 0],  # w=2 (y), l=4 (x), h=1.5: in front of camera 0
                           [-20, 0, 0, 2, 4, 1.5, 0, 0, 0],  # behind
                           [0, 0, 0, 1, 1, 1, 0, 0, 0]]], dtype=torch.float32)  # padding (masked)
    labels = torch.tensor([[3, 1, 0]])
    gmask = torch.tensor([[True, True, False]])
    t = build_perspective_targets(boxes, labels, gmask, m, torch.tensor([[True, False]]), IMAGE_HW, FEAT_HW, 10)
    assert t.mask.tolist() == [[True, False, False], [False, False, False]]  # camera 1 is masked
    # centre (20, 2, 0) -> u = 87.5 - 100 * 2 / 20 = 77.5, v = 31.5: cell (78 / 16, 32 / 16) = col 4.875, row 2.0
    assert t.ind[0, 0].item() == 2 * 11 + 4
    # extent: u in [87.5 - 300 / 18, 87.5 - 100 / 22], v in [31.5 - 75 / 18, 31.5 + 75 / 18] (pixels)
    w_cells = (300 / 18 - 100 / 22) / 16
    h_cells = (150 / 18) / 16
    expected = [4.875 - 4.5, 2.0 - 2.5, math.log(w_cells), math.log(h_cells), math.log(20.0)]
    np.testing.assert_allclose(t.regression[0, 0].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert t.heatmap[0, 3, 2, 4] == 1.0 and t.heatmap[0].sum() > 1.0 and t.heatmap[1].sum() == 0
    assert t.heatmap[0, [k for k in range(10) if k != 3]].sum() == 0


@pytest.fixture(scope="module")
def aux_batch(synth_root):
    cfg = small_config("data.loader.workers=0", "model.fusion.layers=1", *AUX_ON)
    frames = NuScenesFrames(cfg, synth_root, VERSION, "synth_train", train=True)
    return cfg, collate_frames([frames[0], frames[3]], 50, PillarSpec.from_config(cfg))


def test_aux_losses_train_and_leave_the_network_untouched(aux_batch, tmp_path):
    import onnx

    from export.onnx import export_onnx

    cfg, batch = aux_batch
    torch.manual_seed(0)
    tn = TrainNet(build_model(cfg), cfg)
    plain_keys = set(build_model(cfg).state_dict())
    assert set(tn.net.state_dict()) == plain_keys  # nothing of the aux head inside the network
    assert any(k.startswith("perspective.") for k in tn.state_dict())
    inputs = [batch[k] for k in INPUT_NAMES]
    out, extras = tn(*inputs)
    losses = camera_aux_losses(extras, batch, cfg)
    assert set(losses) == {"depth", "perspective_heatmap", "perspective_regression"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    assert tn.perspective.heatmap[1].weight.grad.abs().sum() > 0
    assert tn.net.camera.backbone.conv1.weight.grad.abs().sum() > 0  # the backbone learns from them
    assert all(not mod._forward_hooks for mod in tn.net.modules())  # the taps are gone after the call
    # the exported graph of the trained network is that of a network built without the head
    tn.net.eval()
    ref = build_model(small_config("data.loader.workers=0", "model.fusion.layers=1")).eval()
    ref.load_state_dict(tn.net.state_dict(), strict=True)  # same weights: the graphs must be identical
    example = [batch[k][:1] for k in INPUT_NAMES]
    graphs = [onnx.load(str(export_onnx(n, example, tmp_path / f"{i}.onnx"))) for i, n in enumerate((tn.net, ref))]
    ops = [Counter(node.op_type for node in g.graph.node) for g in graphs]
    outs = [[o.name for o in g.graph.output] for g in graphs]
    ins = [[i.name for i in g.graph.input] for g in graphs]
    assert ops[0] == ops[1] and outs[0] == outs[1] and ins[0] == ins[1]
    assert not any("lidar" in name for name in ins[0])


def test_training_with_aux_heads_saves_a_strict_inference_checkpoint(synth_root, tmp_path):
    from perception.pipeline import Pipeline
    from perception.train.checkpoint import load_checkpoint
    from perception.train.loop import train

    cfg = small_config("data.loader.batch_size=2", "data.loader.workers=0", "model.fusion.layers=1",
                       "train.steps=2", "train.checkpoint_every=1", "train.ema.enabled=true", *AUX_ON)
    out = tmp_path / "run"
    train(cfg, synth_root, VERSION, out, progress=False, evaluate=False, stop_after=1)
    last = load_checkpoint(out / "last.pt")
    assert any(k.startswith("heatmap.") for k in last["aux"]) and "ema" in last
    assert not any(k.startswith("perspective") for k in last["model"])
    train(cfg, synth_root, VERSION, out, resume=True, progress=False, evaluate=False)
    pipe = Pipeline.from_checkpoint(out / "model.pt")  # strict load into the inference network
    ck = load_checkpoint(out / "model.pt")
    assert ck["ema"] is True
    ema_last = load_checkpoint(out / "last.pt")["ema"]
    for k, v in ck["model"].items():
        torch.testing.assert_close(v, ema_last[k])  # model.pt holds the averaged weights
    assert pipe.runner.net.camera is not None


def test_weight_ema_golden():
    lin = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    ema = WeightEma(lin, decay=0.9)
    with torch.no_grad():
        lin.weight.fill_(3.0)
    ema.update(lin, step=0)  # d = min(0.9, 1 / 10) = 0.1: 0.1 * 1 + 0.9 * 3
    assert ema.module.weight.item() == pytest.approx(2.8)
    ema.update(lin, step=1000)  # d = 0.9: 0.9 * 2.8 + 0.1 * 3
    assert ema.module.weight.item() == pytest.approx(2.82)
    assert not ema.module.weight.requires_grad


def test_sync_batchnorm_only_on_cuda_ddp():
    cfg = small_config()
    net = build_model(cfg)
    keys = set(net.state_dict())
    assert sync_batchnorm(net, 2, torch.device("cpu")) is net
    assert sync_batchnorm(net, 1, torch.device("cuda")) is net
    conv = sync_batchnorm(build_model(cfg), 2, torch.device("cuda"))
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in conv.modules())
    assert not any(type(m) is torch.nn.BatchNorm2d for m in conv.modules())
    assert set(conv.state_dict()) == keys  # checkpoints of a SyncBatchNorm run load into the plain network
    build_model(cfg).load_state_dict(conv.state_dict(), strict=True)


def test_cbgs_balances_classes():
    # class 0 in 80 samples, class 1 in 10, class 2 in 10 (5 of them with class 0 too)
    samples = [{0}] * 75 + [{0, 2}] * 5 + [{1}] * 10 + [{2}] * 5 + [set()] * 4
    idx = cbgs_indices(samples, 3, seed=0)
    assert idx.dtype == np.int64 and set(idx) <= set(range(len(samples)))
    counts = Counter(k for i in idx for k in samples[i])
    before = Counter(k for s in samples for k in s)
    share = {k: counts[k] / sum(counts.values()) for k in range(3)}
    assert before[1] / sum(before.values()) == 0.1 and share[1] > 0.25  # the rare class gets about a third
    assert not any(len(samples[i]) == 0 for i in idx)
    assert np.array_equal(idx, cbgs_indices(samples, 3, seed=0))  # a pure function of the seed


def test_cbgs_on_the_synthetic_split(synth_root):
    from perception.data.cbgs import ResampledFrames, split_sample_classes

    cfg = small_config("data.dropout.camera_all=0", "data.dropout.radar_all=0")
    frames = NuScenesFrames(cfg, synth_root, VERSION, "synth_train", train=True, seed=2)
    classes = split_sample_classes(frames)
    assert len(classes) == len(frames)
    for i in (0, 5):
        assert classes[i] == set(frames.load(i).gt_labels.tolist())  # from the tables = what the Frame carries
    idx = cbgs_indices(classes, cfg.num_classes, seed=0)
    view = ResampledFrames(frames, idx)
    assert len(view) == len(idx) and view.samples is frames.samples
    dup = next(p for p in range(len(idx)) if (idx == idx[p]).sum() > 1)
    other = int(np.flatnonzero(idx == idx[dup])[1])
    a, b = view[dup], view[other]
    assert a.sample_token == b.sample_token and not np.array_equal(a.img_from_ego, b.img_from_ego)  # own draws
