"""The walking skeleton end to end on the real stack: OM export -> raw.om -> processor -> curated -> Parquet."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from ketenstroom.adapters.kafka import end_offsets, ensure_topics
from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.adapters.snapshots import Snapshots
from ketenstroom.contract import Topics
from ketenstroom.contract.identifiers import normalise_parketnummer
from ketenstroom.settings import SinkSettings
from producers.publish import Publisher
from sinks.runner import Sink
from sinks.seal import Sealer, SealPolicy
from synthetic import OM_COLUMNS, om_decision_rows, write_csv
from tests.conftest import Services

KEY = "walking-skeleton-test-key-0123456789abcdef"  # pragma: allowlist secret


def _run_processor(services: Services, names: Topics, app_id: str) -> dict[str, dict[str, int]]:
    """Run `ketenstroom process` as its own process, as an operator would, until caught up."""
    env = {
        **os.environ,
        "KETENSTROOM_KAFKA_BOOTSTRAP_SERVERS": services.kafka.bootstrap_servers,
        "KETENSTROOM_REGISTRY_URL": services.registry.url,
        "KETENSTROOM_TOPIC_PREFIX": names.prefix,
        "KETENSTROOM_PSEUDONYM_KEY": KEY,
        "KETENSTROOM_PSEUDONYM_KEY_ID": "test-k1",
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "process",
            "--partner",
            "om",
            "--until-caught-up",
            "--app-id",
            app_id,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


FAR = datetime(2030, 1, 1, tzinfo=UTC)  # every 2026 period past its grace, none final yet


def _sealer(store: ObjectStore) -> Sealer:
    return Sealer(
        store, SealPolicy(grace=timedelta(days=14), final_after=timedelta(days=3650), clock=lambda: FAR)
    )


def _sink(services: Services, names: Topics, group_id: str, store: ObjectStore) -> Sink:
    return Sink(
        kafka=services.kafka,
        registry=services.registry,
        store=store,
        settings=SinkSettings(group_id=group_id),
        topics=names,
        sealer=_sealer(store),
    )


def _read_all(store: ObjectStore) -> list[dict[str, object]]:
    """Every row of the latest sealed revision of every period (what readers see)."""
    snapshots = Snapshots(store)
    rows: list[dict[str, object]] = []
    for period in snapshots.periods():
        manifest = snapshots.manifest(period)
        assert manifest is not None, f"{period} was not sealed"
        assert snapshots.verify(manifest) == []
        for entry in manifest.files:
            rows.extend(pq.read_table(io.BytesIO(store.get(entry.path))).to_pylist())
    return rows


@pytest.fixture
def delivered(services: Services, names: Topics, tmp_path: Path) -> dict[str, object]:
    """Generate, publish and process one OM export; returns what each stage reported."""
    ensure_topics(services.kafka, names.all(["om"]), partitions=3, replication_factor=1)
    export = tmp_path / "om.csv"
    written = write_csv(export, om_decision_rows(400, seed=11, noise=0.06), OM_COLUMNS)
    with Publisher("om", kafka=services.kafka, registry=services.registry, topics=names) as publisher:
        receipt = publisher.publish([export])
    counts = _run_processor(services, names, app_id=f"{names.prefix}processor")
    with export.open(encoding="utf-8") as fh:
        source = list(csv.DictReader(fh, delimiter=";"))
    return {"written": written, "receipt": receipt, "counts": counts, "source": source}


def test_export_flows_through_every_stage(
    services: Services, names: Topics, group_id: str, tmp_path: Path, delivered: dict[str, object]
) -> None:
    receipt = delivered["receipt"]
    counts = delivered["counts"]
    source = delivered["source"]
    assert isinstance(source, list)

    # producer: every row has one outcome, and bad rows were really rejected
    assert receipt.rows_read == delivered["written"] == 400  # type: ignore[attr-defined]
    assert receipt.reconciles and receipt.not_delivered == 0  # type: ignore[attr-defined]
    assert receipt.rejected_total > 0, "the noisy export has rows that must be rejected"  # type: ignore[attr-defined]
    bad_codes = sum(
        1
        for r in source
        if r["beslissing"] == "XXXX" and r["parketnummer"] and r["beslisdatum"] != "31-02-2026"
    )

    # processor: in = curated + dead, and exactly the unknown codes went to the DLQ
    assert counts["records_in"]["om"] == receipt.published  # type: ignore[attr-defined]
    assert counts["dead_lettered"].get("om", {}) == ({"unknown-code": bad_codes} if bad_codes else {})
    assert counts["curated"]["om"] + bad_codes == receipt.published  # type: ignore[attr-defined]

    # sink: local directory
    store = ObjectStore(f"file://{tmp_path / 'snapshots'}")
    stop = end_offsets(services.kafka, [names.curated])
    report = _sink(services, names, group_id, store).run(stop_at=stop)
    rows = _read_all(store)
    assert len(rows) == report.written == counts["curated"]["om"]
    assert sorted(m.period for m in report.sealed) == sorted(report.rows_per_period)

    # values: pseudonym present and stable (same key -> same HMAC), term mapped, no identifiers
    by_case = {normalise_parketnummer(r["parketnummer"]): r for r in source if r["parketnummer"]}
    key = KEY.encode()
    checked = 0
    for row in rows:
        assert row["pseudonym_key_id"] == "test-k1"
        assert row["person_pseudonym_source"] == "SKN"
        assert row["concepts"], "every curated event carries its uniform concept"
        concept = row["concepts"][0]  # type: ignore[index]
        expected = {
            "DAGV": "DAGVAARDING",
            "SEPO": "ONVOORWAARDELIJK_SEPOT",
            "STRB": "STRAFBESCHIKKING",
            "VBSE": "VOORWAARDELIJK_BELEIDSSEPOT",
            "TRAN": "TRANSACTIE",
            "VOEG": "OVERIG",
            "OVER": "OVERIG",
            "OPVZ": "OPROEPING_NA_VERZET",
        }
        assert concept["code"] == expected[concept["source_code"]]
        for parket, src in by_case.items():
            case_mac = hmac.new(key, f"case:parketnummer\x1f{parket}".encode(), hashlib.sha256).hexdigest()
            if case_mac == row["case_pseudonym"]:
                skn_mac = hmac.new(key, f"person:skn\x1f{src['skn']}".encode(), hashlib.sha256).hexdigest()
                assert row["person_pseudonym"] == skn_mac
                assert concept["source_code"] == src["beslissing"]
                checked += 1
                break
    assert checked == len(rows), "every curated row traces back to exactly its source row via the pseudonym"

    identifiers = {
        v
        for r in source
        for v in (r["bsn"], r["skn"], r["parketnummer"], r["pv_nummer"], r["geboortedatum"])
        if v
    }
    everything = json.dumps(rows, default=str)
    leaked = [v for v in identifiers if v in everything]
    assert not leaked, f"direct identifiers in the snapshot: {leaked[:3]}"

    # the README's one-line query reads the same files
    local = tmp_path / "snapshots" / "snapshots"
    n = duckdb.sql(f"select count(*) from '{local}/*/r0/data/*.parquet'").fetchall()[0][0]
    assert n == len(rows)


def test_sink_writes_to_s3proxy(
    services: Services, names: Topics, group_id: str, delivered: dict[str, object]
) -> None:
    store = ObjectStore(f"s3://{services.s3.bucket}/{names.prefix.rstrip('.')}", services.s3)
    stop = end_offsets(services.kafka, [names.curated])
    report = _sink(services, names, group_id, store).run(stop_at=stop)
    rows = _read_all(store)
    assert report.written == len(rows) == delivered["counts"]["curated"]["om"]  # type: ignore[index]
    assert all(str(r["period"]).startswith("2026MM") for r in rows)
    # a second sink in the same group has nothing left to do: offsets were committed after the write
    again = Sink(
        kafka=services.kafka,
        registry=services.registry,
        store=store,
        settings=SinkSettings(group_id=group_id),
        topics=names,
    ).run(stop_at=end_offsets(services.kafka, [names.curated], group_id=group_id))
    assert again.records == 0
