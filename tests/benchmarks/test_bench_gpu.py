"""The prepared GPU check (benchmarks/bench_gpu.py): its CPU smoke path and its refusal without a CUDA device.
The CUDA-graph and FP16 paths run only on a GPU host (not verified on these machines)."""
import pytest
import torch

from benchmarks import bench_gpu


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible: the refusal path does not apply")
def test_refuses_without_cuda(capsys):
    assert bench_gpu.main(["--configs", "synthetic_tiny", "--no-publish"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_missing_inputs_file_is_a_clear_error(tmp_path, capsys):
    assert bench_gpu.main(["--device", "cpu", "--configs", "synthetic_tiny", "--inputs-dir", str(tmp_path),
                           "--no-publish"]) == 2
    assert "synthetic_tiny.npz not found" in capsys.readouterr().err


def test_cpu_smoke_from_made_inputs(synth_root, tmp_path, capsys):
    assert bench_gpu.main(["--configs", "synthetic_tiny", "--make-inputs", str(tmp_path), "--dataroot",
                           str(synth_root)]) == 0
    assert (tmp_path / "synthetic_tiny.npz").exists()
    assert bench_gpu.main(["--device", "cpu", "--configs", "synthetic_tiny", "--inputs-dir", str(tmp_path),
                           "--repeats", "1", "--warmup", "0", "--no-ort", "--no-publish"]) == 0
    out = capsys.readouterr().out
    assert "| `synthetic_tiny` | eager_fp32 |" in out and "CPU (smoke test)" in out
