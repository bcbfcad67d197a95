"""Benchmark ``ketenstroom extract make`` against a hand-written query over the same sealed files.

Setup (not timed): ``--cases`` synthetic cases (police -> OM -> court -> CJIB) are staged, sealed into
monthly revisions and given their chain and person tables, on a local directory. Then, best of
``--runs``:

(a) extract: ``make_extract`` end to end: read and sha256-check every file, reduce the events per file,
    build the frame (generalised, re-keyed), k/l with local suppression, the final k/l, identifier scan
    and platform-pseudonym checks, Parquet, codebook, manifest and register entry;
(b) by hand: one DuckDB query over the same Parquet files that gives each case's latest chain row its
    first sex, municipality and OM decision, generalises age, region and date the same way and counts
    the groups (k): what a careful analyst would write, with no re-keying, suppression, checks or files.

The last line is machine-readable: ``ratio=<extract / by hand> rows=<n>``.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from bench.common import load_average
from extracts.catalogue import Catalogue, StudyRequest
from extracts.make import Inputs, make_extract, output_store
from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.calendar import period_code
from ketenstroom.contract.snapshots import staging_name
from ketenstroom.settings import CatalogueSettings
from sinks.parquet import to_parquet
from sinks.seal import Sealer, SealPolicy
from sinks.tables import build_missing_tables
from synthetic.curated import chain_events

FAR = datetime(2030, 1, 1, tzinfo=UTC)
GEMEENTEN = ("GM0363", "GM0599", "GM0518", "GM0344", "GM0772", "GM0014", "GM0268", "GM0193")
DECISIONS = ("DAGVAARDING", "ONVOORWAARDELIJK_SEPOT", "STRAFBESCHIKKING", "TRANSACTIE", "OVERIG")
COLUMNS = {
    "case": "study_pseudonym",
    "person": "study_pseudonym",
    "age": "cbs",
    "sex": "as_is",
    "region": "province",
    "om_registration_date": "quarter",
    "om_decision": "as_is",
    "days_om_registration_to_om_decision": "days",
}


def _events(cases: int) -> dict[str, list[dict[str, Any]]]:
    """Curated events per period, with varied sex, municipality and OM decisions (seeded)."""
    rng = random.Random(11)
    person: dict[str, tuple[str, str]] = {}
    periods: dict[str, list[dict[str, Any]]] = {}
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for offset, event in enumerate(chain_events(cases, seed=3, start=start, days=180)):
        who = person.setdefault(str(event["person_pseudonym"]), (rng.choice("MV"), rng.choice(GEMEENTEN)))
        event["sex"], event["municipality_code"] = who
        if event["chain_step"] == "OM_DECISION":
            code = rng.choice(DECISIONS)
            event["concepts"] = [
                {
                    "vocabulary": "om-beslissing",
                    "code": code,
                    "label": code,
                    "counting_unit": "beslissing",
                    "source_code_system": "OM.AFDOENING",
                    "source_code": code[:4],
                }
            ]
        period = period_code(event["event_time"])
        periods.setdefault(period, []).append(
            {**event, "period": period, "kafka_partition": 0, "kafka_offset": offset}
        )
    return periods


def _seal(root: Path, cases: int) -> tuple[ObjectStore, list[str]]:
    store = ObjectStore(f"file://{root}")
    for period, rows in _events(cases).items():
        store.put(staging_name(period, 0, rows[0]["kafka_offset"]), to_parquet(rows))
    policy = SealPolicy(grace=timedelta(days=14), final_after=timedelta(days=3650), clock=lambda: FAR)
    sealed = Sealer(store, policy).seal_due()
    build_missing_tables(store)
    return store, sorted(m.period for m in sealed)


def _by_hand(root: Path) -> tuple[int, int]:
    data, chain = f"{root}/snapshots/*/r0/data/*.parquet", f"{root}/snapshots/*/r0/tables/chain.parquet"
    regions = CatalogueSettings().terminology_dir / "gemeente-regio.csv"
    query = f"""
        with ch as (select * from read_parquet('{chain}')
                    qualify row_number() over (partition by case_pseudonym order by period desc) = 1),
             ev as (select case_pseudonym,
                           arg_min(sex, event_time) filter (where sex is not null) sex,
                           arg_min(municipality_code, event_time)
                               filter (where municipality_code is not null) gm
                    from read_parquet('{data}') where case_pseudonym is not null group by 1),
             dec as (select case_pseudonym, arg_min(u.c.code, event_time) decision
                     from read_parquet('{data}'), unnest(concepts) u(c)
                     where chain_step = 'OM_DECISION' and u.c.vocabulary = 'om-beslissing' group by 1),
             frame as (
                select case when age_at_first_step < 18 then '12-17' when age_at_first_step < 25 then '18-24'
                            when age_at_first_step < 45 then '25-44' when age_at_first_step < 65 then '45-64'
                            else '65+' end age,
                       ev.sex, r.province_code region,
                       quarter(timezone('Europe/Amsterdam', om_registration_time)) q, dec.decision
                from ch left join ev using (case_pseudonym) left join dec using (case_pseudonym)
                left join read_csv('{regions}') r on r.municipality_code = ev.gm
                where year(timezone('Europe/Amsterdam', om_registration_time)) = 2026)
        select min(n), sum(n) from (select count(*) n from frame group by age, sex, region, q)"""
    with duckdb.connect() as con:
        k, rows = con.sql(query).fetchall()[0]
    return int(k), int(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        store, periods = _seal(root / "store", args.cases)
        setup = time.perf_counter() - t0
        print(f"setup: {args.cases:,} cases sealed into {len(periods)} periods in {setup:.1f} s")
        request = StudyRequest.model_validate(
            {
                "study": "bench-study",
                "requester": "bench",
                "periods": periods,
                "population": {"reached": "om_registration", "from": "2026-01-01", "to": "2027-01-01"},
                "suppression_budget": 0.05,
                "columns": COLUMNS,
            }
        )
        paths = CatalogueSettings()
        catalogue = Catalogue.load(paths.publication_dir / "research.toml")
        inputs = Inputs(
            snapshots=store,
            register=ObjectStore(f"file://{root / 'register'}"),
            terminology_dir=paths.terminology_dir,
            secret=b"bench-extract-key-0123456789abcdef0123",
            key_id="bench",
        )
        extract, by_hand = [], []
        for run in range(args.runs):
            t0 = time.perf_counter()
            manifest = make_extract(request, catalogue, inputs, output_store(str(root / f"out{run}")))
            extract.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            k_hand, rows_hand = _by_hand(root / "store")
            by_hand.append(time.perf_counter() - t0)
        a = manifest.achieved
        print(
            f"extract: {min(extract):.2f} s for {a.rows:,} rows (population {a.population_rows:,}), "
            f"k={a.k} l={a.l}, {a.rows_suppressed} rows suppressed"
        )
        print(f"by hand: {min(by_hand):.2f} s for {rows_hand:,} rows, k before suppression={k_hand}")
        print(load_average())
        print(f"ratio={min(extract) / min(by_hand):.2f} rows={a.rows}")


if __name__ == "__main__":
    main()
