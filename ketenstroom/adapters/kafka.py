"""Kafka adapter: the one consume loop, topic creation and watermarks, with errors translated to ours."""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, cast

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

# NewTopic and OffsetSpec are exported at run time, but confluent-kafka 2.16's admin/__init__ has no
# __all__ naming them, so mypy (no implicit re-export under --strict) does not see them
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from ketenstroom.errors import BrokerUnavailable, DeliveryError, StopRequested
from ketenstroom.settings import KafkaSettings

log = logging.getLogger("ketenstroom.kafka")

#: consumer events that report what librdkafka recovers from by itself: said, not raised. The poll interval
#: overrun (the caller's work between two batches took longer than ``max.poll.interval.ms``): the member
#: has left its group and rejoins on the next consume, reading on from the last commit (the caller's
#: revocation hand-over runs first).
_RECOVERED = frozenset({KafkaError._MAX_POLL_EXCEEDED, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN})
WAIT_REPORT_S = 5.0  # after this long without partitions, say what the loop is waiting for (and again)
SESSION_TIMEOUT_MS = 45_000  # librdkafka's default (KafkaSettings.extra may set another): for the message


def where(msg: Message) -> tuple[str, int, int]:
    """Topic, partition and offset of a record the loop yielded (never None for a record; only the
    type hints of confluent-kafka >= 2.16 allow None, for error events)."""
    return cast(str, msg.topic()), cast(int, msg.partition()), cast(int, msg.offset())


def static_member(group_id: str, instance_id: str, topics: Iterable[str]) -> str:
    """``group.instance.id`` of an instance: ``<group>.<instance>.<digest of its topics>``.

    The subscription is part of the identity because a static member that rejoins with other topics
    (``process -p om`` after ``process``) is handed its old assignment back by the coordinator, without
    a rebalance, and would wait on partitions it no longer reads. With the digest it joins as a new
    member instead; the same instance restarted with the same topics gets its partitions back at once.
    """
    digest = hashlib.sha256(",".join(sorted(topics)).encode()).hexdigest()[:8]
    return f"{group_id}.{instance_id}.{digest}"


def headers_of(msg: Message) -> list[tuple[str, str | bytes | None]]:
    """A record's headers as (name, value) pairs (consumers return a list; the hints also allow a dict)."""
    found = msg.headers()
    if not found:
        return []
    return list(found.items()) if isinstance(found, dict) else found


