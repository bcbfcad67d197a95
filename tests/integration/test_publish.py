"""`ketenstroom publish` against the real broker and registry: receipts, rejects, ids, failures."""

from __future__ import annotations

import codecs
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka import Consumer

from ketenstroom.adapters.kafka import ensure_topics
from ketenstroom.adapters.registry import Registry
from ketenstroom.contract import Topics
from ketenstroom.contract.codec import decode
from ketenstroom.contract.wire import unframe
from ketenstroom.settings import KafkaSettings
from producers.publish import EXIT_NOT_DELIVERED, EXIT_SOME_REJECTED, Publisher
from tests.conftest import Services

HEADER = (
    "soort;recordnummer;versie;parketnummer;pv_nummer;skn;bsn;geboortedatum;geslacht;postcode;"
    "beslissing;sepotgrond;wetsartikel;beslisdatum;inschrijfdatum;bronsysteem"
)
ROWS = [
    "BESLISSING;OM-B-1;1;13-246712-26;PL07B3 2026123456-1;12345678;123456782;17-05-1990;M;1011 AB;DAGV;;310 Sr;02-03-2026 10:15;01-02-2026;COMPAS",
    "BESLISSING;OM-B-2;1;13/246713-26;;22345678;;01-01-1985;V;3011 AA;SEPO;02;300 Sr;2026-03-04;2026-02-01;GPS",
    "INSCHRIJVING;OM-I-3;1;10-000001-26;PL07B3 2026123457-1;32345678;;;M;;;;350 Sr;;05-01-2026;COMPAS",
    "BESLISSING;OM-B-4;1;13-246714-26;;42345678;;17-05-1990;M;;DAGV;;;31-02-2026;01-02-2026;COMPAS",
    "BESLISSING;OM-B-5;1;;;52345678;;17-05-1990;M;;DAGV;;;01-03-2026;01-02-2026;COMPAS",
    "BESLISSING;OM-B-1;1;13-246712-26;PL07B3 2026123456-1;12345678;123456782;17-05-1990;M;1011 AB;DAGV;;310 Sr;02-03-2026 10:15;01-02-2026;COMPAS",
    "VERZET;OM-X-7;1;13-246715-26;;;;;;;;;;01-03-2026;01-03-2026;COMPAS",
    "BESLISSING;OM-B-8;1;13-246716-26;;62345678;;;M;;STRB;;;01-03-2026",
    "BESLISSING;OM-B-1;2;13-246712-26;PL07B3 2026123456-1;12345678;123456782;17-05-1990;M;1011 AB;VOEG;;310 Sr;03-03-2026 10:15;01-02-2026;COMPAS",
]
EXPECTED_REJECTS = {
    "invalid-event-time": 1,
    "missing-field": 1,
    "duplicate-in-file": 1,
    "unknown-record-type": 1,
    "malformed-line": 1,
}


def _export(tmp_path: Path) -> Path:
    path = tmp_path / "om.csv"
    path.write_text("\n".join([HEADER, *ROWS]) + "\n", encoding="cp1252")
    return path


def _consume_ids(services: Services, topic: str, expected: int, polls: int = 60) -> list[str]:
    consumer = Consumer(
        services.kafka.librdkafka(
            group_id=f"{topic}-reader", auto_offset_reset="earliest", enable_auto_commit=False
        )
    )
    consumer.subscribe([topic])
    ids: list[str] = []
    try:
        with Registry(services.registry) as registry:
            for _ in range(polls):  # bounded: at most ``polls`` polls of 1 s
                for msg in consumer.consume(100, timeout=1.0):
                    schema_id, payload = unframe(msg.value())
                    ids.append(
                        str(decode(registry.writer_schema(schema_id), payload)["metadata"]["event_id"])
                    )
                if len(ids) >= expected:
                    break
    finally:
        consumer.close()
    return ids


