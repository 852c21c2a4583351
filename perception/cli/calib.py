"""perception-calib: validate, convert, project with and visualise a sensor rig."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from calibration.io import (
    load_rig,
    rig_from_kitti,
    rig_from_mmdet3d_info,
    rig_from_nuscenes,
    save_rig,
)
from calibration.rig import CalibrationError, Camera, Rig
from calibration.transforms import project_points, transform_points
from perception.cli.common import EXIT_OK, HelpFormatter, number, parse_size, run
from perception.data.io import KEEP_ALL, DEVKIT_DEFAULT, SensorFileError, image_size, read_image, read_points
from perception.outputs import atomic_file, check_file_target

EXAMPLES = {
    "validate": ["perception-calib validate configs/rigs/nuscenes.yaml",
                 "perception-calib validate my_vehicle.yaml --config configs/nuscenes_r18_256x704.yaml   # + lift overlap"],
    "convert": [
        "perception-calib convert --from nuscenes --dataroot data/nuscenes --version v1.0-mini \\\n"
        "      --sample-token ca9a282c9e77460f8360f564131a8af5 --out rig.yaml",
        "perception-calib convert --from kitti calib/00549.txt --image image_2/00549.jpg --out vod.yaml",
        "perception-calib convert --from mmdet3d-info nuscenes_infos_val.pkl --index 0 --out rig.yaml",
    ],
    "project": ["perception-calib project --rig rig.yaml --channel CAM_FRONT --points pts.npy --out uvd.npy"],
    "overlay": [
        "perception-calib overlay --rig vod.yaml --image CAM_FRONT=image_2/00549.jpg \\\n"
        "      --points velodyne/00549.bin --points-format vod-radar --out overlay.png",
        "perception-calib overlay --rig vod.yaml --image CAM_FRONT=image_2/00549.jpg --points velodyne/00549.bin \\\n"
        "      --points-format vod-radar --color-by doppler --labels label_2/00549.json --out doppler.png",
        "perception-calib overlay --rig rig.yaml --image CAM_FRONT=f.jpg --image CAM_BACK=b.jpg --points top.pcd.bin \\\n"
        "      --frame sensor:LIDAR_TOP --info nuscenes_infos_val.pkl --index 0 --out mosaic.png   # + GT boxes",
        "perception-calib overlay --rig rig.yaml --image CAM_FRONT=front.jpg --points sweep.pcd \\\n"
        "      --frame sensor:RADAR_FRONT --out overlay.png",
    ],
}
EXIT_CODES = "exit codes: 0 ok; 1 invalid input (the message names file, sensor, field and value); 2 bad arguments."


def _examples(*commands: str) -> str:
    lines = [f"  {e}" for c in commands for e in EXAMPLES[c]]
    return "examples:\n" + "\n".join(lines) + "\n\n" + EXIT_CODES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="perception-calib",
        description="Validate a rig YAML, convert calibration from nuScenes / KITTI (View-of-Delft) / mmdet3d info "
                    "files into one, project ego-frame points into a camera, and draw points over an image.",
        epilog=_examples(*EXAMPLES), formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    v = sub.add_parser("validate", help="check a rig YAML; exit 0 with a summary, 1 with the problem",
                       formatter_class=HelpFormatter, epilog=_examples("validate"))
    v.add_argument("rig", help="rig YAML file")
    v.add_argument("--config", help="also count, at this config's input size and BEV grid, how many cameras see "
                                    "each voxel of the camera lift against model.camera.cameras_per_voxel "
                                    "(a second line; a warning on stderr if the rig overlaps more)")

    c = sub.add_parser("convert", help="write a rig YAML from another calibration format",
                       formatter_class=HelpFormatter, epilog=_examples("convert"))
    c.add_argument("--from", dest="source_format", required=True, choices=["nuscenes", "kitti", "mmdet3d-info"],
                   help="input format")
    c.add_argument("source", nargs="?", help="calib .txt (kitti) or info .pkl (mmdet3d-info)")
    c.add_argument("--out", required=True, help="rig YAML to write")
    c.add_argument("--name", help="rig name (default: derived from the source)")
    c.add_argument("--dataroot", help="nuScenes root (nuscenes)")
    c.add_argument("--version", help="nuScenes version folder, e.g. v1.0-mini (nuscenes)")
    c.add_argument("--sample-token", help="sample whose calibrated_sensor rows to use (nuscenes)")
    c.add_argument("--image-size", type=parse_size, help="WxH of the images, when the source does not carry it")
    c.add_argument("--image", help="an image file to read the size from (kitti)")
    c.add_argument("--index", type=number(int, min=0), default=0, help="entry of data_list (mmdet3d-info)")
    c.add_argument("--camera", default="CAM_FRONT", help="camera channel name (kitti)")
    c.add_argument("--radar", default="RADAR_FRONT", help="radar channel name (kitti)")

    pr = sub.add_parser(
        "project", help="project ego-frame points into one camera", formatter_class=HelpFormatter,
        epilog="POINTS: (N, 3) float in the ego frame (metres). UVD: (N, 3) u, v in pixels and depth in metres\n"
               "(depth <= 0: behind the camera, u and v are NaN).\n\n" + _examples("project"))
    pr.add_argument("--rig", required=True)
    pr.add_argument("--channel", required=True, help="camera channel")
    pr.add_argument("--points", required=True, help=".npy (N, 3) ego-frame points")
    pr.add_argument("--out", required=True, help=".npy (N, 3) output")

    o = sub.add_parser("overlay", help="draw points (and GT boxes) over one or several camera images",
                       formatter_class=HelpFormatter, epilog=_examples("overlay"))
    o.add_argument("--rig", required=True)
    o.add_argument("--image", required=True, action="append", metavar="CHANNEL=PATH",
                   help="camera channel and its image; repeat for a mosaic (up to 3 per row, 800 px wide each)")
    o.add_argument("--points", required=True, help="radar .pcd, lidar .pcd.bin, View-of-Delft .bin or .npy")
    o.add_argument("--points-format", default="auto",
                   choices=["auto", "nuscenes-radar", "nuscenes-lidar", "vod-radar", "kitti-lidar", "npy"],
                   help="point file format; 'auto' decides by suffix (.pcd, .pcd.bin, .npy)")
    o.add_argument("--frame", default="ego", metavar="ego|sensor:CHANNEL",
                   help="frame the points are in: the ego frame, or a sensor of the rig (its mount is applied)")
    o.add_argument("--radar-filter", default="none", choices=["none", "devkit"],
                   help="nuScenes radar PCD only: keep every return, or apply the devkit's default state filters")
    o.add_argument("--color-by", default="depth", choices=["depth", "doppler", "rcs"],
                   help="point colour: depth from the camera; radial Doppler (compensated: VoD v_r_compensated, "
                        "nuScenes vx_comp/vy_comp along the line of sight; + moving away); radar cross-section")
    o.add_argument("--info", metavar="FILE.pkl", help="draw the GT boxes of this mmdet3d v1.1 info file's entry --index "
                                                      "(boxes in the lidar frame, carried to ego by its lidar2ego)")
    o.add_argument("--index", type=int, default=0, help="entry of --info")
    o.add_argument("--labels", metavar="FILE.json", help="draw the GT boxes of a View-of-Delft label_2 JSON (in the "
                                                         "radar frame after VoD's 180 degree x flip; carried to ego by "
                                                         "the rig's first radar)")
    o.add_argument("--out", required=True, help="PNG to write")
    return p


def _cmd_validate(args: argparse.Namespace) -> int:
    rig = load_rig(args.rig)
    print(f"ok: {args.rig}: {rig.summary()}")
    if args.config:
        from perception.config import load_config
        from perception.coverage import rig_coverage

        cov = rig_coverage(load_config(args.config), rig)
        line = f"{args.config}: {cov.summary()}"
        print(f"warning: {line}" if cov.voxels_over else line, file=sys.stderr if cov.voxels_over else sys.stdout)
    return EXIT_OK


def _cmd_convert(args: argparse.Namespace) -> int:
    fmt = args.source_format
    if fmt == "nuscenes":
        missing = [f"--{n.replace('_', '-')}" for n in ("dataroot", "version", "sample_token") if not getattr(args, n)]
        if missing:
            raise CalibrationError("convert", missing[0], None, "is required with --from nuscenes")
        from nuscenes.nuscenes import NuScenes

        if not (Path(args.dataroot) / args.version).is_dir():
            raise FileNotFoundError(f"{Path(args.dataroot) / args.version} does not exist: check --dataroot and --version")
        nusc = NuScenes(version=args.version, dataroot=args.dataroot, verbose=False)
        try:
            nusc.get("sample", args.sample_token)
        except KeyError:
            raise CalibrationError("convert", "--sample-token", args.sample_token,
                                   f"is not a sample of {args.version}") from None
        rig = rig_from_nuscenes(nusc, args.sample_token, args.name, args.image_size)
    elif fmt == "kitti":
        if not args.source:
            raise CalibrationError("convert", "source", None, "is required: the KITTI calib .txt file")
        size = args.image_size or (image_size(args.image) if args.image else None)
        if size is None:
            raise CalibrationError("convert", "--image-size", None, "is required with --from kitti",
                                   "pass --image-size WxH or --image PATH")
        rig = rig_from_kitti(args.source, size, args.camera, args.radar, args.name)
    else:
        if not args.source:
            raise CalibrationError("convert", "source", None, "is required: the mmdet3d info .pkl file")
        rig = rig_from_mmdet3d_info(args.source, args.index, args.image_size, name=args.name)
    save_rig(rig, args.out)
    print(f"wrote {args.out}: {rig.summary()}")
    return EXIT_OK


def _camera(rig: Rig, channel: str, source: str) -> Camera:
    if channel not in rig.cameras:
        raise CalibrationError(channel, "channel", channel, f"is not a camera of {source}",
                               f"cameras: {rig.camera_names}")
    return rig.cameras[channel]


def _cmd_project(args: argparse.Namespace) -> int:
    rig = load_rig(args.rig)
    cam = _camera(rig, args.channel, args.rig)
    try:
        pts = np.load(args.points, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise SensorFileError(args.points, f"not a readable .npy array ({err})") from None
    if pts.ndim != 2 or pts.shape[1] != 3 or not np.issubdtype(pts.dtype, np.number):
        raise SensorFileError(args.points, f"points have shape {pts.shape} dtype {pts.dtype}; expected (N, 3) numbers")
    finite = np.isfinite(pts).all(axis=1)
    if not finite.all():
        raise SensorFileError(args.points, f"{int((~finite).sum())} of {len(pts)} points hold NaN or inf (first: row "
                                           f"{int(np.argmin(finite))})", "drop or fix those points")
    uvd = project_points(cam.img_from_ego, pts)
    with atomic_file(args.out) as tmp, open(tmp, "wb") as f:
        np.save(f, uvd)
    n_in = int(np.sum((uvd[:, 2] > 0) & (uvd[:, 0] >= 0) & (uvd[:, 0] < cam.width)
                      & (uvd[:, 1] >= 0) & (uvd[:, 1] < cam.height)))
    print(f"wrote {args.out}: {len(uvd)} points, {n_in} inside the {cam.width}x{cam.height} image of {cam.name}")
    return EXIT_OK


def _overlay_camera(rig: Rig, rig_path: str, spec: str) -> tuple[str, np.ndarray, Camera]:
    """'CHANNEL=PATH' -> (channel, image, camera scaled to the image's size when it has the rig's aspect)."""
    if "=" not in spec:
        raise CalibrationError("overlay", "--image", spec, "must be CHANNEL=PATH, e.g. CAM_FRONT=front.jpg")
    channel, _, img_path = spec.partition("=")
    cam = _camera(rig, channel, rig_path)
    image = read_image(img_path)
    h, w = image.shape[:2]
    if (w, h) != (cam.width, cam.height):
        scale = w / cam.width
        if abs(h / cam.height - scale) > 1e-3:
            raise CalibrationError(channel, "width/height", [cam.width, cam.height],
                                   f"does not match the image {img_path} ({w}x{h}) nor its aspect ratio",
                                   "use the image the rig was calibrated for")
        cam = cam.scaled(scale)
        print(f"note: {img_path} is {w}x{h}; the rig's {channel} is for {rig.cameras[channel].width}x"
              f"{rig.cameras[channel].height}: intrinsics scaled by {scale:g}")
    return channel, image, cam


def _point_values(cloud, colour_by: str, path: str) -> np.ndarray | None:
    """What colours each point (None: the depth). Doppler is the compensated radial speed in the sensor frame."""
    if colour_by == "depth":
        return None
    if colour_by == "rcs":
        if "rcs" not in cloud.fields:
            raise SensorFileError(path, f"--color-by rcs needs an 'rcs' field; the points have {list(cloud.fields)}")
        return cloud.column("rcs").astype(np.float64)
    for radial in ("v_r_compensated", "v_r"):
        if radial in cloud.fields:
            return cloud.column(radial).astype(np.float64)
    if {"vx_comp", "vy_comp"} <= set(cloud.fields):
        xy = cloud.columns(("x", "y")).astype(np.float64)
        v = cloud.columns(("vx_comp", "vy_comp")).astype(np.float64)
        return np.sum(xy * v, axis=1) / np.maximum(np.linalg.norm(xy, axis=1), 1e-6)
    raise SensorFileError(path, f"--color-by doppler needs radar velocities (v_r_compensated, or vx_comp/vy_comp); "
                                f"the points have {list(cloud.fields)}")


def _overlay_boxes(args: argparse.Namespace, rig: Rig) -> tuple[list[str], np.ndarray | None]:
    """GT boxes in ego from --info or --labels (names, (G, 8, 3) corners), or ([], None)."""
    from perception.labels import read_info_gt, read_vod_labels
    from perception.visualize import box_corners

    if args.info and args.labels:
        raise CalibrationError("overlay", "--info/--labels", None, "give one source of GT boxes, not both")
    if args.info:
        names, boxes = read_info_gt(args.info, args.index)
    elif args.labels:
        names, boxes = read_vod_labels(args.labels)
        if rig.radars:
            mount = next(iter(rig.radars.values())).ego_from_radar
            boxes = boxes.copy()
            boxes[:, :3] = transform_points(mount, boxes[:, :3])
            boxes[:, 6] += np.arctan2(mount[1, 0], mount[0, 0])
    else:
        return [], None
    return names, box_corners(boxes) if len(boxes) else np.zeros((0, 8, 3))


def _cmd_overlay(args: argparse.Namespace) -> int:
    from perception.integrations.mmdet3d.infos import InfoError
    from perception.visualize import OverlayPanel, overlay_mosaic

    rig = load_rig(args.rig)
    cams = [_overlay_camera(rig, args.rig, spec) for spec in args.image]
    channels = [c for c, _, _ in cams]
    if len(set(channels)) != len(channels):
        raise CalibrationError("overlay", "--image", channels, "names a camera twice; give each channel once")
    cloud = read_points(args.points, args.points_format)
    if "dyn_prop" in cloud.fields:
        cloud = (DEVKIT_DEFAULT if args.radar_filter == "devkit" else KEEP_ALL).apply(cloud)
    values = _point_values(cloud, args.color_by, args.points)
    xyz = cloud.xyz.astype(np.float64)
    if args.frame != "ego":
        if not args.frame.startswith("sensor:"):
            raise CalibrationError("overlay", "--frame", args.frame, "must be 'ego' or 'sensor:CHANNEL'")
        sensor = args.frame.split(":", 1)[1]
        try:
            xyz = transform_points(rig.sensor_pose(sensor), xyz)
        except KeyError as err:
            raise CalibrationError(sensor, "--frame", args.frame, str(err).strip("'\"")) from None
    try:
        names, corners = _overlay_boxes(args, rig)
    except InfoError as err:
        raise CalibrationError("overlay", "--info", args.info, str(err)) from None
    panels = [OverlayPanel(image, project_points(cam.img_from_ego, xyz), f"{channel}: {Path(args.points).name} "
                           f"({args.frame})", values, cam.img_from_ego, corners, names)
              for channel, image, cam in cams]
    with atomic_file(args.out) as tmp:
        n = overlay_mosaic(panels, tmp, args.color_by)
    boxes = f"; {len(names)} GT boxes" if corners is not None else ""
    where = (f"{n} of {len(xyz)} points inside the image" if len(cams) == 1 else
             f"{n} projections of {len(xyz)} points inside the {len(cams)} images")
    print(f"wrote {args.out}: {where} (coloured by {args.color_by}){boxes}")
    return EXIT_OK


COMMANDS = {"validate": _cmd_validate, "convert": _cmd_convert, "project": _cmd_project, "overlay": _cmd_overlay}


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "out", None):
        check_file_target(args.out)  # a folder or a file-in-the-way is refused before any work
    return COMMANDS[args.command](args)


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
