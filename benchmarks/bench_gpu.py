"""Batch-1 network latency on a CUDA GPU: PyTorch eager vs CUDA graphs, FP32 and FP16 autocast, and ONNX Runtime's
CUDA provider when the installed onnxruntime has one. The prepared GPU check of issue 8; needs only torch, numpy
and PyYAML (no data, no devkit): the inputs come from an ``.npz`` of network input arrays.

    python -m benchmarks.bench_gpu --make-inputs benchmarks/gpu_inputs   # on a CPU machine with data/synth
    python -m benchmarks.bench_gpu --inputs-dir benchmarks/gpu_inputs     # on the GPU host
    python -m benchmarks.bench_gpu --device cpu --configs synthetic_tiny --repeats 3 --no-publish   # smoke test

``--make-inputs DIR`` writes DIR/<config>.npz: the preprocessed input arrays of one ``synth_val`` Frame loaded
with each config (``perception.data.batch.input_arrays``, as every backend is fed). Without ``--inputs-dir`` the
inputs are built from ``--dataroot`` the same way (needs the data pipeline's dependencies).

Timed: ``FusionNet.detect`` (network and in-graph decoding) on random weights (seed 0, non-trivial BatchNorm
statistics; latency does not depend on the values), ``torch.no_grad``. Eager: inputs already on the device,
CUDA events around each call, ``--warmup`` untimed calls first, median of ``--repeats``. CUDA graphs:
``torch.cuda.CUDAGraph`` captured once on static input tensors (after a warm-up on a side stream, as PyTorch's
documentation prescribes), then replayed. FP16: ``torch.autocast("cuda", dtype=torch.float16)`` around the same
calls (the lift's sum stays FP32, as in training). ONNX Runtime: the graph ``perception-export`` writes
(``export.onnx.export_onnx``), ``CUDAExecutionProvider`` only, inputs copied from host each call (what a caller
pays). Peak memory: ``torch.cuda.max_memory_allocated`` per PyTorch variant. Speed-ups are ratios against eager
FP32 in the same run. Writes benchmarks/out/gpu.json and the ``gpu`` section of docs/BENCHMARKS.md.

Exit codes: 0 done; 2 no CUDA device (``--device cuda``) or bad arguments.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_export import nontrivial_batchnorm
from benchmarks.report import REPO, publish, table

CONFIGS = ("nuscenes_r50_256x704",)


def make_inputs(name: str, dataroot: str, version: str, split: str, out: Path) -> Path:
    """DIR/<name>.npz: the input arrays of the first Frame of ``split`` loaded with config ``name``."""
    import numpy as np

    from perception.config import load_config
    from perception.data.batch import PillarSpec, input_arrays
    from perception.data.nuscenes import NuScenesFrames

    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    frame = NuScenesFrames(cfg, dataroot, version, split)[0]
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.npz"
    np.savez(path, **input_arrays([frame], PillarSpec.from_config(cfg)))
    return path


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_calls(fn, device, warmup: int, repeats: int) -> list[float]:
    """Seconds per call: CUDA events on a GPU, perf_counter on the CPU (smoke test)."""
    import torch

    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return times


def bench_config(name: str, arrays: dict, device, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from perception.config import load_config
    from perception.model.network import INPUT_NAMES, build_model

    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    torch.manual_seed(0)
    net = build_model(cfg).eval()
    with torch.no_grad():
        nontrivial_batchnorm(net)
    net.to(device)
    inputs = [torch.from_numpy(arrays[k]).to(device) for k in INPUT_NAMES]
    res: dict[str, Any] = {"config": name, "params": int(sum(p.numel() for p in net.parameters())),
                           "input_shapes": {k: list(arrays[k].shape) for k in INPUT_NAMES}, "ms": {}, "peak_mb": {}}

    def run_eager(amp: bool):
        def call():
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                return net.detect(*inputs)
        return call

    variants = [("eager_fp32", False)] + ([("eager_fp16", True)] if device.type == "cuda" else [])
    for label, amp in variants:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = _time_calls(run_eager(amp), device, args.warmup, args.repeats)
        res["ms"][label] = statistics.median(times) * 1e3
        if device.type == "cuda":
            res["peak_mb"][label] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    if device.type == "cuda":
        for label, amp in (("cuda_graph_fp32", False), ("cuda_graph_fp16", True)):
            torch.cuda.reset_peak_memory_stats(device)
            static = [t.clone() for t in inputs]
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side), torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                for _ in range(3):
                    net.detect(*static)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=amp), torch.cuda.graph(graph):
                graph_out = net.detect(*static)  # noqa: F841 - kept alive: the graph writes into these tensors
            times = _time_calls(graph.replay, device, args.warmup, args.repeats)
            res["ms"][label] = statistics.median(times) * 1e3
            res["peak_mb"][label] = torch.cuda.max_memory_allocated(device) / 2 ** 20
            del graph, graph_out
    if not args.no_ort:
        res["ort"] = _bench_ort(net.cpu(), cfg, arrays, device, args)
    return res


def _bench_ort(net, cfg, arrays: dict, device, args: argparse.Namespace) -> dict[str, Any]:
    """ONNX Runtime with the CUDA provider only (never a silent CPU fallback)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return {"status": "onnxruntime not installed"}
    want = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
    if want not in ort.get_available_providers():
        return {"status": f"{want} not in this onnxruntime build ({', '.join(ort.get_available_providers())})"}
    import torch

    from export.onnx import export_onnx
    from perception.model.network import INPUT_NAMES

    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(net, [torch.from_numpy(arrays[k]) for k in INPUT_NAMES], Path(tmp) / "model.onnx")
        opts = ort.SessionOptions()
        sess = ort.InferenceSession(str(path), opts, providers=[want])
        feeds = {i.name: arrays[i.name] for i in sess.get_inputs()}
        times = _time_calls(lambda: sess.run(None, feeds), torch.device("cpu"), args.warmup, args.repeats)
    return {"status": "ok", "provider": want, "ms": statistics.median(times) * 1e3}


