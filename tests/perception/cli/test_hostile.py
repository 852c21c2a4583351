"""Hostile input across the console scripts (issue 26), generated on the fly.

Every case runs a CLI on a bad input and asserts: the documented exit code (1 invalid input with one
'error: <Kind>: ...' line, 2 bad arguments), no 'Traceback', the rejection within LIMIT_S, and, where a prior
output exists, that it is byte-identical afterwards. Most cases run in-process through ``main(argv)`` (imports
warmed once, so the time measured is the rejection itself); a few run as real processes to check the traceback
policy end to end and to kill a writer half-way (the old output must survive).

Time: the LIMIT_S bound is asserted on the CPU time of the rejection (``time.process_time``), which a busy
machine does not inflate (this one has 2 cores shared by several jobs: wall times there vary 5x); a run is
interrupted and counted as a hang after HANG_S of wall time. Both are recorded.

The module prints its tally at the end: cases, tracebacks, hangs (over LIMIT_S), silent wrong answers (exit 0
where a refusal was due) and data losses (a prior output changed by a refused or killed run).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from calibration.rig import MAX_MOUNT_OFFSET_M
from small_model import SMALL_OVERRIDES

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
RIG = REPO / "configs" / "rigs" / "nuscenes.yaml"
TINY = REPO / "configs" / "synthetic_tiny.yaml"
SETS = [a for o in SMALL_OVERRIDES for a in ("--set", o)]
LIMIT_S = 5.0  # CPU seconds per rejection
HANG_S = 30.0  # wall seconds before a run is interrupted as hung
TALLY: list[dict] = []


# -- the harness ---------------------------------------------------------------------------------------------------


class _Hang(Exception):
    pass


def _alarm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise _Hang()


def _cli(name: str):
    import importlib

    module = {"calib": "perception.cli.calib", "synth": "perception.cli.synth", "inspect": "perception.cli.inspect",
              "train": "perception.cli.train", "test": "perception.cli.test", "export": "export.cli",
              "engine": "export.engine_cli", "replay": "perception.cli.replay"}[name]
    return importlib.import_module(module).main


def run_inprocess(cli: str, argv: list[str], capsys) -> tuple[int, str, float, float]:
    """(exit code, stderr, CPU seconds, wall seconds) of ``main(argv)``; a run past HANG_S of wall time is
    interrupted and reported as a hang (exit code None)."""
    main = _cli(cli)
    capsys.readouterr()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, HANG_S)
    t, cpu = time.perf_counter(), time.process_time()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as err:  # argparse
        rc = err.code
    except _Hang:
        rc = None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    return rc, capsys.readouterr().err, time.process_time() - cpu, time.perf_counter() - t


def snapshot(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``folder`` (hidden lock/staging names beside it excluded)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def expect(case: str, cli: str, argv: list, expected: int, capsys, says: tuple[str, ...] = (),
           keep: Path | None = None) -> str:
    """Run, record in the tally, and assert the policy. ``keep``: a prior output that must be unchanged."""
    before = snapshot(keep) if keep is not None else None
    rc, err, seconds, wall = run_inprocess(cli, argv, capsys)
    lost = keep is not None and (not keep.exists() or snapshot(keep) != before)
    TALLY.append({"case": case, "cli": cli, "expected": expected, "rc": rc, "seconds": round(seconds, 3),
                  "wall_s": round(wall, 3), "traceback": "Traceback" in err, "hang": rc is None or seconds > LIMIT_S,
                  "silent_wrong": rc == 0 and expected != 0, "data_loss": bool(lost)})
    assert rc == expected, f"{case}: exit {rc}, expected {expected}; stderr: {err[-800:]}"
    assert "Traceback" not in err, err
    assert seconds < LIMIT_S, f"{case}: {seconds:.1f} CPU s ({wall:.1f} s wall)"
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(errors) == 1, f"{case}: expected one error line, got {err!r}"
    if expected == 1:
        assert errors[0].startswith("error: "), errors[0]
    for word in says:
        assert word in errors[0], f"{case}: {word!r} not in {errors[0]!r}"
    assert not lost, f"{case}: the prior output in {keep} changed"
    return errors[0]


@pytest.fixture(scope="module", autouse=True)
def tally(request):
    yield
    if not TALLY:
        return
    keys = ("traceback", "hang", "silent_wrong", "data_loss")
    counts = {k: sum(r[k] for r in TALLY) for k in keys}
    slowest = max((r for r in TALLY if not r["cli"].startswith("perception-")), key=lambda r: r["seconds"])
    line = (f"hostile inputs: {len(TALLY)} cases over {len({r['cli'] for r in TALLY})} CLIs; tracebacks "
            f"{counts['traceback']}, hangs {counts['hang']}, silent wrong answers {counts['silent_wrong']}, data "
            f"loss {counts['data_loss']}; slowest in-process rejection {slowest['seconds']:.2f} CPU s "
            f"({slowest['wall_s']:.2f} s wall, {slowest['case']})")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        reporter.write_line(line)
    out = os.environ.get("PERCEPTION_HOSTILE_TALLY")
    if out:  # e.g. benchmarks/out/hostile_inputs.json, for a report
        Path(out).write_text(json.dumps({"summary": counts, "cases": TALLY}, indent=1))


@pytest.fixture(scope="module")
def warm():
    """Import what the CLIs import lazily, so that the time measured per case is the rejection."""
    import onnxruntime  # noqa: F401
    import torch  # noqa: F401
    from nuscenes.nuscenes import NuScenes  # noqa: F401

    import export.cli  # noqa: F401
    import perception.pipeline  # noqa: F401
    import perception.train.loop  # noqa: F401


@pytest.fixture(scope="module")
def export_dir(small_ckpt, tmp_path_factory, warm):
    from export.cli import main as export_main

    out = tmp_path_factory.mktemp("hostile_export") / "exp"
    assert export_main(["--checkpoint", str(small_ckpt), "--out", str(out)]) == 0
    return out


def _rig_dict() -> dict:
    return yaml.safe_load(RIG.read_text())


def _write_rig(path: Path, data) -> Path:
    """``data``: bytes or text written as is, or a structure dumped as YAML."""
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def _renamed(old: str, new) -> dict:
    d = _rig_dict()
    d["cameras"] = {(new if k == old else k): v for k, v in d["cameras"].items()}
    return d


def _edited(sensor: str, field: str, value) -> dict:
    d = _rig_dict()
    group = "cameras" if sensor.startswith("CAM") else "radars"
    d[group][sensor][field] = value
    return d


def _alias_bomb(levels: int = 9, where: str = "name") -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    body = yaml.safe_dump(_rig_dict(), sort_keys=False)
    if where == "name":
        body = body.replace("name: nuscenes", f"name: *a{levels - 1}", 1)
    else:  # inside a camera's intrinsics
        body = body.replace("    intrinsics:\n", f"    intrinsics: *a{levels - 1}\n    x_intrinsics:\n", 1)
    return "\n".join(lines) + "\n" + body


RIG_CASES = {
    "path traversal channel": lambda: _renamed("CAM_FRONT", "../../../../escape_cam"),
    "slash in channel": lambda: _renamed("CAM_FRONT", "CAM/FRONT"),
    "space in channel": lambda: _renamed("CAM_FRONT", "CAM FRONT"),
    "NUL in channel": lambda: _renamed("CAM_FRONT", "CAM\0FRONT"),
    "65-character channel": lambda: _renamed("CAM_FRONT", "C" * 65),
    "integer channel": lambda: _renamed("CAM_FRONT", 7),
    "translation 1e308": lambda: _edited("CAM_FRONT", "translation", [1e308, 0.0, 1.5]),
    "translation beyond the mount bound": lambda: _edited("RADAR_FRONT", "translation",
                                                          [MAX_MOUNT_OFFSET_M + 1, 0.0, 0.5]),
    "translation NaN": lambda: _edited("CAM_FRONT", "translation", [float("nan"), 0.0, 1.5]),
    "translation inf": lambda: _edited("RADAR_FRONT", "translation", [float("inf"), 0.0, 0.5]),
    "rotation NaN": lambda: _edited("CAM_FRONT", "rotation", [float("nan"), 0.0, 0.0, 0.0]),
    "rotation not unit": lambda: _edited("CAM_FRONT", "rotation", [2.0, 0.0, 0.0, 0.0]),
    "width 1e9": lambda: _edited("CAM_FRONT", "width", 10 ** 9),
    "width negative": lambda: _edited("CAM_FRONT", "width", -5),
    "width a string": lambda: _edited("CAM_FRONT", "width", "wide"),
    "intrinsics NaN": lambda: _edited("CAM_FRONT", "intrinsics", [[float("nan"), 0, 800], [0, 1000, 450], [0, 0, 1]]),
    "cameras a list": lambda: {**_rig_dict(), "cameras": ["CAM_FRONT"]},
    "radars a string": lambda: {**_rig_dict(), "radars": "RADAR_FRONT"},
    "rig name a list": lambda: {**_rig_dict(), "name": [1, 2]},
    "document a list": lambda: "- a\n- b\n",
    "mixed-type keys": lambda: "name: x\ncameras: {1: {}, CAM: {}}\n",
    "duplicate camera": lambda: RIG.read_text() + "\n".join(
        ["", "cameras:", "  CAM_FRONT: {}"]),
    "alias bomb in name": lambda: _alias_bomb(9, "name"),
    "alias bomb in intrinsics": lambda: _alias_bomb(9, "intrinsics"),
    "deep nesting": lambda: "name: " + "[" * 20000 + "]" * 20000 + "\n",
    "binary file": lambda: np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    "empty file": lambda: "",
    "invalid YAML": lambda: "name: [unclosed\ncameras: {\n",
}


# -- perception-calib ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(RIG_CASES))
def test_calib_validate_refuses_hostile_rigs(case, tmp_path, capsys):
    rig = _write_rig(tmp_path / "rig.yaml", RIG_CASES[case]())
    expect(f"rig: {case}", "calib", ["validate", rig], 1, capsys)


def test_calib_validate_refuses_a_folder_and_a_missing_file(tmp_path, capsys):
    expect("rig: a folder", "calib", ["validate", tmp_path], 1, capsys, (str(tmp_path),))
    expect("rig: missing", "calib", ["validate", tmp_path / "nope.yaml"], 1, capsys, ("nope.yaml",))


def test_calib_project_and_overlay_refuse_bad_points_and_outputs(tmp_path, capsys):
    from PIL import Image

    pts = tmp_path / "pts.npy"
    np.save(pts, np.array([[10.0, 0.0, 1.0], [np.nan, 0.0, 1.0]]))
    expect("project: NaN point", "calib", ["project", "--rig", RIG, "--channel", "CAM_FRONT", "--points", pts,
                                           "--out", tmp_path / "uvd.npy"], 1, capsys, ("NaN",))
    assert not (tmp_path / "uvd.npy").exists()
    junk = tmp_path / "junk.npy"
    junk.write_bytes(os.urandom(300))
    expect("project: random .npy", "calib", ["project", "--rig", RIG, "--channel", "CAM_FRONT", "--points", junk,
                                             "--out", tmp_path / "uvd.npy"], 1, capsys)
    np.save(pts, np.array([[10.0, 0.0, 1.0]]))
    expect("project: --out a folder", "calib", ["project", "--rig", RIG, "--channel", "CAM_FRONT", "--points", pts,
                                                "--out", tmp_path], 1, capsys, ("folder",))
    (tmp_path / "file").write_text("x")
    expect("project: --out under a file", "calib", ["project", "--rig", RIG, "--channel", "CAM_FRONT", "--points",
                                                    pts, "--out", tmp_path / "file" / "uvd.npy"], 1, capsys)
    img = tmp_path / "front.png"
    Image.fromarray(np.zeros((90, 160, 3), np.uint8)).save(img)
    pcd = tmp_path / "bad.pcd"
    pcd.write_text("VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 2\nHEIGHT 1\n"
                   "VIEWPOINT 0 0 0 1 0 0 0\nPOINTS 2\nDATA ascii\n1.0 2.0 3.0\n4.0 banana 6.0\n")
    expect("overlay: ASCII PCD with a non-number", "calib", ["overlay", "--rig", RIG, "--image",
                                                             f"CAM_FRONT={img}", "--points", pcd, "--out",
                                                             tmp_path / "o.png"], 1, capsys, ("banana",))
    pcd.write_bytes(b"VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 100\nHEIGHT 1\n"
                    b"VIEWPOINT 0 0 0 1 0 0 0\nPOINTS 100\nDATA binary\n" + b"\0" * 50)
    expect("overlay: truncated binary PCD", "calib", ["overlay", "--rig", RIG, "--image", f"CAM_FRONT={img}",
                                                      "--points", pcd, "--out", tmp_path / "o.png"], 1, capsys,
           ("truncated",))
    assert not (tmp_path / "o.png").exists()
    expect("convert: --index -1", "calib", ["convert", "--from", "mmdet3d-info", "x.pkl", "--index", "-1",
                                            "--out", tmp_path / "r.yaml"], 2, capsys)


# -- perception-synth ----------------------------------------------------------------------------------------------


SYNTH = ["--scenes", "1", "--samples-per-scene", "2", "--image-scale", "0.05", "--keyframes-only", "--no-progress"]


@pytest.mark.parametrize("flag,value", [("--scenes", "nan"), ("--scenes", "0"), ("--scenes", "-1"),
                                        ("--samples-per-scene", "inf"), ("--image-scale", "nan"),
                                        ("--image-scale", "-inf"), ("--image-scale", "0"), ("--seed", "-1"),
                                        ("--scenes", "1e9")])
def test_synth_numeric_arguments(flag, value, tmp_path, capsys):
    argv = ["--out", tmp_path / "o", *SYNTH, flag, value]  # the last occurrence of a flag wins in argparse
    expect(f"synth {flag} {value}", "synth", argv, 2, capsys, (flag,))
    assert not (tmp_path / "o").exists()


def test_synth_traversal_rig_writes_nothing_outside_out(tmp_path, capsys):
    rig = _write_rig(tmp_path / "rig.yaml", _renamed("CAM_FRONT", "../../../../escape_cam"))
    work = tmp_path / "work"
    work.mkdir()
    expect("synth: traversal rig", "synth", ["--out", work / "a" / "b" / "out", "--rig", rig, *SYNTH], 1, capsys,
           ("escape_cam",))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["rig.yaml", "work"]


def test_synth_refuses_files_held_and_locked_outputs(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    expect("synth: --out a file", "synth", ["--out", tmp_path / "file", *SYNTH], 1, capsys, ("file",))
    expect("synth: --out under a file", "synth", ["--out", tmp_path / "file" / "o", *SYNTH], 1, capsys)
    held = tmp_path / "held"
    (held / "v1.0-synth").mkdir(parents=True)
    (held / "v1.0-synth" / "scene.json").write_text("[]")
    (held / "notes.txt").write_text("mine")
    expect("synth: --out holding a dataset", "synth", ["--out", held, *SYNTH], 1, capsys, ("--overwrite",), keep=held)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / ".held.lock").write_text(f"{sleeper.pid}\n")
        expect("synth: --out in use", "synth", ["--out", held, "--overwrite", *SYNTH], 1, capsys, ("in use",),
               keep=held)
    finally:
        sleeper.kill()
        sleeper.wait()


# -- perception-inspect and the dataset tables ---------------------------------------------------------------------


def _root_copy(src: Path, dst: Path) -> Path:
    """A root whose tables are copies (to corrupt) and whose sensor folders are links to ``src``'s."""
    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.name == "v1.0-synth":
            shutil.copytree(p, dst / p.name)
        else:
            (dst / p.name).symlink_to(p)
    return dst


