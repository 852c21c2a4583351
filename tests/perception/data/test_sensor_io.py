import numpy as np
import pytest
from numpy.testing import assert_array_equal

from perception.data.io import (
    DEVKIT_DEFAULT,
    KEEP_ALL,
    NUSCENES_RADAR_FIELDS,
    RadarFilter,
    SensorFileError,
    read_image,
    read_lidar_bin,
    read_points,
    read_radar_pcd,
    read_vod_radar,
    write_radar_pcd,
)


def devkit_read(path, filtered: bool) -> np.ndarray:
    """(N, 18) as the devkit reads it (its filters are class-level state: set and restore)."""
    from nuscenes.utils.data_classes import RadarPointCloud

    if filtered:
        RadarPointCloud.default_filters()
    else:
        RadarPointCloud.disable_filters()
    try:
        return RadarPointCloud.from_file(str(path)).points.T
    finally:
        RadarPointCloud.default_filters()


def random_radar_points(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pts = np.zeros((n, 18), np.float32)
    pts[:, :3] = rng.uniform(-80, 80, (n, 3))
    pts[:, 3] = rng.integers(0, 8, n)  # dyn_prop
    pts[:, 4] = rng.integers(0, 2000, n)  # id (int16)
    pts[:, 5:10] = rng.normal(0, 5, (n, 5))
    pts[:, 10] = rng.integers(0, 2, n)
    pts[:, 11] = rng.integers(0, 5, n)  # ambig_state
    pts[:, 12:14] = rng.integers(0, 32, (n, 2))
    pts[:, 14] = rng.integers(0, 18, n)  # invalid_state
    pts[:, 15:18] = rng.integers(0, 32, (n, 3))
    return pts


@pytest.mark.realdata
def test_real_radar_pcds_parse_identically_to_devkit(realdata):
    files = sorted((realdata / "nuscenes_radar").glob("*.pcd"))
    assert len(files) == 2
    for path in files:
        cloud = read_radar_pcd(path)
        assert cloud.fields == NUSCENES_RADAR_FIELDS and len(cloud) == 125
        assert_array_equal(cloud.points, devkit_read(path, filtered=False).astype(np.float32))
        kept = DEVKIT_DEFAULT.apply(cloud).points
        assert 60 <= len(kept) <= 80
        assert_array_equal(kept, devkit_read(path, filtered=True).astype(np.float32))


def test_writer_round_trips_through_devkit(tmp_path):
    pts = random_radar_points(300)
    path = tmp_path / "RADAR_FRONT__1.pcd"
    write_radar_pcd(path, pts)
    ours = read_radar_pcd(path)
    assert_array_equal(ours.points, pts)
    assert_array_equal(ours.points, devkit_read(path, filtered=False).astype(np.float32))
    # filters: ours equal the devkit's on every combination of states
    assert_array_equal(DEVKIT_DEFAULT.apply(ours).points, devkit_read(path, filtered=True).astype(np.float32))
    assert len(KEEP_ALL.apply(ours)) == 300
    moving_only = RadarFilter(dyn_prop=(0, 2, 6), invalid_state=None, ambig_state=None)
    assert set(np.unique(moving_only.apply(ours).column("dyn_prop"))) <= {0.0, 2.0, 6.0}


def test_filter_equals_slow_reference():
    from perception.data.io import PointCloud

    cloud = PointCloud(random_radar_points(500, seed=3), NUSCENES_RADAR_FIELDS)
    cloud.points[5, 0] = np.nan
    ref = [i for i, p in enumerate(cloud.points)
           if np.all(np.isfinite(p[:3])) and p[14] in (0,) and p[3] in range(7) and p[11] in (3,)]
    assert np.flatnonzero(DEVKIT_DEFAULT.mask(cloud)).tolist() == ref


def test_truncated_and_malformed_pcd(tmp_path):
    path = tmp_path / "r.pcd"
    write_radar_pcd(path, random_radar_points(50), padding=0)
    raw = path.read_bytes()
    path.write_bytes(raw[:-100])
    with pytest.raises(SensorFileError, match=r"r.pcd: truncated: header promises 50 points"):
        read_radar_pcd(path)
    path.write_bytes(b"not a pcd at all")
    with pytest.raises(SensorFileError, match="no 'DATA' line"):
        read_radar_pcd(path)
    path.write_bytes(raw.replace(b"DATA binary", b"DATA binary_compressed"))
    with pytest.raises(SensorFileError, match="binary_compressed' is not supported"):
        read_radar_pcd(path)
    with pytest.raises(SensorFileError, match="does not exist"):
        read_radar_pcd(tmp_path / "missing.pcd")


def test_nan_cloud_is_read_and_filtered(tmp_path):
    pts = random_radar_points(10)
    pts[:, :3] = np.nan
    path = tmp_path / "nan.pcd"
    write_radar_pcd(path, pts)
    cloud = read_radar_pcd(path)
    assert len(cloud) == 10 and np.isnan(cloud.xyz).all()
    assert len(KEEP_ALL.apply(cloud)) == 0  # non-finite positions never reach the model


@pytest.mark.realdata
def test_real_lidar_and_vod_radar(realdata):
    lidar = read_lidar_bin(next((realdata / "nuscenes_demo").glob("*.pcd.bin")))
    assert lidar.points.shape == (34688, 5)
    assert 0 <= lidar.column("ring").min() and lidar.column("ring").max() <= 31
    for path in sorted((realdata / "vod" / "radar" / "training" / "velodyne").glob("*.bin")):
        cloud = read_vod_radar(path)
        assert 242 <= len(cloud) <= 352
        assert_array_equal(cloud.points, np.fromfile(path, np.float32).reshape(-1, 7))
        azimuth = np.degrees(np.arctan2(cloud.column("y"), cloud.column("x")))
        assert np.all(np.abs(azimuth) < 91)  # a forward-looking radar: the front half-plane


def test_flat_binary_errors(tmp_path):
    p = tmp_path / "x.pcd.bin"
    np.arange(11, dtype=np.float32).tofile(p)
    with pytest.raises(SensorFileError, match=r"x.pcd.bin: 44 bytes is not a whole number of nuScenes lidar records"):
        read_lidar_bin(p)
    q = tmp_path / "x.bin"
    np.zeros(14, np.float32).tofile(q)
    with pytest.raises(SensorFileError, match="pass --points-format"):
        read_points(q)
    assert len(read_points(q, "vod-radar")) == 2


def test_images(tmp_path):
    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    assert_array_equal(read_image(tmp_path / "a.png"), rgb)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.png")
    assert read_image(tmp_path / "gray.png").shape == (30, 40, 3)
    Image.fromarray(rgb).save(tmp_path / "b.jpg", quality=95)
    data = (tmp_path / "b.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(SensorFileError, match=r"trunc.jpg: image cannot be decoded"):
        read_image(tmp_path / "trunc.jpg")
    (tmp_path / "junk.jpg").write_bytes(b"\x00" * 100)
    with pytest.raises(SensorFileError, match=r"junk.jpg: is not a readable image"):
        read_image(tmp_path / "junk.jpg")
