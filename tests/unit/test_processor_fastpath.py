"""The processor's fast path against its reference, part by part and whole, on generated data of every
partner (row noise and identity noise included) and on records spoilt on purpose.

Encodings are compared byte for byte with fastavro; decodes value for value with fastavro's logical
types; outcomes (curated bytes and keys, dead letters' reason, stage, error and event id) for equality.
"""

from __future__ import annotations

import io
import random
import re
import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

import fastavro
import pytest
from fastavro.write import LOGICAL_WRITERS

from bench.raw_stream import RawStream, raw_stream, transformer_for
from ketenstroom.calendar import AMSTERDAM, HourCalendar, local_date
from ketenstroom.catalogue import catalogue_at
from ketenstroom.contract.chain_event import chain_event_avsc
from ketenstroom.contract.codec import decode, encode
from ketenstroom.contract.wire import frame
from ketenstroom.errors import RecordError
from ketenstroom.settings import CatalogueSettings
from processors.fastpath import (
    PSEUDONYM_CACHE,
    ChainEventWriter,
    FastPath,
    _PseudonymCache,
    _Reader,
)
from processors.pseudonym import Pseudonymiser
from processors.transform import Curated, DeadLetter, RawRecord, Transformer
from synthetic.identity import IdentityNoise

PARTNERS = catalogue_at(CatalogueSettings().dir).names
NOW = datetime(2026, 11, 2, 8, 30, 15, 123456, tzinfo=UTC)
_to_ms = LOGICAL_WRITERS["long-timestamp-millis"]


@pytest.fixture(scope="module")
def stream() -> RawStream:
    # every partner, 15 % of rows with a mistake (those publish accepts reach the processor: unknown
    # codes, odd spellings), identity noise at three times the default mix
    return raw_stream(
        cases=500,
        seed=11,
        noise=0.15,
        start=date(2023, 1, 1),
        as_of=date(2026, 11, 1),
        identity=IdentityNoise().scaled(3),
    )


def _transformer(stream: RawStream) -> Transformer:
    return transformer_for(stream, clock=lambda: NOW)  # type: ignore[no-any-return]


def _schema_id(record: RawRecord) -> int:
    assert record.value is not None
    return int.from_bytes(record.value[1:5], "big")


