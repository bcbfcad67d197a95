"""The processor's bounded dedup state: compact ids, buckets, the horizon, tombstones, restore, legacy."""

from __future__ import annotations

import random
import uuid

import pytest
from pydantic import ValidationError

from ketenstroom.settings import ProcessorSettings, TopicSettings
from processors.dedup import (
    FOLD_MIN,
    ID_BYTES,
    START_KEY,
    ChangelogReader,
    ChangelogRecord,
    Horizon,
    PartitionDedup,
    bucket_key,
    compact_id,
    digests,
    parse_key,
)

HOUR = 3_600_000
H = Horizon(bucket_ms=HOUR, buckets=4)  # hourly buckets, a horizon of four hours
T0 = 1_800_000_000_000 // HOUR * HOUR  # a bucket boundary in 2027


def _ids(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)]


def _batch(
    state: PartitionDedup, ids: list[str], at_ms: int, log: _Log | None = None
) -> tuple[list[bool], list[ChangelogRecord]]:
    """One committed transaction: add, take the changelog (into ``log``, delivered), commit."""
    fresh = [state.add(eid, at_ms) for eid in ids]
    records = state.changelog()
    if log is not None:
        log.extend(records, state)
    state.commit()
    return fresh, records


class _Delivered:
    """What a delivery report hands ``PartitionDedup.delivered``."""

    def __init__(self, record: ChangelogRecord, offset: int) -> None:
        self._record, self._offset = record, offset

    def key(self) -> bytes:
        return self._record[0]

    def value(self) -> bytes | None:
        return self._record[1]

    def offset(self) -> int:
        return self._offset


class _Log:
    """A compacted changelog partition in memory: records at offsets, as a restore reads them."""

    def __init__(self) -> None:
        self.records: list[tuple[int, ChangelogRecord]] = []
        self.next = 0

    def extend(self, records: list[ChangelogRecord], state: PartitionDedup | None = None) -> None:
        for record in records:
            self.records.append((self.next, record))
            if state is not None:
                state.delivered(None, _Delivered(record, self.next))  # type: ignore[arg-type]
            self.next += 1
        self.next += 1  # the transaction's commit marker

    def compacted(self) -> dict[bytes, ChangelogRecord]:
        latest: dict[bytes, ChangelogRecord] = {}
        for _offset, record in self.records:
            latest[record[0]] = record
        return {key: r for key, r in latest.items() if r[1] is not None}

    def compact(self) -> _Log:
        """What the log cleaner leaves: each key's latest record at its offset, tombstones gone."""
        latest = {record[0]: offset for offset, record in self.records}
        out = _Log()
        out.records = [(o, r) for o, r in self.records if latest[r[0]] == o and r[1] is not None]
        out.next = self.next
        return out

    def buckets(self) -> set[int]:
        return {parsed[0] for key in self.compacted() if (parsed := parse_key(key)) is not None}

    def restore(self, horizon: Horizon = H) -> tuple[PartitionDedup, int]:
        """The state, and how many records were read: from the latest start record's offset on."""
        starts = [int(r[1] or b"0") for _o, r in self.records if r[0] == START_KEY]
        start = starts[-1] if starts else 0
        reader = ChangelogReader(horizon)
        read = 0
        for offset, (key, value, ts) in self.records:
            if offset >= start:
                reader.take(key, value, ts, offset)
                read += 1
        return reader.state(known_end=self.next), read


def test_compact_ids_are_16_bytes_deterministic_and_distinct() -> None:
    ids = _ids(200_000)
    digests_ = [compact_id(eid) for eid in ids]
    assert all(0 <= d < 1 << (8 * ID_BYTES) for d in digests_)
    assert len(set(digests_)) == len(ids)
    assert compact_id(ids[0]) == compact_id(str(ids[0]))
    assert compact_id("not-a-uuid") != compact_id("not-a-uuid ")  # any text, not only UUIDs
    value = b"".join(d.to_bytes(ID_BYTES) for d in digests_[:3])
    rows = digests(value)
    assert [(int(h) << 64) | int(lo) for h, lo in rows] == digests_[:3]
    with pytest.raises(Exception, match="multiple of 16"):
        digests(value[:-1])


def test_a_repeat_within_the_horizon_is_a_duplicate_also_within_one_batch() -> None:
    state = PartitionDedup(H)
    a, b = _ids(2)
    fresh, records = _batch(state, [a, b, a], T0)
    assert fresh == [True, True, False]
    assert [(k, ts) for k, _v, ts in records] == [(bucket_key(H.bucket(T0), 0), T0), (START_KEY, T0)]
    assert len(records[0][1] or b"") == 2 * ID_BYTES
    fresh, _ = _batch(state, [b], T0 + 4 * HOUR)  # four hours on: still within the horizon
    assert fresh == [False]


