"""Geometry-consistent image preprocessing and augmentation of Frames.

Image side: undistortion (when the rig has distortion), resize + crop (+ flip) to the network input, with
``img_from_ego`` updated by the same pixel affine. BEV side: rotation about z, isotropic scaling and flips as
one 4x4 ``A`` (augmented_from_ego) applied to boxes, velocities, radar, trajectories, and to the cameras as
``img_from_ego @ inv(A)``. Modality dropout masks sensors. Pixel convention: pixel centres at integers
(OpenCV), so a resize by s maps u to s (u + 0.5) - 0.5.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from calibration.rig import Camera
from perception.data.frame import Frame


@dataclass(frozen=True)
class ImageAug:
    """Resize by ``scale`` (relative to fitting the input width), crop at (crop_x, crop_y) in resized pixels,
    then flip horizontally if ``flip``, then rotate by ``rotate`` degrees (counter-clockwise as seen) about the
    input's centre. ``scale = 1`` with ``crop_y`` at the bottom is the evaluation setting."""

    scale: float = 1.0
    crop_x: int = 0
    crop_y: int | None = None  # None: keep the bottom rows
    flip: bool = False
    rotate: float = 0.0


def pixel_affine_4x4(sx: float, sy: float, tx: float, ty: float, flip_width: int | None = None) -> np.ndarray:
    """(4, 4) acting on ``[u*d, v*d, d, 1]``: u' = sx u + tx, v' = sy v + ty, then u'' = W - 1 - u' if flipping."""
    m = np.array([[sx, 0, tx, 0], [0, sy, ty, 0], [0, 0, 1, 0], [0, 0, 0, 1]], np.float64)
    if flip_width is not None:
        f = np.array([[-1, 0, flip_width - 1, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], np.float64)
        m = f @ m
    return m


def _resize_crop(image_hw: tuple[int, int], out_hw: tuple[int, int], aug: ImageAug) -> tuple[int, int, int, int]:
    """The resized width and height and the crop's left and top offsets (whole pixels) of ``preprocess_image``."""
    h_out, w_out = out_hw
    h0, w0 = image_hw
    base = w_out / w0
    nw, nh = max(1, int(round(w0 * base * aug.scale))), max(1, int(round(h0 * base * aug.scale)))
    cy = nh - h_out if aug.crop_y is None else int(aug.crop_y)
    return nw, nh, int(aug.crop_x), cy


def input_affine(image_hw: tuple[int, int], out_hw: tuple[int, int], aug: ImageAug = ImageAug()) -> np.ndarray:
    """(4, 4) pixels of the network input <- pixels of an (H0, W0) image, as ``preprocess_image`` resizes, crops
    and flips it."""
    nw, nh, cx, cy = _resize_crop(image_hw, out_hw, aug)
    sx, sy = nw / image_hw[1], nh / image_hw[0]
    m = pixel_affine_4x4(sx, sy, sx * 0.5 - 0.5 - cx, sy * 0.5 - 0.5 - cy, out_hw[1] if aug.flip else None)
    if aug.rotate:
        m = rotation_affine_4x4(aug.rotate, out_hw) @ m
    return m


def _rotation_2x3(degrees: float, out_hw: tuple[int, int]) -> np.ndarray:
    """OpenCV's forward map (input pixel -> rotated pixel) of a rotation by ``degrees`` about the image centre."""
    import cv2

    h, w = out_hw
    return cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), float(degrees), 1.0)


def rotation_affine_4x4(degrees: float, out_hw: tuple[int, int]) -> np.ndarray:
    """(4, 4) on ``[u*d, v*d, d, 1]`` of the in-plane rotation ``preprocess_image`` applies (``ImageAug.rotate``)."""
    m = np.eye(4)
    m[:2, :3] = _rotation_2x3(degrees, out_hw)
    return m


