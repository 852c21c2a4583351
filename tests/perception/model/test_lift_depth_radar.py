"""Lift, depth (radar-in-image, stereo plane sweep), radar encoder: geometry golden checks and references."""
import numpy as np
import pytest
import torch

from calibration.transforms import make_transform, quaternion_to_matrix, yaw_to_quaternion
import torch.nn.functional as F

from perception.model.camera.depth import DepthNet, plane_sweep_cost, radar_image_features
from perception.model.geometry import inverse_projective
from perception.coverage import cameras_seeing
from perception.model.lift import (BackwardLift, BevGridPoints, DepthBins, atlas_grid, camera_slots, depth_at_voxels,
                                   depth_probability, side_by_side)
from perception.model.radar.encoder import PillarEncoder, scatter_to_canvas
from reference.data import scatter_reference
from reference.model import depth_probability_tent, lift_voxels, radar_image_features_dense

FORWARD = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float)  # ego_from_camera rotation, looking along +x
H_IMG, W_IMG = 128, 352


def camera_matrix(yaw_deg: float = 0.0, position=(1.5, 0.0, 1.5), f: float = 280.0) -> torch.Tensor:
    """(4, 4) img_from_ego of a camera at ``position`` looking along yaw, image 128 x 352."""
    rot = quaternion_to_matrix(yaw_to_quaternion(np.radians(yaw_deg))) @ FORWARD
    ego_from_cam = make_transform(rot, position)
    k = np.eye(4)
    k[:3, :3] = [[f, 0, W_IMG / 2 - 0.5], [0, f, H_IMG / 2 - 0.5], [0, 0, 1]]
    return torch.tensor(k @ np.linalg.inv(ego_from_cam), dtype=torch.float32)


def test_inverse_projective():
    m = torch.stack([camera_matrix(0), camera_matrix(70, (0.5, 0.8, 1.6))])
    np.testing.assert_allclose((inverse_projective(m) @ m).numpy(), np.tile(np.eye(4), (2, 1, 1)), atol=1e-5)


def test_depth_interpolation_equals_direct():
    bins = DepthBins(1.0, 60.0, 48)
    rng = np.random.default_rng(0)
    p = rng.random((3, 48)).astype(np.float32)
    depth = rng.uniform(0.0, 62.0, (3,)).astype(np.float32)
    out = depth_probability(torch.tensor(p)[..., None], torch.tensor(depth)[..., None], bins)[:, 0].numpy()
    for i in range(3):
        t = (depth[i] - 1.0) / bins.width - 0.5
        k = int(np.floor(t))
        a = t - k
        direct = (1 - a) * (p[i, k] if 0 <= k < 48 else 0.0) + a * (p[i, k + 1] if 0 <= k + 1 < 48 else 0.0)
        assert out[i] == pytest.approx(direct, abs=1e-5)
    # the gather form used in the network equals the dense tent form on a whole map
    p = torch.rand(4, 48, 500)
    dep = torch.rand(4, 500) * 70.0 - 5.0
    torch.testing.assert_close(depth_probability(p, dep, bins), depth_probability_tent(p, dep, bins))


def test_feature_at_projected_pixel_arrives_in_its_bev_cell():
    """A feature placed where a known 3D point projects, with the depth distribution at that point's depth,
    lifts into that point's BEV cell (and nowhere else along the camera ray)."""
    grid = BevGridPoints((-51.2, 51.2), (-51.2, 51.2), (-5.0, 3.0), (64, 64), 8)
    bins = DepthBins(1.0, 60.0, 48)
    lift = BackwardLift(4, 8, grid, bins)
    m = camera_matrix(0.0)
    hf, wf = H_IMG, W_IMG  # full-resolution features: the sampled pixel is exact
    for cell_i, cell_j, zi in ((44, 33, 4), (40, 28, 5), (52, 36, 4)):
        x = -51.2 + (cell_i + 0.5) * 1.6
        y = -51.2 + (cell_j + 0.5) * 1.6
        z = -5.0 + (zi + 0.5) * 1.0
        hom = m.numpy() @ np.array([x, y, z, 1.0])
        u, v, d = hom[0] / hom[2], hom[1] / hom[2], hom[2]
        feats = torch.zeros(1, 1, 4, hf, wf)
        feats[0, 0, :, int(round(v)), int(round(u))] = 1.0
        prob = torch.zeros(1, 1, 48, hf, wf)
        prob[0, 0, int(np.clip(np.floor((d - 1.0) / bins.width), 0, 47))] = 1.0  # the bin containing the point
        vox = lift_voxels(lift, feats, prob, m.view(1, 1, 4, 4), torch.ones(1, 1, dtype=torch.bool), (H_IMG, W_IMG))
        bev = vox[0, 0].sum(0)  # (H, W)
        assert bev.max() > 0.05
        assert np.unravel_index(int(bev.argmax()), bev.shape) == (cell_i, cell_j)
    # an invalid camera lifts nothing
    vox = lift_voxels(lift, feats, prob, m.view(1, 1, 4, 4), torch.zeros(1, 1, dtype=torch.bool), (H_IMG, W_IMG))
    assert vox.abs().max() == 0


