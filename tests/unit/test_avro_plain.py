"""The generated schemaless reader (``ketenstroom.contract.avro_plain``) against fastavro.

Every value it returns must be what fastavro reads without the logical types, and it must return a
value only for bytes fastavro reads whole *with* them (else None or an exception: the caller's general
path decides): on the shipped partner schemas with generated records of every partner, on a schema of
every type it covers with random values, and on records spoilt byte by byte.
"""

from __future__ import annotations

import io
import random
import struct
from datetime import date
from typing import Any

import fastavro
import pytest

from bench.raw_stream import RawStream, raw_stream
from ketenstroom.contract.avro_plain import NotCompilable, compile_reader
from ketenstroom.contract.codec import decode, without_logical_types
from ketenstroom.errors import RecordError

Path = tuple[str, ...]


@pytest.fixture(scope="module")
def stream() -> RawStream:
    return raw_stream(cases=300, seed=3, noise=0.15, start=date(2023, 1, 1), as_of=date(2026, 11, 1))


def _leaves(schema: Any, named: dict[str, Any], prefix: Path = ()) -> list[Path]:
    """Every leaf path of a record schema (records inside records walked into)."""
    out: list[Path] = []
    for field in schema["fields"]:
        typ, path = field["type"], (*prefix, field["name"])
        if isinstance(typ, list):
            typ = next(t for t in typ if t != "null")
        typ = named.get(typ, typ) if isinstance(typ, str) else typ
        if isinstance(typ, dict) and "name" in typ:
            named[typ["name"]] = typ
        if isinstance(typ, dict) and typ.get("type") == "record":
            out += _leaves(typ, named, path)
        else:
            out.append(path)
    return out


def _at(value: Any, path: Path) -> Any:
    for name in path:
        if value is None:
            return None
        value = value.get(name)
    return value


def _plain_read(schema: Any, payload: bytes) -> dict[str, Any] | None:
    """fastavro's read without logical types, or None where it fails or leaves bytes over."""
    buf = io.BytesIO(payload)
    try:
        record = fastavro.schemaless_reader(buf, without_logical_types(schema), None)
    except Exception:
        return None
    return record if buf.tell() == len(payload) and isinstance(record, dict) else None