def preprocess_image(image: np.ndarray, img_from_ego: np.ndarray, out_hw: tuple[int, int],
                     aug: ImageAug = ImageAug()) -> tuple[np.ndarray, np.ndarray]:
    """image: (H0, W0, C) uint8 (or float32, which tests use to trace coordinates); img_from_ego: (4, 4) for that
    image. Returns the (H, W, C) network input and
    its (4, 4) float64 img_from_ego. The image is resized to width W * aug.scale (area interpolation), cropped
    (zero padding where the crop leaves the image) and optionally flipped."""
    import cv2

    h_out, w_out = out_hw
    h0, w0 = image.shape[:2]
    nw, nh, cx, cy = _resize_crop((h0, w0), out_hw, aug)
    interp = cv2.INTER_AREA if nw < w0 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp)
    out = np.zeros((h_out, w_out) + resized.shape[2:], resized.dtype)
    # source window [cy, cy + h_out) x [cx, cx + w_out), clipped to the resized image
    y0, y1 = max(cy, 0), min(cy + h_out, nh)
    x0, x1 = max(cx, 0), min(cx + w_out, nw)
    if y1 > y0 and x1 > x0:
        out[y0 - cy:y1 - cy, x0 - cx:x1 - cx] = resized[y0:y1, x0:x1]
    if aug.flip:
        out = out[:, ::-1].copy()
    if aug.rotate:
        out = cv2.warpAffine(out, _rotation_2x3(aug.rotate, out_hw), (w_out, h_out), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT)
    return out, input_affine((h0, w0), out_hw, aug) @ img_from_ego


_UNDISTORT_MAPS: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def undistort(image: np.ndarray, cam: Camera) -> np.ndarray:
    """Remove lens distortion (OpenCV models), keeping the same K, so that the pinhole img_from_ego holds."""
    if cam.distortion is None or not any(cam.distortion.coeffs):
        return image
    import cv2

    key = (cam.name, cam.width, cam.height, tuple(cam.intrinsics.ravel()), cam.distortion.model, cam.distortion.coeffs)
    if key not in _UNDISTORT_MAPS:
        k = np.asarray(cam.intrinsics, np.float64)
        d = np.asarray(cam.distortion.coeffs, np.float64)
        if cam.distortion.model == "fisheye":
            maps = cv2.fisheye.initUndistortRectifyMap(k, d, np.eye(3), k, (cam.width, cam.height), cv2.CV_32FC1)
        else:
            maps = cv2.initUndistortRectifyMap(k, d, np.eye(3), k, (cam.width, cam.height), cv2.CV_32FC1)
        _UNDISTORT_MAPS[key] = maps
    mx, my = _UNDISTORT_MAPS[key]
    return cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def random_image_aug(rng: np.random.Generator, image_hw: tuple[int, int], out_hw: tuple[int, int],
                     scale_range: tuple[float, float], crop_jitter: float, flip: bool,
                     rotate_deg: float = 0.0) -> ImageAug:
    """Draw an ImageAug: scale in ``scale_range``, crop centred horizontally and at the bottom, jittered by
    ``crop_jitter`` of the output size, horizontal flip with p = 0.5 if ``flip``, rotation uniform in
    +-``rotate_deg`` (drawn last and only when > 0, so configs without rotation keep their draws)."""
    h0, w0 = image_hw
    h_out, w_out = out_hw
    s = float(rng.uniform(*scale_range))
    nw, nh = int(round(w0 * w_out / w0 * s)), int(round(h0 * w_out / w0 * s))
    jx, jy = crop_jitter * w_out, crop_jitter * h_out
    cx = int(round((nw - w_out) / 2 + rng.uniform(-jx, jx)))
    cy = int(round(nh - h_out - rng.uniform(0, jy)))
    flipped = bool(flip and rng.random() < 0.5)
    rot = float(rng.uniform(-rotate_deg, rotate_deg)) if rotate_deg > 0 else 0.0
    return ImageAug(s, cx, cy, flipped, rot)