def _ring_rig(b: int, n: int, f: float = 280.0) -> torch.Tensor:
    """(B, N, 4, 4): N cameras around the car at different positions (every camera sees part of the grid); at
    the default focal length (64 deg wide, 60 deg apart) neighbours overlap pairwise only."""
    cams = torch.stack([camera_matrix(360.0 * i / n, (1.0 - 0.3 * i, 0.2 * i, 1.4 + 0.05 * i), f) for i in range(n)])
    return cams[None].repeat(b, 1, 1, 1)


def _seen_by(grid: BevGridPoints, rig: torch.Tensor, bins: DepthBins) -> np.ndarray:
    """(Z, H, W) how many cameras of ``rig`` (1, N, 4, 4) see each voxel (perception.coverage, numpy)."""
    return cameras_seeing(grid.points.numpy(), rig[0].numpy(), (H_IMG, W_IMG), bins.min_depth).reshape(grid.shape)


@pytest.mark.parametrize("cameras_per_voxel", [0, 2, 3])
def test_lift_forward_equals_the_defining_form(cameras_per_voxel):
    """forward (reduce conv folded into per-height projections before sampling, depth read at two stacked rows,
    the cameras side by side in one atlas and each voxel sampling only its K visible cameras) equals
    reduce(lift_voxels) with heights folded into channels c * Z + z: multi-camera ring where neighbours overlap
    (K = 2 is exact there), an invalid camera, non-trivial BatchNorm statistics. A wrong weight order (z * C + c),
    stacked-row offset or atlas column fails this."""
    torch.manual_seed(0)
    grid = BevGridPoints((-51.2, 51.2), (-51.2, 51.2), (-5.0, 3.0), (32, 32), 8)
    bins = DepthBins(1.0, 60.0, 48)
    seen = _seen_by(grid, _ring_rig(1, 6), bins)
    assert seen.max() == 2 and (seen == 2).sum() > 500  # the second slot matters, no voxel needs a third
    lift = BackwardLift(16, 12, grid, bins, cameras_per_voxel).eval()
    lift.reduce[1].running_mean.normal_()
    lift.reduce[1].running_var.uniform_(0.5, 2.0)
    b, n, hf, wf = 2, 6, 8, 22
    feats = torch.randn(b, n, 16, hf, wf)
    prob = torch.randn(b, n, 48, hf, wf).mul(3.0).softmax(2)
    valid = torch.ones(b, n, dtype=torch.bool)
    valid[1, 2] = False
    with torch.no_grad():
        out = lift(feats, prob, _ring_rig(b, n), valid, (H_IMG, W_IMG))
        vox = lift_voxels(lift, feats, prob, _ring_rig(b, n), valid, (H_IMG, W_IMG))
        ref = lift.reduce(vox.reshape(b, -1, 32, 32))
    assert out.shape == (b, 12, 32, 32)
    assert (ref - ref.amin()).abs().max() > 1.0  # not a constant map
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # gradients reach the reduce conv's weight through the folded form
    lift.train()
    lift(feats, prob, _ring_rig(b, n), valid, (H_IMG, W_IMG)).square().mean().backward()
    assert lift.reduce[0].weight.grad.abs().sum() > 0


