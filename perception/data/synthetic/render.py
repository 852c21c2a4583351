"""Camera rendering of the synthetic world through a rig camera's real projection (numba).

Per pixel: the ground plane (asphalt, lane markings, crossings, sidewalks, grass) or the sky by ray casting;
then every box face is rasterised with a z-buffer (correct occlusion), with flat sun shading and a few
per-kind textures (windows, wheels, lights, cone and barrier stripes, facades). Distance haze, per-camera
vignetting, exposure and sensor noise follow. The optional id buffer (which actor owns each pixel) is what
the geometry tests use.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from perception.data.synthetic.world import (
    BLOCK,
    K_BARRIER,
    K_BODY,
    K_BUILDING,
    K_BUS,
    K_CABIN,
    K_CARGO,
    K_CONE,
    LANES_EDGE,
    ROAD_HALF,
    SIDEWALK,
    Snapshot,
)

FAR = 300.0  # metres: the ground beyond this is sky-coloured haze
NEAR = 0.05  # metres: faces are clipped at this camera depth
HORIZON = np.array([205.0, 212.0, 220.0])
ZENITH = np.array([105.0, 145.0, 205.0])


@njit(cache=True)
def _ground_colour(x, y, tex, out):
    """Colour (0-255 floats into out[0:3]) of the ground at global (x, y)."""
    dy = ((y + BLOCK / 2) % BLOCK) - BLOCK / 2
    dx = ((x + BLOCK / 2) % BLOCK) - BLOCK / 2
    ay, ax = abs(dy), abs(dx)
    n = tex[int(x * 6.0) & 255, int(y * 6.0) & 255]
    n2 = tex[(int(x * 0.7) + 97) & 255, (int(y * 0.7) + 31) & 255]
    on_h = ay < ROAD_HALF
    on_v = ax < ROAD_HALF
    if on_h or on_v:
        g = 84.0 * (1.0 + 0.10 * n + 0.06 * n2)
        r, gg, b = g, g * 1.01, g * 1.04
        lateral, along, other = -1.0, 0.0, 0.0
        if on_h and not on_v:
            lateral, along, other = ay, x, ax
        elif on_v and not on_h:
            lateral, along, other = ax, y, ay
        if lateral >= 0.0:
            if 0.08 < lateral < 0.24:  # double centre line
                r, gg, b = 205.0, 175.0, 70.0
            elif abs(lateral - 3.5) < 0.08 and (along % 9.0) < 3.0:  # dashed lane divider
                r, gg, b = 215.0, 215.0, 210.0
            elif abs(lateral - LANES_EDGE) < 0.1:  # lane edge
                r, gg, b = 215.0, 215.0, 210.0
            elif ROAD_HALF + 0.8 < other < ROAD_HALF + 4.3 and (lateral % 1.2) < 0.6 and lateral < LANES_EDGE:
                r, gg, b = 210.0, 210.0, 205.0  # zebra crossing before the intersection
            elif abs(other - (ROAD_HALF + 5.0)) < 0.2 and lateral < LANES_EDGE:
                r, gg, b = 210.0, 210.0, 205.0  # stop line
        out[0], out[1], out[2] = r, gg, b
    elif ay < ROAD_HALF + SIDEWALK or ax < ROAD_HALF + SIDEWALK:
        edge = min(ay, ax) - ROAD_HALF
        g = 150.0 * (1.0 + 0.05 * n)
        if edge < 0.25:
            g = 185.0  # kerb stones
        elif (x % 1.5) < 0.05 or (y % 1.5) < 0.05:
            g = 125.0
        out[0], out[1], out[2] = g, g * 0.98, g * 0.94
    else:
        out[0] = 70.0 * (1.0 + 0.25 * n + 0.2 * n2)
        out[1] = 105.0 * (1.0 + 0.2 * n + 0.15 * n2)
        out[2] = 48.0 * (1.0 + 0.25 * n)


@njit(cache=True)
def _pattern(kind, face, a, b, fw, fh, base, out):
    """Texture of a box face at local (a, b) in [0, 1] (a along the face, b upwards; fw, fh metres).
    Writes the colour into out; face 0 front (+x), 1 back, 2 left (+y), 3 right, 4 top, 5 bottom."""
    out[0], out[1], out[2] = base[0], base[1], base[2]
    am, bm = a * fw, b * fh
    side = face < 4
    if kind == K_BODY and side:
        if face >= 2:
            for cx in (0.18 * fw, 0.82 * fw):
                rr = min(0.34, 0.45 * fh)
                if (am - cx) ** 2 + (bm - rr * 0.9) ** 2 < rr * rr:
                    out[0], out[1], out[2] = 28.0, 28.0, 30.0
        elif 0.5 < b < 0.78 and (0.06 < a < 0.24 or 0.76 < a < 0.94):
            if face == 0:
                out[0], out[1], out[2] = 245.0, 245.0, 225.0
            else:
                out[0], out[1], out[2] = 190.0, 25.0, 25.0
        elif face == 0 and 0.15 < b < 0.42 and 0.3 < a < 0.7:
            out[0], out[1], out[2] = base[0] * 0.35, base[1] * 0.35, base[2] * 0.35
    elif kind == K_CABIN and side:
        if 0.1 < b < 0.9 and 0.06 < a < 0.94:
            t = b
            out[0], out[1], out[2] = 38.0 + 70.0 * t, 48.0 + 80.0 * t, 60.0 + 95.0 * t
    elif kind == K_BUS and side:
        if face >= 2:
            if 0.55 < b < 0.88 and 0.03 < a < 0.97 and (am % 1.6) > 0.12:
                out[0], out[1], out[2] = 45.0, 58.0, 72.0
            for cx in (0.15 * fw, 0.82 * fw):
                if (am - cx) ** 2 + (bm - 0.45) ** 2 < 0.25:
                    out[0], out[1], out[2] = 28.0, 28.0, 30.0
        elif face == 0 and 0.42 < b < 0.92 and 0.05 < a < 0.95:
            out[0], out[1], out[2] = 45.0, 58.0, 72.0
    elif kind == K_CONE and side:
        if 0.45 < b < 0.62:
            out[0], out[1], out[2] = 240.0, 240.0, 240.0
    elif kind == K_BARRIER and side:
        if ((am + bm) % 0.6) < 0.3:
            out[0], out[1], out[2] = 200.0, 30.0, 30.0
    elif kind == K_BUILDING and side:
        if bm < 3.0:
            if 0.3 < bm < 2.6 and (am % 5.0) > 0.6:
                out[0], out[1], out[2] = 55.0, 65.0, 78.0
        elif 1.0 < (bm % 3.0) < 2.3 and 0.6 < (am % 2.5) < 1.9:
            out[0], out[1], out[2] = 52.0 + 30.0 * b, 62.0 + 30.0 * b, 78.0 + 40.0 * b
    elif kind == K_CARGO and side:
        if (am % 1.2) < 0.05:
            out[0], out[1], out[2] = base[0] * 0.78, base[1] * 0.78, base[2] * 0.78


@njit(cache=True)
def _render(dirs, fx, fy, cx, cy, r_cg, cam_c, boxes, kinds, colours, owners, sun, tex, img, depth, ids):
    """dirs: (H, W, 3) camera rays with z = 1. r_cg: (3, 3) camera_from_global rotation; cam_c: (3,) camera
    centre, global. Writes img (H, W, 3) float32, depth (H, W) metres along the camera z axis, ids (H, W)."""
    h, w = depth.shape
    col = np.empty(3)
    r_gc = r_cg.T
    sun_diffuse = 0.55 + 0.45 * max(sun[2], 0.0)
    # ---- ground and sky
    for v in range(h):
        for u in range(w):
            d0, d1, d2 = dirs[v, u, 0], dirs[v, u, 1], dirs[v, u, 2]
            gx = r_gc[0, 0] * d0 + r_gc[0, 1] * d1 + r_gc[0, 2] * d2
            gy = r_gc[1, 0] * d0 + r_gc[1, 1] * d1 + r_gc[1, 2] * d2
            gz = r_gc[2, 0] * d0 + r_gc[2, 1] * d1 + r_gc[2, 2] * d2
            norm = np.sqrt(gx * gx + gy * gy + gz * gz)
            elev = gz / norm
            sky_t = min(max(elev * 3.0, 0.0), 1.0)
            s0 = HORIZON[0] * (1 - sky_t) + ZENITH[0] * sky_t
            s1 = HORIZON[1] * (1 - sky_t) + ZENITH[1] * sky_t
            s2 = HORIZON[2] * (1 - sky_t) + ZENITH[2] * sky_t
            ids[v, u] = -1
            if gz < -1e-6:
                t = -cam_c[2] / gz
                if t < FAR:
                    _ground_colour(cam_c[0] + t * gx, cam_c[1] + t * gy, tex, col)
                    haze = 1.0 - np.exp(-t * norm / 260.0)
                    img[v, u, 0] = col[0] * sun_diffuse * (1 - haze) + s0 * haze
                    img[v, u, 1] = col[1] * sun_diffuse * (1 - haze) + s1 * haze
                    img[v, u, 2] = col[2] * sun_diffuse * (1 - haze) + s2 * haze
                    depth[v, u] = t
                    continue
            img[v, u, 0], img[v, u, 1], img[v, u, 2] = s0, s1, s2
            depth[v, u] = np.inf
    # ---- boxes, z-buffered
    poly = np.empty((12, 3))
    tmp = np.empty((12, 3))
    corner = np.empty(3)
    for bi in range(boxes.shape[0]):
        bx, by, bz, bl, bw, bh, yaw = boxes[bi]
        # cull: behind the camera or far away
        rel0, rel1, rel2 = bx - cam_c[0], by - cam_c[1], bz - cam_c[2]
        zc = r_cg[2, 0] * rel0 + r_cg[2, 1] * rel1 + r_cg[2, 2] * rel2
        radius = 0.5 * np.sqrt(bl * bl + bw * bw + bh * bh)
        if zc < -radius or zc - radius > FAR:
            continue
        c, s = np.cos(yaw), np.sin(yaw)
        axes = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])  # rows: box x, y, z in global
        half = np.array([bl / 2, bw / 2, bh / 2])
        for face in range(6):
            ax = face // 2 if face < 4 else 2
            sign = 1.0 if face % 2 == 0 else -1.0
            if face >= 4:
                ax = 2
            nrm = axes[ax] * sign
            fcx = bx + nrm[0] * half[ax]
            fcy = by + nrm[1] * half[ax]
            fcz = bz + nrm[2] * half[ax]
            if nrm[0] * (fcx - cam_c[0]) + nrm[1] * (fcy - cam_c[1]) + nrm[2] * (fcz - cam_c[2]) >= 0.0:
                continue  # back face
            # in-face axes: e1 horizontal (or box x on top/bottom), e2 up (or box y)
            if face < 2:
                e1, e2, a_len, b_len = axes[1] * (-sign), axes[2], bw, bh
            elif face < 4:
                e1, e2, a_len, b_len = axes[0] * sign, axes[2], bl, bh
            else:
                e1, e2, a_len, b_len = axes[0], axes[1], bl, bw
            o0 = fcx - e1[0] * a_len / 2 - e2[0] * b_len / 2
            o1 = fcy - e1[1] * a_len / 2 - e2[1] * b_len / 2
            o2 = fcz - e1[2] * a_len / 2 - e2[2] * b_len / 2
            n_in = 0
            for k in range(4):
                fa = 1.0 if (k == 1 or k == 2) else 0.0
                fb = 1.0 if k >= 2 else 0.0
                corner[0] = o0 + e1[0] * a_len * fa + e2[0] * b_len * fb - cam_c[0]
                corner[1] = o1 + e1[1] * a_len * fa + e2[1] * b_len * fb - cam_c[1]
                corner[2] = o2 + e1[2] * a_len * fa + e2[2] * b_len * fb - cam_c[2]
                for q in range(3):
                    poly[n_in, q] = r_cg[q, 0] * corner[0] + r_cg[q, 1] * corner[1] + r_cg[q, 2] * corner[2]
                n_in += 1
            # clip against the near plane z >= NEAR (Sutherland-Hodgman)
            n_out = 0
            for k in range(n_in):
                p_a = poly[k]
                p_b = poly[(k + 1) % n_in]
                in_a, in_b = p_a[2] >= NEAR, p_b[2] >= NEAR
                if in_a:
                    tmp[n_out] = p_a
                    n_out += 1
                if in_a != in_b:
                    tt = (NEAR - p_a[2]) / (p_b[2] - p_a[2])
                    for q in range(3):
                        tmp[n_out, q] = p_a[q] + tt * (p_b[q] - p_a[q])
                    n_out += 1
            if n_out < 3:
                continue
            us = np.empty(n_out)
            vs = np.empty(n_out)
            for k in range(n_out):
                us[k] = fx * tmp[k, 0] / tmp[k, 2] + cx
                vs[k] = fy * tmp[k, 1] / tmp[k, 2] + cy
            u_lo = max(int(np.floor(us.min())), 0)
            u_hi = min(int(np.ceil(us.max())), w - 1)
            v_lo = max(int(np.floor(vs.min())), 0)
            v_hi = min(int(np.ceil(vs.max())), h - 1)
            if u_lo > u_hi or v_lo > v_hi:
                continue
            area = 0.0
            for k in range(n_out):
                area += us[k] * vs[(k + 1) % n_out] - us[(k + 1) % n_out] * vs[k]
            if abs(area) < 1e-9:
                continue
            orient = 1.0 if area > 0 else -1.0
            # plane of the face in camera coordinates: n_c . X = n_c . q0
            n_c0 = r_cg[0, 0] * nrm[0] + r_cg[0, 1] * nrm[1] + r_cg[0, 2] * nrm[2]
            n_c1 = r_cg[1, 0] * nrm[0] + r_cg[1, 1] * nrm[1] + r_cg[1, 2] * nrm[2]
            n_c2 = r_cg[2, 0] * nrm[0] + r_cg[2, 1] * nrm[1] + r_cg[2, 2] * nrm[2]
            q0x, q0y, q0z = poly[0, 0], poly[0, 1], poly[0, 2]
            plane = n_c0 * q0x + n_c1 * q0y + n_c2 * q0z
            e1c0 = r_cg[0, 0] * e1[0] + r_cg[0, 1] * e1[1] + r_cg[0, 2] * e1[2]
            e1c1 = r_cg[1, 0] * e1[0] + r_cg[1, 1] * e1[1] + r_cg[1, 2] * e1[2]
            e1c2 = r_cg[2, 0] * e1[0] + r_cg[2, 1] * e1[1] + r_cg[2, 2] * e1[2]
            e2c0 = r_cg[0, 0] * e2[0] + r_cg[0, 1] * e2[1] + r_cg[0, 2] * e2[2]
            e2c1 = r_cg[1, 0] * e2[0] + r_cg[1, 1] * e2[1] + r_cg[1, 2] * e2[2]
            e2c2 = r_cg[2, 0] * e2[0] + r_cg[2, 1] * e2[1] + r_cg[2, 2] * e2[2]
            shade = 0.45 + 0.55 * max(nrm[0] * sun[0] + nrm[1] * sun[1] + nrm[2] * sun[2], 0.0)
            kind = kinds[bi]
            base = colours[bi]
            for v in range(v_lo, v_hi + 1):
                for u in range(u_lo, u_hi + 1):
                    pu, pv = u + 0.0, v + 0.0
                    inside = True
                    for k in range(n_out):
                        k2 = (k + 1) % n_out
                        edge = (us[k2] - us[k]) * (pv - vs[k]) - (vs[k2] - vs[k]) * (pu - us[k])
                        if edge * orient < 0.0:
                            inside = False
                            break
                    if not inside:
                        continue
                    d0, d1, d2 = dirs[v, u, 0], dirs[v, u, 1], dirs[v, u, 2]
                    den = n_c0 * d0 + n_c1 * d1 + n_c2 * d2
                    if abs(den) < 1e-12:
                        continue
                    t = plane / den
                    if t <= NEAR or t >= depth[v, u]:
                        continue
                    px, py, pz = t * d0 - q0x, t * d1 - q0y, t * d2 - q0z
                    la = min(max((px * e1c0 + py * e1c1 + pz * e1c2) / a_len, 0.0), 1.0)
                    lb = min(max((px * e2c0 + py * e2c1 + pz * e2c2) / b_len, 0.0), 1.0)
                    _pattern(kind, face, la, lb, a_len, b_len, base, col)
                    norm = np.sqrt(d0 * d0 + d1 * d1 + d2 * d2)
                    haze = 1.0 - np.exp(-t * norm / 260.0)
                    img[v, u, 0] = col[0] * shade * (1 - haze) + HORIZON[0] * haze
                    img[v, u, 1] = col[1] * shade * (1 - haze) + HORIZON[1] * haze
                    img[v, u, 2] = col[2] * shade * (1 - haze) + HORIZON[2] * haze
                    depth[v, u] = t
                    ids[v, u] = owners[bi]


@njit(cache=True)
def _finish(img, gain, noise, off_v, off_u, sigma, exposure, out):
    """Vignetting, exposure, sensor noise (from a tile at an offset), clip to uint8."""
    h, w = out.shape[:2]
    nh, nw = noise.shape[:2]
    for v in range(h):
        for u in range(w):
            g = gain[v, u] * exposure
            for c in range(3):
                x = img[v, u, c] * g + sigma * noise[(v + off_v) % nh, (u + off_u) % nw, c]
                out[v, u, c] = min(max(x + 0.5, 0.0), 255.0)


class CameraRenderer:
    """Renders one rig camera (at the written image size). Create once per camera; call ``render`` per frame."""

    def __init__(self, intrinsics: np.ndarray, width: int, height: int, texture: np.ndarray, noise: np.ndarray):
        k = np.asarray(intrinsics, dtype=np.float64)
        self.fx, self.fy, self.cx, self.cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
        self.width, self.height = int(width), int(height)
        u, v = np.meshgrid(np.arange(self.width, dtype=np.float64), np.arange(self.height, dtype=np.float64))
        ray = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(k).T  # (H, W, 3), z = 1
        self.dirs = np.ascontiguousarray(ray)
        r = np.hypot((u - self.cx) / self.width, (v - self.cy) / self.height)
        self.gain = (1.0 - 0.35 * r ** 2).astype(np.float32)  # vignetting
        self.texture = texture
        self.noise = noise

    def render(self, snap: Snapshot, global_from_camera: np.ndarray, sun: np.ndarray, rng: np.random.Generator,
               with_ids: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Returns (H, W, 3) uint8 RGB and, with ``with_ids``, (H, W) int32 actor index per pixel (-1 = none)."""
        r_cg = np.ascontiguousarray(global_from_camera[:3, :3].T)
        c = np.ascontiguousarray(global_from_camera[:3, 3])
        img = np.empty((self.height, self.width, 3), np.float32)
        depth = np.empty((self.height, self.width), np.float64)
        ids = np.empty((self.height, self.width), np.int32)
        _render(self.dirs, self.fx, self.fy, self.cx, self.cy, r_cg, c, snap.boxes, snap.box_kind, snap.box_colour,
                snap.box_owner, sun, self.texture, img, depth, ids)
        out = np.empty((self.height, self.width, 3), np.uint8)
        nh, nw = self.noise.shape[:2]
        _finish(img, self.gain, self.noise, int(rng.integers(nh)), int(rng.integers(nw)), 3.0,
                float(rng.uniform(0.9, 1.08)), out)
        return out, (ids if with_ids else None)


def make_textures(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ground texture tile (256, 256) in [-1, 1] (smoothed noise) and sensor-noise tile (512, 512, 3) ~ N(0, 1)."""
    rng = np.random.default_rng([seed, 0x7E47])
    raw = rng.standard_normal((256, 256))
    f = np.fft.rfft2(raw)
    fy = np.fft.fftfreq(256)[:, None]
    fx = np.fft.rfftfreq(256)[None, :]
    tex = np.fft.irfft2(f / (1.0 + 40.0 * np.hypot(fx, fy)), s=(256, 256))
    tex = (tex / np.abs(tex).max()).astype(np.float64)
    noise = rng.standard_normal((512, 512, 3)).astype(np.float32)
    return tex, noise