def _spoil(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    how = rng.randrange(4)
    if how == 0:
        out[rng.randrange(len(out))] = rng.randrange(256)
    elif how == 1:
        del out[rng.randrange(len(out)) :]
    elif how == 2:
        out += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
    else:
        for _ in range(3):
            out[rng.randrange(len(out))] = rng.choice((0x80, 0xFF, 0x01, 0x7F, 0x03))
    return bytes(out)


def _check(read: Any, schema: Any, paths: list[Path], payload: bytes, start: int) -> str:
    """One record: the reader's answer is fastavro's, or it hands the record back. Returns the case."""
    try:
        got = read(payload)
    except Exception:
        got = None
    try:
        decode(schema, payload[start:])  # with the logical types: what the reference path reads
    except RecordError:
        assert got is None, f"read a record fastavro refuses: {payload!r}"
        return "refused"
    if got is None:
        return "handed back"
    plain = _plain_read(schema, payload[start:])
    assert plain is not None
    assert got == tuple(_at(plain, path) for path in paths), payload
    return "read"


def test_every_partner_schema_reads_as_fastavro_does(stream: RawStream) -> None:
    rng = random.Random(7)
    readers = {}
    for schema_id, schema in stream.schemas.items():
        paths = _leaves(schema, {})
        readers[schema_id] = (compile_reader(schema, paths, start=5), paths)  # every one compiles
    cases: dict[str, int] = {}
    for record in stream.records:
        value = record.value or b""
        schema_id = int.from_bytes(value[1:5], "big")
        read, paths = readers[schema_id]
        for payload in (value, value[:5] + _spoil(rng, value[5:])):
            case = _check(read, stream.schemas[schema_id], paths, payload, 5)
            cases[case] = cases.get(case, 0) + 1
    assert cases["read"] > len(stream.records) and cases["refused"] > len(stream.records) // 4, cases


def test_a_subset_of_paths_repeated_and_absent_reads_those_values(stream: RawStream) -> None:
    record = stream.records[0]
    schema = stream.schemas[int.from_bytes((record.value or b"")[1:5], "big")]
    paths = _leaves(schema, {})
    wanted: list[Path | None] = [paths[-1], None, paths[0], ("no", "such"), paths[-1], ("metadata", "nope")]
    got = compile_reader(schema, wanted, start=5)(record.value or b"")
    plain = _plain_read(schema, (record.value or b"")[5:])
    assert got is not None and plain is not None
    assert got == (_at(plain, paths[-1]), None, _at(plain, paths[0]), None, _at(plain, paths[-1]), None)


EVERYTHING = fastavro.parse_schema(
    {
        "type": "record",
        "name": "All",
        "namespace": "t",
        "fields": [
            {"name": "b", "type": "boolean"},
            {"name": "i", "type": "int"},
            {"name": "l", "type": "long"},
            {"name": "f", "type": "float"},
            {"name": "d", "type": "double"},
            {"name": "s", "type": "string"},
            {"name": "y", "type": "bytes"},
            {"name": "n", "type": "null"},
            {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}},
            {"name": "x", "type": {"type": "fixed", "name": "F", "size": 3}},
            {"name": "u", "type": {"type": "string", "logicalType": "uuid"}},
            {"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "day", "type": ["null", {"type": "int", "logicalType": "date"}]},
            {"name": "late", "type": ["string", "null"]},
            {
                "name": "inner",
                "type": [
                    "null",
                    {
                        "type": "record",
                        "name": "Inner",
                        "fields": [
                            {"name": "e2", "type": "E"},
                            {"name": "opt", "type": ["null", "F"]},
                            {"name": "z", "type": ["double", "null"]},
                        ],
                    },
                ],
            },
            {"name": "again", "type": "Inner"},
        ],
    }
)


def _random_value(rng: random.Random) -> dict[str, Any]:
    def text() -> str:
        return "".join(rng.choice("aé𝄞Z0-\x00") for _ in range(rng.randrange(0, 70)))

    def inner() -> dict[str, Any]:
        return {
            "e2": rng.choice("ABC"),
            "opt": rng.choice([None, bytes(rng.randrange(256) for _ in range(3))]),
            "z": rng.choice([None, rng.uniform(-1e300, 1e300), 0.0]),
        }

    return {
        "b": rng.random() < 0.5,
        "i": rng.randrange(-(2**31), 2**31),
        "l": rng.choice([0, -1, 63, -64, 64, 2**62, -(2**63), rng.randrange(-(2**40), 2**40)]),
        "f": struct.unpack("<f", struct.pack("<f", rng.uniform(-1e30, 1e30)))[0],
        "d": rng.uniform(-1e300, 1e300),
        "s": text(),
        "y": bytes(rng.randrange(256) for _ in range(rng.randrange(0, 80))),
        "n": None,
        "e": rng.choice("ABC"),
        "x": bytes(rng.randrange(256) for _ in range(3)),
        "u": "6f1c9a4e-1111-5222-8333-94445555666" + rng.choice("0a"),
        "t": rng.randrange(-(2**41), 2**42),
        "day": rng.choice([None, rng.randrange(-30_000, 90_000)]),
        "late": rng.choice([None, text()]),
        "inner": rng.choice([None, inner()]),
        "again": inner(),
    }


def test_every_covered_type_reads_as_fastavro_does() -> None:
    rng = random.Random(11)
    plain = without_logical_types(EVERYTHING)
    paths = _leaves(EVERYTHING, {})
    few: list[Path] = [("s",), ("inner", "z")]  # the rest skipped: checked all the same
    read, skim = compile_reader(EVERYTHING, paths), compile_reader(EVERYTHING, few)
    cases: dict[str, int] = {}
    for _ in range(3000):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, plain, _random_value(rng))
        payload = buf.getvalue()
        for data in (payload, _spoil(rng, payload)):
            case = _check(read, EVERYTHING, paths, data, 0)
            assert _check(skim, EVERYTHING, few, data, 0) == case
            cases[case] = cases.get(case, 0) + 1
    # out-of-range timestamps and dates are handed back; every kind of answer occurs
    assert cases["read"] > 1500 and cases["handed back"] > 100 and cases["refused"] > 300, cases


@pytest.mark.parametrize(
    "typ",
    [
        {"type": "array", "items": "string"},
        {"type": "map", "values": "long"},
        ["null", "string", "long"],
        ["string", "long"],
        {"type": "long", "logicalType": "timestamp-micros"},
        {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2},
        {"type": "record", "name": "Node", "fields": [{"name": "next", "type": ["null", "Node"]}]},
    ],
)
def test_shapes_it_does_not_cover_are_not_compiled(typ: Any) -> None:
    schema = {"type": "record", "name": "R", "fields": [{"name": "a", "type": typ}]}
    with pytest.raises(NotCompilable):
        compile_reader(fastavro.parse_schema(schema), [("a",)])


