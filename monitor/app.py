"""The delivery monitor as a faust-streaming app: three sources, changelog-backed tables, one refresh timer.

Sources: ``ops.deliveries`` (JSON receipts), ``curated.chain-events`` (Avro through the registry; only
partner, record type and event time are used, and nothing of a record reaches the log) and every
catalogue partner's ``dlq.<partner>``. Tables (faust's in-memory store, each backed by a compacted
changelog topic ``<prefix><app_id>-<table>-changelog`` and recovered from it at start):

* ``period-events``: ``partner|period|event_type|partition`` -> events, the period taken from the event's own
  ``event_time`` (CBS month of its Amsterdam date), so a late delivery counts in the month it happened;
* ``deliveries``: ``partner|day`` -> deliveries, accepted and rejected rows (the receipt's ``finished``
  time, Amsterdam day), and ``@last|partner`` -> the latest receipt by finish time;
* ``dlq-<partner>``: ``<UTC hour>|partition`` -> dead letters (the record's timestamp: when it was
  dead-lettered), and ``oldest|partition``.

Keys carry the source partition (the views sum over them): faust writes a table update to the
changelog partition of the record that caused it, so a key updated from two source partitions would
have two latest values in two changelog partitions, and recovery would keep whichever came last.

Every table changelog has as many partitions as the topic that feeds it: faust writes a table update
to the partition of the event that caused it, and recovers a table partition with its source
partition. A refresh timer copies the tables into the views (:mod:`monitor.views`), which the HTTP
thread serves; so the metrics and views are at most ``refresh_s`` old.

Each record is counted once, although faust delivers at least once: every count's value also holds
``next``, the offset after the last record it includes, in the same changelog record. After a crash
the consumer resumes from its last committed offset, which can be behind what the recovered tables
already hold; a record below its key's ``next`` is skipped instead of counted again. (Each record
updates one count key, and keys carry the source partition, so per-key offsets are exact.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import faust

from ketenstroom.contract import Topics
from ketenstroom.contract.codec import decode, without_logical_types
from ketenstroom.contract.deliveries import DeliveryEvent
from ketenstroom.contract.wire import unframe
from ketenstroom.errors import KetenstroomError
from ketenstroom.settings import KafkaSettings, MonitorSettings
from monitor.figures import SpikeRule, day_of, hour_of, period_of
from monitor.views import SEP, MonitorCollector, TableContents, build_views, key

log = logging.getLogger("ketenstroom.monitor")

#: the table fed by ops.deliveries (one partition), and by curated
DELIVERY_TABLE = "deliveries"
PERIOD_TABLE = "period-events"
#: keys of a table that are not counts: the latest receipt per partner (``@last|<partner>``)
META = "@"


def app_id(settings: MonitorSettings, topics: Topics) -> str:
    """The faust app id: consumer group and changelog prefix, inside the topic namespace."""
    return f"{topics.prefix}{settings.app_id}"


def dlq_table(partner: str) -> str:
    return f"dlq-{partner}"


def changelog_topics(
    settings: MonitorSettings, topics: Topics, *, curated_partitions: int, dlq_partitions: Mapping[str, int]
) -> dict[str, int]:
    """Every changelog topic the monitor uses, with its partitions (for ``ketenstroom topics``)."""
    prefix = app_id(settings, topics)
    found = {f"{prefix}-{DELIVERY_TABLE}-changelog": 1}
    found[f"{prefix}-{PERIOD_TABLE}-changelog"] = curated_partitions
    for partner, n in dlq_partitions.items():
        found[f"{prefix}-{dlq_table(partner)}-changelog"] = n
    return found


def _credentials(kafka: KafkaSettings) -> Any:
    conf = kafka.librdkafka()
    protocol = conf["security.protocol"]
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=conf.get("ssl.ca.location"))
    if protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=conf.get("sasl.username"),
            password=conf.get("sasl.password"),
            mechanism=conf.get("sasl.mechanism", "PLAIN"),
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


@dataclass
class Sources:
    """What the monitor reads, decided before the app is built (partition counts from the broker)."""

    #: partner -> declared delivery interval in days (None: no schedule agreed)
    schedules: Mapping[str, float | None]
    curated_partitions: int
    dlq_partitions: Mapping[str, int]
    grace_days: float


def _drain_fully(buffer: Any, deadline_s: float = 120.0) -> None:
    """Make the producer buffer's ``flush`` return only once every buffered changelog update has been
    handed to the Kafka client, in order.

    faust-streaming 0.15's ``ProducerBuffer.flush_atmost`` returns as soon as no message went out for
    0.1 s, and its sending task ends once the worker stops; faust commits source offsets right after
    ``producer.flush()`` (which then waits for the client's acknowledgements). On a loaded machine that
    committed offsets whose table updates were still in the buffer, and a crash or even a clean stop
    lost them (seen: counts one short after a restart). This flush waits for the sending task to empty
    the buffer and finish the message it holds; once that task has stopped, it sends the rest itself.
    """
    send = buffer._send_pending
    in_flight = 0
    idle = asyncio.Event()
    idle.set()

    async def tracked(message: Any) -> None:
        nonlocal in_flight
        in_flight += 1
        idle.clear()
        try:
            await send(message)
        finally:
            in_flight -= 1
            if in_flight == 0:
                idle.set()

    async def flush() -> None:
        started = time.monotonic()
        while True:
            if time.monotonic() - started > deadline_s:
                raise RuntimeError(f"{buffer.size} changelog updates not sent within {deadline_s:.0f} s")
            await idle.wait()  # the message the sending task holds goes out first
            if not buffer.size:
                await asyncio.sleep(0)
                if not buffer.size and idle.is_set():
                    return
                continue
            if buffer.should_stop:  # the sending task is gone: send the rest here, in order
                await tracked(buffer.pending.get_nowait())
                continue
            buffer.message_sent.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(buffer.message_sent.wait(), timeout=0.5)

    buffer._send_pending = tracked  # before the sending task starts: it looks the method up then
    buffer.flush = flush


class Monitor:
    """The faust app, its tables, and the views computed from them."""

    def __init__(
        self,
        *,
        kafka: KafkaSettings,
        topics: Topics,
        settings: MonitorSettings,
        sources: Sources,
        writer_schema: Callable[[int], Any],
        changelog_config: Mapping[str, str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings, self.sources, self.clock = settings, sources, clock
        self._writer_schema = writer_schema
        self._readers: dict[int, Any] = {}
        self.collector = MonitorCollector()
        self.views: dict[str, Any] | None = None
        self.recovered = False
        self.undecodable = 0
        self.app = app = faust.App(
            app_id(settings, topics),
            broker=[f"kafka://{server}" for server in kafka.bootstrap_servers.split(",")],
            broker_credentials=_credentials(kafka),
            store="memory://",
            web_enabled=False,
            topic_disable_leader=True,  # one worker; no leader election topic to declare
            topic_allow_declare=True,  # changelogs only: source topics are not internal, never created
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            # one worker: after a crash its successor waits for the dead member's session to expire
            # before the group rebalances (faust's default: 60 s)
            broker_session_timeout=10.0,
            broker_heartbeat_interval=3.0,
            key_serializer="raw",
            value_serializer="raw",
        )
        _drain_fully(app.producer.buffer)
        state = dict(changelog_config)

        def table(name: str, partitions: int, default: Callable[[], Any] | None) -> Any:
            return app.Table(
                name,
                default=default,
                partitions=partitions,
                extra_topic_configs=state,
            )

        self.period_events = table(PERIOD_TABLE, sources.curated_partitions, None)
        self.deliveries = table(DELIVERY_TABLE, 1, None)
        self.dlq = {p: table(dlq_table(p), n, None) for p, n in sources.dlq_partitions.items()}

        deliveries_topic = app.topic(topics.deliveries, key_type=bytes, value_type=bytes)
        curated_topic = app.topic(topics.curated, key_type=bytes, value_type=bytes)

        @app.agent(deliveries_topic, name="deliveries")
        async def on_deliveries(stream: Any) -> None:
            async for event in stream.events():
                self.count_delivery(event.value, event.message.offset)

        @app.agent(curated_topic, name="curated")
        async def on_curated(stream: Any) -> None:
            async for event in stream.events():
                self.count_curated(event.value, event.message.partition, event.message.offset)

        for partner in sources.dlq_partitions:
            dlq_topic = app.topic(topics.dlq(partner), key_type=bytes, value_type=bytes)

            def make(partner: str) -> Callable[[Any], Any]:
                async def on_dlq(stream: Any) -> None:
                    async for event in stream.events():
                        message = event.message
                        self.count_dead_letter(partner, message.timestamp, message.partition, message.offset)

                return on_dlq

            app.agent(dlq_topic, name=f"dlq-{partner}")(make(partner))

        async def refresh() -> None:
            self.refresh()

        app.timer(settings.refresh_s)(refresh)

    # -- table updates (called by the agents, in the event loop) --

    @staticmethod
    def add(table: Any, k: str, offset: int, counts: Mapping[str, int]) -> None:
        """Add ``counts`` to key ``k`` for the record at ``offset``, once: the value keeps ``next``, the
        offset after the last record it holds, in the same changelog record as the counts. A record
        delivered again after a crash (processed, not yet committed) is below it and is skipped."""
        found = table.get(k)
        if found is not None and offset < int(found["next"]):
            return
        added = {name: int((found or {}).get(name, 0)) + n for name, n in counts.items()}
        table[k] = {**added, "next": offset + 1}

    def count_delivery(self, value: bytes, offset: int) -> None:
        try:
            event = DeliveryEvent.decode(value)
        except ValueError:
            self.undecodable += 1
            log.warning("ops.deliveries: a record is not a delivery receipt; skipped")
            return
        finished = event.finished.timestamp()
        counts = {"deliveries": 1, "accepted": event.published, "rejected": sum(event.rejected.values())}
        self.add(self.deliveries, key(event.partner, day_of(finished)), offset, counts)
        last = self.deliveries.get(f"{META}last|{event.partner}")
        if last is None or finished >= float(last["finished"]):
            self.deliveries[f"{META}last|{event.partner}"] = {
                "finished": finished,
                "delivery_id": event.delivery_id,
                "outcome": event.outcome,
            }

    def count_curated(self, value: bytes, partition: int, offset: int) -> None:
        try:
            schema_id, payload = unframe(value)
            reader = self._readers.get(schema_id)
            if reader is None:
                reader = self._readers[schema_id] = without_logical_types(self._writer_schema(schema_id))
            record = decode(reader, payload)
            partner, event_type = record["source_partner"], record["source_event_type"]
            period = period_of(record["event_time"] / 1000)
        except (KetenstroomError, KeyError, TypeError) as exc:
            self.undecodable += 1
            log.warning("curated: a record could not be read (%s); skipped", type(exc).__name__)
            return
        self.add(self.period_events, key(partner, period, event_type, partition), offset, {"n": 1})

    def count_dead_letter(self, partner: str, timestamp_s: float, partition: int, offset: int) -> None:
        table = self.dlq[partner]
        self.add(table, key(hour_of(timestamp_s), partition), offset, {"n": 1})
        oldest = table.get(key("oldest", partition))
        if oldest is None or timestamp_s < float(oldest):
            table[key("oldest", partition)] = timestamp_s

    # -- views --

    def contents(self) -> TableContents:
        """The tables summed over source partitions (each key holds one partition's count)."""
        contents = TableContents()
        for k, v in self.period_events.items():
            if not k.startswith(META):
                bucket = k.rsplit(SEP, 1)[0]
                contents.period_events[bucket] = contents.period_events.get(bucket, 0) + int(v["n"])
        last = f"{META}last{SEP}"
        for k, v in self.deliveries.items():
            if k.startswith(last):
                contents.last_delivery[k.removeprefix(last)] = dict(v)
            elif not k.startswith(META):
                contents.deliveries[k] = {name: int(n) for name, n in v.items() if name != "next"}
        for partner, table in self.dlq.items():
            found: dict[str, float] = {}
            for k, v in table.items():
                if k.startswith(META):
                    continue
                bucket = k.rsplit(SEP, 1)[0]
                if bucket == "oldest":
                    found[bucket] = min(float(v), found.get(bucket, float(v)))
                else:
                    found[bucket] = found.get(bucket, 0.0) + float(v["n"])
            contents.dlq[partner] = found
        return contents

    def _recovered(self) -> bool:
        """faust's recovery is complete with partitions assigned (it also reports complete for the
        empty assignment before the group is joined) and no rebalance is under way."""
        app = cast(Any, self.app)
        return bool(
            app.tables.recovery.completed.is_set() and not app.rebalancing and app.consumer.assignment()
        )

    def refresh(self) -> None:
        if not self.recovered and self._recovered():
            self.recovered = True
            log.info("tables recovered from their changelogs; serving views")
        if not self.recovered:
            return
        s = self.settings
        views = build_views(
            self.contents(),
            schedules=self.sources.schedules,
            now=self.clock(),
            grace_days=self.sources.grace_days,
            rule=SpikeRule(s.dlq_trailing_hours, s.dlq_spike_factor, s.dlq_spike_min_records),
            keep_periods=s.recent_periods,
        )
        self.views = views
        self.collector.views = views

    def health(self) -> tuple[bool, dict[str, Any]]:
        return self.views is not None, {"app_id": self.app.conf.id, "recovered": self.recovered}

    def view(self, name: str) -> Callable[[], Any]:
        def serve() -> Any:
            views = self.views
            return {"status": "recovering"} if views is None else views[name]

        return serve
