"""No stage reaches up into the command line: only the modules that drive it (the study, which
runs each stage's own command line, and the demo) import `sarcograde.cli`."""

import ast
from pathlib import Path

import sarcograde

PACKAGE = Path(sarcograde.__file__).parent
ALLOWED = ("study/", "demo.py")


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: Path) -> set[str]:
    """Every module `path` imports, at module level or inside a function, as absolute names
    (`from . import cli` counts as sarcograde.cli)."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def test_no_stage_imports_the_command_line():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative == "cli.py" or relative.startswith(ALLOWED):
            continue
        if "sarcograde.cli" in _imported(path):
            offenders.append(relative)
    assert offenders == []


def test_the_check_sees_relative_and_function_level_imports():
    """The runner imports the command line inside a function, relatively: it is found."""
    assert "sarcograde.cli" in _imported(PACKAGE / "study" / "runner.py")
    assert "sarcograde.options" in _imported(PACKAGE / "fusion.py")
    assert "sarcograde.cli" not in _imported(PACKAGE / "radiomics" / "cli.py")
