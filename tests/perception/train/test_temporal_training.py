"""Training a temporal model on clips (BEVDet4D style): the previous key frame under the current frame's BEV
augmentation, the gaps and the dropped-previous augmentation, the collated batch, and an exact resume."""
import json

import numpy as np
import pytest
import torch

from perception.data.frame import ClipSample
from perception.data.loader import PillarSpec, collate_frames
from perception.data.nuscenes import NuScenesFrames
from perception.data.synthetic.generate import VERSION
from small_model import small_config

TRAIN_EXTRA = ("data.loader.batch_size=2", "data.loader.workers=0", "model.fusion.layers=1",
               "train.split=synth_train", "train.val_split=synth_val", "model.temporal.enabled=true")


@pytest.fixture(scope="module")
def clip_frames(synth_root):
    cfg = small_config(*TRAIN_EXTRA, "model.temporal.drop_previous=0.0")
    return (NuScenesFrames(cfg, synth_root, VERSION, "synth_train", train=True, seed=1),
            NuScenesFrames(cfg, synth_root, VERSION, "synth_train"))


def test_the_previous_frame_shares_the_bev_augmentation_and_is_one_or_two_key_frames_back(clip_frames, synth_root):
    train, plain = clip_frames
    assert train.clips and not plain.clips
    assert isinstance(train[0], ClipSample) and train[0].previous is None  # a scene's first key frame
    index = 5
    clip = train[index]
    cur, prev = clip.frame, clip.previous
    assert prev.scene_token == cur.scene_token
    back = round((cur.t0 - prev.t0) / 0.5e6)
    assert back in (1, 2)
    plain_cur, plain_prev = plain.load(index), plain.load(index - back)
    aug = np.linalg.solve(cur.global_from_ego, plain_cur.global_from_ego)  # augmented_from_ego of the clip
    assert not np.allclose(aug, np.eye(4), atol=1e-3), "augmentation is on: the test must see one"
    np.testing.assert_allclose(prev.global_from_ego, plain_prev.global_from_ego @ np.linalg.inv(aug), atol=1e-6)
    assert len(prev.gt_boxes) > 0
    np.testing.assert_allclose(prev.gt_boxes[:, :2], plain_prev.gt_boxes[:, :2] @ aug[:2, :2].T, atol=1e-3)
    again = train[index]  # a pure function of (seed, epoch, index)
    assert again.previous.sample_token == prev.sample_token
    np.testing.assert_array_equal(again.frame.images, cur.images)
    # two key frames back where the scene has them, else the farthest available
    two = NuScenesFrames(small_config(*TRAIN_EXTRA, "model.temporal.drop_previous=0.0", "model.temporal.train_gaps=[2]"),
                         synth_root, VERSION, "synth_train", train=True)
    for index, want in ((20, 2), (1, 1)):  # 14 key frames per scene: index 20 is the 7th of scene 2
        c = two[index]
        assert round((c.frame.t0 - c.previous.t0) / 0.5e6) == want


def test_dropped_previous_and_the_collated_clip_batch(synth_root, clip_frames):
    cfg = small_config(*TRAIN_EXTRA, "model.temporal.drop_previous=1.0")
    dropped = NuScenesFrames(cfg, synth_root, VERSION, "synth_train", train=True)
    assert all(dropped[i].previous is None for i in (1, 2, 3))
    train, _ = clip_frames
    batch = collate_frames([train[3], train[0]], 20, PillarSpec.from_config(cfg))
    assert batch["prev_valid"].tolist() == [True, False]
    assert batch["prev_images"].shape == batch["images"].shape and batch["prev_pillar_cells"].dtype == torch.int64
    gap = batch["prev_dt"][0].item()  # key frames are ~0.5 s apart (not exactly, as in nuScenes)
    assert min(abs(gap - 0.5), abs(gap - 1.0)) < 0.05 and batch["prev_dt"][1].item() == 0.0
    torch.testing.assert_close(batch["cur_from_prev"][1], torch.eye(4))


@pytest.mark.slow
def test_temporal_training_resumes_exactly(synth_root, tmp_path):
    """2 steps in one go == 1 step, interrupted, resumed for 1 (clips, gaps and drops included); the temporal
    fusion's weights are trained."""
    from perception.train.loop import train

    cfg = small_config(*TRAIN_EXTRA, "train.steps=2", "train.checkpoint_every=1", "train.log_every=1",
                       "train.deterministic=true")
    train(cfg, synth_root, VERSION, tmp_path / "full", progress=False, evaluate=False)
    train(cfg, synth_root, VERSION, tmp_path / "part", progress=False, evaluate=False, stop_after=1)
    at1 = torch.load(tmp_path / "part" / "last.pt", weights_only=True)["model"]
    train(cfg, synth_root, VERSION, tmp_path / "part", resume=True, progress=False, evaluate=False)
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "part" / "model.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and any(k.startswith("temporal.") for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    assert not torch.allclose(at1["temporal.fuse.0.weight"], a["temporal.fuse.0.weight"])  # step 2 moved it
    rows = [json.loads(r) for r in (tmp_path / "part" / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(np.isfinite(r["loss"]) for r in rows)