ENUM = {"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}


@pytest.mark.parametrize(
    ("typ", "good", "bad"),
    [
        (ENUM, b"\x04", b"\x06"),  # index 3 of 3 symbols: fastavro refuses
        (ENUM, b"\x04", b"\x01"),  # index -1: fastavro reads the last symbol; not canonical, handed back
        ("boolean", b"\x01", b"\x02"),
        (["null", "string"], b"\x02\x00", b"\x04"),  # union index 2 of 2
        (["null", "string"], b"\x00", b"\x01"),  # union index -1
        ("string", b"\x00", b"\x01"),  # length -1
        ("string", b"\x04\xc3\xa9", b"\x04\xc3\x28"),  # invalid UTF-8
        ("long", b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff\x01", b"\xff" * 9 + b"\x7f"),  # > 64 bits
        ("long", b"\x80" * 9 + b"\x00", b"\x80" * 10 + b"\x00"),  # more than ten bytes
        (
            {"type": "long", "logicalType": "timestamp-millis"},
            b"\x80\x80\x80\xb0\xca\x62",
            b"\xfe" * 8 + b"\x7f",
        ),
        ({"type": "int", "logicalType": "date"}, b"\xf8\xc9\x02", b"\xfe\xff\xff\xff\x0f"),
        (
            {"type": "string", "logicalType": "uuid"},
            b"\x48" + b"6f1c9a4e-1111-5222-8333-944455556666",
            b"\x48" + b"6F1C9A4E-1111-5222-8333-944455556666",
        ),
        ("double", b"\x00" * 8, b"\x00" * 7),  # cut short
    ],
)
def test_a_skipped_value_fastavro_would_not_read_as_it_is_hands_the_record_back(
    typ: Any, good: bytes, bad: bytes
) -> None:
    schema = fastavro.parse_schema(
        {
            "type": "record",
            "name": "R",
            "fields": [{"name": "a", "type": typ}, {"name": "s", "type": "string"}],
        }
    )
    read = compile_reader(schema, [("s",)])
    assert read(good + b"\x02x") == ("x",)  # the same field, canonical: read
    try:
        got = read(bad + b"\x02x")
    except Exception:
        got = None
    assert got is None


def _written(typ: Any, value: Any) -> bytes:
    """fastavro's bytes for one value of a (non-union) type."""
    schema = fastavro.parse_schema({"type": "record", "name": "One", "fields": [{"name": "v", "type": typ}]})
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, without_logical_types(schema), {"v": value})
    return buf.getvalue()


def test_encoded_values_are_fastavros_bytes_or_the_record_is_handed_back(stream: RawStream) -> None:
    fields = ("event_id", "partner", "source_system", "record_version", "event_time", "registration_time")
    encoded = [("metadata", name) for name in fields]
    rng = random.Random(5)
    read_count = 0
    records = stream.records[:3000]
    for record in records:
        value = record.value or b""
        schema = stream.schemas[int.from_bytes(value[1:5], "big")]
        meta_type = next(f["type"] for f in schema["fields"] if f["name"] == "metadata")
        types = {f["name"]: f["type"] for f in meta_type["fields"]}
        read = compile_reader(schema, encoded, encoded=encoded, start=5)
        for payload in (value, value[:5] + _spoil(rng, value[5:])):
            try:
                got = read(payload)
            except Exception:
                got = None
            if got is None:
                continue
            values, slices = got[: len(fields)], got[len(fields) :]
            assert slices == tuple(_written(types[n], v) for n, v in zip(fields, values, strict=True))
            read_count += 1
    assert read_count > len(records)  # all the records themselves, some spoilt ones
    # a varint with a trailing zero group reads as the same value, but its bytes are not fastavro's
    schema = fastavro.parse_schema({"type": "record", "name": "T", "fields": [{"name": "t", "type": "long"}]})
    assert compile_reader(schema, [("t",)])(b"\x82\x00") == (1,)
    assert compile_reader(schema, [("t",)], encoded=[("t",)])(b"\x82\x00") is None
    assert compile_reader(schema, [("t",)], encoded=[("t",)])(b"\x82\x01") == (65, b"\x82\x01")


def test_records_nested_deeper_than_python_compiles_are_not_compiled() -> None:
    """Each nullable record is an indented block of the generated source; Python's tokenizer allows 100
    levels: no reader (the caller's general path), never an error of another kind."""
    inner: Any = {"type": "record", "name": "N0", "fields": [{"name": "s", "type": "string"}]}
    for depth in range(1, 120):
        inner = {"type": "record", "name": f"N{depth}", "fields": [{"name": "x", "type": ["null", inner]}]}
    with pytest.raises(NotCompilable):
        compile_reader(fastavro.parse_schema(inner), [("x",)])
    five = inner
    for _ in range(115):
        five = five["fields"][0]["type"][1]
    read = compile_reader(fastavro.parse_schema(five), [("x", "x", "x", "x", "s")])
    assert read(b"\x02" * 4 + b"\x02a") == ("a",) and read(b"\x02\x00") == (None,)
