"""Fixtures of the integration tests: a tiny synthetic nuScenes root with its mmdet3d v1.1 info files (written by
this project's converter, ``perception.integrations.mmdet3d.infos.write_infos``)."""
from __future__ import annotations

from pathlib import Path

import pytest

from perception.data.synthetic.generate import VERSION, SynthOptions


@pytest.fixture(scope="session")
def synth_infos(tmp_path_factory) -> dict:
    """2 scenes x 2 key frames (one scene per split), 80x45-pixel cameras: about 10 s to write."""
    from perception.data.synthetic.generate import generate
    from perception.integrations.mmdet3d.infos import write_infos

    root = Path(tmp_path_factory.mktemp("synth_infos"))
    generate(SynthOptions(out=root, scenes=2, samples_per_scene=2, seed=7, image_scale=0.1, keyframes_only=True))
    out = {"root": root, "version": VERSION}
    for split in ("synth_train", "synth_val"):
        out[split] = root / f"infos_{split}.pkl"
        out["data_prefix"] = write_infos(root, VERSION, split, out[split])
    return out
