"""bench_replay's network-only rate feeds what the network needs: a temporal network's state inputs too (the
shipped checkpoint is temporal; without them the runner refuses the batch)."""
import pytest

from perception.data.nuscenes import NuScenesFrames
from perception.pipeline import Pipeline

pytestmark = pytest.mark.slow  # runs a network over frames


@pytest.mark.parametrize("temporal", [False, True])
def test_network_only_runs_single_frame_and_temporal_networks(synth_root, tmp_path, temporal):
    from benchmarks.bench_replay import _network_only
    from perception.train.checkpoint import save_checkpoint
    from small_model import small_config, small_net

    cfg = small_config(*(("model.temporal.enabled=true",) if temporal else ()))
    save_checkpoint(tmp_path / "m.pt", small_net(cfg), cfg)
    pipe = Pipeline.from_checkpoint(tmp_path / "m.pt")
    assert pipe.temporal is temporal
    frames = NuScenesFrames(cfg, synth_root, "v1.0-synth", "synth_val")
    fps = _network_only(pipe, [frames[0], frames[1]])
    assert fps > 0
