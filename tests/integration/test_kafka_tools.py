"""Kafka's own command-line tools, fetched with the broker and run by `ketenstroom infra kafka-tool`."""

from __future__ import annotations

import subprocess
import sys

from confluent_kafka import Producer

from ketenstroom.adapters.kafka import ensure_topics
from ketenstroom.contract import Topics
from tests.conftest import Services


def _tool(services: Services, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "infra",
            "kafka-tool",
            *args,
            "--bootstrap-server",
            services.kafka.bootstrap_servers,
        ],
        env=services.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_console_consumer_and_consumer_groups_run_against_the_stack(
    services: Services, names: Topics
) -> None:
    topic = names.raw("om")
    ensure_topics(services.kafka, [topic], partitions=1, replication_factor=1)
    producer = Producer(services.kafka.librdkafka())
    for n in range(3):
        producer.produce(topic, value=f"hallo-{n}".encode(), key=b"k")
    assert producer.flush(30) == 0
    group = f"{names.prefix}operator"

    read = _tool(
        services,
        "kafka-console-consumer",
        "--topic",
        topic,
        "--group",
        group,
        "--from-beginning",
        "--max-messages",
        "3",
        "--timeout-ms",
        "30000",
    )
    assert read.returncode == 0, read.stderr
    assert read.stdout.split() == ["hallo-0", "hallo-1", "hallo-2"]

    groups = _tool(services, "kafka-consumer-groups", "--describe", "--group", group)
    assert groups.returncode == 0, groups.stderr
    [row] = [line.split() for line in groups.stdout.splitlines() if line.startswith(group)]
    assert row[1] == topic and row[3] == row[4] == "3"  # group, topic, partition, current = end offset

    topics = _tool(services, "kafka-topics.sh", "--describe", "--topic", topic)
    assert topics.returncode == 0 and "PartitionCount: 1" in topics.stdout, topics.stderr


def test_an_unknown_tool_is_named_with_the_known_ones(services: Services) -> None:
    unknown = _tool(services, "kafka-console-comsumer")
    assert unknown.returncode == 2
    assert (
        "no Kafka tool 'kafka-console-comsumer'" in unknown.stderr
        and "kafka-console-consumer" in unknown.stderr
    )
