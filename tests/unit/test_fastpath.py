"""The fast path may only accept what the reference path accepts, and must then write the same bytes."""

from __future__ import annotations

import io
import itertools
import json
import random
import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import fastavro
import pytest
from fastavro.write import LOGICAL_WRITERS

from ketenstroom.catalogue import catalogue_at
from ketenstroom.contract import load_schemas
from ketenstroom.contract.codec import encode
from ketenstroom.contract.ids import EVENT_NAMESPACE, event_id, event_id_bytes, format_uuid
from ketenstroom.contract.wire import header
from ketenstroom.errors import InputRowError
from ketenstroom.settings import CatalogueSettings
from producers.config import PartnerMapping, load_mapping
from producers.fastpath import RowPlan
from producers.publish import build_reference
from producers.reader import read_rows
from producers.rows import AMSTERDAM, leaves, parse_moment
from producers.steps import moments, string_bytes, zigzag
from synthetic import generate_chain
from tests.unit.test_producer_rows import GOOD

PARTNERS = catalogue_at(CatalogueSettings().dir).names  # the partners the catalogue declares

SCHEMAS = load_schemas(CatalogueSettings().schema_dir)
MAPPINGS = {p: load_mapping(p, SCHEMAS) for p in PARTNERS}
HEADER = header(7)
NOW = datetime(2026, 11, 28, 12, 0, 0, 987654, tzinfo=UTC)
NOW_MS = 1_795_867_200_987
PLANS = {p: {n: RowPlan.compile(p, r, HEADER) for n, r in m.records.items()} for p, m in MAPPINGS.items()}


def _reference(mapping: PartnerMapping, row: dict[str, str], line: int) -> tuple[bytes, bytes, bytes] | None:
    try:
        record = mapping.for_row(row, line)
        missing = record.missing_columns(list(row))
        avro, key, eid = build_reference(mapping, record, row, line, missing=missing, delivery_time=NOW)
    except InputRowError:
        return None
    return HEADER + encode(record.schema.parsed, avro), key, eid


def _fast(partner: str, row: dict[str, str], line: int) -> tuple[bytes, bytes, bytes] | None:
    mapping = MAPPINGS[partner]
    try:
        record = mapping.for_row(row, line)
    except InputRowError:
        return None
    name = next(n for n, r in mapping.records.items() if r is record)
    plan = PLANS[partner][name]
    return None if plan is None else plan.encode(row, NOW_MS)


def _agree(partner: str, row: dict[str, str], line: int = 2) -> str:
    """'fast' or 'reference' (which path the row took); fails if the fast path accepts differently."""
    fast = _fast(partner, row, line)
    reference = _reference(MAPPINGS[partner], row, line)
    if fast is None:
        return "reference"
    assert reference is not None, f"fast path accepted a row the model rejects: {row}"
    assert fast == reference, f"fast path wrote other bytes, key or id than the reference for {row}"
    return "fast"


def test_delivery_time_fixture_is_the_same_instant() -> None:
    assert (NOW - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1) == NOW_MS


def test_every_record_type_of_every_partner_has_a_plan_covering_all_leaves() -> None:
    for partner, mapping in MAPPINGS.items():
        for name, record in mapping.records.items():
            plan = PLANS[partner][name]
            assert plan is not None, f"{partner}/{name} has no fast path"
            assert plan.paths == [leaf.path for leaf in leaves(record.schema.schema)]


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("fastpath")
    report = generate_chain(
        out,
        cases=600,
        seed=23,
        noise=0.15,
        formats={"om": "jsonl", "cjib": "csv"},
        start=date(2023, 1, 1),
        as_of=date(2026, 11, 1),  # before NOW: every event is in the past, as in a real delivery
    )
    return {p: Path(report.partners[p].path) for p in PARTNERS}


def test_fast_path_agrees_with_the_reference_on_every_generated_row(exports: dict[str, Path]) -> None:
    taken: Counter[tuple[str, str]] = Counter()
    for partner, path in exports.items():
        for line, row in read_rows(path):
            if isinstance(row, dict):
                taken[partner, _agree(partner, row, line)] += 1
    for partner in PARTNERS:
        fast, slow = taken[partner, "fast"], taken[partner, "reference"]
        # mistakes (15%) take the reference path; so do rechtspraak's blank booleans, nothing else
        assert fast > 0.7 * (fast + slow), (partner, fast, slow)
    assert sum(n for (_, path), n in taken.items() if path == "fast") > 2000


