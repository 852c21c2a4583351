"""Pictures: points over camera images (a mosaic, coloured by depth, Doppler or RCS, GT boxes), Frames, BEV
panels of predictions beside GT, replay previews. matplotlib (Agg backend, no display) or PIL (the fast ones)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np


@dataclass
class OverlayPanel:
    """One camera image of an overlay: points ``uvd`` (N, 3) u, v pixels and depth (NaN u/v: behind the camera),
    ``values`` (N,) what colours them (default: the depth), ``box_corners`` (G, 8, 3) GT boxes in the camera's
    ``img_from_ego`` frame given as ``img_from_ego`` (4, 4) with ``box_names``."""

    image: np.ndarray
    uvd: np.ndarray
    title: str = ""
    values: np.ndarray | None = None
    img_from_ego: np.ndarray | None = None
    box_corners: np.ndarray | None = None
    box_names: Sequence[str] = ()

    def inside(self) -> np.ndarray:
        h, w = self.image.shape[:2]
        u, v, d = self.uvd[:, 0], self.uvd[:, 1], self.uvd[:, 2]
        with np.errstate(invalid="ignore"):
            return (d > 0) & np.isfinite(u) & np.isfinite(v) & (u >= 0) & (u < w) & (v >= 0) & (v < h)


COLOUR_BY = {  # colour-bar label, colormap, symmetric about 0
    "depth": ("depth (m)", "turbo", False),
    "doppler": ("Doppler, radial (m/s; + away)", "coolwarm", True),
    "rcs": ("RCS (dBsm)", "viridis", False),
}


def mosaic_layout(sizes: Sequence[tuple[int, int]], tile_width: int = 800) -> tuple[list[tuple[int, int, float]],
                                                                                    tuple[int, int]]:
    """Where each (H, W) image goes: one image at its own size; several in up to 3 columns, each scaled to
    ``tile_width`` wide, rows as tall as their tallest tile. Returns ([(x0, y0, scale)], (total W, total H))."""
    if len(sizes) == 1:
        h, w = sizes[0]
        return [(0, 0, 1.0)], (w, h)
    cols = min(3, len(sizes)) if len(sizes) != 4 else 2
    places, y0, row_h = [], 0, 0
    for i, (h, w) in enumerate(sizes):
        if i and i % cols == 0:
            y0, row_h = y0 + row_h, 0
        scale = tile_width / w
        places.append(((i % cols) * tile_width, y0, scale))
        row_h = max(row_h, int(round(h * scale)))
    return places, (cols * tile_width, y0 + row_h)


def overlay_mosaic(panels: Sequence[OverlayPanel], out: str | Path, colour_by: str = "depth",
                   point_size: float | None = None, vmax: float | None = None) -> int:
    """Points over one or several camera images (``mosaic_layout``), coloured by ``colour_by`` (``COLOUR_BY``) with
    one shared colour bar, GT boxes projected as wireframes (clipped to their image) with their names; a PNG.
    Returns how many points were drawn (in front of a camera and inside its image)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    label, cmap, symmetric = COLOUR_BY[colour_by]
    places, (tw, th) = mosaic_layout([p.image.shape[:2] for p in panels])
    values = [p.uvd[:, 2] if p.values is None else np.asarray(p.values, np.float64) for p in panels]
    shown = np.concatenate([v[p.inside()] for v, p in zip(values, panels)] + [np.zeros(0)])
    if vmax is None:
        vmax = float(np.percentile(np.abs(shown) if symmetric else shown, 98)) if len(shown) else 1.0
    vmin = -vmax if symmetric else (0.0 if colour_by == "depth" else float(np.percentile(shown, 2)) if len(shown) else 0.0)
    vmax = max(vmax, vmin + 1e-3)
    dpi = 100
    bar = 0.08 * tw
    fig = plt.figure(figsize=((tw + bar) / dpi, th / dpi), dpi=dpi)
    sc, drawn = None, 0
    for p, (x0, y0, scale), vals in zip(panels, places, values):
        h, w = p.image.shape[:2]
        ax = fig.add_axes((x0 / (tw + bar), 1 - (y0 + h * scale) / th, w * scale / (tw + bar), h * scale / th))
        ax.imshow(p.image)
        ok = p.inside()
        order = np.argsort(-p.uvd[ok, 2])  # far points first, near ones on top
        sparse = ok.sum() < 2000
        size = point_size if point_size is not None else (w * scale / 1600.0) ** 2 * (60.0 if sparse else 6.0) / scale ** 2
        sc = ax.scatter(p.uvd[ok, 0][order], p.uvd[ok, 1][order], c=vals[ok][order], s=size * scale ** 2, cmap=cmap,
                        vmin=vmin, vmax=vmax, linewidths=0.6 if sparse else 0, edgecolors="black")
        drawn += int(ok.sum())
        if p.box_corners is not None and p.img_from_ego is not None:
            _draw_box_wireframes(ax, p.box_corners, p.box_names, np.asarray(p.img_from_ego, np.float64), w, h)
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.axis("off")
        if p.title:
            ax.text(8, 8, p.title, color="white", fontsize=max(8, int(h * scale) // 60), va="top",
                    bbox={"facecolor": "black", "alpha": 0.6, "pad": 3})
    cax = fig.add_axes((tw / (tw + bar) + 0.01, 0.1, 0.015 * 1.08 * tw / (tw + bar), 0.8))
    fig.colorbar(sc, cax=cax).set_label(label)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return drawn


def _draw_box_wireframes(ax: Any, corners: np.ndarray, names: Sequence[str], img_from_ego: np.ndarray, w: int,
                         h: int) -> None:
    hom = (corners.reshape(-1, 3) @ img_from_ego[:3, :3].T + img_from_ego[:3, 3]).reshape(-1, 8, 3)
    for b in range(len(hom)):
        colour = CLASS_COLOURS.get(str(names[b]) if b < len(names) else "", "#ffffff")
        top = None
        for e0, e1 in BOX_EDGES:
            seg = _near_clip(hom[b, e0], hom[b, e1], near=0.5)
            if seg is None:
                continue
            clipped = clip_to_rect(*(tuple(q[:2] / q[2]) for q in seg), w, h)
            if clipped is None:
                continue
            (u0, v0), (u1, v1) = clipped
            ax.plot([u0, u1], [v0, v1], color=colour, lw=1.2)
            top = min(top or (u0, v0), (u0, v0), (u1, v1), key=lambda q: q[1])
        if top is not None and b < len(names):
            ax.text(top[0], max(top[1] - 4, 10), str(names[b]), color=colour, fontsize=7, va="bottom")


def overlay_points(image: np.ndarray, uvd: np.ndarray, out: str | Path, title: str = "",
                   max_depth: float | None = None, point_size: float | None = None) -> int:
    """Points over one image, coloured by depth, with a colour bar; a PNG (``overlay_mosaic`` of one panel).

    image: (H, W, 3) uint8 RGB at 1:1 scale in the PNG. uvd: (N, 3) u, v pixels and depth metres (NaN u/v = behind
    the camera). Returns how many points were drawn (in front of the camera and inside the image).
    point_size: marker area in points^2; default scales with the image and the point count
    (dense lidar small, sparse radar large and outlined).
    """
    return overlay_mosaic([OverlayPanel(image, uvd, title)], out, "depth", point_size, max_depth)


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


# Track colours: matplotlib's tab10 (no pyplot needed); a track keeps its colour in every panel and frame.
TRACK_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf")


def hex_to_rgb(hex_colour: str) -> tuple[int, int, int]:
    """"#rrggbb" -> (r, g, b) in 0..255."""
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))



