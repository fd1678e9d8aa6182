"""Imports run one way: `common` at the bottom, then keras_effnet <- training <- edge <- study.

Parsed with `ast`, so it checks every import, including those inside functions, without importing TensorFlow.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Each package, and the project packages it may import (itself aside).
ALLOWED = {
    "common": set(),
    "keras_effnet": {"common"},
    "training": {"common", "keras_effnet"},
    "edge": {"common", "keras_effnet", "training"},
    "study": {"common", "keras_effnet", "training", "edge"},
}


def _imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_the_floors_below(package):
    wrong = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = _imported_packages(path) - ALLOWED[package] - {package}
        if bad:
            wrong[path.relative_to(ROOT).as_posix()] = sorted(bad)
    assert not wrong, f"imports that run up the layers: {wrong}"


def test_the_checker_sees_an_upward_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from training import loop\n    import edge.export\n")
    assert _imported_packages(probe) == {"training", "edge"}
