"""One person across the chain: SKN and BSN pseudonyms linked in the chain and person tables."""

from __future__ import annotations

import io
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.adapters.snapshots import Snapshots
from ketenstroom.calendar import AMSTERDAM, period_code
from ketenstroom.contract.snapshots import staging_name
from ketenstroom.identity import PACKED, Identities, components, link_evidence, merge_evidence, pack, unpack
from sinks.microdata import chain_table, person_table
from sinks.parquet import to_parquet
from sinks.seal import Sealer, SealPolicy
from sinks.tables import build_missing_tables
from synthetic.curated import chain_event
from tests.unit.test_microdata import ev, table


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def pev(
    when: datetime, step: str, *, skn: str | None = None, bsn: str | None = None, **kw: Any
) -> dict[str, Any]:
    """A snapshot row with the person's SKN and/or BSN pseudonym, the resolved one as the processor sets it."""
    row = ev(when, step, person=skn or bsn, **kw)
    row.update(
        skn_pseudonym=skn,
        bsn_pseudonym=bsn,
        person_pseudonym_source="SKN" if skn else ("BSN" if bsn else "NONE"),
    )
    return row


def year(rows: list[dict[str, Any]]) -> pa.Table:
    """The rows as the snapshot of the year 2026 (the sink assigns one period per configuration)."""
    return table([{**row, "period": "2026JJ00"} for row in rows])


def _journey() -> list[dict[str, Any]]:
    """BSN only at the police in January, SKN + BSN at the OM in March, SKN only at DJI in June."""
    return [
        pev(_utc(2026, 1, 10, 9), "POLICE_SUSPECT_REGISTERED", bsn="B1", report="R1", age=17),
        pev(_utc(2026, 1, 12, 9), "POLICE_REPORT_SENT_TO_OM", bsn="B1", report="R1", age=17),
        pev(_utc(2026, 3, 3, 9), "OM_REGISTRATION", skn="S1", bsn="B1", case="C1", report="R1", age=17),
        pev(_utc(2026, 3, 20, 9), "OM_DECISION", skn="S1", bsn="B1", case="C1", report="R1", age=17),
        pev(_utc(2026, 6, 15, 9), "DETENTION_INFLOW", skn="S1", case="C1", age=17),
    ]


def test_a_person_known_by_bsn_then_skn_is_one_person_with_the_police_lead_times_intact() -> None:
    events = year(_journey())
    persons = person_table(events, "2026JJ00").to_pylist()
    assert [(p["person_pseudonym"], p["events_in_period"], p["person_id_source"]) for p in persons] == [
        ("S1", 5, "SKN")
    ]
    assert persons[0]["reached_police_registration"] and persons[0]["reached_execution_start"]
    assert persons[0]["identity_conflict"] is False
    [case] = chain_table(events, "2026JJ00").to_pylist()
    assert case["person_pseudonym"] == "S1"
    assert "MULTIPLE_PERSONS" not in case["anomalies"]
    assert case["police_registration_time"] == _utc(2026, 1, 10, 9)
    assert case["days_police_registration_to_om_registration"] == 52
    assert case["days_police_registration_to_execution_start"] == 156
    assert case["age_at_police_registration"] == 17


def test_without_linking_the_same_journey_splits_the_person() -> None:
    """What the tables did before: two pseudonyms, and the case flagged as having several persons."""
    rows = _journey()
    for row in rows:
        row["skn_pseudonym"] = row["bsn_pseudonym"] = None  # only the processor's either-or pseudonym
    events = year(rows)
    assert sorted(p["person_pseudonym"] for p in person_table(events, "2026JJ00").to_pylist()) == ["B1", "S1"]
    assert "MULTIPLE_PERSONS" in chain_table(events, "2026JJ00").to_pylist()[0]["anomalies"]