GT_COLOUR = (90, 90, 90)


def _near_clip(a: np.ndarray, b: np.ndarray, near: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Camera-space homogeneous [u*d, v*d, d] endpoints; the part with d >= near, or None."""
    if a[2] < near and b[2] < near:
        return None
    if a[2] < near or b[2] < near:
        s = (near - a[2]) / (b[2] - a[2])
        cut = a + s * (b - a)
        a, b = (cut, b) if a[2] < near else (a, cut)
    return a, b


def clip_to_rect(p0: tuple[float, float], p1: tuple[float, float], width: float, height: float
                 ) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The part of segment p0-p1 inside [0, width] x [0, height] (Liang-Barsky), or None when it misses."""
    (x0, y0), (x1, y1) = p0, p1
    dx, dy = x1 - x0, y1 - y0
    t0, t1 = 0.0, 1.0
    for p, q in ((-dx, x0), (dx, width - x0), (-dy, y0), (dy, height - y0)):
        if p == 0:
            if q < 0:
                return None
            continue
        t = q / p
        if p < 0:
            t0 = max(t0, t)
        else:
            t1 = min(t1, t)
        if t0 > t1:
            return None
    return (x0 + t0 * dx, y0 + t0 * dy), (x0 + t1 * dx, y0 + t1 * dy)


def _mix(colour: tuple[int, int, int], weight: float, base: tuple[int, int, int] = (255, 255, 255)) -> tuple[int, ...]:
    """``colour`` faded towards ``base`` (weight 1: the colour itself, 0: the base)."""
    w = float(np.clip(weight, 0.0, 1.0))
    return tuple(int(round(c * w + b * (1 - w))) for c, b in zip(colour, base))


def _arrow(draw: Any, start: tuple[float, float], end: tuple[float, float], colour: tuple[int, ...], width: int = 2,
           head: float = 6.0) -> None:
    draw.line([start, end], fill=colour, width=width)
    d = np.subtract(end, start)
    n = float(np.hypot(*d))
    if n < 1e-6:
        return
    d = d / n
    left = np.array(end) - head * d + head * 0.5 * np.array([-d[1], d[0]])
    right = np.array(end) - head * d - head * 0.5 * np.array([-d[1], d[0]])
    draw.polygon([tuple(end), tuple(left), tuple(right)], fill=colour)


def bev_panel(side: int, max_range: float, boxes: np.ndarray, colours: Sequence[tuple[int, int, int]],
              labels: Sequence[str], trajectories: np.ndarray | None = None, mode_probs: np.ndarray | None = None,
              gt_boxes: np.ndarray | None = None, radar_xy: np.ndarray | None = None,
              lidar_xy: np.ndarray | None = None, title: str = "", font: Any = None) -> Any:
    """A square PIL image of the BEV (x forward up, y to the left, +-``max_range`` m around the ego): lidar points
    (light), radar points (grey), GT boxes (grey, thin, with heading), predicted boxes (``colours``) with heading,
    a velocity arrow (the distance covered in 1 s) and every forecast mode (faded by its probability, which is
    written at the mode's end when >= 0.1), labels, range rings every 10 m and a legend line.

    boxes / gt_boxes: (K, 9) / (G, >=7) ego@t0; trajectories: (K, M, T, 2) ego@t0; mode_probs: (K, M)."""
    from PIL import Image, ImageDraw, ImageFont

    font = font or ImageFont.load_default(size=11)
    bev = Image.new("RGB", (side, side), (255, 255, 255))
    draw = ImageDraw.Draw(bev)
    ppm = side / (2.0 * max_range)
    cx = cy = side / 2.0

    def px(x: float, y: float) -> tuple[float, float]:  # column = cx - y * ppm (y to the left), row = cy - x * ppm
        return cx - y * ppm, cy - x * ppm

    for r in range(10, int(max_range * 1.5), 10):
        draw.ellipse([cx - r * ppm, cy - r * ppm, cx + r * ppm, cy + r * ppm], outline=(225, 225, 225))
    for pts, colour, size in ((lidar_xy, (150, 175, 205), 0), (radar_xy, (120, 120, 120), 1)):
        if pts is None or not len(pts):
            continue
        pu, pv = cx - pts[:, 1] * ppm, cy - pts[:, 0] * ppm
        inside = (pu >= 0) & (pu < side) & (pv >= 0) & (pv < side)
        if size == 0:
            draw.point(list(zip(pu[inside].tolist(), pv[inside].tolist())), fill=colour)
        else:
            for u, v in zip(pu[inside], pv[inside]):
                draw.rectangle([u - size, v - size, u + size, v + size], fill=colour)
    gt = np.zeros((0, 9)) if gt_boxes is None or not len(gt_boxes) else np.asarray(gt_boxes, np.float64)
    for c in box_corners(gt) if len(gt) else ():
        top = [px(x, y) for x, y in c[[0, 1, 2, 3], :2]]
        draw.polygon(top, outline=GT_COLOUR, width=1)
        front = (c[0, :2] + c[1, :2]) / 2
        draw.line([px(*c[:4, :2].mean(0)), px(*front)], fill=GT_COLOUR, width=1)
    boxes = np.asarray(boxes, np.float64).reshape(len(boxes), 9) if len(boxes) else np.zeros((0, 9))
    corners = box_corners(boxes) if len(boxes) else np.zeros((0, 8, 3))
    for b in range(len(boxes)):
        col = tuple(colours[b])
        centre = px(boxes[b, 0], boxes[b, 1])
        if trajectories is not None and mode_probs is not None:
            probs = np.asarray(mode_probs[b], np.float64)
            for m in np.argsort(probs):  # the most probable mode drawn last, on top
                path = [centre] + [px(x, y) for x, y in np.asarray(trajectories[b, m], np.float64)]
                p = float(probs[m])
                draw.line(path, fill=_mix(col, 0.25 + 0.75 * p / max(probs.max(), 1e-6)),
                          width=2 if m == probs.argmax() else 1)
                if p >= 0.1:
                    draw.text((path[-1][0] + 2, path[-1][1] - 5), f"{p:.2f}", fill=_mix(col, 0.9), font=font)
        draw.polygon([px(x, y) for x, y in corners[b, [0, 1, 2, 3], :2]], outline=col, width=2)
        front = (corners[b, 0, :2] + corners[b, 1, :2]) / 2
        draw.line([centre, px(*front)], fill=col, width=2)  # heading
        if boxes.shape[1] >= 9 and np.hypot(boxes[b, 7], boxes[b, 8]) > 0.2:
            _arrow(draw, centre, px(boxes[b, 0] + boxes[b, 7], boxes[b, 1] + boxes[b, 8]), (0, 0, 0), width=1)
        draw.text((centre[0] + 4, centre[1] + 2), labels[b], fill=col, font=font)
    draw.polygon([(cx, cy - 7), (cx - 5, cy + 5), (cx + 5, cy + 5)], fill=(0, 0, 0))  # ego, pointing along x
    legend = [f"{len(boxes)} predicted (colour), {len(gt)} GT (grey), 10 m rings",
              "black arrow: velocity x 1 s; lines: forecast modes (probability at the end)"]
    for i, line in enumerate(legend):
        draw.text((4, side - 14 * (len(legend) - i)), line, fill=(60, 60, 60), font=font)
    for i, line in enumerate(_wrap(title, max(20, int(side / 6.2)))):
        draw.text((4, 3 + 13 * i), line, fill=(0, 0, 0), font=font, stroke_width=2, stroke_fill=(255, 255, 255))
    return bev


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) if text else []


