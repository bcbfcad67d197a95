"""The processor's fast path: raw bytes to curated bytes in one pass, or hand the record back.

``Transformer.transform_reference`` (decode with fastavro into logical types, build the ``ChainEvent``
dict, encode it with fastavro) stays the definition of the transform and of every dead letter's reason
and stage. ``FastPath`` computes the same curated bytes with fewer Python objects per record:

* **decode** with a reader generated once per writer schema (``ketenstroom.contract.avro_plain``):
  only the plan's values, into one tuple, the other fields skipped in place (and checked); for a
  schema it does not cover, fastavro with the logical types dropped (``_Reader.read``, same tuple via
  ``_Reader.values``). Timestamps stay int milliseconds, dates int days, UUIDs strings; what the
  dropped logical types would have refused is checked instead (a timestamp or date within a plain
  range, an event id in canonical lower-case form); anything else sends the record to the reference
  path. The event id, source system and times go on as the raw record's own bytes;
* **local dates** from the event's millisecond timestamp, one zone conversion per UTC hour
  (``ketenstroom.calendar.HourCalendar``; only from 1970 on, where Amsterdam is whole hours from UTC);
* **pseudonyms** of recurring identifiers (case, pv, CJIB number, SKN/BSN pair) from a small in-memory
  cache of their encoded bytes, emptied when it holds ``PSEUDONYM_CACHE`` entries and when a batch
  begins (``Transformer.begin_batch``, called by the runner and ``transform_batch``): one batch's
  identifiers at most. It is never logged, persisted or shown in a repr;
* **terminology** concepts of a code on a day, encoded once (a bounded cache too);
* **encode** by ``ChainEventWriter``, compiled once from the curated schema, writing exactly
  fastavro's bytes; fields that are the same for a record type are written once.

It only ever *accepts*. Any record it cannot handle plainly (an unknown schema id, a record type
without a plan, a writer schema with another shape or logical type, trailing bytes, a value out of the
plain range, an unknown code, an identifier that does not normalise, any exception at all) gets None,
and the caller takes the reference path, which curates it with the reference result or dead-letters it
with the reference reason. ``tests/unit/test_processor_fastpath.py`` compares every part with the
reference on generated data of every partner, noise included.
"""

from __future__ import annotations

import io
import re
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, cast

from fastavro import schemaless_reader
from fastavro.write import LOGICAL_WRITERS

from ketenstroom.calendar import HourCalendar
from ketenstroom.contract.avro_bytes import string_bytes, zigzag
from ketenstroom.contract.avro_plain import PLAIN_DAYS, PLAIN_MS, NotCompilable, compile_reader
from ketenstroom.contract.codec import without_logical_types
from ketenstroom.contract.wire import header
from processors.pseudonym import Pseudonymiser, pc4
from processors.transform import Curated, utc_now

if TYPE_CHECKING:
    from processors.transform import Plan, RawRecord, Transformer

_NULL = (None, b"\x00")  # no identifier: no pseudonym, the union's null
PSEUDONYM_CACHE = 4096  # identifiers remembered (about a batch's worth); then the cache starts afresh
CONCEPT_CACHE = 65_536  # codes whose mappings' encodings are remembered
_ID = struct.Struct(">I")
_DOUBLE = struct.Struct("<d")
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
# Plain ranges: well inside what fastavro's logical readers turn into a datetime or date (years 1-9999).
_MIN_MS, _MAX_MS = PLAIN_MS  # 1900-01-01 .. 2200-01-01 UTC
_MIN_DAY, _MAX_DAY = PLAIN_DAYS  # the same, in days since 1970-01-01
_RANGES = {"timestamp-millis": (_MIN_MS, _MAX_MS), "date": (_MIN_DAY, _MAX_DAY)}
_EMPTY: dict[str, Any] = {}  # a null record on the way to a value: every field of it is None
_EVENT_MIN_MS = 0  # local dates by the hour from 1970 on (Amsterdam was not whole hours from UTC < 1940)
_to_ms = LOGICAL_WRITERS["long-timestamp-millis"]
_META = tuple(
    ("metadata", name) for name in ("event_id", "partner", "source_system", "event_time", "registration_time")
)
_PLAN_VALUES = 17  # in a reader's tuple: _META's five, then the plan's twelve values; then the codes,
# then the Avro bytes of these (as the curated record has them too), handed on as they are:
_ENCODED = tuple(
    ("metadata", name) for name in ("event_id", "source_system", "event_time", "registration_time")
)


