"""Benchmark the processor's dedup state: memory and time per id, and restore as history grows.

In one run, against a baseline in the same run:

* memory per id: ``PartitionDedup`` (16-byte digests in sorted arrays behind a Bloom filter) against
  the state before it, a Python ``set`` of the ids' text, both holding the same ``--ids`` ids
  (tracemalloc, which sees numpy's buffers too);
* time per id of ``add`` (new ids, in batches with their changelog and commit) against ``set``
  membership plus ``add`` of the text;
* restore on the real broker after 1x, 2x and 4x the horizon's worth of ids (``--per-horizon``):
  ``processors.dedup.restore`` of a bucketed changelog against reading a changelog of the format
  before it (one record per batch, ids one per line, never shrinking) into a set, as the processor
  before this version did.

Nothing is asserted; the last line is machine-readable.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import time
import tracemalloc
import uuid

from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from bench.common import endpoints, fresh_topics, load_average
from ketenstroom.adapters.kafka import all_partitions, ensure_topics, read_to_end
from ketenstroom.settings import KafkaSettings, TopicSettings
from processors.dedup import Horizon, PartitionDedup, changelog_topic, produce_changelog, restore

HOUR = 3_600_000
BATCH = 2_000
OLD_IDS_PER_RECORD = 10_000


def _ids(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)]


def memory_and_time(n: int) -> dict[str, float]:
    """Bytes an id held (the ids' text counted where the state keeps it) and microseconds an add."""
    ids = _ids(n, 1)
    horizon = Horizon(bucket_ms=HOUR, buckets=400)
    t0 = 1_800_000_000_000
    out: dict[str, float] = {}
    started = time.perf_counter()
    old: set[str] = set()
    for eid in ids:
        if eid not in old:
            old.add(eid)
    out["add_us_before"] = (time.perf_counter() - started) / n * 1e6
    del old
    gc.collect()
    tracemalloc.start()
    old = {str(uuid.UUID(eid)) for eid in ids}  # new strings, as decoding each record makes them
    out["bytes_per_id_before"] = tracemalloc.get_traced_memory()[0] / n
    tracemalloc.stop()
    del old

    def fill() -> PartitionDedup:
        state = PartitionDedup(horizon)
        for start in range(0, n, BATCH):
            for eid in ids[start : start + BATCH]:
                state.add(eid, t0 + start)
            state.changelog()
            state.commit()
        return state

    gc.collect()
    started = time.perf_counter()
    fill()  # timed without tracemalloc, which slows every allocation
    out["add_us_after"] = (time.perf_counter() - started) / n * 1e6
    gc.collect()
    tracemalloc.start()
    state = fill()
    out["bytes_per_id_after_unfolded"] = tracemalloc.get_traced_memory()[0] / n
    state._fold()  # the steady state: everything folded
    gc.collect()
    out["bytes_per_id_after"] = tracemalloc.get_traced_memory()[0] / n
    out["peak_bytes_per_id_after"] = tracemalloc.get_traced_memory()[1] / n
    tracemalloc.stop()
    return out


def _write_new(kafka: KafkaSettings, topic: str, state: PartitionDedup, ids: list[str], at_ms: int) -> None:
    producer = Producer(kafka.librdkafka(transactional_id=f"{topic}-writer", linger_ms=5))
    producer.init_transactions(30)
    for start in range(0, len(ids), BATCH):
        producer.begin_transaction()
        for eid in ids[start : start + BATCH]:
            state.add(eid, at_ms)
        produce_changelog(producer, topic, 0, state)
        producer.commit_transaction(30)
        producer.poll(0)
        state.commit()


def _write_old(kafka: KafkaSettings, topic: str, ids: list[str], offset: int) -> None:
    """The format before buckets: one record per batch, ids one per line, keyed by the first offset."""
    producer = Producer(kafka.librdkafka(transactional_id=f"{topic}-writer", linger_ms=5))
    producer.init_transactions(30)
    for start in range(0, len(ids), BATCH):
        producer.begin_transaction()
        batch = ids[start : start + BATCH]
        for chunk in range(0, len(batch), OLD_IDS_PER_RECORD):
            value = "\n".join(batch[chunk : chunk + OLD_IDS_PER_RECORD]).encode()
            producer.produce(topic, key=f"{offset + start}.{chunk}".encode(), value=value, partition=0)
        producer.commit_transaction(30)


def _restore_old(kafka: KafkaSettings, topic: str) -> tuple[int, float]:
    started = time.perf_counter()
    seen: set[str] = set()
    for msg in read_to_end(kafka, all_partitions(kafka, topic), group_id=f"{topic}.restore"):
        seen.update((msg.value() or b"").decode().split("\n"))
    return len(seen), time.perf_counter() - started


def restores(kafka: KafkaSettings, per_horizon: int) -> dict[str, float]:
    names = fresh_topics("dedup")
    horizon = Horizon(bucket_ms=HOUR, buckets=4)
    per_bucket = per_horizon // horizon.buckets
    app_id, raw = f"{names.prefix}proc", names.raw("om")
    new_topic, old_topic = changelog_topic(app_id, raw), f"{names.prefix}old-changelog"
    ensure_topics(kafka, [new_topic, old_topic], partitions=1, config=TopicSettings().retention().state())
    state = PartitionDedup(horizon)
    start = (int(time.time() * 1000) // HOUR - 40) * HOUR
    out: dict[str, float] = {}
    try:
        for bucket in range(4 * horizon.buckets):
            ids = _ids(per_bucket, 100 + bucket)
            _write_new(kafka, new_topic, state, ids, start + bucket * HOUR)
            _write_old(kafka, old_topic, ids, bucket * per_bucket)
            times = (bucket + 1) // horizon.buckets
            if (bucket + 1) % horizon.buckets or times not in (1, 2, 4):
                continue
            restored, report = restore(kafka, app_id, horizon, [TopicPartition(raw, 0)], deadline_s=300)
            old_ids, old_s = _restore_old(kafka, old_topic)
            out[f"restore_s_new_{times}x"] = round(report.seconds, 3)
            out[f"restore_ids_new_{times}x"] = report.ids
            out[f"restore_s_old_{times}x"] = round(old_s, 3)
            out[f"restore_ids_old_{times}x"] = old_ids
            print(
                f"history {times}x horizon ({(bucket + 1) * per_bucket} ids): bucketed restore "
                f"{report.ids} ids from {report.records} records in {report.seconds:.2f} s; "
                f"per-batch changelog {old_ids} ids in {old_s:.2f} s",
                flush=True,
            )
            del restored
    finally:
        AdminClient(kafka.librdkafka()).delete_topics([new_topic, old_topic])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--ids", type=int, default=1_000_000, help="ids held for the memory measurement")
    parser.add_argument("--per-horizon", type=int, default=200_000, help="ids a horizon's worth of history")
    args = parser.parse_args()
    print(load_average(), flush=True)
    result = memory_and_time(args.ids)
    before = f"{result['bytes_per_id_before']:.1f} B/id, {result['add_us_before']:.2f} us/id"
    after = (
        f"{result['bytes_per_id_after']:.1f} B/id folded ({result['bytes_per_id_after_unfolded']:.1f} "
        f"with the recent ids in a dict, peak {result['peak_bytes_per_id_after']:.1f}), "
        f"{result['add_us_after']:.2f} us/id"
    )
    print(f"{args.ids} ids: a set of their text {before}; bucketed digests {after}", flush=True)
    kafka, _registry = endpoints()
    result |= restores(kafka, args.per_horizon)
    result["ratio_memory"] = round(result["bytes_per_id_after"] / result["bytes_per_id_before"], 3)
    result["ratio_add"] = round(result["add_us_after"] / result["add_us_before"], 3)
    result["ratio_restore_4x"] = round(result["restore_s_new_4x"] / result["restore_s_old_4x"], 3)
    print(load_average(), flush=True)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
