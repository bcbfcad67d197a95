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

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from operator import itemgetter
from typing import Any

from ketenstroom.contract.avro_bytes import string_bytes, zigzag
from ketenstroom.contract.ids import event_id_bytes, format_uuid
from producers.config import RecordMapping
from producers.plausibility import (
    BIRTH,
    EVENT,
    REGISTRATION,
    Plausibility,
    anniversary,
    day_start_ms,
    local_day,
)
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
    text_bytes,
    text_value,
    then,
    writer,
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
    leaf: _Leaf,
    nullable: bool,
    record: RecordMapping,
    memos: dict[str, dict[str, bytes]],
    numbers: dict[str, dict[str, int]] | None = None,
) -> Step:
    """Partner's string -> the leaf's Avro bytes."""
    if leaf.kind in ("string", "coded"):
        around = _coded_around(leaf, record) if leaf.kind == "coded" else (b"", b"")
        check = SEMANTIC.get(leaf.path.rsplit(".", 1)[-1])
        return text_bytes(nullable, check, leaf.branch, leaf.null, around)
    if leaf.path.rsplit(".", 1)[-1] in SEMANTIC:
        raise Unsupported(f"{leaf.path}: identifier check on a {leaf.kind}")
    if leaf.kind == "date":
        return remembered(
            nullable,
            leaf.branch,
            leaf.null,
            days,
            memos.setdefault(leaf.kind, {}),
            None if numbers is None else numbers.setdefault(leaf.kind, {}),
        )
    if leaf.kind.startswith("timestamp-"):
        return remembered(
            nullable,
            leaf.branch,
            leaf.null,
            moments(leaf.kind),
            memos.setdefault(leaf.kind, {}),
            None if numbers is None else numbers.setdefault(leaf.kind, {}),
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
        numbers: dict[str, dict[str, int]] = {}  # kind -> string -> the number (moments, for the rules)
        self._columns = [
            (
                record.columns[path],
                _value_step(by_path[path], _nullable(by_path[path], record))
                if path in late
                else _bytes_step(by_path[path], _nullable(by_path[path], record), record, memos, numbers),
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
        self._plausible = _Rules(record, by_path, numbers).compile() if record.plausibility.declared else None

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
            if self._plausible is not None and not self._plausible(row, delivery_ms):
                return None  # the reference path rejects it with the rule's reason
            eid = event_id_bytes(self.partner, source, version)
            late = (format_uuid(eid), delivery_ms, version, source, key)
            chunks += self._fixed
            chunks += [write(late[i]) for i, write in self._late]
            return b"".join(self._gather(chunks)), key.encode(), eid
        except (ValueError, KeyError):  # NotPlain, a parser's ValueError, or a column this row lacks
            return None


class _Rules:
    """The record type's plausibility rules as a few integer comparisons, without parsing anything again.

    Event and registration times are the numbers the columns' own steps just computed (``numbers``,
    from ``moments``: equal to the reference's ``parse_moment`` and fastavro, as the byte-for-byte
    tests check), made ``timestamp-millis``. Every rule becomes a bound on the event's millis: the
    delivery plus the clock skew, the floor's local midnight, the registration's (``local_day``), and
    per birth date the midnights of the birth and of the birthdays that bound the age. Birth dates are
    many, so their bounds are UTC midnights moved inwards by the most Amsterdam is ahead of UTC (two
    hours): no time zone lookups, and stricter than the model by at most two hours around a midnight.
    ``plausible`` says yes only when ``Plausibility.violation`` finds nothing; every other row goes to
    the reference path, which names the rule.
    """

    def __init__(
        self, record: RecordMapping, leaves: dict[str, _Leaf], numbers: dict[str, dict[str, int]]
    ) -> None:
        rules: Plausibility = record.plausibility
        skew = rules.max_clock_skew_minutes
        self.skew_ms = -_NEVER if skew is None else skew * 60_000
        self.floor_ms = _NEVER if rules.event_not_before is None else day_start_ms(rules.event_not_before)
        self.event, self.event_numbers, self.event_per_ms = self._moment(record, leaves, numbers, EVENT)
        self.registration: str | None = None
        if REGISTRATION in rules.paths and record.columns[REGISTRATION] != self.event:
            # (one column for both, as OM's beslisdatum: the registration is the event, never before it)
            self.registration, self.registration_numbers, self.registration_per_ms = self._moment(
                record, leaves, numbers, REGISTRATION
            )
        self.birth: str | None = None
        if BIRTH in rules.paths:
            leaf = leaves.get(BIRTH)
            if BIRTH not in record.columns or leaf is None or leaf.kind != "date":
                raise Unsupported(f"{BIRTH}: plausibility rules need a date column")
            self.birth, self.birth_days = record.columns[BIRTH], numbers.setdefault("date", {})
        self.born_check = rules.birth_before_event
        self.ages = rules.age_at_event
        self.births: dict[str, tuple[int, int] | None] = {}

    @staticmethod
    def _moment(
        record: RecordMapping, leaves: dict[str, _Leaf], numbers: dict[str, dict[str, int]], path: str
    ) -> tuple[str, dict[str, int], int]:
        leaf = leaves.get(path)
        if path not in record.columns or leaf is None or not leaf.kind.startswith("timestamp-"):
            raise Unsupported(f"{path}: plausibility rules need a timestamp column")
        per_ms = 1000 if leaf.kind.endswith("micros") else 1
        return record.columns[path], numbers.setdefault(leaf.kind, {}), per_ms

    def _bounds(self, text: str) -> tuple[int, int] | None:
        """``(earliest, first too late)`` event millis for a birth date, or None when it is blank."""
        if len(self.births) >= _REMEMBER:
            self.births.clear()
        found: tuple[int, int] | None = None
        day = self.birth_days.get(text)  # the birth column's step has run: days since 1970-01-01
        if day is not None:
            birth = date.fromordinal(_EPOCH_DAY + day)
            earliest, too_late = _NEVER, -_NEVER
            if self.born_check:  # born on or before the event's local date
                earliest = _midnight(birth, 0)
            if self.ages is not None:  # lowest <= age(birth, event's date) <= highest
                earliest = max(earliest, _midnight(birth, self.ages[0]))
                too_late = _midnight(birth, self.ages[1] + 1) - _AHEAD_MS
            found = (earliest, too_late)
        self.births[text] = found
        return found

    def compile(self) -> Callable[[dict[str, str], int], bool]:
        """``plausible(row, delivery_ms)``: whether the row passes every rule (its steps have run).

        A closure over plain locals: it runs for every row, so it saves each attribute lookup.
        """
        event_column, events, event_per_ms = self.event, self.event_numbers, self.event_per_ms
        floor_ms, skew_ms = self.floor_ms, self.skew_ms
        registration_column = self.registration
        registrations, registration_per_ms = (
            (self.registration_numbers, self.registration_per_ms) if registration_column else ({}, 1)
        )
        birth_column, births, bounds_of = self.birth, self.births, self._bounds

        def plausible(row: dict[str, str], delivery_ms: int) -> bool:
            event = events.get(row[event_column])
            if event is None:
                return False  # no number the step computed (blank): the reference path names it
            event //= event_per_ms
            if not floor_ms <= event <= delivery_ms + skew_ms:
                return False
            if registration_column is not None:
                registration = registrations.get(row[registration_column])
                if registration is not None:
                    registration //= registration_per_ms
                    if registration < event and registration < local_day(event)[1]:
                        return False
            if birth_column is not None:
                text = row[birth_column]
                bounds = births[text] if text in births else bounds_of(text)
                if bounds is not None and not bounds[0] <= event < bounds[1]:
                    return False
            return True

        return plausible


_REMEMBER = 65_536  # distinct birth dates remembered, as in ``producers.steps``
_NEVER = -(1 << 62)
_AHEAD_MS = 2 * 3_600_000  # Amsterdam is one or two hours ahead of UTC: its midnight is before UTC's
_DAY_MS = 86_400_000
_EPOCH_DAY = date(1970, 1, 1).toordinal()


def _midnight(birth: date, years: int) -> int:
    """UTC midnight (in ms) of the day ``birth`` turns ``years``: at most two hours after Amsterdam's
    (past the calendar: never, or always)."""
    try:
        return (anniversary(birth, years).toordinal() - _EPOCH_DAY) * _DAY_MS
    except (ValueError, OverflowError):
        return _NEVER if years <= 0 else -_NEVER
