"""OpenMMLab stays optional: only perception/integrations/mmdet3d imports it (the core venv has none of it), and
what the adapter needs imports without it."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
OPENMMLAB = {"mmdet3d", "mmdet", "mmengine", "mmcv"}


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_only_the_integration_package_imports_openmmlab():
    allowed = REPO / "perception" / "integrations" / "mmdet3d"
    offenders = []
    for package in ("calibration", "perception", "export", "tools", "benchmarks"):
        for path in sorted((REPO / package).rglob("*.py")):
            if allowed in path.parents:
                continue
            bad = _imported_roots(path) & OPENMMLAB
            if bad:
                offenders.append(f"{path.relative_to(REPO)}: {sorted(bad)}")
    assert not offenders, offenders
    # and in the integration package, the adapter modules are free of it (they run in the core venv)
    for name in ("__init__.py", "boxes.py", "infos.py"):
        assert not _imported_roots(allowed / name) & OPENMMLAB, name


def test_adapter_imports_without_openmmlab():
    """In a fresh interpreter with OpenMMLab made unimportable, the adapter still imports and nothing pulls
    OpenMMLab in."""
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            f"        if name.split('.')[0] in {sorted(OPENMMLAB)!r}: raise ImportError('blocked ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "import perception.integrations.mmdet3d.infos, perception.integrations.mmdet3d.boxes\n"
            f"assert not [m for m in sys.modules if m.split('.')[0] in {sorted(OPENMMLAB)!r}]\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