class Unsupported(Exception):
    """The fast path cannot cover this schema; its records take the reference path."""


# -- the curated record's writer ---------------------------------------------------------------------
Writer = Callable[[Any], bytes]

# ChainEvent's fields as the fast transform writes them: (name, kind). The curated schema must have
# exactly these (``ChainEventWriter`` checks), or there is no fast path at all.
CHAIN_EVENT_KINDS: tuple[tuple[str, str], ...] = (
    ("event_id", "uuid"),
    ("source_partner", "string"),
    ("source_event_type", "string"),
    ("source_system", "string"),
    ("event_time", "timestamp-millis"),
    ("registration_time", "timestamp-millis"),
    ("chain_step", "string"),
    ("case_pseudonym", "string?"),
    ("report_pseudonym", "string?"),
    ("execution_pseudonym", "string?"),
    ("person_pseudonym", "string?"),
    ("person_pseudonym_source", "string"),
    ("skn_pseudonym", "string?"),
    ("bsn_pseudonym", "string?"),
    ("identity_flags", "strings"),
    ("birth_year", "int?"),
    ("age_at_event", "int?"),
    ("sex", "string?"),
    ("municipality_code", "string?"),
    ("crime_municipality_code", "string?"),
    ("sanction_days", "int?"),
    ("sanction_hours", "int?"),
    ("amount_eur", "double?"),
    ("concepts", "concepts"),
    ("mapping_version", "string"),
    ("pseudonym_key_id", "string"),
    ("processed_time", "timestamp-millis"),
)
CONCEPT_FIELDS = ("vocabulary", "code", "label", "counting_unit", "source_code_system", "source_code")


def _kind_of(typ: Any) -> str:
    """The kind of a curated field's type, as in ``CHAIN_EVENT_KINDS``; Unsupported otherwise."""
    if isinstance(typ, list):
        if len(typ) == 2 and typ[0] == "null" and typ[1] in ("string", "int", "double"):
            return f"{typ[1]}?"
        raise Unsupported(f"union {typ}")
    if typ == "string":
        return "string"
    if isinstance(typ, dict):
        base, logical = typ.get("type"), typ.get("logicalType")
        if base == "string" and logical == "uuid":
            return "uuid"
        if base == "long" and logical == "timestamp-millis":
            return "timestamp-millis"
        if base == "array" and typ.get("items") == "string":
            return "strings"
        items = typ.get("items")
        if base == "array" and isinstance(items, dict) and items.get("type") == "record":
            names = tuple(f["name"] for f in items["fields"])
            if names == CONCEPT_FIELDS and all(f["type"] == "string" for f in items["fields"]):
                return "concepts"
    raise Unsupported(f"type {typ}")


def optional_string(value: str | None) -> bytes:
    """``["null", "string"]``: branch 0 is null, branch 1 the string."""
    return b"\x00" if value is None else b"\x02" + string_bytes(value)


def optional_int(value: int | None) -> bytes:
    return b"\x00" if value is None else b"\x02" + zigzag(value)


def optional_double(value: float | None) -> bytes:
    return b"\x00" if value is None else b"\x02" + _DOUBLE.pack(value)


def strings(values: Sequence[str]) -> bytes:
    """An array of strings: one block of all items, then the empty block."""
    if not values:
        return b"\x00"
    return zigzag(len(values)) + b"".join(string_bytes(v) for v in values) + b"\x00"


