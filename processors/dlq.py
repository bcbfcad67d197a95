"""Dead letters: list them per event and reason, and replay them into ``raw.<partner>`` after a fix.

A dead letter is identified by its event (``ketenstroom.event-id``; for bytes that could not be
decoded, a digest of the bytes), so re-delivering an export that dead-letters the same event again
counts one event, not two. Each event's state lives in the compacted topic ``dlq.<partner>.status``
(key: the event; value: JSON ``{"state", "reason", "stage", "replayed"}``), written

* by the processor, in the same Kafka transaction as the outcome: ``dead`` when it dead-letters an
  event; for a replayed copy, ``curated``, ``duplicate`` (curated before) or ``dead`` again;
* by ``replay``: ``replayed`` for each copy, before the copy is sent.

Why a status topic and not headers or offsets: the DLQ itself is an append-only log of what went
wrong (its letters keep the original bytes), and a replay does not remove anything from it. The
state per event must be written exactly once together with the processor's outcome, which only a
topic in the processor's own transaction gives; compaction keeps it one record per event.
``dlq list`` shows the open events (``dead``, or ``replayed`` and not yet processed) by default.

Replay copies the original key, bytes and headers back to the raw topic with headers naming where
the copy came from and which event it is. Replaying twice is harmless: the processor drops event ids
it has seen. Progress is kept per reason filter in a consumer group, so a replay continues where the
last one stopped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from ketenstroom.adapters.kafka import ConsumeLoop, all_partitions, headers_of, read_to_end, where
from ketenstroom.contract import Topics
from ketenstroom.errors import DeliveryError, is_transient
from ketenstroom.settings import KafkaSettings

REPLAY_HEADER = "ketenstroom.replay-of"  # the dead letter's topic/partition/offset
REPLAY_KEY_HEADER = "ketenstroom.replay-key"  # the event the copy is a replay of (its status key)
OPEN_STATES = frozenset({"dead", "replayed"})


@dataclass(frozen=True)
class LetterStatus:
    """A dead-lettered event's latest state, as kept in ``dlq.<partner>.status``."""

    state: str  # dead | replayed | curated | duplicate
    reason: str | None = None
    stage: str | None = None
    replayed: bool = False

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, value: bytes | None) -> LetterStatus:
        data = json.loads(value or b"{}")
        return cls(
            state=str(data.get("state", "dead")),
            reason=data.get("reason"),
            stage=data.get("stage"),
            replayed=bool(data.get("replayed", False)),
        )


def letter_key(event_id: str | None, value: bytes | None) -> str:
    """The event a dead letter is about: its id, or for undecodable bytes a digest of them."""
    return event_id or "sha256:" + hashlib.sha256(value or b"").hexdigest()


def replay_key(headers: Iterable[tuple[str, str | bytes | None]]) -> str | None:
    """The status key of the dead letter a raw record is a replay of; None for a first delivery."""
    for name, value in headers:
        if name == REPLAY_KEY_HEADER:
            return value.decode() if isinstance(value, bytes) else value
    return None


def _headers(msg: Message) -> dict[str, str]:
    return {k: v.decode(errors="replace") if isinstance(v, bytes) else v or "" for k, v in headers_of(msg)}


def _key_of(msg: Message, headers: dict[str, str]) -> str:
    return headers.get(REPLAY_KEY_HEADER) or letter_key(headers.get("ketenstroom.event-id"), msg.value())


@dataclass
class ReasonRow:
    """One line of ``dlq list``: events of one reason, stage and state."""

    partner: str
    reason: str
    stage: str
    state: str
    events: int = 0  # distinct events
    letters: int = 0  # dead letters of these events (a re-delivery or failed replay adds one)
    first_seen: str = ""  # ISO time of the oldest letter
    last_seen: str = ""
    example_error: str = ""  # of the latest letter


@dataclass
class DeadLetterSummary:
    topic: str
    letters: int = 0
    events: dict[str, str] = field(default_factory=dict)  # event key -> state
    rows: list[ReasonRow] = field(default_factory=list)

    @property
    def open(self) -> int:
        return sum(1 for state in self.events.values() if state in OPEN_STATES)

    def to_json(self) -> dict[str, object]:
        return {
            "topic": self.topic,
            "letters": self.letters,
            "events": len(self.events),
            "open": self.open,
            "rows": [asdict(r) for r in self.rows],
        }


def _iso(msg: Message) -> str:
    _kind, ms = msg.timestamp()
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds") if ms > 0 else ""


def _statuses(kafka: KafkaSettings, topic: str) -> dict[str, LetterStatus]:
    """Latest status per event key (the topic is compacted; later records win)."""
    try:
        partitions = all_partitions(kafka, topic)
    except DeliveryError as exc:
        if is_transient(exc):
            raise  # the cluster did not answer: not the same as a topic that does not exist yet
        return {}  # no status topic yet: no processor with status tracking has dead-lettered anything
    return {
        (msg.key() or b"").decode(): LetterStatus.decode(msg.value())
        for msg in read_to_end(kafka, partitions, group_id=f"{topic}.list")
    }


