"""Broker loss on the 3-node cluster: nothing acknowledged is lost, nothing is doubled.

The cluster (``ketenstroom infra up --nodes 3``) has replication factor 3, ``min.insync.replicas=2``
and unclean leader election off; ``publish`` and the processor produce with ``acks=all`` and
idempotence. The test runs the real commands as subprocesses on a generated chain, twice over the same
four export files: once on a healthy cluster (the reference), once while it SIGKILLs the leader of a raw
partition three times and the active KRaft controller once, restarting each node and waiting for the
partition to move and for its replicas to be back in sync (conditions, never a sleep). Then:

* every record ``publish`` reported as acknowledged (its receipts) is in the raw topic, once;
* every raw record is exactly once in curated (read_committed) or in the DLQ, as in the reference;
* the snapshots the sink seals from it equal the reference's row for row;
* every partition of the run's topics and of the broker's own state is back to three in-sync replicas.

Limits: SIGKILL leaves the operating system's page cache alone, so what a broker wrote but never
fsynced survives it. This proves safety against process crashes, not against power loss or a disk
that lies (Kafka relies on replication for that, and the three nodes here share one disk). One node
is down at a time; a network partition, a slow disk or two failures at once are not tried, nor a
follower that falls out of the ISR before the leader dies (the case where ``min.insync.replicas=1``
with unclean election loses data: stalling two followers here would also stall two of the three KRaft
voters, which share their processes). The processor runs throughout under a supervisor that restarts
it when it exits with an error: after a transaction-coordinator failover librdkafka may declare its
transactional producer fenced (fatal, "old epoch"), and the exactly-once checks then cover the restart.
Bounded: three to six minutes on a 2-core machine at load 9 to 20, most of it the four restarts; every wait
has its own deadline.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from devstack import Stack, StackConfig
from devstack.process import is_alive, owned_pid
from devstack.services import kafka_services
from ketenstroom.adapters.kafka import all_partitions, ensure_topics, read_to_end
from ketenstroom.contract import Topics
from ketenstroom.contract.deliveries import DeliveryEvent
from producers.publish import Publisher
from tests.conftest import Services, services_of
from tests.integration.exactness import (
    caught_up,
    count,
    event_ids,
    om_deliveries,
    process_to_end,
    sink_to_end,
    wait_for,
)

pytestmark = pytest.mark.fault

PARTNER = "om"
KEY = "broker-loss-test-key-0123456789abcdef01"
CHUNKS = 4  # deliveries: three with a partition leader killed mid-way, one with the controller killed
DEADLINE_S = 180.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Stack, Services]]:
    stack = Stack(StackConfig.from_env(nodes=3))
    was_running = all(s.healthy for s in stack.status())
    yield stack, services_of(stack.up(), started_here=not was_running)
    if not was_running:
        stack.down()


def _env(services: Services, names: Topics) -> dict[str, str]:
    return {
        **services.env(names),
        "KETENSTROOM_TOPIC_REPLICATION_FACTOR": "3",
        "KETENSTROOM_TOPIC_MIN_INSYNC_REPLICAS": "2",
        "KETENSTROOM_PSEUDONYM_KEY": KEY,
        "KETENSTROOM_PSEUDONYM_KEY_ID": "loss1",
    }


def _cli(env: dict[str, str], *args: str, timeout: float = DEADLINE_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


T0 = time.monotonic()


def _say(what: str) -> None:
    """A timeline on stdout (pytest shows it with a failure, or with ``-s``)."""
    print(f"[{time.monotonic() - T0:7.1f} s] {what}", flush=True)


def _wait(what: str, condition: Callable[[], bool], deadline_s: float = DEADLINE_S) -> None:
    _say(f"{what} ({wait_for(what, condition, deadline_s):.1f} s)")


def _chunks(tmp: Path) -> list[Path]:
    return om_deliveries(tmp, cases=24_000, seed=1616, deliveries=CHUNKS)


def _publish(env: dict[str, str], export: Path, receipt: Path) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "cli", "publish", "-p", PARTNER, str(export), "--receipt", str(receipt)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _acknowledged(child: subprocess.Popen[str], receipt: Path) -> dict[str, Any]:
    """The receipt of a finished publish; exit 0 or 1 (some rows rejected by design), or 3 (not all
    delivered, counted in the receipt: the operator's rerun follows)."""
    _out, err = child.communicate(timeout=DEADLINE_S)
    assert child.returncode in (0, 1, 3), f"publish exit {child.returncode}:\n{err[-3000:]}"
    found: dict[str, Any] = json.loads(receipt.read_text())
    assert found["reconciles"], found
    return found


def _topics(env: dict[str, str]) -> None:
    made = _cli(env, "topics")
    assert made.returncode == 0, made.stderr[-3000:]
    check = _cli(env, "topics", "--check")  # RF 3, min ISR 2, unclean election off: as declared
    assert check.returncode == 0 and "drift" not in check.stdout, check.stdout + check.stderr[-3000:]


def _metadata(services: Services) -> Any:
    return AdminClient(services.kafka.librdkafka()).list_topics(timeout=10)


def _leader(services: Services, topic: str, partition: int) -> int:
    return int(_metadata(services).topics[topic].partitions[partition].leader)


def _active_controller(stack: Stack) -> int:
    """The KRaft quorum's leader, from Kafka's own metadata-quorum tool (the metadata a client gets
    names a random broker as 'controller' in KRaft, not the active one)."""
    argv = stack.kafka_tool("kafka-metadata-quorum", ["describe", "--status"])
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r"^LeaderId:\s+(\d+)", done.stdout, re.MULTILINE)
    assert done.returncode == 0 and found, done.stdout + done.stderr[-2000:]
    return int(found.group(1))


