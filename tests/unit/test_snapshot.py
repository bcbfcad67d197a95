"""Sealing, revisions, statuses, dedup and verification on a real local directory (no Kafka needed)."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.adapters.snapshots import Snapshots
from ketenstroom.contract.snapshots import (
    STAGED,
    Manifest,
    latest_name,
    manifest_name,
    rows_digest,
    staging_name,
)
from ketenstroom.errors import StorageError
from sinks.dedup import first_occurrences, id_array, keep_first, keep_first_parts
from sinks.parquet import to_parquet
from sinks.seal import Sealer, SealPolicy

PERIOD = "2026MM03"  # March 2026 ends 2026-03-31 22:00 UTC (Amsterdam, summer time from the 29th)
END = datetime(2026, 3, 31, 22, 0, tzinfo=UTC)


def event(n: int, *, partition: int = 0, partner: str = "OM", kind: str = "CaseDecision") -> dict[str, Any]:
    return {
        "period": PERIOD,
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"event-{n}")),
        "source_partner": partner,
        "source_event_type": f"nl.ketenstroom.{partner.lower()}.{kind}",
        "source_system": "GPS",
        "event_time": datetime(2026, 3, 10, 12, tzinfo=UTC),
        "registration_time": datetime(2026, 3, 10, 13, tzinfo=UTC),
        "chain_step": "OM_DECISION",
        "case_pseudonym": f"case-{n % 7}",
        "identity_flags": [],
        "concepts": [],
        "mapping_version": "2026.11.2",
        "pseudonym_key_id": "k1",
        "processed_time": datetime(2026, 3, 10, 14, tzinfo=UTC),
        "kafka_partition": partition,
        "kafka_offset": n,
    }


def stage(store: ObjectStore, numbers: list[int], *, partition: int = 0, schema_id: int = 7) -> str:
    rows = [event(n, partition=partition) for n in numbers]
    key = staging_name(PERIOD, partition, numbers[0])
    store.put(key, to_parquet(rows, [schema_id]))
    return key


def sealer(store: ObjectStore, now: datetime, **policy: timedelta) -> Sealer:
    return Sealer(store, SealPolicy(clock=lambda: now, **policy))


def snapshot_bytes(store: ObjectStore, revision: int) -> dict[str, str]:
    prefix = f"snapshots/{PERIOD}/r{revision}/"
    return {k: hashlib.sha256(store.get(k)).hexdigest() for k in store.list(prefix)}


def event_ids(store: ObjectStore, manifest: Manifest) -> list[str]:
    ids: list[str] = []
    for entry in manifest.files:
        ids += pq.read_table(io.BytesIO(store.get(entry.path)), columns=["event_id"])["event_id"].to_pylist()
    return ids


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    return ObjectStore(f"file://{tmp_path}")


def test_nothing_is_sealed_before_the_end_of_the_period_plus_grace(store: ObjectStore) -> None:
    stage(store, [1, 2, 3])
    grace = timedelta(days=5)
    assert sealer(store, END + grace - timedelta(seconds=1), grace=grace).seal(PERIOD) is None
    assert Snapshots(store).manifests(PERIOD) == []
    manifest = sealer(store, END + grace, grace=grace).seal(PERIOD)
    assert manifest is not None and (manifest.revision, manifest.status, manifest.rows) == (
        0,
        "provisional",
        3,
    )


def test_manifest_lists_files_counts_offsets_and_versions(store: ObjectStore) -> None:
    stage(store, [1, 2, 3], partition=0, schema_id=7)
    stage(store, [10, 11], partition=1, schema_id=9)
    manifest = sealer(store, END + timedelta(days=30)).seal(PERIOD)
    assert manifest is not None
    assert manifest.rows == 5 and manifest.rows_new == 5 and len(manifest.files) == 2
    assert manifest.rows_per_partner == {"OM": 5}
    assert manifest.rows_per_event_type == {"OM": {"nl.ketenstroom.om.CaseDecision": 5}}
    assert {p: (r.first, r.last, r.rows) for p, r in manifest.offsets.items()} == {
        "0": (1, 3, 3),
        "1": (10, 11, 2),
    }
    assert manifest.schema_ids == [7, 9]
    assert (manifest.mapping_versions, manifest.pseudonym_key_ids) == (["2026.11.2"], ["k1"])
    for entry in manifest.files:
        assert hashlib.sha256(store.get(entry.path)).hexdigest() == entry.sha256
    assert list(store.list(f"staging/{PERIOD}/")) == []  # staged files moved into the revision
    pointer = json.loads(store.get(latest_name(PERIOD)))
    assert (pointer["revision"], pointer["status"]) == (0, "provisional")
    assert Snapshots(store).verify(manifest) == []


def test_late_events_make_r1_and_leave_r0_byte_identical(store: ObjectStore) -> None:
    stage(store, [1, 2, 3])
    r0 = sealer(store, END + timedelta(days=30)).seal(PERIOD)
    assert r0 is not None
    before = snapshot_bytes(store, 0)
    stage(store, [4, 5])
    r1 = sealer(store, END + timedelta(days=40)).seal(PERIOD)
    assert r1 is not None
    assert (r1.revision, r1.status, r1.rows, r1.rows_new) == (1, "revised", 5, 2)
    assert snapshot_bytes(store, 0) == before
    assert sorted(event_ids(store, r1)) == sorted(event(n)["event_id"] for n in [1, 2, 3, 4, 5])
    assert r1.previous_manifest_sha256 == hashlib.sha256(store.get(manifest_name(PERIOD, 0))).hexdigest()
    assert json.loads(store.get(latest_name(PERIOD)))["revision"] == 1
    assert Snapshots(store).verify(r0) == [] and Snapshots(store).verify(r1) == []


def test_duplicate_event_ids_never_appear_twice_in_a_revision(store: ObjectStore) -> None:
    stage(store, [1, 2, 3, 2])  # a repeat inside one staged file
    r0 = sealer(store, END + timedelta(days=30)).seal(PERIOD)
    assert r0 is not None and (r0.rows, r0.duplicates_dropped) == (3, 1)
    stage(store, [3, 4], partition=0)  # a re-read after a crash: 3 is in r0 already
    r1 = sealer(store, END + timedelta(days=31)).seal(PERIOD)
    assert r1 is not None and (r1.rows, r1.rows_new, r1.duplicates_dropped) == (4, 1, 1)
    ids = event_ids(store, r1)
    assert len(ids) == len(set(ids)) == 4
    stage(store, [1, 4])  # nothing new at all: no revision, and the staged duplicates are gone
    assert sealer(store, END + timedelta(days=32)).seal(PERIOD) is None
    assert list(store.list(f"staging/{PERIOD}/")) == []


def test_final_after_its_deadline_and_later_rows_are_held_not_dropped(store: ObjectStore) -> None:
    policy = {"grace": timedelta(days=7), "final_after": timedelta(days=90)}
    stage(store, [1, 2])
    assert sealer(store, END + timedelta(days=8), **policy).seal(PERIOD) is not None
    # the final deadline passes with nothing new: a final revision that holds the same rows
    final = sealer(store, END + timedelta(days=91), **policy).seal(PERIOD)
    assert final is not None and (final.revision, final.status, final.rows, final.rows_new) == (
        1,
        "final",
        2,
        0,
    )
    held = stage(store, [3])
    assert sealer(store, END + timedelta(days=100), **policy).seal(PERIOD) is None
    assert list(store.list(f"staging/{PERIOD}/")) == [held]
    assert [m.status for m in Snapshots(store).manifests(PERIOD)] == ["provisional", "final"]


def test_verify_names_a_tampered_a_missing_and_an_extra_file(store: ObjectStore) -> None:
    stage(store, [1, 2, 3])
    stage(store, [7, 8], partition=1)
    manifest = sealer(store, END + timedelta(days=30)).seal(PERIOD)
    assert manifest is not None
    first, second = manifest.files
    data = store.get(first.path)
    store.put(first.path, data[:-10] + b"0123456789")
    store.delete(second.path)
    store.put(f"snapshots/{PERIOD}/r0/data/r0-p009-o00000000000000000001.parquet", data)
    problems = Snapshots(store).verify(manifest)
    assert any(first.path in p and "sha256" in p for p in problems)
    assert any(second.path in p and "missing" in p for p in problems)
    assert any("r0-p009" in p and "not in its manifest" in p for p in problems)


class CrashingStore(ObjectStore):
    """Dies (raises) on the n-th write of a given kind, as a process killed at that moment would stop."""

    def __init__(self, url: str, *, fail_on: str, after: int = 0) -> None:
        super().__init__(url)
        self.fail_on, self.after = fail_on, after

    def _maybe_die(self, what: str) -> None:
        if what == self.fail_on:
            if self.after == 0:
                raise SystemExit(f"killed at {what}")
            self.after -= 1

    def rename(self, source: str, target: str) -> None:
        self._maybe_die("rename")
        super().rename(source, target)

    def put(self, key: str, data: bytes, *, create_only: bool = False) -> None:
        self._maybe_die(
            "manifest"
            if key.endswith("manifest.json")
            else "pointer"
            if key.endswith("latest.json")
            else "put"
        )
        super().put(key, data, create_only=create_only)

    def copy(self, source: str, target: str) -> None:
        self._maybe_die("copy")
        super().copy(source, target)


@pytest.mark.parametrize(
    ("fail_on", "after"),
    [("rename", 0), ("rename", 1), ("put", 0), ("manifest", 0), ("pointer", 0), ("copy", 0)],
)
def test_an_interrupted_seal_is_invisible_and_resumes_to_the_same_rows(
    tmp_path: Path, fail_on: str, after: int
) -> None:
    url = f"file://{tmp_path}"
    plain = ObjectStore(url)
    stage(plain, [1, 2, 3])
    stage(plain, [3, 4], partition=1)  # 3 repeats: the partial file is rewritten (a "put")
    stage(plain, [5, 6], partition=2)
    if fail_on == "copy":  # copying happens for r1: seal r0 first, then stage late rows
        assert sealer(plain, END + timedelta(days=30)).seal(PERIOD) is not None
        stage(plain, [9])
    now = END + timedelta(days=31)
    with pytest.raises(SystemExit):
        Sealer(CrashingStore(url, fail_on=fail_on, after=after), SealPolicy(clock=lambda: now)).seal(PERIOD)
    visible = Snapshots(plain).manifests(PERIOD)
    if fail_on == "pointer":
        assert [m.revision for m in visible] == [0]  # the manifest was written: complete and verifiable
        assert Snapshots(plain).verify(visible[0]) == []
        Sealer(plain, SealPolicy(clock=lambda: now)).repoint()
        assert json.loads(plain.get(latest_name(PERIOD)))["revision"] == 0
        manifest = visible[0]
    else:
        assert [m.revision for m in visible] == ([0] if fail_on == "copy" else [])
        manifest = sealer(plain, now).seal(PERIOD)  # type: ignore[assignment]
        assert manifest is not None
    expected = [1, 2, 3, 4, 5, 6] + ([9] if fail_on == "copy" else [])
    assert sorted(event_ids(plain, manifest)) == sorted(event(n)["event_id"] for n in expected)
    assert Snapshots(plain).verify(manifest) == []


def test_event_ids_are_deduplicated_vectorised_and_exactly() -> None:
    import pyarrow as pa

    ids = [str(uuid.uuid4()) for _ in range(1000)]
    column = pa.array(ids + ids[:10] + [ids[500]])
    keep = first_occurrences(id_array(column))
    assert keep[:1000].all() and not keep[1000:].any()
    upper = id_array(pa.array([ids[0].upper()]))
    assert (upper == id_array(pa.array([ids[0]]))).all()
    with pytest.raises(StorageError, match="UUID"):
        id_array(pa.array(["not-a-uuid"]))
    with pytest.raises(StorageError, match="UUID"):
        id_array(pa.array(["g" * 8 + ids[0][8:]]))


def test_of_repeated_staged_copies_the_lowest_partition_and_offset_is_kept_whatever_the_files(
    store: ObjectStore,
) -> None:
    late = event(1, partition=2)
    late["kafka_offset"] = 500
    early = event(1, partition=0)
    early["kafka_offset"] = 900
    # the staged file with the higher name holds the copy that must win
    store.put(staging_name(PERIOD, 0, 1), to_parquet([late, event(2)]))
    store.put(staging_name(PERIOD, 3, 1), to_parquet([early, event(3)]))
    manifest = sealer(store, END + timedelta(days=30)).seal(PERIOD)
    assert manifest is not None and (manifest.rows, manifest.duplicates_dropped) == (3, 1)
    rows = []
    for entry in manifest.files:
        rows += pq.read_table(io.BytesIO(store.get(entry.path))).to_pylist()
    kept = [r for r in rows if r["event_id"] == early["event_id"]]
    assert [(r["kafka_partition"], r["kafka_offset"]) for r in kept] == [(0, 900)]


def test_keep_first_equals_the_full_sort_even_when_the_first_64_bits_collide() -> None:
    import numpy as np

    rng = np.random.default_rng(5)
    ids = rng.integers(0, 2**63, size=(5000, 2), dtype=np.int64).astype(np.uint64)
    ids[:300, 0] = 42  # same first half, different second half: not duplicates
    ids[4000:4200] = ids[100:300]  # true repeats
    rank = rng.integers(0, 3, size=5000).astype(np.int8)
    positions = rng.permutation(5000).astype(np.int64)
    assert (keep_first(ids, rank, positions) == first_occurrences(ids, rank, positions)).all()
    assert keep_first(ids, rank, positions).sum() == 4800


def _stage_rows(store: ObjectStore, rows: list[dict[str, Any]]) -> str:
    """Stage rows as the sink names them: first row plus the digest of every row's position."""
    parts = np.array([r["kafka_partition"] for r in rows], dtype=np.int32)
    offsets = np.array([r["kafka_offset"] for r in rows], dtype=np.int64)
    key = staging_name(
        PERIOD,
        rows[0]["kafka_partition"],
        rows[0]["kafka_offset"],
        rows_digest(parts.tobytes(), offsets.tobytes()),
    )
    store.put(key, to_parquet(rows, [7]))
    return key


