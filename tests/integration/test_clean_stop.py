"""A clean stop: SIGTERM (or Ctrl-C) to ``ketenstroom process`` and ``ketenstroom sink`` mid-stream finishes
the current batch, commits, flushes and seals what is due, and exits 0 within STOP_BOUND_S. Each test
runs the real command as a subprocess on the real stack, signals it once progress is visible (polled,
never slept for), and checks the exact state it left: what it says it consumed is what it committed,
and every consumed record is exactly once in its output. Then two sink instances share the partitions.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from ketenstroom.adapters.kafka import all_partitions, end_offsets, ensure_topics, read_to_end
from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.adapters.registry import Registry
from ketenstroom.adapters.snapshots import Snapshots
from ketenstroom.contract import Topics
from ketenstroom.contract.codec import decode
from ketenstroom.contract.wire import unframe
from producers.publish import Publisher
from synthetic import generate_chain
from synthetic.curated import chain_events, publish_curated
from tests.conftest import Services

STOP_BOUND_S = 20.0  # from SIGTERM to exit, on a loaded 2-core machine
PROGRESS_DEADLINE_S = 120.0
KEY = "clean-stop-test-key-0123456789abcdef0123"
AS_OF = "2027-06-01T00:00:00+00:00"
# a frozen member's session expires within seconds (the broker's minimum is 6 s)
SHORT_SESSION = {
    "session.timeout.ms": "6000",
    "heartbeat.interval.ms": "1000",
}  # every period of the events below is due for sealing


def _committed(services: Services, group: str, topic: str) -> dict[int, int]:
    parts = [TopicPartition(topic, tp.partition) for tp in all_partitions(services.kafka, topic)]
    consumer = Consumer(services.kafka.librdkafka(group_id=group, enable_auto_commit=False))
    try:
        return {tp.partition: max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10)}
    finally:
        consumer.close()


def _event_ids(services: Services, topic: str, upto: dict[int, int] | None = None) -> list[str]:
    """The event ids of ``topic``'s committed records (read_committed), below ``upto`` per partition."""
    ids = []
    with Registry(services.registry) as registry:
        for msg in read_to_end(
            services.kafka, all_partitions(services.kafka, topic), group_id=f"{topic}.chk"
        ):
            if upto is not None and (msg.offset() or 0) >= upto.get(msg.partition() or 0, 0):
                continue
            schema_id, payload = unframe(msg.value())
            ids.append(str(decode(registry.writer_schema(schema_id), payload)["event_id"]))
    return ids


def _count(services: Services, topic: str) -> int:
    return sum(
        1 for _ in read_to_end(services.kafka, all_partitions(services.kafka, topic), group_id=f"{topic}.n")
    )


def _stop(child: subprocess.Popen[str], sig: signal.Signals) -> tuple[dict[str, object], float]:
    """Send ``sig``; the child's JSON result line and the seconds it took to exit 0."""
    signalled = time.monotonic()
    child.send_signal(sig)
    out, err = child.communicate(timeout=STOP_BOUND_S + 30)
    took = time.monotonic() - signalled
    assert child.returncode == 0, f"exit {child.returncode} after {sig.name}:\n{err[-3000:]}"
    assert took <= STOP_BOUND_S, f"{took:.1f} s from {sig.name} to exit"
    return json.loads(out.strip().splitlines()[-1]), took


def _wait_for(child: subprocess.Popen[str], progressed: object) -> None:
    deadline = time.monotonic() + PROGRESS_DEADLINE_S
    while not progressed():  # type: ignore[operator]
        assert child.poll() is None, child.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no progress"


def _om_raw(services: Services, names: Topics, tmp_path: Path, *, cases: int, seed: int) -> int:
    """A generated om export published to ``raw.om`` (3 partitions): how many records."""
    exports = generate_chain(tmp_path, cases=cases, seed=seed, noise=0.05)
    ensure_topics(services.kafka, names.all(["om"]), partitions=3, replication_factor=1)
    with Publisher("om", kafka=services.kafka, registry=services.registry, topics=names) as publisher:
        return publisher.publish([Path(exports.partners["om"].path)]).published


