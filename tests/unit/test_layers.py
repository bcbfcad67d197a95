"""Imports point one way (STYLE.md §1): the ground package below, components beside each other, the CLI
on top as a leaf that nothing imports. Development tooling (the local stack, the generator) is never a
dependency of runtime code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Runtime components: each may use the ground package, never another component.
COMPONENTS = ("producers", "processors", "sinks", "extracts", "releases", "dashboard", "monitor")
#: Development tooling: the local-stack launcher and the synthetic data generator.
TOOLING = ("devstack", "synthetic")
TOPS = ("ketenstroom", "cli", *TOOLING, *COMPONENTS)
# module prefix -> prefixes it must not import
FORBIDDEN = {
    "ketenstroom.errors": ("ketenstroom.", *COMPONENTS, "cli", *TOOLING),
    "ketenstroom.settings": ("ketenstroom.adapters", "ketenstroom.catalogue", "cli", *TOOLING, *COMPONENTS),
    "ketenstroom.contract": ("ketenstroom.adapters", "ketenstroom.catalogue", "cli", *TOOLING, *COMPONENTS),
    "ketenstroom.calendar": ("ketenstroom.adapters", "ketenstroom.catalogue", "cli", *TOOLING, *COMPONENTS),
    "ketenstroom.catalogue": ("ketenstroom.adapters", "cli", *TOOLING, *COMPONENTS),
    "ketenstroom.adapters": ("cli", *TOOLING, *COMPONENTS),
    "ketenstroom": ("cli", *TOOLING, *COMPONENTS),
    "devstack": ("ketenstroom.adapters", "ketenstroom.contract", "cli", "synthetic", *COMPONENTS),
    "synthetic": ("cli", "devstack", *COMPONENTS),
    **{c: ("cli", *TOOLING, *(o for o in COMPONENTS if o != c)) for c in COMPONENTS},
}


def _modules() -> dict[str, Path]:
    found = {}
    for top in TOPS:
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


def wrong_edges(modules: dict[str, Path]) -> list[str]:
    wrong = []
    for module, path in modules.items():
        layers = [layer for layer in FORBIDDEN if _matches(module, layer)]
        if not layers:
            continue
        layer = max(layers, key=len)  # the most specific rule (ketenstroom.errors before ketenstroom)
        wrong += [
            f"{module} imports {name}"
            for name in _imports(path)
            if any(_matches(name, b) for b in FORBIDDEN[layer]) and not _matches(name, layer)
        ]
    return wrong


def cli_users(modules: dict[str, Path]) -> list[str]:
    return [
        m
        for m, p in modules.items()
        if not _matches(m, "cli") and any(_matches(n, "cli") for n in _imports(p))
    ]


def test_import_direction() -> None:
    modules = _modules()
    assert len(modules) > 40
    assert not wrong_edges(modules)


def test_nothing_imports_the_cli() -> None:
    assert not cli_users(_modules())


@pytest.mark.parametrize(
    ("module", "source", "caught"),
    [
        ("processors.x", "from sinks.runner import SinkRunner\n", "processors.x imports sinks.runner"),
        ("sinks.x", "import producers.publish\n", "sinks.x imports producers.publish"),
        ("ketenstroom.adapters.x", "from cli import main\n", "ketenstroom.adapters.x imports cli"),
        (
            "ketenstroom.contract.x",
            "from ketenstroom.adapters import kafka\n",
            "imports ketenstroom.adapters",
        ),
        ("producers.x", "from synthetic import generate_chain\n", "producers.x imports synthetic"),
    ],
)
def test_the_checker_catches_a_wrong_edge(tmp_path: Path, module: str, source: str, caught: str) -> None:
    bad = tmp_path / "x.py"
    bad.write_text(source)
    found = wrong_edges({module: bad})
    assert found and caught in found[0]


def test_the_checker_catches_a_module_importing_the_cli(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("from cli.pipeline import topics\n")
    assert cli_users({"sinks.runner": bad}) == ["sinks.runner"]
    assert cli_users({"cli.extra": bad}) == []