def _edit_table(root: Path, table: str, edit) -> None:
    path = root / "v1.0-synth" / f"{table}.json"
    rows = json.loads(path.read_text())
    edit(rows)
    path.write_text(json.dumps(rows))


TABLE_CASES = {
    "truncated ego_pose.json": ("ego_pose", None, lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])),
    "random sample_annotation.json": ("sample_annotation", None, lambda p: p.write_bytes(os.urandom(2000))),
    "ego_pose a mapping": ("ego_pose", None, lambda p: p.write_text('{"token": "x"}')),
    "NaN ego_pose translation": ("ego_pose", lambda rows: rows[3]["translation"].__setitem__(0, float("nan")), None),
    "inf ego_pose rotation": ("ego_pose", lambda rows: rows[0]["rotation"].__setitem__(1, float("inf")), None),
    "NaN annotation size": ("sample_annotation", lambda rows: rows[0]["size"].__setitem__(2, float("nan")), None),
    "zero annotation size": ("sample_annotation", lambda rows: rows[1]["size"].__setitem__(0, 0.0), None),
    "NaN annotation translation": ("sample_annotation",
                                   lambda rows: rows[2]["translation"].__setitem__(1, float("nan")), None),
    "annotation size a string": ("sample_annotation", lambda rows: rows[0].__setitem__("size", "big"), None),
    "filename leaving the root": ("sample_data",
                                  lambda rows: rows[0].__setitem__("filename", "../../../etc/passwd"), None),
    "absolute filename": ("sample_data", lambda rows: rows[0].__setitem__("filename", "/etc/passwd"), None),
}


