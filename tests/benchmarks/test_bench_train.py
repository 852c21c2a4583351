"""benchmarks/bench_train.py: the shipped checkpoint's model card (issue 23) and the training summary's machine."""
import hashlib
import json

import yaml

from benchmarks.bench_train import model_card


def _run(tmp_path, pretrained=None, machine=True):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    summary = {"steps": 1400, "minutes": 30.5, "config_hash": "c0ffee", "generator_version": "synth/2",
               "data_hash": "da7a"}
    if machine:
        summary["machine"] = {"cpu": "Some CPU", "cpus": 2, "device": "cpu", "gpu": None, "processes": 1,
                              "torch": "2.13.0"}
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "eval" / "metrics_summary.json").write_text(json.dumps(
        {"nd_score": 0.4567, "mean_ap": 0.3, "tp_errors": {"trans_err": 0.5, "vel_err": 0.9}}))
    cfg = {"name": "synthetic_tiny", "data": {"loader": {"batch_size": 4}}, "model": {"camera": {"pretrained": pretrained}}}
    (run / "config.resolved.yaml").write_text(yaml.safe_dump(cfg))
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"weights")
    return run, ckpt


def test_model_card_records_hashes_budget_and_machine(tmp_path):
    pre = tmp_path / "pre"
    pre.mkdir()
    (pre / "summary.json").write_text(json.dumps({"steps": 700, "minutes": 5.25}))
    run, ckpt = _run(tmp_path, pretrained=str(pre / "backbone.pt"))
    card = model_card(run, ckpt)
    assert hashlib.sha256(b"weights").hexdigest()[:16] in card
    assert "config hash c0ffee" in card and "data hash da7a" in card and "synth/2" in card
    assert "backbone pretraining" in card and "700 steps, 5.2 min" in card
    assert "detection training 1400 steps x batch 4: 30.5 min" in card and "**35.8 min** in all" in card
    assert "2 x Some CPU (cpu, 1 process(es), torch 2.13.0)" in card and "NDS **0.457**" in card


def test_model_card_without_pretraining_or_machine(tmp_path):
    card = model_card(*_run(tmp_path, machine=False))
    assert "backbone pretraining" not in card and "**30.5 min** in all" in card
    assert "not recorded" in card


def test_train_commands_start_with_the_backbone_stage_when_the_config_loads_one(tmp_path):
    from benchmarks.bench_train import pretrain_note, train_commands

    pre = tmp_path / "pre"
    pre.mkdir()
    (pre / "summary.json").write_text(json.dumps({"steps": 700, "minutes": 5.25}))
    run, _ = _run(tmp_path, pretrained=str(pre / "backbone.pt"))
    lines = train_commands(run).splitlines()
    stage = next(i for i, line in enumerate(lines) if "--stage backbone" in line)
    detect = next(i for i, line in enumerate(lines) if "--out runs/synthetic_tiny --resume" in line)
    assert stage < detect and f"--out {pre}" in lines[stage]
    assert "configs/synthetic_tiny.yaml" in lines[detect] and lines[-1].endswith("--ship")
    assert pretrain_note(run) == " after a backbone pretraining stage of 700 steps in 5.2 min"
    plain, _ = _run(tmp_path / "b")
    assert "--stage backbone" not in train_commands(plain) and pretrain_note(plain) == ""