def test_files_of_other_rows_behind_one_first_row_never_overwrite_each_other(store: ObjectStore) -> None:
    # around a handover: instance S staged partition 0 and 1's rows in one file; after partition 1 moved,
    # S re-read partition 0 from its commit and staged a file that starts at the same row. Named by the
    # first row alone, the second overwrote the first and partition 1's rows were lost.
    before = _stage_rows(store, [event(10), event(11), event(105, partition=1), event(106, partition=1)])
    after = _stage_rows(store, [event(10), event(11), event(12)])
    assert before != after and before.split("-o")[1][:20] == after.split("-o")[1][:20]
    assert _stage_rows(store, [event(10), event(11), event(12)]) == after  # the same rows: the same name
    r0 = sealer(store, END + timedelta(days=30)).seal(PERIOD)
    assert r0 is not None and (r0.rows, r0.duplicates_dropped) == (5, 2)
    assert sorted(event_ids(store, r0)) == sorted(event(n)["event_id"] for n in (10, 11, 12, 105, 106))


def test_staged_names_without_a_digest_are_still_read() -> None:
    old, new = staging_name(PERIOD, 2, 40), staging_name(PERIOD, 2, 40, "0123456789abcdef")
    assert [STAGED.search(k).groups()[:2] for k in (old, new)] == [("002", "0" * 18 + "40")] * 2  # type: ignore[union-attr]


