"""The package's library API: ``from perception import Pipeline`` works, and ``import perception`` stays light."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _fresh(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_import_perception_imports_neither_torch_nor_the_pipeline():
    heavy = ("torch", "onnxruntime", "perception.pipeline", "nuscenes", "matplotlib")
    code = f"import sys, perception\nprint([m for m in {heavy!r} if m in sys.modules])"
    assert _fresh(code) == "[]"


def test_from_perception_import_pipeline_is_the_class_and_lazy():
    code = ("import sys\nfrom perception import Pipeline, Detections, Frame\nimport perception.pipeline as p\n"
            "import perception.data.frame as f\n"
            "print(Pipeline is p.Pipeline, Detections is p.Detections, Frame is f.Frame, 'torch' in sys.modules)")
    assert _fresh(code) == "True True True False"  # the ONNX / TensorRT pipeline needs no torch either


def test_unknown_attribute_is_an_attribute_error():
    import pytest

    import perception

    with pytest.raises(AttributeError, match="no attribute 'Pipelin'"):
        perception.Pipelin  # noqa: B018
    assert "Pipeline" in dir(perception)
