"""Forecasting metrics against hand-computed values, including unmatched GT, low scores and false positives."""
import numpy as np
import pytest

from perception.eval.trajectory import SampleForecast, forecasting_metrics

T = 12


def case() -> SampleForecast:
    t = np.arange(1, T + 1, dtype=float)
    gt_xy = np.array([[0.0, 0.0], [30.0, 0.0], [10.0, 10.0]])
    gt_future = np.zeros((3, T, 2))
    gt_future[0] = np.stack([t, np.zeros(T)], 1)  # car A drives +x at 2 m/s
    gt_future[1] = np.stack([30 + t, np.zeros(T)], 1)  # car B
    gt_future[2] = np.stack([np.full(T, 10.0), 10 + 0.5 * t], 1)  # pedestrian C, only 4 future steps annotated
    valid = np.ones((3, T), bool)
    valid[2, 4:] = False
    traj = np.zeros((4, 2, T, 2))
    traj[0, 0] = gt_future[0] + [0.0, 0.5]  # mode 0: 0.5 m off everywhere, but the less probable mode
    traj[0, 1] = 0.0  # mode 1 (probable): stays at the origin
    traj[1] = 100.0
    traj[2, 0] = gt_future[2]
    traj[2, 1] = 500.0
    return SampleForecast(
        pred_xy=np.array([[0.5, 0.0], [50.0, 50.0], [10.0, 11.5], [30.0, 3.0]]),
        pred_names=np.array(["car", "car", "pedestrian", "car"]),
        pred_scores=np.array([0.9, 0.8, 0.6, 0.2]),
        pred_traj=traj, pred_mode_probs=np.array([[0.3, 0.7], [0.5, 0.5], [1.0, 0.0], [0.5, 0.5]]),
        pred_vel=np.array([[2.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 0.0]]),
        gt_xy=gt_xy, gt_names=np.array(["car", "car", "pedestrian"]), gt_future=gt_future, gt_future_valid=valid)


def test_hand_computed_values():
    m = forecasting_metrics([case()])
    car = m["car"]
    # A matched by p0 (0.5 m); B unmatched (p3 is below the 0.3 score threshold); p1 is a false positive
    assert (car["matched"], car["gt_agents"], car["false_positives"]) == (1, 2, 1)
    assert car["minADE_1"] == pytest.approx(6.5)  # errors 1..12 for the probable mode
    assert car["minFDE_1"] == pytest.approx(12.0) and car["MR_1"] == 1.0
    assert car["minADE_6"] == pytest.approx(0.5) and car["minFDE_6"] == pytest.approx(0.5) and car["MR_6"] == 0.0
    assert car["EPA"] == pytest.approx((1 - 0.5 * 1) / 2)
    ped = m["pedestrian"]
    assert ped["minADE_1"] == 0.0 and ped["minFDE_1"] == 0.0 and ped["EPA"] == 1.0
    everything = m["all"]
    assert everything["minADE_1"] == pytest.approx((6.5 + 0.0) / 2)
    assert everything["MR_1"] == pytest.approx(0.5)
    assert everything["EPA"] == pytest.approx((2 - 0.5 * 1) / 3)


def test_constant_velocity_baseline():
    m = forecasting_metrics([case()], constant_velocity_baseline=True)
    # p0 at (0.5, 0) with 2 m/s along x: every step 0.5 m from the truth
    assert m["car"]["minADE_1"] == pytest.approx(0.5) and m["car"]["minFDE_1"] == pytest.approx(0.5)
    # the pedestrian forecast at its true 1 m/s from (10, 11.5): 1.5 m off at every annotated step
    assert m["pedestrian"]["minADE_1"] == pytest.approx(1.5)


def test_no_detections_gives_zero_epa_and_nan_errors():
    c = case()
    c.pred_scores[:] = 0.0
    m = forecasting_metrics([c])
    assert m["all"]["EPA"] == 0.0 and np.isnan(m["all"]["minADE_6"]) and m["all"]["matched"] == 0
