"""benchmarks/bench_trajectory_modes.py on a hand-made residual distribution with known answers, and the residual
extraction on the synthetic fixture world (constant velocity subtracted in the heading frame)."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks import bench_trajectory_modes as B


def _split(n: int) -> tuple[np.ndarray, np.ndarray]:
    """n agents at 5 m/s: 40 % stop short (residual -10 m along x at every step), 30 % drift 0.5 m left, 30 %
    0.5 m right (residuals constant over the 12 steps, heading frame)."""
    k_stop, k_side = int(0.4 * n), int(0.3 * n)
    r = np.zeros((n, 12, 2))
    r[:k_stop, :, 0] = -10.0
    r[k_stop:k_stop + k_side, :, 1] = 0.5
    r[k_stop + k_side:, :, 1] = -0.5
    return r, np.full(n, 5.0)


def test_rules_on_a_known_distribution():
    train, val = _split(100), _split(50)
    wta = B.evaluate(train, val, 3, median_mode=False)
    # three exact clusters; the winner target ranks 'stop' first (40 % vs 30 % + 30 %): 0.6 x |(10, 0.5)| m
    assert wta["minADE3"] == pytest.approx(0.0, abs=1e-9)
    assert wta["winner"] == pytest.approx(0.6 * np.hypot(10, 0.5), rel=1e-6)
    assert wta["constant velocity"] == pytest.approx(0.4 * 10 + 0.6 * 0.5, rel=1e-6)
    # a 'go' mode costs 0.4 |(10, 0.5)| + 0.3 x 1 m in expectation
    assert wta["smallest expected ADE"] == pytest.approx(0.4 * np.hypot(10, 0.5) + 0.3, rel=1e-6)
    med = B.evaluate(train, val, 3, median_mode=True)
    # the median residual is 0 (60 % have x = 0, y splits evenly): the median mode is constant velocity, and a soft
    # target with a temperature large against 10 m ranks it first
    assert med["smallest expected ADE"] == pytest.approx(med["constant velocity"], rel=1e-6)
    assert med["soft T=20 m"] == pytest.approx(med["constant velocity"], rel=1e-6)


def test_residuals_of_the_fixture_world(synth_root):
    from perception.data.nuscenes import load_tables, split_scene_names
    from perception.data.synthetic.generate import VERSION

    nusc = load_tables(synth_root, VERSION)
    r, speed = B.residuals(nusc, split_scene_names(synth_root, VERSION, "synth_train"), "car")
    assert r.shape[1:] == (12, 2) and len(r) == len(speed) and len(r) > 5
    # constant velocity removes most of the motion: residual ADE well below the distance travelled
    travelled = speed * 0.5 * np.arange(1, 13).mean()
    moving = speed > 2.0
    assert moving.sum() > 2
    assert np.median(np.linalg.norm(r[moving], axis=-1).mean(-1) / travelled[moving]) < 0.2
