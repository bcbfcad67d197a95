"""The processor's dedup state, bounded: compact ids, a horizon, a changelog keyed by time bucket.

Ids
    An event id is kept as a 16-byte digest, BLAKE2b-128 of its UTF-8 text, whatever the id looks
    like. Two distinct ids share a digest with probability about n²/2¹²⁹ among n ids (the birthday
    bound): 1.5e-21 for 10⁹ ids, decades of the whole chain in one partition. A collision would
    drop a distinct event as a duplicate, so 8 bytes are not enough: n²/2⁶⁵ is 2.7e-6 for 10⁷ ids
    and 2.7e-4 for 10⁸ (a few years re-processed). Sixteen is what a UUID itself holds. Held in
    sorted numpy arrays with the id's bucket, and a Bloom filter of two bits in 16 an id that answers
    most lookups of a new id without numpy: 22 bytes an id, against ~119 for the id's text in a
    Python set (``bench/notes/dedup.md``). Ids added since the last fold sit in a dict until they
    reach an eighth of the rest (or 65,536), then are merged in.

Horizon and buckets
    Time is cut into buckets of ``ProcessorSettings.dedup_bucket_days`` (a day by default) by ingest
    time: the raw record's Kafka timestamp (never later than the wall clock), not the event's own
    time, so a late-registered event of years ago is remembered from its delivery on. Stream time is
    the newest bucket a partition has seen, by those timestamps rather than the wall clock, so a
    re-processing run over old raw records deduplicates exactly as the first run did. The live
    buckets are the newest and the ``ceil(horizon / bucket)`` before it: an id is remembered for at
    least ``dedup_horizon_days`` after its first ingest, at most two buckets longer. A record whose
    timestamp lies before the live buckets (out of order) is remembered from the newest bucket on.

Changelog (``<app id>.dedup.<raw topic>``, compacted, the raw record's partition)
    Key ``d2:<bucket>:<seq>``; value the digests of one batch's new ids of that bucket, concatenated
    (at most 50,000 a record: 800 kB, under the broker's 1 MB); record timestamp the bucket's start.
    Each key is written once, in the transaction that curates those events (outcomes, changelog and
    offsets: all or none). The transaction whose stream time passes a bucket writes a tombstone for
    every key of that bucket; compaction then drops the records, and the tombstones a day later
    (``delete.retention.ms``). The log holds the live buckets, not the history. Every transaction
    that writes to a changelog partition ends its records there with ``d2-start``: the offset of
    the first record of the oldest live bucket (known from the delivery reports of earlier
    transactions; where not known yet, the end known so far, which lies before it).

Restore
    The latest ``d2-start``, found in the last 256 offsets of the partition (not there, after a
    large aborted transaction say, the partition is read whole), says where the live buckets
    begin; restore reads from there only (everything before holds expired buckets, whether
    or not the log cleaner has removed it yet), digests straight from the record into numpy arrays,
    no Python object per id. Timestamps play no part in finding it: a transaction's commit marker
    carries the wall-clock time, whatever the records' own. A record of an expired bucket met on the
    way without its tombstone is tombstoned in the next transaction.

Legacy records
    Before this format the changelog had one record per batch, keyed ``<first offset>.<chunk>`` with
    the ids one per line (and before that the id as key, value ``1``). Such a changelog has no
    ``d2-start``, so it is read whole; its records restore into the bucket of their record's
    timestamp (their write time) and are migrated: the next transaction writes the live ones as
    ``d2`` records and tombstones every legacy key it read.

What is older than the horizon passes here and reaches the sink, whose per-period dedup keeps each
event id once per sealed revision, against earlier revisions too (``sinks/dedup.py``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from hashlib import blake2b

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from ketenstroom.adapters.kafka import high_watermarks, read_to_end, where
from ketenstroom.errors import DeliveryError
from ketenstroom.settings import KafkaSettings, ProcessorSettings

log = logging.getLogger("ketenstroom.processor")

ID_BYTES = 16
IDS_PER_RECORD = 50_000  # 800 kB of digests, under the broker's default 1 MB message limit
FOLD_MIN = 65_536
KEY_PREFIX = b"d2:"
START_KEY = b"d2-start"  # value: the offset a restore starts at, written last in every transaction
WATERMARK_WAIT_S = 5.0  # how long a restore asks again for a changelog's end before reading it whole
ASK_AGAIN_S = 0.05  # between those asks
REASK_BOUND_S = 0.25  # the first bound of such an ask, doubled for each one after it
TAIL = 256  # offsets at a changelog partition's end searched for the latest START_KEY
DAY_MS = 86_400_000
_LOW = (1 << 64) - 1

#: a changelog record to produce: key, value (None: a tombstone), timestamp in ms
ChangelogRecord = tuple[bytes, bytes | None, int]


def changelog_topic(app_id: str, raw_topic: str) -> str:
    return f"{app_id}.dedup.{raw_topic}"


def compact_id(event_id: str) -> int:
    """The event id's 16-byte digest, as an int (see the module's docstring for the collision odds)."""
    return int.from_bytes(blake2b(event_id.encode(), digest_size=ID_BYTES).digest())


def bucket_key(bucket: int, seq: int) -> bytes:
    return KEY_PREFIX + f"{bucket}:{seq}".encode()


def parse_key(key: bytes | None) -> tuple[int, int] | None:
    """(bucket, seq) of a ``d2`` changelog key; None for a legacy record's key."""
    if key is None or not key.startswith(KEY_PREFIX):
        return None
    bucket, _, seq = key[len(KEY_PREFIX) :].partition(b":")
    return int(bucket), int(seq)