def test_fast_bytes_decode_to_the_reference_record() -> None:
    record = MAPPINGS["om"].records["BESLISSING"]
    fast = _fast("om", GOOD, 2)
    assert fast is not None
    avro, key, eid = build_reference(MAPPINGS["om"], record, GOOD, 2, missing=[], delivery_time=NOW)
    decoded = fastavro.schemaless_reader(io.BytesIO(fast[0][5:]), record.schema.parsed, None)
    expected = fastavro.schemaless_reader(
        io.BytesIO(encode(record.schema.parsed, avro)), record.schema.parsed, None
    )
    assert decoded == expected
    assert str(decoded["metadata"]["event_id"]) == event_id("om", "OM-B-1", 1)
    assert decoded["decision"] == {
        "code_system": "OM.AFDOENING",
        "code": "DAGV",
        "code_system_version": "2024",
    }
    assert (fast[1], fast[2]) == (key, eid) == (b"13-246712-26", uuid.UUID(event_id("om", "OM-B-1", 1)).bytes)


# Values that are valid but unusual, or invalid in ways a quick check could miss. For each, the fast
# path must either write the reference bytes or hand the row to the reference path.
EDGE_CASES = (
    [
        ("versie", v)
        for v in [
            "1",
            "2",
            "01",
            " 1",
            "1 ",
            "+1",
            "-1",
            "0",
            "1_0",
            "1.0",
            "٣",
            "2147483647",
            "2147483648",
            "",
        ]
    ]
    + [
        ("parketnummer", v)
        for v in [
            "13/246712-26",
            " 13-246712-26 ",
            "13-246712-26\u00a0",
            "\x1c13-246712-26",
            "13 246712 26",
            "",
        ]
    ]
    + [
        ("bsn", v)
        for v in [
            "123456782",
            "12345678",
            "1234.56.782",
            "123 456 782",
            "12345678901",
            "١٢٣٤٥٦٧٨٢",
            " ",
            "\t",
        ]
    ]
    + [("geslacht", v) for v in ["M", "m", "man", "VROUW", "x", " V ", "Q", "\x1cM"]]
    + [("pv_nummer", v) for v in ["pl07b3 2026123456-1", "PL07B3-2026123456 - 1", "PL07B3", "\u3000"]]
    + [
        ("geboortedatum", v)
        for v in [
            "17-05-1990",
            "17/05/1990",
            "1990-05-17",
            "01-01-1900",
            "29-02-2024",
            "29-02-2023",
            "17-5-1990",
            " ",
        ]
    ]
    + [
        ("beslisdatum", v)
        for v in [
            "02-03-2026 10:15",
            "02-03-2026 10:15:59",
            "02-03-2026",
            "2026-03-02T10:15:00+01:00",
            "2026-03-02T10:15:00.123456",
            "2026-03-02T10:15:00Z",
            "29-03-2026 02:30",  # does not exist in Amsterdam (clocks jump 02:00 -> 03:00)
            "25-10-2026 02:30",  # happens twice in Amsterdam
            "31-12-1969 23:59",
            "02-03-2026 24:00",
            "",
        ]
    ]
    + [("beslissing", v) for v in ["DAGV", " DAGV", "dagv", "", "ÉÉN", "a\ud800b"]]
    + [("sepotgrond", v) for v in ["02", "", "  "]]
    + [("recordnummer", v) for v in ["OM-B-9", "", "OM-B-9 ", "\u00a0OM-B-9", "é"]]
    + [("postcode", v) for v in ["1011 AB", "", "1011AB\x1f", "\ud83d"]]
)


@pytest.mark.parametrize(("column", "value"), EDGE_CASES)
def test_fast_path_on_edge_values(column: str, value: str) -> None:
    _agree("om", {**GOOD, column: value})


def test_plain_edge_values_still_take_the_fast_path() -> None:
    for column, value in [("versie", "2"), ("geslacht", "vrouw"), ("bsn", "12345678"), ("sepotgrond", "")]:
        assert _agree("om", {**GOOD, column: value}) == "fast", (column, value)


def test_a_row_without_a_mapped_column_is_left_to_the_reference_path() -> None:
    row = {k: v for k, v in GOOD.items() if k != "postcode"}
    assert _fast("om", row, 2) is None
    with pytest.raises(InputRowError) as info:
        build_reference(
            MAPPINGS["om"],
            MAPPINGS["om"].records["BESLISSING"],
            row,
            2,
            missing=["postcode"],
            delivery_time=NOW,
        )
    assert (info.value.field, info.value.reason) == ("postcode", "missing-column")


