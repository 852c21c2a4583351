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


# Track colours: matplotlib's tab10 (no pyplot needed); a track keeps its colour in every panel and frame.
TRACK_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf")


def hex_to_rgb(hex_colour: str) -> tuple[int, int, int]:
    """"#rrggbb" -> (r, g, b) in 0..255."""
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))


def _clip_segment(a: np.ndarray, b: np.ndarray, near: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Camera-space homogeneous [u*d, v*d, d] endpoints; the part with d >= near, or None."""
    if a[2] < near and b[2] < near:
        return None
    if a[2] < near or b[2] < near:
        s = (near - a[2]) / (b[2] - a[2])
        cut = a + s * (b - a)
        a, b = (cut, b) if a[2] < near else (a, cut)
    return a, b


def draw_detections_preview(frame, det, track_ids: np.ndarray, out: str | Path, max_range: float = 50.0,
                            tile_width: int = 400) -> None:
    """Replay preview of one frame: a camera mosaic with the detections' 3D boxes projected through
    ``frame.img_from_ego`` (``cols`` = 2 columns for wide images, W >= 2 H, else 3; camera ``i`` at pixel
    ``((i % cols) * tile_width, (i // cols) * tile_h)`` with ``tile_h = round(H * tile_width / W)``), and on the
    right a square BEV panel (x forward up, y to the left, +-``max_range`` m) with radar points, boxes, track IDs
    and each box's most probable trajectory.
    Everything is coloured by track ID (``TRACK_COLOURS``), so a track keeps its colour across frames.

    frame: a Frame (preprocessed images); det: Detections of that frame (ego@t0); track_ids: (K,) int.
    Drawn with PIL rather than matplotlib and written as a 256-colour PNG: replay writes one every few frames,
    which must stay well under 0.5 s and ~200 kB."""
    from PIL import Image, ImageDraw, ImageFont

    n, h, w = frame.images.shape[:3]
    k = len(det)
    track_ids = np.asarray(track_ids).reshape(k)
    cols = min(2 if w >= 2 * h else 3, n)  # nuScenes' 6 wide crops: 3 rows of 2, about as tall as the BEV
    rows = int(np.ceil(n / cols))
    scale = tile_width / w
    tile_h = int(round(h * scale))
    side = max(rows * tile_h, 360)  # BEV panel
    canvas = Image.new("RGB", (cols * tile_width + side, side), (20, 20, 20))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=11)
    boxes = np.asarray(det.boxes, np.float64).reshape(k, 9)
    corners = box_corners(boxes)  # (K, 8, 3) ego@t0
    colours = [hex_to_rgb(TRACK_COLOURS[int(t) % len(TRACK_COLOURS)]) for t in track_ids]
    labels = [f"#{int(t)} {name}" for t, name in zip(track_ids, det.names)]

    for i in range(n):
        x0, y0 = (i % cols) * tile_width, (i // cols) * tile_h
        tile = Image.fromarray(frame.images[i]).resize((tile_width, tile_h), Image.BILINEAR)
        canvas.paste(tile, (x0, y0))
        m = np.asarray(frame.img_from_ego[i], np.float64)
        hom = corners.reshape(-1, 3) @ m[:3, :3].T + m[:3, 3]  # (K*8, 3) [u*d, v*d, d]
        hom = hom.reshape(k, 8, 3)
        for b in range(k):
            drawn = []
            for e0, e1 in BOX_EDGES:
                seg = _clip_segment(hom[b, e0], hom[b, e1], near=0.5)
                if seg is None:
                    continue
                (u0, v0), (u1, v1) = (p[:2] / p[2] * scale for p in seg)
                if max(u0, u1) < 0 or min(u0, u1) > tile_width or max(v0, v1) < 0 or min(v0, v1) > tile_h:
                    continue
                draw.line([(x0 + u0, y0 + v0), (x0 + u1, y0 + v1)], fill=colours[b], width=2)
                drawn.append((u0, v0))
            if drawn:
                u, v = min(drawn, key=lambda p: p[1])
                if 0 <= u < tile_width and 0 <= v < tile_h:
                    draw.text((x0 + u, max(y0, y0 + v - 12)), labels[b], fill=colours[b], font=font)
        draw.text((x0 + 3, y0 + 2), str(frame.camera_channels[i]) + ("" if frame.camera_valid[i] else " (INVALID)"),
                  fill=(255, 255, 255), font=font, stroke_width=1, stroke_fill=(0, 0, 0))

    # BEV on its own image (clips what leaves the panel): column = cx - y * ppm (y to the left), row = cy - x * ppm
    bev = Image.new("RGB", (side, side), (255, 255, 255))
    draw = ImageDraw.Draw(bev)
    ppm = side / (2.0 * max_range)
    cx, cy = side / 2.0, side / 2.0
    for r in range(10, int(max_range * 1.5), 10):
        draw.ellipse([cx - r * ppm, cy - r * ppm, cx + r * ppm, cy + r * ppm], outline=(225, 225, 225))
    pts = frame.radar_points[frame.radar_valid].astype(np.float64)
    if len(pts):
        pu, pv = cx - pts[:, 1] * ppm, cy - pts[:, 0] * ppm
        inside = (pu >= 0) & (pu < side) & (pv >= 0) & (pv < side)
        for u, v in zip(pu[inside], pv[inside]):
            draw.rectangle([u - 1, v - 1, u + 1, v + 1], fill=(150, 150, 150))
    best = np.argmax(det.mode_probs, axis=1) if k else np.zeros(0, np.int64)
    for b in range(k):
        c = corners[b, [0, 1, 2, 3]]  # top face, 0/1 at the front
        poly = [(cx - y * ppm, cy - x * ppm) for x, y in c[:, :2]]
        draw.polygon(poly, outline=colours[b], width=2)
        front = (c[0, :2] + c[1, :2]) / 2
        draw.line([(cx - boxes[b, 1] * ppm, cy - boxes[b, 0] * ppm), (cx - front[1] * ppm, cy - front[0] * ppm)],
                  fill=colours[b], width=2)
        traj = np.vstack([boxes[b, :2], np.asarray(det.trajectories[b, best[b]], np.float64)])  # (T+1, 2)
        draw.line([(cx - y * ppm, cy - x * ppm) for x, y in traj], fill=colours[b], width=1)
        draw.text((cx - boxes[b, 1] * ppm + 4, cy - boxes[b, 0] * ppm + 2), f"#{int(track_ids[b])}",
                  fill=colours[b], font=font)
    draw.polygon([(cx, cy - 7), (cx - 5, cy + 5), (cx + 5, cy + 5)], fill=(0, 0, 0))  # ego, pointing along x
    draw.text((4, 3), f"{frame.sample_token}  t0={int(frame.t0)} us  {k} detections  {len(pts)} radar pts",
              fill=(0, 0, 0), font=font, stroke_width=2, stroke_fill=(255, 255, 255))
    canvas.paste(bev, (cols * tile_width, 0))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    canvas.quantize(256, method=Image.Quantize.FASTOCTREE).save(out)
