"""Benchmark the exactly-once processor against Quix Streams, the bare transform and a raw passthrough.

One multi-partner stream (the project's chain generator, all seven partners, a little noise) is
published once to fresh ``raw.*`` topics; every contender then reads all of it, in the same run:

* ours: ``TransactionalProcessor`` (exactly-once: outcomes, dedup changelog and offsets in one Kafka
  transaction per batch), read to the end by partition EOF, with its metrics counted and served on
  ``/metrics`` (scraped once a second, as a busy Prometheus would); and once more with metrics off (no
  counting, no server): ``ratio_metrics`` is on over off, the cost of observability (the two take
  turns at going first across ``--runs``: the first run after publishing tends to be slower);
* (a) quix: the same ``Transformer.transform`` per record in a Quix Streams app (``bench.quix_app``,
  run from ``.venv-quix`` as a subprocess) with ``processing_guarantee="exactly-once"``, the guarantee
  ours gives; it is also run with Quix's default, at-least-once, and shown without a ratio;
* (b) compute: ``Transformer.transform_batch`` over the same records in a plain loop, no Kafka;
* (c) raw: a confluent-kafka consumer reading batches and producing the same bytes unchanged
  (idempotent, acks=all, lz4 like ours), read to the end by partition EOF.

Each Kafka contender writes to its own output topics and uses its own consumer group; wall time runs
from start (including group join) to the last output acknowledged. Timings on a shared 2-core machine
are noisy, so ``--runs`` repeats the Kafka contenders interleaved and the best run of each counts.
The last line is machine-readable: our figure divided by each baseline's.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from bench.common import endpoints, fresh_topics, load_average
from ketenstroom.adapters.kafka import all_partitions as partitions_of
from ketenstroom.adapters.kafka import ensure_topics, read_to_end
from ketenstroom.adapters.observability import ObservabilityServer
from ketenstroom.adapters.registry import Registry
from ketenstroom.catalogue import catalogue_at
from ketenstroom.contract import Topics
from ketenstroom.settings import (
    CatalogueSettings,
    KafkaSettings,
    ProcessorSettings,
    PseudonymSettings,
    RegistrySettings,
)
from processors.build import build_transformer
from processors.metrics import ProcessorMetrics
from processors.runner import TransactionalProcessor
from processors.transform import RawRecord, Transformer
from producers.publish import Publisher
from synthetic import generate_chain

PARTNERS = catalogue_at(CatalogueSettings().dir).names  # the partners the catalogue declares

QUIX_PYTHON = Path(".venv-quix/bin/python")


def _two_years_back() -> date:
    today = date.today()
    return date(today.year - 2, 1, 1)


PARTITIONS = 3
MADE: list[str] = []  # topic prefixes this run created: deleted at the end unless --keep-topics


@dataclass(frozen=True)
class RoutedTopics(Topics):
    """Raw topics from the shared input namespace, curated and DLQ topics in this contender's own."""

    source: Topics = field(default_factory=Topics)

    def raw(self, partner: str) -> str:
        return self.source.raw(partner)

    def partner_of(self, topic: str) -> str:
        return topic.rsplit(".", 1)[1]


def publish(kafka: KafkaSettings, registry: RegistrySettings, cases: int, noise: float) -> tuple[Topics, int]:
    source = fresh_topics("proc-in")
    MADE.append(source.prefix)
    ensure_topics(kafka, [source.raw(p) for p in PARTNERS], partitions=PARTITIONS, replication_factor=1)
    published = 0
    with tempfile.TemporaryDirectory() as tmp:
        # cases from two years back, so nearly every one is followed to its end before today (the
        # generator writes nothing after its as-of date): the same stream size as before that rule
        report = generate_chain(Path(tmp), cases=cases, seed=42, noise=noise, start=_two_years_back())
        for partner in PARTNERS:
            with Publisher(partner, kafka=kafka, registry=registry, topics=source) as publisher:
                published += publisher.publish([Path(report.partners[partner].path)]).published
    return source, published


