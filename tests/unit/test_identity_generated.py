"""Generated exports with identity noise, through the producer's and the processor's own code in-process:
the persons the sink's linking finds are the generator's true persons."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ketenstroom.calendar import period_code
from ketenstroom.catalogue import catalogue_at
from ketenstroom.catalogue.terminology import load_terminology
from ketenstroom.contract import load_schemas
from ketenstroom.contract.codec import decode, encode, without_logical_types
from ketenstroom.contract.scanner import scan_all
from ketenstroom.errors import InputRowError
from ketenstroom.identity import PACKED, Identities, components, link_evidence, unpack
from ketenstroom.settings import CatalogueSettings
from processors.pseudonym import Pseudonymiser
from processors.transform import Transformer, load_municipalities, plans
from producers.config import load_mapping
from producers.publish import build_reference
from producers.reader import read_rows
from sinks.microdata import chain_table, person_table
from sinks.parquet import to_table
from synthetic import IdentityNoise, generate_chain

PATHS = CatalogueSettings()
PARTNERS = catalogue_at(PATHS.dir).names
SCHEMAS = load_schemas(PATHS.schema_dir)
NOW = datetime(2029, 1, 2, 12, tzinfo=UTC)  # the delivery: after every generated event
CHAIN_EVENT = SCHEMAS["nl.ketenstroom.curated.ChainEvent"].parsed
PLAIN = without_logical_types(CHAIN_EVENT)
AS_OF = date(2029, 1, 1)  # every case followed to its end, whatever day the test runs
NOISE = IdentityNoise(police_without_skn=0.2, bsn_only_persons=0.1, conflicts=0.01)


def _transformer() -> Transformer:
    chain = SCHEMAS["nl.ketenstroom.curated.ChainEvent"]
    return Transformer(
        pseudonymiser=Pseudonymiser(b"g" * 32, "k1"),
        terminology=load_terminology(PATHS.terminology_dir),
        municipalities=load_municipalities(PATHS.terminology_dir / "pc4-gemeente.csv"),
        plans=plans(catalogue_at(PATHS.dir)),
        writer_schema=lambda _id: None,
        curated_schema_id=1,
        curated_schema=chain.parsed,
        clock=lambda: NOW,
    )


def _curated(out: Path) -> list[dict[str, Any]]:
    """Every export row as the processor curates it (publish's validation, then the transform)."""
    transformer = _transformer()
    events = []
    for partner in PARTNERS:
        mapping = load_mapping(partner, SCHEMAS)
        [path] = [p for p in out.iterdir() if p.stem == partner and p.suffix in (".csv", ".jsonl")]
        for line, row in read_rows(path):
            assert not isinstance(row, InputRowError)
            record = mapping.for_row(row, line)
            avro, _key, _eid = build_reference(mapping, record, row, line, missing=[], delivery_time=NOW)
            parsed = record.schema.parsed
            event = transformer.to_chain_event(decode(parsed, encode(parsed, avro)), parsed)
            period = period_code(event["event_time"])
            event = decode(PLAIN, encode(CHAIN_EVENT, event))  # as the sink reads the curated topic
            event["period"] = period
            events.append(event)
    return events


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], list[dict[str, Any]], Path]:
    out = tmp_path_factory.mktemp("identity")
    report = generate_chain(out, cases=1500, seed=23, identity=NOISE, as_of=AS_OF)
    return report.identity, _curated(out), out


def test_resolved_persons_are_the_true_persons_and_conflicts_are_flagged_not_merged(
    generated: tuple[dict[str, Any], list[dict[str, Any]], Path],
) -> None:
    truth, events, _out = generated
    table = to_table(events)
    sources = table["person_pseudonym_source"].cast("string")
    assert pc.sum(pc.equal(sources, "BSN")).as_py() > 100, "the noise gives many BSN-only records"
    assert truth["conflicts"] >= 2
    identities = Identities.from_events(table)
    resolved = identities.person_column(table)
    persons = pc.unique(resolved.filter(pc.is_valid(resolved)))
    # Stated: every true person is one resolved person, except those delivered both by SKN only and by
    # BSN only and never with both (no evidence can join them: two persons each); the conflicting pairs
    # are flagged and kept apart, so they take nothing off. Merging them blindly would give one person
    # fewer per conflict; the processor's own SKN-else-BSN pseudonyms count every BSN-only person twice.
    assert len(persons) == truth["persons"] + truth["unlinkable"]
    assert identities.conflicts == truth["conflicts"]
    assert pc.sum(identities.is_conflicted(persons)).as_py() == 2 * truth["conflicts"]
    # a blind merge (one person per connected component) would count one person fewer per conflict
    nodes = pc.unique(
        pa.concat_arrays([table[c].combine_chunks() for c in ("skn_pseudonym", "bsn_pseudonym")])
    )
    nodes = nodes.filter(pc.is_valid(nodes))
    evidence = link_evidence(table)
    left = pc.index_in(unpack(evidence["skn_pseudonym"]), value_set=nodes).to_numpy()
    right = pc.index_in(unpack(evidence["bsn_pseudonym"]), value_set=nodes).to_numpy()
    blind = len(np.unique(components(len(nodes), left, right)))
    assert blind == len(persons) - truth["conflicts"]
    unlinked = pc.unique(table["person_pseudonym"].filter(pc.is_valid(table["person_pseudonym"])))
    assert len(unlinked) > len(persons) + 50


