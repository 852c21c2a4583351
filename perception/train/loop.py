"""The training loop: AdamW + one-cycle, AMP where available, gradient clipping, seeds, tqdm, TensorBoard, the
resolved config in the run folder, evaluation, atomic checkpoints that resume exactly, DDP through torchrun.

Run folder: ``config.resolved.yaml``, ``history.jsonl`` (one line per logged step), ``tb/`` (TensorBoard),
``last.pt`` (resumable: model, optimiser, scheduler, step, RNG states), ``model.pt`` (weights for inference),
``eval/`` (devkit outputs), ``training_curve.png``.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from perception.config import Config, config_hash, dump_config
from perception.data.loader import PillarSpec, make_loader
from perception.data.nuscenes import DatasetError, NuScenesFrames
from perception.eval.detection import evaluate_split, summary_line
from perception.model.decode import BevGrid
from perception.model.network import INPUT_NAMES, STATE_OUTPUT, build_model
from perception.pipeline import Pipeline
from perception.train.camera_aux import TrainNet, camera_aux_losses
from perception.train.checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint
from perception.train.losses import detection_losses
from perception.train.recipe import WeightEma, sync_batchnorm
from perception.train.targets import build_targets

LOSS_NAMES = ("heatmap", "regression", "trajectory", "mode")
AUX_LOSS_NAMES = ("depth", "perspective_heatmap", "perspective_regression")  # when train.depth_loss / perspective


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # init_distributed created the process group (so train() destroys it at the end)

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): gloo on CPU, NCCL on GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owns)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def data_hash(frames: Any) -> str:
    """A short hash of what the model is trained on: the sample tokens of the split and the generator's
    options for synthetic roots (so a regenerated dataset is noticed)."""
    h = hashlib.sha256("".join(s.token for s in frames.samples).encode())
    gen = Path(frames.dataroot) / frames.version / "generator.json"
    if gen.exists():
        h.update(gen.read_bytes())
    return h.hexdigest()[:16]


def generator_version(frames: Any) -> str:
    gen = Path(frames.dataroot) / frames.version / "generator.json"
    if gen.exists():
        return str(json.loads(gen.read_text()).get("generator", "unknown"))
    return "none (not a synthetic root)"


@dataclass
class _Optimisation:
    """What a training step changes: the network (``net``: the ``camera_aux.TrainNet`` around the FusionNet,
    DDP-wrapped when distributed; ``model``: the FusionNet itself; ``train_net``: the TrainNet, which also holds the
    training-only heads), AdamW, the one-cycle schedule, the AMP gradient scaler and the weight EMA (``train.ema``;
    ``final`` is what is evaluated and saved: the EMA's network when on)."""

    net: Any
    model: Any
    opt: torch.optim.Optimizer
    sched: Any
    scaler: Any
    use_amp: bool
    train_net: Any = None
    ema: Any = None

    @property
    def final(self) -> Any:
        return self.ema.module if self.ema is not None else self.model

    def extra_state(self) -> dict:
        """What ``last.pt`` carries beside the network for an exact resume: the training-only heads (``aux``)
        and the EMA weights (``ema``)."""
        out = {"aux": self.train_net.aux_state_dict()}
        if self.ema is not None:
            out["ema"] = self.ema.state_dict()
        return out


def _build_optimisation(cfg: Config, stereo: tuple, dev: torch.device, dist_info: DistInfo) -> _Optimisation:
    tc = cfg.train
    # the network with the training-only camera supervision around it (saved apart: model.pt stays the FusionNet)
    train_net = TrainNet(sync_batchnorm(build_model(cfg, stereo), dist_info.world, dev), cfg).to(dev)
    net = train_net
    if dist_info.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(train_net, device_ids=[dev.index] if dev.type == "cuda" else None,
                                                        find_unused_parameters=True)
    model = train_net.net
    opt = torch.optim.AdamW(train_net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tc.lr, total_steps=tc.steps, pct_start=0.3,
                                                div_factor=10.0, final_div_factor=100.0)
    use_amp = tc.amp and dev.type == "cuda"
    ema = WeightEma(model, tc.ema.decay) if tc.ema.enabled else None
    return _Optimisation(net, model, opt, sched, torch.amp.GradScaler("cuda", enabled=use_amp), use_amp, train_net,
                         ema)


def _resume(path: Path, o: _Optimisation, hashes: dict) -> tuple[int, float]:
    """Load ``last.pt`` into ``o`` and the global RNGs; returns (step, training minutes of the runs resumed)."""
    ck = load_checkpoint(path)
    load_weights(o.model, ck["model"], path)
    o.opt.load_state_dict(ck["optimizer"])
    o.sched.load_state_dict(ck["scheduler"])
    _set_rng(ck["rng"])
    if ck.get("config_hash") != hashes["config_hash"]:
        raise CheckpointError(f"{path} was trained with another config (hash {ck.get('config_hash')} vs "
                              f"{hashes['config_hash']}); resume with the same config or start a new run")
    o.train_net.load_aux_state_dict(ck.get("aux", {}))
    if o.ema is not None:
        if "ema" not in ck:
            raise CheckpointError(f"{path} has no EMA weights but train.ema is on; resume with the same config")
        o.ema.load_state_dict(ck["ema"])
    return int(ck["step"]), float(ck.get("minutes", 0.0))


def _train_step(o: _Optimisation, batch: dict, grid: Any, cfg: Config, dev: torch.device,
                step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """One optimiser step on ``batch`` (targets built on ``grid``, gradients clipped to ``train.grad_clip``, the
    training-only camera losses of ``camera_aux`` added, the EMA updated); returns (total loss, loss terms,
    gradient norm before clipping)."""
    targets = build_targets(batch["gt_boxes"], batch["gt_labels"], batch["gt_mask"], batch["gt_future"],
                            batch["gt_future_valid"], grid, cfg.num_classes)
    inputs = [batch[k].to(dev, non_blocking=True) for k in INPUT_NAMES]
    clip = {}
    if "prev_valid" in batch:  # a temporal model's clip (perception.data.loader.collate_clips)
        clip = {"previous": tuple(batch[f"prev_{k}"].to(dev, non_blocking=True) for k in INPUT_NAMES),
                "temporal": tuple(batch[k].to(dev, non_blocking=True) for k in ("cur_from_prev", "prev_dt",
                                                                                 "prev_valid"))}
    with torch.autocast(dev.type, enabled=o.use_amp):
        outputs, extras = o.net(*inputs, **clip)
    outputs = {k: v for k, v in outputs.items() if k != STATE_OUTPUT}
    losses = detection_losses({k: v.float() for k, v in outputs.items()}, _to(targets, dev), cfg.train.trajectory_loss,
                              cfg.train.velocity_weight)
    losses.update(camera_aux_losses(extras, batch, cfg))
    loss = sum(losses.values())
    if not torch.isfinite(loss):
        raise FloatingPointError(f"step {step}: loss is {loss.item()} ({ {k: v.item() for k, v in losses.items()} })")
    o.opt.zero_grad(set_to_none=True)
    o.scaler.scale(loss).backward()
    o.scaler.unscale_(o.opt)
    gnorm = torch.nn.utils.clip_grad_norm_(o.train_net.parameters(), cfg.train.grad_clip)
    o.scaler.step(o.opt)
    o.scaler.update()
    o.sched.step()
    if o.ema is not None:
        o.ema.update(o.model, step + 1)
    return loss, losses, gnorm


def _log_step(history: Path, writer: Any, step: int, loss: torch.Tensor, losses: dict, lr: float,
              gnorm: torch.Tensor, minutes: float) -> None:
    """One line of ``history.jsonl`` and the same scalars to TensorBoard."""
    row = {"step": step, "loss": loss.item(), **{k: v.item() for k, v in losses.items()}, "lr": lr,
           "grad_norm": float(gnorm), "minutes": minutes}
    with open(history, "a") as f:
        f.write(json.dumps(row) + "\n")
    for k, v in row.items():
        if k != "step":
            writer.add_scalar(f"train/{k}", v, step)


def train(cfg: Config, dataroot: str | Path, version: str, out_dir: str | Path, resume: bool = False,
          progress: bool = True, device: str | None = None, evaluate: bool = True,
          stop_after: int | None = None) -> dict:
    """Train ``cfg`` on ``cfg.train.split`` of the root; returns a summary (final losses, evaluation metrics).
    ``stop_after`` ends the run early at that step with a resumable checkpoint (as an interruption would)."""
    dist_info = init_distributed()
    tc = cfg.train
    seed_everything(tc.seed + dist_info.rank, tc.deterministic)
    dev = torch.device(device or (f"cuda:{dist_info.local_rank}" if torch.cuda.is_available() else "cpu"))
    out = Path(out_dir)
    if dist_info.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.resolved.yaml").write_text(dump_config(cfg))
    frames = NuScenesFrames(cfg, dataroot, version, tc.split, train=True, seed=tc.seed)
    stereo = tuple(tuple(int(v) for v in p) for p in frames.load(0).stereo_pairs)
    o = _build_optimisation(cfg, stereo, dev, dist_info)
    step = 0
    prior_minutes = 0.0  # training minutes of the runs this one resumes (history/summary minutes are cumulative)
    hashes = {"config_hash": config_hash(cfg), "generator_version": generator_version(frames),
              "data_hash": data_hash(frames)}
    if resume and (out / "last.pt").exists():
        step, prior_minutes = _resume(out / "last.pt", o, hashes)
    if tc.cbgs.enabled:
        from perception.data.cbgs import ResampledFrames, cbgs_indices, split_sample_classes

        frames = ResampledFrames(frames, cbgs_indices(split_sample_classes(frames), cfg.num_classes, tc.seed))
    bs = cfg.data.loader.batch_size
    per_epoch = len(frames) // (bs * dist_info.world)
    if per_epoch < 1:
        raise DatasetError(f"split {tc.split} has {len(frames)} samples: fewer than one batch of {bs} per process")

    def epoch_loader(epoch: int, start_batch: int) -> Any:
        return make_loader(frames, bs, cfg.data.loader.max_boxes, shuffle=True, workers=cfg.data.loader.workers,
                           pin_memory=cfg.data.loader.pin_memory, distributed=dist_info.world > 1, seed=tc.seed,
                           drop_last=True, pillars=PillarSpec.from_config(cfg), epoch=epoch, start_batch=start_batch)
    grid = BevGrid.from_config(cfg.data.grid)
    writer = None
    if dist_info.main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"))
    bar = None
    if progress and dist_info.main:
        from tqdm import tqdm

        bar = tqdm(total=tc.steps, initial=step, desc="train", unit="step")
    t_start = time.time()

    def minutes() -> float:  # training time over this run and the runs it resumes
        return prior_minutes + (time.time() - t_start) / 60

    history = out / "history.jsonl"
    epoch = step // per_epoch
    stop = False
    o.net.train()
    while step < tc.steps and not stop:
        frames.set_epoch(epoch)
        start = step - epoch * per_epoch  # resuming mid-epoch: start after the batches already seen
        for batch in epoch_loader(epoch, start):
            loss, losses, gnorm = _train_step(o, batch, grid, cfg, dev, step)
            step += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
            if dist_info.main and (step % tc.log_every == 0 or step == tc.steps):
                _log_step(history, writer, step, loss, losses, o.sched.get_last_lr()[0], gnorm, minutes())
            timed_out = (tc.max_minutes > 0 and (time.time() - t_start) / 60 >= tc.max_minutes) or \
                (stop_after is not None and step >= stop_after)
            if dist_info.main and (step % tc.checkpoint_every == 0 or step == tc.steps or timed_out):
                _save_state(out / "last.pt", o.model, cfg, stereo, o.opt, o.sched, step, hashes, minutes(),
                            o.extra_state())
            if evaluate and tc.eval_every and step % tc.eval_every == 0 and dist_info.main and step < tc.steps:
                _evaluate(o.final, cfg, dataroot, version, out / f"eval_step{step}", writer, step, stereo)
                o.net.train()
            if step >= tc.steps or timed_out:
                stop = True
                break
        epoch += 1
    if bar is not None:
        bar.close()
    total = minutes()
    summary: dict[str, Any] = {"steps": step, "minutes": total, "minutes_this_run": total - prior_minutes, **hashes,
                               "machine": _machine(dev, dist_info.world)}
    if dist_info.main:
        # train.ema: the averaged weights are the model that is saved and evaluated
        save_checkpoint(out / "model.pt", o.final, cfg, stereo, {**hashes, "steps": step, "ema": o.ema is not None})
        if evaluate:
            summary["metrics"] = _evaluate(o.final, cfg, dataroot, version, out / "eval", writer, step, stereo)
        plot_history(history, out / "training_curve.png")
        writer.close()
    _leave_distributed(dist_info)
    return summary


def _machine(dev: torch.device, world: int) -> dict[str, Any]:
    """What this (last) attempt of the run trained on, for the model card: CPU model and count, device, processes,
    PyTorch version."""
    import platform

    cpu = platform.processor()
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                   cpu)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
    return {"cpu": cpu, "cpus": os.cpu_count(), "device": dev.type, "gpu": gpu, "processes": world,
            "torch": torch.__version__}


def _leave_distributed(dist_info: DistInfo) -> None:
    """Wait for every rank, then destroy the process group if this run created it."""
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()
        if dist_info.owns_group:
            # a process that exits with a live gloo group can abort in the group's destructor ("terminate called
            # without an active exception", pytorch/pytorch#190489), failing the whole torchrun job
            dist.destroy_process_group()


def _to(t: Any, dev: torch.device) -> Any:
    return replace(t, **{f.name: getattr(t, f.name).to(dev) for f in fields(t)})


def _rng_state() -> dict:
    """All global RNG states as tensors and plain numbers (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    py = random.getstate()
    return {"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "numpy_pos": int(np_state[2]), "numpy_has_gauss": int(np_state[3]), "numpy_gauss": float(np_state[4]),
            "python_version": int(py[0]), "python_state": torch.tensor(py[1], dtype=torch.int64),
            "python_gauss": py[2]}


def _set_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_gauss"]))
    random.setstate((state["python_version"], tuple(int(v) for v in state["python_state"].tolist()),
                     state["python_gauss"]))


def _save_state(path: Path, model, cfg, stereo, opt, sched, step: int, hashes: dict, minutes: float,
                extra: dict | None = None) -> None:
    """``minutes``: training time up to this step, over every run resumed into this one; ``extra``: more entries
    (``_Optimisation.extra_state``)."""
    save_checkpoint(path, model, cfg, stereo, {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                               "step": step, "rng": _rng_state(), "minutes": minutes, **hashes,
                                               **(extra or {})})


def _evaluate(model, cfg, dataroot, version, out_dir: Path, writer, step: int, stereo) -> dict:
    """The minimal evaluation of the current weights on cfg.train.val_split (devkit metrics)."""
    model.eval()
    frames = NuScenesFrames(cfg, dataroot, version, cfg.train.val_split)
    pipe = Pipeline.from_module(model, cfg, stereo)
    summary = evaluate_split(lambda f: pipe.infer(f).to_nuscenes(), frames, out_dir)
    line = summary_line(summary)
    print(f"[eval step {step}] {cfg.train.val_split}: {line}", flush=True)
    if writer is not None:
        writer.add_scalar("val/NDS", summary["nd_score"], step)
        writer.add_scalar("val/mAP", summary["mean_ap"], step)
        for k, v in summary["tp_errors"].items():
            writer.add_scalar(f"val/{k}", v, step)
    return {"NDS": summary["nd_score"], "mAP": summary["mean_ap"], **summary["tp_errors"]}


def plot_history(history: Path, out_png: Path) -> None:
    """Loss curves (total and per term, log scale) against steps."""
    if not history.exists():
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in history.read_text().splitlines() if line.strip()]
    if not rows:
        return
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for key in ("loss",) + LOSS_NAMES + AUX_LOSS_NAMES:
        if key in rows[0]:
            ax.plot(steps, [r[key] for r in rows], label=key, lw=1.5 if key == "loss" else 1.0)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"training: {len(rows)} logged steps, {rows[-1]['minutes']:.1f} min")
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