def _kill(stack: Stack, node: int) -> None:
    svc = kafka_services(stack.config)[node - 1]
    pid = owned_pid(svc.pid_file, svc.directory)
    assert pid is not None, f"kafka-{node} is not running"
    os.kill(pid, signal.SIGKILL)
    _wait(f"kafka-{node} (pid {pid}) gone after SIGKILL", lambda: not is_alive(pid), 30)


def _out_of_sync(services: Services, prefix: str) -> list[str]:
    """Partitions (of topics starting with ``prefix`` and the broker's own state) with fewer than three
    in-sync replicas, or without a leader."""
    meta = _metadata(services)
    return [
        f"{name}[{p}] isr={list(part.isrs)} leader={part.leader}"
        for name, topic in meta.topics.items()
        if name.startswith((prefix, "__consumer_offsets", "__transaction_state"))
        for p, part in topic.partitions.items()
        if len(part.isrs) < 3 or part.leader < 0
    ]


class RawEnds:
    """The raw topic's high watermarks through one long-lived consumer (a fresh one per poll would
    take longer than a small delivery)."""

    def __init__(self, services: Services, topic: str) -> None:
        self.topic = topic
        self.partitions = [tp.partition for tp in all_partitions(services.kafka, topic)]
        self.consumer = Consumer(
            services.kafka.librdkafka(group_id=f"{topic}.ends", enable_auto_commit=False)
        )

    def total(self) -> int:
        """Their sum; asked again while a partition's leader is moving ("unknown partition")."""
        deadline = time.monotonic() + 60
        while True:
            try:
                return sum(
                    self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)[1]
                    for p in self.partitions
                )
            except KafkaException:
                assert time.monotonic() < deadline, f"no watermarks of {self.topic} for 60 s"
                self.consumer.list_topics(self.topic, timeout=10)  # refresh the leaders

    def close(self) -> None:
        self.consumer.close()


