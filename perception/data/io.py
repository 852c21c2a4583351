"""Vectorised sensor file readers (and the nuScenes radar PCD writer).

- nuScenes radar PCD v0.7 (binary, 18 fields), parsed with one ``np.frombuffer`` on a
  structured dtype built from the header (the devkit unpacks point by point).
- nuScenes lidar ``.pcd.bin`` (float32 x 5: x, y, z, intensity, ring).
- View-of-Delft radar ``.bin`` (float32 x 7: x, y, z, RCS, v_r, v_r_compensated, time).
- Images -> (H, W, 3) uint8 RGB.

Every reader raises ``SensorFileError`` naming the file and what is wrong.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

NUSCENES_RADAR_FIELDS = (
    "x", "y", "z", "dyn_prop", "id", "rcs", "vx", "vy", "vx_comp", "vy_comp", "is_quality_valid",
    "ambig_state", "x_rms", "y_rms", "invalid_state", "pdh0", "vx_rms", "vy_rms",
)
# PCD SIZE/TYPE of each nuScenes radar field (as in the real files).
NUSCENES_RADAR_TYPES = ("F", "F", "F", "I", "I", "F", "F", "F", "F", "F", "I", "I", "I", "I", "I", "I", "I", "I")
NUSCENES_RADAR_SIZES = (4, 4, 4, 1, 2, 4, 4, 4, 4, 4, 1, 1, 1, 1, 1, 1, 1, 1)
NUSCENES_LIDAR_FIELDS = ("x", "y", "z", "intensity", "ring")
VOD_RADAR_FIELDS = ("x", "y", "z", "rcs", "v_r", "v_r_compensated", "time")

_PCD_DTYPES = {("F", 2): "<f2", ("F", 4): "<f4", ("F", 8): "<f8",
               ("I", 1): "i1", ("I", 2): "<i2", ("I", 4): "<i4", ("I", 8): "<i8",
               ("U", 1): "u1", ("U", 2): "<u2", ("U", 4): "<u4", ("U", 8): "<u8"}
_PCD_HEADER_KEYS = ("VERSION", "FIELDS", "SIZE", "TYPE", "COUNT", "WIDTH", "HEIGHT", "VIEWPOINT", "POINTS", "DATA")


class SensorFileError(ValueError):
    """A sensor file cannot be used. The message names the file and what is wrong."""

    def __init__(self, path: str | Path, problem: str, hint: str = ""):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}" + (f"; {hint}" if hint else ""))


@dataclass(frozen=True, eq=False)
class PointCloud:
    """points: (N, F) float32, one column per entry of ``fields``."""

    points: np.ndarray
    fields: tuple[str, ...]

    def __post_init__(self) -> None:
        assert self.points.ndim == 2 and self.points.shape[1] == len(self.fields), \
            f"points {self.points.shape} do not match {len(self.fields)} fields"

    def __len__(self) -> int:
        return self.points.shape[0]

    def column(self, name: str) -> np.ndarray:
        return self.points[:, self.fields.index(name)]

    def columns(self, names: Sequence[str]) -> np.ndarray:
        return self.points[:, [self.fields.index(n) for n in names]]

    @property
    def xyz(self) -> np.ndarray:
        return self.columns(("x", "y", "z"))

    def select(self, mask: np.ndarray) -> "PointCloud":
        return PointCloud(self.points[mask], self.fields)


# ---------------------------------------------------------------------------
# nuScenes radar PCD
# ---------------------------------------------------------------------------


def _parse_pcd_header(path: Path, raw: bytes) -> tuple[dict[str, list[str]], int]:
    header: dict[str, list[str]] = {}
    pos = 0
    while True:
        end = raw.find(b"\n", pos)
        if end < 0:
            raise SensorFileError(path, "PCD header has no 'DATA' line", "is this a PCD file?")
        try:
            line = raw[pos:end].decode("ascii").strip()
        except UnicodeDecodeError:
            raise SensorFileError(path, f"PCD header is not ASCII at byte {pos}") from None
        pos = end + 1
        if not line or line.startswith("#"):
            continue
        key, *values = line.split()
        header[key] = values
        if key == "DATA":
            return header, pos
        if key not in _PCD_HEADER_KEYS:
            raise SensorFileError(path, f"PCD header has an unknown key '{key}'")


def read_radar_records(path: str | Path) -> np.ndarray:
    """Read a PCD's points as a structured array (one named field per PCD field, in the file's own types).

    The header of a file is parsed once per distinct header text (sensor logs repeat it), so reading a
    sweep costs little more than the file read itself."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise SensorFileError(path, "file does not exist") from None
    end = raw.find(b"\nDATA ")
    end = raw.find(b"\n", end + 1) + 1 if end >= 0 else -1
    key = raw[:end] if end > 0 else None
    layout = _HEADER_CACHE.get(key) if key is not None else None
    if layout is None:
        layout = _layout_from_header(Path(path), raw)
        if key is not None and layout[3] == "binary":
            if len(_HEADER_CACHE) > 256:
                _HEADER_CACHE.clear()
            _HEADER_CACHE[key] = layout
    dtype, n_points, offset, kind = layout
    if kind == "binary":
        need = n_points * dtype.itemsize
        if len(raw) - offset < need:
            raise SensorFileError(path, f"truncated: header promises {n_points} points ({need} bytes) but only "
                                        f"{len(raw) - offset} bytes follow", "re-copy or re-export the file")
        return np.frombuffer(raw, dtype=dtype, count=n_points, offset=offset)
    lines = raw[offset:].decode("ascii", errors="replace").split("\n")
    rows = [ln.split() for ln in lines if ln.strip()]
    if len(rows) < n_points or any(len(r) != len(dtype.names) for r in rows[:n_points]):
        raise SensorFileError(path, f"ascii PCD has {len(rows)} rows, expected {n_points} of {len(dtype.names)} values")
    try:
        return np.array([tuple(float(v) for v in r) for r in rows[:n_points]], dtype=[(f, "<f8") for f in dtype.names])
    except ValueError:
        line, value = next((i, v) for i, r in enumerate(rows[:n_points]) for v in r if not _is_float(v))
        raise SensorFileError(path, f"ascii PCD data row {line + 1} holds '{value[:40]}', not a number",
                              "re-export the file") from None


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