def test_a_link_learned_later_changes_the_next_table_not_the_month_before() -> None:
    events = table(_journey())
    january = person_table(events, "2026MM01").to_pylist()  # by default only evidence up to January's end
    assert [(p["person_pseudonym"], p["person_id_source"]) for p in january] == [("B1", "BSN")]
    later = Identities.from_events(events)  # what a table built after March knows
    relinked = person_table(events, "2026MM01", identities=later).to_pylist()
    assert [(p["person_pseudonym"], p["person_id_source"]) for p in relinked] == [("S1", "SKN")]
    earlier = Identities.from_events(events.slice(0, 2))  # what a table built in February knew
    police = events.slice(0, 2)
    assert earlier.person_column(police).to_pylist() == ["B1", "B1"]
    assert later.person_column(police).to_pylist() == ["S1", "S1"]


def _conflict() -> list[dict[str, Any]]:
    """B2 is S2's BSN (three records); one OM record pairs it with S3 (a typing error); S3 has B3 too."""
    return [
        pev(_utc(2026, 2, 1, 9), "POLICE_SUSPECT_REGISTERED", skn="S2", bsn="B2", report="R2"),
        pev(_utc(2026, 2, 9, 9), "OM_REGISTRATION", skn="S2", bsn="B2", case="C2", report="R2"),
        pev(_utc(2026, 2, 20, 9), "OM_DECISION", skn="S2", bsn="B2", case="C2", report="R2"),
        pev(_utc(2026, 2, 2, 9), "OM_REGISTRATION", skn="S3", bsn="B2", case="C3", report="R3"),
        pev(_utc(2026, 2, 25, 9), "OM_DECISION", skn="S3", bsn="B3", case="C3", report="R3"),
        pev(_utc(2026, 3, 5, 9), "POLICE_SUSPECT_REGISTERED", bsn="B2", report="R4"),
        pev(_utc(2026, 3, 6, 9), "POLICE_SUSPECT_REGISTERED", bsn="B3", report="R5"),
    ]


def test_a_component_joining_two_skns_is_flagged_not_merged_and_resolves_by_the_rule() -> None:
    events = year(_conflict())
    identities = Identities.from_events(events)
    assert (identities.links, identities.conflicts) == (3, 1)
    assert dict(zip(identities.bsn.to_pylist(), identities.person.to_pylist(), strict=True)) == {
        "B2": "S2",  # seen with S2 in three records, with S3 in one: S2's
        "B3": "S3",
    }
    persons = {p["person_pseudonym"]: p for p in person_table(events, "2026JJ00").to_pylist()}
    assert sorted(persons) == ["S2", "S3"], "two SKNs stay two persons"
    assert all(p["identity_conflict"] for p in persons.values())
    assert persons["S2"]["events_in_period"] == 4  # three with S2 and the BSN-only police record of B2
    assert persons["S3"]["events_in_period"] == 3


def test_a_tie_goes_to_the_skn_seen_first_whatever_the_input_order() -> None:
    rows = [
        pev(_utc(2026, 2, 5, 9), "OM_REGISTRATION", skn="S9", bsn="B9", case="C9"),
        pev(_utc(2026, 2, 1, 9), "OM_REGISTRATION", skn="S8", bsn="B9", case="C8"),
    ]
    for ordered in (rows, rows[::-1]):
        identities = Identities.from_events(table(ordered))
        assert identities.person.to_pylist() == ["S8"] and identities.conflicts == 1


def test_evidence_holds_pairs_of_pseudonyms_only_and_merges_by_summing() -> None:
    events = table(_journey())
    evidence = link_evidence(events)
    assert evidence.column_names == ["skn_pseudonym", "bsn_pseudonym", "records", "first_time"]
    assert evidence.to_pylist() == [
        {"skn_pseudonym": "S1", "bsn_pseudonym": "B1", "records": 2, "first_time": _utc(2026, 3, 3, 9)}
    ]
    merged = merge_evidence([evidence, evidence])
    assert merged["records"].to_pylist() == [4]


