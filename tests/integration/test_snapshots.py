"""Sealed snapshots against the real stack, on a local directory and on s3proxy: periods at their
boundaries, sealing, a late event making r1 while r0 stays byte-identical, and verification."""

from __future__ import annotations

import hashlib
import io
import itertools
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow.parquet as pq
import pytest

from ketenstroom.adapters.kafka import end_offsets, ensure_topics
from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.adapters.registry import Registry
from ketenstroom.adapters.snapshots import Snapshots
from ketenstroom.contract import Topics
from ketenstroom.contract.snapshots import Manifest
from ketenstroom.settings import SinkSettings
from sinks.runner import Sink
from sinks.seal import Sealer, SealPolicy
from synthetic.curated import chain_event, publish_curated
from tests.conftest import Services

AS_OF = datetime(2027, 6, 1, tzinfo=UTC)  # every period below is past its grace, none is final

# event time (UTC) -> the CBS month it belongs to in Europe/Amsterdam
BOUNDARIES = {
    datetime(2025, 12, 31, 22, 59, 59, tzinfo=UTC): "2025MM12",  # 23:59:59 on new year's eve
    datetime(2025, 12, 31, 23, 0, 0, tzinfo=UTC): "2026MM01",  # midnight: the new year
    datetime(2026, 3, 29, 0, 59, 59, tzinfo=UTC): "2026MM03",  # just before summer time starts
    datetime(2026, 3, 31, 21, 59, 59, tzinfo=UTC): "2026MM03",  # 23:59:59 CEST, last second of March
    datetime(2026, 3, 31, 22, 0, 0, tzinfo=UTC): "2026MM04",  # midnight CEST: April
    datetime(2026, 10, 25, 0, 30, 0, tzinfo=UTC): "2026MM10",  # 02:30 CEST, the hour that repeats
    datetime(2026, 10, 31, 22, 59, 59, tzinfo=UTC): "2026MM10",  # 23:59:59 CET, last second of October
    datetime(2026, 10, 31, 23, 0, 0, tzinfo=UTC): "2026MM11",  # midnight CET: November
}


@pytest.fixture(params=["file", "s3"])
def storage_url(request: pytest.FixtureRequest, services: Services, names: Topics, tmp_path: Path) -> str:
    if request.param == "file":
        return f"file://{tmp_path / 'store'}"
    return f"s3://{services.s3.bucket}/{names.prefix.rstrip('.')}"


def _store(url: str, services: Services) -> ObjectStore:
    return ObjectStore(url, services.s3)


def _sink(services: Services, names: Topics, group: str, store: ObjectStore) -> Sink:
    return Sink(
        kafka=services.kafka,
        registry=services.registry,
        store=store,
        # several staged files per period, so sealing moves and merges many
        settings=SinkSettings(group_id=group, max_buffered=3),
        topics=names,
        sealer=Sealer(
            store, SealPolicy(grace=timedelta(days=14), final_after=timedelta(days=3650), clock=lambda: AS_OF)
        ),
    )


def _publish(services: Services, names: Topics, events: list[dict[str, object]]) -> None:
    with Registry(services.registry) as registry:
        assert publish_curated(services.kafka, registry, names, events) == len(events)


def _ids(store: ObjectStore, manifest: Manifest) -> list[str]:
    ids: list[str] = []
    for entry in manifest.files:
        table = pq.read_table(io.BytesIO(store.get(entry.path)), columns=["event_id", "period"])
        assert set(table["period"].to_pylist()) == {manifest.period}
        ids += table["event_id"].to_pylist()
    return ids


def _objects(store: ObjectStore, prefix: str) -> dict[str, str]:
    return {key: hashlib.sha256(store.get(key)).hexdigest() for key in store.list(prefix)}


def _event(moment: datetime, n: int) -> dict[str, object]:
    return chain_event(event_id=str(uuid.uuid4()), event_time=moment, case=f"{n:064x}")


@pytest.fixture
def topic(services: Services, names: Topics) -> Iterator[Topics]:
    ensure_topics(services.kafka, [names.curated], partitions=3, replication_factor=1)
    yield names