_HEADER_CACHE: dict[bytes, tuple[np.dtype, int, int, str]] = {}
_DTYPES: dict[tuple, np.dtype] = {}


def _layout_from_header(path: Path, raw: bytes) -> tuple[np.dtype, int, int, str]:
    """(record dtype, number of points, byte offset of the data, 'binary'|'ascii') from a PCD header."""
    header, offset = _parse_pcd_header(path, raw)
    for key in ("FIELDS", "SIZE", "TYPE", "WIDTH", "HEIGHT", "DATA"):
        if key not in header:
            raise SensorFileError(path, f"PCD header lacks '{key}'")
    fields, sizes, types = header["FIELDS"], header["SIZE"], header["TYPE"]
    counts = header.get("COUNT", ["1"] * len(fields))
    if not (len(fields) == len(sizes) == len(types) == len(counts)):
        raise SensorFileError(path, f"PCD header FIELDS/SIZE/TYPE/COUNT lengths differ "
                                    f"({len(fields)}/{len(sizes)}/{len(types)}/{len(counts)})")
    if any(c != "1" for c in counts):
        raise SensorFileError(path, f"PCD COUNT {counts} is not supported (every field must have COUNT 1)")
    try:
        width, height = int(header["WIDTH"][0]), int(header["HEIGHT"][0])
        n_points = int(header.get("POINTS", [width * height])[0])
        layout_key = tuple(zip(fields, types, sizes))
        if layout_key not in _DTYPES:  # one dtype object per field layout: sweeps can be compared with `is`
            _DTYPES[layout_key] = np.dtype([(f, _PCD_DTYPES[(t, int(s))]) for f, t, s in layout_key])
        dtype = _DTYPES[layout_key]
    except (KeyError, ValueError):
        raise SensorFileError(path, f"PCD header has an unsupported SIZE/TYPE/WIDTH: "
                                    f"SIZE={sizes} TYPE={types} WIDTH={header['WIDTH']}") from None
    if n_points != width * height:
        raise SensorFileError(path, f"PCD POINTS={n_points} differs from WIDTH*HEIGHT={width * height}")
    kind = header["DATA"][0] if header["DATA"] else ""
    if kind not in ("binary", "ascii"):
        raise SensorFileError(path, f"PCD DATA '{kind}' is not supported", "use binary or ascii")
    return dtype, n_points, offset, kind


