"""In-graph camera geometry: projection through the run-time ``img_from_ego`` input and its inverse.

Only ops in the TensorRT-native budget: the 4x4 inverse is written with cross products (ONNX has an Inverse
op, TensorRT does not), so a recalibrated vehicle needs no re-export.
"""
from __future__ import annotations

import torch
from torch import Tensor


def inverse_projective(m: Tensor) -> Tensor:
    """m: (..., 4, 4) with last row [0, 0, 0, 1] (``img_from_ego``: K R | K t). Returns (..., 4, 4) ``ego_from_img``.

    inv([[A, t], [0, 1]]) = [[A^-1, -A^-1 t], [0, 1]], A^-1 = adj(A) / det(A) with the rows of adj(A)^T given by
    cross products of A's columns."""
    a = m[..., :3, :3]
    c0, c1, c2 = a[..., :, 0], a[..., :, 1], a[..., :, 2]  # columns, each (..., 3)
    r0, r1, r2 = _cross(c1, c2), _cross(c2, c0), _cross(c0, c1)
    det = (c0 * r0).sum(-1, keepdim=True).unsqueeze(-1)  # (..., 1, 1)
    a_inv = torch.stack([r0, r1, r2], dim=-2) / det  # (..., 3, 3)
    t = m[..., :3, 3:4]  # (..., 3, 1)
    top = torch.cat([a_inv, -(a_inv @ t)], dim=-1)  # (..., 3, 4)
    bottom = torch.zeros_like(m[..., 3:4, :])
    bottom = bottom + torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=m.dtype, device=m.device)
    return torch.cat([top, bottom], dim=-2)


def _cross(a: Tensor, b: Tensor) -> Tensor:
    """(..., 3) x (..., 3), written out (torch.cross has no ONNX export in every exporter)."""
    a0, a1, a2 = a[..., 0], a[..., 1], a[..., 2]
    b0, b1, b2 = b[..., 0], b[..., 1], b[..., 2]
    return torch.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], dim=-1)


def project(points: Tensor, img_from_ego: Tensor, eps: float = 1e-3) -> tuple[Tensor, Tensor, Tensor]:
    """points: (B, N or 1, Q, 3) metres in ego@t0. img_from_ego: (B, N, 4, 4).
    Returns u, v (B, N, Q) pixels and depth d (B, N, Q) metres (d clamped to eps before dividing)."""
    rot = img_from_ego[..., :3, :3]  # (B, N, 3, 3)
    trans = img_from_ego[..., :3, 3]  # (B, N, 3)
    hom = points @ rot.transpose(-1, -2) + trans.unsqueeze(-2)  # (B, N, Q, 3): u*d, v*d, d
    d = hom[..., 2]
    d_safe = torch.clamp(d, min=eps)
    return hom[..., 0] / d_safe, hom[..., 1] / d_safe, d


def project_homogeneous(points: Tensor, img_from_ego: Tensor, eps: float = 1e-3) -> tuple[Tensor, Tensor, Tensor]:
    """points: (4, Q) homogeneous ego@t0 points as columns (a constant grid); img_from_ego: (B, N, 4, 4).
    Returns u, v (B, N, Q) pixels and depth d (B, N, Q) metres, as ``project``. One (3 x 4) @ (4 x Q) product
    per camera, the translation included and Q innermost (``project``'s (Q x 3) @ (3 x 3) product and the
    broadcast Add of the translation over an innermost axis of 3 were ONNX Runtime's slow path)."""
    hom = img_from_ego[..., :3, :] @ points  # (B, N, 3, Q): u*d, v*d, d
    d = hom[..., 2, :]
    d_safe = torch.clamp(d, min=eps)
    return hom[..., 0, :] / d_safe, hom[..., 1, :] / d_safe, d


def pixel_to_grid(u: Tensor, v: Tensor, width: int, height: int) -> Tensor:
    """Pixel coordinates (pixel centres at integers) -> grid_sample coordinates in [-1, 1] with
    align_corners=False: the image's left edge (u = -0.5) maps to -1 and its right edge to +1. A feature map of
    any stride covering the same image uses the same normalised coordinates. Returns (..., 2)."""
    return torch.stack([(u + 0.5) / width * 2.0 - 1.0, (v + 0.5) / height * 2.0 - 1.0], dim=-1)