def test_json_lines_values_with_surrogates_are_refused_by_the_reader(tmp_path: Path) -> None:
    """A lone surrogate is no text: the reader rejects the row (neither path sees it), naming the field."""
    path = tmp_path / "om.jsonl"
    path.write_text(json.dumps({**GOOD, "postcode": "\ud800"}) + "\n", encoding="utf-8")
    [(line, row)] = list(read_rows(path))
    assert isinstance(row, InputRowError) and line == 1
    assert (row.reason, row.field, row.value) == ("bad-encoding", "postcode", "\\ud800")


@pytest.mark.parametrize(
    "n", [0, 1, -1, 63, 64, -64, -65, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63), 1_795_867_200_987]
)
def test_zigzag_matches_fastavro(n: int) -> None:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, "long", n)
    assert zigzag(n) == out.getvalue()


@pytest.mark.parametrize(
    ("partner", "source", "version"),
    [("om", "OM-B-1", 1), ("politie", "PL-ñ-∑-7", 12), ("halt", "", 2**31 - 1), ("dji", "a|b", 3)],
)
def test_event_id_bytes_are_uuid5(partner: str, source: str, version: int) -> None:
    expected = uuid.uuid5(EVENT_NAMESPACE, f"{partner}|{source}|{version}")
    raw = event_id_bytes(partner, source, version)
    assert raw == expected.bytes
    assert format_uuid(raw) == str(expected) == event_id(partner, source, version)


def _moment_strings() -> list[str]:
    """Every minute of the days Amsterdam's clocks changed (and the days either side) in a run of
    years with odd historic offsets and modern EU rules, plus a seeded spread over two centuries."""
    rng = random.Random(41)
    days: set[date] = set()
    for year in [*range(1916, 1946), 1977, 1996, 2026, 2037, 2099]:
        start = datetime(year, 1, 1, tzinfo=AMSTERDAM)
        offsets = [(start + timedelta(hours=h)).utcoffset() for h in range(0, 366 * 24, 6)]
        for h, (a, b) in enumerate(itertools.pairwise(offsets)):
            if a != b:
                day = (start + timedelta(hours=6 * h)).date()
                days.update({day - timedelta(days=1), day, day + timedelta(days=1)})
    out = [f"{d:%d-%m-%Y} {m // 60:02d}:{m % 60:02d}" for d in sorted(days) for m in range(0, 1440, 7)]
    out += [
        f"{date(1900, 1, 1) + timedelta(days=rng.randrange(73000)):%d/%m/%Y} "
        f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}"
        for _ in range(5000)
    ]
    return [
        *out,
        "31-02-2026 10:00",
        "02-03-2026 24:00",
        "02-03-2026 10:60",
        "02-03-2026",
        "٠٢-٠٣-٢٠٢٦ ١٠:١٥",
    ]


@pytest.mark.parametrize("logical", ["timestamp-millis", "timestamp-micros"])
def test_moments_by_local_hour_equal_the_reference_parse(logical: str) -> None:
    fast = moments(logical)
    to_number = LOGICAL_WRITERS[f"long-{logical}"]
    checked = 0
    for text in _moment_strings():
        try:
            expected = to_number(parse_moment(text), {})
        except ValueError:
            with pytest.raises(ValueError):
                fast(text)
            continue
        assert fast(text) == expected, text
        checked += 1
    assert checked > 20_000


def test_zigzag_matches_fastavro_across_every_width() -> None:
    rng = random.Random(7)
    values = [s * ((1 << bits) + d) for bits in range(64) for d in (-1, 0, 1) for s in (1, -1)]
    values += [rng.randrange(-(2**63), 2**63) >> rng.randrange(64) for _ in range(3000)]
    for n in values:
        if -(2**63) <= n < 2**63:
            out = io.BytesIO()
            fastavro.schemaless_writer(out, "long", n)
            assert zigzag(n) == out.getvalue(), n


@pytest.mark.parametrize("size", [0, 1, 63, 64, 8191, 8192, 20_000])
def test_string_lengths_match_fastavro(size: int) -> None:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, "string", "x" * size)
    assert string_bytes("x" * size) == out.getvalue()