def _markdown(results: dict[str, Any], args: argparse.Namespace) -> str:
    rows = []
    for name, r in results["configs"].items():
        base = r["ms"]["eager_fp32"]
        for label, ms in r["ms"].items():
            peak = r["peak_mb"].get(label)
            rows.append([f"`{name}`", label, f"{ms:.1f}", f"{base / ms:.2f}x", f"{1e3 / ms:.1f}",
                         f"{peak:.0f}" if peak is not None else "-"])
        ort = r.get("ort", {})
        if ort.get("status") == "ok":
            rows.append([f"`{name}`", f"onnxruntime {ort['provider']}", f"{ort['ms']:.1f}", f"{base / ort['ms']:.2f}x",
                         f"{1e3 / ort['ms']:.1f}", "-"])
        elif ort:
            rows.append([f"`{name}`", "onnxruntime", "-", "-", "-", ort["status"]])
    cmd = "python -m benchmarks.bench_gpu" + (" --configs " + " ".join(args.configs)
                                              if tuple(args.configs) != CONFIGS else "")
    return ("## Network on a GPU (issue 8)\n\n"
            f"Command: `{cmd}` on **{results['device_name']}** (torch {results['torch']}, CUDA "
            f"{results['cuda']}); batch 1, random weights, median of {args.repeats} after {args.warmup} warm-up "
            "calls; speed-up against eager FP32 in the same run; FPS = 1000 / ms (network and in-graph decoding "
            "only, inputs already on the device except for ONNX Runtime).\n\n"
            + table(["config", "variant", "ms", "speed-up", "FPS", "peak MB"], rows))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_gpu", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), metavar="NAME",
                    help="config names under configs/ (default: %(default)s)")
    ap.add_argument("--device", default="cuda", help="torch device (default: cuda; cpu runs a smoke test)")
    ap.add_argument("--repeats", type=int, default=50, help="timed calls per variant (default: %(default)s)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed calls first (default: %(default)s)")
    ap.add_argument("--inputs-dir", help="folder of <config>.npz input arrays (from --make-inputs)")
    ap.add_argument("--make-inputs", metavar="DIR", help="write DIR/<config>.npz from --dataroot and stop")
    ap.add_argument("--dataroot", default=str(REPO / "data" / "synth"))
    ap.add_argument("--version", default="v1.0-synth")
    ap.add_argument("--split", default="synth_val")
    ap.add_argument("--no-ort", action="store_true", help="skip ONNX Runtime")
    ap.add_argument("--no-publish", action="store_true", help="print only; do not write JSON / BENCHMARKS.md")
    args = ap.parse_args(argv)
    unknown = [c for c in args.configs if not (REPO / "configs" / f"{c}.yaml").exists()]
    if unknown:
        ap.error(f"unknown config(s) {unknown}: expected names of configs/*.yaml")
    if args.make_inputs:
        for name in args.configs:
            print(f"wrote {make_inputs(name, args.dataroot, args.version, args.split, Path(args.make_inputs))}")
        return 0
    import numpy as np
    import torch

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device visible to torch (torch.cuda.is_available() is False); run it on a GPU "
              "host, or pass --device cpu for a smoke test", file=sys.stderr)
        return 2
    results: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda,
                               "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                                               else "CPU (smoke test)"), "configs": {}}
    for name in args.configs:
        if args.inputs_dir:
            path = Path(args.inputs_dir) / f"{name}.npz"
            if not path.exists():
                print(f"bench_gpu: {path} not found: write it with --make-inputs {args.inputs_dir} on a machine "
                      "with the synthetic data", file=sys.stderr)
                return 2
        else:
            path = make_inputs(name, args.dataroot, args.version, args.split, Path(tempfile.mkdtemp()))
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        print(f"[{name}] timing on {results['device_name']} ...", flush=True)
        results["configs"][name] = bench_config(name, arrays, device, args)
        print(f"[{name}] " + ", ".join(f"{k} {v:.1f} ms" for k, v in results["configs"][name]["ms"].items()),
              flush=True)
    md = _markdown(results, args)
    if args.no_publish:
        print(md)
    else:
        publish("gpu", results, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
