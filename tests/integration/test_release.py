"""Releases through the real stack: generated chain exports -> publish -> process -> sink (seals, and its
hook builds the release) -> protected tables, checked against DuckDB computations written here; a late
event gives release r1 with r0 byte-identical; cbsodata and cbsodata4 read a table from ``serve``."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow.parquet as pq
import pytest

from ketenstroom.adapters.kafka import ensure_topics
from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.adapters.registry import Registry
from ketenstroom.adapters.snapshots import Snapshots
from ketenstroom.calendar import period_bounds
from ketenstroom.contract import Topics
from ketenstroom.contract.scanner import scan_all
from producers.publish import Publisher
from synthetic import generate_chain
from synthetic.curated import chain_event, publish_curated
from tests.conftest import Services

PSEUDONYM_KEY = "release-test-pseudonym-key-0123456789abcdef"
CELLKEY = "release-test-cell-key-secret-0123456789abcdef"
PERIOD = "2026MM09"
THRESHOLD = 10


def _env(services: Services, names: Topics) -> dict[str, str]:
    return {
        **services.env(names),
        "KETENSTROOM_PSEUDONYM_KEY": PSEUDONYM_KEY,
        "KETENSTROOM_PSEUDONYM_KEY_ID": "release-k1",
        "KETENSTROOM_CELLKEY_KEY": CELLKEY,
    }


def _cli(env: dict[str, str], *args: str, timeout: float = 240) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{args}: {result.stderr[-3000:]}"
    return result.stdout


def _site_dir(storage: str) -> str:
    return storage.removeprefix("file://").rsplit("/", 1)[0] + "/site"


def _sink(env: dict[str, str], storage: str, group: str) -> dict[str, Any]:
    out = _cli(
        env,
        "sink",
        "--until-caught-up",
        "--group",
        group,
        "--storage",
        storage,
        "--as-of",
        "2027-06-01",
        "--final-after-days",
        "3650",
        "--site",  # the hook rebuilds the dashboard after each release
        _site_dir(storage),
    )
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def released(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    names = Topics(prefix=f"t{uuid.uuid4().hex[:10]}.")
    base = tmp_path_factory.mktemp("release")
    exports = generate_chain(base / "exports", cases=2400, seed=1212, noise=0.0, days=365)
    partners = sorted(exports.partners)  # the partners the generator has profiles for
    ensure_topics(services.kafka, names.all(partners), partitions=3, replication_factor=1)
    for partner in partners:
        with Publisher(partner, kafka=services.kafka, registry=services.registry, topics=names) as publisher:
            publisher.publish([Path(exports.partners[partner].path)])
    env = _env(services, names)
    _cli(env, "process", "--until-caught-up", "--app-id", f"{names.prefix}processor")
    storage = f"file://{base / 'store'}"
    report = _sink(env, storage, f"{names.prefix}sink")
    yield {
        "names": names,
        "env": env,
        "storage": storage,
        "store": ObjectStore(storage),
        "report": report,
        "services": services,
        "group": f"{names.prefix}sink",
    }


def _obs(store: ObjectStore, table: str, revision: int = 0) -> list[dict[str, Any]]:
    data = store.get(f"releases/{PERIOD}/r{revision}/{table}/{table}.parquet")
    return pq.read_table(io.BytesIO(data)).to_pylist()  # type: ignore[no-any-return]


def _con(store: ObjectStore, revision: int = 0) -> duckdb.DuckDBPyConnection:
    """DuckDB over the sealed snapshot itself: PERIOD's revision and earlier periods' latest."""
    snaps = Snapshots(store)
    files = []
    for period in snaps.periods():
        m = snaps.manifest(period, revision if period == PERIOD else None)
        if m is not None and period <= PERIOD:
            files += [f"{store.root}/{f.path}" for f in m.files]
    con = duckdb.connect()
    start, end = period_bounds(PERIOD)
    # persons as the revision's person table resolves them, computed here in SQL from the link inputs its
    # tables manifest names: an event's SKN, else the SKN its BSN was seen with in most records (then
    # first, then the smallest), else its BSN, else the processor's pseudonym
    snap = snaps.manifest(PERIOD, revision)
    tables = snaps.tables(snap) if snap is not None else None
    assert tables is not None and tables.identity is not None
    link_files = [
        f"{store.root}/{f.path}"
        for period, rev in sorted(tables.identity.link_inputs.items())
        for m in [snaps.manifest(period, rev)]
        if m is not None
        for f in m.files
    ]
    con.execute(
        f"""CREATE VIEW linked AS SELECT b, first(s ORDER BY n DESC, t, s) AS s FROM (
              SELECT skn_pseudonym s, bsn_pseudonym b, count(*) n, min(event_time) t
              FROM read_parquet({link_files!r}, union_by_name=true)
              WHERE skn_pseudonym IS NOT NULL AND bsn_pseudonym IS NOT NULL GROUP BY 1, 2
            ) GROUP BY b"""
    )
    con.execute(
        f"""CREATE VIEW ev AS SELECT r.* REPLACE (
              coalesce(r.skn_pseudonym, l.s, r.bsn_pseudonym, r.person_pseudonym) AS person_pseudonym)
            FROM read_parquet({files!r}, union_by_name=true) r
            LEFT JOIN linked l ON r.skn_pseudonym IS NULL AND l.b = r.bsn_pseudonym"""
    )
    con.execute(f"CREATE VIEW cur AS SELECT * FROM ev WHERE period = '{PERIOD}'")
    chain = f"{store.root}/snapshots/{PERIOD}/r{revision}/tables/chain.parquet"
    con.execute(f"CREATE VIEW chain AS SELECT * FROM read_parquet('{chain}')")
    con.execute("SET VARIABLE p_start = ?", [start])
    con.execute("SET VARIABLE p_end = ?", [end])
    return con


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> dict[tuple[Any, ...], float]:
    return {tuple(r[:-1]): r[-1] for r in con.execute(sql).fetchall()}


def _check_count(published: dict[str, Any], true: int | float) -> None:
    value = published["Value"]
    assert value is not None and published["ValueAttribute"] == "None", published
    assert value % 5 == 0 and abs(value - true) <= 4, (published, true)


@pytest.fixture(scope="module")
def con0(released: dict[str, Any]) -> Iterator[duckdb.DuckDBPyConnection]:
    con = _con(released["store"])
    yield con
    con.close()


def test_ks0001_crimes_by_offence_group_and_municipality(
    released: dict[str, Any], con0: duckdb.DuckDBPyConnection
) -> None:
    store: ObjectStore = released["store"]
    con = con0
    assert store.exists(f"releases/{PERIOD}/r0/manifest.json"), "the sink's seal built the release"
    # KS0001: crimes by SCM2010 level 1-2 x municipality (a pv counts once per group, once in totals)
    crimes = """SELECT coalesce(report_pseudonym, event_id) u, coalesce(crime_municipality_code, 'GM9999') gm,
                       c.code code FROM (SELECT *, unnest(concepts) c FROM cur WHERE chain_step = 'POLICE_CRIME_REGISTERED')
                WHERE c.vocabulary = 'scm2010' AND length(c.code) <= 2"""
    true1 = _rows(con, f"SELECT 'CRI' || code, gm, count(DISTINCT u) FROM ({crimes}) GROUP BY ALL")
    true1 |= _rows(con, f"SELECT 'CRI' || code, 'NL01', count(DISTINCT u) FROM ({crimes}) GROUP BY ALL")
    true1 |= _rows(
        con,
        """SELECT 'T001161', coalesce(crime_municipality_code, 'GM9999'), count(DISTINCT coalesce(report_pseudonym, event_id))
                           FROM cur WHERE chain_step = 'POLICE_CRIME_REGISTERED' GROUP BY ALL""",
    )
    true1 |= _rows(
        con,
        """SELECT 'T001161', 'NL01', count(DISTINCT coalesce(report_pseudonym, event_id))
                           FROM cur WHERE chain_step = 'POLICE_CRIME_REGISTERED'""",
    )
    obs1 = _obs(store, "KS0001NED")
    assert true1[("T001161", "NL01")] > 100
    for cell in obs1:
        _check_count(cell, true1.get((cell["SoortMisdrijf"], cell["RegioS"]), 0))
    assert {(c["SoortMisdrijf"], c["RegioS"]) for c in obs1} >= set(true1), (
        "every non-empty cell is published"
    )


def test_ks0003_om_inflow_and_decisions(released: dict[str, Any], con0: duckdb.DuckDBPyConnection) -> None:
    store: ObjectStore = released["store"]
    con = con0
    # KS0003: OM inflow and decisions by type (sepots split technical/policy) x main group
    decision = """CASE WHEN list_extract([c.code for c in concepts if c.vocabulary = 'om-beslissing'], 1) = 'ONVOORWAARDELIJK_SEPOT'
                  THEN 'SEPOT_' || list_extract([c.code for c in concepts if c.vocabulary = 'sepot-soort'], 1)
                  ELSE list_extract([c.code for c in concepts if c.vocabulary = 'om-beslissing'], 1) END"""
    group = "coalesce('CRI' || list_extract([c.code for c in concepts if c.vocabulary = 'scm2010' AND length(c.code) = 1], 1), 'ONB')"
    dec = f"SELECT case_pseudonym u, {decision} b, {group} g FROM cur WHERE chain_step = 'OM_DECISION'"
    true3 = _rows(con, f"SELECT 'BeslissingenOM_2', b, g, count(DISTINCT u) FROM ({dec}) GROUP BY ALL")
    true3 |= _rows(con, f"SELECT 'BeslissingenOM_2', 'T001', g, count(DISTINCT u) FROM ({dec}) GROUP BY ALL")
    true3 |= _rows(
        con, f"SELECT 'BeslissingenOM_2', b, 'T001161', count(DISTINCT u) FROM ({dec}) GROUP BY ALL"
    )
    true3 |= _rows(con, f"SELECT 'BeslissingenOM_2', 'T001', 'T001161', count(DISTINCT u) FROM ({dec})")
    reg = f"SELECT case_pseudonym u, {group} g FROM cur WHERE chain_step = 'OM_REGISTRATION'"
    true3 |= _rows(
        con, f"SELECT 'IngeschrevenZaken_1', 'T001', g, count(DISTINCT u) FROM ({reg}) GROUP BY ALL"
    )
    true3 |= _rows(con, f"SELECT 'IngeschrevenZaken_1', 'T001', 'T001161', count(DISTINCT u) FROM ({reg})")
    suppressed3 = 0
    for cell in _obs(store, "KS0003NED"):
        key = (cell["Measure"], cell["Beslissing"], cell["Delicthoofdgroep"])
        if cell["ValueAttribute"] == "Confidential":
            suppressed3 += 1
            assert cell["Value"] is None  # empty, never 0
            continue
        _check_count(cell, true3.get(key, 0))
    audit = json.loads(store.get(f"releases/{PERIOD}/r0/audit.json"))
    assert len(audit["tables"]["KS0003NED"]["suppressed"]) == suppressed3
    assert abs(audit["rounding_mean_error"]) < 1.0
    assert (
        CELLKEY not in json.dumps(audit)
        and CELLKEY not in store.get(f"releases/{PERIOD}/r0/manifest.json").decode()
    )


def test_ks0005_execution_and_dji_stock(released: dict[str, Any], con0: duckdb.DuckDBPyConnection) -> None:
    store: ObjectStore = released["store"]
    con = con0
    # KS0005: execution, incl. the DJI stock at period end (last detention event before the end is an inflow)
    end = "getvariable('p_end')"
    true5 = _rows(
        con,
        "SELECT 'CjibInningenGestart_1', count(DISTINCT execution_pseudonym) FROM cur WHERE chain_step = 'EXECUTION_COLLECTION_STARTED'",
    )
    true5 |= _rows(
        con,
        "SELECT 'DjiInstroom_4', count(DISTINCT person_pseudonym) FROM cur WHERE chain_step = 'DETENTION_INFLOW'",
    )
    true5 |= _rows(
        con,
        "SELECT 'HaltVerwijzingen_9', count(DISTINCT person_pseudonym) FROM cur WHERE chain_step = 'HALT_REFERRAL'",
    )
    true5 |= _rows(
        con,
        f"""
        WITH d AS (SELECT person_pseudonym p, event_time t, chain_step s FROM ev
                   WHERE chain_step IN ('DETENTION_INFLOW', 'DETENTION_OUTFLOW') AND event_time < {end}),
             last AS (SELECT p, max(t) t FROM d GROUP BY p)
        SELECT 'DjiGedetineerdenEindePeriode_6', count(*) FROM last
        WHERE NOT EXISTS (SELECT 1 FROM d WHERE d.p = last.p AND d.t = last.t AND d.s = 'DETENTION_OUTFLOW')""",
    )
    obs5 = {c["Measure"]: c for c in _obs(store, "KS0005NED")}
    for measure, true in true5.items():
        _check_count(obs5[measure[0]], true)
    assert true5[("DjiGedetineerdenEindePeriode_6",)] > 0


def test_ks0006_lead_times_exact_above_threshold(
    released: dict[str, Any], con0: duckdb.DuckDBPyConnection
) -> None:
    store: ObjectStore = released["store"]
    con = con0
    end = "getvariable('p_end')"
    # KS0006: lead times from the chain table; statistics exact where >= 10 cases, else suppressed
    stretches = {
        "POL_OMB": ("om_decision_time", "days_police_registration_to_om_decision"),
        "POL_UIT": ("judgment_time", "days_police_registration_to_judgment"),
        "OMB_UIT": ("judgment_time", "days_om_decision_to_judgment"),
        "UIT_EXE": ("execution_start_time", "days_judgment_to_execution_start"),
        "POL_EXE": ("execution_start_time", "days_police_registration_to_execution_start"),
    }
    obs6 = {(c["Measure"], c["Traject"], c["Leeftijdsgroep"]): c for c in _obs(store, "KS0006NED")}
    exact, small = 0, []
    for code, (end_col, days) in stretches.items():
        ages = (
            ("T001", "true"),
            ("JEUGD", "juvenile"),
            ("VOLWASSEN", "NOT juvenile"),
            ("ONB", "juvenile IS NULL"),
        )
        for age, cond in ages:
            values = [
                r[0]
                for r in con.execute(
                    f"SELECT {days} FROM chain WHERE {end_col} >= getvariable('p_start') AND {end_col} < {end} "
                    f"AND {days} IS NOT NULL AND {cond}"
                ).fetchall()
            ]
            n = len(values)
            if ("Zaken_1", code, age) not in obs6:
                assert n == 0, (code, age, n)
                continue
            _check_count(obs6[("Zaken_1", code, age)], n)
            if 0 < n < THRESHOLD:
                small.append(n)
            stats = {
                "MediaanDoorlooptijd_2": _quantile(values, 0.5),
                "P80Doorlooptijd_3": _quantile(values, 0.8),
            }
            if code == "POL_OMB":
                stats["BinnenNormOM_4"] = 100.0 * sum(v <= 90 for v in values) / n if n else None
            if code == "POL_UIT":
                stats["BinnenNormRechter_5"] = 100.0 * sum(v <= 180 for v in values) / n if n else None
            for measure, expected in stats.items():
                cell = obs6[(measure, code, age)]
                if n < THRESHOLD:
                    assert cell["Value"] is None and cell["ValueAttribute"] == "Confidential", (cell, n)
                else:
                    assert expected is not None and cell["Value"] == round(expected, 1), (cell, expected)
                    exact += 1
    assert exact >= 6, "the test data must have cells above the threshold"
    assert small, "the test data must have cells with a few cases, under the threshold"


def _cells(units: dict[tuple[str, ...], set[str]], totals: tuple[str, ...]) -> dict[tuple[str, ...], int]:
    """Every cell of a cube with a total per dimension: distinct units of the rows under each code or total,
    counted the plain way (a set per cell)."""
    cells: dict[tuple[str, ...], set[str]] = {}
    for key, members in units.items():
        for mask in range(1 << len(key)):
            cell = tuple(totals[i] if mask >> i & 1 else key[i] for i in range(len(key)))
            cells.setdefault(cell, set()).update(members)
    return {cell: len(members) for cell, members in cells.items()}


def _check_cube(obs: list[dict[str, Any]], dims: tuple[str, ...], true: dict[tuple[str, ...], int]) -> None:
    published = {tuple(c[d] for d in dims): c for c in obs}
    assert set(true) <= set(published), set(true) - set(published)
    for key, cell in published.items():
        _check_count(cell, true.get(key, 0))


def _scm_main(concepts: list[dict[str, Any]]) -> list[str]:
    return sorted({c["code"] for c in concepts or [] if c["vocabulary"] == "scm2010" and len(c["code"]) == 1})


def _code(concepts: list[dict[str, Any]], vocabulary: str) -> str | None:
    return next((c["code"] for c in concepts or [] if c["vocabulary"] == vocabulary), None)


def test_ks0002_suspects_as_unique_persons(released: dict[str, Any], con0: duckdb.DuckDBPyConnection) -> None:
    groups: dict[str, set[str]] = {}
    crimes = con0.execute(
        "SELECT report_pseudonym, concepts FROM ev WHERE chain_step = 'POLICE_CRIME_REGISTERED' AND event_time < getvariable('p_end')"
    ).fetchall()
    for report, concepts in crimes:
        groups.setdefault(report, set()).update(_scm_main(concepts))
    bands = ((18, "L12_17"), (25, "L18_24"), (45, "L25_44"), (65, "L45_64"), (999, "L65"))
    units: dict[tuple[str, ...], set[str]] = {}
    for person, age, sex, report in con0.execute(
        "SELECT person_pseudonym, age_at_event, sex, report_pseudonym FROM cur WHERE chain_step = 'POLICE_SUSPECT_REGISTERED'"
    ).fetchall():
        band = "ONB" if age is None else next(b for limit, b in bands if age < limit)
        gender = {"M": "3000", "V": "4000"}.get(sex, "ONB")
        for group in sorted(groups.get(report, set())) or ["ONB"]:
            code = group if group == "ONB" else f"CRI{group}"
            units.setdefault((band, gender, code), set()).add(person)
    true = _cells(units, ("T001", "T001038", "T001161"))
    assert true[("T001", "T001038", "T001161")] > 50
    _check_cube(_obs(released["store"], "KS0002NED"), ("Leeftijd", "Geslacht", "Delicthoofdgroep"), true)


def test_ks0004_judgments_first_instance_and_appeal(
    released: dict[str, Any], con0: duckdb.DuckDBPyConnection
) -> None:
    units: dict[tuple[str, ...], set[str]] = {}
    for case, step, concepts in con0.execute(
        "SELECT case_pseudonym, chain_step, concepts FROM cur WHERE chain_step IN ('COURT_JUDGMENT', 'APPEAL_JUDGMENT')"
    ).fetchall():
        instance = "EERSTE_AANLEG" if step == "COURT_JUDGMENT" else "HOGER_BEROEP"
        outcome = _code(concepts, "rechtspraak-eindbeslissing") or _code(concepts, "hoger-beroep") or "ONB"
        units.setdefault((instance, outcome, _code(concepts, "sanctie") or "GEEN"), set()).add(case)
    true = _cells(units, ("T001", "T001", "T001"))
    assert true[("EERSTE_AANLEG", "T001", "T001")] > 10
    _check_cube(_obs(released["store"], "KS0004NED"), ("Instantie", "Uitkomst", "Hoofdstraf"), true)


def test_ks0007_chain_flow_cohort(released: dict[str, Any], con0: duckdb.DuckDBPyConnection) -> None:
    cohort = {
        r[0]
        for r in con0.execute(
            "SELECT case_pseudonym FROM cur WHERE chain_step = 'OM_REGISTRATION'"
        ).fetchall()
    }
    first: dict[str, tuple[Any, str]] = {}
    reached: dict[str, set[str]] = {"decision": set(), "judgment": set(), "execution": set()}
    for case, step, t, concepts in con0.execute(
        "SELECT case_pseudonym, chain_step, event_time, concepts FROM ev WHERE event_time < getvariable('p_end') "
        "AND case_pseudonym IS NOT NULL ORDER BY event_time"
    ).fetchall():
        if case not in cohort:
            continue
        if step == "OM_DECISION":
            reached["decision"].add(case)
            decision = _code(concepts, "om-beslissing")
            if decision == "ONVOORWAARDELIJK_SEPOT":
                decision = f"SEPOT_{_code(concepts, 'sepot-soort') or 'ONB'}"
            if case not in first or t < first[case][0]:
                first[case] = (t, decision or "ONB")
        elif step in ("COURT_JUDGMENT", "APPEAL_JUDGMENT"):
            reached["judgment"].add(case)
        elif step in ("EXECUTION_COLLECTION_STARTED", "SUPERVISION_STARTED") or (
            step == "DETENTION_INFLOW" and _code(concepts, "detentie-titel") != "VOORLOPIGE_HECHTENIS"
        ):
            reached["execution"].add(case)
    obs = _obs(released["store"], "KS0007NED")
    for measure, members in (
        ("InstroomOM_1", cohort),
        ("MetOMBeslissing_2", reached["decision"]),
        ("MetUitspraak_3", reached["judgment"]),
        ("MetTenuitvoerlegging_4", reached["execution"]),
    ):
        units: dict[tuple[str, ...], set[str]] = {}
        for case in members:
            units.setdefault((first[case][1] if case in first else "GEEN",), set()).add(case)
        true = _cells(units, ("T001",))
        _check_cube([c for c in obs if c["Measure"] == measure], ("EersteBeslissing",), true)
    assert len(cohort) > 50 and reached["decision"]


def test_every_count_of_every_table_is_a_multiple_of_five(released: dict[str, Any]) -> None:
    store: ObjectStore = released["store"]
    from releases.spec import load_specs

    for spec in load_specs():
        counts = {m.id for m in spec.measures if m.kind == "count"}
        for cell in _obs(store, spec.id):
            if cell["Measure"] in counts and cell["Value"] is not None:
                assert cell["Value"] % 5 == 0 and cell["Value"] >= 0, (spec.id, cell)


def _quantile(values: list[int], q: float) -> float | None:
    """Linear interpolation between order statistics (type 7), written out."""
    if not values:
        return None
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def test_release_holds_no_identifier_and_verifies(released: dict[str, Any]) -> None:
    store: ObjectStore = released["store"]
    records: list[Any] = []
    keys = list(store.list("releases/"))
    assert any(k.endswith(".csv") for k in keys) and any(k.endswith("Observations.json") for k in keys)
    for key in keys:
        data = store.get(key)
        if key.endswith(".parquet"):
            records += pq.read_table(io.BytesIO(data)).to_pylist()
        elif key.endswith(".json"):
            records.append(json.loads(data))
        elif key.endswith(".csv"):
            records += list(csv.DictReader(io.StringIO(data.decode()), delimiter=";"))
    count, findings = scan_all(records)
    assert count > 100 and findings == []
    # no pseudonym (64 hex digits) in any published cell, and no minimum or maximum is published
    for key in keys:
        if key.endswith(("Observations.json", ".csv")):
            body = store.get(key)
            assert not re.search(rb"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])", body), key
            assert b"Minimum" not in body and b"Maximum" not in body
    out = _cli(released["env"], "release", "verify", "--storage", released["storage"])
    assert "DIFFERS" not in out and f"ok {PERIOD} r0" in out
    # the CSV: ';', Dutch headers, '.' for suppressed with an empty value
    lines = store.get(f"releases/{PERIOD}/r0/KS0006NED/KS0006NED.csv").decode().splitlines()
    assert lines[0] == "Onderwerp;Ketentraject;Leeftijdsgroep bij de eerste stap;Perioden;Waarde;Status"
    assert all(line.endswith(";;.") for line in lines[1:] if line.endswith(";."))
    assert all("2026 september*" in line for line in lines[1:])


def test_late_event_makes_r1_and_leaves_r0_byte_identical(released: dict[str, Any]) -> None:
    store: ObjectStore = released["store"]
    services: Services = released["services"]
    before = {k: hashlib.sha256(store.get(k)).hexdigest() for k in store.list(f"releases/{PERIOD}/r0/")}
    late = chain_event(
        event_id=str(uuid.uuid4()),
        event_time=datetime(2026, 9, 12, 12, tzinfo=UTC),
        chain_step="POLICE_CRIME_REGISTERED",
        partner="politie",
        event_type="nl.ketenstroom.politie.CrimeRegistered",
        report=f"{uuid.uuid4().hex}{uuid.uuid4().hex}",
        concepts=[
            {
                "vocabulary": "scm2010",
                "code": c,
                "label": "x",
                "counting_unit": "misdrijf",
                "source_code_system": "t",
                "source_code": "t",
            }
            for c in ("1", "11")
        ],
    )
    with Registry(services.registry) as registry:
        assert publish_curated(services.kafka, registry, released["names"], [late]) == 1
    report = _sink(released["env"], released["storage"], released["group"])
    assert f"{PERIOD} r1 revised" in report["sealed"]
    after = {k: hashlib.sha256(store.get(k)).hexdigest() for k in store.list(f"releases/{PERIOD}/r0/")}
    assert after == before, "r0 of a release is never rewritten"
    manifest = json.loads(store.get(f"releases/{PERIOD}/r1/manifest.json"))
    manifest_sha = hashlib.sha256(store.get(f"releases/{PERIOD}/r1/manifest.json")).hexdigest()
    assert manifest["perioden_status"] == "Nader voorlopig"
    assert manifest["snapshot_manifest"] == f"snapshots/{PERIOD}/r1/manifest.json"
    assert (
        manifest["snapshot_manifest_sha256"]
        == hashlib.sha256(store.get(manifest["snapshot_manifest"])).hexdigest()
    )
    con = _con(store, revision=1)
    total = con.execute(
        "SELECT count(DISTINCT coalesce(report_pseudonym, event_id)) FROM cur WHERE chain_step = 'POLICE_CRIME_REGISTERED'"
    ).fetchall()[0][0]
    cell = next(
        c for c in _obs(store, "KS0001NED", 1) if (c["SoortMisdrijf"], c["RegioS"]) == ("T001161", "NL01")
    )
    _check_count(cell, total)
    codes = json.loads(store.get(f"releases/{PERIOD}/r1/KS0001NED/odata/PeriodenCodes.json"))
    assert codes[0]["Status"] == "Nader voorlopig" and codes[0]["Title"].endswith("**")
    # the sink's hook rebuilt the dashboard from the new release: it lists r1 and shows its status mark
    site = Path(_site_dir(released["storage"]))
    listed = json.loads((site / "site.json").read_text())["releases"]
    assert {"period": PERIOD, "revision": 1, "manifest_sha256": manifest_sha} in listed
    assert codes[0]["Title"] in (site / "tabellen" / "KS0001NED.html").read_text(encoding="utf-8")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cbsodata_and_cbsodata4_read_a_table_from_serve(released: dict[str, Any]) -> None:
    import cbsodata
    import cbsodata4

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve", "--port", str(port), "--storage", released["storage"]],
        env=released["env"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/odata/v1/Datasets").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "serve did not come up"
        cbsodata.options.use_https = False
        rows = cbsodata.get_data("KS0003NED", catalog_url=f"127.0.0.1:{port}")
        published = [c for c in _obs(released["store"], "KS0003NED") if c["Perioden"] == PERIOD]
        mine = [r for r in rows if r["Perioden"].startswith("2026 september")]
        assert len(mine) == len({(c["Beslissing"], c["Delicthoofdgroep"]) for c in published})
        total = next(
            r
            for r in mine
            if r["Beslissing"] == "Totaal beslissingen" and r["Delicthoofdgroep"] == "Totaal misdrijven"
        )
        expected = next(
            c["Value"]
            for c in published
            if (c["Measure"], c["Beslissing"], c["Delicthoofdgroep"])
            == ("BeslissingenOM_2", "T001", "T001161")
        )
        assert float(total["BeslissingenOM_2"]) == expected  # labels, not codes, as cbsodata gives them
        obs = cbsodata4.get_observations(
            "KS0003NED",
            catalog="KS",
            base_url=f"http://127.0.0.1:{port}/odata/v1",
            download_dir=Path(tempfile.mkdtemp()) / "KS0003NED",
        )
        v4 = obs[obs["Perioden"] == PERIOD]
        assert len(v4) == len(published)
        assert set(v4["ValueAttribute"]) <= {"None", "Confidential"}
        meta = obs.attrs["meta"]
        assert meta.identifier == "KS0003NED" and "Beslissing" in meta.dimension_identifiers
        assert {c["Status"] for c in meta.meta_dict["PeriodenCodes"]} <= {
            "Voorlopig",
            "Nader voorlopig",
            "Definitief",
        }
    finally:
        server.terminate()
        server.communicate(timeout=10)