class Supervised:
    """``ketenstroom process`` run as a service manager would: restarted (same instance id, so it
    fences what its predecessor left open) when it exits with an error, each exit kept for the report."""

    def __init__(self, env: dict[str, str], group: str, logs: Path) -> None:
        self.command = [sys.executable, "-m", "cli", "process", "-p", PARTNER, "--app-id", group]
        self.env, self.logs = env, logs
        self.exits: list[str] = []
        self.child = self._start()

    @property
    def log(self) -> Path:
        return self.logs / f"processor-{len(self.exits)}.log"

    def _start(self) -> subprocess.Popen[str]:
        # the log goes to a file, never to a pipe that nobody reads while the processor runs: a full
        # pipe (64 KiB of log lines, e.g. librdkafka's complaints about a dead broker) blocks the
        # processor's next log write mid-transaction, until the coordinator aborts it and fences it
        with self.log.open("w") as log:
            return subprocess.Popen(self.command, env=self.env, stdout=subprocess.PIPE, stderr=log, text=True)

    def ensure_running(self) -> bool:
        if self.child.poll() is not None:
            self.child.communicate()
            err = self.log.read_text(errors="replace")
            last = err.strip().splitlines()[-1] if err.strip() else ""
            self.exits.append(f"exit {self.child.returncode}: {last[-400:]}")
            _say(f"processor exited, restarting it: {self.exits[-1]}")
            assert len(self.exits) <= 3, "\n".join(self.exits)
            self.child = self._start()
        return True

    def stop(self) -> dict[str, Any]:
        self.child.send_signal(signal.SIGTERM)
        out, _ = self.child.communicate(timeout=60)
        err = self.log.read_text(errors="replace")
        _say(f"processor log: {sum(p.stat().st_size for p in self.logs.glob('processor-*.log'))} bytes")
        assert self.child.returncode == 0, err[-3000:]
        stats: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return stats


def _reference(services: Services, tmp: Path, chunks: list[Path]) -> dict[str, Any]:
    """The same four deliveries through a healthy cluster (published in-process: the same Publisher
    the CLI runs, without four interpreter start-ups)."""
    names = Topics(f"t{os.getpid()}ref{time.time_ns() % 10**6}.")
    env = _env(services, names)
    ensure_topics(services.kafka, names.all([PARTNER]), partitions=3, replication_factor=3)
    published = 0
    with Publisher(PARTNER, kafka=services.kafka, registry=services.registry, topics=names) as publisher:
        for chunk in chunks:
            receipt = publisher.publish([chunk], reject_path=tmp / f"{chunk.name}.ref-rejects.jsonl")
            assert receipt.not_delivered == 0 and receipt.failure is None, receipt.summary()
            published += receipt.published
    _say(f"reference: {published} records published")
    process_to_end(env, names, PARTNER)
    _say("reference: processed")
    return {
        "published": published,
        "raw": set(event_ids(services, names.raw(PARTNER), raw=True)),
        "curated": set(event_ids(services, names.curated)),
        "dlq": count(services, names.dlq(PARTNER)),
        "rows": sink_to_end(env, f"file://{tmp / 'ref-store'}", f"{names.prefix}sink"),
    }


