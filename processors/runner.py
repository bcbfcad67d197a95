"""Exactly-once runner: consume raw topics, transform in batches, produce in Kafka transactions.

One transaction per batch holds, atomically:

1. every outcome record (``curated.chain-events`` or ``dlq.<partner>``), and for a dead letter, or a
   replayed one's outcome, its event's state in ``dlq.<partner>.status`` (``processors.dlq``),
2. the batch's new event ids in the dedup changelog (one compacted topic per raw topic, same partition;
   keyed by ingest-time bucket, expired buckets tombstoned: ``processors.dedup``), and
3. the consumer offsets just past the batch (``send_offsets_to_transaction``).

So after a crash at any moment either all three happened or none did; a restarted worker rebuilds
its dedup state for the partitions it is given from the live buckets of the changelog (read_committed)
and carries on.
A ``read_committed`` reader of the outputs sees every input exactly once. The transactional id is
``<app id>-<instance id>``: restarting an instance fences its predecessor and aborts what it left open;
the same instance id makes it a static group member (``ConsumeLoop``), so it gets its partitions back
at once. Consuming (batches, partition EOF, assignment, stop) is the adapter's ``ConsumeLoop``.

A transient failure inside a batch (the registry is down when a new schema id must be fetched:
``ketenstroom.errors.is_transient``) aborts the batch's transaction, rewinds to its first offsets and
waits (``ketenstroom.adapters.retry.Backoff``, logged) before the same records are tried again: they
are never dead-lettered for it. Only permanent errors (``RecordError``) make dead letters.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, cast

import numpy as np
from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from ketenstroom.adapters.kafka import (
    ConsumeLoop,
    ensure_topics,
    headers_of,
    warm_admin,
)
from ketenstroom.adapters.retry import Backoff
from ketenstroom.contract import Topics
from ketenstroom.crashpoints import crash_point
from ketenstroom.errors import BrokerUnavailable, DeliveryError, StopRequested, is_transient
from ketenstroom.settings import KafkaSettings, ProcessorSettings, TopicSettings
from processors.dedup import (
    Horizon,
    PartitionDedup,
    await_ends,
    changelog_topic,
    produce_changelog,
    restore,
)
from processors.dlq import LetterStatus, letter_key, replay_key
from processors.metrics import ProcessorMetrics, observe_many
from processors.progress import Reconciliation
from processors.transform import Curated, DeadLetter, RawRecord, Transformer

log = logging.getLogger("ketenstroom.processor")


RESTORE_DEADLINE_S = 120  # longer than transaction_timeout_ms, after which the broker aborts a zombie's txn
LAG_EVERY_S = 5.0


def _bytes(value: str | bytes | None) -> bytes:
    return value.encode() if isinstance(value, str) else value or b""


_REFUSED = frozenset(
    {KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED}
)


def _init_failed(exc: KafkaException, principal: str, app_id: str) -> DeliveryError:
    """``init_transactions`` failed: refused rights are said as such; anything else (no transaction
    coordinator within the bound, a cluster still electing) is not blamed on the ACLs."""
    err = exc.args[0] if exc.args else None
    text = err.str() if isinstance(err, KafkaError) else str(exc)
    if isinstance(err, KafkaError) and err.code() in _REFUSED:
        return DeliveryError(
            f"{principal} may not use transactional id {app_id}-* ({text}); grant it with "
            "`ketenstroom access apply`"
        )
    return DeliveryError(
        f"could not start the transactional producer {app_id}-* ({text}): the transaction coordinator "
        "did not answer in time; a restart tries again"
    )


def _freeze_startup_objects() -> None:
    """Collect once, then keep the objects alive now (modules, schemas, catalogue, terminology, caches)
    out of the cyclic garbage collector's reach until ``run`` ends (``gc.unfreeze``): every batch
    allocates tens of thousands of containers, and each full collection walked all of those objects
    too; 9 % of the loop's CPU before, 3 % after (``bench/notes/processor-profile.md``). Objects freed
    by reference counting are freed as ever; only cycles among frozen objects wait for the unfreeze."""
    gc.collect()
    gc.freeze()


class Run(NamedTuple):
    """Consecutive records of one partition in a batch: ``records[start:end]``."""

    topic: str
    partition: int
    start: int
    end: int


class TransactionalProcessor:
    _admin: AdminClient | None = None  # warmed at start-up (``_ensure_state_topics``), for restores

    def __init__(
        self,
        *,
        kafka: KafkaSettings,
        topics: Topics,
        partners: list[str],
        transformer: Transformer,
        settings: ProcessorSettings | None = None,
        metrics: ProcessorMetrics | None = None,
    ) -> None:
        settings = settings or ProcessorSettings()
        self.kafka, self.topics, self.partners, self.settings = kafka, topics, partners, settings
        self.transformer, self.app_id = transformer, settings.app_id
        self.metrics = metrics or ProcessorMetrics()
        declared = TopicSettings()
        self.retention = declared.retention()  # state topics: compacted, as `topics` declares
        self.replication_factor = declared.replication_factor or -1  # -1: the broker's default
        self.raw_topics = [topics.raw(p) for p in partners]
        self.loop = ConsumeLoop(
            kafka,
            group_id=settings.app_id,
            topics=self.raw_topics,
            instance_id=settings.instance_id,
            batch_size=settings.batch_size,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
        )
        self.producer = Producer(
            kafka.librdkafka(
                transactional_id=f"{settings.app_id}-{settings.instance_id}",
                enable_idempotence=True,
                acks="all",
                linger_ms=5,
                transaction_timeout_ms=settings.transaction_timeout_ms,
                compression_type="lz4",
            )
        )
        self.horizon = Horizon.of(settings)
        self._should_stop: Callable[[], bool] = lambda: False  # run's, for the restore's reads
        self._ready = False  # state topics and init_transactions done: assignments are restored
        #: the longest a transactional call may block: past the transaction timeout the coordinator has
        #: aborted the transaction anyway. Without a bound ``commit_transaction``/``abort_transaction``
        #: wait forever for a coordinator that does not answer, and a stop request is never looked at.
        self.txn_call_s = settings.transaction_timeout_ms / 1000
        self._dedup: dict[tuple[str, int], PartitionDedup] = {}
        self._partners_by_topic: dict[str, str] = {}
        self.stats = Reconciliation()
        self.healthy = False
        self._lag_at = 0.0
        self.backoff = Backoff(
            max_s=settings.retry_backoff_max_s, log=log, on_retry=lambda _exc: self.metrics.retries.inc()
        )
        #: Kafka timestamp (ms) of the newest record processed per partition, for lag in seconds
        self._last_ts: dict[tuple[str, int], int] = {}

    # -- set-up -------------------------------------------------------------------------------------
    def _ensure_state_topics(self) -> None:
        """Dedup changelogs (one per raw topic, same partitions) and dead-letter status topics.

        Changelogs this call created are then waited for until their leaders answer offset requests
        (``dedup.await_ends``): run beside ``init_transactions`` and the group join (``run``), so the
        restore at assignment finds their ends at once instead of asking again for a few hundred ms."""
        # one admin client for the state topics and every restore's look-ups, answered once here
        self._admin, metadata = warm_admin(self.kafka)
        by_partitions: dict[int, list[str]] = {}  # one admin round per partition count, not per partner
        for partner, raw in zip(self.partners, self.raw_topics, strict=True):
            meta = metadata.topics.get(raw)
            if meta is None or meta.error is not None:
                raise DeliveryError(f"input topic {raw} does not exist; create it with `ketenstroom topics`")
            by_partitions.setdefault(len(meta.partitions), []).extend(
                [changelog_topic(self.app_id, raw), self.topics.dlq_status(partner)]
            )
        fresh: list[tuple[str, int]] = []
        changelogs = {changelog_topic(self.app_id, raw) for raw in self.raw_topics}
        for partitions, names in by_partitions.items():
            created = ensure_topics(
                self.kafka,
                names,
                partitions=partitions,
                replication_factor=self.replication_factor,
                config=self.retention.state(),
                admin=self._admin,
            )
            fresh += [(name, p) for name in created if name in changelogs for p in range(partitions)]
        if fresh:
            await_ends(self.kafka, fresh, admin=self._admin)

    def _start(self) -> None:
        """State topics, the transactional producer and the group join, side by side: the state topics in
        a thread of their own, the join in librdkafka's threads (``ConsumeLoop.start``) while
        ``init_transactions`` waits here. Nothing is read before all three are done: the assignment
        callback (the dedup restore) runs only once ``batches`` consumes, after ``init_transactions``
        has fenced any predecessor and finished or aborted its open transaction, so the restore reads
        its changelog records as committed and the group's offsets are stable."""
        with ThreadPoolExecutor(1, thread_name_prefix="state-topics") as pool:
            state_topics = pool.submit(self._ensure_state_topics)
            self.loop.start()
            try:
                # a metadata round first: called while the client is still swapping its bootstrap
                # connection for the broker's own, init_transactions finds "no brokers available" and
                # librdkafka retries it 500 ms later (4 of 24 fresh producers; 0 of 24 after this)
                self.producer.list_topics(timeout=10)
                self.producer.init_transactions(30)
            except KafkaException as exc:
                raise _init_failed(exc, self.kafka.principal, self.app_id) from exc
            state_topics.result()
        self._ready = True

    def _restore(self, partitions: list[TopicPartition]) -> None:
        """Rebuild the dedup state of each newly assigned partition from its changelog's live buckets."""
        restored, report = restore(
            self.kafka,
            self.app_id,
            self.horizon,
            partitions,
            deadline_s=RESTORE_DEADLINE_S,
            should_stop=self._should_stop,
            admin=self._admin,
        )
        self._dedup.update(restored)
        self.metrics.dedup_restore_seconds.set(report.seconds)
        self._update_dedup_ids()

    def _on_assign(self, partitions: list[TopicPartition]) -> None:
        if self._ready:  # else start-up failed and ``close`` serves the callback: nothing to restore for
            self._restore(partitions)

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._dedup.pop((tp.topic, tp.partition), None)

    # -- the loop -----------------------------------------------------------------------------------
    def run(
        self,
        *,
        should_stop: Callable[[], bool] = lambda: False,
        stop_at: dict[tuple[str, int], int] | None = None,
        until_end: bool = False,
    ) -> Reconciliation:
        """Process until ``should_stop``, until every partition reached ``stop_at``, or ``until_end``:
        until every assigned partition has reported end-of-partition (committed records only, so
        transaction markers on the input cannot keep it waiting)."""

        def stop() -> bool:
            return (
                should_stop()
                or (stop_at is not None and self.stats.done(stop_at, reached=self.loop.at_end))
                or (until_end and self.loop.caught_up())
            )

        self._should_stop = should_stop
        # a run with an end hands its last batch over at the partitions' EOFs instead of waiting out the
        # poll timeout with it (0.5 s, a sixth of the benchmark's turn); a live run batches as before
        self.loop.return_at_eof = until_end or stop_at is not None
        try:
            self._start()
            self.healthy = True
            _freeze_startup_objects()
            for batch in self.loop.batches(stop=stop):
                if batch and not self._try(batch, should_stop):
                    break  # told to stop while waiting out an outage: nothing of the batch committed
                if time.monotonic() - self._lag_at > LAG_EVERY_S:
                    self._update_lag()
        except StopRequested as stopped:  # in a restore: nothing of the batch it was for was committed
            log.info("%s: stopping", stopped)
        except KafkaException as exc:
            raise DeliveryError(f"processor failed: {exc}") from exc
        finally:
            gc.unfreeze()
            self.healthy = False
            self.loop.close()
            # after a fatal producer error (fenced by a newer epoch once the transaction coordinator
            # moved) flush raises that error again: it must not replace the one-line error above
            with contextlib.suppress(KafkaException):
                self.producer.flush(10)
        return self.stats

    def _try(self, batch: list[Message], should_stop: Callable[[], bool]) -> bool:
        """``_transact``; after a transient failure (already aborted and rewound) wait the backoff and
        let the loop hand the same records again. False only when told to stop during the wait."""
        try:
            self.transformer.begin_batch()  # pseudonyms are remembered within a batch at most
            self._transact(batch)
        except Exception as exc:
            if not is_transient(exc):
                raise
            return self.backoff.wait(f"batch of {len(batch)} records", exc, should_stop)
        self.backoff.reset()
        return True

    @staticmethod
    def _records(batch: list[Message]) -> tuple[list[RawRecord], list[Run]]:
        """The batch as ``RawRecord``s, and its runs: consecutive records of one partition (a fetch
        hands each partition's records over in long runs), so per-partition work is done per run."""
        records: list[RawRecord] = []
        runs: list[Run] = []
        append = records.append
        # ``tuple.__new__`` makes the named tuple without its Python-level ``__new__`` frame, and no
        # ``typing.cast`` calls per record: 0.39 -> 0.24 us a record (``bench/notes/processor-profile.md``)
        new = tuple.__new__
        topic: str | None = None
        partition = start = -1
        for i, msg in enumerate(batch):
            # topic, partition and offset are never None for a record (only error events lack them)
            t, p = msg.topic(), msg.partition()
            if p != partition or t != topic:
                if topic is not None:
                    runs.append(Run(topic, partition, start, i))
                topic, partition, start = cast(str, t), cast(int, p), i
            headers = msg.headers()
            append(
                new(
                    RawRecord,
                    (
                        t,
                        p,
                        msg.offset(),
                        msg.key(),
                        msg.value(),
                        tuple((k, _bytes(v)) for k, v in headers_of(msg)) if headers else (),
                        msg.timestamp()[1],
                    ),
                )
            )
        if topic is not None:
            runs.append(Run(topic, partition, start, len(batch)))
        return records, runs

    def _transact(self, batch: list[Message]) -> bool:
        """Transform ``batch`` and commit its outcomes in one transaction; False if it was aborted.

        Per record only what must be: the transform and the dedup decision. The curated events are
        produced in one ``produce_batch`` call per batch (one C call instead of one per event, and no
        contention with librdkafka's threads per event); per-partition bookkeeping (dedup state,
        offsets, counts) is done once per run of one partition's records (``_records``).
        """
        records, runs = self._records(batch)
        sent: list[Curated] = []
        sent_runs: list[int] = []  # len(sent) at the end of each run
        dead: list[DeadLetter] = []
        duplicates: list[RawRecord] = []
        transform, dedup = self.transformer.transform, self._dedup
        self.producer.begin_transaction()
        try:
            for run in runs:
                state = dedup.get((run.topic, run.partition))
                if state is None:  # not restored (a record handed over across a rebalance): restore it
                    self._restore([TopicPartition(run.topic, run.partition)])
                    state = dedup[(run.topic, run.partition)]
                add = state.add
                for i in range(run.start, run.end):
                    record = records[i]
                    outcome = transform(record)
                    if isinstance(outcome, DeadLetter):
                        dead.append(outcome)
                        self._dead_letter(record, outcome)
                        continue
                    if not add(outcome.event_id, record.timestamp_ms):
                        duplicates.append(record)
                        if record.headers and (replayed := replay_key(record.headers)):
                            self._status(self._partner_of(record.topic), replayed, LetterStatus("duplicate"))
                        continue
                    sent.append(outcome)
                    if record.headers and (replayed := replay_key(record.headers)):
                        self._status(self._partner_of(record.topic), replayed, LetterStatus("curated"))
                sent_runs.append(len(sent))
            self._produce_curated(sent)
            for (topic, partition), state in dedup.items():
                produce_changelog(self.producer, changelog_topic(self.app_id, topic), partition, state)
            crash_point("processor.before-offsets")
            self.producer.send_offsets_to_transaction(
                self._next_offsets(records, runs),
                self.loop.consumer.consumer_group_metadata(),
                self.txn_call_s,
            )
            self.producer.commit_transaction(self.txn_call_s)
            self.metrics.transactions.labels("committed").inc()
            self.producer.poll(0)  # the changelog records' delivery reports (``PartitionDedup.delivered``)
            for state in dedup.values():
                state.commit()
        except KafkaException as exc:
            self._forget()
            return self._kafka_failed(records, exc)
        except BaseException as exc:
            self._abandon(records, rewind=isinstance(exc, Exception) and is_transient(exc))
            raise
        self._count(records, runs, sent, sent_runs, dead, duplicates)
        return True

    def _produce_curated(self, sent: list[Curated]) -> None:
        """The batch's curated events, in order, in one call. Any not queued (librdkafka's queue full)
        fails the batch as transient: aborted, rewound and tried again whole, never sent in part or out
        of order."""
        if not sent:
            return
        messages = [{"key": item.key, "value": item.value} for item in sent]
        queued = self.producer.produce_batch(self.topics.curated, messages)
        if queued != len(messages):
            error = next((str(m["_error"]) for m in messages if "_error" in m), "unknown")
            raise BrokerUnavailable(
                f"only {queued} of the batch's {len(messages)} curated events could be queued for "
                f"{self.topics.curated} ({error}); the batch is aborted and tried again"
            )

    def _kafka_failed(self, records: list[RawRecord], exc: KafkaException) -> bool:
        """After Kafka failed the transaction: abort and rewind if it may be tried again (False), else
        raise; a call that ran out of its bound raises ``_stuck``'s error."""
        err = exc.args[0] if exc.args else None
        if isinstance(err, KafkaError) and err.txn_requires_abort():
            try:
                self.producer.abort_transaction(self.txn_call_s)
            except KafkaException as again:
                raise self._stuck("abort", records, again) from again
            self.metrics.transactions.labels("aborted").inc()
            self.loop.rewind(self._first_offsets(records))
            return False
        if isinstance(err, KafkaError) and err.code() == KafkaError._TIMED_OUT:
            raise self._stuck("commit", records, exc) from exc
        raise exc

    def _stuck(self, what: str, records: list[RawRecord], exc: KafkaException) -> DeliveryError:
        """A transactional call that did not finish within its bound: exit with this error (non-zero) rather
        than wait on; the restarted instance (same transactional id) fences this one and the broker aborts
        what it left open, so its batch is processed again, once."""
        err = exc.args[0] if exc.args else exc
        return DeliveryError(
            f"could not {what} the transaction of a batch of {len(records)} records within "
            f"{self.txn_call_s:g} s (transaction coordinator or partition leaders unreachable?): "
            f"{err.str() if isinstance(err, KafkaError) else err}; stopping, a restart resumes the batch"
        )

    def _abandon(self, records: list[RawRecord], *, rewind: bool) -> None:
        """Not Kafka's doing (a bug in the transform, an interrupt, a registry outage): abort rather than
        leave the transaction open, which would hold read_committed readers back until it times out;
        with ``rewind`` (a transient failure) the batch is consumed again after the caller's wait."""
        self._forget()
        with contextlib.suppress(KafkaException):
            self.producer.abort_transaction(min(10.0, self.txn_call_s))
            self.metrics.transactions.labels("aborted").inc()
        if rewind:
            self.loop.rewind(self._first_offsets(records))

    def _dead_letter(self, record: RawRecord, letter: DeadLetter) -> None:
        """The letter to ``dlq.<partner>``, and its event's status ``dead`` (see ``processors.dlq``)."""
        partner = self._partner_of(record.topic)
        self.producer.produce(
            self.topics.dlq(partner), key=record.key, value=record.value, headers=letter.headers()
        )
        replayed = replay_key(record.headers) if record.headers else None
        self._status(
            partner,
            replayed or letter_key(letter.event_id, record.value),
            LetterStatus("dead", letter.reason, letter.stage, replayed=replayed is not None),
        )

    def _status(self, partner: str, key: str, status: LetterStatus) -> None:
        """A dead letter's new state, keyed by its event, in the same transaction as the outcome: a dead
        letter (``dead``), or what became of a replayed one (``curated``, ``duplicate``, ``dead``)."""
        self.producer.produce(self.topics.dlq_status(partner), key=key.encode(), value=status.encode())

    def _forget(self) -> None:
        """The transaction did not happen: forget the event ids and changelog keys it would have added."""
        for state in self._dedup.values():
            state.rollback()

    def _update_dedup_ids(self) -> None:
        for (topic, partition), state in list(self._dedup.items()):
            labels = (self._partner_of(topic), str(partition))
            self.metrics.dedup_ids.labels(*labels).set(len(state))
            self.metrics.dedup_bytes.labels(*labels).set(state.nbytes)

    def _update_lag(self) -> None:
        self._lag_at = time.monotonic()
        self._update_dedup_ids()
        now = time.time()
        behind: dict[str, float] = {}
        for tp in self.loop.assignment():
            # cached: the high watermark of the last fetch response. Asking the broker (cached=False)
            # is one blocking round trip per partition, ~0.25 s each under load: with 21 partitions
            # that stalled the loop for seconds every LAG_EVERY_S.
            _low, high = self.loop.consumer.get_watermark_offsets(tp, cached=True)
            if high < 0:
                continue  # nothing fetched from this partition yet
            lag = max(0, high - self.stats.position.get((tp.topic, tp.partition), 0))
            partner = self.topics.partner_of(tp.topic)
            self.metrics.lag.labels(partner, str(tp.partition)).set(lag)
            newest = self._last_ts.get((tp.topic, tp.partition))
            seconds = max(0.0, now - newest / 1000) if lag and newest else 0.0
            behind[partner] = max(behind.get(partner, 0.0), seconds)
        for partner, seconds in behind.items():
            self.metrics.lag_seconds.labels(partner).set(seconds)

    @staticmethod
    def _next_offsets(records: list[RawRecord], runs: list[Run]) -> list[TopicPartition]:
        """Where the group resumes after the batch: just past each partition's last record."""
        last: dict[tuple[str, int], int] = {}
        for run in runs:
            tp = (run.topic, run.partition)
            last[tp] = max(last.get(tp, -1), records[run.end - 1].offset)
        return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]

    @staticmethod
    def _first_offsets(records: list[RawRecord]) -> list[TopicPartition]:
        """Where to consume the batch again after an aborted transaction."""
        first: dict[tuple[str, int], int] = {}
        for r in records:
            first[(r.topic, r.partition)] = min(first.get((r.topic, r.partition), r.offset), r.offset)
        return [TopicPartition(t, p, o) for (t, p), o in first.items()]

    def _count(
        self,
        records: list[RawRecord],
        runs: list[Run],
        sent: list[Curated],
        sent_runs: list[int],
        dead: list[DeadLetter],
        duplicates: list[RawRecord],
    ) -> None:
        """Add a committed batch to the reconciliation and the metrics, per run of one partition's
        records: label lookups, locks and latency buckets are paid once per run, not once per record
        (``processors.metrics.observe_many``)."""
        partner_of, m = self._partner_of, self.metrics
        records_in: dict[str, int] = {}
        position: dict[tuple[str, int], int] = {}
        curated: dict[str, list[Curated]] = {}
        before = 0
        for run, after in zip(runs, sent_runs, strict=True):
            records_in[run.topic] = records_in.get(run.topic, 0) + run.end - run.start
            last = records[run.end - 1]
            tp = (run.topic, run.partition)
            position[tp] = max(position.get(tp, 0), last.offset + 1)
            if last.timestamp_ms:
                self._last_ts[tp] = last.timestamp_ms
            if after > before:
                curated.setdefault(run.topic, []).extend(sent[before:after])
            before = after
        self.stats.count(partner_of, records_in, position, curated, dead, duplicates)
        now_ms = time.time() * 1000
        for topic, n in records_in.items():
            m.records_in.labels(partner_of(topic)).inc(n)
        for topic, items in curated.items():
            partner = partner_of(topic)
            m.curated.labels(partner).inc(len(items))
            m.last_event_time.labels(partner).set(items[-1].event_time)
            stamps = np.fromiter((item.source.timestamp_ms or 0 for item in items), np.float64, len(items))
            stamps = stamps[stamps > 0]
            observe_many(m.latency.labels(partner), np.maximum(0.0, now_ms - stamps) / 1000)
        for letter in dead:
            m.dead.labels(partner_of(letter.source.topic), letter.reason).inc()
        for topic, n in Counter(r.topic for r in duplicates).items():
            m.duplicates.labels(partner_of(topic)).inc(n)

    def _partner_of(self, topic: str) -> str:
        partner = self._partners_by_topic.get(topic)
        if partner is None:
            partner = self._partners_by_topic[topic] = self.topics.partner_of(topic)
        return partner
