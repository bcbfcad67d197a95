"""The processor's transform as a Quix Streams app: the baseline of ``bench.process_bench``.

Runs in its own virtualenv (``.venv-quix``: quixstreams pins confluent-kafka and pydantic below what
ketenstroom needs, so ketenstroom is installed there without its dependencies). What a Python user
would write: one StreamingDataFrame per raw topic, bytes in, the same ``Transformer.transform`` per
record (decode, pseudonymise, map terminology, encode), curated events to the curated topic keyed by
pseudonym, dead letters with their reason headers to ``dlq.<partner>``. Quix's own settings apart from
``--guarantee`` (default exactly-once, as ours; commit interval 5 s). It stops with ``app.run(count=N)``
after N inputs, N being what the benchmark published; the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

from quixstreams import Application
from quixstreams.context import message_context
from quixstreams.models.serializers import SerializationContext, Serializer

from ketenstroom.adapters.registry import Registry
from ketenstroom.catalogue import catalogue_at
from ketenstroom.contract import Topics
from ketenstroom.settings import CatalogueSettings, PseudonymSettings, RegistrySettings
from processors.build import build_transformer
from processors.transform import Curated, DeadLetter, RawRecord

PARTNERS = catalogue_at(CatalogueSettings().dir).names  # the partners the catalogue declares


class OutcomeSerializer(Serializer):
    """Curated event -> its encoded value; dead letter -> the original bytes, unchanged."""

    def __call__(self, value: Curated | DeadLetter, ctx: SerializationContext) -> bytes | None:
        return value.value if isinstance(value, Curated) else value.source.value


class KeySerializer(Serializer):
    def __call__(self, value: bytes | None, ctx: SerializationContext) -> bytes | None:
        return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--input-prefix", required=True, help="topic prefix of the raw topics")
    parser.add_argument("--output-prefix", required=True, help="topic prefix of curated and DLQ topics")
    parser.add_argument("--count", type=int, required=True, help="records to process, then stop")
    parser.add_argument("--group", required=True)
    parser.add_argument("--guarantee", choices=["exactly-once", "at-least-once"], default="exactly-once")
    args = parser.parse_args()

    source, out = Topics(args.input_prefix), Topics(args.output_prefix)
    registry = Registry(RegistrySettings(url=args.registry))
    transformer = build_transformer(
        registry=registry, paths=CatalogueSettings(), pseudonym=PseudonymSettings(), topics=out
    )
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        processing_guarantee=args.guarantee,
        loglevel=logging.WARNING,
    )
    counts = {"curated": 0, "dead": 0}

    def transform(value: bytes, key: bytes | None, timestamp: int, headers: Any) -> Curated | DeadLetter:
        ctx = message_context()
        record = RawRecord(
            ctx.topic,
            ctx.partition,
            ctx.offset,
            key,
            value,
            tuple((k, v or b"") for k, v in (headers or ())),
            timestamp,
        )
        outcome = transformer.transform(record)
        counts["curated" if isinstance(outcome, Curated) else "dead"] += 1
        return outcome

    def set_headers(value: Curated | DeadLetter, _key: Any, _ts: int, headers: Any) -> Any:
        return value.headers() if isinstance(value, DeadLetter) else []

    serializers = {"key_serializer": KeySerializer(), "value_serializer": OutcomeSerializer()}
    curated_topic = app.topic(out.curated, **serializers)
    dlq = {source.raw(p): app.topic(out.dlq(p), **serializers) for p in PARTNERS}

    def new_key(outcome: Curated | DeadLetter) -> bytes | None:
        return outcome.key if isinstance(outcome, Curated) else outcome.source.key

    def route(value: Curated | DeadLetter, _key: Any, _ts: int, _headers: Any) -> Any:
        return curated_topic if isinstance(value, Curated) else dlq[value.source.topic]

    for partner in PARTNERS:
        raw = app.topic(source.raw(partner), key_deserializer="bytes", value_deserializer="bytes")
        sdf = app.dataframe(raw)
        sdf = sdf.apply(transform, metadata=True).set_headers(set_headers)
        sdf.to_topic(route, key=new_key)

    start = time.perf_counter()
    app.run(count=args.count, collect=False)
    elapsed = time.perf_counter() - start
    # no registry.close(): confluent-kafka 2.12 (quixstreams' pin) has no SchemaRegistryClient.close
    print(json.dumps({"seconds": elapsed, "guarantee": args.guarantee, **counts}))


if __name__ == "__main__":
    main()