def outputs(kafka: KafkaSettings, source: Topics, label: str) -> RoutedTopics:
    out = RoutedTopics(prefix=fresh_topics(label).prefix, source=source)
    MADE.append(out.prefix)
    ensure_topics(
        kafka, [out.curated, *(out.dlq(p) for p in PARTNERS)], partitions=PARTITIONS, replication_factor=1
    )
    return out


class _Off:
    """A metric that counts nothing: every ``ProcessorMetrics`` member, with metrics off."""

    def labels(self, *_labels: str) -> _Off:
        return self

    def inc(self, _amount: float = 1) -> None:
        pass

    def set(self, _value: float) -> None:
        pass

    def observe(self, _value: float) -> None:
        pass


def metrics_off() -> ProcessorMetrics:
    metrics = ProcessorMetrics()
    for name, value in list(vars(metrics).items()):
        if hasattr(value, "labels"):
            setattr(metrics, name, _Off())
    return metrics


def processor_for(
    kafka: KafkaSettings,
    registry: Registry,
    pseudonym: PseudonymSettings,
    source: Topics,
    label: str,
    metrics: ProcessorMetrics,
    **settings: Any,
) -> TransactionalProcessor:
    """Ours on ``source``'s raw topics, writing to this label's own output topics (also used by
    ``bench.profile_runner`` and ``bench.turn_timeline``); ``settings``: ProcessorSettings fields."""
    out = outputs(kafka, source, label)
    transformer = build_transformer(
        registry=registry, paths=CatalogueSettings(), pseudonym=pseudonym, topics=out
    )
    return TransactionalProcessor(
        kafka=kafka,
        topics=out,
        partners=list(PARTNERS),
        transformer=transformer,
        settings=ProcessorSettings(app_id=f"{out.prefix}{label}", **settings),
        metrics=metrics,
    )


def raw_clients(kafka: KafkaSettings, out: Topics) -> tuple[Consumer, Producer]:
    """The raw passthrough's consumer and producer (``run_raw``; ``bench.turn_timeline`` times the same)."""
    consumer = Consumer(
        kafka.librdkafka(
            group_id=f"{out.prefix}raw",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            enable_partition_eof=True,
        )
    )
    producer = Producer(
        kafka.librdkafka(enable_idempotence=True, acks="all", linger_ms=5, compression_type="lz4")
    )
    return consumer, producer


def run_ours(
    kafka: KafkaSettings,
    registry: Registry,
    pseudonym: PseudonymSettings,
    source: Topics,
    *,
    metrics: bool = True,
) -> tuple[float, int]:
    """Ours, with its metrics counted and served (scraped once a second), or with metrics off."""
    counted = ProcessorMetrics() if metrics else metrics_off()
    proc = processor_for(kafka, registry, pseudonym, source, "ours" if metrics else "ours-off", counted)
    server = None
    scrapes: list[bytes] = []
    done = threading.Event()
    if metrics:
        server = ObservabilityServer(counted.registry, lambda: (proc.healthy, {})).start()
        url = f"http://127.0.0.1:{server.port}/metrics"

        def scrape() -> None:
            while not done.wait(1.0):
                with urllib.request.urlopen(url, timeout=5) as response:
                    scrapes.append(response.read())

        threading.Thread(target=scrape, name="scraper", daemon=True).start()
    start = time.perf_counter()
    try:
        stats = proc.run(until_end=True)
        # timed to here: stopping the endpoint waits for its server's next poll (up to 0.5 s, ~8 % of
        # a 3 s run), which is not the processor's work and only the metrics-on side would pay
        elapsed = time.perf_counter() - start
    finally:
        done.set()
        if server is not None:
            server.stop()
    assert stats.reconciles(), stats
    if metrics:
        counted_in = sum(
            s.value
            for m in counted.registry.collect()
            if m.name == "ketenstroom_processor_records_in"
            for s in m.samples
            if s.name.endswith("_total")
        )
        assert counted_in == sum(stats.records_in.values()), (counted_in, stats.records_in)
    return elapsed, sum(stats.records_in.values())