def _plain(value: Any) -> Any:
    """A reference-decoded value as the fast decode reads it: ints for timestamps and dates, strings."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return _to_ms(value, None)
    if isinstance(value, date):
        return value.toordinal() - date(1970, 1, 1).toordinal()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _reference_event(t: Transformer, record: RawRecord) -> dict[str, Any]:
    writer = t.writer_schema(_schema_id(record))
    assert record.value is not None
    return t.to_chain_event(decode(writer, record.value[5:]), writer)


def _same(fast: Curated | DeadLetter, reference: Curated | DeadLetter) -> None:
    if isinstance(reference, Curated):
        assert isinstance(fast, Curated), (fast, reference)
        assert fast.value == reference.value, "curated bytes differ from the reference"
        assert (fast.key, fast.event_id, fast.event_time, fast.source) == (
            reference.key,
            reference.event_id,
            reference.event_time,
            reference.source,
        )
    else:
        assert isinstance(fast, DeadLetter), (fast, reference)
        # reason, stage, error text, event id, source; fastavro's error texts can name a BytesIO by its
        # memory address, which differs between two reads of the same record
        assert _letter(fast) == _letter(reference)


_ADDRESS = re.compile(r" at 0x[0-9a-f]+")


def _letter(dead: DeadLetter) -> tuple[Any, ...]:
    return (dead.reason, dead.stage, _ADDRESS.sub(" at 0x?", dead.error), dead.event_id, dead.source)


# -- the data covers what it should -------------------------------------------------------------------
def test_the_generated_stream_has_every_partner_and_noise(stream: RawStream) -> None:
    topics = Counter(r.topic for r in stream.records)
    assert set(topics) == {f"raw.{p}" for p in PARTNERS}
    t = _transformer(stream)
    outcomes = [t.transform_reference(r) for r in stream.records]
    reasons = Counter(o.reason for o in outcomes if isinstance(o, DeadLetter))
    assert reasons, "no dead letters: the noise does not reach the processor"
    flags = Counter(
        f
        for r in stream.records
        if isinstance(o := t.transform_reference(r), Curated)
        for f in decode(t.curated_schema, o.value[5:])["identity_flags"]
    )
    assert flags["BSN_FAILED_11_CHECK"] > 0
    sources = Counter(
        _reference_event(t, r)["person_pseudonym_source"]
        for r in stream.records[:3000]
        if not isinstance(t.transform_reference(r), DeadLetter)
    )
    assert {"SKN", "BSN", "NONE"} <= set(sources), sources


# -- encode -----------------------------------------------------------------------------------------
def _values(event: dict[str, Any], writer: ChainEventWriter) -> list[Any]:
    return [_plain(event[name]) for name in writer.names]


def test_encode_writes_fastavros_bytes_for_every_reference_event(stream: RawStream) -> None:
    t = _transformer(stream)
    writer = ChainEventWriter(t.curated_schema)
    compared = 0
    for record in stream.records:
        try:
            event = _reference_event(t, record)
        except RecordError:
            continue
        assert writer.encode(_values(event, writer)) == encode(t.curated_schema, event)
        compared += 1
    assert compared > 1500


EDGES: list[dict[str, Any]] = [
    {"identity_flags": [], "concepts": []},
    {"identity_flags": ["BSN_FAILED_11_CHECK", "X" * 9000], "sex": "é€𝄞", "amount_eur": -0.0},
    {"birth_year": -(2**31), "age_at_event": 2**31 - 1, "sanction_days": 0, "sanction_hours": -1},
    {"amount_eur": 1e308, "municipality_code": "", "crime_municipality_code": "GM" * 5000},
    {"event_time": datetime(1, 1, 1, tzinfo=UTC), "registration_time": datetime(9999, 12, 31, tzinfo=UTC)},
    {"event_time": datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC), "amount_eur": 12.345},
    {
        "concepts": [
            dict.fromkeys(
                ("vocabulary", "code", "label", "counting_unit", "source_code_system", "source_code"), "ß" * n
            )
            for n in (0, 1, 70, 9000)
        ]
    },
    {"case_pseudonym": None, "report_pseudonym": "", "person_pseudonym": None, "skn_pseudonym": None},
]


@pytest.mark.parametrize("change", EDGES)
def test_encode_writes_fastavros_bytes_for_edge_values(stream: RawStream, change: dict[str, Any]) -> None:
    t = _transformer(stream)
    writer = ChainEventWriter(t.curated_schema)
    base = next(
        e
        for r in stream.records
        if not isinstance(t.transform_reference(r), DeadLetter)
        for e in [_reference_event(t, r)]
    )
    event = {**base, **change}
    assert writer.encode(_values(event, writer)) == encode(t.curated_schema, event)


# -- decode -----------------------------------------------------------------------------------------
def _fast_decode(fast: FastPath, record: RawRecord) -> dict[str, Any] | None:
    """What the fast path reads from a record, or None where it hands the record back."""
    value = record.value
    assert value is not None
    reader = fast._reader(_schema_id(record), fast.transformer.writer_schema(_schema_id(record)))
    assert reader is not None
    try:
        return reader.read(value)
    except Exception:
        return None


def _spoilt(stream: RawStream, n: int, seed: int) -> list[RawRecord]:
    """Records with bytes flipped, cut short or added: many do not decode, some decode to other values."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        source = rng.choice(stream.records)
        data = bytearray(source.value or b"")
        how = rng.randrange(4)
        if how == 0:
            at = rng.randrange(5, len(data))
            data[at] = rng.randrange(256)
        elif how == 1:
            del data[rng.randrange(5, len(data)) :]
        elif how == 2:
            data += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
        else:
            for _ in range(3):
                data[rng.randrange(5, len(data))] = rng.choice((0x80, 0xFF, 0x01, 0x7F))
        out.append(source._replace(offset=100_000 + i, value=bytes(data)))
    return out


