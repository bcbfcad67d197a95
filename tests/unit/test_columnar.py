"""The sink's column-wise decoder (``sinks.columnar``) against the reference path (fastavro, one dict a
record, then ``pyarrow.Table.from_pylist``): equal Arrow tables on the curated events of every partner's
generated export (with noise), and never a record accepted that the reference path rejects."""

from __future__ import annotations

import copy
import random
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import pyarrow as pa
import pytest
from confluent_kafka import Message

from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.catalogue import catalogue_at
from ketenstroom.catalogue.terminology import load_terminology
from ketenstroom.contract import load_schemas
from ketenstroom.contract.codec import decode, encode, without_logical_types
from ketenstroom.contract.wire import frame
from ketenstroom.errors import DecodeError, InputRowError, RecordError
from ketenstroom.settings import CatalogueSettings, KafkaSettings, RegistrySettings
from processors.pseudonym import Pseudonymiser
from processors.transform import Transformer, load_municipalities, plans
from producers.config import load_mapping
from producers.publish import build_reference
from producers.reader import read_rows
from sinks.columnar import Batch, Plan, decode_table
from sinks.parquet import EVENT_COLUMNS, SCHEMA, write_table
from sinks.runner import Sink
from synthetic import generate_chain

PATHS = CatalogueSettings()
PARTNERS = catalogue_at(PATHS.dir).names
SCHEMAS = load_schemas(PATHS.schema_dir)
CHAIN = SCHEMAS["nl.ketenstroom.curated.ChainEvent"].parsed
PLAIN = without_logical_types(CHAIN)
NOW = datetime(2029, 1, 2, 12, tzinfo=UTC)


def _reference(writer: Any, payloads: list[bytes]) -> pa.Table:
    return pa.Table.from_pylist(
        [decode(without_logical_types(writer), p) for p in payloads], schema=EVENT_COLUMNS
    )


def _fast(writer: Any, payloads: list[bytes]) -> tuple[pa.Table, np.ndarray]:
    found = decode_table(without_logical_types(writer), payloads, EVENT_COLUMNS)
    assert found is not None, "the ChainEvent schema has a column-wise plan"
    return found


@pytest.fixture(scope="module")
def curated(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, list[bytes]], int]:
    """ChainEvent payloads per partner, through publish's reference model and the processor's transform,
    from a generated export with noise (the rows publish refuses never reach the curated topic)."""
    out = tmp_path_factory.mktemp("columnar")
    generate_chain(out, cases=250, seed=5, noise=0.08, as_of=date(2029, 1, 1))
    chain = SCHEMAS["nl.ketenstroom.curated.ChainEvent"]
    transformer = Transformer(
        pseudonymiser=Pseudonymiser(b"c" * 32, "k1"),
        terminology=load_terminology(PATHS.terminology_dir),
        municipalities=load_municipalities(PATHS.terminology_dir / "pc4-gemeente.csv"),
        plans=plans(catalogue_at(PATHS.dir)),
        writer_schema=lambda _id: None,
        curated_schema_id=1,
        curated_schema=chain.parsed,
        clock=lambda: NOW,
    )
    payloads: dict[str, list[bytes]] = {}
    refused = 0
    for partner in PARTNERS:
        mapping = load_mapping(partner, SCHEMAS)
        [path] = [p for p in out.iterdir() if p.stem == partner and p.suffix in (".csv", ".jsonl")]
        for line, row in read_rows(path):
            try:
                if isinstance(row, InputRowError):
                    raise row
                record = mapping.for_row(row, line)
                avro, _k, _e = build_reference(mapping, record, row, line, missing=[], delivery_time=NOW)
                parsed = record.schema.parsed
                event = transformer.to_chain_event(decode(parsed, encode(parsed, avro)), parsed)
            except (InputRowError, RecordError):
                refused += 1
                continue
            payloads.setdefault(partner, []).append(encode(CHAIN, event))
    return payloads, refused


def test_every_partners_curated_events_decode_to_the_reference_table(
    curated: tuple[dict[str, list[bytes]], int],
) -> None:
    payloads, refused = curated
    assert set(payloads) == set(PARTNERS), "every partner's events reach the sink"
    assert refused > 20, "the noise spoiled rows (refused before the curated topic)"
    every = [p for partner in PARTNERS for p in payloads[partner]]
    for batch in [*payloads.values(), every]:
        table, bad = _fast(CHAIN, batch)
        assert len(bad) == 0
        reference = _reference(CHAIN, batch)
        assert table.equals(reference)
    whole = _reference(CHAIN, every)
    # the data exercise what the decoder reads: concepts (arrays of records), flags, nulls, doubles
    assert whole["concepts"].combine_chunks().value_lengths().to_numpy().max() >= 2
    assert whole["amount_eur"].null_count < len(whole) and whole["case_pseudonym"].null_count > 0
    assert any(len(f) for f in whole["identity_flags"].to_pylist())


def test_single_records_and_empty_batches_decode_like_the_reference(
    curated: tuple[dict[str, list[bytes]], int],
) -> None:
    payloads, _ = curated
    for one in ([payloads[PARTNERS[0]][0]], []):
        table, bad = _fast(CHAIN, one)
        assert len(bad) == 0 and table.equals(_reference(CHAIN, one))