def _inspect_argv(root: Path, out: Path, index: str = "0") -> list:
    return ["--config", TINY, *SETS, "--dataroot", root, "--version", "v1.0-synth", "--split", "synth_val",
            "--index", index, "--out", out]


@pytest.mark.parametrize("case", sorted(TABLE_CASES))
def test_inspect_refuses_corrupt_tables(case, synth_sweeps, tmp_path, capsys, warm):
    table, edit_rows, edit_file = TABLE_CASES[case]
    root = _root_copy(synth_sweeps, tmp_path / "root")
    if edit_rows is not None:
        _edit_table(root, table, edit_rows)
    else:
        edit_file(root / "v1.0-synth" / f"{table}.json")
    expect(f"tables: {case}", "inspect", _inspect_argv(root, tmp_path / "f.npz"), 1, capsys, (table,))
    assert not (tmp_path / "f.npz").exists()


def test_inspect_arguments_and_outputs(synth_sweeps, tmp_path, capsys, warm):
    expect("inspect --index -1", "inspect", _inspect_argv(synth_sweeps, tmp_path / "f.npz", "-1"), 2, capsys)
    expect("inspect --index nan", "inspect", _inspect_argv(synth_sweeps, tmp_path / "f.npz", "nan"), 2, capsys)
    expect("inspect --index 99", "inspect", _inspect_argv(synth_sweeps, tmp_path / "f.npz", "99"), 1, capsys,
           ("out of range",))
    (tmp_path / "d.npz").mkdir()
    expect("inspect --out a folder", "inspect", _inspect_argv(synth_sweeps, tmp_path / "d.npz"), 1, capsys,
           ("folder",))
    expect("inspect --out not .npz", "inspect", _inspect_argv(synth_sweeps, tmp_path / "f.txt"), 2, capsys)
    expect("inspect --config missing", "inspect", ["--config", tmp_path / "nope.yaml"]
           + _inspect_argv(synth_sweeps, tmp_path / "f.npz")[2:], 1, capsys)


