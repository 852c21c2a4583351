"""The depth metric of perception-test: golden AbsRel / delta<1.25 on a hand-built frame (all and inside GT boxes),
and the end-to-end report on generated data with lidar."""
import json

import numpy as np
import pytest

from perception.data.frame import Frame
from perception.eval.depth import DepthMeter, depth_line, points_in_boxes_mask
from perception.model.lift import DepthBins
from hand_camera import IMAGE_HW, forward_camera


def hand_frame() -> Frame:
    """One 64x176 camera looking along +x, lidar returns at 10 m ahead (cell row 2, col 5), inside a car box at
    (20, 2, 0) (cell 2, 4) and 70 m ahead (outside the bins: not scored)."""
    return Frame("hand", 0, np.eye(4), np.zeros((1,) + IMAGE_HW + (3,), np.uint8), forward_camera()[None],
                 np.array(["CAM_FRONT"]), np.ones(1, bool), np.zeros(1, np.int64), np.zeros((1, 8), np.float32),
                 np.array(["x", "y", "z", "rcs", "vx", "vy", "dt", "sensor"]), np.zeros(1, bool),
                 np.zeros((0, 2), np.int64), gt_boxes=np.array([[20, 2, 0, 2, 4, 1.5, 0, 0, 0]], np.float32),
                 gt_labels=np.zeros(1, np.int64), gt_names=np.array(["car"]), gt_attributes=np.array([""]),
                 gt_instance_tokens=np.array(["a"]), gt_future=np.zeros((1, 12, 2), np.float32),
                 gt_future_valid=np.zeros((1, 12), bool),
                 lidar_points=np.array([[10, 0, 0], [20, 2, 0], [70, -1, 0]], np.float32))


def test_depth_metric_golden():
    frame = hand_frame()
    assert points_in_boxes_mask(frame.lidar_points, frame.gt_boxes).tolist() == [False, True, False]
    pred = np.full((1, 4, 11), 30.0, np.float32)
    pred[0, 2, 5] = 12.0  # target 10: |12 - 10| / 10 = 0.2, ratio 1.2 < 1.25
    pred[0, 2, 4] = 15.0  # target 20: 0.25, ratio 1.333 (fails delta1)
    meter = DepthMeter(DepthBins(1.0, 60.0, 59))
    meter.add(meter.frame_sums(pred, frame))
    s = meter.summary()
    assert s["all"] == {"abs_rel": pytest.approx(0.225), "delta1": 0.5, "cells": 2}
    assert s["in_boxes"] == {"abs_rel": pytest.approx(0.25), "delta1": 0.0, "cells": 1}
    meter.add(meter.frame_sums(np.full((1, 4, 11), 20.0, np.float32), frame))  # second frame: 1.0 and 0.0
    s = meter.summary()
    assert s["frames"] == 2 and s["all"]["abs_rel"] == pytest.approx((0.2 + 0.25 + 1.0 + 0.0) / 4)
    assert s["all"]["delta1"] == pytest.approx(2 / 4) and s["in_boxes"]["delta1"] == pytest.approx(1 / 2)
    assert "AbsRel 0.362" in depth_line(s)
    assert s["per_camera"]["CAM_FRONT"] == s["all"]  # one camera: its own figures are the total


def test_perception_test_reports_depth_where_there_is_lidar(synth_root, small_ckpt, tmp_path, capsys):
    from perception.cli.test import main
    from perception.data.synthetic.generate import VERSION

    out = tmp_path / "t"
    assert main(["--checkpoint", str(small_ckpt), "--dataroot", str(synth_root), "--version", VERSION, "--split",
                 "synth_val", "--out", str(out), "--no-progress", "--max-samples", "3"]) == 0
    depth = json.loads((out / "depth_metrics.json").read_text())
    assert depth["frames"] == 3 and depth["all"]["cells"] > depth["in_boxes"]["cells"] > 0
    assert sum(c["cells"] for c in depth["per_camera"].values()) == depth["all"]["cells"]
    assert len(depth["per_camera"]) == 6
    assert 0 < depth["all"]["abs_rel"] < 10 and 0 <= depth["all"]["delta1"] <= 1
    assert json.loads((out / "summary.json").read_text())["depth"]["all"] == depth["all"]
    assert "Camera depth against lidar" in (out / "report.md").read_text()
    lines = capsys.readouterr().out.strip().splitlines()
    # the depth line, then the cold-start line (issue 22, every model), then the summary line last
    assert lines[-3].startswith("depth AbsRel") and lines[-2].startswith("cold start") and lines[-1].startswith("NDS")


def test_inspect_draws_predicted_depth_against_lidar(synth_root, small_ckpt, tmp_path, capsys):
    from perception.cli.inspect import main
    from perception.data.synthetic.generate import VERSION
    from small_model import REPO

    png = tmp_path / "f.png"
    base = ["--config", str(REPO / "configs" / "synthetic_tiny.yaml"), "--dataroot", str(synth_root), "--version",
            VERSION, "--split", "synth_val", "--index", "2", "--out", str(tmp_path / "f.npz"),
            "--set", "data.image_size=[64, 176]"]  # the small checkpoint's input size
    assert main(base + ["--png", str(png), "--checkpoint", str(small_ckpt)]) == 0, capsys.readouterr().err
    assert (tmp_path / "f_depth.png").stat().st_size > 50_000
    with pytest.raises(SystemExit) as exc:  # --checkpoint needs --png: a bad-argument exit
        main(base + ["--checkpoint", str(small_ckpt)])
    assert exc.value.code == 2
    assert main(base[:-2] + ["--png", str(png), "--checkpoint", str(small_ckpt)]) == 1  # another input size
    assert "data.image_size" in capsys.readouterr().err
