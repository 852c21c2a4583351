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


def run(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None,
        extra_errors: tuple[type[BaseException], ...] = ()) -> int:
    """Call ``main(argv)``; turn known input errors (plus ``extra_errors``, the command's own) into one
    'error: <Kind>: ...' line on stderr and exit 1."""
    try:
        return main(argv)
    except INPUT_ERRORS + extra_errors as err:
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