def _process_env(services: Services, names: Topics, key_id: str, *, batch_size: int) -> dict[str, str]:
    return {
        **services.env(names),
        "KETENSTROOM_PSEUDONYM_KEY": KEY,
        "KETENSTROOM_PSEUDONYM_KEY_ID": key_id,
        "KETENSTROOM_PROCESSOR_BATCH_SIZE": str(batch_size),
    }


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_processor_stops_cleanly_mid_stream_with_every_consumed_record_exactly_once(
    services: Services, names: Topics, tmp_path: Path, sig: signal.Signals
) -> None:
    published = _om_raw(services, names, tmp_path, cases=1500, seed=316)
    group = f"{names.prefix}proc"
    # many transactions: the signal lands mid-stream
    env = _process_env(services, names, "stop1", batch_size=50)
    command = [sys.executable, "-m", "cli", "process", "--partner", "om", "--app-id", group]
    worker = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(worker, lambda: sum(end_offsets(services.kafka, [names.curated]).values()) > 0)
    stats, _took = _stop(worker, sig)

    consumed = sum(stats["records_in"].values())  # type: ignore[attr-defined]
    assert 0 < consumed < published, f"not stopped mid-stream: {consumed} of {published}"
    assert stats["reconciles"]
    # what it consumed is what it committed, and each of those is once in curated or the DLQ
    assert sum(_committed(services, group, names.raw("om")).values()) == consumed
    curated = Counter(_event_ids(services, names.curated))
    assert max(curated.values()) == 1
    duplicates = sum(stats["duplicates"].values())  # type: ignore[attr-defined]
    assert len(curated) + _count(services, names.dlq("om")) + duplicates == consumed

    # a restart carries on where it stopped: nothing lost, nothing doubled over the whole stream
    done = subprocess.run(
        [*command, "--until-caught-up"], env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rest = json.loads(done.stdout.strip().splitlines()[-1])
    curated = Counter(_event_ids(services, names.curated))
    assert max(curated.values()) == 1
    assert consumed + sum(rest["records_in"].values()) == published
    duplicates += sum(rest["duplicates"].values())
    assert len(curated) + _count(services, names.dlq("om")) + duplicates == published


def _store_ids(store: ObjectStore) -> list[str]:
    """Event ids of every row the sink left: latest sealed revision of each period plus staged files."""
    snapshots, names = Snapshots(store), []
    for period in snapshots.periods():
        manifest = snapshots.manifest(period)
        names += [] if manifest is None else [entry.path for entry in manifest.files]
    names += [n for n in store.list("staging/") if n.endswith(".parquet")]
    ids: list[str] = []
    for name in names:
        ids += [str(v) for v in pq.read_table(io.BytesIO(store.get(name)), columns=["event_id"])["event_id"]]
    return ids


def _curated(services: Services, names: Topics, cases: int) -> list[str]:
    ensure_topics(services.kafka, [names.curated], partitions=3, replication_factor=1)
    events = list(
        chain_events(cases, seed=8, start=datetime(2026, 1, 1, tzinfo=UTC), days=120, repeat_share=0.05)
    )
    with Registry(services.registry) as registry:
        publish_curated(services.kafka, registry, names, events)
    return [str(e["event_id"]) for e in events]


def _sink(
    services: Services,
    names: Topics,
    url: str,
    group: str,
    *args: str,
    kafka: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[str]:
    command = [
        *(sys.executable, "-m", "cli", "sink", "--group", group, "--storage", url, "--as-of", AS_OF),
        *("--grace-days", "14", "--final-after-days", "3650", "--max-buffered", "100", *args),
    ]
    extra = json.dumps({"max.poll.interval.ms": "60000", **(kafka or {})})
    environ = {**services.env(names), "KETENSTROOM_KAFKA_EXTRA": extra, **(env or {})}
    return subprocess.Popen(command, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sink_stops_cleanly_mid_stream_with_what_it_consumed_staged_or_sealed(
    services: Services, names: Topics, tmp_path: Path
) -> None:
    _curated(services, names, 3000)
    total = sum(end_offsets(services.kafka, [names.curated]).values())
    url = f"file://{tmp_path / 'store'}"
    store = ObjectStore(url)
    group = f"{names.prefix}sink"
    sink = _sink(services, names, url, group, "--instance-id", "a")
    _wait_for(sink, lambda: any(n.endswith(".parquet") for n in store.list("staging/")))
    report, _took = _stop(sink, signal.SIGTERM)

    assert 0 < int(report["records"]) < total, f"not stopped mid-stream: {report['records']} of {total}"  # type: ignore[call-overload]
    committed = _committed(services, group, names.curated)
    assert sum(committed.values()) == report["records"]
    consumed = set(_event_ids(services, names.curated, upto=committed))
    left = Counter(_store_ids(store))
    assert max(left.values()) == 1
    assert set(left) == consumed  # every consumed event staged or sealed; nothing beyond the commit
    assert report["sealed"], "a stop seals what is due"


def _members_with_partitions(services: Services, group: str) -> int:
    admin = AdminClient(services.kafka.librdkafka())
    try:
        found = admin.describe_consumer_groups([group])[group].result(timeout=10)
    except KafkaException:
        return 0  # the group does not exist yet
    return sum(1 for m in found.members if m.assignment and m.assignment.topic_partitions)


def test_two_sink_instances_share_the_partitions_with_exact_results(
    services: Services, names: Topics, tmp_path: Path
) -> None:
    """Both instances hold partitions before the events arrive, so both do work; the helper stages only
    (``--no-seal``), the sealer seals. Stopped helper first, then sealer: everything sealed, once."""
    ensure_topics(services.kafka, [names.curated], partitions=3, replication_factor=1)
    url = f"file://{tmp_path / 'shared'}"
    store = ObjectStore(url)
    group = f"{names.prefix}pair"
    sealer = _sink(services, names, url, group, "--instance-id", "a")
    helper = _sink(services, names, url, group, "--instance-id", "b", "--no-seal")
    _wait_for(sealer, lambda: _members_with_partitions(services, group) == 2)
    expected = set(_curated(services, names, 1500))
    ends = {p: end for (_t, p), end in end_offsets(services.kafka, [names.curated]).items()}
    _wait_for(helper, lambda: _committed(services, group, names.curated) == ends)
    helper_report, _took = _stop(helper, signal.SIGTERM)
    sealer_report, _took = _stop(sealer, signal.SIGTERM)

    records = [int(r["records"]) for r in (sealer_report, helper_report)]  # type: ignore[call-overload]
    assert min(records) > 0 and sum(records) >= sum(ends.values()), f"not shared: {records}"
    assert helper_report["sealed"] == [] and sealer_report["sealed"]
    assert _committed(services, group, names.curated) == ends
    left = Counter(_store_ids(store))
    assert max(left.values()) == 1
    assert set(left) == expected
    assert [n for n in store.list("staging/") if n.endswith(".parquet")] == []


def _frozen(pid: int) -> bool:
    """The process is stopped (by a signal): state T in /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] == "T"


def _wait_until_empty(services: Services, group: str) -> None:
    """Until the group has no member (the frozen one's session expired), polled with a deadline."""
    admin = AdminClient(services.kafka.librdkafka())
    deadline = time.monotonic() + PROGRESS_DEADLINE_S
    while True:
        try:
            if not admin.describe_consumer_groups([group])[group].result(timeout=10).members:
                return
        except KafkaException:
            return  # no such group (any more)
        assert time.monotonic() < deadline, "the frozen member was never dropped from its group"


def _resumed_after_the_group_moved_on(
    services: Services,
    group: str,
    child: subprocess.Popen[str],
    frozen_when: Callable[[], bool] = lambda: True,
) -> tuple[str, str]:
    """Wait until ``child`` has frozen itself (``KETENSTROOM_CRASH_SIGNAL=SIGSTOP``) and its group has
    dropped it, resume it, and return its output once it has exited 0."""
    try:
        _wait_for(child, lambda: _frozen(child.pid))
        assert frozen_when(), "frozen at the wrong moment"
        _wait_until_empty(services, group)
        child.send_signal(signal.SIGCONT)
        out, err = child.communicate(timeout=PROGRESS_DEADLINE_S)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, f"exit {child.returncode} after the group moved on:\n{err[-3000:]}"
    return out, err


def test_sink_stalled_until_its_group_moved_on_keeps_going_with_exact_results(
    services: Services, names: Topics, tmp_path: Path
) -> None:
    """A sink that stalls (frozen with SIGSTOP at ``sink.before-commit``, as a paused VM or an overloaded
    machine would) for longer than its session is dropped from its group; when it goes on, the broker
    refuses its commit because the group has moved on. That is no reason to stop (it was exit 2, and
    lost the soak's last deliveries until a restart): the sink rejoins, reads again what it had not
    committed, and seals every event exactly once, exiting 0."""
    expected = set(_curated(services, names, 1500))
    ends = {p: end for (_t, p), end in end_offsets(services.kafka, [names.curated]).items()}
    url = f"file://{tmp_path / 'store'}"
    store = ObjectStore(url)
    group = f"{names.prefix}stall"
    sink = _sink(
        services,
        names,
        url,
        group,
        "--instance-id",
        "a",
        "--until-caught-up",
        kafka=SHORT_SESSION,
        env={"KETENSTROOM_CRASH_AT": "sink.before-commit:1", "KETENSTROOM_CRASH_SIGNAL": "SIGSTOP"},
    )
    out, err = _resumed_after_the_group_moved_on(
        services,
        group,
        sink,
        lambda: any(n.endswith(".parquet") for n in store.list("staging/")),  # frozen after staging
    )
    assert "the group moved on" in err, "the refused commit was not met (or not said)"
    assert json.loads(out.strip().splitlines()[-1])["sealed"]
    assert _committed(services, group, names.curated) == ends
    left = Counter(_store_ids(store))
    assert max(left.values()) == 1
    assert set(left) == expected


def test_processor_stalled_until_its_group_moved_on_keeps_going_exactly_once(
    services: Services, names: Topics, tmp_path: Path
) -> None:
    """The processor frozen (SIGSTOP at ``processor.before-offsets``, its batch produced in an open
    transaction) until its session expired and its group is empty: when it goes on, the broker refuses
    the stale member's offsets; the transaction is aborted (its output never visible), the batch read
    again, and the whole stream ends exactly once in curated or the DLQ, with exit 0."""
    published = _om_raw(services, names, tmp_path, cases=600, seed=317)
    group = f"{names.prefix}stallproc"
    env = {
        **_process_env(services, names, "stall1", batch_size=100),
        "KETENSTROOM_KAFKA_EXTRA": json.dumps(SHORT_SESSION),
        "KETENSTROOM_CRASH_AT": "processor.before-offsets:2",
        "KETENSTROOM_CRASH_SIGNAL": "SIGSTOP",
    }
    command = [sys.executable, "-m", "cli", "process", "--partner", "om", "--app-id", group]
    worker = subprocess.Popen(
        [*command, "--until-caught-up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out, _err = _resumed_after_the_group_moved_on(services, group, worker)
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["reconciles"]
    assert sum(stats["records_in"].values()) >= published
    assert sum(_committed(services, group, names.raw("om")).values()) == published
    curated = Counter(_event_ids(services, names.curated))
    assert max(curated.values()) == 1
    # every published record once in curated or the DLQ (this export repeats no event)
    assert len(curated) + _count(services, names.dlq("om")) == published
