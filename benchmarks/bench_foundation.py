"""Foundation benchmark: fresh-install time, `make test` time, and the radar PCD reader against the devkit's.

    python -m benchmarks.bench_foundation                 # all three (clones HEAD into a temp dir; a few minutes)
    python -m benchmarks.bench_foundation --skip-install  # reader only; install/test figures carried over

Fresh install and `make test` are measured on a fresh clone of the committed HEAD, exactly as CI
runs it (a new .venv, the Makefile's install). Reader speed is a ratio measured in one run (median
of repeats), since this machine is noisy.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.report import REPO, machine, publish, table


def _timed(cmd: list[str], cwd: Path) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-4000:] + r.stderr[-4000:])
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {r.returncode}")
    return time.perf_counter() - t


def fresh_clone_times() -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench_foundation_"))
    try:
        clone = tmp / "repo"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        # tests read the real samples from ../shared/realdata beside the checkout
        shared = REPO.parent / "shared"
        if shared.is_dir():
            (tmp / "shared").symlink_to(shared)
        install = _timed(["make", "install"], clone)
        test = _timed(["make", "test"], clone)
        return {"fresh_install_s": install, "make_test_s": test}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def radar_reader_ratio(repeats: int = 7, files: int = 30) -> dict[str, float]:
    from nuscenes.utils.data_classes import RadarPointCloud

    from perception.data.io import DEVKIT_DEFAULT, read_radar_pcd, write_radar_pcd

    rng = np.random.default_rng(0)
    tmp = Path(tempfile.mkdtemp(prefix="bench_pcd_"))
    paths = []
    for i in range(files):
        pts = np.zeros((125, 18), np.float32)  # the size of a real nuScenes sweep
        pts[:, :3] = rng.uniform(-80, 80, (125, 3))
        pts[:, 11] = 3
        paths.append(tmp / f"r{i}.pcd")
        write_radar_pcd(paths[-1], pts)
    ours, devkit = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        for p in paths:
            DEVKIT_DEFAULT.apply(read_radar_pcd(p))
        ours.append((time.perf_counter() - t) / files)
        t = time.perf_counter()
        for p in paths:
            RadarPointCloud.from_file(str(p))
        devkit.append((time.perf_counter() - t) / files)
    shutil.rmtree(tmp, ignore_errors=True)
    o, d = statistics.median(ours), statistics.median(devkit)
    return {"ours_ms": o * 1e3, "devkit_ms": d * 1e3, "speedup": d / o}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-install", action="store_true", help="skip the fresh-clone install and make test timing")
    args = ap.parse_args(argv)
    results: dict = {}
    rows = []
    previous = REPO / "benchmarks" / "out" / "foundation.json"
    if args.skip_install and previous.exists():
        old = json.loads(previous.read_text())
        if "fresh_install_s" in old:
            results = {k: old[k] for k in ("fresh_install_s", "make_test_s", "install_measured")}
    else:
        results.update(fresh_clone_times())
        results["install_measured"] = machine()["date"] + " at " + machine()["commit"]
    if results:
        rows += [["fresh install (`make install` on a fresh clone: venv + pip)", f"{results['fresh_install_s']:.0f} s", "-"],
                 ["`make test` after it (whole suite)", f"{results['make_test_s']:.0f} s", "under ~20 min"],
                 ["(install and test measured)", results["install_measured"], ""]]
    radar = radar_reader_ratio()
    results["radar_pcd"] = radar
    rows.append(["radar PCD read + devkit filters, 125 points: ours / devkit `RadarPointCloud.from_file`",
                 f"{radar['ours_ms']:.3f} ms / {radar['devkit_ms']:.3f} ms = **{radar['speedup']:.1f}x**",
                 "-"])
    md = ("## Foundation (issue 2)\n\nCommand: `python -m benchmarks.bench_foundation` "
          "(2 cores, medians of 7 repeats for the reader).\n\n" + table(["what", "figure", "target"], rows))
    publish("foundation", results, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
