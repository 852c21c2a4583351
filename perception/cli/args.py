"""The argparse types every console script shares (standard library only: perception-engine imports this
without torch or the data stack). A value they refuse is a command-line error: argparse prints the usage and
exits 2."""
from __future__ import annotations

import argparse
import math
from typing import Callable


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
