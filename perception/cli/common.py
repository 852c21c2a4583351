"""Shared CLI plumbing: one error policy for every console script, and the argparse types that enforce it.

Exit codes: 0 success; 1 bad input (a file, a calibration, a config, an output folder in use: the message says
which and what to do); 2 bad command line (argparse, including the numeric types below). Known input errors never
print a traceback.
"""
from __future__ import annotations

import argparse
import sqlite3
import sys
from typing import Callable, Sequence

from calibration.rig import CalibrationError
from calibration.sync import SyncError
from perception.cli.args import number, torch_device  # noqa: F401 - the shared argparse types, re-exported
from perception.config import ConfigError
from perception.data.io import SensorFileError
from perception.outputs import OutputError

EXIT_OK = 0
EXIT_INPUT = 1
EXIT_USAGE = 2

# OSError covers a missing file, a folder given for a file (IsADirectoryError), a permission or disk-full error:
# all name the path; sqlite3.DatabaseError is a truncated or foreign sqlite file (ROS 2 bags).
INPUT_ERRORS = (CalibrationError, SensorFileError, ConfigError, SyncError, OutputError, OSError,
                sqlite3.DatabaseError)

# Optional dependencies (top-level module -> (pip package, extra of setup.cfg that installs it)). The base install
# is the torch-free runtime (ONNX Runtime / TensorRT inference, replay); see docs/deploy.md.
OPTIONAL_MODULES = {
    "torch": ("torch", "train"), "onnx": ("onnx", "train"), "onnxscript": ("onnxscript", "train"),
    "tensorboard": ("tensorboard", "train"), "nuscenes": ("nuscenes-devkit", "eval"),
    "matplotlib": ("matplotlib", "eval"), "rosbags": ("rosbags", "ros"), "mcap": ("mcap", "ros"),
    "mcap_ros2": ("mcap-ros2-support", "ros"), "foxglove": ("foxglove-sdk", "ros"),
    "polygraphy": ("polygraphy", "jetson"), "onnxslim": ("onnxslim", "trt-tools"),
    "onnx_graphsurgeon": ("onnx-graphsurgeon", "trt-tools"),
}


def missing_dependency(err: ModuleNotFoundError) -> str | None:
    """One line naming the package and the extra that installs it, for a known optional module; else None."""
    top = (err.name or "").split(".")[0]
    if top not in OPTIONAL_MODULES:
        return None
    package, extra = OPTIONAL_MODULES[top]
    return (f"this command needs the Python package '{package}', which is not installed: "
            f"pip install \"bevfusion-rc[{extra}]\" (or pip install {package}; docs/deploy.md lists what each extra "
            "holds)")


def checkpoint_errors() -> tuple[type[BaseException], ...]:
    """``(CheckpointError,)`` where torch imports (its module needs torch), else ``()``: for ``run``'s error list of
    commands that also work without torch."""
    try:
        from perception.train.checkpoint import CheckpointError
    except ModuleNotFoundError:
        return ()
    return (CheckpointError,)


def run(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None,
        extra_errors: tuple[type[BaseException], ...] | Callable[[], tuple[type[BaseException], ...]] = ()) -> int:
    """Call ``main(argv)``; turn known input errors (plus ``extra_errors``, the command's own) into one
    'error: <Kind>: ...' line on stderr and exit 1. ``extra_errors`` may be a function returning them, called only
    when something was raised, so that a command whose error classes live in torch-importing modules still shows
    its --help without torch. A missing optional dependency is one line naming the package and its extra."""
    try:
        return main(argv)
    except ModuleNotFoundError as err:
        line = missing_dependency(err)
        if line is None:
            raise
        print(f"error: MissingDependency: {line}", file=sys.stderr)
        return EXIT_INPUT
    except Exception as err:
        try:
            extra = extra_errors() if callable(extra_errors) else extra_errors
        except ModuleNotFoundError:  # the module defining them does not import: err cannot be one of them
            extra = ()
        if not isinstance(err, INPUT_ERRORS + tuple(extra)):
            raise
        print(error_line(err), file=sys.stderr)
        return EXIT_INPUT


def error_line(err: BaseException) -> str:
    """'error: <Kind>: <message>' on one line (multi-line messages, e.g. from parsers, are joined)."""
    text = " ".join(str(err).split())
    return f"error: {type(err).__name__}: {text}"


def parse_size(text: str) -> tuple[int, int]:
    """'1600x900' -> (1600, 900); an argparse type."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
        if not (0 < w <= 100_000 and 0 < h <= 100_000):
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"image size must be WIDTHxHEIGHT in pixels, e.g. 1600x900; got '{text}'") from None
    return w, h


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the examples in the epilog as written and shows defaults."""