# -- checkpoints ---------------------------------------------------------------------------------------------------


def _corrupt_checkpoint(kind: str, src: Path, dst: Path) -> Path:
    import torch

    from perception.model.network import build_model
    from perception.train.checkpoint import save_checkpoint
    from small_model import small_config

    raw = src.read_bytes()
    if kind == "truncated":
        dst.write_bytes(raw[: len(raw) // 2])
    elif kind == "random bytes":
        dst.write_bytes(os.urandom(len(raw)))
    elif kind == "empty":
        dst.write_bytes(b"")
    elif kind in ("flipped bytes", "edited weight", "edited classes", "hash removed, NaN weight"):
        payload = torch.load(src, map_location="cpu", weights_only=True)
        name = next(k for k, v in payload["model"].items() if v.is_floating_point() and v.numel() > 100)
        if kind == "flipped bytes":  # the tensor's bytes as a bit flip would leave them; the stored hash kept
            t = payload["model"][name].clone()
            t.view(torch.int32).reshape(-1)[7] ^= 0x00400000
            payload["model"][name] = t
        elif kind == "edited weight":
            payload["model"][name] = payload["model"][name] + 1e-3
        elif kind == "edited classes":
            payload["config"]["classes"] = list(reversed(payload["config"]["classes"]))
        else:
            payload.pop("weights_sha256")
            payload["model"][name] = payload["model"][name].clone().fill_(float("nan"))
        torch.save(payload, dst)
    elif kind in ("NaN weights", "inf weights"):
        cfg = small_config()
        net = build_model(cfg)
        with torch.no_grad():
            next(net.parameters()).view(-1)[0] = float("nan" if kind == "NaN weights" else "inf")
        save_checkpoint(dst, net, cfg)
    elif kind == "not a checkpoint (a tensor)":
        torch.save(torch.zeros(3), dst)
    else:
        raise AssertionError(kind)
    return dst


CKPT_CASES = ["truncated", "random bytes", "empty", "flipped bytes", "edited weight", "edited classes",
              "hash removed, NaN weight", "NaN weights", "inf weights", "not a checkpoint (a tensor)"]


def _test_argv(source: list, root: Path, out: Path) -> list:
    return [*source, "--dataroot", root, "--version", "v1.0-synth", "--split", "synth_val", "--out", out,
            "--no-progress"]


@pytest.mark.parametrize("kind", CKPT_CASES)
def test_checkpoint_corruption_is_refused_by_test_and_export(kind, small_ckpt, synth_sweeps, tmp_path, capsys, warm):
    bad = _corrupt_checkpoint(kind, small_ckpt, tmp_path / "bad.pt")
    expect(f"checkpoint {kind} (perception-test)", "test", _test_argv(["--checkpoint", bad], synth_sweeps,
                                                                      tmp_path / "eval"), 1, capsys)
    expect(f"checkpoint {kind} (perception-export)", "export", ["--checkpoint", bad, "--out", tmp_path / "exp"], 1,
           capsys)
    assert not (tmp_path / "eval").exists() and not (tmp_path / "exp").exists()
    assert not list(tmp_path.glob(".*")), "a refused run left a lock or staging folder"


def test_checkpoint_missing_or_a_folder(synth_sweeps, tmp_path, capsys, warm):
    expect("checkpoint missing", "test", _test_argv(["--checkpoint", tmp_path / "no.pt"], synth_sweeps,
                                                    tmp_path / "e"), 1, capsys, ("no.pt",))
    expect("checkpoint a folder", "test", _test_argv(["--checkpoint", tmp_path], synth_sweeps, tmp_path / "e"), 1,
           capsys)


# -- perception-test arguments and outputs -------------------------------------------------------------------------


@pytest.mark.parametrize("flag,value", [("--max-samples", "0"), ("--max-samples", "-1"), ("--max-samples", "nan"),
                                        ("--calib-noise-deg", "nan"), ("--calib-noise-deg", "inf"),
                                        ("--calib-noise-deg", "-1"), ("--calib-noise-deg", "1e308"),
                                        ("--seed", "-1"), ("--device", "cuda:3"), ("--device", "banana")])
def test_test_arguments(flag, value, small_ckpt, synth_sweeps, tmp_path, capsys, warm):
    expect(f"test {flag} {value}", "test", _test_argv(["--checkpoint", small_ckpt], synth_sweeps, tmp_path / "e")
           + [flag, value], 2, capsys, (flag,))


def test_test_refuses_a_file_and_held_results(small_ckpt, synth_sweeps, tmp_path, capsys, warm):
    (tmp_path / "file").write_text("x")
    expect("test --out a file", "test", _test_argv(["--checkpoint", small_ckpt], synth_sweeps, tmp_path / "file"), 1,
           capsys, ("file",))
    held = tmp_path / "eval"
    held.mkdir()
    (held / "metrics_summary.json").write_text('{"nd_score": 0.5}')
    (held / "report.md").write_text("# old report\n")
    expect("test --out holding results", "test", _test_argv(["--checkpoint", small_ckpt], synth_sweeps, held), 1,
           capsys, ("--overwrite",), keep=held)


# -- exports -------------------------------------------------------------------------------------------------------


def _onnx_case(kind: str, folder: Path) -> None:
    graph, meta_path = folder / "model.onnx", folder / "model.json"
    if kind == "truncated model.onnx":
        graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
    elif kind == "random model.onnx":
        graph.write_bytes(os.urandom(graph.stat().st_size))
    elif kind == "missing model.onnx":
        graph.unlink()
    elif kind in ("another graph beside model.json", "unhashed graph of another export"):
        import onnx
        from onnx import numpy_helper

        model = onnx.load(str(graph))
        init = next(i for i in model.graph.initializer if numpy_helper.to_array(i).size > 100)
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.5, init.name))
        onnx.save(model, str(graph))
        if kind == "unhashed graph of another export":  # legacy model.json without hashes: the graph's metadata
            meta = json.loads(meta_path.read_text())   # still disagrees with an edited model.json
            meta.pop("files")
            meta["camera_channels"] = [c.replace("CAM", "KAM") for c in meta["camera_channels"]]
            meta_path.write_text(json.dumps(meta))
    elif kind == "model.json not JSON":
        meta_path.write_text('{"schema": "perception-model/1", "inputs": [')
    elif kind == "model.json a list":
        meta_path.write_text("[1, 2, 3]")
    elif kind == "model.json binary":
        meta_path.write_bytes(os.urandom(500))
    else:
        meta = json.loads(meta_path.read_text())
        if kind == "model.json classes reordered":
            meta["classes"] = list(reversed(meta["classes"]))
            meta["config"]["classes"] = list(reversed(meta["config"]["classes"]))
        elif kind == "model.json classes disagree with its config":
            meta["classes"] = meta["classes"][::-1]
        elif kind == "model.json camera names changed":
            meta["camera_channels"] = [f"X_{c}" for c in meta["camera_channels"]]
        elif kind == "model.json one camera fewer":
            meta["camera_channels"] = meta["camera_channels"][:-1]
        elif kind == "model.json input shape changed":
            meta["inputs"][0]["shape"][-1] += 8
        elif kind == "model.json inputs malformed":
            meta["inputs"] = [{"name": 3}]
        elif kind == "model.json outputs renamed":
            meta["outputs"][0]["name"] = "detections"
        elif kind == "model.json config missing":
            meta.pop("config")
        else:
            raise AssertionError(kind)
        meta_path.write_text(json.dumps(meta))


