"""Benchmark `publish` (parse, validate, encode, produce, receipt) against two baselines, same run.

(a) hand-written: a plain confluent-kafka Producer with the standard AvroSerializer on already-built
    records (no parsing, no validation) — what a partner would otherwise write;
(b) raw: producing the same number of pre-encoded messages of the same size — the I/O ceiling.
All three use acks=all and idempotence, wait for every delivery report, and write to fresh topics.
Each is run ``--runs`` times interleaved; the best run counts. The last line is machine-readable.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from bench.common import endpoints, fresh_topics, load_average
from ketenstroom.adapters.kafka import ensure_topics
from ketenstroom.contract import load_schemas
from ketenstroom.settings import CatalogueSettings, KafkaSettings, RegistrySettings
from producers.config import load_mapping
from producers.publish import Publisher
from producers.reader import read_rows
from producers.rows import nest, validate
from synthetic import OM_COLUMNS, om_decision_rows, write_csv

PRODUCER_CONF = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 20,
    "compression.type": "lz4",
    "batch.num.messages": 10_000,
}


def prepared_records(export: Path) -> list[tuple[bytes, dict[str, object]]]:
    """The export's rows as finished Avro records, built outside the timed section (baseline input)."""
    mapping = load_mapping("om", load_schemas(CatalogueSettings().schema_dir))
    out = []
    for line, row in read_rows(export):
        if not isinstance(row, dict):
            continue
        record = mapping.for_row(row, line)
        flat = validate(record.model, record.values(row), line=line, columns=mapping.columns_of(record))
        flat.update(
            {
                "metadata.event_id": "00000000-0000-5000-8000-000000000000",
                "metadata.partner": "OM",
                "metadata.delivery_time": flat["metadata.registration_time"],
            }
        )
        out.append((str(flat[record.key]).encode(), nest(flat, record.codes)))
    return out


def run_ours(kafka: KafkaSettings, registry: RegistrySettings, export: Path) -> tuple[float, int]:
    topics = fresh_topics("ours")
    ensure_topics(kafka, [topics.raw("om")], partitions=3, replication_factor=1)
    start = time.perf_counter()
    with Publisher("om", kafka=kafka, registry=registry, topics=topics) as publisher:
        receipt = publisher.publish([export])
    elapsed = time.perf_counter() - start
    assert receipt.reconciles and receipt.not_delivered == 0
    return elapsed, receipt.published


def run_standard(
    kafka: KafkaSettings,
    registry: RegistrySettings,
    records: list[tuple[bytes, dict[str, object]]],
    schema_text: str,
) -> float:
    topics = fresh_topics("std")
    topic = topics.raw("om")
    ensure_topics(kafka, [topic], partitions=3, replication_factor=1)
    client = SchemaRegistryClient(registry.client_conf())
    serializer = AvroSerializer(
        client, schema_text, conf={"subject.name.strategy": lambda ctx, name: f"{ctx.topic}-{name}"}
    )
    producer = Producer({**kafka.librdkafka(), **PRODUCER_CONF})
    ctx = SerializationContext(topic, MessageField.VALUE)
    failures = []
    start = time.perf_counter()
    for key, record in records:
        value = serializer(record, ctx)
        while True:
            try:
                producer.produce(
                    topic,
                    key=key,
                    value=value,
                    on_delivery=lambda err, _m: err is not None and failures.append(err),
                )
                break
            except BufferError:
                producer.poll(0.5)
        producer.poll(0)
    producer.flush(120)
    elapsed = time.perf_counter() - start
    client.close()
    assert not failures
    return elapsed


def run_raw(kafka: KafkaSettings, messages: list[tuple[bytes, bytes]]) -> float:
    topics = fresh_topics("raw")
    topic = topics.raw("om")
    ensure_topics(kafka, [topic], partitions=3, replication_factor=1)
    producer = Producer({**kafka.librdkafka(), **PRODUCER_CONF})
    start = time.perf_counter()
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.5)
        producer.poll(0)
    producer.flush(120)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    kafka, registry = endpoints()
    with tempfile.TemporaryDirectory() as tmp:
        export = Path(tmp) / "om.csv"
        write_csv(export, om_decision_rows(args.rows, seed=3), OM_COLUMNS)
        records = prepared_records(export)
        schema = load_schemas(CatalogueSettings().schema_dir)["nl.ketenstroom.om.CaseDecision"]
        from ketenstroom.contract.codec import encode

        messages = [(key, b"\0" * 5 + encode(schema.parsed, rec)) for key, rec in records]
        size = sum(len(v) for _, v in messages) / len(messages)
        print(f"{len(records)} OM decision records, {size:.0f} bytes each on average; {load_average()}")
        ours, std, raw = [], [], []
        for run in range(args.runs):
            t, published = run_ours(kafka, registry, export)
            ours.append(t)
            std.append(run_standard(kafka, registry, records, schema.text))
            raw.append(run_raw(kafka, messages))
            print(
                f"run {run + 1}: publish {published / t:,.0f}/s  "
                f"hand-written {len(records) / std[-1]:,.0f}/s  "
                f"raw {len(messages) / raw[-1]:,.0f}/s"
            )
        n = len(records)
        ours_rate, std_rate, raw_rate = n / min(ours), n / min(std), n / min(raw)
        print(f"publish (parse+validate+encode+produce+receipt): {ours_rate:,.0f} events/s")
        print(f"hand-written AvroSerializer producer:            {std_rate:,.0f} events/s")
        print(f"raw pre-encoded production (I/O ceiling):        {raw_rate:,.0f} events/s")
        print(load_average())
        print(f"ratio_std={ours_rate / std_rate:.2f} ratio_raw={ours_rate / raw_rate:.2f}")


if __name__ == "__main__":
    main()