def test_receipt_reconciles_and_names_each_reject(services: Services, names: Topics, tmp_path: Path) -> None:
    ensure_topics(services.kafka, [names.raw("om")], partitions=1, replication_factor=1)
    export = _export(tmp_path)
    with Publisher("om", kafka=services.kafka, registry=services.registry, topics=names) as publisher:
        receipt = publisher.publish([export])
    assert receipt.rows_read == len(ROWS)
    assert receipt.rejected == EXPECTED_REJECTS
    assert receipt.published == len(ROWS) - sum(EXPECTED_REJECTS.values()) == 4
    assert receipt.reconciles and receipt.exit_code == EXIT_SOME_REJECTED
    assert receipt.duplicates_in_file == 1
    assert (
        len(receipt.schema_ids) == 2
    )  # both OM record types, each under its TopicRecordNameStrategy subject
    rejects = [json.loads(line) for line in Path(receipt.reject_file or "").read_text().splitlines()]
    assert {(r["line"], r["field"], r["reason"]) for r in rejects} == {
        (5, "beslisdatum", "invalid-event-time"),
        (6, "parketnummer", "missing-field"),
        (7, "recordnummer", "duplicate-in-file"),
        (8, "soort", "unknown-record-type"),
        (9, "*", "malformed-line"),
    }
    bad_date = next(r for r in rejects if r["reason"] == "invalid-event-time")
    assert bad_date["value"] == "31-02-2026" and "dd-mm-jjjj" in bad_date["message"]


def test_redelivery_yields_the_same_event_ids(services: Services, names: Topics, tmp_path: Path) -> None:
    ensure_topics(services.kafka, [names.raw("om")], partitions=1, replication_factor=1)
    export = _export(tmp_path)
    for _ in range(2):
        with Publisher("om", kafka=services.kafka, registry=services.registry, topics=names) as publisher:
            assert publisher.publish([export]).published == 4
    ids = _consume_ids(services, names.raw("om"), expected=8)
    assert len(ids) == 8
    assert ids[:4] == ids[4:]
    assert len(set(ids)) == 4  # OM-B-1 versions 1 and 2 are different events


def test_unreachable_broker_reports_nothing_as_published(
    services: Services, names: Topics, tmp_path: Path
) -> None:
    """An unreachable cluster refuses the delivery before a row is read, within connect_timeout_s."""
    dead = KafkaSettings(bootstrap_servers="127.0.0.1:1", connect_timeout_s=3)
    started = time.monotonic()
    with Publisher(
        "om", kafka=dead, registry=services.registry, topics=names, message_timeout_ms=3000
    ) as publisher:
        receipt = publisher.publish([_export(tmp_path)])
    assert time.monotonic() - started < 3 + 3 + 10  # the wait, the delivery event's own 3 s, slack
    assert receipt.published == 0 and receipt.rows_read == 0
    assert (
        receipt.failure is not None and "could not reach Kafka at 127.0.0.1:1 within 3 s" in receipt.failure
    )
    assert receipt.reconciles and receipt.exit_code == EXIT_NOT_DELIVERED