ONNX_CASES = ["truncated model.onnx", "random model.onnx", "missing model.onnx", "another graph beside model.json",
              "unhashed graph of another export", "model.json not JSON", "model.json a list", "model.json binary",
              "model.json classes reordered", "model.json classes disagree with its config",
              "model.json camera names changed", "model.json one camera fewer", "model.json input shape changed",
              "model.json inputs malformed", "model.json outputs renamed", "model.json config missing"]


@pytest.mark.parametrize("kind", ONNX_CASES)
def test_onnx_export_corruption_is_refused(kind, export_dir, synth_sweeps, tmp_path, capsys):
    folder = tmp_path / "exp"
    shutil.copytree(export_dir, folder)
    _onnx_case(kind, folder)
    expect(f"export folder: {kind}", "test", _test_argv(["--onnx", folder], synth_sweeps, tmp_path / "e"), 1, capsys)


def test_onnx_int8_without_its_graph(export_dir, synth_sweeps, tmp_path, capsys):
    expect("export folder: --precision int8 without model_int8.onnx", "test",
           _test_argv(["--onnx", export_dir, "--precision", "int8"], synth_sweeps, tmp_path / "e"), 1, capsys,
           ("model_int8.onnx",))


@pytest.mark.parametrize("flag,value", [("--batch", "0"), ("--opset", "nan"), ("--opset", "99"),
                                        ("--cameras-per-voxel", "-1"), ("--calib-frames", "0"),
                                        ("--check-parity", "-1")])
