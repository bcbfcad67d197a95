"""Benchmark a release: build one period's full release (every table in ``publication/``, protected, in
every format, with audit and manifest) from a sealed revision of 1,000,000 events, against DuckDB
computing the same group-bys (the engine's queries without cell keys) straight from the same files.

The revision is made by the sink's own sealer from staged files written here (no Kafka: this measures
the release, not the stream), and its chain table by the sink's table builder. The last line is
machine-readable: ``ratio_duckdb=<x> seconds=<y>`` (our seconds over DuckDB's, best of ``--runs``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa

from bench.common import load_average
from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.adapters.snapshots import Snapshots
from ketenstroom.calendar import period_bounds
from ketenstroom.contract.snapshots import staging_name
from releases.build import Releases
from releases.engine import measure_sql, source_name
from releases.spec import load_specs
from sinks.parquet import SCHEMA, write_table
from sinks.seal import Sealer, SealPolicy
from sinks.tables import build_missing_tables
from synthetic.period import period_events

PERIOD = "2026MM03"


def seal(root: Path, table: pa.Table, chunk: int = 100_000) -> ObjectStore:
    store = ObjectStore(f"file://{root}")
    for first in range(0, len(table), chunk):
        store.put(staging_name(PERIOD, 0, first), write_table(table.slice(first, chunk)))
    policy = SealPolicy(
        grace=timedelta(days=14),
        final_after=timedelta(days=3650),
        clock=lambda: datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert [m.period for m in Sealer(store, policy).seal_due()] == [PERIOD]
    build_missing_tables(store, {PERIOD})
    return store


def run_ours(store: ObjectStore, root: Path) -> float:
    shutil.rmtree(root / "releases", ignore_errors=True)
    start = time.perf_counter()
    manifest = Releases(store, os.urandom(32)).build(PERIOD)
    elapsed = time.perf_counter() - start
    assert len(manifest.tables) == len(load_specs())
    return elapsed


def run_duckdb(store: ObjectStore, root: Path) -> float:
    """The same group-bys, straight from the revision's Parquet with DuckDB: no keys, no protection."""
    snap = Snapshots(store).manifest(PERIOD)
    assert snap is not None
    files = [str(root / f.path) for f in snap.files]
    start_t, end_t = period_bounds(PERIOD)
    start = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET threads TO 2")
    con.execute(
        "CREATE MACRO codes_of(cs, voc) AS "
        "list_transform(list_filter(cs, lambda c: c.vocabulary = voc), lambda c: c.code)"
    )
    con.execute("CREATE MACRO code_of(cs, voc) AS list_extract(codes_of(cs, voc), 1)")
    con.execute(
        f"CREATE VIEW events AS SELECT *, period = '{PERIOD}' AS in_period, event_time < $end AS until_end "
        f"FROM read_parquet({files!r})".replace("$end", f"'{end_t.isoformat()}'::TIMESTAMPTZ")
    )
    chain = root / "snapshots" / PERIOD / f"r{snap.revision}" / "tables" / "chain.parquet"
    con.execute(
        f"CREATE VIEW chain AS SELECT *, '{start_t.isoformat()}'::TIMESTAMPTZ AS period_start, "
        f"'{end_t.isoformat()}'::TIMESTAMPTZ AS period_end FROM read_parquet('{chain}')"
    )
    for spec in load_specs():
        if spec.from_sql:  # materialised once per table, as the engine does
            con.execute(f"CREATE TEMP TABLE {source_name(spec)} AS {spec.from_sql}")
        for m in spec.measures:
            sql, _ = measure_sql(spec, m)
            con.sql(sql).to_arrow_table()
    con.close()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        store = seal(root, period_events(args.events, SCHEMA, PERIOD))
        print(
            f"sealed {PERIOD} r0 with {args.events:,} events and its chain table "
            f"in {time.perf_counter() - t:.0f} s"
        )
        ours, bare = [], []
        for run in range(args.runs):
            ours.append(run_ours(store, root))
            bare.append(run_duckdb(store, root))
            print(
                f"run {run + 1}: release {ours[-1]:.2f} s  duckdb group-bys {bare[-1]:.2f} s  "
                f"({load_average()})"
            )
    print(f"ratio_duckdb={min(ours) / min(bare):.2f} seconds={min(ours):.2f}")


if __name__ == "__main__":
    main()
