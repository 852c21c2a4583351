"""Shared CLI plumbing: one error policy for every console script.

Exit codes: 0 success; 1 bad input (a file, a calibration, a config: the message says which
and what to do); 2 bad command line (argparse). Known input errors never print a traceback.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from calibration.rig import CalibrationError
from calibration.sync import SyncError
from perception.config import ConfigError
from perception.data.io import SensorFileError

EXIT_OK = 0
EXIT_INPUT = 1
EXIT_USAGE = 2

INPUT_ERRORS = (CalibrationError, SensorFileError, ConfigError, SyncError, FileNotFoundError)


def run(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None,
        extra_errors: tuple[type[BaseException], ...] = ()) -> int:
    """Call ``main(argv)``; turn known input errors (plus ``extra_errors``, the command's own) into one
    'error: <Kind>: ...' line on stderr and exit 1."""
    try:
        return main(argv)
    except INPUT_ERRORS + extra_errors as err:
        kind = type(err).__name__
        print(f"error: {kind}: {err}", file=sys.stderr)
        return EXIT_INPUT


def parse_size(text: str) -> tuple[int, int]:
    """'1600x900' -> (1600, 900); an argparse type."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
        if w <= 0 or h <= 0:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"image size must be WIDTHxHEIGHT in pixels, e.g. 1600x900; got '{text}'") from None
    return w, h


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the examples in the epilog as written and shows defaults."""
