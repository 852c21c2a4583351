"""perception-train --stage backbone: the image backbone trained alone on the split's images (perspective-view
targets + lidar depth), saved as a flat torchvision-named state dict that model.camera.pretrained loads."""
import json

import pytest
import torch

from perception.cli.train import main
from perception.data.synthetic.generate import VERSION
from perception.model.network import build_model
from small_model import REPO, SMALL_OVERRIDES, small_config


def test_backbone_stage_writes_weights_a_detection_run_loads(synth_root, tmp_path, capsys):
    out = tmp_path / "pre"
    sets = [*SMALL_OVERRIDES, "data.loader.batch_size=2", "data.loader.workers=0", "train.steps=3", "train.log_every=1"]
    args = [str(REPO / "configs" / "synthetic_tiny.yaml"), "--dataroot", str(synth_root), "--version", VERSION,
            "--out", str(out), "--stage", "backbone", "--no-progress"] + [a for s in sets for a in ("--set", s)]
    torch.manual_seed(0)
    assert main(args) == 0, capsys.readouterr().err
    assert "backbone pretrained for 3 steps" in capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "pretrain_history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["depth"] > 0 and r["perspective_heatmap"] > 0 and r["seconds_per_step"] > 0 for r in rows)
    state = torch.load(out / "backbone.pt", weights_only=True)
    assert "conv1.weight" in state and not any(k.startswith(("neck", "perspective", "depth")) for k in state)
    net = build_model(small_config(f"model.camera.pretrained={out / 'backbone.pt'}"))
    fresh = build_model(small_config())
    for k, v in state.items():
        torch.testing.assert_close(net.camera.backbone.state_dict()[k], v)
    assert not torch.equal(fresh.camera.backbone.conv1.weight, state["conv1.weight"])  # it trained
    assert main(args) == 1  # OUT holds backbone.pt: refused without --overwrite
    with pytest.raises(SystemExit) as exc:  # bad arguments: argparse's exit 2
        main(args + ["--resume"])
    assert exc.value.code == 2
    # the shipped recipe's config names the stage's own output as its init: the stage starts from scratch ...
    own = tmp_path / "own"
    assert main([a if a != str(out) else str(own) for a in args]
                + ["--set", f"model.camera.pretrained={own / 'backbone.pt'}"]) == 0, capsys.readouterr().err
    assert (own / "backbone.pt").is_file()
    # ... while any other init file must exist (a missing one is a clear error, exit 1)
    other = tmp_path / "other"
    assert main([a if a != str(out) else str(other) for a in args]
                + ["--set", f"model.camera.pretrained={tmp_path / 'nope.pt'}"]) == 1
    assert "nope.pt" in capsys.readouterr().err


def test_a_checkpoint_loads_without_its_backbone_init_file(tmp_path):
    """A run started from model.camera.pretrained=FILE saves that path in its config; loading the checkpoint
    elsewhere must not need FILE (its weights are in the checkpoint)."""
    from perception.pipeline import Pipeline
    from perception.train.checkpoint import save_checkpoint

    init = tmp_path / "backbone.pt"
    torch.save(build_model(small_config()).camera.backbone.state_dict(), init)
    cfg = small_config(f"model.camera.pretrained={init}")
    net = build_model(cfg)
    save_checkpoint(tmp_path / "model.pt", net, cfg)
    init.unlink()
    pipe = Pipeline.from_checkpoint(tmp_path / "model.pt")
    torch.testing.assert_close(pipe.runner.net.camera.backbone.conv1.weight, net.camera.backbone.conv1.weight)
