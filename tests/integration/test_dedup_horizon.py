"""The processor's bounded dedup state on the real stack: restore stays flat as history grows past the
horizon; a legacy changelog still deduplicates and is migrated; a re-delivery older than the horizon
passes the processor and still never doubles a row in a sealed revision."""

from __future__ import annotations

import io
import random
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from confluent_kafka import Message, Producer, TopicPartition
from pydantic import SecretStr

from ketenstroom.adapters.kafka import all_partitions, end_offsets, ensure_topics, read_to_end
from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.adapters.registry import Registry
from ketenstroom.adapters.snapshots import Snapshots
from ketenstroom.contract import Topics
from ketenstroom.contract.codec import decode
from ketenstroom.contract.wire import unframe
from ketenstroom.settings import (
    CatalogueSettings,
    ProcessorSettings,
    PseudonymSettings,
    SinkSettings,
    TopicSettings,
)
from processors.build import build_transformer
from processors.dedup import (
    ID_BYTES,
    START_KEY,
    Horizon,
    PartitionDedup,
    RestoreReport,
    changelog_topic,
    parse_key,
    produce_changelog,
    restore,
)
from processors.metrics import ProcessorMetrics
from processors.progress import Reconciliation
from processors.runner import TransactionalProcessor
from producers.publish import Publisher
from sinks.runner import Sink
from sinks.seal import Sealer, SealPolicy
from synthetic import OM_COLUMNS, om_decision_rows, write_csv
from tests.conftest import Services

HOUR = 3_600_000
KEY = "dedup-horizon-test-key-0123456789abcdef"  # pragma: allowlist secret
FAR = datetime(2030, 1, 1, tzinfo=UTC)  # every period of the export past its grace, none final


def _latest_by_key(services: Services, topic: str) -> dict[bytes, bytes | None]:
    """What compaction keeps of ``topic``: each key's latest committed record (None: a tombstone)."""
    latest: dict[bytes, bytes | None] = {}
    for msg in read_to_end(services.kafka, all_partitions(services.kafka, topic), group_id=f"{topic}.peek"):
        latest[msg.key() or b""] = msg.value()
    return latest


# -- restore is flat past the horizon -----------------------------------------------------------------


