"""Publish's fast path: check a row and write its Avro bytes in one pass, or hand it back.

The pydantic model in ``rows`` stays the definition of a valid row and of every reject's field, reason
and message. A ``RowPlan`` is compiled once per record type from the same contract, mapping and
parsers (``parse_date``, ``parse_moment``, ``SEMANTIC``, ``MINIMUM``, ...) and writes the Confluent-framed
Avro bytes straight from the partner's strings: no pydantic objects, flat or nested dicts, datetimes,
or union guessing by fastavro (the reference path costs ~4x more per row).

It only ever *accepts*. Whenever a value is not plainly valid (blank where a value is required,
whitespace other than ASCII around it, a number with a sign or separators, a date the parsers refuse,
a failing identifier check, ...) ``RowPlan.encode`` returns None and the caller takes the reference path,
which rejects with the exact error or accepts with the reference result. So this path may be stricter
than the model (then slower), never more lenient. ``tests/unit/test_fastpath.py`` checks that its bytes
equal the reference path's on generated exports of every partner, mistakes included, and on edge cases.

A record type the plan does not cover (an enum or float column, a nested optional record, a constant
that is not a string, ...) gets no plan: all its rows take the reference path, as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from ketenstroom.contract.ids import event_id_bytes, format_uuid
from producers.config import RecordMapping
from producers.rows import CODED, MINIMUM, SEMANTIC
from producers.steps import (
    INT,
    LONG,
    Around,
    Step,
    Writer,
    boolean_value,
    days,
    double_value,
    integer_value,
    moments,
    remembered,
    string_bytes,
    text_bytes,
    text_value,
    then,
    writer,
    zigzag,
)


class Unsupported(Exception):
    """The plan cannot cover this record type; its rows take the reference path."""


# -- the schema, leaf by leaf -------------------------------------------------------------------------
@dataclass(frozen=True)
class _Leaf:
    path: str
    kind: str  # string, coded, int, long, double, boolean, date, timestamp-millis, timestamp-micros, enum
    branch: bytes  # the union index of the value's branch; b"" outside a union
    null: bytes | None  # the encoded null of a nullable union, else None
    schema: Any


def _leaves(schema: dict[str, Any], named: dict[str, Any], prefix: str = "") -> list[_Leaf]:
    """The leaves of ``producers.rows.leaves`` in schema order, with what it takes to write them."""
    out: list[_Leaf] = []
    for field in schema["fields"]:
        path = f"{prefix}{field['name']}"
        typ = field["type"]
        branch, null = b"", None
        if isinstance(typ, list):
            others = [t for t in typ if t != "null"]
            if len(others) != 1 or len(typ) != 2:
                raise Unsupported(f"{path}: union {typ}")
            branch, null = zigzag(typ.index(others[0])), zigzag(typ.index("null"))
            typ = others[0]
        if isinstance(typ, str) and typ in named:
            typ = named[typ]
        if isinstance(typ, dict) and typ.get("type") in ("record", "enum"):
            name = typ["name"] if "." in typ["name"] else f"{typ.get('namespace')}.{typ['name']}"
            named[name] = typ
        if isinstance(typ, dict) and typ.get("type") == "record":
            if name == CODED:
                out.append(_Leaf(path, "coded", branch, null, typ))
            elif null is not None:
                raise Unsupported(f"{path}: optional nested record")
            else:
                out.extend(_leaves(typ, named, prefix=f"{path}."))
            continue
        out.append(_Leaf(path, _kind(path, typ), branch, null, typ))
    return out


def _kind(path: str, typ: Any) -> str:
    base = typ.get("type") if isinstance(typ, dict) else typ
    logical = typ.get("logicalType") if isinstance(typ, dict) else None
    if logical in ("date", "timestamp-millis", "timestamp-micros") or base == "enum":
        return str(logical or base)
    if logical is None and base in ("string", "int", "long", "double", "boolean"):
        return str(base)
    if path == "metadata.event_id" and base == "string":
        return "string"  # logicalType uuid: written as its string, which we make ourselves
    raise Unsupported(f"{path}: type {typ}")


def _coded_around(leaf: _Leaf, record: RecordMapping) -> Around:
    names = [(f["name"], f["type"]) for f in leaf.schema["fields"]]
    if names != [("code_system", "string"), ("code", "string"), ("code_system_version", "string")]:
        raise Unsupported(f"{leaf.path}: CodedValue is not (code_system, code, code_system_version)")
    system = record.codes.get(leaf.path)
    if system is None:
        return b"", b""  # not mapped: only ever null
    return string_bytes(system.system), string_bytes(system.version)


def _value_step(leaf: _Leaf, nullable: bool) -> Step:
    """Partner's string -> the value, for the leaves needed twice (id, version, key)."""
    last = leaf.path.rsplit(".", 1)[-1]
    if leaf.kind in ("string", "coded"):
        return text_value(nullable, SEMANTIC.get(last))
    if last in SEMANTIC:
        raise Unsupported(f"{leaf.path}: identifier check on a {leaf.kind}")
    if leaf.kind in ("int", "long"):
        low, high = INT if leaf.kind == "int" else LONG
        return integer_value(nullable, max(low, MINIMUM.get(leaf.path, low)), high)
    if leaf.kind == "double":
        return double_value(nullable)
    if leaf.kind == "boolean":
        return boolean_value(nullable)
    raise Unsupported(f"{leaf.path}: {leaf.kind} as a value")


