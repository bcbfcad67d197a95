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
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from bench.common import load_average
from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.adapters.snapshots import Snapshots
from ketenstroom.calendar import period_bounds
from ketenstroom.contract.snapshots import staging_name
from releases.build import Releases
from releases.engine import measure_sql, source_name
from releases.spec import load_specs
from sinks.parquet import CONCEPT, SCHEMA, write_table
from sinks.seal import Sealer, SealPolicy
from sinks.tables import build_missing_tables

PERIOD = "2026MM03"
EVENTS_PER_CASE = 8
MUNICIPALITIES = [f"GM{n:04d}" for n in (363, 518, 599, 344, 14, 34, 200, 202, 268, 772, 855, 153, 1680, 106)]
SCM = [("1", "11"), ("1", "12"), ("2", "21"), ("3", "31"), ("3", "32"), ("5", "52"), ("6", "61"), ("7", "7")]
DECISIONS = [
    "DAGVAARDING",
    "STRAFBESCHIKKING",
    "ONVOORWAARDELIJK_SEPOT",
    "TRANSACTIE",
    "VOORWAARDELIJK_BELEIDSSEPOT",
    "OVERIG",
]
OUTCOMES = ["SCHULDIG_MET_STRAF", "SCHULDIG_ZONDER_STRAF", "VRIJSPRAAK_ONTSLAG"]
SANCTIONS = ["GEVANGENISSTRAF", "TAAKSTRAF", "GELDBOETE"]


def _hex(rng: np.random.Generator, n: int) -> pa.Array:
    text = rng.integers(0, 256, size=(n, 32), dtype=np.uint8).tobytes().hex()
    return pa.array([text[i * 64 : (i + 1) * 64] for i in range(n)], pa.string())


def _concepts(n: int, slots: list[tuple[str, np.ndarray]]) -> pa.Array:
    """A list<concept> column with ``len(slots)`` concepts a row: (vocabulary, codes per row)."""
    k = len(slots)
    if k == 0:
        return pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)), pa.array([], CONCEPT))
    codes = np.stack([c for _, c in slots], axis=1).ravel()
    vocab = np.tile(np.array([v for v, _ in slots], dtype=object), n)
    empty = pa.array(np.full(n * k, "x", dtype=object), pa.string())
    struct = pa.StructArray.from_arrays(
        [pa.array(vocab, pa.string()), pa.array(codes, pa.string()), empty, empty, empty, empty],
        fields=list(CONCEPT),
    )
    return pa.ListArray.from_arrays(pa.array(np.arange(0, n * k + 1, k, dtype=np.int32)), struct)


