"""Training machinery: targets, losses, overfitting, exact resume, DDP gradients, the minimal evaluation."""
import json
import os
import socket
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from perception.data.loader import PillarSpec, collate_frames
from perception.data.nuscenes import NuScenesFrames
from perception.data.synthetic.generate import VERSION
from perception.model.decode import BevGrid, decode
from perception.model.network import INPUT_NAMES, build_model
from perception.train.losses import detection_losses, gaussian_focal_loss
from perception.train.targets import build_targets, draw_gaussian, gaussian_radius
from small_model import small_config

REPO = Path(__file__).resolve().parents[3]
# training-sized settings on top of the small model
TRAIN_EXTRA = ("data.loader.batch_size=2", "data.loader.workers=0", "model.fusion.layers=1",
               "train.split=synth_train", "train.val_split=synth_val")




def test_targets_decode_back_to_the_gt():
    """Targets written at the GT centres, fed to the decoder as if predicted, give back the GT boxes."""
    cfg = small_config(*TRAIN_EXTRA)
    grid = BevGrid.from_config(cfg.data.grid)
    boxes = torch.tensor([[[10.3, -4.1, 0.8, 1.9, 4.5, 1.6, 0.7, 3.0, -1.0],
                           [-20.0, 12.5, 1.0, 0.6, 0.7, 1.8, -2.0, 0.5, 0.2]]])
    labels = torch.tensor([[0, 5]])
    future = boxes[..., None, :2] + torch.arange(1, 13).view(1, 1, 12, 1) * torch.tensor([1.5, -0.5])
    t = build_targets(boxes, labels, torch.ones(1, 2, dtype=torch.bool), future, torch.ones(1, 2, 12, dtype=torch.bool),
                      grid, 10)
    h, w = grid.shape
    maps = {"heatmap": torch.logit(t.heatmap.clamp(1e-6, 1 - 1e-6))}
    reg = torch.zeros(1, 10, h * w)
    traj = torch.zeros(1, 6 * 12 * 2, h * w)
    for g in range(2):
        reg[0, :, t.ind[0, g]] = t.regression[0, g]
        traj[0, :24, t.ind[0, g]] = t.traj[0, g].reshape(-1)  # mode 0
    reg = reg.view(1, 10, h, w)
    maps.update({"offset": reg[:, 0:2], "z": reg[:, 2:3], "log_size": reg[:, 3:6], "rotation": reg[:, 6:8],
                 "velocity": reg[:, 8:10]})
    out = decode(maps, grid, {"offsets": traj.view(1, -1, h, w), "mode_logits": torch.zeros(1, 6, h, w)}, 5)
    assert out["labels"][0, :2].tolist() in ([0, 5], [5, 0])
    for g in range(2):
        k = out["labels"][0, :2].tolist().index(int(labels[0, g]))
        torch.testing.assert_close(out["boxes"][0, k], boxes[0, g], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(out["trajectories"][0, k, 0], future[0, g], atol=1e-4, rtol=1e-4)


def test_gaussian_helpers_and_focal_loss():
    heat = np.zeros((9, 9), np.float32)
    draw_gaussian(heat, 4, 4, 2)
    assert heat[4, 4] == 1.0 and heat[4, 6] < 1.0 and heat.min() == 0.0
    assert gaussian_radius(3.0, 1.5) > 0.3
    target = torch.from_numpy(heat)[None, None]
    good = torch.logit(target.clamp(1e-4, 1 - 1e-4))
    assert gaussian_focal_loss(good, target) < 0.05 * gaussian_focal_loss(torch.zeros_like(target), target)


@pytest.fixture(scope="module")
def frames(synth_root):
    return NuScenesFrames(small_config(*TRAIN_EXTRA), synth_root, VERSION, "synth_train", train=False)


@pytest.mark.slow
def test_overfits_a_handful_of_frames(frames):
    """Bounded and fast: 4 frames, 150 steps, the loss falls to under 15 % of its start."""
    cfg = small_config(*TRAIN_EXTRA)
    torch.manual_seed(0)
    net = build_model(cfg).train()
    batch = collate_frames([frames[i] for i in (0, 3, 6, 9)], 200, PillarSpec.from_config(cfg))
    grid = BevGrid.from_config(cfg.data.grid)
    t = build_targets(batch["gt_boxes"], batch["gt_labels"], batch["gt_mask"], batch["gt_future"],
                      batch["gt_future_valid"], grid, 10)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    inputs = [batch[k] for k in INPUT_NAMES]
    losses = []
    for _ in range(150):
        loss = sum(detection_losses(net(*inputs), t).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.15 * losses[0], (losses[0], losses[-1])


@pytest.mark.slow
def test_resume_matches_an_uninterrupted_run(synth_root, tmp_path):
    from perception.train.loop import train

    cfg = small_config(*TRAIN_EXTRA, "train.steps=6", "train.checkpoint_every=2", "train.log_every=1",
                       "train.deterministic=true")
    train(cfg, synth_root, VERSION, tmp_path / "full", progress=False, evaluate=False)
    part = train(cfg, synth_root, VERSION, tmp_path / "part", progress=False, evaluate=False, stop_after=3)
    assert part["steps"] == 3
    saved_minutes = torch.load(tmp_path / "part" / "last.pt", weights_only=True)["minutes"]
    assert saved_minutes > 0
    resumed = train(cfg, synth_root, VERSION, tmp_path / "part", resume=True, progress=False, evaluate=False)
    # training time adds up over resumed runs (summary and history), the resumed run's own time kept beside it
    assert resumed["minutes"] == pytest.approx(saved_minutes + resumed["minutes_this_run"])
    m = resumed["machine"]  # for the model card (benchmarks/bench_train.py)
    assert m["cpus"] == os.cpu_count() and m["device"] == "cpu" and m["torch"] == torch.__version__ and m["cpu"]
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "part" / "model.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    rows = [json.loads(r) for r in (tmp_path / "part" / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    minutes = [r["minutes"] for r in rows]
    assert minutes == sorted(minutes) and minutes[3] >= saved_minutes
    # a checkpoint of another config is refused by name
    with pytest.raises(ValueError, match="another config"):
        train(replace(cfg, train=replace(cfg.train, lr=1e-3)), synth_root, VERSION, tmp_path / "part", resume=True,
              progress=False, evaluate=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, batch: dict, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    cfg = small_config(*TRAIN_EXTRA)
    net = build_model(cfg)
    net.eval()  # BatchNorm on running statistics: per-process batch statistics would differ (no SyncBatchNorm on CPU)
    ddp = torch.nn.parallel.DistributedDataParallel(net, find_unused_parameters=True)
    grid = BevGrid.from_config(cfg.data.grid)
    sl = slice(rank, rank + 1)
    t = build_targets(batch["gt_boxes"][sl], batch["gt_labels"][sl], batch["gt_mask"][sl], batch["gt_future"][sl],
                      batch["gt_future_valid"][sl], grid, 10)
    loss = sum(detection_losses(ddp(*[batch[k][sl] for k in INPUT_NAMES]), t).values())
    loss.backward()
    if rank == 0:
        torch.save({n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}, out)
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_gloo_processes_equal_one_process(frames, tmp_path):
    """Each process computes its own batch item's loss; DDP averages gradients over the 2 processes, which equals
    one process on the mean of the two per-item losses (BatchNorm in eval mode: exact to 1e-5)."""
    import torch.multiprocessing as mp

    cfg = small_config(*TRAIN_EXTRA)
    batch = collate_frames([frames[1], frames[8]], 200, PillarSpec.from_config(cfg))
    batch = {k: v for k, v in batch.items() if k != "meta"}
    out = tmp_path / "ddp_grads.pt"
    mp.spawn(_ddp_worker, args=(2, _free_port(), batch, str(out)), nprocs=2, join=True)
    ddp_grads = torch.load(out, weights_only=True)
    torch.manual_seed(0)
    net = build_model(cfg).eval()
    grid = BevGrid.from_config(cfg.data.grid)
    total = 0.0
    for i in range(2):
        sl = slice(i, i + 1)
        t = build_targets(batch["gt_boxes"][sl], batch["gt_labels"][sl], batch["gt_mask"][sl], batch["gt_future"][sl],
                          batch["gt_future_valid"][sl], grid, 10)
        total = total + sum(detection_losses(net(*[batch[k][sl] for k in INPUT_NAMES]), t).values()) / 2
    total.backward()
    assert len(ddp_grads) > 50
    for n, p in net.named_parameters():
        if n in ddp_grads:
            torch.testing.assert_close(ddp_grads[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)


TEMPORAL_EXTRA = (*TRAIN_EXTRA, "model.temporal.enabled=true")


def _temporal_loss(net, batch, sl, cfg):
    """The training step's loss of a temporal TrainNet (or its DDP wrapper) on the batch items ``sl``."""
    from perception.model.network import STATE_OUTPUT

    grid = BevGrid.from_config(cfg.data.grid)
    t = build_targets(batch["gt_boxes"][sl], batch["gt_labels"][sl], batch["gt_mask"][sl], batch["gt_future"][sl],
                      batch["gt_future_valid"][sl], grid, 10)
    clip = {"previous": tuple(batch[f"prev_{k}"][sl] for k in INPUT_NAMES),
            "temporal": tuple(batch[k][sl] for k in ("cur_from_prev", "prev_dt", "prev_valid"))}
    out, _ = net(*[batch[k][sl] for k in INPUT_NAMES], **clip)
    return sum(detection_losses({k: v for k, v in out.items() if k != STATE_OUTPUT}, t).values())


def _ddp_temporal_worker(rank: int, world: int, port: int, batch: dict, out: str) -> None:
    import torch.distributed as dist

    from perception.train.camera_aux import TrainNet

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    cfg = small_config(*TEMPORAL_EXTRA)
    net = TrainNet(build_model(cfg), cfg).eval()
    ddp = torch.nn.parallel.DistributedDataParallel(net, find_unused_parameters=True)
    _temporal_loss(ddp, batch, slice(rank, rank + 1), cfg).backward()
    if rank == 0:
        torch.save({n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}, out)
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_of_a_temporal_model_equals_one_process(frames, tmp_path):
    """A temporal clip under DDP (the previous frame's BEV computed without gradient inside the wrapped forward):
    the gradients averaged over 2 gloo processes equal one process on the mean of the per-item losses; and the
    previous frame matters (another previous frame gives other gradients)."""
    import torch.multiprocessing as mp

    from perception.data.frame import ClipSample
    from perception.data.loader import collate_clips
    from perception.train.camera_aux import TrainNet

    cfg = small_config(*TEMPORAL_EXTRA)
    pillars = PillarSpec.from_config(cfg)
    batch = collate_clips([ClipSample(frames[1], frames[0]), ClipSample(frames[8], None)], 200, pillars)
    batch = {k: v for k, v in batch.items() if k != "meta"}
    assert batch["prev_valid"].tolist() == [True, False]
    out = tmp_path / "ddp_grads.pt"
    mp.spawn(_ddp_temporal_worker, args=(2, _free_port(), batch, str(out)), nprocs=2, join=True)
    ddp_grads = torch.load(out, weights_only=True)

    def one_process(b):
        torch.manual_seed(0)
        net = TrainNet(build_model(cfg), cfg).eval()
        (sum(_temporal_loss(net, b, slice(i, i + 1), cfg) for i in range(2)) / 2).backward()
        return {n: p.grad for n, p in net.named_parameters() if p.grad is not None}

    grads = one_process(batch)
    assert len(ddp_grads) > 50 and set(ddp_grads) == set(grads)
    assert any("temporal" in n for n in grads)  # the fusion of the warped previous BEV is trained
    for n, g in grads.items():
        torch.testing.assert_close(ddp_grads[n], g, rtol=1e-4, atol=1e-6, msg=n)
    other = collate_clips([ClipSample(frames[1], frames[2]), ClipSample(frames[8], None)], 200, pillars)
    other_grads = one_process({k: v for k, v in other.items() if k != "meta"})
    assert any(not torch.allclose(other_grads[n], g) for n, g in grads.items() if "temporal" in n)


@pytest.mark.slow
def test_minimal_evaluation_gives_nds_one_for_gt(synth_root, tmp_path):
    """The same code path as training-time evaluation, fed GT as predictions: NDS = mAP = 1."""
    from perception.eval.detection import evaluate_split, gt_boxes_as_results

    val = NuScenesFrames(small_config(*TRAIN_EXTRA), synth_root, VERSION, "synth_val")
    gt = gt_boxes_as_results(val.nusc, [s.token for s in val.samples])
    summary = evaluate_split(lambda frame: gt[frame.sample_token], val, tmp_path / "eval")
    assert summary["nd_score"] == pytest.approx(1.0, abs=1e-9)
    assert summary["mean_ap"] == pytest.approx(1.0, abs=1e-9)
    assert (tmp_path / "eval" / "metrics_summary.json").exists() and (tmp_path / "eval" / "results_nusc.json").exists()


def test_ddp_mid_epoch_resume_skips_exactly_what_each_rank_saw():
    """Under torchrun a resumed run restarts its epoch's DistributedSampler order after the batches already seen."""
    from perception.data.loader import _SkipFirst

    for rank in (0, 1):
        full = torch.utils.data.distributed.DistributedSampler(range(23), num_replicas=2, rank=rank, shuffle=True,
                                                               seed=4, drop_last=True)
        full.set_epoch(3)
        order = list(full)
        again = torch.utils.data.distributed.DistributedSampler(range(23), num_replicas=2, rank=rank, shuffle=True,
                                                                seed=4, drop_last=True)
        again.set_epoch(3)
        skipped = _SkipFirst(again, 2 * 4)
        assert list(skipped) == order[8:] and len(skipped) == len(order) - 8
