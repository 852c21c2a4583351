"""Radar points -> fixed-shape BEV pillars, on the CPU before the network (numba).

The radar encoder (``perception/model/radar/encoder.py``) takes points already grouped per pillar, so that the
exported graph reduces over a pillar's points with a max along an axis and places pillars on the canvas with a
scatter *without* reduction (``scatter_reduce`` exports as ScatterElements with reduction, which the legacy
exporter writes invalidly and TensorRT does not run). Grouping is data-dependent, so it happens here, on the
CPU, with fixed output shapes ``(max_pillars, max_points, F + 2)``.

``pillarize`` is the fast path (vectorised numpy + numba kernels). ``tests/reference/data.py`` has the same
contract written as plain Python loops (``pillarize_reference``; the two agree element for element, bit for bit)
and ``scatter_reference``, the loop the model's torch scatter is checked against.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit


@dataclass(frozen=True)
class PillarGrid:
    """A BEV grid of square cells in the ego frame.

    x_range: (min, max) metres along ego x (forward); y_range: (min, max) metres along ego y (left);
    resolution: metres per cell side. Row ``r`` covers x in ``[x_range[0] + r * res, x_range[0] + (r + 1) * res)``,
    column ``c`` likewise along y. Each extent must be a whole number of cells.
    """

    x_range: tuple[float, float]
    y_range: tuple[float, float]
    resolution: float

    def __post_init__(self) -> None:
        try:
            res = float(self.resolution)
        except (TypeError, ValueError):
            raise ValueError(f"PillarGrid.resolution must be a number of metres, got {self.resolution!r}") from None
        if not (math.isfinite(res) and res > 0):
            raise ValueError(f"PillarGrid.resolution must be a finite positive number of metres, got {res}")
        object.__setattr__(self, "resolution", res)
        for name in ("x_range", "y_range"):
            value = getattr(self, name)
            try:
                lo, hi = (float(v) for v in value)
            except (TypeError, ValueError):
                raise ValueError(f"PillarGrid.{name} must be two numbers (min, max) in metres, got {value!r}") from None
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"PillarGrid.{name} must be finite with min < max, got ({lo}, {hi})")
            cells = (hi - lo) / res
            if abs(cells - round(cells)) > 1e-6 * max(1.0, cells):
                raise ValueError(f"PillarGrid.{name} extent {hi - lo} m is not a whole number of {res} m cells "
                                 f"({cells:.6g}); adjust the range or the resolution")
            object.__setattr__(self, name, (lo, hi))

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W): cells along x (rows), cells along y (columns)."""
        return (round((self.x_range[1] - self.x_range[0]) / self.resolution),
                round((self.y_range[1] - self.y_range[0]) / self.resolution))

    @property
    def num_cells(self) -> int:
        """H * W, which is also the dummy cell index that padded pillars point to."""
        h, w = self.shape
        return h * w


@dataclass(frozen=True, eq=False)
class Pillars:
    """Radar points grouped per BEV pillar, fixed shapes (F = number of input fields).

    features: (max_pillars, max_points, F + 2) float32: each point's F input fields (ego frame, units of the
        input) followed by its offset from the pillar centre (dx, dy) in metres; zeros where padded.
    point_mask: (max_pillars, max_points) bool, True where ``features`` holds a point.
    cells: (max_pillars,) int64 flat cell index ``row * W + col`` (row along x, col along y), ascending;
        padded pillars hold the dummy index H * W (one past the last real cell).
    pillar_mask: (max_pillars,) bool, True for the real pillars (they come first).
    num_dropped_points: valid in-grid points that did not fit (pillar full or too many occupied cells).
    num_out_of_grid: valid finite points outside the grid.
    """

    features: np.ndarray
    point_mask: np.ndarray
    cells: np.ndarray
    pillar_mask: np.ndarray
    num_dropped_points: int
    num_out_of_grid: int

    def __post_init__(self) -> None:
        n_pillars, n_points = self.point_mask.shape
        assert self.features.dtype == np.float32 and self.features.shape[:2] == (n_pillars, n_points), \
            f"features {self.features.shape} {self.features.dtype} do not match point_mask {self.point_mask.shape}"
        assert self.cells.shape == (n_pillars,) and self.cells.dtype == np.int64, f"cells {self.cells.shape}"
        assert self.pillar_mask.shape == (n_pillars,) and self.pillar_mask.dtype == bool, \
            f"pillar_mask {self.pillar_mask.shape}"

    @property
    def num_pillars(self) -> int:
        return int(self.pillar_mask.sum())

    @property
    def num_points(self) -> int:
        """Points kept in the pillars."""
        return int(self.point_mask.sum())