def test_periods_are_sealed_revised_and_verified(
    services: Services, topic: Topics, group_id: str, storage_url: str
) -> None:
    store = _store(storage_url, services)
    events = [_event(moment, n) for n, moment in enumerate(BOUNDARIES)]
    _publish(services, topic, [*events, events[3]])  # the last one re-delivered: same event id
    report = _sink(services, topic, group_id, store).run(stop_at=end_offsets(services.kafka, [topic.curated]))

    expected: dict[str, set[str]] = {}
    for event, period in zip(events, BOUNDARIES.values(), strict=True):
        expected.setdefault(period, set()).add(str(event["event_id"]))
    snapshots = Snapshots(store)
    assert sorted(m.period for m in report.sealed) == sorted(expected)
    for period, ids in expected.items():
        manifest = snapshots.manifest(period)
        assert manifest is not None and (manifest.revision, manifest.status) == (0, "provisional")
        found = _ids(store, manifest)
        assert sorted(found) == sorted(ids), f"{period}: wrong rows"
        assert manifest.rows == len(ids) and manifest.rows_per_partner == {"om": len(ids)}
        assert snapshots.verify(manifest) == []
    assert report.duplicates == 1 and report.written == len(events) + 1
    assert list(store.list("staging/")) == []

    # a late event for March and a re-delivery of one March had already: r1, with r0 untouched
    march_r0 = _objects(store, "snapshots/2026MM03/r0/")
    late = _event(datetime(2026, 3, 15, 12, tzinfo=UTC), 99)
    _publish(services, topic, [late, events[2]])
    again = _sink(services, topic, group_id, store).run(
        stop_at=end_offsets(services.kafka, [topic.curated], group_id=group_id)
    )
    assert [(m.period, m.revision, m.status, m.rows_new) for m in again.sealed] == [
        ("2026MM03", 1, "revised", 1)
    ]
    assert again.sealed[0].duplicates_dropped == 1
    r1 = snapshots.manifest("2026MM03")
    assert r1 is not None and r1.revision == 1
    assert sorted(_ids(store, r1)) == sorted([*expected["2026MM03"], str(late["event_id"])])
    assert _objects(store, "snapshots/2026MM03/r0/") == march_r0, "r0 must stay byte-identical"
    assert all(len(snapshots.manifests(p)) == 1 for p in expected if p != "2026MM03")

    # tamper with one file of r0: verify names it and fails; the other revisions still verify
    victim = sorted(k for k in march_r0 if k.endswith(".parquet"))[0]
    data = store.get(victim)
    store.put(victim, data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    result = subprocess.run(
        [sys.executable, "-m", "cli", "snapshot", "verify", "--storage", storage_url],
        env=services.env(topic),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    different = [line for line in result.stdout.splitlines() if line.startswith("DIFFERENT")]
    assert different and all("2026MM03 r0" in line and victim in line for line in different)
    assert f"verified {len(expected) + 1} revisions, 1 with differences" in result.stdout


def test_snapshot_commands_list_and_show(
    services: Services, topic: Topics, group_id: str, tmp_path: Path
) -> None:
    url = f"file://{tmp_path / 'store'}"
    store = _store(url, services)
    _publish(services, topic, [_event(datetime(2026, 5, 2, 10, tzinfo=UTC), n) for n in range(5)])
    _sink(services, topic, group_id, store).run(stop_at=end_offsets(services.kafka, [topic.curated]))
    env = services.env(topic)

    def run(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "cli", "snapshot", *args, "--storage", url],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    listed = run("list", "--json")
    assert '"period": "2026MM05"' in listed and '"r0 provisional"' in listed
    shown = Manifest.model_validate_json(run("show", "2026MM05", "--json"))
    assert (shown.rows, shown.revision, shown.status) == (5, 0, "provisional")
    human = run("show", "2026MM05")
    assert "read: " in human and "2026MM05/r0/data/*.parquet" in human
    assert "ok 2026MM05 r0 provisional" in run("verify")


def test_chain_table_follows_a_case_across_periods_with_exact_lead_times(
    services: Services, topic: Topics, group_id: str, storage_url: str
) -> None:
    store = _store(storage_url, services)
    case, report, person = "c" * 64, "r" * 64, "p" * 64
    amsterdam = ZoneInfo("Europe/Amsterdam")
    steps = [  # local times; the police step is in winter time, the others in summer time
        (
            "POLICE_SUSPECT_REGISTERED",
            "politie",
            datetime(2026, 2, 20, 23, 30, tzinfo=amsterdam),
            None,
            report,
        ),
        ("OM_REGISTRATION", "om", datetime(2026, 3, 2, 9, 0, tzinfo=amsterdam), case, report),
        ("OM_DECISION", "om", datetime(2026, 5, 10, 0, 15, tzinfo=amsterdam), case, None),
        ("COURT_JUDGMENT", "rechtspraak", datetime(2026, 7, 1, 14, 0, tzinfo=amsterdam), case, None),
    ]
    events = [
        chain_event(
            event_id=str(uuid.uuid4()),
            event_time=moment.astimezone(UTC),
            chain_step=step,
            partner=partner,
            event_type=f"nl.ketenstroom.{partner}.{step.title()}",
            case=c,
            report=r,
            person=person,
            age=16,
        )
        for step, partner, moment, c, r in steps
    ]
    _publish(services, topic, events)
    _sink(services, topic, group_id, store).run(stop_at=end_offsets(services.kafka, [topic.curated]))
    manifest = Snapshots(store).manifest("2026MM07")
    assert manifest is not None
    tables = Snapshots(store).tables(manifest)
    assert tables is not None and set(tables.files) == {"chain", "person"}
    assert Snapshots(store).verify(manifest) == []
    chain = pq.read_table(io.BytesIO(store.get(tables.files["chain"].path))).to_pylist()
    assert len(chain) == 1
    row = chain[0]
    days = [(b[2].date() - a[2].date()).days for a, b in itertools.pairwise(steps)]
    assert days == [10, 69, 52]  # calendar days in Amsterdam: 23:30 and 00:15 count on their local day
    assert (row["case_pseudonym"], row["person_pseudonym"]) == (case, person)
    assert row["police_registration_time"] == steps[0][2]
    assert row["judgment_time"] == steps[3][2]
    assert row["days_police_registration_to_om_registration"] == days[0]
    assert row["days_om_registration_to_om_decision"] == days[1]
    assert row["days_om_decision_to_judgment"] == days[2]
    assert row["days_police_registration_to_om_decision"] == days[0] + days[1]
    assert row["days_police_registration_to_judgment"] == sum(days)
    assert row["execution_start_time"] is None and row["days_judgment_to_execution_start"] is None
    assert row["juvenile"] is True and row["anomalies"] == []
    # the March snapshot's chain table knows only what was known by the end of March
    march = Snapshots(store).manifest("2026MM03")
    march_tables = None if march is None else Snapshots(store).tables(march)
    assert march_tables is not None
    early = pq.read_table(io.BytesIO(store.get(march_tables.files["chain"].path))).to_pylist()
    assert [(r["om_registration_time"] is not None, r["om_decision_time"]) for r in early] == [(True, None)]
    person_rows = pq.read_table(io.BytesIO(store.get(tables.files["person"].path))).to_pylist()
    assert [(p["person_pseudonym"], p["cases_total"], p["furthest_step"]) for p in person_rows] == [
        (person, 1, "judgment")
    ]
