"""The layering of ``docs/architecture.md``, checked on the code: every import (module-level or
inside a function) from one dft_mm room goes to a room on a lower layer, so there are no upward
or sideways arrows, and no two modules import each other, directly or around a circle. Adding
a room means giving it a layer here and in the doc."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dft_mm"

# room -> layer; a room imports only rooms on lower layers
LAYERS = {
    "core": 0,  # loss_spec, losses, errors, durable: import nothing of dft_mm but each other
    "fused": 1,
    "data": 1,
    "evaluation.code": 1,
    "llamafactory": 2,
    "evaluation.vlm": 2,  # with its kit/ (VLMEvalKit): one room, the kit's adapter uses the scorer's tables
    "evaluation": 3,  # the eval command group over both domains
    "analysis": 3,
    "demo": 4,
    "bench": 5,  # whole-run benchmarks: the demo's tiny models and data
    "entry": 6,  # dft_mm/__init__.py (apply), cli.py, __main__.py
}
ENTRY_MODULES = {"dft_mm", "dft_mm.cli", "dft_mm.__main__"}


def room(module: str) -> str | None:
    """The room of a dotted dft_mm module name (None outside dft_mm)."""
    parts = module.split(".")
    if parts[0] != "dft_mm":
        return None
    if module in ENTRY_MODULES:
        return "entry"
    if len(parts) == 2 and not (PACKAGE / parts[1]).is_dir():
        return "core"
    for depth in (3, 2):
        name = ".".join(parts[1 : 1 + depth])
        if len(parts) > depth and name in LAYERS:
            return name
    return ".".join(parts[1:2])


def is_module(dotted: str) -> bool:
    path = PACKAGE.parent / dotted.replace(".", "/")
    return path.is_dir() or path.with_suffix(".py").exists()


def imported(node: ast.AST) -> list[str]:
    """The modules an import statement loads (``from a import b``: ``a.b`` when it is a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        return [f"{node.module}.{alias.name}" if is_module(f"{node.module}.{alias.name}") else node.module
                for alias in node.names]
    return []


def module_graph() -> dict[str, set[str]]:
    """dft_mm module -> the dft_mm modules it imports (a package stands for its __init__)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        edges[module] |= {target for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                          for target in imported(node) if room(target) and target != module}
    return edges


def import_graph() -> dict[str, set[tuple[str, str]]]:
    """room -> {(importing module, imported module)} for imports that leave the room."""
    edges: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for module, targets in module_graph().items():
        for target in targets:
            if room(target) != room(module):
                edges[room(module)].add((module, target))
    return edges


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_room_has_a_layer():
    rooms = {room(".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"))
             for p in PACKAGE.rglob("*.py")}
    assert rooms <= set(LAYERS), f"rooms without a layer in tests/test_layers.py: {sorted(rooms - set(LAYERS))}"


def test_imports_only_go_down():
    wrong = sorted(
        f"{module} ({source}, layer {LAYERS[source]}) imports {target} ({room(target)}, layer {LAYERS[room(target)]})"
        for source, pairs in import_graph().items()
        for module, target in pairs
        if LAYERS[room(target)] >= LAYERS[source]
    )
    assert not wrong, "imports that do not go down a layer:\n" + "\n".join(wrong)


def test_no_module_imports_itself_around_a_circle():
    assert cycles(module_graph()) == []
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # the check itself


def test_the_core_needs_no_torch_to_describe_a_loss():
    """The loss vocabulary (objectives, levels, YAML keys) is torch-free: LlamaBoard and the CLI's
    --help read it without loading torch."""
    tree = ast.parse((PACKAGE / "loss_spec.py").read_text(encoding="utf-8"))
    modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not {name for name in modules if name.split(".")[0] in ("torch", "dft_mm")}