def test_decode_agrees_with_fastavros_logical_types_or_hands_back(stream: RawStream) -> None:
    t = _transformer(stream)
    assert t.fast is not None
    taken = Counter()
    for record in [*stream.records, *_spoilt(stream, 3000, seed=5)]:
        fast = _fast_decode(t.fast, record)
        writer = t.writer_schema(_schema_id(record))
        assert record.value is not None
        try:
            reference = decode(writer, record.value[5:])
        except RecordError:
            assert fast is None, f"the fast decode read a record the reference refuses: {record.value!r}"
            taken["refused"] += 1
            continue
        if fast is None:
            taken["handed back"] += 1
            continue
        assert fast == _plain(reference)
        taken["read"] += 1
    assert taken["read"] > len(stream.records) and taken["refused"] > 500, taken


def _readers(t: Transformer, stream: RawStream) -> dict[int, _Reader]:
    assert t.fast is not None
    readers = {}
    for schema_id, writer in stream.schemas.items():
        reader = t.fast._reader(schema_id, writer)
        assert reader is not None and reader.compiled is not None, writer["name"]  # every one compiles
        readers[schema_id] = reader
    return readers


def test_the_generated_reader_gives_the_plain_readers_values_or_hands_back(stream: RawStream) -> None:
    """The tuple ``_transform`` takes: from the generated reader, as from fastavro's dict (``values``)."""
    t = _transformer(stream)
    readers = _readers(t, stream)
    taken: Counter[str] = Counter()
    for record in [*stream.records, *_spoilt(stream, 3000, seed=6)]:
        reader = readers[_schema_id(record)]
        assert record.value is not None and reader.compiled is not None
        try:
            fast = reader.compiled(record.value)
        except Exception:
            fast = None
        try:
            reference = decode(reader.writer, record.value[5:])
        except RecordError:
            assert fast is None, f"the generated reader read a record the reference refuses: {record.value!r}"
            taken["refused"] += 1
            continue
        if fast is None:
            taken["handed back"] += 1
            continue
        assert fast == reader.values(_plain(reference))
        # fastavro's plain reader hands back events before 1970 itself; ``_transform`` does for this one
        assert _fast_decode(t.fast, record) is not None or fast[3] < 0  # type: ignore[arg-type]
        taken["read"] += 1
    assert taken["read"] > len(stream.records) and taken["refused"] > 500, taken


def test_without_the_generated_reader_the_transform_still_equals_the_reference(stream: RawStream) -> None:
    """fastavro's plain reader (for writer schemas the generator does not cover) gives the same events."""
    t = _transformer(stream)
    for reader in _readers(t, stream).values():
        reader.compiled = None
    fast_taken = 0
    for record in [*stream.records, *_spoilt(stream, 1500, seed=8)]:
        reference = t.transform_reference(record)
        assert t.fast is not None
        fast_only = t.fast(record)
        if fast_only is not None:
            fast_taken += 1
            _same(fast_only, reference)
        _same(t.transform(record), reference)
    assert fast_taken > 0.9 * len(stream.records)


# -- local dates ------------------------------------------------------------------------------------
def test_local_dates_by_the_hour_equal_the_zone_conversion(stream: RawStream) -> None:
    hours = HourCalendar()
    t = _transformer(stream)
    moments = [
        _plain(decode(t.writer_schema(_schema_id(r)), (r.value or b"")[5:])["metadata"]["event_time"])
        for r in stream.records
    ]
    # and every minute around each DST change and midnight of some years, both ways
    for year in (1970, 1977, 1996, 2024, 2026, 2038, 2099):
        for month, day in ((3, 25), (10, 25), (12, 31), (1, 1)):
            for sunday in range(7):
                base = datetime(year, month, day + sunday if day < 30 else day, tzinfo=UTC)
                start = int(base.timestamp() * 1000) - 3 * 3_600_000
                moments += [start + m * 60_000 for m in range(0, 6 * 60, 7)]
    for ms in moments:
        moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
        assert hours(ms)[1] == local_date(moment) == moment.astimezone(AMSTERDAM).date(), moment


