"""Two processors and two sinks through rebalances under load, with exact results.

``test_processor.py`` runs two processors that both hold partitions before any input arrives, and
``test_clean_stop.py`` two sinks that do; neither moves a partition while records flow. Here the real
commands run as subprocesses on a backlog and a member joins late and another leaves with SIGTERM
mid-stream, for processors and sinks at the same time:

* five deliveries arrive one by one while the members change, so every change happens under load;
  the fifth repeats the first, so B must know from the dedup changelog what A curated;
* processor A starts on the first delivery, B joins during the second (A hands partitions over
  mid-stream), A is stopped with SIGTERM while the third is unprocessed (B takes its partitions);
* sink S (the sealer) starts with A, helper H (``--no-seal``) joins once S has staged files and is
  stopped with SIGTERM while the last deliveries still flow into curated; S finishes and seals.

Then every raw record is exactly once in curated (read_committed) or the DLQ, curated's event ids and
the DLQ equal a single-instance run's over the same input, and the sealed snapshots equal that run's
row for row, with nothing left in staging.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from ketenstroom.adapters.kafka import end_offsets, ensure_topics
from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.contract import Topics
from producers.publish import Publisher
from tests.conftest import Services
from tests.integration.exactness import (
    SEAL_ARGS,
    caught_up,
    committed_to,
    count,
    ends_of_data,
    event_ids,
    om_deliveries,
    process_to_end,
    sealed_rows,
    sink_to_end,
    wait_for,
)

PARTNER = "om"
KEY = "rebalance-test-key-0123456789abcdef0123"
DEADLINE_S = 240.0
STOP_BOUND_S = 30.0
# a member that stops (static membership sends no LeaveGroup) hands its partitions on after this
SESSION = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000"}


def _env(services: Services, names: Topics) -> dict[str, str]:
    return {
        **services.env(names),
        "KETENSTROOM_PSEUDONYM_KEY": KEY,
        "KETENSTROOM_PSEUDONYM_KEY_ID": "reb1",
        "KETENSTROOM_PROCESSOR_BATCH_SIZE": "200",  # many transactions: members come and go mid-stream
        "KETENSTROOM_KAFKA_EXTRA": json.dumps(SESSION),
    }


def _deliver(services: Services, names: Topics, export: Path, tmp: Path) -> int:
    """One delivery of ``export`` (in-process ``Publisher``: the CLI's code, without its start-up)."""
    rejects = tmp / f"{names.prefix}{export.name}.{time.time_ns()}.rejects.jsonl"
    ensure_topics(services.kafka, names.all([PARTNER]), partitions=3, replication_factor=-1)
    with Publisher(PARTNER, kafka=services.kafka, registry=services.registry, topics=names) as publisher:
        receipt = publisher.publish([export], reject_path=rejects)
    assert receipt.not_delivered == 0 and receipt.failure is None, receipt.summary()
    return receipt.published


def _chunks(tmp: Path) -> list[Path]:
    return om_deliveries(tmp, cases=12_000, seed=4040, deliveries=4)


def _start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(child: subprocess.Popen[str]) -> dict[str, Any]:
    """SIGTERM; exit 0 within STOP_BOUND_S; its JSON result line."""
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=STOP_BOUND_S + 30)
    assert child.returncode == 0, f"exit {child.returncode} after SIGTERM:\n{err[-3000:]}"
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _members(services: Services, group: str) -> int:
    """Members of ``group`` holding partitions now."""
    admin = AdminClient(services.kafka.librdkafka())
    try:
        found = admin.describe_consumer_groups([group])[group].result(timeout=10)
    except KafkaException:
        return 0
    return sum(1 for m in found.members if m.assignment and m.assignment.topic_partitions)


def _alive(**children: subprocess.Popen[str]) -> bool:
    for name, child in children.items():
        assert child.poll() is None, f"{name} exited early:\n{child.communicate()[1][-3000:]}"
    return True


def _total(services: Services, topic: str) -> int:
    return sum(end_offsets(services.kafka, [topic]).values())


