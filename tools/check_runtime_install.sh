#!/usr/bin/env bash
# The torch-free install of docs/deploy.md, checked in a fresh venv (no torch, no nuscenes-devkit):
#   tools/check_runtime_install.sh VENV_DIR EXPORT_DIR BAG DATAROOT
# EXPORT_DIR: a perception-export folder (made beforehand in the full venv); BAG: a rosbag2 folder and DATAROOT a
# v1.0-synth root with a synth_val split (e.g. both from perception-synth --bags). Installs ".[jetson]" into VENV_DIR, then checks that torch does not import, that every
# console script's --help works, that perception-replay --onnx runs, that perception-engine build without TensorRT
# prints its trtexec command, and that commands needing torch or nuscenes-devkit end in one line naming the extra.
# Prints one "ok:" or "FAIL:" line per check; exits 1 if any failed.
set -uo pipefail
VENV=$1
EXPORT=$2
BAG=$3
DATAROOT=$4
REPO=$(cd "$(dirname "$0")/.." && pwd)
fail=0
check() {  # check NAME EXPECTED_RC GREP_PATTERN -- command...
    local name=$1 want=$2 pattern=$3
    shift 4
    local out rc
    out=$("$@" 2>&1)
    rc=$?
    if [[ $rc -eq $want ]] && grep -qE -- "$pattern" <<<"$out" && ! grep -q "Traceback" <<<"$out"; then
        echo "ok: $name"
    else
        echo "FAIL: $name (exit $rc, wanted $want and /$pattern/)"
        tail -5 <<<"$out" | sed 's/^/    /'
        fail=1
    fi
}

python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q -e "$REPO[jetson]" "numpy<2" 2>&1 \
    | { grep -v "^WARNING: Location" || true; }
B=$VENV/bin
echo "installed: $("$B/python" -m pip list --disable-pip-version-check --format=freeze 2>/dev/null | grep -ivE '^(pip|setuptools|wheel)==' | tr '\n' ' ')"
check "torch is not installed" 0 "absent" -- "$B/python" -c \
    "import importlib.util as u, sys; print('absent' if u.find_spec('torch') is None else 'installed')"
for cli in perception-calib perception-synth perception-inspect perception-train perception-test perception-export \
           perception-replay perception-engine perception-infer; do
    [[ -x $B/$cli ]] || continue
    check "$cli --help" 0 "usage:" -- "$B/$cli" --help
done
OUT=$(mktemp -d)
check "perception-replay --onnx (no torch)" 0 "frames; messages received" -- \
    "$B/perception-replay" --bag "$BAG" --onnx "$EXPORT" --out "$OUT/replay" --max-frames 3 --no-progress
check "perception-engine build without TensorRT: one paragraph with the trtexec command" 1 "trtexec --onnx=" -- \
    "$B/perception-engine" build --onnx "$EXPORT" --out "$OUT/engine"
check "perception-train names torch and [train]" 1 "'torch'.*bevfusion-rc\[train\]" -- \
    "$B/perception-train" "$REPO/configs/synthetic_tiny.yaml" --dataroot "$OUT" --out "$OUT/train"
check "perception-test --onnx names nuscenes-devkit and [eval]" 1 "'nuscenes-devkit'.*bevfusion-rc\[eval\]" -- \
    "$B/perception-test" --onnx "$EXPORT" --dataroot "$DATAROOT" --version v1.0-synth --split synth_val --out "$OUT/test"
rm -rf "$OUT"
exit $fail