def test_cli_exit_codes_for_unreachable_services(services: Services, names: Topics, tmp_path: Path) -> None:
    export = _export(tmp_path)
    base = {
        **os.environ,
        "KETENSTROOM_TOPIC_PREFIX": names.prefix,
        "KETENSTROOM_REGISTRY_URL": services.registry.url,
    }
    no_registry = subprocess.run(
        [sys.executable, "-m", "cli", "publish", "--partner", "om", str(export)],
        env={
            **base,
            "KETENSTROOM_KAFKA_BOOTSTRAP_SERVERS": services.kafka.bootstrap_servers,
            "KETENSTROOM_REGISTRY_URL": "http://127.0.0.1:1/apis/ccompat/v7",
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert no_registry.returncode == EXIT_NOT_DELIVERED, no_registry.stderr
    assert "not delivered" in no_registry.stderr and "Traceback" not in no_registry.stderr
    [failed] = [json.loads(p.read_text()) for p in tmp_path.glob("om.csv.*.receipt.json")]
    assert failed["published"] == 0 and failed["exit_code"] == EXIT_NOT_DELIVERED and failed["failure"]
    ensure_topics(services.kafka, [names.raw("om")], partitions=1, replication_factor=1)
    ok = subprocess.run(
        [sys.executable, "-m", "cli", "publish", "--partner", "om", str(export)],
        env={**base, "KETENSTROOM_KAFKA_BOOTSTRAP_SERVERS": services.kafka.bootstrap_servers},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ok.returncode == EXIT_SOME_REJECTED, ok.stderr
    receipts = [json.loads(p.read_text()) for p in tmp_path.glob("om.csv.*.receipt.json")]
    [receipt] = [r for r in receipts if r["delivery_id"] != failed["delivery_id"]]  # the first one is kept
    assert receipt["published"] == 4 and receipt["rejected_total"] == 5 and receipt["reconciles"]


def test_a_column_missing_from_the_header_rejects_every_row_of_the_types_that_need_it(
    services: Services, names: Topics, tmp_path: Path
) -> None:
    """The header is checked once per file; each row still gets its own reject naming the column."""
    ensure_topics(services.kafka, [names.raw("om")], partitions=1, replication_factor=1)
    drop = HEADER.split(";").index("postcode")
    path = tmp_path / "om.csv"
    lines = [";".join(v for i, v in enumerate(line.split(";")) if i != drop) for line in [HEADER, *ROWS]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with Publisher("om", kafka=services.kafka, registry=services.registry, topics=names) as publisher:
        receipt = publisher.publish([path])
    assert receipt.published == 0 and receipt.reconciles
    assert receipt.rejected == {"missing-column": 7, "unknown-record-type": 1, "malformed-line": 1}
    rejects = [json.loads(line) for line in Path(receipt.reject_file or "").read_text().splitlines()]
    missing = [r for r in rejects if r["reason"] == "missing-column"]
    assert [r["line"] for r in missing] == [2, 3, 4, 5, 6, 7, 10]
    assert {r["field"] for r in missing} == {"postcode"} and all(r["row"] for r in missing)


def test_a_bom_then_windows_1252_export_is_delivered_twice_with_receipts_kept(
    services: Services, names: Topics, tmp_path: Path
) -> None:
    """The exact pattern from the field: UTF-8 BOM, then Windows-1252 bytes (an é): exit 0 or 1, a
    receipt that says how it was read, never a traceback; a second delivery keeps the first's files."""
    ensure_topics(services.kafka, [names.raw("om")], partitions=1, replication_factor=1)
    export = tmp_path / "om.csv"
    rows = [ROWS[0].replace("COMPAS", "Café"), ROWS[3]]  # one accepted (é in bronsysteem), one rejected
    export.write_bytes(codecs.BOM_UTF8 + "\r\n".join([HEADER, *rows, ""]).encode("cp1252"))
    assert export.read_bytes()[:3] == codecs.BOM_UTF8 and b"Caf\xe9" in export.read_bytes()
    runs = [
        subprocess.run(
            [sys.executable, "-m", "cli", "publish", "--partner", "om", str(export)],
            env=services.env(names),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        for _ in range(2)
    ]
    for run in runs:
        assert run.returncode in (0, EXIT_SOME_REJECTED), run.stderr
        assert "Traceback" not in run.stderr + run.stdout
        assert "byte-order mark" in run.stdout and "Windows-1252" in run.stdout
    receipts = sorted(tmp_path.glob("om.csv.*.receipt.json"))
    rejects = sorted(tmp_path.glob("om.csv.*.rejects.jsonl"))
    assert len(receipts) == 2 and len(rejects) == 2  # one of each per delivery, the earlier ones kept
    for path in receipts:
        receipt = json.loads(path.read_text())
        assert receipt["published"] == 1 and receipt["rejected"] == {"invalid-event-time": 1}
        assert any("Windows-1252" in note for note in receipt["notes"]) and receipt["failure"] is None
    for path in rejects:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        [reject] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        assert reject["row"]["bronsysteem"] == "COMPAS"
    [event_id] = set(_consume_ids(services, names.raw("om"), expected=2))  # the same event, twice
    assert event_id


def test_a_file_for_another_partner_is_refused_whole(
    services: Services, names: Topics, tmp_path: Path
) -> None:
    ensure_topics(services.kafka, [names.raw("politie")], partitions=1, replication_factor=1)
    export = _export(tmp_path)
    run = subprocess.run(
        [sys.executable, "-m", "cli", "publish", "--partner", "politie", str(export)],
        env=services.env(names),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == EXIT_NOT_DELIVERED, run.stdout + run.stderr
    assert "missing" in run.stderr and "registratienummer" in run.stderr and "fits partner 'om'" in run.stderr
    [receipt] = [json.loads(p.read_text()) for p in tmp_path.glob("om.csv.*.receipt.json")]
    assert receipt["rows_read"] == 0 and receipt["published"] == 0 and receipt["reject_file"] is None
    assert _consume_ids(services, names.raw("politie"), expected=1, polls=3) == []
