"""The fusion network, composed from its blocks by constructor injection in one readable ``build_model(cfg)``.

Inputs (``INPUT_NAMES``, all tensors, batch B, N cameras, P radar points, Pp pillars of Np points):

==================  =======================  ===============================================================
images              (B, N, 3, H, W) uint8    RGB, preprocessed by the shared data pipeline
img_from_ego        (B, N, 4, 4) float32     run-time calibration (a recalibrated vehicle needs no re-export)
camera_valid        (B, N) bool
radar_points        (B, P, F) float32        ego@t0 fields ``x y z rcs vx vy dt sensor`` (for radar-in-image)
radar_valid         (B, P) bool
pillar_features     (B, Pp, Np, 9) float32   ``perception.config.PILLAR_FEATURES`` per point: x y z rcs vx vy dt dx dy
pillar_point_mask   (B, Pp, Np) bool
pillar_cells        (B, Pp) int64            row * W + col on the BEV grid; padding H * W
pillar_mask         (B, Pp) bool
==================  =======================  ===============================================================

With ``model.temporal.enabled`` (``perception/model/temporal.py``) four more inputs follow
(``TEMPORAL_INPUT_NAMES``; omitted in PyTorch calls: a cold start):

==================  =======================  ===============================================================
prev_bev            (B, C, H, W) float32     an earlier frame's ``bev_state`` (C = model.fusion.channels)
cur_from_prev       (B, 4, 4) float32        current ego <- that frame's ego, as both BEVs see them
prev_dt             (B,) float32             t0 - that frame's t0, seconds
prev_valid          (B,) bool                False: no history (cold start); prev_bev is ignored
==================  =======================  ===============================================================

and one more output, ``bev_state`` (B, C, H, W): this frame's single-frame BEV, the ``prev_bev`` of a later call.

``forward`` returns the raw head maps (training); ``detect`` also decodes them in the graph to fixed-size
detections (``OUTPUT_NAMES`` of ``perception.model.decode``).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from perception.config import PILLAR_FEATURES, Config
from perception.model.bev_decoder import BevDecoder
from perception.model.camera.backbone import ResNet, load_pretrained
from perception.model.camera.depth import DepthNet, radar_image_features
from perception.model.camera.neck import FPNNeck
from perception.model.decode import BevGrid, Decoder
from perception.model.fusion import ConvFusion, CrossAttentionFusion
from perception.model.heads.center_head import CenterHead
from perception.model.heads.trajectory_head import TrajectoryHead
from perception.model.lift import BackwardLift, BevGridPoints, DepthBins
from perception.model.radar.encoder import PillarEncoder
from perception.model.temporal import TemporalFusion

INPUT_NAMES = ("images", "img_from_ego", "camera_valid", "radar_points", "radar_valid", "pillar_features",
               "pillar_point_mask", "pillar_cells", "pillar_mask")
TEMPORAL_INPUT_NAMES = ("prev_bev", "cur_from_prev", "prev_dt", "prev_valid")
STATE_OUTPUT = "bev_state"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class CameraBranch(nn.Module):
    """Images -> camera BEV: backbone, neck (stride 16), radar-assisted (and stereo) depth, backward lift."""

    def __init__(self, backbone: ResNet, neck: FPNNeck, depth: DepthNet, lift: BackwardLift,
                 image_hw: tuple[int, int], radar_field_index: dict[str, int],
                 radar_splat: Callable[..., Tensor] = radar_image_features):
        """``radar_splat``: the radar-in-image features, ``radar_image_features`` or a function of its signature
        (the dense defining form of ``tests/reference/model.py``, for before/after benchmarks)."""
        super().__init__()
        self.radar_splat = radar_splat
        self.backbone, self.neck, self.depth, self.lift = backbone, neck, depth, lift
        self.image_hw = tuple(image_hw)
        self.rcs_index, self.dt_index = radar_field_index["rcs"], radar_field_index["dt"]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0, persistent=False)

    def forward(self, images: Tensor, img_from_ego: Tensor, camera_valid: Tensor, radar_points: Tensor | None,
                radar_valid: Tensor | None) -> Tensor:
        b, n = images.shape[:2]
        x = (images.float().flatten(0, 1) - self.mean) / self.std  # (B*N, 3, H, W); cast first: TensorRT takes uint8 only at I/O and casts
        feats = self.neck(self.backbone(x))  # (B*N, C, Hf, Wf)
        feats = feats.view(b, n, *feats.shape[1:])  # (B, N, C, Hf, Wf)
        radar_img = None
        if self.depth.radar:
            radar_img = self.radar_splat(radar_points, radar_valid, img_from_ego, feats.shape[-2:], self.image_hw,
                              self.rcs_index, self.dt_index)  # (B, N, 4, Hf, Wf)
        prob, context = self.depth(feats, img_from_ego, self.image_hw, radar_img)
        return self.lift(context, prob, img_from_ego, camera_valid, self.image_hw)  # (B, C_bev, H, W)


class FusionNet(nn.Module):
    def __init__(self, *, camera: CameraBranch | None, radar: PillarEncoder | None, fusion: nn.Module,
                 bev_decoder: BevDecoder, center_head: CenterHead, trajectory_head: TrajectoryHead, decoder: Decoder,
                 class_names: tuple[str, ...], temporal: TemporalFusion | None = None, radar_skip: bool = False):
        super().__init__()
        if radar_skip and radar is None:
            raise ValueError("FusionNet: radar_skip needs the radar branch (model.radar.enabled)")
        self.camera, self.radar, self.fusion = camera, radar, fusion
        # the heads also read this frame's radar BEV (model.head.radar_skip): a short path from the Doppler
        # features to the velocity branch, past fusion, temporal fusion and the BEV decoder
        self.radar_skip = radar_skip
        self.bev_decoder, self.center_head, self.trajectory_head, self.decoder = (bev_decoder, center_head,
                                                                                  trajectory_head, decoder)
        self.class_names = tuple(class_names)
        self.temporal = temporal  # None: single frame (no temporal inputs or outputs, the graph as before)

    @property
    def input_names(self) -> tuple[str, ...]:
        """The graph's inputs in order: ``INPUT_NAMES``, then ``TEMPORAL_INPUT_NAMES`` when temporal."""
        return INPUT_NAMES + (TEMPORAL_INPUT_NAMES if self.temporal is not None else ())

    @property
    def state_shape(self) -> tuple[int, int, int] | None:
        """(C, H, W) of ``bev_state`` / ``prev_bev``; None for a single-frame network."""
        return None if self.temporal is None else (self.temporal.channels, *self.temporal.shape)

    def single_frame_bev(self, images: Tensor, img_from_ego: Tensor, camera_valid: Tensor, radar_points: Tensor,
                         radar_valid: Tensor, pillar_features: Tensor, pillar_point_mask: Tensor, pillar_cells: Tensor,
                         pillar_mask: Tensor) -> Tensor:
        """The fused camera + radar BEV of one frame, before any temporal fusion: (B, C, H, W). A temporal
        network's ``bev_state``; training computes the previous frame's with it (without gradient)."""
        return self._fuse(images, img_from_ego, camera_valid, radar_points, radar_valid, pillar_features,
                          pillar_point_mask, pillar_cells, pillar_mask)[0]

    def _fuse(self, images: Tensor, img_from_ego: Tensor, camera_valid: Tensor, radar_points: Tensor,
              radar_valid: Tensor, pillar_features: Tensor, pillar_point_mask: Tensor, pillar_cells: Tensor,
              pillar_mask: Tensor) -> tuple[Tensor, Tensor | None]:
        """(the fused BEV (B, C, H, W), the radar BEV (B, C_r, H, W) or None without the radar branch)."""
        cam_bev = self.camera(images, img_from_ego, camera_valid, radar_points, radar_valid) if self.camera else None
        rad_bev = self.radar(pillar_features, pillar_point_mask, pillar_cells, pillar_mask) if self.radar else None
        return self.fusion(cam_bev, rad_bev), rad_bev  # (B, C, H, W), (B, C_r, H, W) | None

    def forward(self, images: Tensor, img_from_ego: Tensor, camera_valid: Tensor, radar_points: Tensor,
                radar_valid: Tensor, pillar_features: Tensor, pillar_point_mask: Tensor, pillar_cells: Tensor,
                pillar_mask: Tensor, prev_bev: Tensor | None = None, cur_from_prev: Tensor | None = None,
                prev_dt: Tensor | None = None, prev_valid: Tensor | None = None) -> dict[str, Tensor]:
        """Shapes in the module docstring. Returns the head maps: CenterHead's ``heatmap``, ``offset``, ``z``,
        ``log_size``, ``rotation``, ``velocity`` and TrajectoryHead's ``offsets`` and ``mode_logits``, each
        (B, *, H, W) on the BEV grid; a temporal network also ``bev_state``. The temporal inputs are ignored by a
        single-frame network; a temporal one given none runs a cold start."""
        bev, rad_bev = self._fuse(images, img_from_ego, camera_valid, radar_points, radar_valid, pillar_features,
                                  pillar_point_mask, pillar_cells, pillar_mask)  # (B, C, H, W), (B, C_r, H, W)
        fused = bev
        if self.temporal is not None:
            if prev_bev is None:
                prev_bev, cur_from_prev, prev_dt, prev_valid = self.temporal.cold_inputs(bev)
            fused = self.temporal(bev, prev_bev, cur_from_prev, prev_dt, prev_valid)  # (B, C, H, W)
        x = self.bev_decoder(fused)  # (B, C, H, W)
        if self.radar_skip:
            x = torch.cat([x, rad_bev], 1)  # (B, C + C_r, H, W)
        out = self.center_head(x)
        traj = self.trajectory_head(x, out["velocity"])  # the velocity map: used with trajectory_residual
        out.update({"traj_offsets": traj["offsets"], "traj_mode_logits": traj["mode_logits"]})
        if self.temporal is not None:
            out[STATE_OUTPUT] = bev
        return out

    def detect(self, *inputs: Tensor) -> dict[str, Tensor]:
        """Decoded fixed-size detections (boxes, scores, labels, trajectories, mode_probs; ``bev_state`` too when
        temporal)."""
        out = self.forward(*inputs)
        det = self.decoder(out, {"offsets": out["traj_offsets"], "mode_logits": out["traj_mode_logits"]})
        if STATE_OUTPUT in out:
            det[STATE_OUTPUT] = out[STATE_OUTPUT]
        return det