def bev_matrix(rotation: float = 0.0, scale: float = 1.0, flip_x: bool = False, flip_y: bool = False) -> np.ndarray:
    """(4, 4) augmented_from_ego: scale, then rotate about z by ``rotation`` rad, then flip x and/or y."""
    c, s = np.cos(rotation), np.sin(rotation)
    a = np.eye(4)
    a[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) * scale
    f = np.diag([-1.0 if flip_x else 1.0, -1.0 if flip_y else 1.0, 1.0, 1.0])
    return f @ a


def apply_bev(frame: Frame, a: np.ndarray) -> Frame:
    """Apply augmented_from_ego ``a`` (rotation/scale/flips, no translation) to every geometric field."""
    a = np.asarray(a, np.float64)
    lin = a[:3, :3]
    scale = float(np.cbrt(abs(np.linalg.det(lin))))
    a_inv = np.linalg.inv(a)
    b = frame.gt_boxes.astype(np.float64)
    if len(b):
        centre = b[:, :3] @ lin.T
        heading = np.stack([np.cos(b[:, 6]), np.sin(b[:, 6])], -1) @ lin[:2, :2].T
        yaw = np.arctan2(heading[:, 1], heading[:, 0])
        vel = b[:, 7:9] @ lin[:2, :2].T
        b = np.concatenate([centre, b[:, 3:6] * scale, yaw[:, None], vel], axis=1)
    fut = frame.gt_future.astype(np.float64) @ lin[:2, :2].T
    pts = frame.radar_points.copy()
    names = list(frame.radar_fields)
    ix, iy, iz, ivx, ivy = (names.index(k) for k in ("x", "y", "z", "vx", "vy"))
    pts[:, [ix, iy, iz]] = (pts[:, [ix, iy, iz]].astype(np.float64) @ lin.T).astype(np.float32)
    pts[:, [ivx, ivy]] = (pts[:, [ivx, ivy]].astype(np.float64) @ lin[:2, :2].T).astype(np.float32)
    pts[~frame.radar_valid] = 0.0
    lidar = (frame.lidar_points.astype(np.float64) @ lin.T).astype(np.float32)
    return _replace(frame, gt_boxes=b.astype(np.float32), gt_future=fut.astype(np.float32), radar_points=pts,
                    lidar_points=lidar,
                    img_from_ego=(frame.img_from_ego.astype(np.float64) @ a_inv).astype(np.float32),
                    global_from_ego=frame.global_from_ego @ a_inv)


def random_bev(rng: np.random.Generator, rotate_deg: float, scale_range: tuple[float, float], flip: bool) -> np.ndarray:
    return bev_matrix(np.radians(rng.uniform(-rotate_deg, rotate_deg)), float(rng.uniform(*scale_range)),
                      bool(flip and rng.random() < 0.5), bool(flip and rng.random() < 0.5))


def modality_dropout(frame: Frame, rng: np.random.Generator, camera_one: float, camera_all: float,
                     radar_one: float, radar_all: float) -> Frame:
    """Mask sensors at random: one camera, all cameras, one radar unit, all radar (each with its probability).
    Masked cameras get zero images; masked radar points are zeroed and marked invalid."""
    cam_valid = frame.camera_valid.copy()
    images = frame.images
    if rng.random() < camera_all:
        cam_valid[:] = False
    elif rng.random() < camera_one and cam_valid.any():
        cam_valid[rng.choice(np.flatnonzero(cam_valid))] = False
    if not np.array_equal(cam_valid, frame.camera_valid):
        images = images.copy()
        images[~cam_valid] = 0
    r_valid = frame.radar_valid.copy()
    if rng.random() < radar_all:
        r_valid[:] = False
    elif rng.random() < radar_one and r_valid.any():
        sensor = frame.radar_column("sensor")
        unit = rng.choice(np.unique(sensor[r_valid]))
        r_valid &= sensor != unit
    pts = frame.radar_points
    if not np.array_equal(r_valid, frame.radar_valid):
        pts = pts.copy()
        pts[~r_valid] = 0.0
    return _replace(frame, camera_valid=cam_valid, images=images, radar_valid=r_valid, radar_points=pts)


def _replace(frame: Frame, **kw) -> Frame:
    return replace(frame, **kw)