class ConsumeLoop:
    """The one consume loop: batches, partition EOF, assignment, graceful stop. Used by the processor,
    the sink, the DLQ tools and the command line's readers.

    ``topics``: subscribe in consumer group ``group_id`` (the group assigns partitions; with
    ``instance_id``, as a static member, ``static_member``, so a restarted instance gets its partitions
    back at once instead of after the old member's session timeout).
    ``partitions``: read exactly these (``assign``), from their offsets or the group's committed ones.

    librdkafka's ``consume`` returns when it has ``batch_size`` records or ``poll_timeout_s`` has passed,
    so the last records before the end of a catch-up wait out the timeout with them. With
    ``return_at_eof``, after a full batch (while catching up), the next batches are handed over as soon
    as they hold a partition-EOF event (what is queued is gathered in short slices
    until then): a reader that stops or seals at the end (the sink) does not idle up to
    ``poll_timeout_s`` there. A trickle at the live end is batched as before (one batch per timeout),
    so a caller that flushes whenever it is caught up does not flush once per fetch. Off by default.

    Always ``read_committed`` with partition-EOF events, offsets committed by the caller only:
    ``at_end`` holds the assigned partitions whose latest event is EOF (nothing read since), and
    ``eof_offset`` the offset each partition's latest EOF reported. Both are kept up to date before a
    batch is yielded; ``rewind`` takes a partition out of ``at_end`` again. Every batch is yielded,
    empty ones too, so callers can do timed work between them.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        group_id: str,
        topics: Sequence[str] = (),
        partitions: Sequence[TopicPartition] = (),
        instance_id: str | None = None,
        batch_size: int = 1000,
        poll_timeout_s: float = 0.5,
        return_at_eof: bool = False,
        on_assign: Callable[[list[TopicPartition]], None] | None = None,
        on_revoke: Callable[[list[TopicPartition]], None] | None = None,
        **config: Any,
    ) -> None:
        if bool(topics) == bool(partitions):
            raise ValueError("give either topics (subscribe) or partitions (assign), not both or neither")
        conf = settings.librdkafka(
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            enable_partition_eof=True,
            **config,
        )
        self.session_timeout_ms = int(conf.get("session.timeout.ms", SESSION_TIMEOUT_MS))
        self.member = static_member(group_id, instance_id, topics) if instance_id is not None else None
        if self.member is not None:
            conf["group.instance.id"] = self.member
        self.consumer = Consumer(conf)
        self.group_id, self.topics, self.partitions = group_id, list(topics), list(partitions)
        self.batch_size, self.poll_timeout_s = batch_size, poll_timeout_s
        self.return_at_eof = return_at_eof
        self._eager_left = 0  # batches that may still end at an EOF (``return_at_eof``)
        self._on_assign, self._on_revoke = on_assign, on_revoke
        self.at_end: set[tuple[str, int]] = set()
        self.eof_offset: dict[tuple[str, int], int] = {}
        self.assigned_after_s: float | None = None
        self._started = 0.0  # monotonic time of ``_start``
        self._early = False  # ``start`` was called and ``batches`` has not begun yet

    def __enter__(self) -> ConsumeLoop:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Leave (a static member does not leave: its restart takes its partitions back at once)."""
        self.consumer.close()

    def assignment(self) -> list[TopicPartition]:
        return self.consumer.assignment()

    def caught_up(self) -> bool:
        """Every assigned partition is at its end (committed records only: transaction markers and
        aborted records never keep it waiting)."""
        if not self.at_end:  # asked before every batch: spare building the assignment's list then
            return False
        assigned = self.consumer.assignment()
        return bool(assigned) and all((tp.topic, tp.partition) in self.at_end for tp in assigned)

    def rewind(self, offsets: Iterable[TopicPartition]) -> None:
        """Read again from these offsets (after an aborted transaction): not at the end any more."""
        for tp in offsets:
            self.at_end.discard((tp.topic, tp.partition))
            self.consumer.seek(tp)

    def _assigned(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.assigned_after_s is None:
            self.assigned_after_s = time.monotonic() - self._started
            log.info(
                "group %s assigned %d partitions to %s after %.1f s",
                self.group_id,
                len(partitions),
                self.member or "this member",
                self.assigned_after_s,
            )
        for tp in partitions:
            self.at_end.discard((tp.topic, tp.partition))
        if self._on_assign is not None:
            self._on_assign(partitions)

    def _revoked(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.at_end.discard((tp.topic, tp.partition))
        if self._on_revoke is not None:
            self._on_revoke(partitions)

    def _report_waiting(self, waited: float) -> None:
        static = (
            f"as static member {self.member}: a restart of the same instance gets its partitions back at "
            "once; a new member waits for a rebalance"
            if self.member is not None
            else "as a dynamic member: after a crash the group waits for the old member's session"
        )
        log.warning(
            "waiting %.0f s so far for group %s to assign partitions of %s, %s "
            "(session.timeout.ms=%d: a member that vanished is dropped after at most %.0f s)",
            waited,
            self.group_id,
            ", ".join(self.topics),
            static,
            self.session_timeout_ms,
            self.session_timeout_ms / 1000,
        )

    def start(self) -> None:
        """Subscribe (or assign) now, if not done yet; ``batches`` does it otherwise. The group join
        then runs in librdkafka's threads while the caller does other start-up work; the assignment
        callbacks still run only inside ``batches`` (they are served by ``consume``, ``close``)."""
        if not self._early:
            self._early = True
            self._start()

    def batches(self, *, stop: Callable[[], bool] = lambda: False) -> Iterator[list[Message]]:
        """Consume until ``stop()`` (checked before each batch): the records of each batch, in order.

        Raises DeliveryError on a consumer error; EOF events update ``at_end`` and ``eof_offset``.
        """
        self.start()
        self._early = False  # a later ``batches`` call subscribes again, as it always did
        report_at = self._started + WAIT_REPORT_S
        at_end, eof_offset = self.at_end, self.eof_offset
        while not stop():
            events = self._next_events()
            records: list[Message] = []
            eofs: list[tuple[int, tuple[str, int], int]] = []  # (records before it, partition, offset)
            for msg in events:
                err = msg.error()
                if err is None:
                    records.append(msg)
                elif err.code() == KafkaError._PARTITION_EOF:
                    topic, partition, offset = where(msg)
                    eofs.append((len(records), (topic, partition), offset))
                elif err.code() in _RECOVERED and not err.fatal():
                    log.warning("group %s: %s; librdkafka rejoins and reads on", self.group_id, err.str())
                else:
                    raise DeliveryError(f"consuming {msg.topic()} [{msg.partition()}] failed: {err}")
            if records and at_end:  # (nothing to undo while every partition is still catching up)
                at_end.difference_update({(m.topic(), m.partition()) for m in records})
            if eofs:
                last = {(m.topic(), m.partition()): i for i, m in enumerate(records)}
                for count, tp, offset in eofs:
                    eof_offset[tp] = max(eof_offset.get(tp, 0), offset)
                    if count > last.get(tp, -1):
                        at_end.add(tp)
            if self.assigned_after_s is None and time.monotonic() >= report_at:
                self._report_waiting(time.monotonic() - self._started)
                report_at = time.monotonic() + 2 * WAIT_REPORT_S
            yield records

    def _start(self) -> None:
        """Subscribe (join the group) or assign."""
        self._started = time.monotonic()
        if self.topics:
            log.info(
                "joining group %s%s for %s",
                self.group_id,
                f" as static member {self.member}" if self.member else "",
                ", ".join(self.topics),
            )
            self.consumer.subscribe(self.topics, on_assign=self._assigned, on_revoke=self._revoked)
        else:
            self.consumer.assign(self.partitions)
            self.assigned_after_s = 0.0

    def _next_events(self) -> list[Message]:
        """The next batch's events; after a full batch, the next ones (one more than there are
        partitions: each may end in a batch of its own) end at an EOF (``return_at_eof``)."""
        size = self.batch_size
        if self.return_at_eof and self._eager_left > 0:
            self._eager_left -= 1
            events = self._until_eof()
        else:
            events = self.consumer.consume(size, timeout=self.poll_timeout_s)
        if self.return_at_eof and len(events) >= size:
            self._eager_left = len(self.consumer.assignment()) + 1
        return events

    EOF_SLICE_S = 0.02  # how long one wait for more records lasts when a batch may end at an EOF

    def _until_eof(self) -> list[Message]:
        """Up to ``batch_size`` events, returned at the first partition EOF among them or when the batch
        is full or ``poll_timeout_s`` has passed, whichever comes first."""
        consume, size = self.consumer.consume, self.batch_size
        events = consume(size, timeout=0)
        ended = any(m.error() is not None for m in events)  # an EOF (or an error: raised by the caller)
        deadline = time.monotonic() + self.poll_timeout_s
        while len(events) < size and not ended:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            more = consume(size - len(events), timeout=min(left, self.EOF_SLICE_S))
            ended = any(m.error() is not None for m in more)
            events += more
        return events


def ensure_topics(
    settings: KafkaSettings,
    names: Iterable[str],
    *,
    partitions: int = 3,
    replication_factor: int = -1,
    config: dict[str, str] | None = None,
    timeout: float = 30.0,
    admin: AdminClient | None = None,
) -> list[str]:
    """Create topics that do not exist yet; existing ones are left as they are. Returns the names this
    call created. ``admin``: a client to use (a long-lived one, ``high_watermarks``), else a new one."""
    admin = admin or AdminClient(settings.librdkafka())
    wanted = [
        NewTopic(n, num_partitions=partitions, replication_factor=replication_factor, config=config or {})
        for n in dict.fromkeys(names)  # once each: the broker refuses a request naming a topic twice
    ]
    if not wanted:
        return []
    created: list[str] = []
    futures = admin.create_topics(wanted, operation_timeout=timeout, request_timeout=timeout)
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            created.append(name)
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise DeliveryError(
                f"cannot create topic {name!r} on {settings.bootstrap_servers}: {err}"
            ) from exc
    _await_leaders(admin, [t.topic for t in wanted], settings, timeout)
    return created


def _await_leaders(admin: AdminClient, names: list[str], settings: KafkaSettings, timeout: float) -> None:
    """Return once every topic is in the metadata with a leader for each partition: a topic just created
    is known to the controller before every broker serves it, and a producer asking too early is told
    "unknown topic or partition"."""
    deadline = time.monotonic() + timeout
    missing = list(names)
    while missing:
        metadata = admin.list_topics(timeout=max(0.1, min(5.0, deadline - time.monotonic())))
        missing = [
            name
            for name in missing
            if (found := metadata.topics.get(name)) is None
            or found.error is not None
            or not found.partitions
            or any(p.leader < 0 for p in found.partitions.values())
        ]
        if missing and time.monotonic() >= deadline:
            raise DeliveryError(
                f"topics {missing} were created on {settings.bootstrap_servers} but have no leader "
                f"after {timeout:.0f} s"
            )
        if missing:
            admin.poll(0.1)  # a short wait that also serves the client's callbacks


def topic_configs(
    settings: KafkaSettings, names: Iterable[str], *, timeout: float = 30.0
) -> dict[str, dict[str, str] | None]:
    """Each topic's live configuration (``describe_configs``); ``None`` for a topic that does not exist."""
    admin = AdminClient(settings.librdkafka())
    names = list(names)
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise DeliveryError(f"cannot list topics on {settings.bootstrap_servers}: {exc}") from exc
    out: dict[str, dict[str, str] | None] = {n: None for n in names}
    resources = [ConfigResource(ResourceType.TOPIC, n) for n in names if n in existing]
    if not resources:
        return out
    futures = admin.describe_configs(resources, request_timeout=timeout)
    for resource, future in futures.items():
        try:
            entries = future.result(timeout=timeout)
        except KafkaException as exc:
            raise DeliveryError(f"cannot describe topic {resource.name!r}: {exc.args[0]}") from exc
        out[resource.name] = {key: str(entry.value) for key, entry in entries.items()}
    return out


def topic_replicas(settings: KafkaSettings, names: Iterable[str], *, timeout: float = 30.0) -> dict[str, int]:
    """The fewest replicas of any partition of each existing topic among ``names`` (absent: left out)."""
    admin = AdminClient(settings.librdkafka())
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise DeliveryError(f"cannot list topics on {settings.bootstrap_servers}: {exc}") from exc
    out: dict[str, int] = {}
    for name in names:
        meta = metadata.topics.get(name)
        if meta is not None and meta.error is None and meta.partitions:
            out[name] = min(len(p.replicas) for p in meta.partitions.values())
    return out


def end_offsets(
    settings: KafkaSettings, topics: Iterable[str], *, group_id: str | None = None, timeout: float = 10.0
) -> dict[tuple[str, int], int]:
    """High watermark of every partition of ``topics``: where a reader that wants 'all so far' must reach.

    With ``group_id``, partitions the group has already committed up to the end are left out, so a
    "run until caught up" reader does not wait for records that will never come.
    """
    consumer = Consumer(
        settings.librdkafka(group_id=group_id or "ketenstroom-watermarks", enable_auto_commit=False)
    )
    try:
        out: dict[tuple[str, int], int] = {}
        metadata = consumer.list_topics(timeout=timeout)
        for topic in topics:
            meta = metadata.topics.get(topic)
            if meta is None or meta.error is not None:
                continue
            for partition in meta.partitions:
                _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
                out[(topic, partition)] = high
        if group_id is not None and out:
            committed = _stable_committed(settings, group_id, list(out), timeout)
            for tp in committed:
                if tp.offset >= 0 and tp.offset >= out[(tp.topic, tp.partition)]:
                    del out[(tp.topic, tp.partition)]
        return out
    except KafkaException as exc:
        raise DeliveryError(f"cannot read watermarks from {settings.bootstrap_servers}: {exc}") from exc
    finally:
        consumer.close()


_COORDINATOR_MOVING = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
    }
)


