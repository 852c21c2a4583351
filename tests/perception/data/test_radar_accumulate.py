"""The vectorised radar path equals the one-sweep-at-a-time reference (read, filter, sync), on written random
sweeps (cartesian and radial units, mixed layouts, NaNs, a truncated file) and on the real nuScenes files."""
import shutil

import numpy as np
import pytest

from calibration.rig import Radar
from calibration.sync import PoseStream
from calibration.transforms import make_transform, yaw_to_quaternion
from perception.config import RADAR_POINT_FIELDS
from perception.data.io import DEVKIT_DEFAULT, KEEP_ALL, RadarFilter, write_radar_pcd
from perception.data.radar import SweepRef, accumulate
from reference.data import accumulate_reference

T0 = 10_000_000


def _poses() -> PoseStream:
    ts = np.arange(T0 - 1_000_000, T0 + 200_001, 50_000)
    return PoseStream(ts, np.stack([make_transform(yaw_to_quaternion(0.2 * (t - T0) * 1e-6),
                                                   [8.0 * (t - T0) * 1e-6, 0.5 * ((t - T0) * 1e-6) ** 2, 0.0])
                                    for t in ts]))


def _random_sweeps(tmp_path, rng, n_radars=3, n_sweeps=4):
    refs = []
    for r in range(n_radars):
        radial = r == 2
        radar = Radar(f"RADAR_{r}", make_transform(yaw_to_quaternion(rng.uniform(-3, 3)), rng.normal(size=3)),
                      "radial" if radial else "cartesian")
        for k in range(n_sweeps):
            n = int(rng.integers(0, 120))
            if radial:  # View-of-Delft layout: 7 float fields
                pts = rng.normal(0, 20, (n, 7)).astype(np.float32)
                fields, types, sizes = ("x", "y", "z", "rcs", "v_r", "v_r_compensated", "time"), "FFFFFFF", [4] * 7
            else:
                pts = np.zeros((n, 18), np.float32)
                pts[:, :3] = rng.normal(0, 30, (n, 3))
                pts[:, [3, 11, 14]] = rng.integers(0, 8, (n, 3))
                pts[:, 5:10] = rng.normal(0, 5, (n, 5))
                fields = types = sizes = None
            if n and k == 1:
                pts[0, 0] = np.nan
            path = tmp_path / f"r{r}_{k}.pcd"
            if fields is None:
                write_radar_pcd(path, pts)
            else:
                write_radar_pcd(path, pts, fields, list(types), sizes)
            refs.append(SweepRef(radar, r, path, T0 - k * 76_923 + int(rng.integers(-3000, 3000))))
    return refs


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("flt", [KEEP_ALL, DEVKIT_DEFAULT, RadarFilter((0, 2, 6), (0, 4), None)])
@pytest.mark.parametrize("sync", [True, False])
def test_fast_equals_reference(tmp_path, seed, flt, sync):
    rng = np.random.default_rng(seed)
    refs = _random_sweeps(tmp_path, rng)
    if seed == 3:  # a truncated file: skipped by both, with the same report
        raw = refs[0].path.read_bytes()
        refs[0].path.write_bytes(raw[: len(raw) - 60])
    poses = _poses()
    fast = accumulate(refs, T0, poses, flt, RADAR_POINT_FIELDS, 400, sync)
    slow = accumulate_reference(refs, T0, poses, flt, RADAR_POINT_FIELDS, 400, sync)
    np.testing.assert_array_equal(fast[1], slow[1])
    np.testing.assert_allclose(fast[0], slow[0], rtol=1e-5, atol=1e-4)
    assert sorted(fast[2]) == sorted(slow[2])
    if seed == 3:
        assert any("truncated" in i for i in fast[2])


@pytest.mark.realdata
def test_real_files_fast_equals_reference(realdata, tmp_path):
    files = sorted((realdata / "nuscenes_radar").glob("*.pcd"))
    refs = []
    for i, f in enumerate(files):
        shutil.copy(f, tmp_path / f.name)
        radar = Radar(f"RADAR_{i}", make_transform(yaw_to_quaternion(np.pi * i), [-0.5, 0.6 * (1 - 2 * i), 0.5]))
        refs.append(SweepRef(radar, i, tmp_path / f.name, T0 - 40_000 * (i + 1)))
    for flt in (KEEP_ALL, DEVKIT_DEFAULT):
        fast = accumulate(refs, T0, _poses(), flt, RADAR_POINT_FIELDS, 300)
        slow = accumulate_reference(refs, T0, _poses(), flt, RADAR_POINT_FIELDS, 300)
        np.testing.assert_array_equal(fast[1], slow[1])
        np.testing.assert_allclose(fast[0], slow[0], rtol=1e-5, atol=1e-4)
        assert fast[1].sum() == (250 if flt is KEEP_ALL else 69 + 70)
