"""The layering rules of docs/architecture.md, checked by reading every import (module level and function-local)
of calibration/, perception/ and export/ with ``ast``: a rule broken by a lazy import inside a function fails too.

- calibration/ imports nothing else of ours;
- perception/ never imports export/ (export imports perception; the demo runs perception-export as a process);
- perception/model/ imports no dataset, training, evaluation or replay code;
- perception/runtime/ imports no torch, directly or through a module of ours it imports at module level;
- no private name (``_name``) is imported from another module of ours;
- the inference-side modules import no heavy dependency when imported (torch, numba, the devkit, matplotlib, ONNX
  Runtime): those stay lazy imports inside the functions that need them, which is what a lazy import is kept for.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("calibration", "perception", "export")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str) -> list[tuple[str, tuple[str, ...], bool, int]]:
    """(imported module, names taken from it, at module level?, line) for every import statement of ``path``
    (module ``module``: relative imports resolve against it)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    top = {id(node) for node in tree.body}
    for node in tree.body:  # imports inside a module-level `if`/`try` still run at import
        if isinstance(node, (ast.If, ast.Try)):
            top |= {id(n) for n in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, (), id(node) in top, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.append((base, tuple(a.name for a in node.names), id(node) in top, node.lineno))
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, tuple[Path, list]]:
    """module name -> (file, its imports), over our three packages."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            out[_module_name(path)] = (path, _imports(path, _module_name(path)))
    assert {"calibration.rig", "perception.model.network", "export.onnx", "perception.runtime.onnxruntime"} <= set(out)
    return out


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _offenders(graph, source: str, forbidden: tuple[str, ...]) -> list[str]:
    return [f"{path.relative_to(REPO)}:{line} imports {target}"
            for mod, (path, imports) in graph.items() if _within(mod, source)
            for target, _, _, line in imports if any(_within(target, f) for f in forbidden)]


def test_calibration_imports_nothing_of_ours(graph):
    assert _offenders(graph, "calibration", ("perception", "export")) == []


def test_perception_never_imports_export(graph):
    assert _offenders(graph, "perception", ("export",)) == []


def test_model_imports_no_data_train_eval_or_replay(graph):
    forbidden = tuple(f"perception.{p}" for p in ("data", "train", "eval", "replay", "cli", "pipeline",
                                                  "integrations"))
    assert _offenders(graph, "perception.model", forbidden) == []


def test_runtime_imports_no_torch(graph):
    """Directly (any import in perception/runtime), or through modules of ours that the runtime imports at module
    level (what ``import perception.runtime.onnxruntime`` executes)."""
    assert _offenders(graph, "perception.runtime", ("torch",)) == []
    seen: set[str] = set()
    todo = [m for m in graph if _within(m, "perception.runtime")]
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        path, imports = graph[mod]
        for target, names, at_top, line in imports:
            if not at_top:
                continue
            assert not _within(target, "torch"), f"{path.relative_to(REPO)}:{line} (reached from perception.runtime)"
            for cand in (target, *(f"{target}.{n}" for n in names)):
                if cand in graph:
                    todo.append(cand)
                    # importing a package runs its parents' __init__ too
                    parts = cand.split(".")
                    todo += [".".join(parts[:k]) for k in range(1, len(parts)) if ".".join(parts[:k]) in graph]
    assert "perception.runtime.onnxruntime" in seen and "perception.runtime.tensorrt" in seen


def test_no_private_names_across_modules(graph):
    bad = [f"{path.relative_to(REPO)}:{line} takes {[n for n in names if n.startswith('_')]} from {target}"
           for mod, (path, imports) in graph.items()
           for target, names, _, line in imports
           if target.split(".")[0] in PACKAGES and target != mod
           and any(n.startswith("_") and not n.startswith("__") for n in names)]
    assert bad == []


LIGHT_MODULES = ("perception.pipeline", "perception.data.assemble", "perception.data.nuscenes", "perception.data.batch",
                 "perception.replay.readers", "perception.replay.player", "perception.replay.frames",
                 "perception.eval.benchmark", "perception.runtime.onnxruntime", "perception.runtime.tensorrt")
HEAVY = ("torch", "numba", "nuscenes", "matplotlib", "onnxruntime")


def test_inference_side_modules_import_no_heavy_dependency():
    """In a fresh interpreter: importing these modules (a Pipeline over ONNX Runtime, replay, Frame assembly,
    perception-test's engine) loads none of HEAVY; they load when a function that needs them runs."""
    code = (f"import importlib, sys\nfor m in {LIGHT_MODULES!r}:\n    importlib.import_module(m)\n"
            f"print(sorted(h for h in {HEAVY!r} if h in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_checker_sees_function_local_and_relative_imports(tmp_path):
    """The rule checks cannot pass vacuously: a lazy import inside a function is found, with its line, and a
    relative import resolves to the module it names."""
    src = tmp_path / "mod.py"
    src.write_text("import os\n\ndef f():\n    from export.onnx import export_onnx\n    from .sync import PoseStream\n")
    found = [(t, names, top, line) for t, names, top, line in _imports(src, "calibration.mod")]
    assert found == [("os", (), True, 1), ("export.onnx", ("export_onnx",), False, 4),
                     ("calibration.sync", ("PoseStream",), False, 5)]