def test_evidence_folded_as_it_comes_equals_evidence_merged_at_once() -> None:
    rng = np.random.default_rng(4)
    parts = []
    for n in range(12):  # files repeating pairs, each a different share of them
        skn = rng.integers(0, 40, 30)
        parts.append(
            pa.table(
                {
                    "skn_pseudonym": [f"S{s}" for s in skn],
                    "bsn_pseudonym": [f"B{(s * 7 + int(rng.integers(0, 2))) % 45}" for s in skn],
                    "records": rng.integers(1, 5, 30),
                    "first_time": pa.array(rng.integers(0, 10**9, 30) + n, pa.timestamp("ms", tz="UTC")),
                }
            )
        )
    at_once = merge_evidence(parts, fold_rows=10**9)
    assert merge_evidence(iter(parts), fold_rows=50).equals(at_once)  # folded about every other file
    assert at_once["records"].to_numpy().sum() == sum(p["records"].to_numpy().sum() for p in parts)
    assert len(at_once) < sum(len(p) for p in parts)


def test_components_follow_chains_of_links() -> None:
    # 0-5, 5-1, 1-6, 6-2 is one component; 3-7 another; 4 alone
    left, right = np.array([0, 1, 1, 2, 3]), np.array([5, 5, 6, 6, 7])
    assert components(8, left, right).tolist() == [0, 0, 0, 3, 4, 0, 0, 3]


def test_rows_from_before_both_pseudonyms_resolve_from_the_processor_pseudonym() -> None:
    rows = [ev(_utc(2026, 1, 5), "OM_REGISTRATION", case="C1", person="P1")]
    for row in rows:
        row["person_pseudonym_source"] = "SKN"
    events = table(rows).drop_columns(["skn_pseudonym", "bsn_pseudonym"])
    assert person_table(events.cast(events.schema), "2026MM01")["person_pseudonym"].to_pylist() == ["P1"]
    assert pa.types.is_string(Identities.from_events(events).bsn.type)


# -- revisions: links are part of each sealed revision's inputs ---------------------------------------


def _stage(store: ObjectStore, rows: list[dict[str, Any]], offset: int) -> None:
    for n, row in enumerate(rows):
        moment = row["event_time"]
        row.update(
            period=period_code(moment),
            event_date=moment.astimezone(AMSTERDAM).date(),
            kafka_partition=0,
            kafka_offset=offset + n,
        )
    for period in sorted({r["period"] for r in rows}):
        mine = [r for r in rows if r["period"] == period]
        store.put(staging_name(period, 0, mine[0]["kafka_offset"]), to_parquet(mine))


def _seal(store: ObjectStore, when: datetime) -> None:
    Sealer(store, SealPolicy(final_after=timedelta(days=3650), clock=lambda: when)).seal_due()
    build_missing_tables(store)


def _persons(store: ObjectStore, period: str, revision: int) -> tuple[list[tuple[str, str]], Any]:
    manifest = Snapshots(store).manifest(period, revision)
    assert manifest is not None
    tables = Snapshots(store).tables(manifest)
    assert tables is not None and tables.identity is not None
    rows = pq.read_table(io.BytesIO(store.get(tables.files["person"].path))).to_pylist()
    return [(r["person_pseudonym"], r["person_id_source"]) for r in rows], tables.identity