def test_no_raw_identifier_in_curated_events_or_link_state(
    generated: tuple[dict[str, Any], list[dict[str, Any]], Path],
) -> None:
    _truth, events, out = generated
    scanned, findings = scan_all(events)
    assert scanned == len(events) and findings == []
    raw: set[str] = set()
    for path in out.iterdir():
        if path.suffix == ".csv":
            with path.open(encoding="cp1252" if path.stem == "politie" else "utf-8-sig", newline="") as fh:
                delimiter = "," if path.stem == "rechtspraak" else ";"
                for row in csv.DictReader(fh, delimiter=delimiter):
                    raw |= {row[c] for c in ("skn", "bsn") if row.get(c)}
        elif path.suffix == ".jsonl":
            for text in path.read_text(encoding="utf-8").splitlines():
                row = json.loads(text)
                raw |= {str(row[c]) for c in ("skn", "bsn") if row.get(c)}
    assert len(raw) > 1000
    packed = link_evidence(to_table(events))
    # the processor's pseudonyms are HMAC hex: the link state holds their 32 bytes, nothing else
    assert packed.schema.field("skn_pseudonym").type == packed.schema.field("bsn_pseudonym").type == PACKED
    evidence = packed.set_column(0, "skn_pseudonym", unpack(packed["skn_pseudonym"])).set_column(
        1, "bsn_pseudonym", unpack(packed["bsn_pseudonym"])
    )
    values = set(evidence["skn_pseudonym"].to_pylist()) | set(evidence["bsn_pseudonym"].to_pylist())
    assert evidence.num_rows > 400 and all(len(v) == 64 for v in values)
    text = json.dumps(evidence.to_pylist(), default=str)
    assert not [v for v in raw if v in text], "a raw SKN or BSN in the link evidence"
    scanned, findings = scan_all(evidence.to_pylist())
    assert findings == []


def test_identity_noise_changes_identifiers_only(tmp_path: Path) -> None:
    plain = generate_chain(tmp_path / "plain", cases=400, seed=4, identity=IdentityNoise.none(), as_of=AS_OF)
    noisy = generate_chain(tmp_path / "noisy", cases=400, seed=4, identity=NOISE, as_of=AS_OF)
    assert plain.chain == noisy.chain
    assert {p: r.rows_written for p, r in plain.partners.items()} == {
        p: r.rows_written for p, r in noisy.partners.items()
    }
    assert plain.identity["persons"] == noisy.identity["persons"] > 100
    assert plain.identity["conflicts"] == 0 < noisy.identity["conflicts"]
    police = {}
    for name in ("plain", "noisy"):
        with (tmp_path / name / "politie.csv").open(encoding="cp1252", newline="") as fh:
            police[name] = list(csv.DictReader(fh, delimiter=";"))
    suspects = [
        (a, b) for a, b in zip(police["plain"], police["noisy"], strict=True) if a["soort"] == "VERDACHTE"
    ]
    without = [b for a, b in suspects if a["skn"] and not b["skn"]]
    assert 0.1 < len(without) / len(suspects) < 0.3 and all(b["bsn"] for b in without)
    assert all(
        {k: v for k, v in a.items() if k != "skn"} == {k: v for k, v in b.items() if k != "skn"}
        for a, b in suspects
    )


def test_packed_resolution_gives_the_persons_and_tables_of_the_string_resolution(
    generated: tuple[dict[str, Any], list[dict[str, Any]], Path],
) -> None:
    """Every partner's records with identity noise and conflicts, resolved on packed pseudonyms (the
    processor's HMAC hex as 32 bytes) and on the same evidence as strings: the same persons, conflicts and
    byte-identical chain and person tables."""
    _truth, events, _out = generated
    table = to_table(events)
    packed = link_evidence(table)
    assert packed.schema.field("skn_pseudonym").type == PACKED
    strings = packed.set_column(0, "skn_pseudonym", unpack(packed["skn_pseudonym"])).set_column(
        1, "bsn_pseudonym", unpack(packed["bsn_pseudonym"])
    )
    assert strings["skn_pseudonym"].type == pa.string()
    fast, slow = Identities.resolve(packed), Identities.resolve(strings)
    assert fast.bsn.type == PACKED and slow.bsn.type == pa.string()
    assert unpack(fast.bsn).equals(slow.bsn) and unpack(fast.person).equals(slow.person)
    assert fast.conflicted.equals(slow.conflicted) and fast.conflicts == slow.conflicts >= 2
    assert fast.links == slow.links == packed.num_rows
    assert fast.person_columns(table) == slow.person_columns(table)
    counts = (
        table.group_by("period").aggregate([("period", "count")]).sort_by([("period_count", "descending")])
    )
    for period in counts["period"].to_pylist()[:3]:  # the three busiest months
        for build in (chain_table, person_table):
            made = [build(table, period, identities=ids) for ids in (fast, slow)]
            data = []
            for out in made:
                buf = io.BytesIO()
                pq.write_table(out, buf)
                data.append(buf.getvalue())
            assert made[0].num_rows > 10 and data[0] == data[1], (build.__name__, period)