def test_broker_loss_under_load_loses_and_doubles_nothing(
    cluster: tuple[Stack, Services], tmp_path: Path
) -> None:
    stack, services = cluster
    chunks = _chunks(tmp_path)
    _say(f"generated {sum(len(c.read_bytes().splitlines()) for c in chunks)} rows")
    reference = _reference(services, tmp_path, chunks)
    _say("reference done")
    assert reference["published"] > 10_000 and reference["dlq"] > 0

    names = Topics(f"t{os.getpid()}loss{time.time_ns() % 10**6}.")
    env, raw, group = _env(services, names), names.raw(PARTNER), f"{names.prefix}proc"
    _topics(env)
    worker = Supervised(env, group, tmp_path)
    ends = RawEnds(services, raw)
    receipts: list[dict[str, Any]] = []
    overlapped = 0  # kills that landed while publish was still producing
    try:
        for i, chunk in enumerate(chunks):
            # the active controller is asked before the delivery starts (the tool is a JVM: seconds)
            controller = _active_controller(stack) if i == CHUNKS - 1 else None
            before = ends.total()
            receipt_path = tmp_path / f"loss-{i}.json"
            child = _publish(env, chunk, receipt_path)
            _wait("publish producing", lambda: ends.total() > before or child.poll() is not None)  # noqa: B023
            partition = i % len(ends.partitions)
            victim = controller or _leader(services, raw, partition)
            overlapped += child.poll() is None
            _kill(stack, victim)
            role = "the active controller" if controller else f"leader of {raw}[{partition}]"
            _say(f"killed kafka-{victim}, {role}{' mid-delivery' if child.poll() is None else ''}")
            _wait(
                f"every {raw} partition led by a live node",
                lambda: not {_leader(services, raw, p) for p in ends.partitions} & {victim, -1},  # noqa: B023
            )
            receipt = _acknowledged(child, receipt_path)
            receipts.append(receipt)
            _say(
                f"delivery {i}: {receipt['published']} acknowledged, {receipt['not_delivered']} not delivered"
            )
            worker.ensure_running()
            stack.up()  # restart the killed node (the others are left alone)
            _say(f"kafka-{victim} restarted and healthy")
            _wait("every replica back in sync", lambda: not _out_of_sync(services, names.prefix))
            if receipt["not_delivered"]:  # the operator's rerun of a delivery that exited 3
                again = _acknowledged(_publish(env, chunk, receipt_path), receipt_path)
                assert again["not_delivered"] == 0, again
                receipts.append(again)
        _wait(
            "the processor caught up", lambda: worker.ensure_running() and caught_up(services, [raw], group)
        )
    finally:
        ends.close()
        stats = worker.stop()
    assert overlapped >= 2, f"only {overlapped} of {CHUNKS} kills landed while publish was producing"

    _say(f"processor stopped: {stats}; earlier exits: {worker.exits or 'none'}")
    # every acknowledged record is in raw, once (idempotent producer: no retry doubled one)
    raw_ids = Counter(event_ids(services, raw, raw=True))
    assert sum(raw_ids.values()) == sum(r["published"] for r in receipts)
    reruns = len(receipts) - CHUNKS
    assert reruns or max(raw_ids.values()) == 1, [k for k, v in raw_ids.items() if v > 1][:3]
    assert set(raw_ids) == reference["raw"]
    # and ops.deliveries, written after each delivery's last acknowledgement, holds each receipt's counts
    announced = {}
    deliveries = all_partitions(services.kafka, names.deliveries)
    for msg in read_to_end(services.kafka, deliveries, group_id=f"{names.deliveries}.chk"):
        event = DeliveryEvent.decode(msg.value() or b"")
        announced[event.delivery_id] = (event.published, event.not_delivered)
    assert announced == {r["delivery_id"]: (r["published"], r["not_delivered"]) for r in receipts}

    # every raw record exactly once in curated (read_committed) or the DLQ
    curated = Counter(event_ids(services, names.curated))
    assert max(curated.values()) == 1, [k for k, v in curated.items() if v > 1][:3]
    assert set(curated) == reference["curated"]
    dlq = count(services, names.dlq(PARTNER))
    if not reruns:  # raw holds each event once: each is curated or dead-lettered, and nothing else
        assert dlq == reference["dlq"]
        assert len(curated) + dlq == sum(raw_ids.values())
    assert stats["reconciles"]  # the last processor run's own counts (earlier ones exited, see above)

    # the sealed snapshots equal the reference's row for row
    rows = sink_to_end(env, f"file://{tmp_path / 'loss-store'}", f"{names.prefix}sink")
    _say("sealed")
    assert rows.keys() == reference["rows"].keys()
    for period, expected in reference["rows"].items():
        assert rows[period] == expected, period

    assert _out_of_sync(services, names.prefix) == []
