"""The demo cannot silently rot: its steps run here and its report says what it did."""
from perception.demo import main


def test_demo_runs_and_reports(tmp_path, realdata, monkeypatch):
    monkeypatch.setenv("PERCEPTION_REALDATA", str(realdata))
    out = tmp_path / "demo_out"
    assert main(["--out", str(out)]) == 0
    report = (out / "REPORT.md").read_text()
    assert "FAILED" not in report and "skipped" not in report
    assert report.count("| ok |") >= 6
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert "overlay_nuscenes_lidar_CAM_FRONT.png" in pngs and any(p.startswith("overlay_vod_radar") for p in pngs)
    for p in pngs:
        assert f"]({p})" in report


def test_demo_without_real_data_still_validates(tmp_path, monkeypatch):
    import perception.demo as demo

    monkeypatch.setattr(demo, "find_realdata", lambda: None)
    out = tmp_path / "o"
    assert main(["--out", str(out)]) == 0
    report = (out / "REPORT.md").read_text()
    assert "| skipped |" in report and report.count("| ok |") == 2