def test_an_id_is_remembered_at_least_the_horizon_and_forgotten_after_it() -> None:
    state = PartitionDedup(H)
    old = _ids(1, seed=7)[0]
    _batch(state, [old], T0 + HOUR - 1)  # the last millisecond of its bucket
    for hours in range(1, 5):  # stream time moves on by other ids' ingest times, up to the horizon
        _batch(state, _ids(1, seed=100 + hours), T0 + HOUR - 1 + hours * HOUR)
        assert not state.add(old, T0 + HOUR - 1 + hours * HOUR), f"forgotten after {hours} h"
        state.rollback()
    _batch(state, _ids(1, seed=200), T0 + 7 * HOUR)  # past horizon + two buckets
    assert state.add(old, T0 + 7 * HOUR), "still remembered beyond the horizon"
    assert min(state.buckets()) >= H.bucket(T0 + 7 * HOUR) - H.buckets


def test_stream_time_is_the_ingest_time_not_the_wall_clock() -> None:
    """Re-processing raw records of years ago deduplicates as the first run did."""
    state = PartitionDedup(Horizon.of(ProcessorSettings()))
    long_ago = 1_500_000_000_000  # 2017
    ids = _ids(50)
    _batch(state, ids, long_ago)
    fresh, _ = _batch(state, ids, long_ago + 30 * 86_400_000)
    assert not any(fresh)


def test_expired_buckets_are_tombstoned_key_by_key_once_in_the_transaction_that_passes_them() -> None:
    state, log = PartitionDedup(H), _Log()
    for hour in range(3):  # three buckets of two records each
        for part in range(2):
            _batch(state, _ids(3, seed=hour * 10 + part), T0 + hour * HOUR, log)
    assert len(log.compacted()) == 6 + 1  # and the restore start
    _fresh, records = _batch(state, _ids(1, seed=99), T0 + 5 * HOUR, log)  # cutoff: bucket of T0 + 1 h
    tombstones = [(k, ts) for k, v, ts in records if v is None]
    first = H.bucket(T0)
    assert sorted(tombstones) == [
        (bucket_key(first, 0), T0 + 5 * HOUR),
        (bucket_key(first, 1), T0 + 5 * HOUR),
    ]
    _fresh, records = _batch(state, _ids(1, seed=98), T0 + 5 * HOUR, log)
    assert all(v is not None for _k, v, _ts in records), "tombstoned twice"
    assert log.buckets() == {first + 1, first + 2, first + 5}
    assert len(state) == 6 + 6 + 1 + 1  # buckets 1, 2 and 5


def test_an_aborted_transaction_forgets_its_ids_and_reuses_its_keys() -> None:
    state = PartitionDedup(H)
    a, b = _ids(2)
    _batch(state, [a], T0)
    assert state.add(b, T0)
    aborted = state.changelog()
    state.rollback()
    assert state.add(b, T0), "an aborted id must not count as seen"
    again = state.changelog()
    state.commit()
    assert (
        [k for k, _v, _t in again] == [k for k, _v, _t in aborted] == [bucket_key(H.bucket(T0), 1), START_KEY]
    )


def test_folded_ids_answer_exactly_as_a_set_would() -> None:
    """Past FOLD_MIN ids the state moves into sorted arrays behind a Bloom filter: no id lost, none
    invented (a Bloom false positive must fall through to the exact search)."""
    state = PartitionDedup(Horizon(bucket_ms=HOUR, buckets=10_000))
    ids = _ids(FOLD_MIN * 3, seed=3)
    for start in range(0, len(ids), 5_000):
        fresh, _ = _batch(state, ids[start : start + 5_000], T0 + start)
        assert all(fresh)
    assert len(state._hi) >= FOLD_MIN, "nothing was folded"
    assert not any(state.add(eid, T0) for eid in ids[::7])
    others = _ids(50_000, seed=4)
    assert all(state.add(eid, T0) for eid in others)
    assert len(state) == len(ids) + len(others)
    folded = len(state._hi)
    assert (state.nbytes - 100 * (len(state) - folded)) / folded <= 24  # 20 B an id + Bloom <= 4 B