def test_lift_with_k_slots_drops_only_the_cameras_beyond_k():
    """A wide-angle ring (125 deg cameras 60 deg apart) where up to 3 cameras see a voxel: with K = 2 the lift
    equals the defining form in every BEV cell whose voxels are seen by at most 2 cameras, and differs in the
    cells with a voxel seen by 3 (that voxel's third camera is left out); with K = 3 it is equal everywhere.
    Also checks perception.coverage's count, which picks the cells."""
    torch.manual_seed(3)
    grid = BevGridPoints((-51.2, 51.2), (-51.2, 51.2), (-5.0, 3.0), (32, 32), 8)
    bins = DepthBins(1.0, 60.0, 48)
    rig = _ring_rig(1, 6, f=90.0)
    seen = _seen_by(grid, rig, bins)
    assert seen.max() == 3
    over = torch.from_numpy(seen.max(axis=0) > 2)  # (H, W) cells with a voxel seen by 3 cameras
    assert 20 < int(over.sum()) < 32 * 32 - 200
    feats = torch.randn(1, 6, 16, 8, 22)
    prob = torch.randn(1, 6, 48, 8, 22).mul(3.0).softmax(2)
    valid = torch.ones(1, 6, dtype=torch.bool)
    lifts = {k: BackwardLift(16, 12, grid, bins, k).eval() for k in (2, 3)}
    lifts[3].load_state_dict(lifts[2].state_dict())  # the same weights: K is not a parameter
    with torch.no_grad():
        ref = lifts[2].reduce(lift_voxels(lifts[2], feats, prob, rig, valid, (H_IMG, W_IMG)).reshape(1, -1, 32, 32))
        got = {k: lift(feats, prob, rig, valid, (H_IMG, W_IMG)) for k, lift in lifts.items()}
    torch.testing.assert_close(got[3], ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[2][..., ~over], ref[..., ~over], rtol=1e-5, atol=1e-5)
    differs = ((got[2] - ref).abs() > 1e-4).any(dim=1)[0]  # (H, W)
    assert differs[over].float().mean() > 0.9


def test_camera_slots_keep_the_lowest_visible_cameras():
    valid = torch.tensor([[[1, 0, 1, 1, 0],    # camera 0 sees voxels 0, 2, 3
                           [1, 1, 0, 1, 0],    # camera 1
                           [0, 1, 1, 1, 0],    # camera 2
                           [1, 1, 1, 1, 0]]],  # camera 3: voxel 3 is seen by all four, voxel 4 by none
                         dtype=torch.bool)
    camera, ok = camera_slots(valid, 2)
    assert camera.shape == ok.shape == (1, 2, 5)
    assert camera[0, :, :4].T.tolist() == [[0, 1], [1, 2], [0, 2], [0, 1]]
    assert ok[0, :, :4].all() and not ok[0, :, 4].any()
    assert len(set(camera[0, :, 4].tolist())) == 2  # distinct cameras even where none sees the voxel
    camera, ok = camera_slots(valid, 3)
    assert camera[0, :, 0].tolist() == [0, 1, 3] and ok[0, :, 0].all()
    assert camera[0, :2, 1].tolist() == [1, 2] and ok[0, :, 1].tolist() == [True, True, True]
    assert camera[0, :, 2].tolist() == [0, 2, 3]
    assert ok[0, :, 4].tolist() == [False, False, False]
    valid_one = torch.tensor([[[0], [1], [0]]], dtype=torch.bool)
    camera, ok = camera_slots(valid_one, 2)
    assert camera[0, 0, 0] == 1 and ok[0, :, 0].tolist() == [True, False]


