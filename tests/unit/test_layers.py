"""Imports point one way (STYLE.md §1): components never import each other; the CLI is a leaf."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = ("producers", "processors", "sinks", "releases", "dashboard")
# module prefix -> prefixes it must not import
FORBIDDEN = {
    "ketenstroom.errors": ("ketenstroom.", *COMPONENTS),
    "ketenstroom.settings": ("ketenstroom.adapters", "devstack", "cli", *COMPONENTS),
    "ketenstroom.contract": ("ketenstroom.adapters", "devstack", "cli", *COMPONENTS),
    "ketenstroom.adapters": ("devstack", "cli", *COMPONENTS),
    "devstack": ("ketenstroom.adapters", "ketenstroom.contract", "cli", *COMPONENTS),
    "producers": ("processors", "sinks", "releases", "dashboard", "cli", "devstack"),
    "processors": ("producers", "sinks", "releases", "dashboard", "cli", "devstack"),
    "sinks": ("producers", "processors", "releases", "dashboard", "cli", "devstack"),
    "releases": ("producers", "processors", "sinks", "dashboard", "cli", "devstack", "synthetic"),
    # the dashboard reads releases as files (ketenstroom.contract.releases), never the code that wrote them
    "dashboard": ("producers", "processors", "sinks", "releases", "cli", "devstack", "synthetic"),
}


def _modules() -> dict[str, Path]:
    found = {}
    for top in ("ketenstroom", "cli", "devstack", "synthetic", *COMPONENTS):
        for path in (ROOT / top).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(p for p in parts if p != "__init__")] = path
    return found


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _matches(name: str, prefix: str) -> bool:
    return name == prefix.rstrip(".") or name.startswith(prefix if prefix.endswith(".") else prefix + ".")


def test_import_direction() -> None:
    wrong = []
    modules = _modules()
    assert len(modules) > 20
    for module, path in modules.items():
        for layer, banned in FORBIDDEN.items():
            if not _matches(module, layer):
                continue
            wrong += [
                f"{module} imports {name}"
                for name in _imports(path)
                if any(_matches(name, b) for b in banned) and not _matches(name, layer)
            ]
    assert not wrong, wrong


def test_nothing_imports_the_cli() -> None:
    users = [
        m
        for m, p in _modules().items()
        if not m.startswith("cli")
        and m != "ketenstroom.__main__"
        and any(_matches(n, "cli") for n in _imports(p))
    ]
    assert not users, users


def test_the_checker_catches_a_wrong_edge(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("from processors.transform import Transformer\nimport sinks.runner\n")
    assert {"processors.transform", "sinks.runner"} <= _imports(bad)
    assert any(_matches(n, "processors") for n in _imports(bad))
