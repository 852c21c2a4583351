"""benchmarks/bench_test.py: the report says which world it scored and which data the checkpoint learned from."""
import json

from benchmarks import bench_test
from benchmarks.report import REPO
from perception.train.checkpoint import load_checkpoint

SHIPPED = REPO / "checkpoints" / "synthetic_tiny.pt"


def test_the_world_and_the_checkpoints_data_are_named(tmp_path):
    gen = tmp_path / "generator.json"
    gen.write_text(json.dumps({"generator": "synth/2", "scenes": 60, "samples_per_scene": 20, "seed": 3,
                               "keyframes_only": True}))
    text = bench_test.describe_world(gen, SHIPPED)
    assert text.startswith("generator synth/2, `perception-synth --scenes 60 --samples-per-scene 20 --seed 3 "
                           "--keyframes-only`")
    assert text.endswith(f"data hash {load_checkpoint(SHIPPED)['data_hash']}")


def test_a_root_or_checkpoint_that_says_nothing_is_described_as_unknown(tmp_path):
    (tmp_path / "generator.json").write_text("{broken")
    text = bench_test.describe_world(tmp_path / "generator.json", tmp_path / "missing.pt")
    assert text == "not a synthetic root (no generator.json); the checkpoint was trained on data hash unknown " \
                   "(FileNotFoundError)"