def test_concepts_by_the_day_equal_the_terminologys_lookup_around_every_validity_bound(
    stream: RawStream,
) -> None:
    t = _transformer(stream)
    assert t.fast is not None
    terminology = t.terminology
    concepts_field = next(f for f in chain_event_avsc()["fields"] if f["name"] == "concepts")
    only_concepts = fastavro.parse_schema({"type": "record", "name": "C", "fields": [concepts_field]})
    codes = {(m.source_code_system, m.source_code) for ms in terminology._index.values() for m in ms}
    bounded = 0
    for system, code in sorted(codes):
        days = set()
        for m in terminology.mappings(system, code):
            days |= {m.valid_from - timedelta(days=1), m.valid_from}
            if m.valid_to is not None:
                days |= {m.valid_to - timedelta(days=1), m.valid_to}
                bounded += 1
        for day in days:
            fast = t.fast._concepts_of((system, code), day)
            try:
                expected = terminology.lookup(system, code, "v", day)
            except RecordError:
                assert fast is None, (system, code, day)
                continue
            assert fast == encode(only_concepts, {"concepts": expected}), (system, code, day)
    assert bounded > 0, "the shipped terminology has no mapping that ends: this test checks nothing"


# -- pseudonym cache --------------------------------------------------------------------------------
def test_pseudonym_cache_gives_the_pseudonymisers_answers(stream: RawStream) -> None:
    t = _transformer(stream)
    p = t.pseudonymiser
    cache = _PseudonymCache(capacity=64)  # small: it fills and starts afresh many times
    identifiers: list[tuple[str, Any]] = []
    for record in stream.records:
        try:
            event_raw = decode(t.writer_schema(_schema_id(record)), (record.value or b"")[5:])
        except RecordError:
            continue
        plan = t.plans[t.writer_schema(_schema_id(record))["name"]]
        from processors.transform import _at

        identifiers += [
            ("case", _at(event_raw, plan.case)),
            ("report", _at(event_raw, plan.report)),
            ("execution", _at(event_raw, plan.execution)),
            ("person", (_at(event_raw, plan.skn), _at(event_raw, plan.bsn))),
        ]
    identifiers += [
        ("case", "13-246712-15"),
        ("case", "13/246712-15"),
        ("case", "nonsense"),
        ("case", ""),
        ("report", "pl07b3 2026123456-1"),
        ("person", ("", "123456789")),
        ("person", (None, "")),
    ]
    identifiers += identifiers[:500]  # recurring ones, now from the cache
    for kind, value in identifiers:
        if kind == "person":
            person = p.person(*value)
            expected = (
                fastavro_union(person.pseudonym)
                + fastavro_string(person.source)
                + fastavro_union(person.skn)
                + fastavro_union(person.bsn)
                + fastavro_strings(person.flags)
            )
            assert cache.person(p, *value) == expected
            continue
        make = getattr(p, kind)
        try:
            want = make(value) if value else None
        except RecordError as exc:
            with pytest.raises(type(exc), match="must"):
                getattr(cache, kind)(p, value)
            continue
        assert getattr(cache, kind)(p, value) == (want, fastavro_union(want))
        assert len(cache) <= 64
    assert cache.hits > 500 and cache.misses > 500
    assert "13-246712" not in repr(cache) and "123456789" not in repr(cache)


def fastavro_union(value: str | None) -> bytes:
    return encode(
        fastavro.parse_schema(
            {"type": "record", "name": "U", "fields": [{"name": "v", "type": ["null", "string"]}]}
        ),
        {"v": value},
    )


def fastavro_string(value: str) -> bytes:
    return encode(
        fastavro.parse_schema({"type": "record", "name": "S", "fields": [{"name": "v", "type": "string"}]}),
        {"v": value},
    )


def fastavro_strings(values: tuple[str, ...]) -> bytes:
    return encode(
        fastavro.parse_schema(
            {
                "type": "record",
                "name": "A",
                "fields": [{"name": "v", "type": {"type": "array", "items": "string"}}],
            }
        ),
        {"v": list(values)},
    )


