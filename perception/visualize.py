"""Pictures: points over camera images (coloured by depth). Uses matplotlib's Agg backend (no display)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def overlay_points(image: np.ndarray, uvd: np.ndarray, out: str | Path, title: str = "",
                   max_depth: float | None = None, point_size: float | None = None) -> int:
    """Draw points on an image, coloured by depth, with a colour bar; write a PNG.

    image: (H, W, 3) uint8 RGB. uvd: (N, 3) u, v pixels and depth metres (NaN u/v = behind the camera).
    Returns how many points were drawn (in front of the camera and inside the image).
    point_size: marker area in points^2; default scales with the image and the point count
    (dense lidar small, sparse radar large and outlined).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = image.shape[:2]
    u, v, d = uvd[:, 0], uvd[:, 1], uvd[:, 2]
    inside = (d > 0) & np.isfinite(u) & np.isfinite(v) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    dpi = 100
    fig = plt.figure(figsize=(w / dpi * 1.08, h / dpi), dpi=dpi)
    ax = fig.add_axes((0.0, 0.0, w / (w * 1.08), 1.0))
    ax.imshow(image)
    order = np.argsort(-d[inside])  # far points first, near ones on top
    vmax = max_depth if max_depth is not None else (float(np.percentile(d[inside], 98)) if inside.any() else 1.0)
    sparse = inside.sum() < 2000
    if point_size is None:
        point_size = (w / 1600.0) ** 2 * (60.0 if sparse else 6.0)
    sc = ax.scatter(u[inside][order], v[inside][order], c=d[inside][order], s=point_size, cmap="turbo",
                    vmin=0.0, vmax=max(vmax, 1e-3), linewidths=0.6 if sparse else 0, edgecolors="black")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.axis("off")
    if title:
        ax.text(8, 8, title, color="white", fontsize=max(8, h // 60), va="top",
                bbox={"facecolor": "black", "alpha": 0.6, "pad": 3})
    cax = fig.add_axes((w / (w * 1.08) + 0.01, 0.1, 0.015, 0.8))
    cb = fig.colorbar(sc, cax=cax)
    cb.set_label("depth (m)")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return int(inside.sum())