def test_atlas_sampling_equals_each_cameras_own_map():
    """Sampling the side-by-side atlas at atlas_grid(g, n) == sampling camera n's own map at g (zeros padding),
    for points anywhere in [-1, 1] x [-1, 1], the four edges and corners included."""
    torch.manual_seed(4)
    b, n, c, h, w = 2, 4, 5, 6, 9
    maps = torch.randn(b, n, c, h, w)
    q = 3000
    g = torch.rand(b, q, 2) * 2.0 - 1.0
    g[:, :100, 0] = torch.tensor([-1.0, 1.0]).repeat(50)  # left and right edges
    g[:, 100:200, 1] = torch.tensor([-1.0, 1.0]).repeat(50)  # top and bottom edges
    g[:, 200:204] = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
    camera = torch.randint(0, n, (b, q))
    atlas = side_by_side(maps)
    assert atlas.shape == (b, c, h, n * (w + 1))
    got = F.grid_sample(atlas, atlas_grid(g, camera, w, n).view(b, q, 1, 2), mode="bilinear",
                        padding_mode="zeros", align_corners=False)[..., 0]  # (B, C, Q)
    own = F.grid_sample(maps.view(b * n, c, h, w), g.repeat_interleave(n, 0).view(b * n, q, 1, 2),
                        mode="bilinear", padding_mode="zeros", align_corners=False)[..., 0].view(b, n, c, q)
    ref = torch.gather(own, 1, camera.view(b, 1, 1, q).expand(b, 1, c, q))[:, 0]
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_depth_at_voxels_equals_sampling_every_bin():
    """The two-channel stacked map (lower / upper bin) sampled at one point == all D channels sampled then
    interpolated, including the half pixel at every image edge (zeros padding), depths below the first and above
    the last bin centre (a zero bin on either side) and points outside the image."""
    torch.manual_seed(1)
    bins = DepthBins(2.0, 58.0, 112)
    s, q, hf, wf = 3, 4000, 16, 44
    prob = torch.rand(s, 112, hf, wf)
    g = torch.rand(s, q, 2) * 2.4 - 1.2  # 1/6 of the points outside [-1, 1]
    g[:, :40, 1] = torch.linspace(-1.0, 1.0, 40)  # rows along the whole height, edges included
    g[:, 40:80, 0] = torch.linspace(-1.0, 1.0, 40)
    depth = torch.rand(s, q) * 64.0 - 2.0
    sampled = F.grid_sample(prob, g.view(s, q, 1, 2), mode="bilinear", padding_mode="zeros",
                            align_corners=False)[..., 0]  # (S, D, Q)
    ref = depth_probability(sampled, depth, bins)
    inside = (g.abs() <= 1.0).all(-1)
    # float32 rounding of a normalised coordinate addressing 113 x 17 = 1921 stacked rows: ~6e-5 row, so up to
    # ~6e-5 x (difference of neighbouring values <= 1); one row off would be errors of ~0.3 on these maps
    torch.testing.assert_close(depth_at_voxels(prob, g, depth, bins)[inside], ref[inside], rtol=0, atol=2e-4)


def test_radar_image_features_separable_equals_dense():
    torch.manual_seed(2)
    pts = torch.randn(2, 300, 7) * torch.tensor([25.0, 25.0, 1.0, 10.0, 1.0, 1.0, 0.2])
    valid = torch.rand(2, 300) > 0.2
    m = _ring_rig(2, 6)
    fast = radar_image_features(pts, valid, m, (8, 22), (H_IMG, W_IMG), 3, 6)
    dense = radar_image_features_dense(pts, valid, m, (8, 22), (H_IMG, W_IMG), 3, 6)
    assert (dense[:, :, 0] > 0.01).float().mean() > 0.2  # the points cover a good part of the images
    torch.testing.assert_close(fast, dense, rtol=1e-4, atol=1e-5)


def _render_plane(m: np.ndarray, plane_x: float, tex) -> np.ndarray:
    """Image (3, H, W) of a fronto-parallel plane x = plane_x (ego) textured by tex(y, z)."""
    inv = np.linalg.inv(m)
    v, u = np.mgrid[0:H_IMG, 0:W_IMG].astype(np.float64)
    # a point on the pixel's ray at depth 1 and at depth 2 (camera z), then intersect x = plane_x
    p1 = np.stack([u, v, np.ones_like(u), np.ones_like(u)], -1) @ inv.T
    p2 = np.stack([2 * u, 2 * v, 2 * np.ones_like(u), np.ones_like(u)], -1) @ inv.T
    t = (plane_x - p1[..., 0]) / (p2[..., 0] - p1[..., 0])
    pt = p1[..., :3] + t[..., None] * (p2[..., :3] - p1[..., :3])
    return tex(pt[..., 1], pt[..., 2])