def test_a_link_sealed_in_may_relinks_march_in_its_next_revision_never_in_the_sealed_one(
    tmp_path: Path,
) -> None:
    store = ObjectStore(f"file://{tmp_path}")
    skn, bsn, other, late_skn, late_bsn = (f"{c * 64}" for c in "abc12")
    police = dict(partner="politie", report="d" * 64)
    _stage(
        store,
        [
            chain_event(
                event_id=str(uuid.uuid4()),
                event_time=_utc(2026, 3, 5, 9),
                chain_step="POLICE_SUSPECT_REGISTERED",
                bsn=bsn,
                **police,
            ),
        ],
        0,
    )
    _seal(store, _utc(2026, 4, 20))
    march_r0, counts_r0 = _persons(store, "2026MM03", 0)
    assert march_r0 == [(bsn, "BSN")]
    assert (counts_r0.links, counts_r0.persons_merged_by_new_links) == (0, 0)

    _stage(
        store,
        [
            chain_event(
                event_id=str(uuid.uuid4()),
                event_time=_utc(2026, 5, 4, 9),
                chain_step="OM_REGISTRATION",
                partner="om",
                case="e" * 64,
                report="d" * 64,
                skn=skn,
                bsn=bsn,
            ),
            # a late police event for March (another person): March gets a revision r1
            chain_event(
                event_id=str(uuid.uuid4()),
                event_time=_utc(2026, 3, 30, 9),
                chain_step="POLICE_SUSPECT_REGISTERED",
                skn=other,
                partner="politie",
                report="f" * 64,
            ),
            # and a suspect known by BSN only, whose SKN comes to light in July (below)
            chain_event(
                event_id=str(uuid.uuid4()),
                event_time=_utc(2026, 3, 31, 9),
                chain_step="POLICE_SUSPECT_REGISTERED",
                bsn=late_bsn,
                partner="politie",
                report="0" * 64,
            ),
        ],
        1,
    )
    _seal(store, _utc(2026, 6, 20))
    march_r1, counts_r1 = _persons(store, "2026MM03", 1)
    assert sorted(march_r1) == sorted([(skn, "SKN"), (other, "SKN"), (late_bsn, "BSN")]), (
        "the May link joins March's BSN to the SKN"
    )
    assert counts_r1.persons_merged_by_new_links == 1 and counts_r1.links == 1
    assert counts_r1.link_inputs == {"2026MM03": 1, "2026MM05": 0}
    assert _persons(store, "2026MM03", 0)[0] == march_r0, "the sealed revision's table is untouched"
    may, counts_may = _persons(store, "2026MM05", 0)
    # r0 counts against the processor's own pseudonyms: the case's March police event was B's
    assert may == [(skn, "SKN")] and counts_may.persons_merged_by_new_links == 1
    may_manifest = Snapshots(store).manifest("2026MM05", 0)
    assert may_manifest is not None
    may_tables = Snapshots(store).tables(may_manifest)
    assert may_tables is not None
    [case] = pq.read_table(io.BytesIO(store.get(may_tables.files["chain"].path))).to_pylist()
    assert (case["person_pseudonym"], case["police_registration_time"]) == (skn, _utc(2026, 3, 5, 9))
    assert case["anomalies"] == []

    # July links the late BSN: July's tables know it; March r1's, rebuilt now, still do not
    _stage(
        store,
        [
            chain_event(
                event_id=str(uuid.uuid4()),
                event_time=_utc(2026, 7, 2, 9),
                chain_step="OM_REGISTRATION",
                partner="om",
                case="3" * 64,
                report="0" * 64,
                skn=late_skn,
                bsn=late_bsn,
            )
        ],
        3,
    )
    _seal(store, _utc(2026, 8, 20))
    assert _persons(store, "2026MM07", 0)[0] == [(late_skn, "SKN")]
    tables_dir = tmp_path / "snapshots" / "2026MM03" / "r1" / "tables"
    before = (tables_dir / "person.parquet").read_bytes()
    shutil.rmtree(tables_dir)
    assert build_missing_tables(store), "March r1's tables are rebuilt"
    assert (tables_dir / "person.parquet").read_bytes() == before, "rebuilt from the same inputs"
    assert (late_bsn, "BSN") in _persons(store, "2026MM03", 1)[0]


