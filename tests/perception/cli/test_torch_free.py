"""The Jetson path: with torch made unimportable (a fresh interpreter whose import system refuses it), the ONNX
Runtime / TensorRT commands run and never import torch, every console script's --help works, and a command that
needs torch ends in one line naming the package and the extra (docs/deploy.md)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
VERSION = "v1.0-synth"

BLOCKER = """import sys
class _Block:
    def __init__(self, names):
        self.names = names
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in self.names:
            raise ModuleNotFoundError("No module named " + repr(name), name=name)
sys.meta_path.insert(0, _Block(BLOCKED))
"""


def _run_blocked(entry: str, args: list[str], blocked=("torch",), timeout: int = 600) -> subprocess.CompletedProcess:
    """``entry`` ('module:function') called with ``args`` in a fresh interpreter where ``blocked`` do not import;
    prints whether torch got imported as the last line of stdout."""
    module, func = entry.split(":")
    code = (f"BLOCKED = {set(blocked)!r}\n" + BLOCKER + f"from {module} import {func}\n"
            f"try:\n    rc = {func}({args!r})\nexcept SystemExit as e:\n    rc = e.code\n"
            "print('TORCH_IMPORTED' if 'torch' in sys.modules else 'NO_TORCH')\nsys.exit(rc)\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=timeout)


def _console_scripts() -> dict[str, str]:
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = [x.strip() for x in cfg["options.entry_points"]["console_scripts"].splitlines() if x.strip()]
    return dict((x.split("=")[0].strip(), x.split("=")[1].strip()) for x in lines)


@pytest.mark.parametrize("name", sorted(_console_scripts()))
def test_every_help_works_without_torch(name):
    out = _run_blocked(_console_scripts()[name], ["--help"], blocked=("torch", "pyquaternion"), timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage:" in out.stdout and "Traceback" not in out.stderr


def test_replay_onnx_runs_without_torch(small_onnx_export, synth_sweeps, tmp_path):
    from nuscenes.nuscenes import NuScenes

    bag = synth_sweeps / "bags" / NuScenes(VERSION, str(synth_sweeps), verbose=False).scene[0]["name"]
    out = _run_blocked("perception.cli.replay:main", ["--bag", str(bag), "--onnx", str(small_onnx_export), "--out",
                                                      str(tmp_path / "r"), "--max-frames", "3", "--no-progress"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "NO_TORCH"
    assert json.loads((tmp_path / "r" / "report.json").read_text())["frames"]["emitted"] == 3


def test_perception_test_onnx_runs_without_torch(small_onnx_export, synth_root, tmp_path):
    out = _run_blocked("perception.cli.test:main", ["--onnx", str(small_onnx_export), "--dataroot", str(synth_root),
                                                    "--version", VERSION, "--split", "synth_val", "--out",
                                                    str(tmp_path / "t"), "--max-samples", "2", "--no-progress"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "NO_TORCH"
    assert (tmp_path / "t" / "metrics_summary.json").exists()


def test_engine_without_tensorrt_is_one_line_and_no_torch(small_onnx_export, synth_sweeps, synth_root, tmp_path):
    """--engine where TensorRT is not installed (this machine): exit 1 with one line, torch never imported."""
    (tmp_path / "eng").mkdir()
    for entry, args in [("perception.cli.test:main", ["--engine", str(tmp_path / "eng"), "--dataroot",
                                                      str(synth_root), "--version", VERSION, "--split", "synth_val",
                                                      "--out", str(tmp_path / "t")]),
                        ("perception.cli.replay:main", ["--bag", str(synth_sweeps / "bags"), "--engine",
                                                        str(tmp_path / "eng"), "--out", str(tmp_path / "r")])]:
        out = _run_blocked(entry, args, blocked=("torch", "tensorrt"))
        assert out.returncode == 1, (entry, out.stderr[-2000:])
        err = out.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in out.stderr, out.stderr
        assert out.stdout.strip().splitlines()[-1] == "NO_TORCH"


def test_a_command_that_needs_torch_names_the_package_and_extra(synth_sweeps, tmp_path):
    bag = next((synth_sweeps / "bags").iterdir())
    out = _run_blocked("perception.cli.replay:main", ["--bag", str(bag), "--checkpoint", str(tmp_path / "x.pt"),
                                                      "--out", str(tmp_path / "o")])
    err = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(err) == 1, out.stderr
    assert "'torch'" in err[0] and "bevfusion-rc[train]" in err[0] and "Traceback" not in out.stderr


def test_perception_infer_onnx_runs_without_torch(small_onnx_export, synth_root, tmp_path):
    from nuscenes.nuscenes import NuScenes

    token = NuScenes(VERSION, str(synth_root), verbose=False).sample[0]["token"]
    out = _run_blocked("perception.cli.infer:main", ["--onnx", str(small_onnx_export), "--out", str(tmp_path / "i"),
                                                     "--dataroot", str(synth_root), "--version", VERSION,
                                                     "--sample-token", token])
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "NO_TORCH"
    assert (tmp_path / "i" / "results_nusc.json").exists()