def test_the_cache_is_bounded_and_emptied_per_batch(stream: RawStream) -> None:
    t = _transformer(stream)
    assert t.fast is not None
    t.transform_batch(stream.records[:200])
    assert 0 < len(t.fast._pseudonyms) <= PSEUDONYM_CACHE
    assert len(t.fast._areas) > 1  # postcodes seen (their PC4 areas' municipality codes)
    for record in stream.records:
        t.transform(record)
    assert len(t.fast._pseudonyms) <= PSEUDONYM_CACHE
    assert len(t.fast._areas) <= PSEUDONYM_CACHE and len(t.fast._texts) <= PSEUDONYM_CACHE
    t.transform_batch([])
    assert len(t.fast._pseudonyms) == 0
    assert list(t.fast._areas) == [None]  # no postcode kept beyond its batch either
    assert "_pseudonyms" not in repr(t) and "PseudonymCache" not in repr(t)


# -- the whole transform ----------------------------------------------------------------------------
def test_whole_transform_equals_the_reference_on_every_partners_records(stream: RawStream) -> None:
    t = _transformer(stream)
    assert t.fast is not None
    paths: Counter[tuple[str, str]] = Counter()
    for record in stream.records:
        fast_only = t.fast(record)
        reference = t.transform_reference(record)
        _same(t.transform(record), reference)
        if fast_only is not None:
            _same(fast_only, reference)  # the fast path never curates what the reference dead-letters
        paths[record.topic, "fast" if fast_only is not None else "reference"] += 1
    for partner in PARTNERS:
        fast, slow = paths[f"raw.{partner}", "fast"], paths[f"raw.{partner}", "reference"]
        assert fast > 0.9 * (fast + slow), (partner, fast, slow)


def test_whole_transform_equals_the_reference_on_spoilt_records(stream: RawStream) -> None:
    t = _transformer(stream)
    assert t.fast is not None
    outcomes: Counter[str] = Counter()
    for record in _spoilt(stream, 4000, seed=9):
        reference = t.transform_reference(record)
        _same(t.transform(record), reference)
        outcomes[reference.reason if isinstance(reference, DeadLetter) else "curated"] += 1
    assert outcomes["curated"] > 200 and outcomes["undecodable"] > 500, outcomes


def _reencoded(stream: RawStream, change: Any, n: int = 40) -> list[RawRecord]:
    """Valid records decoded, changed in one value, and encoded again with their writer schema."""
    out = []
    for record in stream.records[:n]:
        writer = stream.writer_schema(_schema_id(record))
        raw = decode(writer, (record.value or b"")[5:])
        change(raw)
        out.append(record._replace(value=frame(_schema_id(record), encode(writer, raw))))
    return out


def _set_meta(name: str, value: Any) -> Any:
    return lambda raw: raw["metadata"].__setitem__(name, value)


UUID = uuid.UUID("6f1c9a4e-1111-5222-8333-944455556666")
CHANGES = {
    "event id upper case": _set_meta("event_id", str(UUID).upper()),
    "event id with braces": _set_meta("event_id", "{" + str(UUID) + "}"),
    "event id without hyphens": _set_meta("event_id", UUID.hex),
    "event before 1970": _set_meta("event_time", datetime(1938, 6, 1, 22, 50, tzinfo=UTC)),
    "event at the epoch": _set_meta("event_time", datetime(1970, 1, 1, tzinfo=UTC)),
    "event in 2199": _set_meta("event_time", datetime(2199, 12, 31, 23, tzinfo=UTC)),
    "event near year 9999": _set_meta("event_time", datetime(9999, 12, 31, 23, tzinfo=UTC)),
    "registration in year 1": _set_meta("registration_time", datetime(1, 1, 2, tzinfo=UTC)),
    "event at a DST change": _set_meta("event_time", datetime(2025, 3, 30, 0, 59, 59, 999000, tzinfo=UTC)),
    "event at local midnight": _set_meta("event_time", datetime(2025, 10, 25, 22, 0, tzinfo=UTC)),
    "empty source system": _set_meta("source_system", ""),
    "non-ASCII source system": _set_meta("source_system", "BVH–Ω𝄞"),
}


