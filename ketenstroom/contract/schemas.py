"""Load the Avro contract from ``schemas/`` and expand shared named types into standalone schemas.

Layout: ``schemas/common/`` holds shared named types (one per file, named ``<fullname>.avsc``);
``schemas/<partner>/`` holds that partner's event records; ``schemas/curated/`` holds ``ChainEvent``.
Records refer to shared types by full name. The registry gets each event record expanded (shared
types inlined at first use), so any Confluent-compatible registry and client can resolve it without
schema references.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro

from ketenstroom.errors import ConfigurationError

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
COMMON_DIR = "common"


@dataclass(frozen=True)
class EventSchema:
    """One event record type: its expanded JSON, the fastavro-parsed form, and where it came from."""

    fullname: str
    group: str  # partner name, or "curated"
    path: Path
    schema: dict[str, Any]
    parsed: Any = field(repr=False, compare=False)

    @property
    def text(self) -> str:
        """Compact JSON, as registered."""
        return json.dumps(self.schema, separators=(",", ":"))

    def subject(self, topic: str) -> str:
        """Subject under TopicRecordNameStrategy: ``<topic>-<record full name>``."""
        return f"{topic}-{self.fullname}"


@dataclass(frozen=True)
class SchemaSet:
    """All event schemas of the contract, by full name."""

    events: Mapping[str, EventSchema]

    def __getitem__(self, fullname: str) -> EventSchema:
        try:
            return self.events[fullname]
        except KeyError:
            known = ", ".join(sorted(self.events))
            raise ConfigurationError(f"no schema named {fullname!r}; the contract has: {known}") from None

    def __iter__(self) -> Iterator[EventSchema]:
        return iter(self.events.values())

    def for_group(self, group: str) -> list[EventSchema]:
        return [s for s in self.events.values() if s.group == group]


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"cannot read schema {path}: {exc}") from exc
    if not isinstance(data, dict) or "name" not in data:
        raise ConfigurationError(f"schema {path} is not a named Avro type")
    return data


def _fullname(schema: Mapping[str, Any]) -> str:
    name = str(schema["name"])
    namespace = schema.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


def expand(schema: Any, shared: Mapping[str, dict[str, Any]], seen: set[str] | None = None) -> Any:
    """Inline shared named types at their first use; later uses stay as references by full name."""
    seen = set() if seen is None else seen
    if isinstance(schema, str):
        if schema in _PRIMITIVES or schema in seen:
            return schema
        if schema in shared:
            seen.add(schema)
            return expand(shared[schema], shared, seen)
        return schema
    if isinstance(schema, list):
        return [expand(branch, shared, seen) for branch in schema]
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    kind = schema.get("type")
    if kind in ("record", "enum", "fixed") and "name" in schema:
        seen.add(_fullname(schema))
    if kind == "record":
        out["fields"] = [{**f, "type": expand(f["type"], shared, seen)} for f in schema["fields"]]
    elif kind == "array":
        out["items"] = expand(schema["items"], shared, seen)
    elif kind == "map":
        out["values"] = expand(schema["values"], shared, seen)
    elif isinstance(kind, (dict, list)):
        out["type"] = expand(kind, shared, seen)
    return out


def load_schemas(schema_dir: Path) -> SchemaSet:
    """Load and validate every schema under ``schema_dir``; errors name the file and the problem."""
    if not schema_dir.is_dir():
        raise ConfigurationError(f"schema directory {schema_dir} does not exist")
    shared: dict[str, dict[str, Any]] = {}
    for path in sorted((schema_dir / COMMON_DIR).glob("*.avsc")):
        data = _read(path)
        name = _fullname(data)
        if path.stem != name:
            raise ConfigurationError(f"{path}: shared type {name!r} must live in a file named {name}.avsc")
        shared[name] = data
    events: dict[str, EventSchema] = {}
    for path in sorted(schema_dir.glob("*/*.avsc")):
        group = path.parent.name
        if group == COMMON_DIR:
            continue
        data = _read(path)
        name = _fullname(data)
        if name in events:
            raise ConfigurationError(f"{path}: record {name!r} is defined twice")
        expanded = expand(data, shared)
        try:
            parsed = fastavro.parse_schema(expanded, _force=True)
        except Exception as exc:  # fastavro raises several types for bad schemas
            raise ConfigurationError(f"{path}: not a valid Avro schema: {exc}") from exc
        events[name] = EventSchema(fullname=name, group=group, path=path, schema=expanded, parsed=parsed)
    return SchemaSet(events=events)