def test_export_arguments(flag, value, small_ckpt, tmp_path, capsys):
    expect(f"export {flag} {value}", "export", ["--checkpoint", small_ckpt, "--out", tmp_path / "x", flag, value], 2,
           capsys, (flag,))


def test_export_refuses_a_file_held_export_and_traversal_rig(small_ckpt, export_dir, tmp_path, capsys, warm):
    (tmp_path / "file").write_text("x")
    expect("export --out a file", "export", ["--checkpoint", small_ckpt, "--out", tmp_path / "file"], 1, capsys)
    held = tmp_path / "exp"
    shutil.copytree(export_dir, held)
    expect("export --out holding an export", "export", ["--checkpoint", small_ckpt, "--out", held], 1, capsys,
           ("--overwrite",), keep=held)
    rig = _write_rig(tmp_path / "rig.yaml", _renamed("CAM_FRONT", "../escape_cam"))
    expect("export --rig traversal", "export", ["--checkpoint", small_ckpt, "--out", tmp_path / "new", "--rig", rig],
           1, capsys, ("escape_cam",))
    assert not (tmp_path / "new").exists()


def test_export_records_hashes_the_runtime_checks(export_dir):
    """The positive side of the checks above: a fresh export carries the hashes and loads."""
    import onnx

    from perception.runtime.onnxruntime import OnnxRunner, file_sha256

    meta = json.loads((export_dir / "model.json").read_text())
    assert meta["files"]["model.onnx"] == file_sha256(export_dir / "model.onnx")
    assert len(meta["weights_sha256"]) == 64
    props = {p.key: p.value for p in onnx.load(str(export_dir / "model.onnx")).metadata_props}
    assert json.loads(props["perception.classes"]) == meta["classes"]
    assert json.loads(props["perception.camera_channels"]) == meta["camera_channels"]
    OnnxRunner(export_dir)


# -- perception-train ----------------------------------------------------------------------------------------------


