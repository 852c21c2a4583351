"""The shipped checkpoint loads strictly against the current code and config: when a change breaks it, this
fails, and the checkpoint must be retrained and re-shipped (commands in docs/BENCHMARKS.md)."""
from pathlib import Path


from perception.config import dump_config, load_config
from perception.pipeline import Pipeline
from perception.train.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[3]
SHIPPED = REPO / "checkpoints" / "synthetic_tiny.pt"


def test_shipped_checkpoint_matches_code_and_config():
    assert SHIPPED.exists(), f"{SHIPPED} is missing: it is part of the product (retrain with docs/training.md)"
    assert SHIPPED.stat().st_size < 25 * 2**20
    ckpt = load_checkpoint(SHIPPED)
    name = ckpt["config"].name  # the config it was trained with: configs/<name>.yaml
    assert name in ("synthetic_tiny", "synthetic_tiny_shipped"), name
    current = load_config(REPO / "configs" / f"{name}.yaml")
    assert dump_config(ckpt["config"]) == dump_config(current), \
        f"configs/{name}.yaml changed since the checkpoint was trained: retrain and re-ship it"
    pipe = Pipeline.from_checkpoint(SHIPPED)  # strict load against the network this code builds
    assert pipe.cfg.name == name
    for key in ("config_hash", "generator_version", "data_hash"):
        assert ckpt.get(key), key