#: a commit refused because the group has moved on without this member's generation: a rebalance under
#: way, or the member dropped after its session expired (a long stall: the process paused, the machine
#: overloaded). Not a failure of the work: the records since the last commit are read again by whoever
#: owns their partitions next (this member too, once it has rejoined).
_GROUP_MOVED = frozenset(
    {
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.STALE_MEMBER_EPOCH,
        KafkaError.FENCED_MEMBER_EPOCH,
        KafkaError._ASSIGNMENT_LOST,
    }
)
#: a commit that did not get an answer in time, or reached no coordinator: try the same commit again
_COMMIT_AGAIN = _COORDINATOR_MOVING | {
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError._TIMED_OUT,
    KafkaError._WAIT_COORD,
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
}


def commit_offsets(consumer: Consumer, offsets: list[TopicPartition], *, what: str) -> bool:
    """Commit ``offsets`` for the consumer's group, synchronously: True once committed.

    The errors a commit can meet are told apart, not all made fatal:

    * the group moved on (``_GROUP_MOVED``): False, logged. The offsets are not committed and the caller
      goes on; the records after the last commit are read again (at-least-once, so a caller commits
      only what it has made durable and repeatable: the sink's sealing keeps each event id once);
    * no coordinator or no answer in time (``_COMMIT_AGAIN`` or librdkafka's retriable flag):
      ``BrokerUnavailable``, transient, for the caller's backoff to try again;
    * anything else, and every fatal error (a static member fenced by a second instance with its
      ``group.instance.id``): the ``KafkaException``, for the caller to stop on.

    A commit that succeeds as a request may still refuse single partitions; those count the same way.
    """
    try:
        answered = consumer.commit(offsets=offsets, asynchronous=False)
        refused = [tp.error for tp in answered or [] if tp.error is not None]
        if refused:
            raise KafkaException(refused[0])
        return True
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        if not isinstance(err, KafkaError) or err.fatal():
            raise
        if err.code() in _GROUP_MOVED:
            log.warning(
                "%s: the group moved on before offsets of %d partition(s) could be committed (%s); not "
                "committed, the records since the last commit will be read again",
                what,
                len(offsets),
                err.str(),
            )
            return False
        if err.code() in _COMMIT_AGAIN or err.retriable():
            raise BrokerUnavailable(f"{what}: committing offsets got no answer: {err.str()}") from exc
        raise