def _mutations(payload: bytes, rng: random.Random) -> list[bytes]:
    cut = rng.randrange(1, len(payload))
    at = rng.randrange(len(payload))
    flipped = bytearray(payload)
    flipped[at] ^= 1 << rng.randrange(8)
    spliced = bytearray(payload)
    spliced[at : at + 2] = bytes([rng.choice([0x7F, 0x80, 0xFF, 0x01, 0x03, 0x05]), rng.randrange(256)])
    return [
        payload[:cut],  # truncated
        payload + b"\x00",  # trailing bytes
        payload + payload[:cut],  # trailing record fragment
        bytes(flipped),
        bytes(spliced),
        payload[:at] + b"\xff\xfe" + payload[at + 2 :],  # invalid UTF-8 where a string is
        payload[:at] + b"\xff" * 11 + payload[at:],  # a varint longer than 64 bits
        b"",
    ]


def test_hostile_bytes_are_never_accepted_unless_the_reference_reads_them_the_same(
    curated: tuple[dict[str, list[bytes]], int],
) -> None:
    payloads, _ = curated
    rng = random.Random(17)
    good = [p for partner in PARTNERS for p in payloads[partner][:40]]
    hostile = [m for p in good for m in _mutations(p, rng)]
    batch = [*good, *hostile]
    rng.shuffle(batch)
    plan = Plan.compile(PLAIN)
    assert plan is not None
    accepted, bad_rows = plan.table(Batch.of(batch), EVENT_COLUMNS)
    bad = np.zeros(len(batch), dtype=bool)
    bad[bad_rows] = True
    seen = {"refused": 0, "decoded": 0}
    for i, payload in enumerate(batch):
        try:
            decode(PLAIN, payload)
        except DecodeError:
            seen["refused"] += 1
            assert bad[i], f"the fast path accepted a record the reference path rejects: {payload!r}"
            continue
        seen["decoded"] += 1
    assert seen["refused"] > len(hostile) // 2
    # the records accepted are exactly the reference's rows of them
    kept = [p for i, p in enumerate(batch) if not bad[i]]
    assert len(kept) > len(good), "some mutations are still valid records (a flipped letter)"
    assert accepted.equals(_reference(CHAIN, kept))


def test_schema_evolution_missing_and_extra_fields_as_the_reference(
    curated: tuple[dict[str, list[bytes]], int],
) -> None:
    payloads, _ = curated
    events = [decode(CHAIN, p) for p in payloads["om"][:50]]
    writer = copy.deepcopy(SCHEMAS["nl.ketenstroom.curated.ChainEvent"].schema)
    writer["fields"] = [f for f in writer["fields"] if f["name"] != "sex"]
    writer["fields"].append({"name": "extra", "type": ["null", "long"], "default": None})
    parsed = fastavro.parse_schema(writer, _force=True)
    for n, e in enumerate(events):
        e["extra"] = n if n % 2 else None
    encoded = [encode(parsed, e) for e in events]
    table, bad = _fast(parsed, encoded)
    assert len(bad) == 0 and table.equals(_reference(parsed, encoded))
    assert table["sex"].null_count == len(events)
    enum = {
        "type": "record",
        "name": "E",
        "fields": [{"name": "e", "type": {"type": "enum", "name": "K", "symbols": ["A"]}}],
    }
    assert Plan.compile(fastavro.parse_schema(enum)) is None, "unknown types take the reference path"


def _messages(payloads: list[bytes]) -> list[Message]:
    framed = [frame(11, p) for p in payloads]
    framed[3] = b"\x07not avro"  # bad magic byte
    framed[5] = frame(11, payloads[5] + b"\x00")  # trailing bytes
    framed[8] = frame(99, payloads[8])  # a schema id the registry does not know
    return [Message(topic="c", partition=n % 3, offset=1000 + n, value=v) for n, v in enumerate(framed)]


def test_the_sink_stages_the_same_rows_and_rejects_either_way(
    tmp_path: Path, curated: tuple[dict[str, list[bytes]], int]
) -> None:
    payloads, _ = curated
    every = [p for partner in PARTNERS for p in payloads[partner]]
    messages = _messages(every)
    staged: dict[bool, dict[str, bytes]] = {}
    rejects: dict[bool, list[str]] = {}
    for columnar in (True, False):
        store = ObjectStore(f"file://{tmp_path / str(columnar)}")
        sink = Sink(
            kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"), registry=RegistrySettings(), store=store
        )
        sink.registry._writers[11] = CHAIN

        def unknown(schema_id: int, real: Any = sink.registry.writer_schema) -> Any:
            if schema_id == 99:
                raise DecodeError("schema id 99 is unknown", reason="unknown-schema-id")
            return real(schema_id)

        sink.registry.writer_schema = unknown  # type: ignore[method-assign]
        try:
            if columnar:
                sink._add_batch(messages)
            else:
                for m in messages:
                    sink._add(m.partition() or 0, m.offset() or 0, m.value())
            sink._convert()
            staged[columnar] = {
                period: write_table(pa.concat_tables(tables).cast(SCHEMA), sink._schema_ids[period])
                for period, tables in sorted(sink._buffers.items())
            }
            assert sink.report.records == len(messages) and sink.report.undecodable == 3
            assert sink._next == {
                p: 1000 + max(n for n in range(len(messages)) if n % 3 == p) + 1 for p in range(3)
            }
        finally:
            sink.loop.close()
            sink.registry.close()
        rejects[columnar] = sorted(store.list("rejects/"))
    assert len(staged[True]) > 3, "the events span several periods"
    # same periods, same bytes: the rows of the three bad records are not in either
    assert staged[True] == staged[False]
    assert rejects[True] == rejects[False] and len(rejects[True]) == 3
