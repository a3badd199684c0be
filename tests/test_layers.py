"""The package layout of docs/design.md: imports only go down the layers, and form no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "redsession"

# Lowest first. A module may import its own layer or lower ones; model and storage, the two
# halves of layer 1, know nothing of each other (core joins them).
LAYERS: list[tuple[str, ...]] = [
    ("redsession.config", "redsession.errors", "redsession.files"),
    ("redsession.model", "redsession.storage"),
    ("redsession.core",),
    ("redsession.maintenance", "redsession.mirror"),
    ("redsession.manager", "redsession.async_manager"),
    ("redsession",),  # the package's facade: the public names
    ("redsession.services", "redsession.cli", "redsession.integrations", "redsession.api",
     "redsession.__main__"),
]  # fmt: skip
SIBLINGS_APART = {("redsession.model", "redsession.storage")}


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every redsession module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "redsession"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("redsession"):
            assert node.module is not None
            for a in node.names:
                # "from redsession.core import sessions": the submodule is what is used;
                # "from redsession import __version__": the package itself.
                sub = f"{node.module}.{a.name}"
                found.add(sub if _exists(sub) else node.module)
    return {m for m in found if _exists(m)}


def _exists(module: str) -> bool:
    rel = Path(*module.split("."))
    return (PACKAGE.parent / rel).with_suffix(".py").is_file() or (
        PACKAGE.parent / rel / "__init__.py"
    ).is_file()


def _group(module: str) -> tuple[int, str]:
    """(layer, the layer entry the module belongs to): the longest matching prefix."""
    best = (-1, "")
    for i, layer in enumerate(LAYERS):
        for entry in layer:
            if (module == entry or module.startswith(entry + ".")) and len(entry) > len(best[1]):
                best = (i, entry)
    assert best[0] >= 0, f"{module} is in no layer: add it to LAYERS and docs/design.md"
    return best


def _graph() -> dict[str, set[str]]:
    return {_module(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_import_goes_down_the_layers() -> None:
    wrong = []
    for module, imported in _graph().items():
        layer, entry = _group(module)
        for other in imported:
            o_layer, o_entry = _group(other)
            if o_layer > layer or (entry, o_entry) in SIBLINGS_APART | {
                (b, a) for a, b in SIBLINGS_APART
            }:
                wrong.append(f"{module} (layer {layer}) imports {other} (layer {o_layer})")
    assert wrong == []


def test_no_import_cycles() -> None:
    graph = _graph()
    # Packages' __init__ files import their own modules' names at most; a cycle among modules
    # is a chain a -> ... -> a.
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt == node or node.startswith(nxt + "."):
                continue  # a module importing its own package's name (e.g. __version__)
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []
