"""No import cycle between sarcograde's modules.

Every module under src/sarcograde is parsed with `ast`; each import, at module level or inside a
function, absolute or relative, is an edge to the sarcograde module it loads (`from . import x`
loads module x where x is a submodule, and the packages on the way to a module run their
`__init__`). The graph of these edges must have no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src"

# The one edge left out: the study drives the command line (`study.runner` runs each step
# through `cli.main`, the code path a user runs), and `cli` loads every stage, the study among
# them, by name with importlib, which the AST does not see. Stages must not import `cli`.
DRIVER_EDGES = {("sarcograde.study.runner", "sarcograde.cli")}


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of `package` under `root`."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _loaded(name: str, modules: dict[str, Path]) -> list[str]:
    """The modules that importing `name` runs: its packages from the outermost, then itself
    (or, for a name that is not a module, the modules on the way to it)."""
    parts = name.split(".")
    prefixes = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return [p for p in prefixes if p in modules]


def _targets(node: ast.AST, module: str, is_package: bool, modules: dict[str, Path]) -> list[str]:
    """The dotted names an import statement asks for."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: from the module's package, up level - 1 packages
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join(package[:len(package) - (node.level - 1)] + [node.module or ""]).strip(".")
    else:
        base = node.module
    # `from base import x`: module base.x where x is a submodule, else a name of module base
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
            for alias in node.names]


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the package's modules its imports load (its own packages left out: they are
    already loading when it runs)."""
    modules = module_files(root, package)
    graph = {}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        own = set(_loaded(module, modules))
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(node, module, is_package, modules):
                    edges.update(_loaded(target, modules))
        graph[module] = edges - own
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle as [a, b, ..., a], or None (depth-first search, modules in sorted order)."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        if module in path:
            return path[path.index(module):] + [module]
        if module in done:
            return None
        path.append(module)
        for target in sorted(graph.get(module, ())):
            cycle = visit(target)
            if cycle:
                return cycle
        path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module)
        if cycle:
            return cycle
    return None


def test_no_import_cycle_between_sarcograde_modules():
    graph = import_graph(SOURCE, "sarcograde")
    for source, target in DRIVER_EDGES:
        assert target in graph[source], f"{source} no longer imports {target}: drop the exception"
        graph[source] = graph[source] - {target}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_graph_sees_every_form_of_import():
    graph = import_graph(SOURCE, "sarcograde")
    assert "sarcograde.rtstruct" in graph["sarcograde.io"]            # inside a function
    assert "sarcograde.executors" in graph["sarcograde.preprocess.stage"]  # from .. import x
    assert "sarcograde.formats.cache" in graph["sarcograde.data"]     # from .x.y import name
    assert "sarcograde.study" in graph["sarcograde.demo"]             # a package's __init__
    assert "sarcograde.dicom_tags" in graph["sarcograde.rtstruct"]
    assert "sarcograde.io" not in graph["sarcograde.rtstruct"]


def test_a_cycle_is_found_and_named(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from .c import f\n")
    (package / "a.py").write_text("import json\nfrom . import b\n")
    (package / "b.py").write_text("def g():\n    from .sub import c\n")
    (package / "sub" / "c.py").write_text("def f():\n    from ..a import x\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.a"] == {"pkg.b"}
    assert graph["pkg.b"] == {"pkg.sub", "pkg.sub.c"}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.sub", "pkg.sub.c", "pkg.a"]
    (package / "sub" / "c.py").write_text("def f():\n    pass\n")
    assert find_cycle(import_graph(tmp_path, "pkg")) is None
