"""Shared CLI plumbing: one error policy for every console script, and the argparse types that enforce it.

Exit codes: 0 success; 1 bad input (a file, a calibration, a config, an output folder in use: the message says
which and what to do); 2 bad command line (argparse, including the numeric types below). Known input errors never
print a traceback.
"""
from __future__ import annotations

import argparse
import math
import sqlite3
import sys
from typing import Callable, Sequence

from calibration.rig import CalibrationError
from calibration.sync import SyncError
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


def number(kind: type = float, *, min: float | None = None, max: float | None = None,  # noqa: A002
           min_exclusive: bool = False) -> Callable[[str], float | int]:
    """An argparse type: a finite ``kind`` (int or float) within [min, max] (``min_exclusive``: > min).
    NaN, infinities, out-of-range values and non-numbers are argument errors (exit 2), e.g.
    ``p.add_argument("--max-samples", type=number(int, min=1))``."""
    low = "" if min is None else (f"> {min}" if min_exclusive else f">= {min}")
    high = "" if max is None else f"<= {max}"
    bounds = " and ".join(b for b in (low, high) if b)
    want = ("an integer" if kind is int else "a finite number") + (f" {bounds}" if bounds else "")

    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"must be {want}; got '{text}'") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be {want}; got '{text}'")
        if min is not None and (value < min or (min_exclusive and value == min)):
            raise argparse.ArgumentTypeError(f"must be {want}; got {text}")
        if max is not None and value > max:
            raise argparse.ArgumentTypeError(f"must be {want}; got {text}")
        return value

    parse.__name__ = want  # argparse names the type in some messages
    return parse


def torch_device(text: str) -> str:
    """An argparse type: a torch device string that is available here ('cpu', 'cuda', 'cuda:1', 'mps')."""
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"'{text}' is not a torch device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"'{text}' is not available here (no CUDA device); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"'{text}' is not available here ({torch.cuda.device_count()} CUDA "
                                             "devices); use cuda:0 .. cuda:N-1 or cpu")
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise argparse.ArgumentTypeError(f"'{text}' is not available here; use --device cpu")
    elif dev.type != "cpu":
        raise argparse.ArgumentTypeError(f"'{text}' is not supported; use cpu, cuda or cuda:N")
    return text


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
