"""The real local stack: Kafka, Apicurio Registry and s3proxy started by devstack.

The single stack is left running at the end (other integration tests share it); the three-node
cluster is brought up and down here, since nothing else uses it.
"""

from __future__ import annotations

import time
import uuid

import boto3
import httpx
import pytest
from botocore.config import Config as BotoConfig
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from prometheus_client.parser import text_string_to_metric_families

from devstack import Endpoints, Stack, StackConfig
from devstack.process import is_alive

pytestmark = pytest.mark.integration


def produce(bootstrap: str, topic: str, values: list[bytes], **conf: str) -> None:
    failures: list[str] = []
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": "true", **conf})
    for value in values:
        producer.produce(
            topic, value=value, on_delivery=lambda err, _msg: failures.append(str(err)) if err else None
        )
    assert producer.flush(30) == 0, "messages left undelivered after 30 s"
    assert failures == []


def consume(bootstrap: str, topic: str, count: int, deadline_s: float = 120.0) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": "false",
        }
    )
    consumer.subscribe([topic])
    got: list[bytes] = []
    deadline = time.monotonic() + deadline_s
    try:
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            value = msg.value() if msg is not None and msg.error() is None else None
            if value is not None:
                got.append(value)
    finally:
        consumer.close()
    return got


def create_replicated_topic(bootstrap: str) -> str:
    """A 3-partition topic with replication factor 3 and min.insync.replicas 2 on all 3 brokers."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    assert len(admin.list_topics(timeout=10).brokers) == 3
    topic = f"infra-rf3-{uuid.uuid4().hex[:8]}"
    new = NewTopic(topic, num_partitions=3, replication_factor=3, config={"min.insync.replicas": "2"})
    admin.create_topics([new])[topic].result(timeout=30)
    meta = admin.list_topics(topic, timeout=10).topics[topic]
    assert all(len(p.replicas) == 3 and len(p.isrs) >= 2 for p in meta.partitions.values())
    return topic


def broker_metrics(port: int) -> dict[str, float]:
    """A broker's JMX exporter /metrics: unlabelled kafka_* samples by name."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).raise_for_status().text
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("kafka_") and not s.labels
    }


def test_single_stack_up_is_healthy_idempotent_and_usable() -> None:
    stack = Stack(StackConfig.from_env(nodes=1))
    eps: Endpoints = stack.up(progress=print)
    status = stack.status()
    assert {s.name for s in status} - {"prometheus", "alertmanager"} == {"kafka-1", "apicurio", "s3proxy"}
    assert all(s.healthy and s.pid for s in status), status
    pids = {s.name: s.pid for s in status}

    stack.up()  # no-op: nothing restarted
    assert {s.name: s.pid for s in stack.status()} == pids
    assert all(r.detail.endswith("already running") for r in stack.last_report)

    topic = f"infra-test-{uuid.uuid4().hex[:8]}"
    values = [f"v{i}".encode() for i in range(5)]
    produce(eps.kafka_bootstrap, topic, values, acks="all")
    assert consume(eps.kafka_bootstrap, topic, len(values)) == values

    # the broker's JMX exporter on its loopback metrics port: one active controller, a leader for the topic
    metrics = broker_metrics(stack.config.kafka_metrics_port_of(1))
    assert metrics["kafka_controller_kafkacontroller_activecontrollercount"] == 1
    assert metrics["kafka_server_replicamanager_leadercount"] >= 1
    assert metrics["kafka_server_brokertopicmetrics_messagesin_total"] >= len(values)

    config = httpx.get(f"{eps.registry_url}/config", timeout=10).raise_for_status().json()
    assert config["compatibilityLevel"] == "BACKWARD_TRANSITIVE"

    s3 = boto3.client(
        "s3",
        endpoint_url=eps.s3_endpoint,
        aws_access_key_id=eps.s3_access_key,
        aws_secret_access_key=eps.s3_secret_key,
        region_name=eps.s3_region,
        config=BotoConfig(s3={"addressing_style": "path"}),
    )
    key = f"infra-test/{uuid.uuid4().hex}.txt"
    s3.put_object(Bucket=eps.s3_bucket, Key=key, Body=b"hallo keten")
    assert s3.get_object(Bucket=eps.s3_bucket, Key=key)["Body"].read() == b"hallo keten"
    s3.delete_object(Bucket=eps.s3_bucket, Key=key)


def test_three_node_cluster_replicates_and_stops() -> None:
    stack = Stack(StackConfig.from_env(nodes=3))
    eps = stack.up(progress=print)
    try:
        # status() asks each broker once with a short timeout; on two busy cores (five JVMs when the
        # single stack runs too) one answer can be late, so poll the condition with a deadline
        deadline = time.monotonic() + 60
        kafka = [s for s in stack.status() if s.name.startswith("kafka-")]
        while not all(s.healthy for s in kafka) and time.monotonic() < deadline:
            kafka = [s for s in stack.status() if s.name.startswith("kafka-")]
        assert [s.name for s in kafka] == ["kafka-1", "kafka-2", "kafka-3"]
        assert all(s.healthy for s in kafka), kafka
        topic = create_replicated_topic(eps.kafka_bootstrap)
        produce(eps.kafka_bootstrap, topic, [b"a", b"b", b"c"], acks="all")
        assert sorted(consume(eps.kafka_bootstrap, topic, 3)) == [b"a", b"b", b"c"]
        # every node's JMX exporter: one active controller among them, the new partitions replicated
        scraped = [broker_metrics(stack.config.kafka_metrics_port_of(i)) for i in (1, 2, 3)]
        assert sum(m["kafka_controller_kafkacontroller_activecontrollercount"] for m in scraped) == 1
        assert all(m["kafka_server_replicamanager_underreplicatedpartitions"] == 0 for m in scraped)
        assert sum(m["kafka_server_replicamanager_leadercount"] for m in scraped) >= 3
        assert all(m["kafka_server_replicamanager_partitioncount"] >= 3 for m in scraped)
    finally:
        stopped = stack.down()
    assert {"kafka-1", "kafka-2", "kafka-3"} <= set(stopped)
    assert not any(is_alive(s.pid) for s in kafka if s.pid)
    assert all(s.pid is None for s in stack.status() if s.name.startswith("kafka-"))