def test_stereo_cost_volume_peaks_at_the_plane_depth():
    bins = DepthBins(1.0, 60.0, 48)
    rng = np.random.default_rng(1)
    freqs = rng.uniform(0.5, 3.0, (3, 6, 2))
    phases = rng.uniform(0, 6.3, (3, 6))

    def tex(y, z):
        return np.stack([sum(np.sin(freqs[c, k, 0] * y * 3 + freqs[c, k, 1] * z * 3 + phases[c, k]) for k in range(6))
                         for c in range(3)]).astype(np.float32)

    left, right = camera_matrix(0.0, (1.5, 0.25, 1.5)), camera_matrix(0.0, (1.5, -0.25, 1.5))
    for depth in (6.0, 12.0, 25.0):
        plane_x = 1.5 + depth  # camera depth = distance along x
        fl = torch.tensor(_render_plane(left.numpy().astype(np.float64), plane_x, tex))[None]
        fr = torch.tensor(_render_plane(right.numpy().astype(np.float64), plane_x, tex))[None]
        cost = plane_sweep_cost(fl, fr, left[None], right[None], bins, (H_IMG, W_IMG))  # (1, D, H, W)
        centre = cost[0, :, 40:90, 120:240].mean(dim=(1, 2))  # where both cameras see the plane
        best = float(bins.centres()[int(centre.argmax())])
        # one bin changes the disparity by f B dz / z^2: 1.2 px at 12 m but 0.28 px at 25 m (sub-pixel)
        assert abs(best - depth) <= (bins.width if depth <= 12 else 2 * bins.width), (depth, best)


def test_depthnet_stereo_pairs_static_and_finite():
    bins = DepthBins(1.0, 60.0, 16)
    net = DepthNet(8, 8, bins, radar=True, stereo_pairs=((0, 1),))
    feats = torch.randn(2, 3, 8, 8, 22)
    m = torch.stack([camera_matrix(0, (1.5, 0.25, 1.5)), camera_matrix(0, (1.5, -0.25, 1.5)), camera_matrix(180)])
    radar = torch.randn(2, 3, 4, 8, 22)
    prob, ctx = net(feats, m.expand(2, 3, 4, 4), (H_IMG, W_IMG), radar)
    assert prob.shape == (2, 3, 16, 8, 22) and ctx.shape == (2, 3, 8, 8, 22)
    torch.testing.assert_close(prob.sum(2), torch.ones(2, 3, 8, 22))
    assert torch.isfinite(prob).all()


def test_radar_image_features_land_on_the_projected_cell():
    m = camera_matrix(0.0)
    pts = torch.tensor([[[20.0, 2.0, 0.5, 10.0, 0, 0, 0.1]]])  # x y z rcs vx vy dt
    feat = radar_image_features(pts, torch.ones(1, 1, dtype=torch.bool), m.view(1, 1, 4, 4), (8, 22), (H_IMG, W_IMG),
                                rcs_index=3, dt_index=6)
    hom = m.numpy() @ np.array([20.0, 2.0, 0.5, 1.0])
    u = hom[0] / hom[2]
    occ = feat[0, 0, 0]
    j = int(occ.max(0).values.argmax())
    assert abs(j - (u + 0.5) / 16 + 0.5) <= 1.0
    peak = np.unravel_index(int(occ.argmax()), occ.shape)
    assert feat[0, 0, 1][peak] == pytest.approx(np.log(hom[2]), rel=5e-3)  # log depth (weighted mean, eps 1e-3)
    assert feat[0, 0, 2][peak] == pytest.approx(0.5, rel=5e-3)  # rcs / 20
    # invalid points contribute nothing
    none = radar_image_features(pts, torch.zeros(1, 1, dtype=torch.bool), m.view(1, 1, 4, 4), (8, 22),
                                (H_IMG, W_IMG), 3, 6)
    assert none[:, :, 0].abs().max() == 0


def test_scatter_equals_reference_and_encoder_ignores_padding():

    rng = np.random.default_rng(2)
    h, w, p, c = 16, 12, 20, 5
    cells = rng.choice(h * w, size=p, replace=False).astype(np.int64)
    mask = rng.random(p) < 0.7
    cells[~mask] = h * w
    feats = rng.normal(size=(p, c)).astype(np.float32)
    out = scatter_to_canvas(torch.tensor(feats)[None], torch.tensor(cells)[None], torch.tensor(mask)[None], (h, w))
    ref = scatter_reference(feats * mask[:, None], cells, (h, w))
    np.testing.assert_allclose(out[0].numpy(), ref, atol=1e-6)
    enc = PillarEncoder(9, 16, (h, w)).eval()
    x = torch.randn(1, p, 4, 9)
    pm = torch.rand(1, p, 4) < 0.6
    y1 = enc(x, pm, torch.tensor(cells)[None], torch.tensor(mask)[None])
    x2 = x.clone()
    x2[~pm] = 1e3  # padded points changed: no effect
    y2 = enc(x2, pm, torch.tensor(cells)[None], torch.tensor(mask)[None])
    torch.testing.assert_close(y1, y2)
    assert y1.shape == (1, 16, h, w)