def events(total: int, seed: int = 1, period: str = PERIOD) -> pa.Table:
    """``total`` events of one month: cases flowing police -> OM -> court -> execution, vectorised."""
    rng = np.random.default_rng(seed)
    n = total // EVENTS_PER_CASE
    start, _end = period_bounds(period)
    base = np.datetime64(start.replace(tzinfo=None), "ms")
    report, case, execution = _hex(rng, n), _hex(rng, n), _hex(rng, n)
    people = _hex(rng, max(n * 2 // 3, 1))
    person = people.take(pa.array(rng.integers(0, len(people), n)))
    age = rng.integers(12, 80, n).astype(np.int16)
    sex = rng.choice(np.array(["M", "V", "O"], dtype=object), n, p=[0.78, 0.2, 0.02])
    scm = np.array(SCM, dtype=object)[rng.integers(0, len(SCM), n)]
    t = base + (rng.random(n) * 10 * 86_400_000).astype("timedelta64[ms]")
    steps = [
        (
            "politie",
            "POLICE_CRIME_REGISTERED",
            dict(report=report),
            [("scm2010", scm[:, 0]), ("scm2010", scm[:, 1])],
        ),
        ("politie", "POLICE_SUSPECT_REGISTERED", dict(report=report, person=person), []),
        (
            "om",
            "OM_REGISTRATION",
            dict(report=report, case=case, person=person),
            [("scm2010", scm[:, 0]), ("scm2010", scm[:, 1])],
        ),
        (
            "om",
            "OM_DECISION",
            dict(report=report, case=case, person=person),
            [
                ("om-beslissing", rng.choice(np.array(DECISIONS, dtype=object), n)),
                ("sepot-soort", rng.choice(np.array(["TECHNISCH", "BELEID"], dtype=object), n)),
                ("scm2010", scm[:, 0]),
            ],
        ),
        (
            "rechtspraak",
            "COURT_JUDGMENT",
            dict(case=case, person=person),
            [
                ("rechtspraak-eindbeslissing", rng.choice(np.array(OUTCOMES, dtype=object), n)),
                ("sanctie", rng.choice(np.array(SANCTIONS, dtype=object), n)),
            ],
        ),
        ("cjib", "EXECUTION_COLLECTION_STARTED", dict(case=case, execution=execution, person=person), []),
        (
            "dji",
            "DETENTION_INFLOW",
            dict(case=case, person=person),
            [
                (
                    "detentie-titel",
                    rng.choice(np.array(["VRIJHEIDSSTRAF", "VOORLOPIGE_HECHTENIS"], dtype=object), n),
                )
            ],
        ),
        ("reclassering", "SUPERVISION_STARTED", dict(case=case, person=person), []),
    ]
    tables = []
    for partner, step, keys, slots in steps:
        t = t + (rng.random(n) * 2.5 * 86_400_000).astype("timedelta64[ms]")
        cols = {
            "period": pa.array(np.full(n, period, dtype=object), pa.string()),
            "event_id": pa.array([str(uuid.UUID(int=int(x))) for x in rng.integers(0, 2**62, n)]),
            "source_partner": pa.array(np.full(n, partner, dtype=object), pa.string()),
            "source_event_type": pa.array(np.full(n, step, dtype=object), pa.string()),
            "event_time": pa.array(t, pa.timestamp("ms")).cast(pa.timestamp("ms", tz="UTC")),
            "chain_step": pa.array(np.full(n, step, dtype=object), pa.string()),
            "case_pseudonym": keys.get("case", pa.nulls(n, pa.string())),
            "report_pseudonym": keys.get("report", pa.nulls(n, pa.string())),
            "execution_pseudonym": keys.get("execution", pa.nulls(n, pa.string())),
            "person_pseudonym": keys.get("person", pa.nulls(n, pa.string())),
            "age_at_event": pa.array(age) if "person" in keys else pa.nulls(n, pa.int16()),
            "sex": pa.array(sex, pa.string()) if "person" in keys else pa.nulls(n, pa.string()),
            "crime_municipality_code": pa.array(
                rng.choice(np.array(MUNICIPALITIES, dtype=object), n), pa.string()
            )
            if step == "POLICE_CRIME_REGISTERED"
            else pa.nulls(n, pa.string()),
            "concepts": _concepts(n, slots),
        }
        cols["event_date"] = cols["event_time"].cast(pa.date32())
        full = {
            f.name: cols.get(
                f.name, pa.nulls(n, f.type.value_type if pa.types.is_dictionary(f.type) else f.type)
            )
            for f in SCHEMA
        }
        tables.append(pa.table(full))
    table = pa.concat_tables(tables)
    table = table.set_column(
        SCHEMA.get_field_index("kafka_partition"), "kafka_partition", pa.array(np.zeros(len(table), np.int32))
    )
    table = table.set_column(
        SCHEMA.get_field_index("kafka_offset"),
        "kafka_offset",
        pa.array(np.arange(len(table), dtype=np.int64)),
    )
    return table.cast(SCHEMA)


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
            sql, _ = measure_sql(spec, m, with_keys=False)
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
        store = seal(root, events(args.events))
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