def _bytes_step(
    leaf: _Leaf, nullable: bool, record: RecordMapping, memos: dict[str, dict[str, bytes]]
) -> Step:
    """Partner's string -> the leaf's Avro bytes."""
    if leaf.kind in ("string", "coded"):
        around = _coded_around(leaf, record) if leaf.kind == "coded" else (b"", b"")
        check = SEMANTIC.get(leaf.path.rsplit(".", 1)[-1])
        return text_bytes(nullable, check, leaf.branch, leaf.null, around)
    if leaf.path.rsplit(".", 1)[-1] in SEMANTIC:
        raise Unsupported(f"{leaf.path}: identifier check on a {leaf.kind}")
    if leaf.kind == "date":
        return remembered(nullable, leaf.branch, leaf.null, days, memos.setdefault(leaf.kind, {}))
    if leaf.kind.startswith("timestamp-"):
        return remembered(
            nullable, leaf.branch, leaf.null, moments(leaf.kind), memos.setdefault(leaf.kind, {})
        )
    return then(_value_step(leaf, nullable), _value_writer(leaf, record))


def _value_writer(leaf: _Leaf, record: RecordMapping) -> Writer:
    if leaf.kind == "coded":
        return writer("string", leaf.branch, leaf.null, _coded_around(leaf, record))
    if leaf.kind in ("string", "double", "boolean"):
        return writer(leaf.kind, leaf.branch, leaf.null)
    if leaf.kind in ("int", "long", "date") or leaf.kind.startswith("timestamp-"):
        return writer("long", leaf.branch, leaf.null)
    raise Unsupported(f"{leaf.path}: {leaf.kind}")


def _nullable(leaf: _Leaf, record: RecordMapping) -> bool:
    """Blank may be written as null: a union with null, and not the key (which the model requires)."""
    return leaf.null is not None and leaf.path != record.key


# Leaves written after the columns are read: the event id needs source id and version, the key its value.
_EVENT_ID, _DELIVERY, _VERSION, _SOURCE = (
    "metadata.event_id",
    "metadata.delivery_time",
    "metadata.record_version",
    "metadata.source_record_id",
)