def records_to_matrix(rec: np.ndarray) -> np.ndarray:
    """Structured PCD records -> (N, F) float32 (every field is exact in float32 for nuScenes radar types)."""
    points = np.empty((rec.shape[0], len(rec.dtype.names)), dtype=np.float32)
    for i, f in enumerate(rec.dtype.names):
        points[:, i] = rec[f]
    return points


def read_radar_pcd(path: str | Path) -> PointCloud:
    """Read a nuScenes radar PCD (any field set; binary or ascii). No filtering: see ``RadarFilter``."""
    rec = read_radar_records(path)
    return PointCloud(records_to_matrix(rec), tuple(rec.dtype.names))


def write_radar_pcd(path: str | Path, points: np.ndarray, fields: Sequence[str] = NUSCENES_RADAR_FIELDS,
                    types: Sequence[str] = NUSCENES_RADAR_TYPES, sizes: Sequence[int] = NUSCENES_RADAR_SIZES,
                    padding: int = 1) -> None:
    """Write a binary PCD v0.7 as nuScenes radar files are: header, packed records, then ``padding`` bytes
    (real files have bytes after the data, and the devkit reader needs at least one)."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != len(fields):
        raise ValueError(f"points must be (N, {len(fields)}), got {points.shape}")
    dtype = np.dtype([(f, _PCD_DTYPES[(t, int(s))]) for f, t, s in zip(fields, types, sizes)])
    rec = np.empty(points.shape[0], dtype=dtype)
    for i, f in enumerate(fields):
        col = points[:, i]
        rec[f] = np.round(col) if dtype[f].kind in "iu" else col
    n = points.shape[0]
    header = (
        "# .PCD v0.7 - Point Cloud Data file format\n"
        "VERSION 0.7\n"
        f"FIELDS {' '.join(fields)}\n"
        f"SIZE {' '.join(str(s) for s in sizes)}\n"
        f"TYPE {' '.join(types)}\n"
        f"COUNT {' '.join('1' for _ in fields)}\n"
        f"WIDTH {n}\n"
        "HEIGHT 1\n"
        "VIEWPOINT 0 0 0 1 0 0 0\n"
        f"POINTS {n}\n"
        "DATA binary\n"
    )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(rec.tobytes())
        f.write(b"\x00" * padding)


@dataclass(frozen=True)
class RadarFilter:
    """Which nuScenes radar returns to keep, by state field. ``None`` keeps every value of that field.

    The devkit's defaults (``DEVKIT_DEFAULT``) keep dyn_prop 0-6 (dropping 7, "stopped"),
    invalid_state 0 and ambig_state 3. A fusion model may want stationary returns too:
    ``KEEP_ALL`` keeps everything. Points with a non-finite x, y or z are always dropped.
    """

    dyn_prop: tuple[int, ...] | None = tuple(range(7))
    invalid_state: tuple[int, ...] | None = (0,)
    ambig_state: tuple[int, ...] | None = (3,)

    def mask(self, cloud: PointCloud) -> np.ndarray:
        """(N,) bool keep-mask."""
        keep = np.all(np.isfinite(cloud.xyz), axis=1)
        for name in ("invalid_state", "dyn_prop", "ambig_state"):
            allowed: Iterable[int] | None = getattr(self, name)
            if allowed is not None and name in cloud.fields:
                keep &= np.isin(cloud.column(name), np.asarray(list(allowed), dtype=np.float32))
        return keep

    def apply(self, cloud: PointCloud) -> PointCloud:
        return cloud.select(self.mask(cloud))


DEVKIT_DEFAULT = RadarFilter()
KEEP_ALL = RadarFilter(None, None, None)


# ---------------------------------------------------------------------------
# Flat float32 binaries
# ---------------------------------------------------------------------------


def _read_float32_records(path: str | Path, fields: tuple[str, ...], what: str) -> PointCloud:
    path = Path(path)
    try:
        raw = np.fromfile(path, dtype="<f4")
    except FileNotFoundError:
        raise SensorFileError(path, "file does not exist") from None
    if raw.size % len(fields) != 0:
        raise SensorFileError(path, f"{raw.size * 4} bytes is not a whole number of {what} records "
                                    f"({len(fields)} float32 = {len(fields) * 4} bytes each): truncated or another format")
    return PointCloud(raw.reshape(-1, len(fields)).astype(np.float32, copy=False), fields)


def read_lidar_bin(path: str | Path) -> PointCloud:
    """nuScenes lidar ``.pcd.bin``: float32 x 5 (x, y, z, intensity, ring) in the lidar frame."""
    return _read_float32_records(path, NUSCENES_LIDAR_FIELDS, "nuScenes lidar")


def read_vod_radar(path: str | Path) -> PointCloud:
    """View-of-Delft radar ``.bin``: float32 x 7 (x, y, z, rcs, v_r, v_r_compensated, time), radar frame."""
    return _read_float32_records(path, VOD_RADAR_FIELDS, "View-of-Delft radar")


def read_points(path: str | Path, fmt: str = "auto") -> PointCloud:
    """Read a point file by format: 'nuscenes-radar' (.pcd), 'nuscenes-lidar' (.pcd.bin), 'vod-radar' (.bin,
    7 floats), 'kitti-lidar' (.bin, 4 floats), 'npy' ((N, >=3) array, x y z first). 'auto' decides by
    suffix and refuses a plain ``.bin`` (two formats share it)."""
    path = Path(path)
    name = path.name
    if fmt == "auto":
        if name.endswith(".pcd.bin"):
            fmt = "nuscenes-lidar"
        elif name.endswith(".pcd"):
            fmt = "nuscenes-radar"
        elif name.endswith(".npy"):
            fmt = "npy"
        else:
            raise SensorFileError(path, "cannot tell the point format from the name",
                                  "pass --points-format vod-radar|kitti-lidar|nuscenes-lidar|nuscenes-radar|npy")
    if fmt == "nuscenes-radar":
        return read_radar_pcd(path)
    if fmt == "nuscenes-lidar":
        return read_lidar_bin(path)
    if fmt == "vod-radar":
        return read_vod_radar(path)
    if fmt == "kitti-lidar":
        return _read_float32_records(path, ("x", "y", "z", "intensity"), "KITTI lidar")
    if fmt == "npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise SensorFileError(path, f"not a readable .npy array ({err})") from None
        if arr.ndim != 2 or arr.shape[1] < 3:
            raise SensorFileError(path, f"array has shape {arr.shape}; expected (N, 3) or more columns (x, y, z first)")
        names = ("x", "y", "z") + tuple(f"f{i}" for i in range(3, arr.shape[1]))
        return PointCloud(arr.astype(np.float32), names)
    raise SensorFileError(path, f"unknown point format '{fmt}'",
                          "use vod-radar, kitti-lidar, nuscenes-lidar, nuscenes-radar or npy")


# ---------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB. Corrupt or truncated files raise SensorFileError."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()  # decode now: truncation surfaces here, not later
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise SensorFileError(path, "file does not exist") from None
    except UnidentifiedImageError:
        raise SensorFileError(path, "is not a readable image (unknown or corrupt format)") from None
    except OSError as err:
        raise SensorFileError(path, f"image cannot be decoded ({err})", "the file is probably truncated") from None


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the image header, without decoding."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise SensorFileError(path, "file does not exist") from None
    except (UnidentifiedImageError, OSError):
        raise SensorFileError(path, "is not a readable image") from None
