"""Benchmark the sink (consume, decode, periods, stage, seal with dedup and manifests; the chain and
person tables derived after sealing are timed apart) against two baselines on the same records, in the
same run:

(a) minimal: the sink a user would write by hand — confluent-kafka batch consume, fastavro decode,
    pyarrow write of the same Parquet schema every ``--batch`` rows, offsets committed after each write;
    no periods, no sealing, no manifest, no dedup;
(b) write: pyarrow writing the same already-decoded rows straight to Parquet — the write ceiling.

Then peak resident memory of ``ketenstroom sink`` (a child process, as operators run it, tables on)
writing one period of ``--memory-events`` events (5 million by default), sealing it and deriving its
tables. "Ours" runs twice per round: serving ``/metrics`` (scraped every second) as deployed, and without
the endpoint; both rates are printed. The last line is machine-readable:
``ratio_min=<x> ratio_write=<y> peak_rss_mib=<z> ratio_metrics=<on/off>`` (ratios of ours with metrics on).
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import Consumer, KafkaError, Producer
from fastavro import parse_schema, schemaless_reader

from bench.common import endpoints, fresh_topics, load_average
from ketenstroom.adapters.kafka import end_offsets, ensure_topics
from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.adapters.observability import ObservabilityServer
from ketenstroom.adapters.registry import Registry
from ketenstroom.contract import Topics, load_schemas
from ketenstroom.contract.codec import encode_framed
from ketenstroom.settings import CatalogueSettings, KafkaSettings, RegistrySettings, SinkSettings
from producers.steps import zigzag
from sinks.parquet import SCHEMA
from sinks.runner import Sink
from sinks.seal import Sealer, SealPolicy
from sinks.tables import build_missing_tables
from synthetic.curated import CHAIN_EVENT, chain_event, chain_events, publish_curated

AS_OF = datetime(2030, 1, 1, tzinfo=UTC)  # every generated period is past its grace


def _policy() -> SealPolicy:
    return SealPolicy(grace=timedelta(days=14), final_after=timedelta(days=3650), clock=lambda: AS_OF)


def run_ours(
    kafka: KafkaSettings,
    registry: RegistrySettings,
    topics: Topics,
    out: Path,
    *,
    metrics: bool = True,
    tables: bool = True,
) -> tuple[float, float, int]:
    """Seconds to consume, stage, seal (dedup, manifests) every period; then seconds for the tables
    (0 without ``tables``).

    With ``metrics`` the sink serves ``/metrics`` (on a port the OS picks) and a scraper reads it every
    second meanwhile, as Prometheus would; without, nothing is served (the counters are kept in-process
    either way). The time ends when ``Sink.run`` returns: stopping the endpoint afterwards is not the
    sink's work (``shutdown`` waits up to the server's 0.5 s poll interval, which was timed as part of
    every run with metrics, 0-0.5 s of a ~4 s run: most of the "cost of metrics" measured before)."""
    store = ObjectStore(f"file://{out}")
    stop = end_offsets(kafka, [topics.curated])
    sink = Sink(
        kafka=kafka,
        registry=registry,
        store=store,
        settings=SinkSettings(group_id=f"{topics.prefix}ours-{uuid.uuid4().hex[:6]}"),
        topics=topics,
        sealer=Sealer(store, _policy()),
        tables=False,
    )
    server = scraper = None
    done = threading.Event()
    if metrics:
        server = ObservabilityServer(sink.metrics.registry, lambda: (sink.healthy, {})).start()
        url = f"http://127.0.0.1:{server.port}/metrics"

        def scrape() -> None:
            with httpx.Client() as client:
                while not done.wait(1.0):
                    client.get(url).raise_for_status()

        scraper = threading.Thread(target=scrape, daemon=True)
        scraper.start()
    start = time.perf_counter()
    try:
        report = sink.run(stop_at=stop)
        elapsed = time.perf_counter() - start
    finally:
        done.set()
        if scraper is not None:
            scraper.join()
        if server is not None:
            server.stop()
    assert report.sealed, "nothing was sealed"
    if not tables:
        return elapsed, 0.0, report.records
    start = time.perf_counter()
    assert build_missing_tables(store), "no tables were built"
    return elapsed, time.perf_counter() - start, report.records


def run_minimal(
    kafka: KafkaSettings, registry: RegistrySettings, topics: Topics, out: Path, batch: int
) -> float:
    """The hand-written sink: consume, decode, write, commit. Nothing else."""
    stop = end_offsets(kafka, [topics.curated])
    consumer = Consumer(
        kafka.librdkafka(
            group_id=f"{topics.prefix}min-{uuid.uuid4().hex[:6]}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            enable_partition_eof=True,
        )
    )
    schemas: dict[int, Any] = {}
    reg = Registry(registry)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    at_end: dict[int, int] = {}
    files = 0
    start = time.perf_counter()

    def write() -> None:
        nonlocal files, rows
        table = pa.Table.from_pylist(rows, schema=SCHEMA)
        pq.write_table(table, out / f"part-{files:05d}.parquet", compression="zstd")
        consumer.commit(asynchronous=False)
        files += 1
        rows = []

    consumer.subscribe([topics.curated])
    while not all(at_end.get(p, -1) >= end for (_t, p), end in stop.items() if end > 0):
        for msg in consumer.consume(num_messages=5000, timeout=0.5):
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    at_end[msg.partition()] = msg.offset()
                    continue
                raise RuntimeError(msg.error())
            value = msg.value()
            schema_id = int.from_bytes(value[1:5], "big")
            if schema_id not in schemas:
                schemas[schema_id] = reg.writer_schema(schema_id)
            row = schemaless_reader(io.BytesIO(value[5:]), schemas[schema_id], None)
            row["event_id"] = str(row["event_id"])  # logicalType uuid decodes to uuid.UUID
            rows.append(row)
        if len(rows) >= batch:
            write()
    if rows:
        write()
    elapsed = time.perf_counter() - start
    consumer.close()
    reg.close()
    return elapsed


def decoded_batches(
    kafka: KafkaSettings, registry: RegistrySettings, topics: Topics, batch: int
) -> list[list[dict[str, Any]]]:
    """The same records, decoded, outside any timed section (input of the write ceiling)."""
    consumer = Consumer(
        kafka.librdkafka(
            group_id=f"{topics.prefix}read-{uuid.uuid4().hex[:6]}",
            auto_offset_reset="earliest",
            enable_partition_eof=True,
        )
    )
    stop = end_offsets(kafka, [topics.curated])
    reg = Registry(registry)
    at_end: dict[int, int] = {}
    rows: list[dict[str, Any]] = []
    consumer.subscribe([topics.curated])
    while not all(at_end.get(p, -1) >= end for (_t, p), end in stop.items() if end > 0):
        for msg in consumer.consume(num_messages=5000, timeout=0.5):
            if msg.error() is not None:
                at_end[msg.partition()] = msg.offset()
                continue
            value = msg.value()
            schema = reg.writer_schema(int.from_bytes(value[1:5], "big"))
            row = schemaless_reader(io.BytesIO(value[5:]), schema, None)
            row["event_id"] = str(row["event_id"])
            rows.append(row)
    consumer.close()
    reg.close()
    return [rows[i : i + batch] for i in range(0, len(rows), batch)]


def run_write(batches: list[list[dict[str, Any]]], out: Path) -> float:
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for n, rows in enumerate(batches):
        pq.write_table(
            pa.Table.from_pylist(rows, schema=SCHEMA), out / f"part-{n:05d}.parquet", compression="zstd"
        )
    return time.perf_counter() - start


_ONE_PERIOD_STEPS = [
    ("POLICE_SUSPECT_REGISTERED", "politie", "nl.ketenstroom.politie.SuspectRegistered"),
    ("OM_REGISTRATION", "om", "nl.ketenstroom.om.CaseRegistered"),
    ("OM_DECISION", "om", "nl.ketenstroom.om.CaseDecision"),
    ("COURT_JUDGMENT", "rechtspraak", "nl.ketenstroom.rechtspraak.Judgment"),
]


class _Patcher:
    """An encoded ChainEvent whose event id, pseudonyms and event time are replaced by slicing: every
    value has a fixed width (UUID strings, 64-character pseudonyms, 2026 timestamps are 6-byte varints),
    so millions of distinct events are produced in seconds instead of minutes of Avro encoding."""

    MARK_ID = "0badc0de-0000-4000-8000-000000000000"
    MARK_TIME = datetime(2026, 3, 1, 0, 0, 0, 777000, tzinfo=UTC)

    def __init__(self, schema_id: int, parsed: Any, step: int) -> None:
        name, partner, kind = _ONE_PERIOD_STEPS[step]
        marks = {"case": "C" * 64, "report": "R" * 64, "person": "P" * 64, "bsn": "B" * 64}
        event = chain_event(
            event_id=self.MARK_ID,
            event_time=self.MARK_TIME,
            chain_step=name,
            partner=partner,
            event_type=kind,
            case=marks["case"] if step else None,
            report=marks["report"] if step <= 1 else None,
            skn=marks["person"],
            bsn=marks["bsn"],
            age=30,
        )
        self.template = encode_framed(schema_id, parsed, event)
        spans = [(self.MARK_ID.encode(), "id"), (zigzag(int(self.MARK_TIME.timestamp() * 1000)), "time")]
        self.cuts = sorted((self.template.index(mark), len(mark), key) for mark, key in spans)
        for key, value in marks.items():  # every place a pseudonym occurs (the person's is there twice)
            mark = value.encode()
            at = self.template.find(mark)
            while at >= 0:
                self.cuts.append((at, len(mark), key))
                at = self.template.find(mark, at + len(mark))
        self.cuts.sort()

    def build(self, values: dict[str, bytes]) -> bytes:
        parts, at = [], 0
        for start, length, key in self.cuts:
            parts += [self.template[at:start], values[key]]
            at = start + length
        parts.append(self.template[at:])
        return b"".join(parts)


def publish_one_period(kafka: KafkaSettings, registry: RegistrySettings, topics: Topics, count: int) -> None:
    """``count`` distinct events, all in March 2026: cases of four steps (police, OM registration and
    decision, judgment) with report, case and person pseudonyms, so the chain tables have work to do."""
    schema = load_schemas(CatalogueSettings().schema_dir)[CHAIN_EVENT]
    with Registry(registry) as reg:
        schema_id = reg.register(schema.subject(topics.curated), schema)
    parsed = parse_schema(schema.parsed)
    patchers = [_Patcher(schema_id, parsed, step) for step in range(len(_ONE_PERIOD_STEPS))]
    producer = Producer(
        kafka.librdkafka(
            enable_idempotence=True,
            acks="all",
            linger_ms=50,
            compression_type="lz4",
            batch_num_messages=10_000,
        )
    )
    base_ms = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1000)
    for n in range(count):
        case_no, step = divmod(n, 4)
        case = f"{case_no:060x}case".encode()
        values = {
            "id": str(uuid.UUID(int=(n * 2_654_435_761) % (1 << 128) | (1 << 76))).encode(),
            "time": zigzag(base_ms + ((case_no * 7) % (24 * 60 * 20)) * 60_000 + step * 2 * 86_400_000),
            "case": case,
            "report": f"{case_no:058x}report".encode(),
            # lowercase hex of 64 characters, like the processor's HMAC-SHA-256 pseudonyms (the sink
            # resolves persons on their 32 packed bytes; other strings take the slower string path)
            "person": f"{case_no // 2:060x}5c5c".encode(),
            "bsn": f"{case_no // 2:060x}b5b5".encode(),
        }
        key = case if step else values["report"]
        value = patchers[step].build(values)
        while True:
            try:
                producer.produce(topics.curated, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.2)
        if n % 20_000 == 0:
            producer.poll(0)
    assert producer.flush(300) == 0


def memory_run(
    kafka: KafkaSettings, registry: RegistrySettings, count: int, out: Path
) -> tuple[float, float]:
    """Peak RSS (MiB) and seconds of ``ketenstroom sink`` writing and sealing one period of ``count``."""
    topics = fresh_topics("sinkmem")
    ensure_topics(kafka, [topics.curated], partitions=3, replication_factor=1)
    t = time.perf_counter()
    publish_one_period(kafka, registry, topics, count)
    print(f"published {count:,} events in one period in {time.perf_counter() - t:.0f} s")
    env = {
        **os.environ,
        "KETENSTROOM_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KETENSTROOM_REGISTRY_URL": registry.url,
        "KETENSTROOM_TOPIC_PREFIX": topics.prefix,
    }
    command = [
        sys.executable,
        "-m",
        "cli",
        "sink",
        "--until-caught-up",
        "--no-release",  # the sink's own work: sealing and tables, not the release built after
        "--storage",
        f"file://{out}",
        "--group",
        f"{topics.prefix}mem",
        "--as-of",
        AS_OF.isoformat(),
        "--final-after-days",
        "3650",
    ]
    start = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE)
    _pid, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - start
    assert os.waitstatus_to_exitcode(status) == 0, "the sink failed"
    print(child.stdout.read().decode().strip().splitlines()[-1] if child.stdout else "")
    return usage.ru_maxrss / 1024, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--cases", type=int, default=40_000, help="cases for the throughput data (~3.6 events each)"
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=4,
        help="rounds; each side's best round counts (ours is ~3 s a run: two rounds left the ratios noise)",
    )
    parser.add_argument(
        "--batch", type=int, default=50_000, help="rows per file of the baselines (the sink's default buffer)"
    )
    parser.add_argument("--memory-events", type=int, default=5_000_000)
    args = parser.parse_args()
    kafka, registry = endpoints()
    topics = fresh_topics("sink")
    ensure_topics(kafka, [topics.curated], partitions=3, replication_factor=1)
    with Registry(registry) as reg:
        published = publish_curated(
            kafka,
            registry=reg,
            topics=topics,
            events=chain_events(
                args.cases, seed=1, start=datetime(2026, 1, 1, tzinfo=UTC), days=180, repeat_share=0.01
            ),
        )
    print(f"{published:,} curated events over {args.cases:,} cases; {load_average()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        batches = decoded_batches(kafka, registry, topics, args.batch)
        ours, tables, quiet, minimal, write = [], [], [], [], []
        for run in range(args.runs):
            if run % 2:  # alternate which goes first: neither gets the warmer or quieter slot always
                t_quiet, _t, _n = run_ours(
                    kafka, registry, topics, root / f"quiet{run}", metrics=False, tables=False
                )
            t, t_tables, records = run_ours(kafka, registry, topics, root / f"ours{run}")
            if not run % 2:
                t_quiet, _t, _n = run_ours(
                    kafka, registry, topics, root / f"quiet{run}", metrics=False, tables=False
                )
            ours.append(t)
            tables.append(t_tables)
            quiet.append(t_quiet)
            minimal.append(run_minimal(kafka, registry, topics, root / f"min{run}", args.batch))
            write.append(run_write(batches, root / f"write{run}"))
            print(
                f"run {run + 1}: sink {records / t:,.0f}/s (then tables {t_tables:.1f} s)  "
                f"without metrics {records / t_quiet:,.0f}/s  "
                f"minimal {published / minimal[-1]:,.0f}/s  write {published / write[-1]:,.0f}/s"
            )
        del batches
        ours_rate, min_rate, write_rate = (
            published / min(ours),
            published / min(minimal),
            published / min(write),
        )
        quiet_rate = published / min(quiet)
        print(f"sink (decode+periods+stage+seal+dedup+manifests):      {ours_rate:,.0f} events/s")
        print(f"  the same without serving /metrics:                     {quiet_rate:,.0f} events/s")
        with_tables = published / (min(ours) + min(tables))
        print(f"  and deriving the chain and person tables after sealing: {min(tables):.1f} s more")
        print(
            f"  ({with_tables:,.0f} events/s all in; "
            f"{with_tables / (published / min(minimal)):.2f} of minimal)"
        )
        print(f"minimal hand-written sink (consume+decode+write):       {min_rate:,.0f} events/s")
        print(f"pyarrow writing decoded rows (write ceiling):            {write_rate:,.0f} events/s")
        peak, seconds = memory_run(kafka, registry, args.memory_events, root / "memory")
        print(
            f"one period of {args.memory_events:,} events: sink and seal in {seconds:.0f} s "
            f"({args.memory_events / seconds:,.0f}/s), peak RSS {peak:,.0f} MiB"
        )
        print(load_average())
        ratios = f"ratio_min={ours_rate / min_rate:.2f} ratio_write={ours_rate / write_rate:.2f}"
        print(f"{ratios} peak_rss_mib={peak:.0f} ratio_metrics={ours_rate / quiet_rate:.2f}")


if __name__ == "__main__":
    main()