def concept_bytes(concept: dict[str, str]) -> bytes:
    return b"".join(string_bytes(concept[name]) for name in CONCEPT_FIELDS)


def concepts(values: Sequence[dict[str, str]]) -> bytes:
    if not values:
        return b"\x00"
    return zigzag(len(values)) + b"".join(concept_bytes(c) for c in values) + b"\x00"


_WRITERS: dict[str, Writer] = {
    "uuid": string_bytes,
    "string": string_bytes,
    "timestamp-millis": zigzag,
    "string?": optional_string,
    "int?": optional_int,
    "double?": optional_double,
    "strings": strings,
    "concepts": concepts,
}


class ChainEventWriter:
    """The curated schema's fields, each with the function that writes its Avro bytes.

    ``encode`` takes Avro-ready values in field order (int milliseconds for timestamps, the UUID's
    string, concept dicts) and writes what fastavro's ``schemaless_writer`` writes for the same event
    (with datetimes and a UUID); the fast transform uses the field writers one by one.
    """

    def __init__(self, parsed_schema: Any) -> None:
        fields = parsed_schema.get("fields") if isinstance(parsed_schema, dict) else None
        if not fields:
            raise Unsupported("not a record schema")
        found = tuple((f["name"], _kind_of(f["type"])) for f in fields)
        if found != CHAIN_EVENT_KINDS:
            raise Unsupported("the curated schema is not the ChainEvent the fast path writes")
        self.names = tuple(name for name, _ in found)
        self.writers = tuple(_WRITERS[kind] for _, kind in found)

    def encode(self, values: Sequence[Any]) -> bytes:
        return b"".join(write(value) for write, value in zip(self.writers, values, strict=True))


# -- reading raw records -----------------------------------------------------------------------------
Getter = Callable[[dict[str, Any]], Any]


def getter(path: tuple[str, ...] | None) -> Getter:
    """``processors.transform._at`` for one path, unrolled (None where a record on the way is null)."""
    if path is None:
        return lambda raw: None
    if len(path) == 1:
        (a,) = path
        return lambda raw: raw.get(a)
    if len(path) == 2:
        a, b = path

        def two(raw: dict[str, Any]) -> Any:
            node = raw.get(a)
            return None if node is None else node.get(b)

        return two

    def deep(raw: dict[str, Any]) -> Any:
        node: Any = raw
        for name in path:
            if node is None:
                return None
            node = node.get(name)
        return node

    return deep


_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_CODED = (("code_system", "string"), ("code", "string"), ("code_system_version", "string"))


@dataclass(frozen=True)
class _Field:
    """A leaf of the writer schema: its base type, logical type, and whether it may be null."""

    base: str
    logical: str | None
    nullable: bool
    schema: Any


