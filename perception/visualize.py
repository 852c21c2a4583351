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


BOX_EDGES = [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7)]
CLASS_COLOURS = {"car": "#ff9f1c", "truck": "#e71d36", "bus": "#c200fb", "trailer": "#8d5a97", "construction_vehicle":
                 "#ffd23f", "pedestrian": "#2ec4b6", "motorcycle": "#3a86ff", "bicycle": "#00f5d4",
                 "traffic_cone": "#f15bb5", "barrier": "#fee440"}


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """boxes: (G, >=7) [x, y, z, w, l, h, yaw, ...] (nuScenes size order, z = centre). Returns (G, 8, 3):
    corners 0-3 on top, 4-7 at the bottom, 0/1 (and 4/5) at the front."""
    x, y, z, w, l, h, yaw = (boxes[:, i] for i in range(7))
    sx = np.array([1, 1, -1, -1, 1, 1, -1, -1])[None] * (l / 2)[:, None]
    sy = np.array([1, -1, -1, 1, 1, -1, -1, 1])[None] * (w / 2)[:, None]
    sz = np.array([1, 1, 1, 1, -1, -1, -1, -1])[None] * (h / 2)[:, None]
    c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    return np.stack([x[:, None] + c * sx - s * sy, y[:, None] + s * sx + c * sy, z[:, None] + sz], axis=-1)


def draw_frame(frame, out: str | Path, title: str = "", max_range: float = 60.0) -> None:
    """A Frame as the model receives it: every camera with projected GT boxes and radar points, and a BEV
    panel (radar coloured by dt with velocity arrows, GT boxes with heading, future trajectories)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = frame.num_cameras
    cols = 3 if n > 1 else 1
    rows = int(np.ceil(n / cols))
    aspect = frame.images.shape[1] / frame.images.shape[2]
    fig = plt.figure(figsize=(6 * cols + 7, max(rows * 6 * aspect + 1.0, 6.5)), dpi=100)
    gs = fig.add_gridspec(rows, cols + 2)
    corners = box_corners(frame.gt_boxes.astype(np.float64)) if len(frame.gt_boxes) else np.zeros((0, 8, 3))
    pts = frame.radar_points[frame.radar_valid].astype(np.float64)
    fields = list(frame.radar_fields)
    for i in range(n):
        ax = fig.add_subplot(gs[i // cols, i % cols])
        ax.imshow(frame.images[i])
        m = frame.img_from_ego[i].astype(np.float64)
        h, w = frame.images.shape[1:3]
        for g in range(len(corners)):
            hom = corners[g] @ m[:3, :3].T + m[:3, 3]
            if np.any(hom[:, 2] < 0.5):
                continue
            uv = hom[:, :2] / hom[:, 2:]
            if uv[:, 0].max() < 0 or uv[:, 0].min() > w or uv[:, 1].max() < 0 or uv[:, 1].min() > h:
                continue
            col = CLASS_COLOURS.get(str(frame.gt_names[g]), "w")
            for a, b in BOX_EDGES:
                ax.plot(uv[[a, b], 0], uv[[a, b], 1], color=col, lw=0.8)
        if len(pts):
            hom = pts[:, :3] @ m[:3, :3].T + m[:3, 3]
            ok = hom[:, 2] > 0.5
            uv = hom[ok, :2] / hom[ok, 2:]
            ax.scatter(uv[:, 0], uv[:, 1], s=4, c=hom[ok, 2], cmap="turbo", vmin=0, vmax=max_range, linewidths=0)
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_title(f"{frame.camera_channels[i]}" + ("" if frame.camera_valid[i] else " (INVALID)"), fontsize=8)
        ax.axis("off")
    ax = fig.add_subplot(gs[:, cols:])
    if len(pts):
        sc = ax.scatter(pts[:, 1], pts[:, 0], s=3, c=pts[:, fields.index("dt")], cmap="viridis", linewidths=0)
        fig.colorbar(sc, ax=ax, fraction=0.04, label="radar dt (s)")
        ax.quiver(pts[:, 1], pts[:, 0], pts[:, fields.index("vy")], pts[:, fields.index("vx")], angles="xy",
                  scale_units="xy", scale=1.0, width=0.0015, color="0.4")
    for g in range(len(corners)):
        col = CLASS_COLOURS.get(str(frame.gt_names[g]), "k")
        c = corners[g, [0, 1, 2, 3, 0]]
        ax.plot(c[:, 1], c[:, 0], color=col, lw=1.0)
        ax.plot([frame.gt_boxes[g, 1], (c[0, 1] + c[1, 1]) / 2], [frame.gt_boxes[g, 0], (c[0, 0] + c[1, 0]) / 2],
                color=col, lw=1.0)  # heading
        fv = frame.gt_future_valid[g]
        if fv.any():
            ax.plot(frame.gt_future[g, fv, 1], frame.gt_future[g, fv, 0], ".-", color=col, lw=0.6, ms=2, alpha=0.7)
    ax.plot([0], [0], marker=(3, 0, 0), ms=10, color="k")
    ax.set_xlim(max_range, -max_range)  # y to the left, as seen from above with x up
    ax.set_ylim(-max_range, max_range)
    ax.set_aspect("equal")
    ax.set_xlabel("y (m, left)")
    ax.set_ylabel("x (m, forward)")
    ax.set_title(f"BEV ego@t0: {len(frame.gt_boxes)} GT boxes, {len(pts)} radar points", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def draw_bev_predictions(frame, forecast, out: str | Path, score_threshold: float = 0.3,
                         max_range: float = 55.0) -> None:
    """BEV of one frame: GT boxes and their futures (grey), predicted centres above ``score_threshold`` with
    their most probable trajectory (class colours), radar points (light)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 7), dpi=100)
    pts = frame.radar_points[frame.radar_valid]
    if len(pts):
        ax.scatter(pts[:, 1], pts[:, 0], s=1, c="0.8", linewidths=0)
    corners = box_corners(frame.gt_boxes.astype(np.float64)) if len(frame.gt_boxes) else np.zeros((0, 8, 3))
    for g in range(len(corners)):
        c = corners[g, [0, 1, 2, 3, 0]]
        ax.plot(c[:, 1], c[:, 0], color="0.35", lw=1.0)
        fv = frame.gt_future_valid[g]
        if fv.any():
            ax.plot(frame.gt_future[g, fv, 1], frame.gt_future[g, fv, 0], color="0.6", lw=0.8, ls="--")
    keep = forecast.pred_scores >= score_threshold
    for p in np.flatnonzero(keep):
        col = CLASS_COLOURS.get(str(forecast.pred_names[p]), "k")
        ax.plot(forecast.pred_xy[p, 1], forecast.pred_xy[p, 0], "o", color=col, ms=4)
        best = int(np.argmax(forecast.pred_mode_probs[p]))
        tr = forecast.pred_traj[p, best]
        ax.plot(np.r_[forecast.pred_xy[p, 1], tr[:, 1]], np.r_[forecast.pred_xy[p, 0], tr[:, 0]], color=col, lw=1.0)
    ax.plot([0], [0], marker=(3, 0, 0), ms=10, color="k")
    ax.set_xlim(max_range, -max_range)
    ax.set_ylim(-max_range, max_range)
    ax.set_aspect("equal")
    ax.set_xlabel("y (m, left)")
    ax.set_ylabel("x (m, forward)")
    ax.set_title(f"{frame.sample_token[:8]}: {int(keep.sum())} predictions (score >= {score_threshold}), "
                 f"{len(frame.gt_boxes)} GT", fontsize=9)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
