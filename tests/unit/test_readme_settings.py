"""The README's table for a second stack names every setting the stack and the clients read."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path

from devstack import StackConfig

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


class _Recording(Mapping[str, str]):
    """An empty environment that remembers which names were asked for."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        raise KeyError(key)

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.asked.add(key)
        return default

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _table() -> str:
    start = README.index("### A second stack beside the first")
    return README[start : README.index("\n## ", start)]


def test_every_setting_the_stack_reads_is_in_the_second_stack_table() -> None:
    env = _Recording()
    StackConfig.from_env(environ=env)
    table = _table()
    read = {n for n in env.asked if n.startswith("KETENSTROOM_")}
    assert "KETENSTROOM_INFRA_KAFKA_PORT" in read and "KETENSTROOM_CACHE_DIR" in read
    lacking = sorted(n for n in read if f"`{n}`" not in table)
    assert lacking == [], f"README's second-stack table lacks {lacking}"


def test_the_clients_settings_prefixes_are_in_the_table() -> None:
    settings = Path(__file__).resolve().parents[2] / "ketenstroom" / "settings.py"
    prefixes = set(re.findall(r'_config\("(KETENSTROOM_[A-Z_]+)"\)', settings.read_text(encoding="utf-8")))
    table = _table()
    lacking = sorted(p for p in prefixes if f"`{p}" not in table)
    assert lacking == [], f"README's second-stack table names nothing of {lacking}"