class _Shape:
    """The writer schema's leaves by path, and where its logical types are (which must be checked)."""

    def __init__(self, writer: dict[str, Any]) -> None:
        self.named: dict[str, Any] = {}
        self.leaves: dict[tuple[str, ...], _Field] = {}
        self.records: dict[tuple[str, ...], tuple[Any, bool]] = {}
        self.logical: list[tuple[tuple[str, ...], str]] = []
        self._walk(writer, ())

    def _resolve(self, typ: Any) -> Any:
        if isinstance(typ, str) and typ not in _PRIMITIVES:
            if typ not in self.named:
                raise Unsupported(f"unknown named type {typ}")
            return self.named[typ]
        if isinstance(typ, dict) and typ.get("type") in ("record", "enum", "fixed") and "name" in typ:
            self.named.setdefault(typ["name"], typ)
        return typ

    def _walk(self, record: dict[str, Any], prefix: tuple[str, ...]) -> None:
        for field in record["fields"]:
            path = (*prefix, field["name"])
            typ, nullable = field["type"], False
            if isinstance(typ, list):
                others = [t for t in typ if t != "null"]
                if len(others) != 1 or len(typ) != 2:
                    # a union of several types: fine if nothing in it is logical (fastavro reads it the
                    # same way with or without logical types), else no fast path
                    if _has_logical(typ, self):
                        raise Unsupported(f"{'.'.join(path)}: logical type inside a union {typ}")
                    self.leaves[path] = _Field("union", None, "null" in typ, typ)
                    continue
                typ, nullable = others[0], True
            typ = self._resolve(typ)
            if isinstance(typ, dict) and typ.get("type") == "record":
                self.records[path] = (typ, nullable)
                self._walk(typ, path)
                continue
            base = typ.get("type") if isinstance(typ, dict) else typ
            logical = typ.get("logicalType") if isinstance(typ, dict) else None
            if isinstance(typ, dict) and base in ("array", "map") and _has_logical(typ, self):
                raise Unsupported(f"{'.'.join(path)}: logical type inside an {base}")
            if logical is not None:
                if (base, logical) not in (("long", "timestamp-millis"), ("int", "date"), ("string", "uuid")):
                    raise Unsupported(f"{'.'.join(path)}: logical type {logical} on {base}")
                self.logical.append((path, logical))
            self.leaves[path] = _Field(str(base), logical, nullable, typ)

    def leaf(self, path: tuple[str, ...] | None, *allowed: tuple[str, str | None]) -> None:
        """The leaf at ``path``, if present, is one of ``allowed`` ``(base, logical)``; else Unsupported.
        Records on the way must be records (nullable or not)."""
        if path is None:
            return
        for i in range(1, len(path)):
            if path[:i] in self.leaves:
                raise Unsupported(f"{'.'.join(path)}: {'.'.join(path[:i])} is not a record")
        if path in self.records:
            raise Unsupported(f"{'.'.join(path)}: a record, not a value")
        found = self.leaves.get(path)
        if found is not None and (found.base, found.logical) not in allowed:
            raise Unsupported(f"{'.'.join(path)}: {found.base}/{found.logical}")


def _has_logical(node: Any, shape: _Shape, seen: frozenset[str] = frozenset()) -> bool:
    """Whether a type has a logical type anywhere inside (an unknown name: assume it has)."""
    if isinstance(node, list):
        return any(_has_logical(n, shape, seen) for n in node)
    if isinstance(node, str):
        named = shape.named.get(node)
        if node in _PRIMITIVES or node in seen:
            return False
        return named is None or _has_logical(named, shape, seen | {node})
    if not isinstance(node, dict):
        return False
    if node.get("type") == "record" and "name" in node:
        shape.named.setdefault(node["name"], node)
    inside = {
        "record": [f["type"] for f in node.get("fields", ())],
        "array": [node.get("items")],
        "map": [node.get("values")],
    }.get(str(node.get("type")), [])
    return "logicalType" in node or any(_has_logical(n, shape, seen) for n in inside)


def _logical_check(path: tuple[str, ...], logical: str) -> Callable[[dict[str, Any]], bool]:
    """Whether the value at ``path`` is one the dropped logical type reads plainly (None: absent)."""
    get = getter(path)
    if logical == "uuid":
        match = _CANONICAL_UUID.fullmatch

        def uuid_ok(raw: dict[str, Any]) -> bool:
            value = get(raw)
            return value is None or match(value) is not None

        return uuid_ok
    low, high = (_MIN_MS, _MAX_MS) if logical == "timestamp-millis" else (_MIN_DAY, _MAX_DAY)

    def in_range(raw: dict[str, Any]) -> bool:
        value = get(raw)
        return value is None or low <= value < high

    return in_range