def test_restore_reads_live_buckets_tombstones_and_resumes_the_keys() -> None:
    state, log = PartitionDedup(H), _Log()
    batches = [(_ids(4, seed=hour), T0 + hour * HOUR) for hour in range(8)]
    for ids, at in batches:
        _batch(state, ids, at, log)
    restored, read = log.restore()
    assert len(restored) == len(state) == 4 * 5  # buckets 3..7 live
    # from the first record of bucket 3 on: five data records, five start records, the tombstones of
    # buckets 0-2; not the first three transactions
    assert read == 5 + 5 + 3 and len(log.records) == 8 + 8 + 3
    assert restored.newest == state.newest
    for ids, at in batches[3:]:
        assert not any(restored.add(eid, at) for eid in ids)
    restored.rollback()
    for ids, at in batches[:2]:
        assert all(restored.add(eid, at) for eid in ids)  # expired ones are not restored
    restored.rollback()
    # the next record of the newest bucket gets the next key
    assert restored.add(_ids(1, seed=77)[0], T0 + 7 * HOUR)
    records = restored.changelog()
    assert [k for k, v, _ts in records if v is not None] == [bucket_key(H.bucket(T0) + 7, 1), START_KEY]
    bucket_3 = next(o for o, r in log.records if r[0] == bucket_key(H.bucket(T0) + 3, 0))
    assert records[-1][1] == str(bucket_3).encode(), "the restore start is not bucket 3's first record"


def test_restore_tombstones_expired_records_whose_tombstones_were_never_written() -> None:
    log, old, new = _Log(), PartitionDedup(H), PartitionDedup(H)
    old_record = _batch(old, _ids(2, seed=1), T0)[1][0]
    new_record = _batch(new, _ids(2, seed=2), T0 + 9 * HOUR)[1][0]
    log.extend([old_record, new_record, (START_KEY, b"0", T0 + 9 * HOUR)])
    restored, _read = log.restore()  # a record of an expired bucket after the start: tombstoned
    assert len(restored) == 2
    first = [(k, v) for k, v, _ts in restored.changelog() if v is None]
    assert first == [(bucket_key(H.bucket(T0), 0), None)]
    restored.commit()
    assert all(v is not None for _k, v, _ts in restored.changelog())


def test_legacy_changelog_records_restore_and_migrate_in_the_next_transaction() -> None:
    """The format before buckets: one record per batch keyed ``<first offset>.<chunk>``, ids one per
    line, and before that the id as key with value ``1``; timestamped when written."""
    ids = _ids(5, seed=5)
    expired = _ids(2, seed=6)
    log = _Log()
    log.extend(
        [
            (b"0.0", "\n".join(expired).encode(), T0),  # written more than the horizon ago
            (b"100.0", "\n".join(ids[:4]).encode(), T0 + 6 * HOUR),
            (ids[4].encode(), b"1", T0 + 7 * HOUR),
        ]
    )
    state, _read = log.restore()
    assert len(state) == 5
    assert not any(state.add(eid, T0 + 7 * HOUR) for eid in ids)
    assert all(state.add(eid, T0 + 7 * HOUR) for eid in expired)
    state.rollback()
    records = state.changelog()
    log.extend(records, state)
    state.commit()
    deleted = {k for k, v, _ts in records if v is None}
    assert deleted == {b"0.0", b"100.0", ids[4].encode()}
    written = {parse_key(k): len(v) // ID_BYTES for k, v, _ts in records if v is not None and k != START_KEY}
    assert written == {(H.bucket(T0) + 6, 0): 4, (H.bucket(T0) + 7, 0): 1}
    compacted = log.compact()
    again, _read = compacted.restore()
    assert len(again) == 5 and not any(again.add(eid, T0 + 7 * HOUR) for eid in ids)
    assert all(k == START_KEY or parse_key(k) is not None for k in compacted.compacted()), "legacy left"


def test_the_default_horizon_covers_the_curated_topics_retention() -> None:
    """A reader of curated.chain-events never meets an event twice within the topic's retention."""
    settings = ProcessorSettings()
    assert settings.dedup_horizon_days >= TopicSettings().curated_retention_days
    horizon = Horizon.of(settings)
    assert horizon.buckets * horizon.bucket_ms >= settings.dedup_horizon_days * 86_400_000
    with pytest.raises(ValidationError, match="must not exceed"):
        ProcessorSettings(dedup_horizon_days=1, dedup_bucket_days=2)


def test_a_batch_that_moves_stream_time_past_the_horizon_lets_old_ids_through_at_once() -> None:
    """Expiry is applied at commit, but membership already answers by the batch's own stream time: a
    re-delivery arriving in the same batch as the records that moved time on is not a duplicate."""
    state = PartitionDedup(H)
    old = _ids(3, seed=11)
    _batch(state, old, T0)
    fresh, records = _batch(state, [*_ids(1, seed=12), *old], T0 + 10 * HOUR)
    assert fresh == [True, True, True, True]
    written = [len(v) // ID_BYTES for k, v, _ts in records if v is not None and k != START_KEY]
    assert written == [4] and len(state) == 4