def check_pillar_inputs(points: np.ndarray, valid: np.ndarray, fields: Sequence[str], grid: PillarGrid,
                  max_pillars: int, max_points: int) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Validate the arguments shared by both implementations; returns C-contiguous points, valid and fields."""
    if not isinstance(points, np.ndarray) or points.ndim != 2 or points.dtype != np.float32:
        desc = f"shape {points.shape} dtype {points.dtype}" if isinstance(points, np.ndarray) else type(points).__name__
        raise ValueError(f"points must be a (P, F) float32 array, got {desc}; cast with points.astype(np.float32)")
    fields = tuple(fields) if not isinstance(fields, str) else (fields,)
    if len(fields) != points.shape[1]:
        raise ValueError(f"fields has {len(fields)} names {fields} but points has {points.shape[1]} columns")
    if len(set(fields)) != len(fields):
        raise ValueError(f"fields has repeated names: {fields}")
    for name in ("x", "y"):
        if name not in fields:
            raise ValueError(f"fields must include '{name}' (metres, ego frame), got {fields}")
    if not isinstance(valid, np.ndarray) or valid.dtype != bool or valid.shape != (points.shape[0],):
        desc = f"shape {valid.shape} dtype {valid.dtype}" if isinstance(valid, np.ndarray) else type(valid).__name__
        raise ValueError(f"valid must be a ({points.shape[0]},) bool array (one per point), got {desc}")
    if not isinstance(grid, PillarGrid):
        raise ValueError(f"grid must be a PillarGrid, got {type(grid).__name__}")  # noqa: TRY004 (one error type)
    for name, value in (("max_pillars", max_pillars), ("max_points", max_points)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return np.ascontiguousarray(points), np.ascontiguousarray(valid), fields


# ---------------------------------------------------------------------------
# Fast path: numba kernels
# ---------------------------------------------------------------------------


@njit(cache=True)
def _point_cells(points, valid, ix, iy, x0, x1, y0, y1, res, h, w):
    """(P,) int64 flat cell of each valid, finite, in-grid point (-1 for the others) and the number of valid
    finite points outside the grid. Arithmetic in float64, the same operations in the same order as the
    reference."""
    n = points.shape[0]
    cell = np.full(n, -1, np.int64)
    num_out = 0
    for i in range(n):
        if not valid[i]:
            continue
        finite = True
        for f in range(points.shape[1]):
            if not np.isfinite(points[i, f]):
                finite = False
                break
        if not finite:
            continue
        x = np.float64(points[i, ix])
        y = np.float64(points[i, iy])
        if not (x0 <= x < x1 and y0 <= y < y1):
            num_out += 1
            continue
        # Clamp: (x - x0) / res can round up to h for x just below x1.
        row = min(max(math.floor((x - x0) / res), 0), h - 1)
        col = min(max(math.floor((y - y0) / res), 0), w - 1)
        cell[i] = row * w + col
    return cell, num_out


@njit(cache=True)
def _select_cells(cell, num_cells, max_pillars):
    """Kept cells, ascending, and (num_cells,) int64 slot of each cell (-1 where not kept).

    No sort (numba's sort and partition take seconds to compile): a histogram of the per-cell counts gives the
    count threshold, and one pass over the cells in index order yields ascending order and gives ties at the
    threshold to the smaller cell index. O(P + H * W)."""
    counts = np.zeros(num_cells, np.int64)
    for c in cell:
        if c >= 0:
            counts[c] += 1
    n_occupied = 0
    for c in range(num_cells):
        if counts[c] > 0:
            n_occupied += 1
    # Keep the cells with more than `threshold` points, then the first `at_threshold` cells with exactly that many.
    threshold, at_threshold = 1, num_cells
    if n_occupied > max_pillars:
        hist = np.zeros(cell.shape[0] + 1, np.int64)  # hist[n]: cells holding n points
        for c in range(num_cells):
            hist[counts[c]] += 1
        threshold, n_more = cell.shape[0], 0
        while n_more + hist[threshold] < max_pillars:
            n_more += hist[threshold]
            threshold -= 1
        at_threshold = max_pillars - n_more
    kept = np.empty(min(n_occupied, max_pillars), np.int64)
    slot = np.full(num_cells, -1, np.int64)
    s = 0
    for c in range(num_cells):
        n = counts[c]
        if n > threshold or (n == threshold and at_threshold > 0):
            if n == threshold:
                at_threshold -= 1
            slot[c] = s
            kept[s] = c
            s += 1
    return kept, slot


@njit(cache=True)
def _fill_pillars(points, cell, slot, ix, iy, x0, y0, res, w, features, point_mask):
    """Copy each point into its pillar in input order (first max_points kept); returns the number dropped."""
    n_fields = points.shape[1]
    max_points = features.shape[1]
    fill = np.zeros(features.shape[0], np.int64)
    dropped = 0
    for i in range(points.shape[0]):
        c = cell[i]
        if c < 0:
            continue
        s = slot[c]
        if s < 0 or fill[s] == max_points:
            dropped += 1
            continue
        k = fill[s]
        for f in range(n_fields):
            features[s, k, f] = points[i, f]
        row = c // w
        col = c - row * w
        features[s, k, n_fields] = np.float64(points[i, ix]) - (x0 + (row + 0.5) * res)
        features[s, k, n_fields + 1] = np.float64(points[i, iy]) - (y0 + (col + 0.5) * res)
        point_mask[s, k] = True
        fill[s] = k + 1
    return dropped


def pillarize(points: np.ndarray, valid: np.ndarray, fields: Sequence[str], grid: PillarGrid,
              max_pillars: int, max_points: int) -> Pillars:
    """Group radar points into at most ``max_pillars`` BEV pillars of at most ``max_points`` points each.

    points: (P, F) float32, ego frame, columns named by ``fields`` (must include "x" and "y", metres).
    valid: (P,) bool; False rows (padding) are ignored, and so are rows with any non-finite field.
    Returns ``Pillars`` with fixed shapes (see its docstring).

    Rules (``tests/reference/data.py::pillarize_reference`` is the same contract as plain loops; the two agree
    exactly):
    - In the grid: ``x_range[0] <= x < x_range[1]`` and ``y_range[0] <= y < y_range[1]``;
      ``row = floor((x - x_range[0]) / res)``, ``col = floor((y - y_range[0]) / res)`` in float64, clamped to
      the grid (guards rounding at the upper edge); cell = ``row * W + col``.
    - Pillars are ordered by ascending cell index, so the order does not depend on the order of the points.
    - More occupied cells than ``max_pillars``: keep the ``max_pillars`` cells with the most usable points
      (counted before the ``max_points`` cut; ties go to the smaller cell index), then order them by cell index.
      Dense cells carry most of the evidence; the rule is deterministic and needs no randomness.
    - Within a pillar the points keep their input order and the first ``max_points`` are kept.
    - dx, dy = x - (x_range[0] + (row + 0.5) * res), y - (y_range[0] + (col + 0.5) * res), in float64, stored
      as float32.
    """
    points, valid, fields = check_pillar_inputs(points, valid, fields, grid, max_pillars, max_points)
    ix, iy = fields.index("x"), fields.index("y")
    h, w = grid.shape
    (x0, x1), (y0, y1), res = grid.x_range, grid.y_range, grid.resolution
    # The finiteness test lives in the kernel: np.isfinite(points).all(axis=1) alone costs ~50 us at P=3000.
    cell, num_out = _point_cells(points, valid, ix, iy, x0, x1, y0, y1, res, h, w)
    kept, slot = _select_cells(cell, h * w, int(max_pillars))
    features = np.zeros((max_pillars, max_points, points.shape[1] + 2), np.float32)
    point_mask = np.zeros((max_pillars, max_points), bool)
    dropped = _fill_pillars(points, cell, slot, ix, iy, x0, y0, res, w, features, point_mask)
    cells = np.full(max_pillars, h * w, np.int64)
    cells[: kept.shape[0]] = kept
    pillar_mask = np.zeros(max_pillars, bool)
    pillar_mask[: kept.shape[0]] = True
    return Pillars(features, point_mask, cells, pillar_mask, int(dropped), int(num_out))


