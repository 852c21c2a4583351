"""Shared by the benchmark scripts: write results as JSON and as a Markdown section of docs/BENCHMARKS.md.

Each benchmark owns one section, delimited by ``<!-- bench:NAME -->`` / ``<!-- /bench:NAME -->``;
rerunning a benchmark replaces only its own section.
"""
from __future__ import annotations

import json
import platform
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = REPO / "docs" / "BENCHMARKS.md"
# glibc allocator tunables for CPU training/inference (docs/training.md: the default allocator page-faults most of a step)
GLIBC_TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736:glibc.malloc.top_pad=268435456"


def cpu() -> dict[str, Any]:
    """CPU model, family and the vector ISA extensions that decide which kernels PyTorch (oneDNN) and ONNX Runtime
    (MLAS) pick, from /proc/cpuinfo (empty fields elsewhere): speed ratios between backends depend on them."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set(info.get("flags", "").split())
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8") if f in flags]
    return {"model": info.get("model name", platform.processor()), "family": info.get("cpu family", ""),
            "model_number": info.get("model", ""), "isa": isa}


def machine() -> dict[str, Any]:
    import os

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {"cpus": os.cpu_count(), "cpu": cpu(), "python": platform.python_version(), "machine": platform.machine(),
            "commit": commit, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write(name: str, results: dict[str, Any], markdown: str, out_dir: Path | None = None) -> Path:
    """Save ``results`` to benchmarks/out/NAME.json and put ``markdown`` into the NAME section of BENCHMARKS.md."""
    out_dir = out_dir or REPO / "benchmarks" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps({"schema": "benchmark/1", "name": name, "machine": machine(), **results}, indent=2))
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    if begin in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS_MD.write_text(text)
    return path


def publish(name: str, results: dict[str, Any], markdown: str) -> Path:
    """``write`` and show the table on stdout (what every benchmark ends with)."""
    path = write(name, results, markdown)
    print(markdown)
    print(f"\nwrote {path}")
    return path