@pytest.mark.parametrize("name", list(CHANGES))
def test_whole_transform_equals_the_reference_on_changed_values(stream: RawStream, name: str) -> None:
    t = _transformer(stream)
    for record in _reencoded(stream, CHANGES[name]):
        reference = t.transform_reference(record)
        if name == "event near year 9999":  # no Amsterdam date: a dead letter, never a crash of the runner
            assert isinstance(reference, DeadLetter) and reference.reason == "event-time-out-of-range"
        _same(t.transform(record), reference)
        if name == "event before 1970":  # Amsterdam was +01:20 then: no dates by the UTC hour
            assert t.fast is not None and t.fast(record) is None


def test_whole_transform_equals_the_reference_on_out_of_range_raw_ints(stream: RawStream) -> None:
    """Longs a datetime cannot hold: the reference dead-letters them, the fast path must not curate."""
    t = _transformer(stream)
    record = next(r for r in stream.records if isinstance(t.transform_reference(r), Curated))
    writer = stream.writer_schema(_schema_id(record))
    from ketenstroom.contract.codec import without_logical_types

    plain = without_logical_types(writer)
    raw = fastavro.schemaless_reader(io.BytesIO((record.value or b"")[5:]), plain, None)
    for field, value in (
        ("event_time", 2**62),
        ("event_time", -(2**62)),
        ("registration_time", 2**60),
        ("delivery_time", -(2**50)),
    ):
        changed = {**raw, "metadata": {**raw["metadata"], field: value}}
        spoilt = record._replace(value=frame(_schema_id(record), encode(plain, changed)))
        reference = t.transform_reference(spoilt)
        assert isinstance(reference, DeadLetter) and reference.reason == "undecodable"
        assert t.fast is not None and t.fast(spoilt) is None
        _same(t.transform(spoilt), reference)


def test_a_curated_schema_of_another_shape_means_no_fast_path(stream: RawStream) -> None:
    t = _transformer(stream)
    other = fastavro.parse_schema(
        {"type": "record", "name": "X", "fields": [{"name": "a", "type": "string"}]}
    )
    t2 = Transformer(
        pseudonymiser=Pseudonymiser(b"k" * 32, "k1"),
        terminology=t.terminology,
        municipalities=t.municipalities,
        plans=t.plans,
        writer_schema=t.writer_schema,
        curated_schema_id=1,
        curated_schema=other,
    )
    assert t2.fast is None and t.fast is not None


def test_a_writer_schema_of_another_shape_takes_the_reference_path(stream: RawStream) -> None:
    t = _transformer(stream)
    record = stream.records[0]
    writer = stream.writer_schema(_schema_id(record))
    plan = t.plans[writer["name"]]
    assert _Reader(writer, plan, writer["name"], b"") is not None
    import copy

    odd = copy.deepcopy(writer)
    meta = odd["fields"][0]["type"]
    for field in meta["fields"]:
        if field["name"] == "event_time":
            field["type"] = {"type": "long", "logicalType": "timestamp-micros"}
    from processors.fastpath import Unsupported

    with pytest.raises(Unsupported):
        _Reader(odd, plan, writer["name"], b"")


def test_the_pseudonymisers_mac_is_hmac_sha256_for_keys_of_every_length() -> None:
    """Its inner and outer states are hashed once per key; the MAC stays the standard library's HMAC
    (keys shorter than, as long as and longer than SHA-256's 64-byte block, which is hashed first)."""
    import hashlib
    import hmac

    rng = random.Random(3)
    for length in (0, 1, 32, 63, 64, 65, 200):
        p = Pseudonymiser(bytes(rng.randrange(256) for _ in range(length)), "k1")
        for domain, value in (
            ("case:parketnummer", "13-246712-15"),
            ("person:bsn", "123456782"),
            ("x", "é𝄞"),
        ):
            before = hmac.new(p.key, f"{domain}\x1f{value}".encode(), hashlib.sha256).hexdigest()
            assert p._mac(domain, value) == before, length
            assert p._mac(domain, value) == before  # the shared states are not changed by a MAC
    assert "_inner" not in repr(p) and p.key.hex() not in repr(p)