class _Reader:
    """One writer schema: how to read it plainly, and its record type's constant output bytes."""

    def __init__(self, writer: Any, plan: Plan, record_type: str, step: bytes) -> None:
        shape = _Shape(writer)
        metadata = shape.records.get(("metadata",))
        if metadata is None or metadata[1]:
            raise Unsupported("metadata: not a record")
        shape.leaf(("metadata", "event_id"), ("string", "uuid"))
        shape.leaf(("metadata", "event_time"), ("long", "timestamp-millis"))
        shape.leaf(("metadata", "registration_time"), ("long", "timestamp-millis"))
        shape.leaf(("metadata", "source_system"), ("string", None))
        for path in (("metadata", "event_id"), ("metadata", "event_time"), ("metadata", "registration_time")):
            found = shape.leaves.get(path)
            if found is None or found.nullable:
                raise Unsupported(f"{'.'.join(path)}: missing or nullable")
        source = shape.leaves.get(("metadata", "source_system"))
        partner = shape.leaves.get(("metadata", "partner"))
        if source is None or source.nullable or partner is None or partner.base != "enum" or partner.nullable:
            raise Unsupported("metadata.source_system or metadata.partner: not as expected")
        text = (("string", None),)
        for text_path in (
            plan.case,
            plan.report,
            plan.execution,
            plan.skn,
            plan.bsn,
            plan.sex,
            plan.postcode,
        ):
            shape.leaf(text_path, *text)
        shape.leaf(plan.crime_municipality, *text)
        shape.leaf(plan.sanction_days, ("int", None))
        shape.leaf(plan.sanction_hours, ("int", None))
        shape.leaf(plan.amount_eur, ("double", None))
        shape.leaf(plan.birth_date, ("int", "date"))
        for name in plan.coded:
            found_record = shape.records.get((name,))
            if (name,) in shape.leaves or (
                found_record is not None
                and tuple((f["name"], f["type"]) for f in found_record[0]["fields"]) != _CODED
            ):
                raise Unsupported(f"{name}: not a CodedValue")
        self.writer = writer
        self.schema = without_logical_types(writer)
        inline = {("metadata", "event_time"), ("metadata", "event_id")}  # checked in ``read`` itself
        self.meta_ranges = tuple(
            (path[1], *_RANGES[logical])
            for path, logical in shape.logical
            if len(path) == 2 and path[0] == "metadata" and logical in _RANGES and path not in inline
        )
        self.checks = tuple(
            _logical_check(path, logical)
            for path, logical in shape.logical
            if path not in inline and not (len(path) == 2 and path[0] == "metadata" and logical in _RANGES)
        )
        self.coded = plan.coded
        paths = (
            plan.case,
            plan.report,
            plan.execution,
            plan.skn,
            plan.bsn,
            plan.birth_date,
            plan.sex,
            plan.postcode,
            plan.crime_municipality,
            plan.sanction_days,
            plan.sanction_hours,
            plan.amount_eur,
        )
        if any(path is not None and len(path) > 2 for path in paths):
            raise Unsupported("a path deeper than record.field")
        # (record or None for the top level, field): the values in ``FastPath._transform``'s order; a
        # path the record type does not declare is the field "" (no Avro name is empty): None
        self.pairs = tuple(
            (None, "") if path is None else (None, path[0]) if len(path) == 1 else (path[0], path[1])
            for path in paths
        )
        self.parents = tuple(dict.fromkeys(a for a, _ in self.pairs if a is not None))
        # the generated reader of this writer schema: the values ``FastPath._transform`` takes, read in
        # place (``values`` makes the same tuple from fastavro's dict where it does not apply)
        codes = tuple(path for name in plan.coded for path in ((name, "code_system"), (name, "code")))
        try:
            self.compiled: Callable[[bytes], tuple[Any, ...] | None] | None = compile_reader(
                writer, (*_META, *paths, *codes), encoded=_ENCODED, start=5
            )
        except NotCompilable:
            self.compiled = None
        self.type_and = string_bytes(record_type)  # source_event_type
        self.step = step  # chain_step

    def read(self, value: bytes) -> dict[str, Any] | None:
        """The framed record's values as fastavro reads them without logical types; None when the
        reference would read it otherwise (or refuse it): trailing bytes, a value out of range, an
        event id not in canonical form, an event before 1970 (fastavro's own errors propagate)."""
        buf = io.BytesIO(value)
        buf.seek(5)
        raw: dict[str, Any] = schemaless_reader(buf, self.schema, None)  # type: ignore[assignment]
        if buf.tell() != len(value):
            return None
        meta = raw["metadata"]
        if (
            _CANONICAL_UUID.fullmatch(meta["event_id"]) is None
            or not _EVENT_MIN_MS <= meta["event_time"] < _MAX_MS
        ):
            return None
        for name, low, high in self.meta_ranges:
            found = meta[name]
            if found is not None and not low <= found < high:
                return None
        for check in self.checks:
            if not check(raw):
                return None
        return raw

    def values(self, raw: dict[str, Any]) -> tuple[Any, ...]:
        """``read``'s dict as the tuple ``compiled`` returns: metadata, the plan's values, the codes."""
        meta = raw["metadata"]
        nodes = {name: raw.get(name) or _EMPTY for name in self.parents}
        codes: list[str | None] = []
        for name in self.coded:
            coded = raw.get(name)
            codes += (None, None) if coded is None else (coded["code_system"], coded["code"])
        return (
            meta["event_id"],
            meta["partner"],
            meta["source_system"],
            meta["event_time"],
            meta["registration_time"],
            *[(raw if parent is None else nodes[parent]).get(name) for parent, name in self.pairs],
            *codes,
            string_bytes(meta["event_id"]),
            string_bytes(meta["source_system"]),
            zigzag(meta["event_time"]),
            zigzag(meta["registration_time"]),
        )