def legacy_ids(key: bytes | None, value: bytes) -> list[str]:
    """The event ids in a legacy changelog record: one per line (older still: the id as key, value 1)."""
    if value == b"1":
        return [(key or b"").decode()]
    return [line for line in value.decode().split("\n") if line]


def digests(value: bytes) -> np.ndarray:
    """A ``d2`` record's digests as an (n, 2) uint64 array: high and low 64 bits of each."""
    if len(value) % ID_BYTES:
        raise DeliveryError(
            f"a dedup changelog record holds {len(value)} bytes, not a multiple of {ID_BYTES}"
        )
    return np.frombuffer(value, dtype=">u8").reshape(-1, 2).astype(np.uint64)


@dataclass(frozen=True)
class Horizon:
    """Bucket width and how many buckets before the newest stay live."""

    bucket_ms: int
    buckets: int

    @classmethod
    def of(cls, settings: ProcessorSettings) -> Horizon:
        bucket_ms = max(1, round(settings.dedup_bucket_days * DAY_MS))
        return cls(bucket_ms, math.ceil(round(settings.dedup_horizon_days * DAY_MS) / bucket_ms))

    def bucket(self, ms: int) -> int:
        return ms // self.bucket_ms

    def cutoff(self, newest: int) -> int:
        """The oldest live bucket when ``newest`` is the stream time's bucket."""
        return newest - self.buckets