def _box_colours(names: Sequence[str], track_ids: np.ndarray | None) -> list[tuple[int, int, int]]:
    if track_ids is None:
        return [hex_to_rgb(CLASS_COLOURS.get(str(n), "#888888")) for n in names]
    return [hex_to_rgb(TRACK_COLOURS[int(t) % len(TRACK_COLOURS)]) for t in track_ids]


def draw_bev_predictions(frame, boxes: np.ndarray, names: Sequence[str], scores: np.ndarray,
                         trajectories: np.ndarray, mode_probs: np.ndarray, out: str | Path,
                         score_threshold: float = 0.3, max_range: float = 55.0, side: int = 720) -> None:
    """perception-test's BEV snapshot of one frame: predictions above ``score_threshold`` as boxes with heading,
    velocity arrow and every forecast mode with its probability (class colours), beside the frame's GT boxes
    (grey) and radar points (``bev_panel``)."""
    keep = np.flatnonzero(np.asarray(scores) >= score_threshold)
    boxes = np.asarray(boxes, np.float64).reshape(len(scores), 9)[keep]
    names = [str(names[i]) for i in keep]
    radar = frame.radar_points[frame.radar_valid][:, :2].astype(np.float64)
    title = f"{frame.sample_token[:8]}: {len(keep)} predictions (score >= {score_threshold}), {len(frame.gt_boxes)} GT"
    img = bev_panel(side, max_range, boxes, _box_colours(names, None),
                    [f"{n} {float(scores[i]):.2f}" for n, i in zip(names, keep)], np.asarray(trajectories)[keep],
                    np.asarray(mode_probs)[keep], frame.gt_boxes, radar, title=title)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    img.save(out)


