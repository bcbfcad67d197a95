"""Column-wise Avro decoding: a batch of same-schema payloads straight into Arrow, no per-record objects.

The reference path (``ketenstroom.contract.codec.decode``, fastavro) builds a dict of Python objects per
record, about 40 µs for a 28-field ``ChainEvent``; converting those dicts to Arrow costs as much again.
Here a writer schema is compiled once into a ``Plan`` of vectorised steps: all payloads of a batch lie
in one byte buffer, and every step reads one field for *all* records at once (numpy over the vector of
record positions), so the per-record cost is a few numpy element operations per field. Strings are kept
as (start, length) spans and gathered into Arrow buffers once per column; arrays are read in rounds
(item ``k`` of every record that has one), then put in record order.

Nothing is guessed: a record whose bytes do not end exactly where its payload ends, that reads past its
end, has an invalid union branch, a negative length, a varint longer than 64 bits, an ``int`` outside
32 bits or a boolean byte other than 0/1 is marked *bad*, and the caller decodes it with the reference
path, which either decodes it (the same values) or raises the ``DecodeError`` that keeps it as a reject
with its reason; so is a record with a string that is not UTF-8 (Arrow validates each string column
at once; only when that fails are the records with non-ASCII strings decoded one by one to find it).
Writer schemas with types this reader does not know (enum, fixed, bytes, map, unions of two non-null
branches) get no plan (``Plan.compile`` returns None) and are decoded by the reference path.
``tests/unit/test_columnar.py`` compares both paths on generated events of every partner, with noise
and hostile bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

_I64 = np.int64
_U64 = np.uint64
PAD = 16  # zero bytes after the last payload: any clamped read stays inside the buffer


class FastPathRefused(Exception):
    """The batch cannot be decoded column-wise (e.g. invalid UTF-8); decode it record by record."""


class InvalidUtf8(FastPathRefused):
    """A string column holds bytes that are not UTF-8."""


class Batch:
    """The payloads of a batch in one padded buffer, with each record's read position and end."""

    def __init__(self, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
        self.buf = buf
        self.last = len(buf) - 1
        self.pos = starts.astype(_I64, copy=True)
        self.ends = ends.astype(_I64, copy=False)
        self.bad = np.zeros(len(starts), dtype=bool)

    @classmethod
    def of(cls, payloads: Sequence[bytes | memoryview]) -> Batch:
        lengths = np.fromiter((len(p) for p in payloads), dtype=_I64, count=len(payloads))
        ends = np.cumsum(lengths)
        buf = np.frombuffer(b"".join([*payloads, bytes(PAD)]), dtype=np.uint8)
        return cls(buf, ends - lengths, ends)

    def byte(self, at: np.ndarray) -> np.ndarray:
        found: np.ndarray = self.buf[np.clip(at, 0, self.last)]
        return found

    def overrun(self, idx: np.ndarray) -> None:
        self.bad[idx] |= self.pos[idx] > self.ends[idx]


# --- columns of decoded values, for the records (or items) ``idx`` a step read -----------------------


@dataclass
class Col:
    valid: np.ndarray | None  # None: all valid

    def take(self, at: np.ndarray) -> Col:
        raise NotImplementedError

    def expand(self, n: int, at: np.ndarray) -> Col:
        """Length ``n``: these values at positions ``at``, null elsewhere."""
        raise NotImplementedError

    def _valid_take(self, at: np.ndarray) -> np.ndarray | None:
        return None if self.valid is None else self.valid[at]

    def _valid_expand(self, n: int, at: np.ndarray) -> np.ndarray:
        valid = np.zeros(n, dtype=bool)
        valid[at] = True if self.valid is None else self.valid
        return valid


@dataclass
class Values(Col):
    values: np.ndarray  # int64, float64 or bool

    def take(self, at: np.ndarray) -> Values:
        return Values(self._valid_take(at), self.values[at])

    def expand(self, n: int, at: np.ndarray) -> Values:
        values = np.zeros(n, dtype=self.values.dtype)
        values[at] = self.values
        return Values(self._valid_expand(n, at), values)


@dataclass
class Spans(Col):
    """Strings as spans of the batch buffer."""

    start: np.ndarray
    length: np.ndarray

    def take(self, at: np.ndarray) -> Spans:
        return Spans(self._valid_take(at), self.start[at], self.length[at])

    def expand(self, n: int, at: np.ndarray) -> Spans:
        start, length = np.zeros(n, dtype=_I64), np.zeros(n, dtype=_I64)
        start[at], length[at] = self.start, self.length
        return Spans(self._valid_expand(n, at), start, length)


@dataclass
class Lists(Col):
    counts: np.ndarray
    items: Col  # every item of every list, in record order

    def take(self, at: np.ndarray) -> Lists:
        offsets = np.concatenate([[0], np.cumsum(self.counts)])
        return Lists(
            self._valid_take(at), self.counts[at], self.items.take(ranges(offsets[at], self.counts[at]))
        )

    def expand(self, n: int, at: np.ndarray) -> Lists:
        counts = np.zeros(n, dtype=_I64)
        counts[at] = self.counts
        return Lists(self._valid_expand(n, at), counts, self.items)


@dataclass
class Struct(Col):
    fields: dict[str, Col]

    def take(self, at: np.ndarray) -> Struct:
        return Struct(self._valid_take(at), {k: c.take(at) for k, c in self.fields.items()})

    def expand(self, n: int, at: np.ndarray) -> Struct:
        return Struct(self._valid_expand(n, at), {k: c.expand(n, at) for k, c in self.fields.items()})


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The concatenation of ``arange(s, s + l)`` for every (start, length), vectorised."""
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, dtype=_I64)
    ends = np.cumsum(lengths)
    shift = np.repeat(starts - (ends - lengths), lengths)
    found: np.ndarray = np.arange(total, dtype=_I64) + shift
    return found


def concat(cols: list[Col]) -> Col:
    first = cols[0]
    valid = (
        None
        if all(c.valid is None for c in cols)
        else np.concatenate([np.ones(_len(c), bool) if c.valid is None else c.valid for c in cols])
    )
    if isinstance(first, Values):
        return Values(valid, np.concatenate([c.values for c in cols]))  # type: ignore[attr-defined]
    if isinstance(first, Spans):
        return Spans(
            valid,
            np.concatenate([c.start for c in cols]),  # type: ignore[attr-defined]
            np.concatenate([c.length for c in cols]),  # type: ignore[attr-defined]
        )
    if isinstance(first, Lists):
        return Lists(
            valid,
            np.concatenate([c.counts for c in cols]),  # type: ignore[attr-defined]
            concat([c.items for c in cols]),  # type: ignore[attr-defined]
        )
    assert isinstance(first, Struct)
    return Struct(valid, {k: concat([c.fields[k] for c in cols]) for k in first.fields})  # type: ignore[attr-defined]


def _len(col: Col) -> int:
    if isinstance(col, Values):
        return len(col.values)
    if isinstance(col, Spans):
        return len(col.start)
    if isinstance(col, Lists):
        return len(col.counts)
    assert isinstance(col, Struct)
    return _len(next(iter(col.fields.values()))) if col.fields else 0


# --- the steps: each reads one Avro value for the records ``idx`` and advances their positions --------

Step = Callable[[Batch, np.ndarray], Col]


def read_long(b: Batch, idx: np.ndarray) -> np.ndarray:
    """Zigzag varints at the positions of ``idx``; longer than 10 bytes marks the record bad."""
    p = b.pos[idx]
    byte = b.byte(p).astype(_U64)
    value = byte & _U64(0x7F)
    p += 1
    more = np.nonzero(byte >= 0x80)[0]
    shift = 7
    while more.size and shift < 64:
        byte = b.byte(p[more]).astype(_U64)
        value[more] |= (byte & _U64(0x7F)) << _U64(shift)
        p[more] += 1
        more = more[byte >= 0x80]
        shift += 7
    if more.size:
        b.bad[idx[more]] = True
    b.pos[idx] = p
    b.overrun(idx)
    return (value >> _U64(1)).astype(_I64) ^ -(value & _U64(1)).astype(_I64)


def _long(b: Batch, idx: np.ndarray) -> Col:
    return Values(None, read_long(b, idx))


def _int(b: Batch, idx: np.ndarray) -> Col:
    value = read_long(b, idx)
    b.bad[idx[(value < -(2**31)) | (value >= 2**31)]] = True
    return Values(None, value)


def _fixed_width(width: int, dtype: str) -> Step:
    span = np.arange(width, dtype=_I64)

    def step(b: Batch, idx: np.ndarray) -> Col:
        p = b.pos[idx]
        raw = b.buf[np.clip(p[:, None] + span, 0, b.last)]
        b.pos[idx] = p + width
        b.overrun(idx)
        return Values(None, np.ascontiguousarray(raw).view(dtype).reshape(len(idx)).astype(np.float64))

    return step


def _boolean(b: Batch, idx: np.ndarray) -> Col:
    byte = b.byte(b.pos[idx])
    b.bad[idx[byte > 1]] = True
    b.pos[idx] += 1
    b.overrun(idx)
    return Values(None, byte == 1)


def _string(b: Batch, idx: np.ndarray) -> Col:
    length = read_long(b, idx)
    start = b.pos[idx]
    wrong = (length < 0) | (length > b.ends[idx] - start)  # (no overflow for huge lengths)
    if wrong.any():
        b.bad[idx[wrong]] = True
        length[wrong] = 0
    b.pos[idx] = start + length
    return Spans(None, start, length)


def _null(_b: Batch, idx: np.ndarray) -> Col:
    return Values(np.zeros(len(idx), dtype=bool), np.zeros(len(idx), dtype=_I64))


def _record(fields: list[tuple[str, Step]]) -> Step:
    def step(b: Batch, idx: np.ndarray) -> Col:
        return Struct(None, {name: read(b, idx) for name, read in fields})

    return step


def _nullable(null_branch: int, inner: Step) -> Step:
    other = 1 - null_branch

    def step(b: Batch, idx: np.ndarray) -> Col:
        branch = read_long(b, idx)
        b.bad[idx[(branch != 0) & (branch != 1)]] = True
        present = np.nonzero(branch == other)[0]
        return inner(b, idx[present]).expand(len(idx), present)

    return step


def _array(item: Step) -> Step:
    def step(b: Batch, idx: np.ndarray) -> Col:
        left = np.zeros(len(idx), dtype=_I64)  # items left in each record's current block
        live = np.arange(len(idx))
        chunks: list[Col] = []
        owners: list[np.ndarray] = []
        while live.size:
            live = live[~b.bad[idx[live]]]
            header = live[left[live] == 0]
            if header.size:
                rows = idx[header]
                count = read_long(b, rows)
                sized = count < 0
                if sized.any():  # a negative count is followed by the block's size in bytes
                    count[sized] = -count[sized]
                    size = read_long(b, rows[sized])
                    b.bad[rows[sized][size < 0]] = True
                wrong = count > b.ends[rows] - b.pos[rows]
                b.bad[rows[wrong]] = True
                count[wrong] = 0
                left[header] = count
                live = live[(left[live] > 0) & ~b.bad[idx[live]]]
            reading = live[left[live] > 0]
            if reading.size:
                chunks.append(item(b, idx[reading]))
                owners.append(reading)
                left[reading] -= 1
        if not chunks:
            return Lists(None, np.zeros(len(idx), dtype=_I64), item(b, np.empty(0, dtype=_I64)))
        owner = np.concatenate(owners)
        order = np.argsort(owner, kind="stable")  # rounds are in item order: stable keeps it per record
        return Lists(None, np.bincount(owner, minlength=len(idx)).astype(_I64), concat(chunks).take(order))

    return step


_PRIMITIVES: dict[str, Step] = {
    "null": _null,
    "boolean": _boolean,
    "int": _int,
    "long": _long,
    "float": _fixed_width(4, "<f4"),
    "double": _fixed_width(8, "<f8"),
    "string": _string,
}


class Unsupported(Exception):
    pass


def _compile(node: Any, named: dict[str, Any]) -> Step:
    if isinstance(node, str):
        if node in _PRIMITIVES:
            return _PRIMITIVES[node]
        if node in named:
            return _compile(named[node], named)
        raise Unsupported(node)
    if isinstance(node, list):
        branches = [t for t in node if t != "null"]
        if len(node) != 2 or len(branches) != 1:
            raise Unsupported(f"union {node!r}")
        return _nullable(node.index("null"), _compile(branches[0], named))
    kind = node["type"]
    if kind == "record":
        named[node["name"]] = node
        return _record([(f["name"], _compile(f["type"], named)) for f in node["fields"]])
    if kind == "array":
        return _array(_compile(node["items"], named))
    if isinstance(kind, str) and kind in _PRIMITIVES:
        return _PRIMITIVES[kind]  # a primitive with a logical type: read as the plain value, as fastavro
        # reads it with ``without_logical_types``
    raise Unsupported(f"type {kind!r}")


# --- to Arrow -------------------------------------------------------------------------------------------


def _validity(col: Col) -> pa.Buffer | None:
    if col.valid is None or col.valid.all():
        return None
    return pa.py_buffer(np.packbits(col.valid, bitorder="little"))


def _strings(col: Spans, n: int, validity: pa.Buffer | None, buf: np.ndarray) -> pa.Array:
    """The spans as a binary array. Spans of one column lie in buffer order (records in order, items in
    record order), so the whole buffer is viewed, without a copy, as alternating gaps and spans, and
    Arrow takes every span in one C++ call; out of order (never expected), numpy gathers the bytes."""
    start = col.start
    end = start + col.length
    if col.valid is not None:  # a null takes an empty span where the one before it ended
        end = np.maximum.accumulate(np.where(col.valid, end, 0))
        start = np.where(col.valid, start, end)
    if n and (start[0] >= 0) and bool((start[1:] >= end[:-1]).all()):
        offsets = np.zeros(2 * n + 1, dtype=_I64)
        offsets[1::2], offsets[2::2] = start, end
        whole = pa.Array.from_buffers(
            pa.large_binary(), 2 * n, [None, pa.py_buffer(offsets), pa.py_buffer(buf)]
        )
        taken = whole.take(pa.array(np.arange(1, 2 * n, 2, dtype=_I64)))
        return pa.Array.from_buffers(pa.large_binary(), n, [validity, *taken.buffers()[1:]])
    length = end - start
    offsets = np.zeros(n + 1, dtype=_I64)
    np.cumsum(length, out=offsets[1:])
    data = buf[ranges(start, length)]
    return pa.Array.from_buffers(pa.large_binary(), n, [validity, pa.py_buffer(offsets), pa.py_buffer(data)])


def to_arrow(col: Col, typ: pa.DataType, buf: np.ndarray) -> pa.Array:
    """``col`` as an Arrow array of ``typ`` (a snapshot column type; safe casts only)."""
    n = _len(col)
    validity = _validity(col)
    if isinstance(col, Spans):
        if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
            raise FastPathRefused(f"a string where the snapshot has {typ}")
        binary = _strings(col, n, validity, buf)
        try:
            return binary.cast(typ)  # validates UTF-8
        except pa.ArrowInvalid as exc:
            raise InvalidUtf8(str(exc)) from exc
    if isinstance(col, Values):
        values = col.values
        if pa.types.is_timestamp(typ):
            source = pa.array(values, type=pa.int64(), mask=None if col.valid is None else ~col.valid)
            return source.cast(typ)
        mask = None if col.valid is None else ~col.valid
        try:
            return pa.array(values, mask=mask).cast(typ)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise FastPathRefused(f"values do not fit {typ}: {exc}") from exc
    if isinstance(col, Lists):
        if not pa.types.is_list(typ):
            raise FastPathRefused(f"an array where the snapshot has {typ}")
        counts = col.counts if col.valid is None else np.where(col.valid, col.counts, 0)
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(counts, out=offsets[1:])
        values = to_arrow(col.items, typ.value_type, buf)  # (null lists own no items)
        return pa.ListArray.from_arrays(
            pa.array(offsets), values, type=typ, mask=None if col.valid is None else pa.array(~col.valid)
        )
    assert isinstance(col, Struct)
    if not pa.types.is_struct(typ):
        raise FastPathRefused(f"a record where the snapshot has {typ}")
    children = [
        to_arrow(col.fields[f.name], f.type, buf) if f.name in col.fields else pa.nulls(n, f.type)
        for f in typ
    ]
    return pa.StructArray.from_arrays(
        children, fields=list(typ), mask=None if col.valid is None else pa.array(~col.valid)
    )


def _spans(col: Col, owner: np.ndarray, out: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    """Every string span under ``col`` with the record it belongs to."""
    if isinstance(col, Spans):
        out.append((col.start, col.length, owner))
    elif isinstance(col, Struct):
        for child in col.fields.values():
            _spans(child, owner, out)
    elif isinstance(col, Lists):
        _spans(col.items, np.repeat(owner, col.counts), out)


def _check_utf8(batch: Batch, col: Col, owner: np.ndarray) -> None:
    """Mark bad the records with a string that is not UTF-8 (fastavro refuses those). Only spans with a
    byte of 0x80 or more are decoded, one by one; ASCII (most strings) is told by a binary search."""
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    _spans(col, owner, found)
    if not found:
        return
    high = np.flatnonzero(batch.buf >= 0x80)  # (varints have some too; a string only when not ASCII)
    if not high.size:
        return
    last = len(batch.buf)
    for all_start, all_length, all_rows in found:
        ok = ~batch.bad[all_rows]  # (a bad record's spans may point anywhere)
        start, length, rows = all_start[ok], all_length[ok], all_rows[ok]
        begin, end = np.clip(start, 0, last), np.clip(start + length, 0, last)
        for i in np.nonzero(np.searchsorted(high, begin) < np.searchsorted(high, end))[0].tolist():
            try:
                batch.buf[begin[i] : end[i]].tobytes().decode("utf-8")
            except UnicodeDecodeError:
                batch.bad[rows[i]] = True


class Plan:
    """The column-wise reader of one writer schema (a record)."""

    def __init__(self, step: Step) -> None:
        self.step = step

    @classmethod
    def compile(cls, writer_schema: Any) -> Plan | None:
        """The plan of a parsed writer schema, or None when it has types this reader does not know."""
        if not isinstance(writer_schema, dict) or writer_schema.get("type") != "record":
            return None
        try:
            return cls(_compile(writer_schema, {}))
        except Unsupported:
            return None

    def decode(self, batch: Batch) -> tuple[Struct, np.ndarray]:
        """The records' columns, and the mask of records that did not decode exactly (``bad``)."""
        idx = np.arange(len(batch.pos), dtype=_I64)
        col = self.step(batch, idx)
        assert isinstance(col, Struct)
        batch.bad |= batch.pos != batch.ends
        return col, batch.bad

    def table(self, batch: Batch, schema: pa.Schema) -> tuple[pa.Table, np.ndarray]:
        """The good records as a table of ``schema`` (columns the writer lacks are null; fields the
        snapshot does not have are read and dropped), and the indices of the bad ones (not in the
        table; decode those with the reference path)."""
        col, bad = self.decode(batch)
        try:
            return self._build(col, bad, batch, schema)
        except InvalidUtf8:
            # some string is not UTF-8 (Arrow validates a whole column at once): find the records
            _check_utf8(batch, col, np.arange(len(bad), dtype=_I64))
            return self._build(col, batch.bad, batch, schema)

    def _build(
        self, col: Struct, bad: np.ndarray, batch: Batch, schema: pa.Schema
    ) -> tuple[pa.Table, np.ndarray]:
        good = np.nonzero(~bad)[0]
        if len(good) < len(bad):
            col = col.take(good)
        columns = [
            to_arrow(col.fields[f.name], f.type, batch.buf)
            if f.name in col.fields
            else pa.nulls(len(good), f.type)
            for f in schema
        ]
        return pa.Table.from_arrays(columns, schema=schema), np.nonzero(bad)[0]


def decode_table(
    writer_schema: Any, payloads: Sequence[bytes | memoryview], schema: pa.Schema
) -> tuple[pa.Table, np.ndarray] | None:
    """Payloads of one writer schema as a table of ``schema`` and the indices of the records to decode
    with the reference path; None when the schema has no plan."""
    plan = Plan.compile(writer_schema)
    return None if plan is None else plan.table(Batch.of(payloads), schema)
