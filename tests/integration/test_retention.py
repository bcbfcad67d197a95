"""Retention is a decision: ``ketenstroom topics`` declares it per topic kind, ``--check`` reports drift.

On the real broker (the local stack enforces retention every second): a dead letter ten days old
survives in a DLQ that ``topics`` created, while the same record in a topic left at the broker's 7-day
default is deleted by the very same retention pass.
"""

from __future__ import annotations

import subprocess
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from ketenstroom.adapters.kafka import ensure_topics, topic_configs
from ketenstroom.contract import Topics
from tests.conftest import Services

WEEK_MS = 7 * 86_400_000
DAY_MS = 86_400_000


def ks(services: Services, names: Topics, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env=services.env(names),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_topics_declares_retention_per_kind_and_check_reports_drift(
    services: Services, names: Topics
) -> None:
    created = ks(services, names, "topics", "--partitions", "1")
    assert created.returncode == 0, created.stderr[-3000:]
    changelog = f"ketenstroom-processor.dedup.{names.raw('om')}"
    live = topic_configs(
        services.kafka, [names.raw("om"), names.dlq("om"), names.dlq_status("om"), changelog, names.curated]
    )
    raw, dlq, status, dedup, curated = (live[n] for n in live)
    assert raw is not None and dlq is not None and status is not None and dedup is not None
    assert curated is not None
    assert raw["retention.ms"] == str(14 * DAY_MS)  # partners/om/partner.toml: retention_days = 14
    assert dlq["retention.ms"] == "-1"  # kept until resolved, not the broker's 7 days
    assert int(curated["retention.ms"]) == 400 * DAY_MS > WEEK_MS
    assert status["cleanup.policy"] == "compact" and dedup["cleanup.policy"] == "compact"

    clean = ks(services, names, "topics", "--partitions", "1", "--check")
    assert clean.returncode == 0, clean.stdout + clean.stderr[-3000:]
    assert "drift" not in clean.stdout

    # an operator (or a cluster default) puts the DLQ back to 7 days: --check names it and fails
    admin = AdminClient(services.kafka.librdkafka())
    change = ConfigResource(
        ResourceType.TOPIC,
        names.dlq("om"),
        incremental_configs=[
            ConfigEntry("retention.ms", str(WEEK_MS), incremental_operation=AlterConfigOpType.SET)
        ],
    )
    for future in admin.incremental_alter_configs([change]).values():
        future.result(timeout=30)
    drifted = ks(services, names, "topics", "--partitions", "1", "--check")
    assert drifted.returncode == 1, drifted.stdout + drifted.stderr[-3000:]
    lines = [line for line in drifted.stdout.splitlines() if line.startswith("drift")]
    assert lines == [f"drift  {names.dlq('om')}: retention.ms={WEEK_MS} but declared -1"], drifted.stdout


def test_a_dead_letter_older_than_the_broker_default_is_still_there(
    services: Services, names: Topics
) -> None:
    created = ks(services, names, "topics", "--partitions", "1")
    assert created.returncode == 0, created.stderr[-3000:]
    control = f"{names.prefix}broker-default"  # what every topic was before: the broker's 7 days
    ensure_topics(services.kafka, [control], partitions=1, replication_factor=1)
    old = int(time.time() * 1000) - 10 * DAY_MS
    producer = Producer(services.kafka.librdkafka(acks="all"))
    for topic in (names.dlq("om"), control):
        producer.produce(topic, key=b"evt-1", value=b"dead letter, unknown code", timestamp=old)
    assert producer.flush(30) == 0

    consumer = Consumer(services.kafka.librdkafka(group_id=f"{names.prefix}probe", enable_auto_commit=False))
    try:
        low = {t: 0 for t in (names.dlq("om"), control)}
        deadline = time.monotonic() + 60
        while low[control] == 0:  # the retention pass (every second locally) deletes the control's record
            assert time.monotonic() < deadline, "the broker never applied its default retention"
            for topic in low:
                low[topic], _high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        assert low[names.dlq("om")] == 0, "the dead letter was deleted by retention"
        consumer.assign([TopicPartition(names.dlq("om"), 0, 0)])
        msg = consumer.poll(10)
        assert msg is not None and msg.error() is None
        assert msg.value() == b"dead letter, unknown code" and msg.timestamp()[1] == old
    finally:
        consumer.close()