class FastPath:
    """The fast transform of one ``Transformer``: ``fast(record)`` is its ``Curated`` or None."""

    def __init__(self, transformer: Transformer) -> None:
        self.transformer = transformer
        self.writer = ChainEventWriter(transformer.curated_schema)  # Unsupported: no fast path
        self.header = header(transformer.curated_schema_id)
        self.tail = string_bytes(transformer.terminology.version) + string_bytes(
            transformer.pseudonymiser.key_id
        )
        self._readers: dict[int, tuple[Any, _Reader | None]] = {}
        self._days = HourCalendar()
        self._partners: dict[str, bytes] = {}
        self._now, self._now_bytes = -1, b""  # the last processed_time and its bytes
        self._texts: dict[str | None, bytes] = {None: b"\x00"}  # sex, crime municipality: optional strings
        self._areas: dict[str | None, bytes] = {None: b"\x00"}  # postcode -> its municipality_code
        self._concepts: dict[tuple[str, str], tuple[tuple[date, date | None, bytes], ...]] = {}
        self._pseudonyms = _PseudonymCache()

    def _text(self, value: str | None) -> bytes:
        """``optional_string(value)``, remembered (a few values recur: sex, a municipality code)."""
        if len(self._texts) >= PSEUDONYM_CACHE:
            self._texts = {None: b"\x00"}
        found = self._texts[value] = optional_string(value)
        return found

    def _area(self, postcode: str | None) -> bytes:
        """municipality_code of a postcode's PC4 area, as an optional string; remembered."""
        if len(self._areas) >= PSEUDONYM_CACHE:
            self._areas = {None: b"\x00"}
        area = pc4(postcode)
        found = self._areas[postcode] = optional_string(
            self.transformer.municipalities.get(area) if area else None
        )
        return found

    def _processed_ms(self) -> int:
        """``processed_time`` in milliseconds: fastavro's conversion of the clock's reading, or for the
        default clock the same instant read as an integer (no datetime made and converted back)."""
        clock = self.transformer.clock
        if clock is utc_now:
            return time.time_ns() // 1_000_000
        return int(_to_ms(clock(), {}))

    def forget(self) -> None:
        """Empty the pseudonym cache and the postcodes' areas (a batch begins)."""
        self._pseudonyms.clear()
        self._areas = {None: b"\x00"}

    def _reader(self, schema_id: int, writer: Any) -> _Reader | None:
        known = self._readers.get(schema_id)
        if known is not None and known[0] is writer:
            return known[1]
        reader: _Reader | None = None
        record_type = writer.get("name") if isinstance(writer, dict) else None
        plan = self.transformer.plans.get(record_type) if isinstance(record_type, str) else None
        if plan is not None and record_type is not None:
            try:
                reader = _Reader(writer, plan, record_type, string_bytes(plan.step))
            except Exception:  # Unsupported, NotCompilable, a schema too odd or deep to walk
                reader = None
        self._readers[schema_id] = (writer, reader)
        return reader

    def __call__(self, record: RawRecord) -> Curated | None:
        value = record.value
        if value is None or len(value) < 5 or value[0] != 0:
            return None
        schema_id = _ID.unpack_from(value, 1)[0]
        try:
            writer = self.transformer.writer_schema(schema_id)
        except Exception:
            return None
        reader = self._reader(schema_id, writer)
        if reader is None:
            return None
        try:
            compiled = reader.compiled
            if compiled is not None:
                values = compiled(value)
            else:
                raw = reader.read(value)
                values = None if raw is None else reader.values(raw)
            return None if values is None else self._transform(record, values, reader)
        except Exception:
            return None

    def _concepts_of(self, codes: Sequence[str | None], day: date) -> bytes | None:
        """The concepts array: each mapping of a code encoded once, those valid on ``day`` in table
        order (as ``Terminology.lookup``); None when a code has none valid that day. ``codes`` are
        code system and code of each coded field in turn, both None where it is absent."""
        count, parts = 0, []
        for i in range(0, len(codes), 2):
            system = codes[i]
            if system is None:
                continue  # optional and absent
            code = (system, cast(str, codes[i + 1]))
            mappings = self._concepts.get(code)
            if mappings is None:
                if len(self._concepts) >= CONCEPT_CACHE:
                    self._concepts.clear()
                mappings = self._concepts[code] = tuple(
                    (m.valid_from, m.valid_to, concept_bytes(m.concept()))
                    for m in self.transformer.terminology.mappings(*code)
                )
            found = 0
            for valid_from, valid_to, encoded in mappings:
                if valid_from <= day and (valid_to is None or day < valid_to):
                    parts.append(encoded)
                    found += 1
            if not found:
                return None
            count += found
        return zigzag(count) + b"".join(parts) + b"\x00" if count else b"\x00"

    def _transform(self, record: RawRecord, values: tuple[Any, ...], reader: _Reader) -> Curated | None:
        (
            event_id,
            symbol,
            _system,
            event_ms,
            _registration_ms,
            case,
            report,
            execution,
            skn,
            bsn,
            birth,
            sex,
            postcode,
            crime,
            days,
            hours,
            amount,
        ) = values[:_PLAN_VALUES]
        if event_ms < _EVENT_MIN_MS:
            return None  # before 1970: the reference path's zone conversion
        t = self.transformer
        local_day = self._days(event_ms)[1]

        concept_block = self._concepts_of(values[_PLAN_VALUES:-4], local_day)
        if concept_block is None:
            return None  # no mapping valid that day: the reference path names the unknown code
        cache = self._pseudonyms
        p = t.pseudonymiser
        case_value, case_bytes = (cache.cases.get(case) or cache.case(p, case)) if case else _NULL
        report_value, report_bytes = (
            (cache.reports.get(report) or cache.report(p, report)) if report else _NULL
        )
        execution_value, execution_bytes = (
            (cache.executions.get(execution) or cache.execution(p, execution)) if execution else _NULL
        )
        person_bytes = cache.persons.get((skn, bsn)) or cache.person(p, skn, bsn)
        birth_bytes = b"\x00\x00" if birth is None else _birth(birth, local_day)
        texts = self._texts

        partner = self._partners.get(symbol)
        if partner is None:
            partner = self._partners[symbol] = string_bytes(str(symbol).lower())
        event_id_bytes, source, event_bytes, registration_bytes = values[-4:]
        now = self._processed_ms()
        if now != self._now:  # the same millisecond for many events
            self._now, self._now_bytes = now, zigzag(now)

        payload = b"".join(
            (
                self.header,
                event_id_bytes,
                partner,
                reader.type_and,
                source,
                event_bytes,
                registration_bytes,
                reader.step,
                case_bytes,
                report_bytes,
                execution_bytes,
                person_bytes,
                birth_bytes,
                texts.get(sex) or self._text(sex),
                self._areas.get(postcode) or self._area(postcode),
                texts.get(crime) or self._text(crime),
                optional_int(days),
                optional_int(hours),
                b"\x00" if amount is None else b"\x02" + _DOUBLE.pack(amount),
                concept_block,
                self.tail,
                self._now_bytes,
            )
        )
        key = case_value or report_value or execution_value or event_id
        return Curated(key.encode(), payload, record, event_id, event_ms / 1000)