def _camera_tile(image: np.ndarray, img_from_ego: np.ndarray, corners: np.ndarray, colours: Sequence[tuple],
                 labels: Sequence[str], tile_width: int, tile_h: int, font: Any, gt_corners: np.ndarray | None = None
                 ) -> Any:
    """One camera's tile (its own image, so nothing leaves it) with the boxes' edges (GT first, thin, light grey)
    clipped to the near plane and to the tile."""
    from PIL import Image, ImageDraw

    tile = Image.fromarray(image).resize((tile_width, tile_h), Image.BILINEAR)
    draw = ImageDraw.Draw(tile)
    scale = tile_width / image.shape[1]
    m = np.asarray(img_from_ego, np.float64)
    gt = np.zeros((0, 8, 3)) if gt_corners is None else gt_corners
    everything = np.concatenate([gt, corners])
    k = len(everything)
    hom = (everything.reshape(-1, 3) @ m[:3, :3].T + m[:3, 3]).reshape(k, 8, 3)  # [u*d, v*d, d]
    for b in range(k):
        is_gt = b < len(gt)
        drawn = []
        for e0, e1 in BOX_EDGES:
            seg = _near_clip(hom[b, e0], hom[b, e1], near=0.5)
            if seg is None:
                continue
            p0, p1 = (tuple(p[:2] / p[2] * scale) for p in seg)
            clipped = clip_to_rect(p0, p1, tile_width - 1, tile_h - 1)
            if clipped is None:
                continue
            draw.line(list(clipped), fill=(200, 200, 200) if is_gt else colours[b - len(gt)], width=1 if is_gt else 2)
            drawn.extend(clipped)
        if drawn and not is_gt:
            b -= len(gt)
            u, v = min(drawn, key=lambda p: p[1])
            draw.text((min(u, tile_width - 60), max(0, v - 12)), labels[b], fill=colours[b], font=font)
    return tile