class RowPlan:
    """Fast path for one record type of one partner; ``compile`` returns None if it cannot cover it.

    Per row, ``chunks`` holds each column's bytes (or, for source id, version and key, its value),
    then the fixed bytes (header, constants, nulls of unmapped optional fields, the partner), then the
    late leaves' bytes. ``_gather`` picks them in schema order.
    """

    def __init__(self, partner: str, record: RecordMapping, header: bytes, code: str = "") -> None:
        leaves = _leaves(record.schema.schema, {})
        by_path = {leaf.path: leaf for leaf in leaves}
        key = by_path.get(record.key)
        if record.key not in record.columns or key is None or key.kind not in ("string", "coded"):
            raise Unsupported(f"key {record.key}: not a text column")
        if _SOURCE not in record.columns:
            raise Unsupported(f"{_SOURCE}: not a column")
        if _VERSION in record.constants and _VERSION not in record.columns:
            raise Unsupported(f"{_VERSION}: a constant, not a column")
        late = list(
            dict.fromkeys(p for p in (_EVENT_ID, _DELIVERY, _VERSION, _SOURCE, record.key) if p in by_path)
        )
        columns = list(record.columns)
        memos: dict[str, dict[str, bytes]] = {}  # kind -> string -> number bytes, shared by its leaves
        self._columns = [
            (
                record.columns[path],
                _value_step(by_path[path], _nullable(by_path[path], record))
                if path in late
                else _bytes_step(by_path[path], _nullable(by_path[path], record), record, memos),
            )
            for path in columns
        ]
        fixed: dict[str, bytes] = {"": header}
        for leaf in leaves:
            if leaf.path in record.columns or leaf.path in late:
                continue
            if leaf.path == "metadata.partner":
                symbol = code or partner.upper()  # the catalogue's metadata.partner symbol
                if leaf.kind != "enum" or symbol not in leaf.schema["symbols"]:
                    raise Unsupported(f"{leaf.path}: {symbol} is not a symbol of {leaf.schema}")
                fixed[leaf.path] = leaf.branch + zigzag(leaf.schema["symbols"].index(symbol))
            elif leaf.path in record.constants:
                constant = record.constants[leaf.path]
                if not isinstance(constant, str):
                    raise Unsupported(f"{leaf.path}: constant {constant!r} is not a string")
                fixed[leaf.path] = _bytes_step(leaf, _nullable(leaf, record), record, {})(constant)
            elif leaf.null is not None:
                fixed[leaf.path] = leaf.null  # what fastavro writes for an optional field the record lacks
            else:
                raise Unsupported(f"{leaf.path}: neither mapped nor nullable")
        self.partner = partner
        self.paths = [leaf.path for leaf in leaves]
        self._fixed = tuple(fixed.values())
        self._key = columns.index(record.key)
        self._source = columns.index(_SOURCE)
        self._version = columns.index(_VERSION) if _VERSION in columns else None
        values = {_EVENT_ID: 0, _DELIVERY: 1, _VERSION: 2, _SOURCE: 3, record.key: 4}  # in ``encode``
        self._late = [(values[path], _value_writer(by_path[path], record)) for path in late]
        place = {path: i for i, path in enumerate(columns)}
        place.update({path: len(columns) + i for i, path in enumerate(fixed)})
        place.update({path: len(columns) + len(fixed) + i for i, path in enumerate(late)})
        self._gather = itemgetter(*(place[path] for path in ("", *self.paths)))  # in C, not a loop

    @classmethod
    def compile(cls, partner: str, record: RecordMapping, header: bytes, code: str = "") -> RowPlan | None:
        try:
            return cls(partner, record, header, code)
        except (Unsupported, ValueError):  # ValueError: a constant the steps do not accept
            return None

    def encode(self, row: dict[str, str], delivery_ms: int) -> tuple[bytes, bytes, bytes] | None:
        """``(framed Avro value, Kafka key, event id bytes)``, or None: take the reference path."""
        try:
            chunks = [step(row[column]) for column, step in self._columns]
            version = (chunks[self._version] if self._version is not None else None) or 1
            source, key = chunks[self._source], chunks[self._key]
            eid = event_id_bytes(self.partner, source, version)
            late = (format_uuid(eid), delivery_ms, version, source, key)
            chunks += self._fixed
            chunks += [write(late[i]) for i, write in self._late]
            return b"".join(self._gather(chunks)), key.encode(), eid
        except (ValueError, KeyError):  # NotPlain, a parser's ValueError, or a column this row lacks
            return None