def _train_argv(root: Path, out: Path, *extra) -> list:
    return [TINY, *SETS, "--dataroot", root, "--version", "v1.0-synth", "--out", out, "--no-progress", "--no-eval",
            *extra]


def test_train_refuses_held_runs_and_touches_nothing(small_ckpt, synth_sweeps, tmp_path, capsys, warm):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(small_ckpt, run / "model.pt")
    shutil.copyfile(small_ckpt, run / "last.pt")
    (run / "config.resolved.yaml").write_text("name: earlier\n")
    (run / "history.jsonl").write_text('{"step": 1}\n')
    expect("train: finished --out without --resume", "train", _train_argv(synth_sweeps, run), 1, capsys,
           ("--resume",), keep=run)
    expect("train: --resume from another config", "train",
           _train_argv(synth_sweeps, run, "--resume", "--set", "train.lr=0.123"), 1, capsys, ("another config",),
           keep=run)
    _corrupt_checkpoint("truncated", small_ckpt, run / "last.pt")
    expect("train: --resume from a truncated last.pt", "train", _train_argv(synth_sweeps, run, "--resume"), 1,
           capsys, ("last.pt",), keep=run)
    (run / "last.pt").unlink()
    expect("train: --resume without last.pt", "train", _train_argv(synth_sweeps, run, "--resume"), 1, capsys,
           ("last.pt",), keep=run)
    expect("train: --resume with --overwrite", "train", _train_argv(synth_sweeps, run, "--resume", "--overwrite"), 2,
           capsys)
    (tmp_path / "file").write_text("x")
    expect("train: --out a file", "train", _train_argv(synth_sweeps, tmp_path / "file"), 1, capsys)
    for device in ("cuda:7", "banana"):
        expect(f"train --device {device}", "train", _train_argv(synth_sweeps, tmp_path / "r2", "--device", device), 2,
               capsys, ("--device",))


# -- perception-engine and perception-replay -----------------------------------------------------------------------


def test_engine_refuses_garbage_and_bad_arguments(tmp_path, capsys):
    (tmp_path / "eng").mkdir()
    (tmp_path / "eng" / "engine.json").write_bytes(os.urandom(300))
    expect("engine info: garbage engine.json", "engine", ["info", tmp_path / "eng"], 1, capsys, ("engine.json",))
    expect("engine info: missing folder", "engine", ["info", tmp_path / "none"], 1, capsys)
    for value in ("nan", "0", "-2", "inf"):
        expect(f"engine build --workspace-gb {value}", "engine", ["build", "--onnx", tmp_path, "--out",
                                                                   tmp_path / "e", "--workspace-gb", value], 2, capsys)
    (tmp_path / "file").write_text("x")
    expect("engine build --out a file", "engine", ["build", "--onnx", tmp_path, "--out", tmp_path / "file"], 1, capsys)


def test_replay_refuses_a_truncated_sqlite_bag(small_ckpt, tmp_path, capsys, warm):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    bag = tmp_path / "bag"
    msg = store.types["std_msgs/msg/String"](data="x" * 400)
    with Writer(bag, version=8, storage_plugin=StoragePlugin.SQLITE3) as writer:
        conn = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=store)
        for i in range(100):
            writer.write(conn, 1000 + i, bytes(store.serialize_cdr(msg, "std_msgs/msg/String")))
    db = next(bag.glob("*.db3"))
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 3])
    expect("replay: truncated sqlite3 bag", "replay", ["--bag", bag, "--checkpoint", small_ckpt, "--out",
                                                       tmp_path / "out", "--no-progress"], 1, capsys, (str(bag),))


# -- real processes: the traceback policy end to end, and kills mid-write ------------------------------------------


def _spawn(script: str, *args, **kw) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / script), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=kw.get("cwd"))


@pytest.mark.parametrize("script,args,code", [
    ("perception-calib", ["validate", "BOMB"], 1),
    ("perception-calib", ["validate", "BINARY"], 1),
    ("perception-test", ["--checkpoint", "x.pt", "--dataroot", ".", "--version", "v", "--split", "s", "--out", "o",
                         "--max-samples", "0"], 2),
    ("perception-export", ["--checkpoint", "NANCKPT", "--out", "exp"], 1),
])
def test_real_processes_exit_cleanly(script, args, code, small_ckpt, tmp_path):
    (tmp_path / "bomb.yaml").write_text(_alias_bomb(9, "name"))
    (tmp_path / "binary.yaml").write_bytes(os.urandom(2048))
    _corrupt_checkpoint("NaN weights", small_ckpt, tmp_path / "nan.pt")
    subst = {"BOMB": tmp_path / "bomb.yaml", "BINARY": tmp_path / "binary.yaml", "NANCKPT": tmp_path / "nan.pt"}
    t = time.perf_counter()
    proc = _spawn(script, *[subst.get(a, a) for a in args], cwd=tmp_path)
    try:
        _, err = proc.communicate(timeout=HANG_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    seconds = time.perf_counter() - t
    TALLY.append({"case": f"process: {script} {' '.join(args)}", "cli": script, "expected": code,
                  "rc": proc.returncode, "seconds": None, "wall_s": round(seconds, 3), "traceback": "Traceback" in err,
                  "hang": proc.returncode is None or proc.returncode < 0, "silent_wrong": proc.returncode == 0,
                  "data_loss": False})
    assert proc.returncode == code, err
    assert "Traceback" not in err, err
    assert [ln for ln in err.splitlines() if "error:" in ln], err


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 240.0) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()`` holds; False when the process ended first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    return False


