"""The curated ``ChainEvent``: one definition, the ``.avsc``; everything else is derived or tested.

``schemas/curated/nl.ketenstroom.curated.ChainEvent.avsc`` in this package's repository is the
platform's own contract (a deployment's catalogue adds partners, never a different ChainEvent).
``FIELDS`` is its field list; the transform fills exactly these (a unit test compares them), and the
snapshot's Arrow schema (``sinks/parquet.py``) is derived from it.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from ketenstroom.settings import REPO_ROOT

CHAIN_EVENT = "nl.ketenstroom.curated.ChainEvent"
CHAIN_EVENT_FILE = REPO_ROOT / "schemas" / "curated" / f"{CHAIN_EVENT}.avsc"


@cache
def chain_event_avsc() -> dict[str, Any]:
    """The ChainEvent schema as written (the curated schema uses no shared named types)."""
    schema: dict[str, Any] = json.loads(CHAIN_EVENT_FILE.read_text(encoding="utf-8"))
    return schema


def chain_event_fields() -> tuple[str, ...]:
    return tuple(f["name"] for f in chain_event_avsc()["fields"])
