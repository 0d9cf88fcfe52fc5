"""The layout holds: no import cycles (function-level imports included), flags only in cli/, no slicer."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LIBRARY = REPO / "SegSSLLib"
FLAG = re.compile(r"(?<![\w-])--(\{\}|[a-z][a-z0-9]*(-[a-z0-9]+)*)")


def _modules() -> dict[str, Path]:
    found = {}
    for path in LIBRARY.rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Library modules ``name`` imports anywhere in its file (inside functions too)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    targets = set()
    tree = ast.parse(path.read_text(), str(path))
    for block in [n for n in ast.walk(tree) if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"]:
        block.body = []  # imports for type checkers only: they never run
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                # ``from package import module`` imports that module; ``from module import name`` the module.
                targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {t for t in targets if t in modules and t != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for other in sorted(graph[node]):
            if state.get(other) == 1:
                return stack[stack.index(other):] + [other]
            if other not in state:
                found = visit(other)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_checker_finds_a_cycle_and_resolves_package_imports():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    graph = _graph()
    assert "SegSSLLib.propagation.registration" in graph["SegSSLLib.propagation.propagate"]
    assert "SegSSLLib.cli.s3net_method" in graph["SegSSLLib.cli.segment_command"]  # ``from SegSSLLib.cli import ...``
    assert "SegSSLLib.weights.models" in graph["SegSSLLib.propagation.propagate"]  # a function-level import


def test_no_import_cycles_function_level_imports_included():
    assert _cycle(_graph()) is None


def test_only_the_cli_imports_the_cli():
    graph = _graph()
    offenders = {
        name: sorted(t for t in targets if t.startswith("SegSSLLib.cli"))
        for name, targets in graph.items()
        if not name.startswith("SegSSLLib.cli") and name != "SegSSLLib.__main__"
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def _strings_of(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _messages(tree: ast.AST) -> list[tuple[int, str]]:
    """The text of every SegSSLError(...) and every log call (what a panel user may read)."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        name = function.id if isinstance(function, ast.Name) else function.attr if isinstance(function, ast.Attribute) else ""
        is_log = isinstance(function, ast.Attribute) and name in {"debug", "info", "warning", "error", "exception"} and (
            isinstance(function.value, ast.Name) and function.value.id in {"log", "logging", "logger"}
        )
        if name in {"SegSSLError", "ValueError"} or is_log:
            found += [(node.lineno, "{}".join(_strings_of(argument))) for argument in node.args]
        for keyword in node.keywords:  # purpose="..." completes error messages
            if keyword.arg in {"purpose", "what", "needed_for"}:
                found.append((node.lineno, "{}".join(_strings_of(keyword.value))))
    return found


def test_no_library_message_is_worded_in_flags():
    offenders = []
    for name, path in _modules().items():
        if name.startswith("SegSSLLib.cli") or name == "SegSSLLib.__main__":
            continue
        for line, text in _messages(ast.parse(path.read_text())):
            if FLAG.search(text):
                offenders.append(f"{path.relative_to(REPO)}:{line}: {text!r}")
    assert offenders == []


def test_the_message_check_sees_flags():
    tree = ast.parse('raise SegSSLError(f"--image-size {x} is bad")\nlog.warning("use --device cpu")\n')
    assert [FLAG.search(text) is not None for _, text in _messages(tree)] == [True, True]
    assert not FLAG.search("a range 0--1 and a dash — here")


def test_the_library_never_imports_slicer_or_qt():
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.split(".")[0] in {"slicer", "qt", "ctk", "vtk", "mrml"} for n in names), name


def test_flags_map_parameter_names_in_one_place():
    from SegSSLLib.cli.flags import in_flags

    assert in_flags("`sam2_checkpoint` x is a folder") == "--sam2-checkpoint x is a folder"
    assert in_flags("`max_cases` 3 is too many; lower `validation_fraction`") == "--cases 3 is too many; lower --val-fraction"
    assert in_flags("`axis` 3", "refine") == "--refine-axis 3"
    assert in_flags("`SEGSSL_SAM2_CHECKPOINT` x") == "SEGSSL_SAM2_CHECKPOINT x"  # no flag: the plain name
    assert in_flags("run `segssl weights list`") == "run `segssl weights list`"  # not a parameter