def test_keep_first_over_parts_equals_keep_first_over_their_concatenation() -> None:
    import itertools

    import numpy as np

    rng = np.random.default_rng(6)
    ids = rng.integers(0, 2**63, size=(6000, 2), dtype=np.int64).astype(np.uint64)
    ids[:300, 0] = 42  # same first half, different second half: not duplicates
    ids[4000:4200] = ids[100:300]  # repeats across parts
    ids[5500:5600] = ids[5000:5100]  # repeats within a part
    positions = rng.permutation(6000).astype(np.int64)
    cuts = [0, 0, 1000, 2500, 4100, 6000]  # an empty part, and parts of every size
    part_rank = [0, 0, 1, 2, 2]
    spans = list(itertools.pairwise(cuts))
    rank = np.concatenate([np.full(b - a, r, np.int8) for (a, b), r in zip(spans, part_rank, strict=True)])
    parts = [ids[a:b] for a, b in spans]
    spots = [positions[a:b] for a, b in spans]
    whole = keep_first(ids, rank, positions)
    assert (keep_first_parts(parts, part_rank, spots) == whole).all()
    assert whole.sum() == 5700
    assert keep_first_parts([ids[:1]], [0], [positions[:1]]).tolist() == [True]


def test_sequential_ids_whose_first_halves_agree_are_not_all_resolved_by_the_full_sort() -> None:
    """Ids that differ only in their second half (sequential UUIDs, the sink bench's) must not make every
    row a candidate: the full sort is then skipped, and the answer is still the full sort's."""
    import numpy as np

    from sinks import dedup

    ids = np.zeros((20_000, 2), dtype=np.uint64)
    ids[:, 0] = 1 << 12
    ids[:, 1] = np.arange(20_000, dtype=np.uint64) * np.uint64(2_654_435_761)
    ids[15_000:15_010] = ids[:10]  # ten true repeats
    rank = np.zeros(20_000, dtype=np.int8)
    positions = np.arange(20_000, dtype=np.int64)
    resolved: list[int] = []
    original = dedup.first_occurrences

    def counting(found: np.ndarray, *order: np.ndarray) -> np.ndarray:
        resolved.append(len(found))
        return original(found, *order)

    dedup.first_occurrences = counting  # type: ignore[assignment]
    try:
        keep = keep_first(ids, rank, positions)
        parts = keep_first_parts([ids[:9_000], ids[9_000:]], [0, 0], [positions[:9_000], positions[9_000:]])
    finally:
        dedup.first_occurrences = original  # type: ignore[assignment]
    assert (keep == original(ids, rank, positions)).all() and (parts == keep).all()
    assert keep.sum() == 19_990 and resolved == [20, 20]
