"""What the pipeline left, read back for exact comparisons: event ids per topic, sealed rows per period.

Shared by the fault and rebalance tests, which compare a disturbed run with an undisturbed one of the
same input. Columns the processor or sink set per run (processing time, where the sink read a row)
differ between any two runs and are left out of the rows compared.
"""

from __future__ import annotations

import io
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
from confluent_kafka import Consumer, TopicPartition

from ketenstroom.adapters.kafka import all_partitions, read_to_end
from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.adapters.registry import Registry
from ketenstroom.adapters.snapshots import Snapshots
from ketenstroom.contract import Topics
from ketenstroom.contract.codec import decode
from ketenstroom.contract.wire import unframe
from synthetic import generate_chain
from tests.conftest import Services

#: set per run by the processor or the sink, so they differ between two runs of the same input
RUN_COLUMNS = frozenset({"processed_time", "kafka_partition", "kafka_offset"})
AS_OF = "2027-06-01T00:00:00+00:00"  # every period of the generated chains is due for sealing
SEAL_ARGS = ("--as-of", AS_OF, "--grace-days", "14", "--final-after-days", "3650")

Rows = dict[str, list[dict[str, object]]]


def wait_for(what: str, condition: Callable[[], bool], deadline_s: float) -> float:
    """Poll ``condition`` until true; AssertionError naming ``what`` after ``deadline_s``; seconds taken."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < deadline_s, f"{what}: not within {deadline_s:.0f} s"
    return time.monotonic() - start


def event_ids(services: Services, topic: str, *, raw: bool = False) -> list[str]:
    """Event ids of ``topic``'s committed records (read_committed), in topic order per partition; a raw
    topic's are in the record's delivery metadata."""
    ids = []
    with Registry(services.registry) as registry:
        partitions = all_partitions(services.kafka, topic)
        for msg in read_to_end(services.kafka, partitions, group_id=f"{topic}.ids"):
            schema_id, payload = unframe(msg.value())
            record = decode(registry.writer_schema(schema_id), payload)
            ids.append(str(record["metadata"]["event_id"] if raw else record["event_id"]))
    return ids


def count(services: Services, topic: str) -> int:
    partitions = all_partitions(services.kafka, topic)
    return sum(1 for _ in read_to_end(services.kafka, partitions, group_id=f"{topic}.count"))


def caught_up(services: Services, topics: list[str], group: str) -> bool:
    """True once ``group`` has committed every non-empty partition of ``topics`` to its high watermark
    (for topics without transactions; see ``ends_of_data``)."""
    parts = [TopicPartition(t, tp.partition) for t in topics for tp in all_partitions(services.kafka, t)]
    consumer = Consumer(services.kafka.librdkafka(group_id=group, enable_auto_commit=False))
    try:
        committed = consumer.committed(parts, timeout=10)
        ends = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts]
    finally:
        consumer.close()
    return all(tp.offset >= end for tp, end in zip(committed, ends, strict=True) if end > 0)


def ends_of_data(services: Services, topic: str) -> dict[int, int]:
    """Per partition, one past the offset of its last committed record: where a reader that has read
    everything stands. A transactional topic's high watermark lies beyond it (commit markers)."""
    ends: dict[int, int] = {}
    for msg in read_to_end(services.kafka, all_partitions(services.kafka, topic), group_id=f"{topic}.ends"):
        partition, offset = msg.partition() or 0, msg.offset() or 0
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    return ends


def committed_to(services: Services, topic: str, group: str, ends: dict[int, int]) -> bool:
    """True once ``group`` has committed each partition of ``topic`` at least to ``ends``."""
    consumer = Consumer(services.kafka.librdkafka(group_id=group, enable_auto_commit=False))
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in ends], timeout=10)
    finally:
        consumer.close()
    return all(tp.offset >= ends[tp.partition] for tp in found)


def sealed_rows(store: ObjectStore) -> Rows:
    """Per period, the rows of its latest sealed revision sorted by event id, without RUN_COLUMNS."""
    snapshots, out = Snapshots(store), {}
    for period in snapshots.periods():
        manifest = snapshots.manifest(period)
        assert manifest is not None, f"{period} staged but not sealed"
        rows = []
        for entry in manifest.files:
            rows += pq.read_table(io.BytesIO(store.get(entry.path))).to_pylist()
        out[period] = sorted(
            ({k: v for k, v in r.items() if k not in RUN_COLUMNS} for r in rows),
            key=lambda r: str(r["event_id"]),
        )
    return out


def sink_to_end(env: dict[str, str], url: str, group: str, timeout: float = 240) -> Rows:
    """``ketenstroom sink --until-caught-up`` into ``url``; then what it sealed."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "sink",
            "--until-caught-up",
            "--group",
            group,
            "--storage",
            url,
            *SEAL_ARGS,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return sealed_rows(ObjectStore(url))


def process_to_end(env: dict[str, str], names: Topics, partner: str, timeout: float = 240) -> None:
    """``ketenstroom process --until-caught-up`` on ``partner``'s raw topic, as one instance."""
    command = [sys.executable, "-m", "cli", "process", "-p", partner, "--until-caught-up"]
    done = subprocess.run(
        [*command, "--app-id", f"{names.prefix}proc1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def om_deliveries(tmp: Path, *, cases: int, seed: int, deliveries: int) -> list[Path]:
    """A generated om export split into ``deliveries`` files (JSON Lines: a row is a line)."""
    report = generate_chain(
        tmp / "gen",
        cases=cases,
        seed=seed,
        noise=0.02,
        partners=("om",),
        formats={"om": "jsonl"},
        as_of=date(2026, 10, 1),
    )
    lines = Path(report.partners["om"].path).read_bytes().splitlines(keepends=True)
    size = -(-len(lines) // deliveries)
    paths = []
    for i in range(deliveries):
        path = tmp / f"delivery-{i}.jsonl"
        path.write_bytes(b"".join(lines[i * size : (i + 1) * size]))
        paths.append(path)
    return paths