def test_two_processors_and_two_sinks_through_rebalances_under_load(
    services: Services, tmp_path: Path
) -> None:
    # the partner sends its first delivery again at the end: its event ids, seen by A on partitions B
    # has since taken over, must be recognised by B from the dedup changelog (not doubled in curated)
    chunks = _chunks(tmp_path)
    chunks.append(chunks[0])

    # the single-instance run of the same deliveries
    ref = Topics(f"t{os.getpid()}one{time.time_ns() % 10**6}.")
    ref_env = _env(services, ref)
    published = sum(_deliver(services, ref, chunk, tmp_path) for chunk in chunks)
    process_to_end(ref_env, ref, PARTNER)
    expected_rows = sink_to_end(ref_env, f"file://{tmp_path / 'one'}", f"{ref.prefix}sink")
    expected = set(event_ids(services, ref.curated))
    expected_dlq = count(services, ref.dlq(PARTNER))
    assert len(expected) > 5000 and expected_dlq > 0

    names = Topics(f"t{os.getpid()}two{time.time_ns() % 10**6}.")
    env, raw = _env(services, names), names.raw(PARTNER)
    url, proc_group, sink_group = f"file://{tmp_path / 'two'}", f"{names.prefix}proc", f"{names.prefix}sink"
    store = ObjectStore(url)
    process = ("process", "-p", PARTNER, "--app-id", proc_group)
    sink = ("sink", "--group", sink_group, "--storage", url, "--max-buffered", "200", *SEAL_ARGS)
    # deliveries keep arriving while members join and leave: each step below happens under load
    delivered = _deliver(services, names, chunks[0], tmp_path)
    a = _start(env, *process, "--instance-id", "a")
    s = _start(env, *sink, "--instance-id", "s")
    wait_for(
        "A produced output", lambda: _alive(a=a, s=s) and _total(services, names.curated) > 0, DEADLINE_S
    )
    delivered += _deliver(services, names, chunks[1], tmp_path)
    b = _start(env, *process, "--instance-id", "b")
    wait_for(
        "B holds partitions", lambda: _alive(a=a, b=b) and _members(services, proc_group) == 2, DEADLINE_S
    )
    delivered += _deliver(services, names, chunks[2], tmp_path)
    assert not caught_up(services, [raw], proc_group), "raw was done before A left: no load"
    a_stats = _stop(a)
    wait_for("S staged files", lambda: _alive(s=s) and bool(store.list("staging/")), DEADLINE_S)
    h = _start(env, *sink, "--instance-id", "h", "--no-seal")
    wait_for(
        "H holds partitions", lambda: _alive(s=s, h=h) and _members(services, sink_group) == 2, DEADLINE_S
    )
    before = _total(services, names.curated)
    delivered += _deliver(services, names, chunks[3], tmp_path)
    delivered += _deliver(services, names, chunks[4], tmp_path)
    wait_for(
        "B works the last delivery",
        lambda: _alive(b=b) and _total(services, names.curated) > before,
        DEADLINE_S,
    )
    assert not caught_up(services, [raw], proc_group), "curated was complete before H left: no load"
    h_report = _stop(h)
    wait_for("B finished raw", lambda: _alive(b=b) and caught_up(services, [raw], proc_group), DEADLINE_S)
    b_stats = _stop(b)
    ends = ends_of_data(services, names.curated)
    wait_for(
        "S finished curated",
        lambda: _alive(s=s) and committed_to(services, names.curated, sink_group, ends),
        DEADLINE_S,
    )
    s_report = _stop(s)
    assert delivered == published

    # both processors and both sinks did part of the work
    ins = [sum(st["records_in"].values()) for st in (a_stats, b_stats)]
    assert min(ins) > 0 and sum(ins) == published, f"records in per processor: {ins} of {published}"
    assert min(int(h_report["records"]), int(s_report["records"])) > 0, (h_report, s_report)
    assert h_report["sealed"] == [] and s_report["sealed"]

    # each raw record exactly once in curated or the DLQ, the same as one instance made
    curated = Counter(event_ids(services, names.curated))
    assert max(curated.values()) == 1, [k for k, v in curated.items() if v > 1][:3]
    assert set(curated) == expected
    dlq = count(services, names.dlq(PARTNER))
    assert dlq == expected_dlq
    duplicates = sum(sum(st["duplicates"].values()) for st in (a_stats, b_stats))
    assert duplicates > 1000, "the repeated delivery was not recognised as such"
    assert len(curated) + dlq + duplicates == published

    # the sealed snapshots equal the single instance's row for row; nothing left staged
    assert [n for n in store.list("staging/") if n.endswith(".parquet")] == []
    assert sealed_rows(store) == expected_rows
