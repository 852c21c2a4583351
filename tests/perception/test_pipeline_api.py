"""Pipeline.from_checkpoint: Frame in, Detections out (shared preprocessing), nuScenes conversion, clear errors."""
from pathlib import Path

import numpy as np
import pytest
import torch

from perception.data.nuscenes import NuScenesFrames
from perception.data.synthetic.generate import VERSION
from perception.model.network import build_model
from perception.pipeline import Pipeline, TorchRunner, load_network
from perception.train.checkpoint import CheckpointError, save_checkpoint
from small_model import small_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    cfg = small_config()
    torch.manual_seed(0)
    net = build_model(cfg)
    path = tmp_path_factory.mktemp("ck") / "model.pt"
    save_checkpoint(path, net, cfg)
    return path, cfg, net


def test_infer_gives_detections_in_ego_and_global(ckpt, synth_root):
    path, cfg, net = ckpt
    pipe = Pipeline.from_checkpoint(path, score_threshold=0.0)
    frame = NuScenesFrames(cfg, synth_root, VERSION, "synth_val")[2]
    det = pipe.infer(frame)
    assert len(det) == 50 and det.boxes.shape == (50, 9) and det.trajectories.shape == (50, 6, 12, 2)
    assert np.all(np.diff(det.scores) <= 0)
    assert set(det.names) <= set(cfg.classes) and len(det.attributes) == 50
    assert set(det.timing) == {"preprocess_s", "network_s", "postprocess_s"}
    # same numbers as the network on the same batch: the pipeline adds no preprocessing of its own
    from perception.data.loader import PillarSpec, collate_frames
    from perception.model.network import INPUT_NAMES

    batch = collate_frames([frame], cfg.data.loader.max_boxes, PillarSpec.from_config(cfg))
    with torch.no_grad():
        ref = net.eval().detect(*[batch[k] for k in INPUT_NAMES])
    np.testing.assert_allclose(det.boxes, ref["boxes"][0].numpy(), rtol=1e-5, atol=1e-5)
    results = det.to_nuscenes()
    g = frame.global_from_ego
    r = results[0]
    np.testing.assert_allclose(r["translation"], g[:3, :3] @ det.boxes[0, :3] + g[:3, 3], atol=1e-4)
    assert isinstance(r["detection_score"], float) and len(r["rotation"]) == 4
    assert r["size"] == pytest.approx(list(det.boxes[0, 3:6]))


def test_load_network_and_from_module_are_the_checkpoint_path(ckpt, synth_root):
    """load_network rebuilds the saved weights exactly; a Pipeline over the module in memory (training's
    evaluation) gives the detections of Pipeline.from_checkpoint."""
    path, cfg, net = ckpt
    loaded, cfg2, stereo = load_network(path)
    assert cfg2 == cfg and stereo == ()
    want = net.state_dict()
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, want[k]), k
    _, cfg3, _ = load_network(path, overrides=["model.camera.cameras_per_voxel=3"])
    assert cfg3.model.camera.cameras_per_voxel == 3
    frame = NuScenesFrames(cfg, synth_root, VERSION, "synth_val")[1]
    a = Pipeline.from_checkpoint(path, score_threshold=0.0).infer(frame)
    pipe = Pipeline.from_module(loaded.eval(), cfg2, stereo, score_threshold=0.0)
    assert isinstance(pipe.runner, TorchRunner) and pipe.runner.net is loaded
    b = pipe.infer(frame)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_mismatched_checkpoint_is_a_clear_error(ckpt, tmp_path):
    path, cfg, _ = ckpt
    other = build_model(small_config("model.fusion.channels=32"))
    bad = tmp_path / "bad.pt"
    save_checkpoint(bad, other, cfg)  # weights of another network under this config
    with pytest.raises(CheckpointError, match="does not match the network built from its config.*shape mismatches"):
        Pipeline.from_checkpoint(bad)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        Pipeline.from_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        Pipeline.from_checkpoint(tmp_path / "missing.pt")
