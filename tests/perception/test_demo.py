"""The demo cannot silently rot: its steps run here (on a smaller dataset) and its report says what it did."""
import pytest

import perception.demo as demo

pytestmark = pytest.mark.slow  # the whole demo: data, training, export, replay


@pytest.fixture()
def small_demo(monkeypatch):
    monkeypatch.setattr(demo, "DEMO_SCENES", 1)
    monkeypatch.setattr(demo, "DEMO_SAMPLES", 2)


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    return tmp_path_factory.mktemp("demo") / "demo_out"


def test_demo_runs_and_reports(small_demo, demo_out, realdata, monkeypatch, capsys):
    monkeypatch.setenv("PERCEPTION_REALDATA", str(realdata))
    assert demo.main(["--out", str(demo_out)]) == 0
    report = (demo_out / "REPORT.md").read_text()
    assert "FAILED" not in report and "skipped" not in report
    assert report.count("| ok |") >= 11
    assert (demo_out / "eval" / "metrics_summary.json").exists() and "NDS" in report
    import json

    assert json.loads((demo_out / "export" / "parity.json").read_text())["ok"] is True
    rep = json.loads((demo_out / "replay" / "report.json").read_text())
    assert rep["frames"]["emitted"] >= 5 and rep["messages"]["identity_holds"] is True
    assert "detections.mcap" in report and "Foxglove" in report
    assert (demo_out / "synth" / "bags" / "scene-0000").is_dir()
    pngs = sorted(p.name for p in demo_out.glob("*.png"))
    assert {"synthetic_radar_CAM_FRONT.png", "overlay_nuscenes_lidar_CAM_FRONT.png"} <= set(pngs)
    assert any(p.startswith("overlay_vod_radar") for p in pngs)
    for p in pngs:
        assert f"]({p})" in report
    # a second run reuses the dataset
    capsys.readouterr()
    assert demo.main(["--out", str(demo_out)]) == 0
    assert "reused" in (demo_out / "REPORT.md").read_text()


def test_demo_without_real_data_still_runs(small_demo, demo_out, monkeypatch):
    monkeypatch.setattr(demo, "find_realdata", lambda: None)
    assert demo.main(["--out", str(demo_out)]) == 0
    report = (demo_out / "REPORT.md").read_text()
    assert "| skipped |" in report and report.count("| ok |") == 7