def draw_detections_preview(frame, det, track_ids: np.ndarray | None, out: str | Path, max_range: float = 50.0,
                            tile_width: int = 400, lidar: np.ndarray | None = None, title: str = "") -> None:
    """``preview_image`` written as a 256-colour PNG to ``out``."""
    from PIL import Image

    canvas = preview_image(frame, det, track_ids, max_range, tile_width, lidar, title)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    canvas.quantize(256, method=Image.Quantize.FASTOCTREE).save(out, format="PNG")


def preview_image(frame, det, track_ids: np.ndarray | None, max_range: float = 50.0, tile_width: int = 400,
                  lidar: np.ndarray | None = None, title: str = "") -> Any:
    """The preview of one frame: a camera mosaic with the detections' 3D boxes projected through
    ``frame.img_from_ego`` (``cols`` = 2 columns for wide images, W >= 2 H, else 3; camera ``i`` at pixel
    ``((i % cols) * tile_width, (i // cols) * tile_h)`` with ``tile_h = round(H * tile_width / W)``), and on the
    right a square BEV panel (``bev_panel``: boxes with heading and velocity, every forecast mode with its
    probability, the frame's GT boxes in grey, radar and ``lidar`` (N, >=2 ego@t0) points).

    Box edges are clipped to their camera's tile; a masked camera's tile (``camera_valid`` False) shows its image
    as it is and nothing is drawn on it (its name is listed in the title line instead).
    With ``track_ids`` (K,) everything is coloured by track ID (``TRACK_COLOURS``: a track keeps its colour across
    frames); with None by class (``CLASS_COLOURS``).

    Returns the RGB PIL image. Drawn with PIL rather than matplotlib (``draw_detections_preview`` writes it as a
    256-colour PNG): replay writes one every few frames, which must stay well under 0.5 s and ~200 kB."""
    from PIL import Image, ImageDraw, ImageFont

    n, h, w = frame.images.shape[:3]
    k = len(det)
    ids = None if track_ids is None else np.asarray(track_ids).reshape(k)
    cols = min(2 if w >= 2 * h else 3, n)  # nuScenes' 6 wide crops: 3 rows of 2, about as tall as the BEV
    rows = int(np.ceil(n / cols))
    tile_h = int(round(h * tile_width / w))
    side = max(rows * tile_h, 480)  # BEV panel
    canvas = Image.new("RGB", (cols * tile_width + side, side), (20, 20, 20))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=11)
    boxes = np.asarray(det.boxes, np.float64).reshape(k, 9)
    corners = box_corners(boxes) if k else np.zeros((0, 8, 3))
    colours = _box_colours(det.names, ids)
    gt_corners = box_corners(frame.gt_boxes.astype(np.float64)) if len(frame.gt_boxes) else None
    if ids is None:
        labels = [f"{name} {float(s):.2f}" for name, s in zip(det.names, det.scores)]
    else:
        labels = [f"#{int(t)} {name}" for t, name in zip(ids, det.names)]
    masked = []
    for i in range(n):
        x0, y0 = (i % cols) * tile_width, (i // cols) * tile_h
        if not frame.camera_valid[i]:
            canvas.paste(Image.fromarray(frame.images[i]).resize((tile_width, tile_h), Image.BILINEAR), (x0, y0))
            masked.append(str(frame.camera_channels[i]))
            continue
        canvas.paste(_camera_tile(frame.images[i], frame.img_from_ego[i], corners, colours, labels, tile_width,
                                  tile_h, font, gt_corners), (x0, y0))
        draw.text((x0 + 3, y0 + 2), str(frame.camera_channels[i]), fill=(255, 255, 255), font=font, stroke_width=1,
                  stroke_fill=(0, 0, 0))
    pts = frame.radar_points[frame.radar_valid].astype(np.float64)
    head = title or f"{frame.sample_token}  t0={int(frame.t0)} us"
    head += f"  {k} detections  {len(pts)} radar pts" + (f"  masked: {', '.join(masked)}" if masked else "")
    bev = bev_panel(side, max_range, boxes, colours, [s.split(" ")[0] if ids is not None else s for s in labels],
                    det.trajectories, det.mode_probs, frame.gt_boxes, pts[:, :2],
                    None if lidar is None else np.asarray(lidar)[:, :2], head, font)
    canvas.paste(bev, (cols * tile_width, 0))
    return canvas