def summarise(
    kafka: KafkaSettings, topics: Topics, partner: str, *, everything: bool = False
) -> DeadLetterSummary:
    """Read the DLQ and its status topic (no offsets committed): per reason, stage and state, the
    distinct events, their letters, first and last seen and an example error. Open events only unless
    ``everything``."""
    topic = topics.dlq(partner)
    summary = DeadLetterSummary(topic)
    latest: dict[str, tuple[dict[str, str], str, str, int]] = {}  # key -> headers, first, last, letters
    try:
        statuses = _statuses(kafka, topics.dlq_status(partner))
        for msg in read_to_end(kafka, all_partitions(kafka, topic), group_id=f"{topic}.list"):
            summary.letters += 1
            headers = _headers(msg)
            key, seen = _key_of(msg, headers), _iso(msg)
            _old, first, _last, letters = latest.get(key, (headers, seen, seen, 0))
            latest[key] = (headers, first, seen, letters + 1)
    except KafkaException as exc:
        raise DeliveryError(f"reading {topic} failed: {exc}") from exc
    rows: dict[tuple[str, str, str], ReasonRow] = {}
    for key, (headers, first, last, letters) in latest.items():
        status = statuses.get(key)
        state = status.state if status is not None else "dead"  # letters from before status tracking
        summary.events[key] = state
        if not everything and state not in OPEN_STATES:
            continue
        reason = headers.get("ketenstroom.reason", "unknown")
        stage = headers.get("ketenstroom.stage", "unknown")
        row = rows.setdefault((reason, stage, state), ReasonRow(partner, reason, stage, state))
        row.events += 1
        row.letters += letters
        error = headers.get("ketenstroom.error", "")
        if (last, error) > (row.last_seen, row.example_error):  # the latest letter, in any read order
            row.example_error = error
        row.first_seen = min(row.first_seen or first, first)
        row.last_seen = max(row.last_seen, last)
    summary.rows = sorted(rows.values(), key=lambda r: (-r.events, r.reason, r.stage, r.state))
    return summary


def replay(
    kafka: KafkaSettings, topics: Topics, partner: str, *, reason: str | None = None
) -> dict[str, int]:
    """Copy dead-lettered events (optionally of one reason) back to ``raw.<partner>``, each event once
    (its latest letter); offsets committed after. Counts letters ``read``, events ``replayed``, letters
    ``skipped`` (another reason) and ``repeats`` (another letter of an event replayed here).

    Each copy's event is first marked ``replayed`` in the status topic (acknowledged before any copy is
    sent, so the processor's outcome for the copy always comes after it)."""
    source, target, status_topic = topics.dlq(partner), topics.raw(partner), topics.dlq_status(partner)
    group = f"{source}.replay.{reason or 'all'}"
    producer = Producer(kafka.librdkafka(enable_idempotence=True, acks="all"))
    counts = {"read": 0, "replayed": 0, "skipped": 0, "repeats": 0}
    failures: list[str] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(str(err))

    def flush() -> None:
        producer.flush(60)
        if failures:
            raise DeliveryError(f"{len(failures)} dead letters could not be replayed: {failures[0]}")

    # from the group's committed offsets (assign without an offset), or the beginning
    partitions = [TopicPartition(source, tp.partition) for tp in all_partitions(kafka, source)]
    try:
        with ConsumeLoop(kafka, group_id=group, partitions=partitions, batch_size=10_000) as loop:
            messages = []
            for batch in loop.batches(
                stop=lambda: {(source, tp.partition) for tp in partitions} <= loop.eof_offset.keys()
            ):
                messages.extend(batch)
            chosen: dict[str, Message] = {}  # event -> its latest letter: one copy per event
            for msg in messages:
                counts["read"] += 1
                headers = _headers(msg)
                if reason is not None and headers.get("ketenstroom.reason") != reason:
                    counts["skipped"] += 1
                    continue
                key = _key_of(msg, headers)
                if key in chosen:
                    counts["repeats"] += 1  # the same event dead-lettered again (a re-delivery, say)
                chosen[key] = msg
            for key in chosen:
                producer.produce(
                    status_topic,
                    key=key.encode(),
                    value=LetterStatus("replayed", replayed=True).encode(),
                    on_delivery=delivered,
                )
            flush()
            for key, msg in chosen.items():
                topic, partition, offset = where(msg)
                passed_on = [(k, v) for k, v in headers_of(msg) if not k.startswith("ketenstroom.")]
                producer.produce(
                    target,
                    key=msg.key(),
                    value=msg.value(),
                    headers=[
                        *passed_on,
                        (REPLAY_HEADER, f"{topic}/{partition}/{offset}".encode()),
                        (REPLAY_KEY_HEADER, key.encode()),
                    ],
                    on_delivery=delivered,
                )
                counts["replayed"] += 1
                producer.poll(0)
            flush()
            if messages:  # only after every copy is acknowledged
                loop.consumer.commit(offsets=_next_offsets(messages), asynchronous=False)
    except KafkaException as exc:
        raise DeliveryError(f"replaying {source} failed: {exc}") from exc
    return counts


def _next_offsets(messages: list[Message]) -> list[TopicPartition]:
    last: dict[tuple[str, int], int] = {}
    for msg in messages:
        topic, partition, offset = where(msg)
        last[(topic, partition)] = offset
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
