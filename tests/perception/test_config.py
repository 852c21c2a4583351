import dataclasses
from pathlib import Path

import pytest
import yaml

from perception.config import (
    DETECTION_CLASSES,
    Config,
    ConfigError,
    config_from_dict,
    config_hash,
    dump_config,
    load_config,
    rig_path,
)

REPO = Path(__file__).resolve().parents[2]


def test_shipped_config_loads_and_resolves_rig_path():
    cfg = load_config(REPO / "configs" / "synthetic_tiny.yaml")
    assert cfg.name == "synthetic_tiny"
    assert cfg.rig == "configs/rigs/nuscenes.yaml"  # machine-independent in the resolved config
    assert rig_path(cfg) == (REPO / "configs" / "rigs" / "nuscenes.yaml").resolve()
    assert cfg.data.grid.bev_shape == (64, 64)  # derived: 102.4 m / 1.6 m
    assert cfg.data.image_size == (128, 352)
    assert cfg.classes == DETECTION_CLASSES and cfg.num_classes == 10


def test_dump_round_trip_is_identical():
    cfg = config_from_dict({"name": "x", "data": {"grid": {"resolution": 0.4}, "sync": {"enabled": False}}})
    again = config_from_dict(yaml.safe_load(dump_config(cfg)))
    assert again == cfg
    assert config_hash(again) == config_hash(cfg)
    assert config_hash(config_from_dict({"name": "y"})) != config_hash(cfg)


def test_overrides_are_typed_by_the_field():
    base = {"name": "x"}
    cfg = config_from_dict(base, ["data.sync.enabled=false", "data.grid.resolution=0.4",
                                  "data.grid.x_range=[-25.6, 25.6]", "classes=[car, pedestrian]"])
    assert cfg.data.sync.enabled is False
    assert cfg.data.grid.resolution == 0.4 and isinstance(cfg.data.grid.resolution, float)
    assert cfg.data.grid.x_range == (-25.6, 25.6)
    assert cfg.data.grid.bev_shape == (128, 256)  # 51.2 m and 102.4 m at 0.4 m
    assert cfg.classes == ("car", "pedestrian")
    assert base == {"name": "x"}  # the raw dict is not mutated
    with pytest.raises(ConfigError, match=r"data\.sync\.enabled: expected true or false, got 'maybe'"):
        config_from_dict(base, ["data.sync.enabled=maybe"])
    with pytest.raises(ConfigError, match=r"unknown key 'data.sync.enable'; known keys here: \['enabled', "):
        config_from_dict(base, ["data.sync.enable=true"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        config_from_dict(base, ["data.sync.enabled"])
    with pytest.raises(ConfigError, match=r"data\.grid\.resolution: expected a number, got True"):
        config_from_dict(base, ["data.grid.resolution=yes"])


def test_yaml_booleans_are_not_strings():
    # YAML 1.1 reads unquoted off as False: a string field must refuse it rather than store "False"
    with pytest.raises(ConfigError, match=r"name: expected a string, got the boolean False.*quote the value"):
        config_from_dict(yaml.safe_load("name: off"))


@pytest.mark.parametrize("data, fragment", [
    ({"name": "x", "data": {"grid": {"x_range": [10, -10]}}}, "grid.x_range: must be ordered"),
    ({"name": "x", "data": {"grid": {"resolution": 0.7}}}, "not a whole number of 0.7 m cells"),
    ({"name": "x", "data": {"grid": {"resolution": -1.0}}}, "grid.resolution: must be > 0"),
    # +-50.4 m at 1.6 m: 63 cells, which built and then failed in the first forward pass (the decoder's stride 2)
    ({"name": "x", "data": {"grid": {"x_range": [-50.4, 50.4], "resolution": 1.6}}},
     "grid.x_range: 63 cells of 1.6 m over [-50.4, 50.4]; the BEV decoder's stride-2 context branch needs a "
     "multiple of 2"),
    ({"name": "x", "classes": ["car", "spaceship"]}, "['spaceship'] are not nuScenes detection classes"),
    ({"name": "x", "data": {"gird": {}}}, "data.gird: unknown key; known keys here: ['augment', 'dropout', 'future_steps', 'grid', "),
    ({"name": "x", "data": {"image_size": [100, 352]}}, "data.image_size: (H, W) must be multiples of 8"),
    ({"name": "x", "data": {"radar": {"fields": ["x", "y"]}}}, "data.radar.fields: ['x', 'y'] must include"),
    ({"name": "x", "data": {"dropout": {"camera_one": 1.5}}}, "data.dropout.camera_one: must be a probability"),
    ({"name": "x", "data": {"on_bad_file": "explode"}}, "data.on_bad_file: 'explode' is not one of ['mask', 'skip']"),
    ({"data": {}}, "name: required key is missing"),
    ({"name": "x", "data": {"grid": {"x_range": [1, 2, 3]}}}, "data.grid.x_range: expected 2 values"),
])
def test_validation_messages(data, fragment):
    with pytest.raises(ConfigError) as err:
        config_from_dict(data, source="exp.yaml")
    assert fragment in str(err.value)
    assert str(err.value).startswith("exp.yaml: ")


def test_frozen():
    cfg = Config(name="x")
    with pytest.raises(AttributeError):
        cfg.name = "y"  # type: ignore[misc]


def test_load_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)


def test_base_chain_states_only_differences(tmp_path):
    r50 = load_config(REPO / "configs" / "nuscenes_r50_256x704.yaml")
    r18 = load_config(REPO / "configs" / "nuscenes_r18_256x704.yaml")
    assert r50.model.camera.backbone_depth == 50 and r18.model.camera.backbone_depth == 18
    assert r50.data == r18.data and r50.model.fusion == r18.model.fusion
    assert r50.rig == r18.rig == "configs/rigs/nuscenes.yaml"
    stereo = load_config(REPO / "configs" / "synthetic_tiny_stereo.yaml")
    assert stereo.rig == "configs/rigs/stereo_radar.yaml"
    assert stereo.data == load_config(REPO / "configs" / "synthetic_tiny.yaml").data
    (tmp_path / "a.yaml").write_text("base: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nname: b\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(tmp_path / "a.yaml")


def test_shipped_recipe_is_temporal_plus_the_camera_recipe():
    """configs/synthetic_tiny_shipped.yaml (issue 23) is the temporal config with the measured camera recipe and the
    radar skip into the heads, and nothing else changed: the ablation rows are its evidence."""
    tiny = load_config(REPO / "configs" / "synthetic_tiny.yaml")
    temporal = load_config(REPO / "configs" / "synthetic_tiny_temporal.yaml")
    shipped = load_config(REPO / "configs" / "synthetic_tiny_shipped.yaml")
    assert shipped.name == "synthetic_tiny_shipped"
    assert shipped.model.temporal == temporal.model.temporal and shipped.model.temporal.enabled
    assert shipped.train.depth_loss.enabled and shipped.train.depth_loss.weight == 3.0
    assert shipped.train.perspective.enabled
    assert shipped.model.camera.pretrained.endswith("backbone.pt")
    assert shipped.model.head.radar_skip.enabled and not tiny.model.head.radar_skip.enabled  # main_rskip's evidence
    # everything outside the recipe is the tiny config's: data (dropout included: the raised one measured no gain),
    # fusion, the head but for the skip, schedule
    assert shipped.data == tiny.data
    assert shipped.model.fusion == tiny.model.fusion
    assert dataclasses.replace(shipped.model.head, radar_skip=tiny.model.head.radar_skip) == tiny.model.head
    assert (shipped.train.lr, shipped.train.steps) == (tiny.train.lr, tiny.train.steps)
