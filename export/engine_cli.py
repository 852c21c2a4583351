"""perception-engine: a TensorRT 10 engine from perception-export's ONNX files, on the machine that will run it
(a Jetson Orin with JetPack 6.x, or an x86 GPU host). Needs tensorrt, numpy and polygraphy; never torch."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

from perception.cli.args import number

EXAMPLES = """examples:
  perception-engine build --onnx exports/tiny --precision fp16 --out engines/tiny_fp16
  perception-engine build --onnx exports/tiny --precision int8 --out engines/tiny_int8   # model_int8.onnx (Q/DQ)
  perception-engine info engines/tiny_fp16
  perception-test --engine engines/tiny_fp16 --dataroot data/synth --version v1.0-synth --split synth_val --out eval/trt

build writes OUT/model.engine, OUT/engine.json (TensorRT version, precision, device, ONNX sha256, the trtexec
equivalent) and a copy of model.json. fp16 and fp32 read model.onnx; int8 reads the explicit Q/DQ graph
model_int8.onnx (perception-export --int8), no calibration here. Under fp16/int8 the layers computed from the
calibration (img_from_ego) and the radar points stay FP32 unless --fp16-geometry. An engine only runs with the
TensorRT version and on the GPU model it was built with: build it on the target.
exit codes: 0 ok; 1 invalid input (no tensorrt, missing files, parse or build failure); 2 bad arguments."""

INFO_EXAMPLES = """examples:
  perception-engine info engines/tiny_fp16

Prints FOLDER/engine.json (schema perception-engine/1: TensorRT version, precision, builder flags, device and
compute capability, ONNX sha256, the trtexec equivalent, the layers pinned to FP32). Needs no TensorRT.
exit codes: 0 ok; 1 invalid input (no engine.json in FOLDER, or not one written by perception-engine build);
2 bad arguments."""

EXIT_OK, EXIT_INPUT = 0, 1


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """perception.cli.common.HelpFormatter's behaviour (examples as written, defaults shown)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perception-engine", description=__doc__, epilog=EXAMPLES,
                                formatter_class=_HelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build OUT/model.engine from an export folder", epilog=EXAMPLES,
                       formatter_class=_HelpFormatter)
    b.add_argument("--onnx", required=True, help="export folder (model.onnx, model.json, model_int8.onnx for int8)")
    b.add_argument("--out", required=True, help="engine folder")
    b.add_argument("--precision", choices=["fp16", "int8", "fp32"], default="fp16")
    b.add_argument("--workspace-gb", type=number(float, min=0.0, min_exclusive=True, max=1024.0), default=2.0,
                   help="builder workspace memory-pool limit (GiB)")
    b.add_argument("--fp16-geometry", action="store_true",
                   help="let the builder run the calibration-dependent geometry in FP16 too (unsafe: the lift's depth "
                        "lookup addresses rows of a map with (D + 1) x (Hf + 1) rows, which FP16 cannot; "
                        "docs/deploy.md)")
    b.add_argument("--verbose", action="store_true", help="TensorRT's verbose build log")
    i = sub.add_parser("info", help="print an engine folder's engine.json", epilog=INFO_EXAMPLES,
                       formatter_class=_HelpFormatter)
    i.add_argument("folder", help="engine folder written by perception-engine build")
    return p


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "info":
        from perception.runtime.tensorrt import read_engine_json

        print(json.dumps(read_engine_json(args.folder), indent=1))
        return EXIT_OK
    from export.tensorrt import build_engine
    from perception.outputs import check_folder_target, output_lock

    with output_lock(check_folder_target(args.out)):  # two builds into one folder would mix their files
        meta = build_engine(args.onnx, args.out, args.precision, args.workspace_gb, not args.fp16_geometry,
                            args.verbose)
    pinned = len(meta["fp32_geometry"]["layers"])
    print(f"wrote {args.out}/model.engine ({meta['precision']}, TensorRT {meta['tensorrt_version']}, "
          f"{meta['device']['name']}, {pinned} geometry layers pinned to FP32), engine.json and model.json")
    return EXIT_OK


def _run(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None,
         errors: tuple[type[BaseException], ...]) -> int:
    """perception.cli.common.run's policy (one 'error: <Kind>: ...' line, exit 1), without importing it: that
    module pulls in calibration and so torch, which a Jetson building engines need not have."""
    try:
        return main(argv)
    except errors as err:
        print(f"error: {type(err).__name__}: {' '.join(str(err).split())}", file=sys.stderr)
        return EXIT_INPUT


def main(argv: Sequence[str] | None = None) -> int:
    from export.tensorrt import EngineBuildError
    from perception.runtime.onnxruntime import RuntimeConfigError
    from perception.outputs import OutputError
    from perception.runtime.tensorrt import TensorRTNotAvailable

    return _run(_main, argv, (TensorRTNotAvailable, EngineBuildError, RuntimeConfigError, OutputError, OSError))


if __name__ == "__main__":
    raise SystemExit(main())