def _stable_committed(
    settings: KafkaSettings, group_id: str, partitions: list[tuple[str, int]], timeout: float
) -> list[TopicPartition]:
    """The group's committed offsets, not waiting for a transaction still open on them.

    A read_committed client asks for stable offsets only, and the broker keeps answering "unstable"
    while a transaction that sent offsets is open: after a transactional processor was killed,
    until its successor fences it or the transaction times out (30 s), longer than any caller
    waits. read_uncommitted gets the offsets committed so far, the pending ones left out: at most
    behind, so a caller waits for records a predecessor may have processed; the processor counts a
    partition read to its end as done (``Reconciliation.done``).
    """
    consumer = Consumer(
        settings.librdkafka(
            group_id=group_id, enable_auto_commit=False, **{"isolation.level": "read_uncommitted"}
        )
    )
    try:
        return _committed(consumer, [TopicPartition(t, p) for t, p in partitions], timeout)
    finally:
        consumer.close()


def _committed(consumer: Consumer, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
    """The group's committed offsets, asked again on a retriable error until ``timeout``: on a fresh or
    recovering cluster the group coordinator answers "not coordinator" or "loading" for a while."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found: list[TopicPartition] = consumer.committed(partitions, timeout=timeout)
            return found
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            passing = isinstance(err, KafkaError) and (err.retriable() or err.code() in _COORDINATOR_MOVING)
            if not passing or time.monotonic() >= deadline:
                raise
            consumer.poll(0.2)  # a short wait that also serves the client's callbacks


def high_watermarks(
    settings: KafkaSettings,
    partitions: Iterable[TopicPartition],
    *,
    timeout: float = 10.0,
    admin: AdminClient | None = None,
) -> dict[tuple[str, int], int]:
    """High watermark of each partition, in one ListOffsets request per broker (not one per partition).

    A partition whose offset cannot be listed (no leader yet, just created) is left out of the answer:
    callers treat it as unknown rather than wait for it.

    ``admin``: a client that has already answered a request (``warm_admin``). A new client's first
    request can go out on its bootstrap connection just as librdkafka swaps that for the broker's own;
    the request is then dropped and retried 1-3 s later (3 of 25 fresh clients measured, 0 of 25
    warmed: ``bench/notes/processor-profile.md``).
    """
    # confluent-kafka 2.16 leaves OffsetSpec.latest unannotated
    latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    wanted = {TopicPartition(tp.topic, tp.partition): latest for tp in partitions}
    if not wanted:
        return {}
    admin = admin or AdminClient(settings.librdkafka())
    out: dict[tuple[str, int], int] = {}
    deadline = time.monotonic() + timeout  # one bound for all: not ``timeout`` per partition
    for tp, future in admin.list_offsets(wanted, request_timeout=timeout).items():
        try:
            out[(tp.topic, tp.partition)] = future.result(
                timeout=max(0.0, deadline - time.monotonic())
            ).offset
        except (KafkaException, concurrent.futures.TimeoutError):
            # a future still pending at the deadline (no leader: the request never left) raises the
            # futures' TimeoutError, not a KafkaException; it crashed the processor's restore once
            continue
    return out


def warm_admin(settings: KafkaSettings, *, timeout: float = 10.0) -> tuple[AdminClient, Any]:
    """A new admin client and the cluster's metadata, its first answer: past its bootstrap connection,
    so its later requests are not dropped in the swap (``high_watermarks``)."""
    admin = AdminClient(settings.librdkafka())
    return admin, admin.list_topics(timeout=timeout)


def read_to_end(
    settings: KafkaSettings,
    partitions: list[TopicPartition],
    *,
    group_id: str,
    deadline_s: float = 120.0,
    batch_size: int = 10_000,
    should_stop: Callable[[], bool] = lambda: False,
) -> Iterator[Message]:
    """Committed records of ``partitions`` from the given offsets up to the end as of reading.

    Raises DeliveryError when the end is not reached within ``deadline_s`` (a partition without a
    leader), and StopRequested as soon as ``should_stop`` says so (looked at every 0.1 s at most).

    Uses partition-EOF events rather than comparing offsets: a read_committed consumer never returns
    transaction markers or aborted records, so its last offset can stay short of the high watermark.
    """
    pending = {(tp.topic, tp.partition) for tp in partitions}
    deadline = time.monotonic() + deadline_s
    with ConsumeLoop(
        settings, group_id=group_id, partitions=partitions, batch_size=batch_size, poll_timeout_s=0.1
    ) as loop:
        for batch in loop.batches(stop=lambda: pending <= loop.eof_offset.keys()):
            yield from batch
            if should_stop():
                left = sorted(pending - loop.eof_offset.keys())
                raise StopRequested(f"stopped while reading {left} to the end")
            if time.monotonic() > deadline:
                left = sorted(pending - loop.eof_offset.keys())
                raise DeliveryError(f"reading {left} did not reach the end within {deadline_s:.0f} s")


def all_partitions(
    settings: KafkaSettings, topic: str, offset: int = OFFSET_BEGINNING, timeout: float = 10.0
) -> list[TopicPartition]:
    admin = AdminClient(settings.librdkafka())
    try:
        meta = admin.list_topics(topic, timeout=timeout).topics.get(topic)
    except KafkaException as exc:
        raise BrokerUnavailable(
            f"could not read the partitions of {topic} from Kafka at {settings.bootstrap_servers} "
            f"within {timeout:g} s: {exc.args[0].str() if exc.args else exc}"
        ) from exc
    if meta is None or meta.error is not None:
        raise DeliveryError(f"topic {topic} does not exist on {settings.bootstrap_servers}")
    return [TopicPartition(topic, p, offset) for p in sorted(meta.partitions)]