def build_model(cfg: Config, stereo_pairs: tuple[tuple[int, int], ...] = (), *,
                lift_voxels: Callable[..., Tensor] | None = None,
                radar_splat: Callable[..., Tensor] = radar_image_features, init_weights: bool = True) -> FusionNet:
    """The network of ``cfg.model`` for the input of ``cfg.data`` (image size, BEV grid, radar fields).
    ``stereo_pairs``: (left, right) camera indices of the rig (its topology is part of the network; the
    calibration is a run-time input). Ignored when ``model.camera.stereo.enabled`` is false.
    ``lift_voxels`` / ``radar_splat``: other forms of the camera lift and the radar-in-image splat (same weights,
    same function: the defining forms of ``tests/reference/model.py``, for before/after benchmarks).
    ``init_weights``: load ``model.camera.pretrained`` into the backbone (False when a checkpoint's weights follow)."""
    m, d = cfg.model, cfg.data
    bev_shape = d.grid.bev_shape
    camera = None
    if m.camera.enabled:
        c = m.camera
        backbone = ResNet(depth=c.backbone_depth, width=c.backbone_width, blocks=c.backbone_blocks,
                          out_indices=(2, 3), norm=m.norm, frozen_stages=c.frozen_stages)
        if c.pretrained and init_weights:  # init_weights=False: a checkpoint's weights follow (no file needed)
            load_pretrained(backbone, c.pretrained)
        neck = FPNNeck(backbone.out_channels, c.neck_channels, norm=m.norm)
        bins = DepthBins(c.depth_range[0], c.depth_range[1], c.depth_bins)
        stereo = tuple((int(a), int(b)) for a, b in stereo_pairs) if c.stereo.enabled else ()
        depth = DepthNet(c.neck_channels, c.neck_channels, bins, radar=c.radar_depth.enabled and m.radar.enabled,
                         stereo_pairs=stereo)
        grid = BevGridPoints(d.grid.x_range, d.grid.y_range, d.grid.z_range, bev_shape, c.heights)
        lift = BackwardLift(c.neck_channels, m.bev_channels, grid, bins, c.cameras_per_voxel, lift_voxels)
        camera = CameraBranch(backbone, neck, depth, lift, d.image_size,
                              {name: i for i, name in enumerate(d.radar.fields)}, radar_splat)
    radar = PillarEncoder(len(PILLAR_FEATURES), m.radar.channels, bev_shape) if m.radar.enabled else None
    f = m.fusion
    if f.kind == "cross_attention":
        fusion: nn.Module = CrossAttentionFusion(m.bev_channels, m.radar.channels, f.channels, f.layers, f.heads, f.points,
                                                 bev_shape, camera_enabled=m.camera.enabled,
                                                 radar_enabled=m.radar.enabled)
    else:
        fusion = ConvFusion(m.bev_channels, m.radar.channels, f.channels, camera_enabled=m.camera.enabled,
                            radar_enabled=m.radar.enabled)
    bev_decoder = BevDecoder(f.channels, f.channels)
    skip = m.head.radar_skip.enabled  # the config refuses it without the radar branch
    head_in = f.channels + (m.radar.channels if skip else 0)
    center = CenterHead(head_in, len(cfg.classes), m.head.channels)
    trajectory = TrajectoryHead(head_in, m.head.modes, m.head.steps, m.head.channels,
                                residual=m.head.trajectory_residual.enabled)
    decoder = Decoder(BevGrid(d.grid.x_range, d.grid.y_range, bev_shape), m.head.max_detections)
    temporal = TemporalFusion(f.channels, d.grid.x_range, d.grid.y_range, bev_shape) if m.temporal.enabled else None
    return FusionNet(camera=camera, radar=radar, fusion=fusion, bev_decoder=bev_decoder, center_head=center,
                     trajectory_head=trajectory, decoder=decoder, class_names=cfg.classes, temporal=temporal,
                     radar_skip=skip)
