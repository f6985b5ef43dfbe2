"""The house rules of the source tree: layers import only downwards, no import cycles, files
short enough to read (or saying why not)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "mosaicflow"

#: Layer of each top-level module or package of ``mosaicflow``: a module may import its own
#: package and lower layers only. Foundations < storage < test data < stage algorithms
#: (kernels and their Dask wrappers, siblings that never import each other) < classification
#: < report < pipeline < benchmark < command line.
LAYERS: dict[str, int] = {
    "errors": 0,
    "_torchvision": 0,
    "config": 1,
    "runner": 1,
    "dispatch": 1,
    "_shared": 2,
    "io": 3,
    "synth": 4,
    "stitch": 5,
    "restoration": 5,
    "segmentation": 6,  # builds instances on measure.label (chunk-exact seeds)
    "measure": 5,
    "classify": 6,
    "report": 7,
    "selection": 7,
    "deploy": 7,  # below cluster, whose kubernetes back-end builds its KubeCluster from it
    "cluster": 8,
    "pipeline": 8,
    "bench": 9,  # runs the pipeline on a local cluster; the command line imports it
    "cli": 10,
    "napari_reader": 10,
}
MAX_LINES = 500
LONG_FILE_REASON = "Kept in one file:"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, *, top_level_only: bool) -> set[str]:
    """mosaicflow modules that ``name`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("mosaicflow")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.startswith("mosaicflow"):
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names}
    return found


def _layer(module: str) -> tuple[str, int]:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    return top, LAYERS.get(top, -1)


def test_every_module_has_a_layer():
    tops = {_layer(m)[0] for m in _modules() if m != "mosaicflow"}
    assert tops <= set(LAYERS), f"modules without a layer: {sorted(tops - set(LAYERS))}"


def test_no_module_imports_a_higher_or_sibling_layer():
    modules = _modules()
    bad = []
    for name, path in modules.items():
        if name == "mosaicflow":
            continue
        top, layer = _layer(name)
        for target in _imports(name, path, top_level_only=False):
            if target not in modules:
                continue
            other, other_layer = _layer(target)
            if other and other != top and other_layer >= layer:
                bad.append(f"{name} -> {target}")
    assert not bad, "imports that go upwards or sideways:\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
    modules = _modules()
    graph = {
        n: {t for t in _imports(n, p, top_level_only=True) if t in modules and t != n}
        for n, p in modules.items()
    }
    # A package's __init__ importing its own submodules is not a cycle of the submodule.
    for n in graph:
        graph[n] = {t for t in graph[n] if not n.startswith(t + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for t in sorted(graph[n]):
            if state.get(t) == 1:
                cycle = [*stack[stack.index(t) :], t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


def test_files_are_short_or_say_why():
    long = []
    for path in sorted(SRC.rglob("*.py")):
        n = len(path.read_text().splitlines())
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if n > MAX_LINES and LONG_FILE_REASON not in doc:
            long.append(f"{path.relative_to(SRC)}: {n} lines")
    assert not long, f"files over {MAX_LINES} lines without '{LONG_FILE_REASON}':\n" + "\n".join(
        long
    )


def test_architecture_file_map_names_every_file():
    doc = (SRC.parents[1] / "docs" / "ARCHITECTURE.md").read_text()
    section = doc.split("## File map", 1)[-1].split("\n## ", 1)[0]
    listed = {line.split("`")[1] for line in section.splitlines() if line.startswith("| `")}
    files = {str(p.relative_to(SRC)) for p in SRC.rglob("*.py")}
    assert files - listed == set(), "files missing from the file map"
    assert listed - files == set(), "file map names files that do not exist"
