"""A small version of the tiny config (64x176 images, 32x32 BEV, 4 heights, 16 depth bins, a quarter-width
backbone) so that model, training, export and benchmark tests run in seconds. Imported by the tests (pytest puts
this folder on sys.path through the root conftest)."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMALL_OVERRIDES = ["data.grid.resolution=3.2", "model.camera.heights=4", "model.camera.depth_bins=16",
                   "model.radar.max_pillars=128", "data.radar.max_points=400", "data.image_size=[64, 176]",
                   "model.camera.backbone_width=0.25", "model.head.max_detections=50"]


def small_config(*extra: str):
    from perception.config import load_config

    return load_config(REPO / "configs" / "synthetic_tiny.yaml", SMALL_OVERRIDES + list(extra))


def small_net(cfg=None, seed: int = 0):
    """The small network in eval mode with non-trivial BatchNorm statistics (as after training), so that export and
    parity tests do not pass on identity normalisation."""
    import torch

    from perception.model.network import build_model

    cfg = cfg or small_config()
    torch.manual_seed(seed)
    net = build_model(cfg)
    for mod in net.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    return net.eval()