def test_restore_reads_only_the_live_buckets_however_long_the_history(
    services: Services, names: Topics
) -> None:
    """Write 4x the horizon's worth of ids through the changelog in transactions, as the processor does;
    restore after 1x, 2x and 4x: the ids restored, records and bytes read, memory and time stay flat,
    while the log itself keeps growing until compaction drops what the tombstones delete."""
    horizon = Horizon(bucket_ms=HOUR, buckets=4)  # five live buckets: the newest and four before it
    per_bucket, per_batch = 20_000, 1_000  # 20 transactions a bucket: the log outgrows TAIL
    app_id, raw = f"{names.prefix}proc", names.raw("om")
    log_topic = changelog_topic(app_id, raw)
    ensure_topics(services.kafka, [log_topic], partitions=1, config=TopicSettings().retention().state())
    producer = Producer(services.kafka.librdkafka(transactional_id=f"{names.prefix}writer", linger_ms=5))
    producer.init_transactions(30)
    state = PartitionDedup(horizon)
    start = (int(time.time() * 1000) // HOUR - 40) * HOUR
    rng = random.Random(17)
    reports: dict[int, tuple[RestoreReport, int, int]] = {}
    written = 0
    for bucket in range(4 * horizon.buckets):
        for _ in range(per_bucket // per_batch):
            ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(per_batch)]
            producer.begin_transaction()
            assert all(state.add(eid, start + bucket * HOUR + 1) for eid in ids)
            produce_changelog(producer, log_topic, 0, state)  # as the processor's transaction does
            producer.commit_transaction(30)
            producer.poll(0)
            state.commit()
            written += per_batch
        if bucket + 1 in (horizon.buckets, 2 * horizon.buckets, 4 * horizon.buckets):
            restored, report = restore(
                services.kafka, app_id, horizon, [TopicPartition(raw, 0)], deadline_s=60
            )
            got = restored[(raw, 0)]
            assert len(got) == len(state), "restore differs from the state that wrote the log"
            assert got.newest == state.newest
            assert not got.add(ids[-1], start + bucket * HOUR), "the newest id was not restored"
            reports[(bucket + 1) // horizon.buckets] = (report, got.nbytes, written)
    producer.flush(10)

    for times, (report, nbytes, total) in sorted(reports.items()):
        print(
            f"history {times}x horizon ({total} ids written): restored {report.ids} ids from "
            f"{report.records} records ({report.bytes} B) in {report.seconds:.2f} s, state {nbytes} B"
        )
    one, two, four = (reports[n][0] for n in (1, 2, 4))
    live = (horizon.buckets + 1) * per_bucket
    assert one.ids == 4 * per_bucket and two.ids == four.ids == live
    # the live digests, small restore-start records and tombstones of the last four expired buckets (at
    # 2x only three had expired): nothing of the expired buckets' records
    assert four.records <= two.records + per_bucket // per_batch
    assert live * ID_BYTES <= four.bytes < live * ID_BYTES + 12 * four.records, "restore read expired buckets"
    assert reports[4][1] <= reports[2][1] * 1.05, "restored state grew with history"
    assert four.seconds < 2 * two.seconds + 2.0, (
        f"restore time grew: {two.seconds:.2f} s -> {four.seconds:.2f} s"
    )

    # what compaction keeps: only the live buckets' records; everything older is tombstoned
    latest = _latest_by_key(services, log_topic)
    kept = {parsed[0] for k, v in latest.items() if v is not None and (parsed := parse_key(k)) is not None}
    newest = horizon.bucket(start) + 4 * horizon.buckets - 1
    assert kept == set(range(newest - horizon.buckets, newest + 1))
    deleted = [k for k, v in latest.items() if v is None]
    assert len(deleted) == (3 * horizon.buckets - 1) * (per_bucket // per_batch)
    assert len(latest) == 4 * horizon.buckets * (per_bucket // per_batch) + 1, "a key was written twice"


# -- the processor over a legacy changelog, and past its horizon --------------------------------------


@pytest.fixture
def raw_copies(services: Services, names: Topics, tmp_path: Path) -> list[Message]:
    """A published OM export, read back from a raw topic of its own: records to deliver again."""
    source = Topics(prefix=f"{names.prefix}src.")
    ensure_topics(
        services.kafka, [*source.all(["om"]), source.deliveries], partitions=1, replication_factor=1
    )
    export = tmp_path / "om.csv"
    write_csv(export, om_decision_rows(60, seed=23, noise=0.0), OM_COLUMNS)
    with Publisher("om", kafka=services.kafka, registry=services.registry, topics=source) as publisher:
        assert publisher.publish([export]).published == 60
    return list(read_to_end(services.kafka, all_partitions(services.kafka, source.raw("om")), group_id="src"))


def _deliver(services: Services, names: Topics, records: list[Message], at_ms: int) -> None:
    """Produce ``records`` into raw.om again, byte for byte, timestamped ``at_ms`` (ingest time)."""
    producer = Producer(services.kafka.librdkafka(enable_idempotence=True, acks="all"))
    for msg in records:
        producer.produce(
            names.raw("om"),
            key=msg.key(),
            value=msg.value(),
            headers=msg.headers(),
            timestamp=at_ms,
            partition=0,
        )
    assert producer.flush(30) == 0


def _process(
    services: Services, names: Topics, settings: ProcessorSettings, metrics: ProcessorMetrics | None = None
) -> Reconciliation:
    deadline = time.monotonic() + 120
    with Registry(services.registry) as registry:
        transformer = build_transformer(
            registry=registry,
            paths=CatalogueSettings(),
            pseudonym=PseudonymSettings(key=SecretStr(KEY), key_id="t1"),
            topics=names,
        )
        stats = TransactionalProcessor(
            kafka=services.kafka,
            topics=names,
            partners=["om"],
            transformer=transformer,
            settings=settings,
            metrics=metrics,
        ).run(until_end=True, should_stop=lambda: time.monotonic() > deadline)
    assert time.monotonic() < deadline, "the processor did not reach the end"
    return stats


@pytest.fixture
def raw_topics(services: Services, names: Topics) -> Iterator[Topics]:
    ensure_topics(services.kafka, names.all(["om"]), partitions=1, replication_factor=1)
    yield names


def test_a_legacy_changelog_still_deduplicates_and_is_migrated(
    services: Services, raw_topics: Topics, raw_copies: list[Message]
) -> None:
    """A changelog in the format before buckets (one record per batch, ids one per line; the oldest
    form: the id as key, value 1): the processor upgraded onto it drops every event in it as a
    duplicate, and its first transaction rewrites those ids as bucket records and deletes the old keys."""
    names = raw_topics
    settings = ProcessorSettings(app_id=f"{names.prefix}proc")
    ids = _event_ids(services, raw_copies)
    log_topic = changelog_topic(settings.app_id, names.raw("om"))
    ensure_topics(services.kafka, [log_topic], partitions=1, config=TopicSettings().retention().state())
    legacy = Producer(services.kafka.librdkafka(transactional_id=f"{names.prefix}legacy"))
    legacy.init_transactions(30)
    legacy.begin_transaction()
    legacy.produce(log_topic, key=b"0.0", value="\n".join(ids[:-1]).encode(), partition=0)
    legacy.produce(log_topic, key=ids[-1].encode(), value=b"1", partition=0)
    legacy.commit_transaction(30)
    _deliver(services, names, raw_copies, int(time.time() * 1000))

    metrics = ProcessorMetrics()
    stats = _process(services, names, settings, metrics)
    assert stats.duplicates == {"om": len(raw_copies)} and stats.curated.get("om", 0) == 0
    held = metrics.registry.get_sample_value(
        "ketenstroom_processor_dedup_ids", {"partner": "om", "partition": "0"}
    )
    held_bytes = metrics.registry.get_sample_value(
        "ketenstroom_processor_dedup_bytes", {"partner": "om", "partition": "0"}
    )
    assert held_bytes is not None and 16 * len(ids) <= held_bytes < 200 * len(ids)  # digests, not text
    assert (
        held == len(ids)
        and (metrics.registry.get_sample_value("ketenstroom_processor_dedup_restore_seconds") or 0) > 0
    )

    latest = _latest_by_key(services, log_topic)
    assert latest[b"0.0"] is None and latest[ids[-1].encode()] is None, "legacy keys not deleted"
    migrated = [v for k, v in latest.items() if v is not None and k != START_KEY]
    assert all(parse_key(k) is not None for k, v in latest.items() if v is not None and k != START_KEY)
    assert sum(len(v) for v in migrated) == len(ids) * ID_BYTES  # type: ignore[arg-type]

    # and a restart restores the migrated state: the same records delivered again are duplicates
    _deliver(services, names, raw_copies[:5], int(time.time() * 1000))
    again = _process(services, names, settings)
    assert again.duplicates == {"om": 5} and again.curated.get("om", 0) == 0


def _event_ids(services: Services, records: list[Message]) -> list[str]:
    with Registry(services.registry) as registry:
        return [
            str(decode(registry.writer_schema(schema_id), payload)["metadata"]["event_id"])
            for schema_id, payload in (unframe(msg.value()) for msg in records)
        ]


def test_a_redelivery_older_than_the_horizon_passes_the_processor_but_doubles_no_sealed_row(
    services: Services, raw_topics: Topics, raw_copies: list[Message], group_id: str, tmp_path: Path
) -> None:
    names = raw_topics
    horizon_h = 1
    settings = ProcessorSettings(
        app_id=f"{names.prefix}proc", dedup_horizon_days=horizon_h / 24, dedup_bucket_days=0.1 / 24
    )
    now = int(time.time() * 1000)
    first = now - 10 * HOUR
    _deliver(services, names, raw_copies, first)
    _deliver(services, names, raw_copies[:5], first + 20 * 60_000)  # within the horizon: dropped here
    stats = _process(services, names, settings)
    n = len(raw_copies)
    assert stats.curated == {"om": n} and stats.duplicates == {"om": 5}

    store = ObjectStore(f"file://{tmp_path / 'store'}")
    sealer = Sealer(
        store, SealPolicy(grace=timedelta(days=14), final_after=timedelta(days=3650), clock=lambda: FAR)
    )
    sink = Sink(
        kafka=services.kafka,
        registry=services.registry,
        store=store,
        settings=SinkSettings(group_id=group_id),
        topics=names,
        sealer=sealer,
    )
    report = sink.run(stop_at=end_offsets(services.kafka, [names.curated]))
    snapshots = Snapshots(store)
    sealed = {m.period: m for m in report.sealed}
    assert sealed and sum(m.rows for m in sealed.values()) == n

    # ten hours on, the whole export again: past the horizon, so the processor lets it through ...
    _deliver(services, names, raw_copies, now)
    again = _process(services, names, settings)
    assert again.curated == {"om": n} and again.duplicates.get("om", 0) == 0, again

    # ... and the sink's per-period dedup drops every row: no new revision, nothing doubled
    sink = Sink(
        kafka=services.kafka,
        registry=services.registry,
        store=store,
        settings=SinkSettings(group_id=group_id),
        topics=names,
        sealer=sealer,
    )
    later = sink.run(stop_at=end_offsets(services.kafka, [names.curated], group_id=group_id))
    assert later.written == n, "the re-delivery did not reach the sink"
    assert later.sealed == []
    for period, manifest in sealed.items():
        latest = snapshots.manifest(period)
        assert latest is not None and latest.revision == manifest.revision == 0
        ids: list[str] = []
        for entry in latest.files:
            ids += pq.read_table(io.BytesIO(store.get(entry.path)), columns=["event_id"])[
                "event_id"
            ].to_pylist()
        assert len(ids) == len(set(ids)) == manifest.rows, f"{period}: a row doubled"
    assert list(store.list("staging/")) == []