@pytest.mark.slow
def test_killed_export_leaves_the_previous_export_intact(small_ckpt, export_dir, tmp_path):
    from perception.outputs import folder_output
    from perception.runtime.onnxruntime import OnnxRunner

    out = tmp_path / "exp"
    shutil.copytree(export_dir, out)
    before = snapshot(out)
    proc = _spawn("perception-export", "--checkpoint", small_ckpt, "--out", out, "--overwrite")
    killed = _kill_when(proc, lambda: any((p / "model.onnx").exists() for p in tmp_path.glob(".exp.tmp-*")))
    lost = snapshot(out) != before
    TALLY.append({"case": "process: perception-export killed mid-write", "cli": "perception-export", "expected": -9,
                  "rc": proc.returncode, "seconds": None, "wall_s": None, "traceback": False, "hang": False, "silent_wrong": False,
                  "data_loss": lost})
    assert killed, "the export finished before it could be killed mid-write"
    assert not lost
    OnnxRunner(out)  # still consistent: hashes and graph metadata agree
    assert list(tmp_path.glob(".exp.tmp-*")), "the killed run's staging folder is where it was left"
    with folder_output(out, overwrite=True) as staging:  # the next run clears what the killed one left
        shutil.copytree(export_dir, staging, dirs_exist_ok=True)
    assert not list(tmp_path.glob(".exp.*")) and snapshot(out) == before


@pytest.mark.slow
def test_killed_synth_leaves_the_previous_dataset_intact(tmp_path):
    out = tmp_path / "ds"
    from perception.cli.synth import main as synth_main

    assert synth_main(["--out", str(out), *SYNTH]) == 0
    before = snapshot(out)
    proc = _spawn("perception-synth", "--out", out, "--overwrite", "--scenes", "2", "--samples-per-scene", "4",
                  "--image-scale", "0.05", "--keyframes-only", "--no-progress", "--seed", "9")
    killed = _kill_when(proc, lambda: any(any((p / "samples").glob("*/*")) for p in tmp_path.glob(".ds.tmp-*")
                                          if (p / "samples").is_dir()))
    lost = snapshot(out) != before
    TALLY.append({"case": "process: perception-synth killed mid-write", "cli": "perception-synth", "expected": -9,
                  "rc": proc.returncode, "seconds": None, "wall_s": None, "traceback": False, "hang": False, "silent_wrong": False,
                  "data_loss": lost})
    assert killed, "perception-synth finished before it could be killed mid-write"
    assert not lost


# -- the output primitives -----------------------------------------------------------------------------------------


def test_output_lock_takes_over_a_dead_process_lock_and_refuses_a_live_one(tmp_path):
    from perception.outputs import OutputError, lock_path, output_lock

    out = tmp_path / "o"
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock_path(out).write_text(f"{dead.pid}\n")
    with output_lock(out):
        assert lock_path(out).read_text().split()[0] == str(os.getpid())
        with pytest.raises(OutputError, match="already being written by this process"):
            with output_lock(out):
                pass
    assert not lock_path(out).exists()
    lock_path(out).write_text(f"{os.getppid()}\n")
    with pytest.raises(OutputError, match="in use by another run"):
        with output_lock(out):
            pass


def test_folder_output_puts_back_an_old_folder_left_aside_by_a_kill(tmp_path):
    from perception.outputs import folder_output

    out = tmp_path / "o"
    old = tmp_path / ".o.old-12345"  # a kill between 'old aside' and 'new in'
    old.mkdir()
    (old / "model.json").write_text("old")
    with pytest.raises(RuntimeError):
        with folder_output(out, overwrite=True):
            raise RuntimeError("the new run fails")
    assert (out / "model.json").read_text() == "old" and not list(tmp_path.glob(".o.*"))


def test_atomic_file_keeps_the_old_file_when_the_writer_fails(tmp_path):
    from perception.outputs import atomic_file, atomic_write

    path = atomic_write(tmp_path / "a.json", "old")
    with pytest.raises(ValueError):
        with atomic_file(path) as tmp:
            tmp.write_text("half")
            raise ValueError("writer failed")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.json"]
    assert (path.stat().st_mode & 0o777) == (0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_confined_refuses_paths_out_of_the_root(tmp_path):
    from perception.outputs import OutputError, confined

    assert confined(tmp_path, "samples/CAM_FRONT/x.jpg") == tmp_path / "samples/CAM_FRONT/x.jpg"
    for bad in ("../x", "/etc/passwd", "samples/../../x"):
        with pytest.raises(OutputError):
            confined(tmp_path, bad)
    (tmp_path / "link").symlink_to("/tmp")
    with pytest.raises(OutputError, match="outside"):
        confined(tmp_path, "link/x")
