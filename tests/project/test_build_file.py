"""The Bazel BUILD file covers every module, test and command.

Bazel cannot fetch its Python rules offline here, so this test stands in for
`bazel query`: it parses BUILD (Starlark is a Python subset) and fails when a
module has no py_library, a test file no py_test, or a command no py_binary.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("common", "keras_effnet", "training", "edge", "study", "benchmarks")
RULES = ("py_library", "py_binary", "py_test")


def _targets():
    tree = ast.parse((ROOT / "BUILD").read_text(), filename="BUILD")
    targets = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in RULES:
            kwargs = {kw.arg: kw.value for kw in node.keywords}
            srcs = []
            if "srcs" in kwargs:
                srcs = [ast.literal_eval(e) for e in kwargs["srcs"].elts]
            main = ast.literal_eval(kwargs["main"]) if "main" in kwargs else None
            targets.append((node.func.id, ast.literal_eval(kwargs["name"]), srcs, main))
    return targets


def _commands():
    """Every module with a `__main__` guard, plus package `__main__.py` files."""
    found = set()
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            text = path.read_text()
            if path.name == "__main__.py" or 'if __name__ == "__main__"' in text:
                found.add(path.relative_to(ROOT).as_posix())
    return found


def test_build_parses_and_names_are_unique():
    targets = _targets()
    names = [name for _, name, _, _ in targets]
    assert len(names) == len(set(names)), "duplicate target names in BUILD"
    for _, name, srcs, _ in targets:
        for src in srcs:
            assert (ROOT / src).is_file(), f"BUILD target {name!r} lists {src!r}, which does not exist"


def test_every_module_is_in_a_py_library():
    covered = {src for kind, _, srcs, _ in _targets() if kind == "py_library" for src in srcs}
    modules = {p.relative_to(ROOT).as_posix() for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    missing = sorted(modules - covered)
    assert not missing, f"modules without a py_library target in BUILD: {missing}"


def test_every_test_file_has_a_py_test():
    covered = {src for kind, _, srcs, _ in _targets() if kind == "py_test" for src in srcs}
    tests = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").rglob("test_*.py")}
    missing = sorted(tests - covered)
    assert not missing, f"test files without a py_test target in BUILD: {missing}"


def test_every_command_has_a_py_binary():
    mains = {main or srcs[0] for kind, _, srcs, main in _targets() if kind == "py_binary"}
    missing = sorted(_commands() - mains)
    assert not missing, f"commands without a py_binary target in BUILD: {missing}"