def _birth(days: int, local_day: date) -> bytes:
    """birth_year and age_at_event (``processors.pseudonym.age_at`` on the event's local date)."""
    born = date.fromordinal(_EPOCH_ORDINAL + days)
    age = local_day.year - born.year - ((local_day.month, local_day.day) < (born.month, born.day))
    return b"\x02" + zigzag(born.year) + b"\x02" + zigzag(age)


class _PseudonymCache:
    """Identifier -> (pseudonym, its encoded union), per kind; a few thousand entries, then afresh.

    The fast path looks the dicts up itself and calls the methods on a miss (they also answer a hit).
    In memory only: never logged, persisted or shown (its repr is its size)."""

    def __init__(self, capacity: int = PSEUDONYM_CACHE) -> None:
        self.capacity = capacity
        self.cases: dict[str, tuple[str, bytes]] = {}
        self.reports: dict[str, tuple[str, bytes]] = {}
        self.executions: dict[str, tuple[str, bytes]] = {}
        self.persons: dict[tuple[str | None, str | None], bytes] = {}
        self.size = 0
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"_PseudonymCache({self.size} entries)"

    def __len__(self) -> int:
        return self.size

    def clear(self) -> None:
        self.cases.clear()
        self.reports.clear()
        self.executions.clear()
        self.persons.clear()
        self.size = 0

    def _room(self) -> None:
        if self.size >= self.capacity:
            self.clear()
        self.size += 1

    def _one(
        self, cache: dict[str, tuple[str, bytes]], make: Callable[[str], str], value: str | None
    ) -> tuple[str | None, bytes]:
        if not value:
            return _NULL  # the reference: no pseudonym for an absent or empty identifier
        found = cache.get(value)
        if found is None:
            self.misses += 1
            pseudonym = make(value)  # IdentifierError for a malformed one: the reference path's reason
            self._room()
            found = cache[value] = (pseudonym, b"\x02" + string_bytes(pseudonym))
        else:
            self.hits += 1
        return found

    def case(self, p: Pseudonymiser, value: str | None) -> tuple[str | None, bytes]:
        return self._one(self.cases, p.case, value)

    def report(self, p: Pseudonymiser, value: str | None) -> tuple[str | None, bytes]:
        return self._one(self.reports, p.report, value)

    def execution(self, p: Pseudonymiser, value: str | None) -> tuple[str | None, bytes]:
        return self._one(self.executions, p.execution, value)

    def person(self, p: Pseudonymiser, skn: str | None, bsn: str | None) -> bytes:
        """The bytes of person_pseudonym, its source, skn_pseudonym, bsn_pseudonym and identity_flags."""
        key = (skn, bsn)
        found = self.persons.get(key)
        if found is None:
            self.misses += 1
            person = p.person(skn, bsn)
            found = (
                optional_string(person.pseudonym)
                + string_bytes(person.source)
                + optional_string(person.skn)
                + optional_string(person.bsn)
                + strings(person.flags)
            )
            self._room()
            self.persons[key] = found
        else:
            self.hits += 1
        return found
