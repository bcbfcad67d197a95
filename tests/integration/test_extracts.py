"""Research extracts on generated chain data through the real stack.

publish (politie, OM, rechtspraak, CJIB) -> process -> sink -> seal (+ chain and person tables)
-> ``ketenstroom extract make`` (to a directory, and one study to s3proxy). The extract's k and l are recomputed here with DuckDB, independently of
``extracts/sdc.py``; the identifier scanner (``ketenstroom scan``) runs over it; no value of any
pseudonym column of the sealed snapshots appears in it; a rerun for the same study gives the same
pseudonyms and another study disjoint ones; too fine a request is refused with nothing written; the
register lists every extract and ``extract verify`` catches a changed file.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from ketenstroom.adapters.kafka import end_offsets, ensure_topics
from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.adapters.snapshots import Snapshots
from ketenstroom.contract import Topics
from ketenstroom.settings import SinkSettings
from producers.publish import Publisher
from sinks.runner import Sink
from sinks.seal import Sealer, SealPolicy
from synthetic import generate_chain
from tests.conftest import Services

PARTNERS = ("politie", "om", "rechtspraak", "cjib")
KEY = "extract-test-pseudonym-key-0123456789abcdef"  # pragma: allowlist secret
EXTRACT_KEY = "extract-test-extract-key-fedcba9876543210"
FAR = datetime(2030, 1, 1, tzinfo=UTC)
QUASI = ("age", "sex", "region", "om_registration_date")
SENSITIVE = ("om_decision", "court_outcome")


def _cli(services: Services, names: Topics, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **services.env(names),
        "KETENSTROOM_PSEUDONYM_KEY": KEY,
        "KETENSTROOM_PSEUDONYM_KEY_ID": "ext-k1",
        "KETENSTROOM_EXTRACT_KEY": EXTRACT_KEY,
        "KETENSTROOM_EXTRACT_KEY_ID": "ext-x1",
    }
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _request(path: Path, study: str, periods: list[str], **levels: str) -> Path:
    columns = {
        "case": "study_pseudonym",
        "person": "study_pseudonym",
        "age": "cbs",
        "sex": "as_is",
        "region": "province",
        "om_registration_date": "year",
        "om_decision": "as_is",
        "court_outcome": "as_is",
        "days_om_registration_to_om_decision": "days",
        **levels,
    }
    path.write_text(
        f'study = "{study}"\nrequester = "WODC, integration test"\npurpose = "lead times OM"\n'
        f"periods = {json.dumps(periods)}\nk = 5\nl = 2\nsuppression_budget = 0.05\n\n"
        '[population]\nreached = "om_registration"\nfrom = 2026-01-01\nto = 2027-01-01\n\n[columns]\n'
        + "".join(f'{name} = "{level}"\n' for name, level in columns.items()),
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def sealed(services: Services, tmp_path_factory: pytest.TempPathFactory) -> tuple[Topics, str]:
    """Generated exports through publish, process, sink and seal; returns the names and the store URL."""
    work = tmp_path_factory.mktemp("extracts")
    names = Topics(prefix=f"t{uuid.uuid4().hex[:10]}.")
    report = generate_chain(work / "exports", cases=4000, seed=1818, days=180, partners=PARTNERS)
    ensure_topics(services.kafka, names.all(PARTNERS), partitions=3, replication_factor=1)
    for partner in PARTNERS:
        with Publisher(partner, kafka=services.kafka, registry=services.registry, topics=names) as pub:
            assert pub.publish([Path(report.partners[partner].path)]).published > 0
    only = [arg for partner in PARTNERS for arg in ("--partner", partner)]
    processed = _cli(
        services, names, "process", *only, "--until-caught-up", "--app-id", f"{names.prefix}proc"
    )
    assert processed.returncode == 0, processed.stderr[-3000:]
    url = f"file://{work / 'snapshots'}"
    store = ObjectStore(url)
    policy = SealPolicy(grace=timedelta(days=14), final_after=timedelta(days=3650), clock=lambda: FAR)
    Sink(
        kafka=services.kafka,
        registry=services.registry,
        store=store,
        settings=SinkSettings(group_id=f"{names.prefix}sink"),
        topics=names,
        sealer=Sealer(store, policy),
    ).run(stop_at=end_offsets(services.kafka, [names.curated]))
    return names, url


def _platform_pseudonyms(root: Path) -> set[str]:
    data = f"{root}/snapshots/*/r*/data/*.parquet"
    tables = f"{root}/snapshots/*/r*/tables/*.parquet"
    with duckdb.connect() as con:
        rows = con.sql(
            f"select v from (select unnest([case_pseudonym, report_pseudonym, execution_pseudonym, "
            f"person_pseudonym]) v from read_parquet('{data}') union all "
            f"select unnest([case_pseudonym, person_pseudonym]) from read_parquet('{tables}', union_by_name=true)) "
            "where v is not null"
        ).fetchall()
    return {r[0] for r in rows}


def test_extract_meets_k_and_l_leaks_nothing_and_is_on_record(
    services: Services, sealed: tuple[Topics, str], tmp_path: Path
) -> None:
    names, url = sealed
    root = Path(url.removeprefix("file://"))
    periods = Snapshots(ObjectStore(url)).periods()
    assert len(periods) >= 6
    register = f"file://{tmp_path / 'register'}"
    request = _request(tmp_path / "study-a.toml", "wodc-2026-a", periods)
    made = _cli(
        services,
        names,
        "extract",
        "make",
        str(request),
        "--out",
        str(tmp_path / "a1"),
        "--storage",
        url,
        "--register",
        register,
    )
    assert made.returncode == 0, made.stdout + made.stderr[-3000:]
    summary = json.loads(made.stdout.strip().splitlines()[-1])
    manifest = json.loads((tmp_path / "a1" / "manifest.json").read_text(encoding="utf-8"))
    extract = tmp_path / "a1" / "extract.parquet"

    # k and l recomputed independently: group by the quasi-identifiers (missing is a value of its own)
    with duckdb.connect() as con:
        distinct = ", ".join(f"count(distinct coalesce({s}, '~')) as d_{s}" for s in SENSITIVE)
        k, l_, rows = con.sql(
            f"select min(n), least({', '.join(f'min(d_{s})' for s in SENSITIVE)}), sum(n) from ("
            f"select count(*) n, {distinct} from read_parquet('{extract}') group by {', '.join(QUASI)})"
        ).fetchall()[0]
        # the population, counted from the chain tables: cases with an OM registration in 2026 (local)
        population = con.sql(
            f"select count(distinct case_pseudonym) from read_parquet('{root}/snapshots/*/r*/tables/chain.parquet') "
            "where year(timezone('Europe/Amsterdam', om_registration_time)) = 2026"
        ).fetchall()[0][0]
    assert k >= 5 and l_ >= 2, (k, l_)
    assert (k, l_) == (manifest["achieved"]["k"], manifest["achieved"]["l"]) == (summary["k"], summary["l"])
    assert manifest["achieved"]["population_rows"] == population > 500
    assert rows == population - manifest["achieved"]["rows_removed"] == summary["rows"]
    assert manifest["achieved"]["rows_suppressed"] <= 0.05 * population
    assert [r["period"] for r in manifest["revisions"]] == periods
    table = pq.read_table(extract)
    assert table.column_names == [
        "case",
        "person",
        "age",
        "sex",
        "region",
        "om_registration_date",
        "om_decision",
        "court_outcome",
        "days_om_registration_to_om_decision",
    ]
    assert set(table["region"].to_pylist()) <= {None, "PV20", "PV23", "PV25", "PV26", "PV27", "PV28", "PV30"}
    assert set(table["om_registration_date"].to_pylist()) <= {None, "2026"}

    # the identifier scanner finds nothing; no platform pseudonym appears in any column
    scanned = _cli(services, names, "scan", "--storage", f"file://{tmp_path / 'a1'}")
    assert scanned.returncode == 0, scanned.stdout + scanned.stderr
    assert json.loads(scanned.stdout.strip().splitlines()[-1]) == {"records": rows, "findings": 0}
    platform = _platform_pseudonyms(root)
    assert len(platform) > 1000
    values = {str(v) for column in table.columns for v in column.to_pylist() if v is not None}
    assert not values & platform
    codebook = (tmp_path / "a1" / "codebook.json").read_text(encoding="utf-8")
    assert not any(p in codebook for p in platform)

    # a rerun of the same study: the same pseudonyms (and the same file); another study: disjoint ones
    again = _cli(
        services,
        names,
        "extract",
        "make",
        str(request),
        "--out",
        str(tmp_path / "a2"),
        "--storage",
        url,
        "--register",
        register,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    s3_out = f"s3://{services.s3.bucket}/{names.prefix}extracts/uu-2026-b"  # another study, to S3
    other = _cli(
        services,
        names,
        "extract",
        "make",
        str(_request(tmp_path / "b.toml", "uu-2026-b", periods)),
        "--out",
        s3_out,
        "--storage",
        url,
        "--register",
        register,
    )
    assert other.returncode == 0, other.stderr[-2000:]
    a2 = pq.read_table(tmp_path / "a2" / "extract.parquet")
    b = pq.read_table(io.BytesIO(ObjectStore(s3_out, services.s3).get("extract.parquet")))
    assert (tmp_path / "a2" / "extract.parquet").read_bytes() == extract.read_bytes()
    for column in ("case", "person"):
        assert a2[column].to_pylist() == table[column].to_pylist()
        assert not set(table[column].to_pylist()) & set(b[column].to_pylist())
    assert b.num_rows == table.num_rows

    # too fine: refused, the offending combinations printed, nothing written, nothing on record
    fine = _request(
        tmp_path / "fine.toml",
        "wodc-2026-fine",
        periods,
        age="band5",
        region="corop",
        om_registration_date="week",
    )
    refused = _cli(
        services,
        names,
        "extract",
        "make",
        str(fine),
        "--out",
        str(tmp_path / "fine"),
        "--storage",
        url,
        "--register",
        register,
    )
    assert refused.returncode == 1, refused.stdout + refused.stderr[-2000:]
    assert "refused" in refused.stderr and "combinations below the thresholds" in refused.stderr
    assert not (tmp_path / "fine" / "extract.parquet").exists()

    # the register: three extracts on record; verify passes, then catches a changed file
    listed = json.loads(_cli(services, names, "extract", "list", "--register", register, "--json").stdout)
    assert sorted(e["study"] for e in listed) == ["uu-2026-b", "wodc-2026-a", "wodc-2026-a"]
    assert manifest["extract_id"] in {e["extract_id"] for e in listed}
    ok = _cli(services, names, "extract", "verify", "--register", register)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    data = extract.read_bytes()
    extract.write_bytes(data[:200] + bytes([data[200] ^ 0xFF]) + data[201:])
    bad = _cli(services, names, "extract", "verify", "--register", register)
    assert bad.returncode == 1
    assert [line.split(":")[0] for line in bad.stdout.splitlines() if line.startswith("DIFFERENT")] == [
        f"DIFFERENT {manifest['extract_id']}"
    ]
