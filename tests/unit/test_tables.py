"""Chain and person tables computed in hash buckets (bounded memory) equal the tables computed at once."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.adapters.snapshots import Snapshots
from ketenstroom.calendar import AMSTERDAM, period_code
from ketenstroom.contract.snapshots import staging_name
from ketenstroom.identity import Identities
from sinks.microdata import chain_table, person_table
from sinks.parquet import to_parquet, to_table
from sinks.seal import Sealer, SealPolicy
from sinks.tables import buckets_of, microdata_tables
from synthetic.curated import chain_event, chain_events


def _rows() -> list[dict[str, object]]:
    rows = list(chain_events(400, seed=9, start=datetime(2026, 1, 1, tzinfo=UTC), days=150))
    # CJIB events that carry only the execution pseudonym: linked through another event of the case
    for row in [r for r in rows if r["execution_pseudonym"]][:20]:
        rows.append(
            chain_event(
                event_id=str(uuid.uuid4()),
                event_time=row["event_time"] - timedelta(days=3),  # type: ignore[operator]
                chain_step="EXECUTION_COLLECTION_STARTED",
                partner="cjib",
                event_type="nl.ketenstroom.cjib.CollectionStarted",
                execution=row["execution_pseudonym"],  # type: ignore[arg-type]
            )
        )
    # identity noise: BSN only at the police for every third person, SKN + BSN at the OM (the link)
    for n, row in enumerate(rows):
        person = row["person_pseudonym"]
        if person is None or int(str(person)[:4], 16) % 3:
            continue
        bsn = "b" + str(person)[1:]
        if row["chain_step"] == "POLICE_SUSPECT_REGISTERED" and n % 2:
            row.update(
                skn_pseudonym=None, bsn_pseudonym=bsn, person_pseudonym=bsn, person_pseudonym_source="BSN"
            )
        elif str(row["chain_step"]).startswith("OM_"):
            row["bsn_pseudonym"] = bsn
    # one police report that two cases link to
    first, second = [r for r in rows if r["chain_step"] == "OM_REGISTRATION"][:2]
    second["report_pseudonym"] = first["report_pseudonym"]
    for offset, row in enumerate(rows):
        moment = row["event_time"]
        row.update(
            period=period_code(moment),  # type: ignore[arg-type]
            event_date=moment.astimezone(AMSTERDAM).date(),  # type: ignore[attr-defined]
            kafka_partition=0,
            kafka_offset=offset,
        )
    return rows


@pytest.mark.parametrize("bucket_rows", [60, 1_000_000])
def test_bucketed_tables_equal_the_tables_computed_at_once(tmp_path: Path, bucket_rows: int) -> None:
    rows = _rows()
    store = ObjectStore(f"file://{tmp_path}")
    for period in sorted({str(r["period"]) for r in rows}):
        mine = [r for r in rows if r["period"] == period]
        for i in range(0, len(mine), 100):  # several files per period
            store.put(staging_name(period, 0, int(mine[i]["kafka_offset"])), to_parquet(mine[i : i + 100]))  # type: ignore[call-overload]
    Sealer(
        store, SealPolicy(final_after=timedelta(days=3650), clock=lambda: datetime(2030, 1, 1, tzinfo=UTC))
    ).seal_due()
    events = to_table(rows)
    identities = Identities.from_events(events)
    assert identities.links > 10 and pc.sum(pc.equal(events["person_pseudonym_source"], "BSN")).as_py() > 10
    checked = 0
    for period in ["2026MM03", "2026MM06", "2026MM09"]:
        manifest = Snapshots(store).manifest(period)
        assert manifest is not None
        tables, read, _relinked = microdata_tables(
            store, period, manifest.files, bucket_rows=bucket_rows, identities=identities
        )
        assert manifest.rows < read < len(rows)  # this period plus only its cases' history
        whole = {
            "chain": chain_table(events, period, identities=identities),
            "person": person_table(events, period, identities=identities),
        }
        for name, key in (("chain", "case_pseudonym"), ("person", "person_pseudonym")):
            bucketed = pq.read_table(io.BytesIO(tables[name])).sort_by(key)
            expected = whole[name].sort_by(key)
            assert bucketed.num_rows == expected.num_rows > 0
            assert bucketed.equals(expected.cast(bucketed.schema)), f"{period} {name} differs"
            checked += 1
    assert checked == 6


def test_bucket_numbers_are_stable_and_spread() -> None:
    values = pa.array([f"{i:060x}case" for i in range(20_000)] + [None])
    buckets = buckets_of(values, 8)
    assert buckets[-1] == -1
    counts = [int((buckets == b).sum()) for b in range(8)]
    assert min(counts) > 2000, counts  # zero-padded hex still spreads over every bucket
    assert (buckets_of(values.slice(100, 50), 8) == buckets[100:150]).all()
