"""How many cameras see each voxel of the camera lift's grid, in numpy (no torch), for the runtimes and tools.

The lift samples at most ``model.camera.cameras_per_voxel`` cameras per voxel (``perception.model.lift``): the
ones that see it, lowest index first. That is exact as long as no voxel is seen by more cameras than that (a
ring of monocular cameras overlaps only pairwise: 2; a stereo pair beside a ring neighbour: 3). A rig that
overlaps more still runs, but the extra cameras are left out at those voxels; ``Pipeline`` warns once when it
sees such a rig, and ``perception-calib validate --config`` reports the overlap.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from perception.data.transforms import input_affine

log = logging.getLogger(__name__)


def voxel_centres(cfg: Any) -> np.ndarray:
    """(Z * H * W, 3) ego metres, the same points and order as ``perception.model.lift.BevGridPoints``."""
    g = cfg.data.grid
    h, w = g.bev_shape
    zn = cfg.model.camera.heights
    xs = g.x_range[0] + (np.arange(h, dtype=np.float32) + 0.5) * np.float32((g.x_range[1] - g.x_range[0]) / h)
    ys = g.y_range[0] + (np.arange(w, dtype=np.float32) + 0.5) * np.float32((g.y_range[1] - g.y_range[0]) / w)
    zs = g.z_range[0] + (np.arange(zn, dtype=np.float32) + 0.5) * np.float32((g.z_range[1] - g.z_range[0]) / zn)
    z, x, y = np.meshgrid(zs, xs, ys, indexing="ij")
    return np.stack([x, y, z], axis=-1).reshape(-1, 3).astype(np.float32)


def cameras_seeing(points: np.ndarray, img_from_ego: np.ndarray, image_hw: tuple[int, int], min_depth: float,
                   camera_valid: np.ndarray | None = None) -> np.ndarray:
    """points: (Q, 3) ego metres; img_from_ego: (N, 4, 4) pixels of an (H, W) = ``image_hw`` network input <-
    ego. Returns (Q,) int: how many (valid) cameras see each point, by the lift's own test (inside the image,
    depth above half of ``min_depth``, the first depth bin's lower edge)."""
    m = np.asarray(img_from_ego, dtype=np.float32)
    hom = np.einsum("qj,nij->nqi", np.asarray(points, np.float32), m[:, :3, :3]) + m[:, None, :3, 3]  # (N, Q, 3)
    d = hom[..., 2]
    d_safe = np.maximum(d, 1e-3)
    height, width = image_hw
    gx = (hom[..., 0] / d_safe + 0.5) / width * 2.0 - 1.0
    gy = (hom[..., 1] / d_safe + 0.5) / height * 2.0 - 1.0
    sees = (np.abs(gx) <= 1.0) & (np.abs(gy) <= 1.0) & (d > min_depth * 0.5)
    if camera_valid is not None:
        sees &= np.asarray(camera_valid, dtype=bool)[:, None]
    return sees.sum(axis=0)


@dataclass(frozen=True)
class Coverage:
    """Voxels by how many cameras see them, against what the model samples."""

    counts: tuple[int, ...]  # counts[k]: voxels seen by k cameras
    cameras_per_voxel: int  # the model's setting (0: every camera)

    @property
    def max_overlap(self) -> int:
        return max((k for k, c in enumerate(self.counts) if c), default=0)

    @property
    def voxels_over(self) -> int:
        """Voxels seen by more cameras than the lift samples (0 when it samples every camera)."""
        k = self.cameras_per_voxel
        return 0 if k <= 0 else int(sum(self.counts[k + 1:]))

    def summary(self) -> str:
        seen = ", ".join(f"{c} by {k}" for k, c in enumerate(self.counts) if c)
        k = self.cameras_per_voxel
        limit = "every camera" if k <= 0 else f"up to {k} camera(s)"
        text = f"lift voxels seen: {seen}; the model samples {limit} per voxel"
        if self.voxels_over:
            text += (f": {self.voxels_over} voxel(s) are seen by more (up to {self.max_overlap}) and lose the "
                     f"extra cameras; to use them all set model.camera.cameras_per_voxel >= {self.max_overlap} "
                     f"(or 0), e.g. perception-export --cameras-per-voxel {self.max_overlap} (the weights do not "
                     f"depend on it)")
        return text


def coverage(cfg: Any, img_from_ego: np.ndarray, camera_valid: np.ndarray | None = None) -> Coverage:
    """``cameras_seeing`` as a histogram, beside the model's cameras_per_voxel."""
    seen = cameras_seeing(voxel_centres(cfg), img_from_ego, tuple(cfg.data.image_size), cfg.model.camera.depth_range[0],
                          camera_valid)
    counts = np.bincount(seen, minlength=len(img_from_ego) + 1)
    return Coverage(tuple(int(c) for c in counts), int(cfg.model.camera.cameras_per_voxel))


def rig_coverage(cfg: Any, rig: Any) -> Coverage:
    """Coverage of a ``calibration.rig.Rig``'s cameras (static mounts, no augmentation) at the config's input size."""
    mats = [input_affine((cam.height, cam.width), tuple(cfg.data.image_size)) @ cam.img_from_ego
            for cam in rig.cameras.values()]
    return coverage(cfg, np.stack(mats))


class CoverageCheck:
    """Warns once per camera set (names and which are masked) when a rig's overlap exceeds the model's
    cameras_per_voxel. Masked cameras (``camera_valid`` False; their matrix is a placeholder such as the identity)
    see nothing and are not counted."""

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.seen: set[tuple] = set()

    def __call__(self, cameras: tuple[str, ...], img_from_ego: np.ndarray,
                 camera_valid: np.ndarray | None = None) -> Coverage | None:
        k = self.cfg.model.camera.cameras_per_voxel
        valid = np.ones(len(img_from_ego), bool) if camera_valid is None else np.asarray(camera_valid, bool)
        key = (tuple(cameras), tuple(bool(v) for v in valid))
        if not self.cfg.model.camera.enabled or k <= 0 or k >= int(valid.sum()) or key in self.seen:
            return None
        self.seen.add(key)
        cov = coverage(self.cfg, img_from_ego, valid)
        if cov.voxels_over:
            used = [c for c, v in zip(cameras, valid) if v]
            log.warning("rig with cameras %s: %s", ", ".join(used), cov.summary())
        return cov