class PartitionDedup:
    """The event ids one raw partition has curated within the horizon, and its changelog's bookkeeping.

    Per transaction: ``add`` each curated event's id (False: seen before), produce ``changelog()``,
    then ``commit()`` once the transaction committed, or ``rollback()`` if it did not.
    """

    def __init__(self, horizon: Horizon) -> None:
        self.horizon = horizon
        self.newest: int | None = None  # stream time: the newest ingest bucket committed
        # folded ids, sorted by the digest's high 64 bits
        self._hi = np.empty(0, np.uint64)
        self._lo = np.empty(0, np.uint64)
        self._bk = np.empty(0, np.int32)
        self._bloom = bytearray(1)  # a Bloom filter over the folded ids: two bits each
        self._bloom_mask = 7
        self._recent: dict[int, int] = {}  # digest -> bucket, not folded yet
        self._records: dict[int, int] = {}  # bucket -> records written to the changelog (next seq)
        self._tombstones: list[bytes] = []  # keys to delete in the next transaction
        self._migrate: list[int] = []  # legacy ids (in _recent) to write as d2 records
        self._first_offset: dict[int, int] = {}  # bucket -> lowest changelog offset known to hold it
        self._known_end = 0  # just past the last changelog offset known (delivered or restored)
        # the open transaction
        self._added: list[int] = []
        self._txn_newest: int | None = None
        self._seq_before: dict[int, int] = {}
        self._expiring: list[int] = []
        self._applied_cutoff: int | None = None

    def __len__(self) -> int:
        return len(self._hi) + len(self._recent)

    @property
    def nbytes(self) -> int:
        """The arrays' bytes plus an estimate for the ids not folded yet (dict slot, int: ~100 B)."""
        arrays = self._hi.nbytes + self._lo.nbytes + self._bk.nbytes + len(self._bloom)
        return int(arrays) + 100 * len(self._recent)

    def buckets(self) -> dict[int, int]:
        """Ids per live bucket."""
        counts: dict[int, int] = {}
        values, n = np.unique(self._bk, return_counts=True)
        for b, k in zip(values.tolist(), n.tolist(), strict=True):
            counts[b] = k
        for b in self._recent.values():
            counts[b] = counts.get(b, 0) + 1
        return counts

    # -- per record -------------------------------------------------------------------------------
    def add(self, event_id: str, ingest_ms: int | None) -> bool:
        """Remember ``event_id`` ingested at ``ingest_ms``; False if it was seen within the horizon.

        A timestamp more than an hour ahead never reaches here: Kafka 4 brokers refuse it
        (``log.message.timestamp.after.max.ms``)."""
        ms = ingest_ms if ingest_ms is not None and ingest_ms > 0 else int(time.time() * 1000)
        b = ms // self.horizon.bucket_ms
        newest = self._txn_newest
        if newest is None or b > newest:
            newest = self._txn_newest = b
        if self.newest is not None and self.newest > newest:
            newest = self.newest
        cutoff = newest - self.horizon.buckets  # as of this record: expiry itself waits for the commit
        k = int.from_bytes(blake2b(event_id.encode(), digest_size=ID_BYTES).digest())  # compact_id, inlined
        seen = self._recent.get(k)
        if seen is None:
            seen = self._folded(k)
        if seen is not None and seen >= cutoff:
            return False
        self._recent[k] = newest if b < cutoff else b
        self._added.append(k)
        return True

    def _folded(self, k: int) -> int | None:
        """The bucket of ``k`` if it is among the folded ids: the Bloom filter answers most new ids in
        pure Python (a numpy search costs ~3 µs a call), the sorted arrays the rest exactly."""
        bloom, mask = self._bloom, self._bloom_mask
        i = k & mask
        if not bloom[i >> 3] & (1 << (i & 7)):
            return None
        i = (k >> 32) & mask
        if not bloom[i >> 3] & (1 << (i & 7)):
            return None
        hi_arr = self._hi
        n = len(hi_arr)
        hi = k >> 64
        i = int(hi_arr.searchsorted(np.uint64(hi)))
        lo = k & _LOW
        while i < n and int(hi_arr[i]) == hi:
            if int(self._lo[i]) == lo:
                return int(self._bk[i])
            i += 1
        return None

    # -- per transaction --------------------------------------------------------------------------
    def changelog(self) -> list[ChangelogRecord]:
        """This transaction's changelog records: the new ids by bucket, migrated legacy ids, and
        tombstones for every key of a bucket the stream time has now passed (and any queued)."""
        newest = self.newest
        if self._txn_newest is not None and (newest is None or self._txn_newest > newest):
            newest = self._txn_newest
        if newest is None:
            return []
        cutoff = self.horizon.cutoff(newest)
        stream_ms = newest * self.horizon.bucket_ms
        out: list[ChangelogRecord] = [(key, None, stream_ms) for key in self._tombstones]
        self._expiring = [b for b in self._records if b < cutoff]
        for b in self._expiring:
            out.extend((bucket_key(b, seq), None, stream_ms) for seq in range(self._records[b]))
        by_bucket: dict[int, list[int]] = {}
        for k in (*self._migrate, *self._added):
            bucket = self._recent.get(k)
            if bucket is None:
                continue
            if bucket < cutoff:  # ingested a horizon before the batch's newest: remembered from now on
                bucket = self._recent[k] = newest
            by_bucket.setdefault(bucket, []).append(k)
        for b, ids in sorted(by_bucket.items()):
            for chunk in range(0, len(ids), IDS_PER_RECORD):
                seq = self._records.get(b, 0)
                self._seq_before.setdefault(b, seq)
                self._records[b] = seq + 1
                value = b"".join(k.to_bytes(ID_BYTES) for k in ids[chunk : chunk + IDS_PER_RECORD])
                out.append((bucket_key(b, seq), value, b * self.horizon.bucket_ms))
        if out:  # last in the transaction, so the partition's tail always holds the latest
            out.append((START_KEY, str(self._restore_start(cutoff)).encode(), stream_ms))
        return out

    def _restore_start(self, cutoff: int) -> int:
        """The changelog offset a restore starts at: the lowest known offset of a live bucket's record.
        Offsets come from delivery reports (``delivered``) after the fact, so a bucket whose records are
        not reported yet counts from the end known so far: earlier than its records, never later."""
        live = [self._first_offset.get(b, self._known_end) for b in self._records if b >= cutoff]
        return min(live, default=self._known_end)

    def delivered(self, err: object, msg: Message) -> None:
        """Delivery report of a changelog record (``on_delivery``): where its bucket's records start."""
        offset = msg.offset()
        if err is not None or offset is None or offset < 0:
            return
        self._known_end = max(self._known_end, offset + 1)
        parsed = parse_key(msg.key())
        if parsed is not None and msg.value() is not None:
            first = self._first_offset.get(parsed[0])
            if first is None or offset < first:
                self._first_offset[parsed[0]] = offset

    def commit(self) -> None:
        """The transaction committed: advance the stream time, drop expired buckets, fold if due."""
        if self._txn_newest is not None and (self.newest is None or self._txn_newest > self.newest):
            self.newest = self._txn_newest
        for b in self._expiring:
            self._records.pop(b, None)
            self._first_offset.pop(b, None)
        self._tombstones.clear()
        self._migrate.clear()
        self._added.clear()
        self._seq_before.clear()
        self._expiring = []
        self._txn_newest = None
        if self.newest is not None:
            self._expire(self.horizon.cutoff(self.newest))
        if len(self._recent) >= max(FOLD_MIN, len(self._hi) // 8):
            self._fold()

    def rollback(self) -> None:
        """The transaction did not happen: forget the ids it added and the changelog keys it used."""
        for k in self._added:
            self._recent.pop(k, None)
        for b, seq in self._seq_before.items():
            if seq:
                self._records[b] = seq
            else:
                self._records.pop(b, None)
        self._added.clear()
        self._seq_before.clear()
        self._expiring = []
        self._txn_newest = None

    # -- memory -----------------------------------------------------------------------------------
    def _expire(self, cutoff: int) -> None:
        if cutoff == self._applied_cutoff:
            return
        self._applied_cutoff = cutoff
        if self._recent and min(self._recent.values()) < cutoff:
            self._recent = {k: b for k, b in self._recent.items() if b >= cutoff}
        if len(self._bk) and int(self._bk.min()) < cutoff:
            keep = self._bk >= cutoff
            self._hi, self._lo, self._bk = self._hi[keep], self._lo[keep], self._bk[keep]
            self._rebuild_bloom()

    def _rebuild_bloom(self) -> None:
        """Two bits an id in 16 bits an id (m a power of two): ~1.4 % of new ids go on to the arrays."""
        n = len(self._lo)
        m = 8
        while m < 16 * n:
            m <<= 1
        bloom = np.zeros(m // 8, np.uint8)
        mask = np.uint64(m - 1)
        for index in (self._lo & mask, (self._lo >> np.uint64(32)) & mask):
            bits = np.left_shift(1, index & np.uint64(7)).astype(np.uint8)
            np.bitwise_or.at(bloom, index >> np.uint64(3), bits)
        self._bloom, self._bloom_mask = bytearray(bloom.tobytes()), m - 1

    def _fold(self) -> None:
        """Merge the recent ids into the sorted arrays (O(n) copy; amortised by the 1/8 threshold)."""
        n = len(self._recent)
        if n == 0:
            return
        hi = np.fromiter((k >> 64 for k in self._recent), np.uint64, n)
        lo = np.fromiter((k & _LOW for k in self._recent), np.uint64, n)
        bk = np.fromiter(self._recent.values(), np.int32, n)
        self._recent = {}
        self._merge(hi, lo, bk)

    def _merge(self, hi: np.ndarray, lo: np.ndarray, bk: np.ndarray) -> None:
        order = np.argsort(hi, kind="stable")
        hi, lo, bk = hi[order], lo[order], bk[order]
        if len(self._hi) == 0:
            self._hi, self._lo, self._bk = hi, lo, bk
        else:
            at = np.searchsorted(self._hi, hi)
            self._hi = np.insert(self._hi, at, hi)
            self._lo = np.insert(self._lo, at, lo)
            self._bk = np.insert(self._bk, at, bk)
        self._rebuild_bloom()

    # -- restore ----------------------------------------------------------------------------------
    @classmethod
    def restored(
        cls,
        horizon: Horizon,
        newest: int,
        live: Iterable[tuple[int, np.ndarray]],
        records: dict[int, int],
        tombstones: list[bytes],
        legacy: list[tuple[int, list[str]]],
        first_offset: dict[int, int] | None = None,
        known_end: int = 0,
    ) -> PartitionDedup:
        """State from a changelog: ``live`` (bucket, digests) records, the next seq of each live bucket,
        keys to tombstone, and legacy ids (bucket, ids) to migrate."""
        state = cls(horizon)
        state.newest = newest
        chunks = [(b, d) for b, d in live if len(d)]
        if chunks:
            all_ids = np.concatenate([d for _, d in chunks])
            bk = np.concatenate([np.full(len(d), b, np.int32) for b, d in chunks])
            state._merge(np.ascontiguousarray(all_ids[:, 0]), np.ascontiguousarray(all_ids[:, 1]), bk)
        state._records = dict(records)
        state._tombstones = list(tombstones)
        state._first_offset = {b: o for b, o in (first_offset or {}).items() if b in records}
        state._known_end = known_end
        for b, ids in legacy:
            for eid in ids:
                k = compact_id(eid)
                if k not in state._recent:
                    state._recent[k] = b
                    state._migrate.append(k)
        return state


@dataclass
class RestoreReport:
    """What a restore read: changelog records and bytes, ids restored, seconds."""

    partitions: int = 0
    records: int = 0
    bytes: int = 0
    ids: int = 0
    seconds: float = 0.0
    skipped_from: dict[tuple[str, int], int] = field(default_factory=dict)  # start offset per log


class ChangelogReader:
    """Rebuilds one partition's state from its changelog records, read in log order (``take``)."""

    def __init__(self, horizon: Horizon) -> None:
        self.horizon = horizon
        self.newest: int | None = None
        self.end = 0  # just past the last offset read
        self.start = 0  # the latest d2-start's value: records before it hold expired buckets only
        self._live: dict[tuple[int, int], tuple[int, np.ndarray]] = {}  # key -> (offset, digests)
        self._dead: dict[tuple[int, int], int] = {}  # tombstoned key -> offset
        self._legacy: list[tuple[int, bytes, int, list[str]]] = []  # offset, key, bucket, ids

    def _saw(self, bucket: int) -> None:
        if self.newest is None or bucket > self.newest:
            self.newest = bucket

    def take(self, key: bytes | None, value: bytes | None, timestamp_ms: int, offset: int) -> None:
        self.end = max(self.end, offset + 1)
        if key == START_KEY:  # its timestamp is the stream time when written
            self._saw(self.horizon.bucket(max(timestamp_ms, 0)))
            self.start = int(value or b"0")  # the latest one counts (records come in log order)
            return
        parsed = parse_key(key)
        if parsed is None:  # a legacy record: its ids belong to the bucket it was written in
            if value is not None:
                bucket = self.horizon.bucket(max(timestamp_ms, 0))
                self._saw(bucket)
                self._legacy.append((offset, key or b"", bucket, legacy_ids(key, value)))
            return
        if value is None:
            self._dead[parsed] = offset
            self._live.pop(parsed, None)
            return
        self._saw(parsed[0])
        self._live[parsed] = (offset, digests(value))

    def state(self, known_end: int | None = None) -> PartitionDedup:
        if self.newest is None:
            return PartitionDedup(self.horizon)
        cutoff = self.horizon.cutoff(self.newest)
        live: list[tuple[int, np.ndarray]] = []
        records: dict[int, int] = {}
        tombstones: list[bytes] = []
        first_offset: dict[int, int] = {}
        start = self.start  # a partition read whole (short, or legacy) holds records before it
        for (bucket, seq), (offset, digest) in self._live.items():
            if offset < start:
                continue
            if bucket < cutoff:  # expired, but its tombstones were never written
                tombstones.append(bucket_key(bucket, seq))
                continue
            live.append((bucket, digest))
            records[bucket] = max(records.get(bucket, 0), seq + 1)
            first_offset[bucket] = min(first_offset.get(bucket, offset), offset)
        for (bucket, seq), offset in self._dead.items():
            if bucket >= cutoff and offset >= start:
                records[bucket] = max(records.get(bucket, 0), seq + 1)
        legacy: list[tuple[int, list[str]]] = []
        for offset, key, bucket, ids in self._legacy:
            if offset < start:
                continue
            tombstones.append(key)
            if bucket >= cutoff:
                legacy.append((bucket, ids))
        end = self.end if known_end is None else max(known_end, self.end)
        return PartitionDedup.restored(
            self.horizon, self.newest, live, records, tombstones, legacy, first_offset, end
        )


def produce_changelog(producer: Producer, topic: str, partition: int, state: PartitionDedup) -> int:
    """Produce ``state``'s changelog records of this transaction; their delivery reports tell the state
    where its buckets' records lie. Returns how many were produced."""
    records = state.changelog()
    for key, value, timestamp in records:
        producer.produce(
            topic, key=key, value=value, partition=partition, timestamp=timestamp, on_delivery=state.delivered
        )
    return len(records)


def _watermarks(
    kafka: KafkaSettings,
    logs: list[tuple[str, int]],
    *,
    deadline_s: float,
    first_s: float = 10.0,
    admin: AdminClient | None = None,
) -> dict[tuple[str, int], int]:
    """High watermarks of ``logs``, asked again for those not answered yet until ``deadline_s``: a
    changelog created just before (a fresh start) answers "not leader" for a few hundred ms, and a
    partition left unknown is read from its beginning, which costs a consumer's start and EOF wait
    (1.5 s measured, ``bench/notes/processor-profile.md``) where asking again costs tens of ms."""
    deadline = time.monotonic() + deadline_s
    ends: dict[tuple[str, int], int] = {}
    missing = logs
    timeout = first_s  # the first ask: by default high_watermarks' own bound
    bound = 2 * first_s if first_s <= REASK_BOUND_S else REASK_BOUND_S
    while missing:
        asked = [TopicPartition(t, p) for t, p in missing]
        ends.update(high_watermarks(kafka, asked, timeout=timeout, admin=admin))
        missing = [tp for tp in missing if tp not in ends]
        left = deadline - time.monotonic()
        if missing and left <= 0:
            break  # no leader for a while: left unknown, read whole (``read_to_end`` waits for it)
        if missing:  # a "not leader" answer comes at once: a pause keeps this from a hot loop of clients
            time.sleep(min(ASK_AGAIN_S, left))
            # asked again within a short bound, doubled each time: a re-ask of a partition just created
            # sometimes hangs 3 s in the admin client (1 of 8 fresh starts) where a new ask answers at once
            timeout, bound = min(bound, deadline - time.monotonic()), 2 * bound
            if timeout <= 0:
                break
    return ends


def await_ends(
    kafka: KafkaSettings,
    logs: list[tuple[str, int]],
    *,
    deadline_s: float = WATERMARK_WAIT_S,
    admin: AdminClient | None = None,
) -> None:
    """Wait until changelog partitions just created answer for their ends (or ``deadline_s`` passes):
    done at start-up beside other work, it spares the restore's asking again. Every ask is bounded
    short from the first (``REASK_BOUND_S``, doubled each time): these partitions are known to be new.
    The ends found are not kept: the restore asks for them itself at assignment."""
    _watermarks(kafka, logs, deadline_s=deadline_s, first_s=REASK_BOUND_S, admin=admin)


def restore(
    kafka: KafkaSettings,
    app_id: str,
    horizon: Horizon,
    partitions: list[TopicPartition],
    *,
    deadline_s: float,
    should_stop: Callable[[], bool] = lambda: False,
    admin: AdminClient | None = None,
) -> tuple[dict[tuple[str, int], PartitionDedup], RestoreReport]:
    """The dedup state of each raw partition in ``partitions``, from the live part of its changelog:
    the latest ``START_KEY`` record near the partition's end says where that part begins (without one,
    a changelog of the legacy format, it is read from its beginning). A stop request raises
    ``StopRequested`` (a partial state would let duplicates through; it is never returned)."""
    started = time.monotonic()
    report = RestoreReport()
    raw_of = {
        (changelog_topic(app_id, tp.topic), tp.partition): (tp.topic, tp.partition) for tp in partitions
    }
    # a changelog partition never written to holds nothing to restore; skipping it spares the restore
    # consumer's start and EOF wait (seconds) on a fresh start
    ends = _watermarks(kafka, list(raw_of), deadline_s=min(WATERMARK_WAIT_S, deadline_s), admin=admin)
    written = {tp: ends.get(tp, 1) for tp in raw_of if ends.get(tp, 1) > 0}
    starts: dict[tuple[str, int], int] = {}
    # where a partition is short, reading it whole costs less than a second consumer's start
    tails = [TopicPartition(t, p, end - TAIL) for (t, p), end in written.items() if end > TAIL]
    if tails:
        for msg in read_to_end(
            kafka, tails, group_id=f"{app_id}.restore", deadline_s=deadline_s, should_stop=should_stop
        ):
            if msg.key() == START_KEY and msg.value():
                topic, partition, _offset = where(msg)
                starts[(topic, partition)] = int(msg.value() or b"0")
    readers = {tp: ChangelogReader(horizon) for tp in raw_of}
    logs = [TopicPartition(t, p, starts.get((t, p), OFFSET_BEGINNING)) for t, p in written]
    report.skipped_from = {(tp.topic, tp.partition): max(tp.offset, 0) for tp in logs}
    if logs:
        for msg in read_to_end(
            kafka, logs, group_id=f"{app_id}.restore", deadline_s=deadline_s, should_stop=should_stop
        ):
            topic, partition, offset = where(msg)
            value = msg.value()
            report.records += 1
            report.bytes += len(value or b"")
            readers[(topic, partition)].take(msg.key(), value, msg.timestamp()[1], offset)
    states: dict[tuple[str, int], PartitionDedup] = {}
    for log_tp, reader in readers.items():
        state = states[raw_of[log_tp]] = reader.state(known_end=written.get(log_tp, 0))
        report.ids += len(state)
    report.partitions = len(logs)
    report.seconds = time.monotonic() - started
    if logs:
        log.info(
            "restored %d event ids of %d partitions from %d changelog records (%d bytes) in %.1f s",
            report.ids,
            report.partitions,
            report.records,
            report.bytes,
            report.seconds,
        )
    return states, report