def test_components_agree_with_a_plain_union_find_on_random_graphs() -> None:
    rng = np.random.default_rng(11)
    for n, m in ((50, 10), (2000, 1500), (2000, 4000)):
        left, right = rng.integers(0, n, m), rng.integers(0, n, m)
        parent = list(range(n))

        def find(x: int, parent: list[int] = parent) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for a, b in zip(left.tolist(), right.tolist(), strict=True):
            ra, rb = find(a), find(b)
            parent[max(ra, rb)] = min(ra, rb)  # the root is the component's smallest node
        assert components(n, left, right).tolist() == [find(i) for i in range(n)]


def _digests(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex() for _ in range(n)]


def test_pack_keeps_the_32_bytes_of_hmac_hex_and_unpacks_to_the_same_strings() -> None:
    values = _digests(5, 1)
    strings = pa.array([values[0], None, values[1], values[2], None, values[3]], pa.string())
    packed = pack(strings)
    assert packed is not None and packed.type == PACKED and packed.null_count == 2
    assert packed.to_pylist() == [None if v is None else bytes.fromhex(v) for v in strings.to_pylist()]
    assert unpack(packed).equals(strings)
    sliced = strings.slice(2, 3)  # an array with an offset, as filters and chunks give
    again = pack(sliced)
    assert again is not None and unpack(again).equals(sliced) and unpack(packed.slice(2, 3)).equals(sliced)
    # packed digests sort as their hex strings: the tie rule's "smallest pseudonym" is the same either way
    order = pc.sort_indices(packed.filter(pc.is_valid(packed))).to_pylist()
    assert order == pc.sort_indices(strings.filter(pc.is_valid(strings))).to_pylist()
    for other in (
        ["S1", "B1"],
        [values[0].upper()],
        [values[0][:-2]],
        [values[0] + "0"],
        [values[0][:-1] + "g"],
    ):
        assert pack(pa.array(other, pa.string())) is None, other
    assert pack(pa.array([], pa.string())) is not None


def test_evidence_of_hmac_pseudonyms_is_packed_and_resolves_like_strings() -> None:
    s1, s2, s3, b1, b2, b3 = sorted(_digests(6, 2))
    rows = [
        pev(_utc(2026, 3, 1), "OM_REGISTRATION", skn=s2, bsn=b1, case="C1"),
        pev(_utc(2026, 3, 1), "OM_REGISTRATION", skn=s1, bsn=b1, case="C2"),  # a tie: the smaller SKN
        pev(_utc(2026, 3, 2), "OM_REGISTRATION", skn=s3, bsn=b2, case="C3"),
        pev(_utc(2026, 3, 4), "POLICE_SUSPECT_REGISTERED", bsn=b2, report="R4"),
        pev(_utc(2026, 3, 5), "POLICE_SUSPECT_REGISTERED", bsn=b3, report="R5"),  # never linked
        pev(_utc(2026, 3, 7), "DETENTION_INFLOW", bsn=b1, case="C2"),  # b1 goes to s1 by the tie rule
    ]
    events = year(rows)
    evidence = link_evidence(events)
    assert evidence.schema.field("bsn_pseudonym").type == PACKED
    identities = Identities.resolve(evidence)
    assert identities.conflicts == 1 and identities.conflicted.to_pylist() == [s1, s2]
    assert identities.person_column(events).to_pylist() == [s2, s1, s3, s3, b3, s1]
    # one part of other pseudonyms turns the merged evidence into strings: the same pairs
    mixed = merge_evidence(
        [evidence, link_evidence(year([pev(_utc(2026, 3, 6), "OM_REGISTRATION", skn="S9", bsn="B9")]))]
    )
    assert mixed["skn_pseudonym"].type == pa.string()
    assert mixed.num_rows == 4 and set(mixed["skn_pseudonym"].to_pylist()) == {s1, s2, s3, "S9"}
    assert Identities.resolve(mixed).person_column(events).to_pylist() == [s2, s1, s3, s3, b3, s1]