def run_quix(
    kafka: KafkaSettings, registry: RegistrySettings, key: str, source: Topics, n: int, guarantee: str
) -> float:
    out = outputs(kafka, source, "quix")
    env = {**os.environ, "KETENSTROOM_PSEUDONYM_KEY": key, "KETENSTROOM_PSEUDONYM_KEY_ID": "bench"}
    argv = [
        str(QUIX_PYTHON), "-m", "bench.quix_app",
        "--bootstrap", kafka.bootstrap_servers,
        "--registry", registry.url,
        "--input-prefix", source.prefix,
        "--output-prefix", out.prefix,
        "--count", str(n),
        "--group", f"{out.prefix}quix",
        "--guarantee", guarantee,
    ]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=540)
    if done.returncode != 0:
        raise SystemExit(f"quix app failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["curated"] + result["dead"] == n, result
    return float(result["seconds"])


def run_raw(kafka: KafkaSettings, source: Topics, n: int, *, poll_s: float = 0.5) -> float:
    """Consume in batches, produce the same bytes unchanged; to the end by partition EOF.

    ``poll_s`` is each ``consume``'s timeout: at 0.5 s (the issue's baseline) the last, partial batch
    waits it out whole, EOFs in hand, about half of this baseline's ~0.9 s turn; the processor hands
    its last batch over at EOF (a run with an end). ``poll_s=0.02`` is the same loop without that wait,
    reported beside it (``ratio_raw_eof``) so that the fixed end-of-stream wait is not mistaken for
    per-event speed."""
    out = outputs(kafka, source, "raw" if poll_s >= 0.5 else "raweof")
    consumer, producer = raw_clients(kafka, out)
    at_end: set[tuple[str, int]] = set()
    copied = 0
    start = time.perf_counter()
    consumer.subscribe([source.raw(p) for p in PARTNERS])
    try:
        while True:
            for msg in consumer.consume(2000, timeout=poll_s):
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise SystemExit(f"raw passthrough failed: {err}")
                    at_end.add((msg.topic(), msg.partition()))
                    continue
                at_end.discard((msg.topic(), msg.partition()))
                while True:
                    try:
                        producer.produce(out.curated, key=msg.key(), value=msg.value(), headers=msg.headers())
                        break
                    except BufferError:
                        producer.poll(0.1)  # backpressure: serve delivery reports until there is room
                copied += 1
            producer.poll(0)
            assigned = consumer.assignment()
            if assigned and all((tp.topic, tp.partition) in at_end for tp in assigned):
                break
        producer.flush(60)
    finally:
        consumer.close()
    elapsed = time.perf_counter() - start
    assert copied == n, (copied, n)
    return elapsed


def encoded_records(kafka: KafkaSettings, source: Topics) -> list[RawRecord]:
    """Every raw record as the runner sees it, read once (outside the timed section)."""
    parts = [tp for p in PARTNERS for tp in partitions_of(kafka, source.raw(p))]
    return [
        RawRecord(
            m.topic(),
            m.partition(),
            m.offset(),
            m.key(),
            m.value(),
            tuple((k, v or b"") for k, v in (m.headers() or ())),
            m.timestamp()[1],
        )
        for m in read_to_end(kafka, parts, group_id=f"{source.prefix}compute")
    ]


def run_compute(transformer: Transformer, records: list[RawRecord], batch: int = 2000) -> float:
    start = time.perf_counter()
    for i in range(0, len(records), batch):
        transformer.transform_batch(records[i : i + batch])
    return time.perf_counter() - start


def delete_made_topics(kafka: KafkaSettings) -> None:
    """Delete the topics this run created (inputs, outputs, dedup changelogs): the stack is shared."""
    admin = AdminClient(kafka.librdkafka())
    names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(tuple(MADE))]
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            future.result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=14_000, help="crimes to generate (~4.8 events each)")
    parser.add_argument("--noise", type=float, default=0.01)
    parser.add_argument(
        "--runs",
        type=int,
        default=3,
        help="turns of every contender; each ratio uses each contender's best turn (one turn of ~3 s "
        "swung ratio_raw from 0.22 to 0.30 between three runs on a quiet machine)",
    )
    parser.add_argument(
        "--skip-quix-default",
        action="store_true",
        help="do not also run Quix with its default guarantee (at-least-once; shown, not in a ratio)",
    )
    parser.add_argument("--keep-topics", action="store_true", help="leave this run's topics on the broker")
    args = parser.parse_args()
    if not QUIX_PYTHON.exists():
        raise SystemExit(f"{QUIX_PYTHON} is missing; `make bench-process` creates it")
    kafka, registry_settings = endpoints()
    key = secrets.token_hex(32)
    pseudonym = PseudonymSettings(key=SecretStr(key), key_id="bench")

    try:
        started = time.perf_counter()
        source, n = publish(kafka, registry_settings, args.cases, args.noise)
        print(f"published {n} events of {len(PARTNERS)} partners to {source.prefix}raw.* in "
              f"{time.perf_counter() - started:.1f} s; {load_average()}", flush=True)  # fmt: skip

        ours: list[float] = []
        ours_off: list[float] = []
        quix: list[float] = []
        quix_default: list[float] = []
        raw: list[float] = []
        raw_eof: list[float] = []
        with Registry(registry_settings) as registry:
            for run in range(args.runs):
                # metrics on and off in turns, so neither is always the first run after publishing
                for metrics in (True, False) if run % 2 == 0 else (False, True):
                    t, seen = run_ours(kafka, registry, pseudonym, source, metrics=metrics)
                    assert seen == n, (seen, n)
                    (ours if metrics else ours_off).append(t)
                quix.append(run_quix(kafka, registry_settings, key, source, n, "exactly-once"))
                if not args.skip_quix_default:
                    quix_default.append(run_quix(kafka, registry_settings, key, source, n, "at-least-once"))
                raw.append(run_raw(kafka, source, n))
                raw_eof.append(run_raw(kafka, source, n, poll_s=0.02))
                print(
                    f"run {run + 1}: ours {n / ours[-1]:,.0f}/s  metrics off {n / ours_off[-1]:,.0f}/s  "
                    f"quix {n / quix[-1]:,.0f}/s  "
                    + (f"quix at-least-once {n / quix_default[-1]:,.0f}/s  " if quix_default else "")
                    + f"raw {n / raw[-1]:,.0f}/s  raw at EOF {n / raw_eof[-1]:,.0f}/s",
                    flush=True,
                )
            records = encoded_records(kafka, source)
            transformer = build_transformer(
                registry=registry,
                paths=CatalogueSettings(),
                pseudonym=pseudonym,
                topics=outputs(kafka, source, "c"),
            )
            compute = min(run_compute(transformer, records) for _ in range(max(2, args.runs)))

        ours_rate, quix_rate, raw_rate = n / min(ours), n / min(quix), n / min(raw)
        raw_eof_rate = n / min(raw_eof)
        off_rate = n / min(ours_off)
        compute_rate = len(records) / compute
        print(f"events: {n} ({len(PARTNERS)} partners, {PARTITIONS} partitions each, noise {args.noise})")
        rows = [
            ("ours: TransactionalProcessor, exactly-once + dedup", ours_rate),
            ("    ours with metrics off (no counting, no /metrics)", off_rate),
            ("(a) quix: Quix Streams app, exactly-once", quix_rate),
            *(
                [("    quix with its default, at-least-once (no ratio)", n / min(quix_default))]
                if quix_default
                else []
            ),
            ("(b) compute: transform_batch alone, no Kafka", compute_rate),
            ("(c) raw: confluent-kafka consume + produce bytes", raw_rate),
            ("    raw without the last batch's 0.5 s wait (no target)", raw_eof_rate),
        ]
        for label, rate in rows:
            print(f"{label + ':':<54}{rate:>9,.0f} events/s")
        print(load_average())
        print(
            f"ratio_quix={ours_rate / quix_rate:.2f} ratio_compute={ours_rate / compute_rate:.2f} "
            f"ratio_raw={ours_rate / raw_rate:.2f} ratio_metrics={ours_rate / off_rate:.2f} "
            f"ratio_raw_eof={ours_rate / raw_eof_rate:.2f}"
        )
    finally:
        if not args.keep_topics and MADE:
            delete_made_topics(kafka)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
