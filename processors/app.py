"""The faust-streaming runner: consume ``raw.<partner>`` in batches, transform, send curated or DLQ.

Kept thin on purpose: batching (``take_events``), raw-bytes codecs and non-blocking sends; all logic
is in ``processors.transform``. With ``stop_at`` the worker stops by itself once every partition has
been processed up to the given offsets (used by the demo and the tests to run "until caught up").
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any

import faust

from ketenstroom.contract import Topics
from ketenstroom.settings import CatalogueSettings, KafkaSettings, PseudonymSettings, RegistrySettings
from processors.build import build_transformer
from processors.progress import Reconciliation
from processors.transform import RawRecord, Transformer

log = logging.getLogger("ketenstroom.processor")


def build_app(
    *,
    partners: list[str],
    kafka: KafkaSettings,
    transformer: Transformer,
    topics: Topics,
    app_id: str = "ketenstroom-processor",
    batch_size: int = 1000,
    stop_at: dict[tuple[str, int], int] | None = None,
    progress: Reconciliation | None = None,
) -> faust.App:
    app = faust.App(
        app_id,
        broker=[f"kafka://{server}" for server in kafka.bootstrap_servers.split(",")],
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        store="memory://",
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=batch_size,
    )
    progress = progress or Reconciliation()
    raw_topics = app.topic(*[topics.raw(p) for p in partners], key_type=bytes, value_type=bytes)
    curated_topic = app.topic(topics.curated, key_type=bytes, value_type=bytes)
    dlq = {p: app.topic(topics.dlq(p), key_type=bytes, value_type=bytes) for p in partners}

    @app.agent(raw_topics)
    async def process(stream: Any) -> None:
        async for events in stream.take_events(batch_size, within=0.5):
            batch = [
                RawRecord(
                    e.message.topic,
                    e.message.partition,
                    e.message.offset,
                    e.key,
                    e.value,
                    tuple((k, bytes(v)) for k, v in (e.message.headers or ())),
                )
                for e in events
            ]
            curated, dead = transformer.transform_batch(batch)
            for item in curated:
                await curated_topic.send(key=item.key, value=item.value)
            for letter in dead:
                partner = topics.partner_of(letter.source.topic)
                await dlq[partner].send(
                    key=letter.source.key, value=letter.source.value, headers=letter.headers()
                )
            progress.add(topics.partner_of, batch, curated, dead)
            if stop_at is not None and progress.done(stop_at):
                await app.producer.flush()
                log.info("caught up with %d partitions; stopping", len(stop_at))
                asyncio.get_running_loop().call_soon(os.kill, os.getpid(), signal.SIGTERM)

    return app


def run_worker(
    *,
    partners: list[str],
    kafka: KafkaSettings,
    registry_settings: RegistrySettings,
    paths: CatalogueSettings,
    pseudonym: PseudonymSettings,
    topics: Topics,
    stop_at: dict[tuple[str, int], int] | None = None,
    app_id: str = "ketenstroom-processor",
    loglevel: str = "warning",
) -> Reconciliation:
    """Run a faust worker in this process until stopped (SIGTERM/SIGINT, or caught up with ``stop_at``)."""
    from ketenstroom.adapters.registry import Registry

    if stop_at is not None and not any(stop_at.values()):
        return Reconciliation()  # nothing new since the group's last commit
    registry = Registry(registry_settings)
    transformer = build_transformer(registry=registry, paths=paths, pseudonym=pseudonym, topics=topics)
    progress = Reconciliation()
    app = build_app(
        partners=partners,
        kafka=kafka,
        transformer=transformer,
        topics=topics,
        app_id=app_id,
        stop_at=stop_at,
        progress=progress,
    )
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    finally:
        registry.close()
    return progress
