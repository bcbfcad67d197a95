"""Sealing: when a period is sealed, and how a revision comes to exist (the commit order).

Object names and manifests are ``ketenstroom.contract.snapshots``; the read side is
``ketenstroom.adapters.snapshots``. Sealing revision N (``Sealer.seal``), in this order:
1. collect the rows: revision N-1's, files already in ``r<N>/data`` from an interrupted attempt, and
   the staged files; keep each event id once: a sealed row before an interrupted attempt's before a
   staged one, and among staged copies the one at the lowest (partition, offset);
2. move a staged file that keeps all its rows into ``r<N>/data`` unchanged; write the kept rows of any
   other under the name of its first kept offset, then delete the staged file (a name that can only ever
   hold those rows, so a resumed seal rewrites the same bytes);
3. copy revision N-1's data files into ``r<N>/data`` (earlier revisions are never touched);
4. write ``manifest.json`` create-only, listing every file with its sha256 and row count, rows per
   partner and event type, offsets covered per partition, schema ids, mapping and key versions;
5. point ``latest.json`` at it.

A crash anywhere before 4 leaves no visible revision and the next seal resumes; a crash after 4 leaves a
complete one. The chain and person tables are derived from a sealed revision afterwards
(``sinks/tables.py``), with a manifest of their own that names the revision's manifest by sha256: a
revision is complete without them, and they can always be rebuilt from it.

Statuses follow CBS: r0 ``provisional``, later ones ``revised``; the first revision sealed on or after
``period end + final_after`` is ``final``, and nothing is added to a period after that (rows arriving
later stay in ``staging/`` and are reported as held, never dropped).

One sealer per store: run the sink's sealing in one instance (``--seal``, the default) and start extra
instances of the same group with ``--no-seal``.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ketenstroom.adapters.objectstore import ObjectExistsError, ObjectStore
from ketenstroom.adapters.snapshots import Snapshots
from ketenstroom.calendar import period_bounds
from ketenstroom.contract.snapshots import (
    DATA,
    STAGED,
    FileEntry,
    Manifest,
    OffsetRange,
    Status,
    data_name,
    latest_name,
    manifest_name,
    revision_prefix,
    sha256,
)
from ketenstroom.crashpoints import crash_point
from ketenstroom.settings import SnapshotSettings
from sinks.dedup import keep_first_parts
from sinks.stats import FileRead, Stats, read_file, write_counted

log = logging.getLogger("ketenstroom.snapshot")


@dataclass(frozen=True)
class SealPolicy:
    """When a period is sealed (end + grace) and when it becomes final (end + final_after)."""

    grace: timedelta = timedelta(days=14)
    final_after: timedelta = timedelta(days=365)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    @classmethod
    def from_settings(cls, settings: SnapshotSettings, now: datetime | None = None) -> SealPolicy:
        clock: Callable[[], datetime] = (lambda: now) if now is not None else (lambda: datetime.now(UTC))
        return cls(
            grace=timedelta(days=settings.grace_days),
            final_after=timedelta(days=settings.final_after_days),
            clock=clock,
        )


class Sealer:
    """Seals periods whose end plus grace has passed (module docstring: the order and why)."""

    def __init__(
        self,
        store: ObjectStore,
        policy: SealPolicy | None = None,
    ) -> None:
        self.store = store
        self.policy = policy or SealPolicy()
        self.snapshots = Snapshots(store)

    def status_due(self, period: str, latest: Manifest | None, now: datetime) -> Status | None:
        """The status a new revision would get now, or None when the period cannot be sealed yet."""
        _, end = period_bounds(period)
        if now < end + self.policy.grace or (latest is not None and latest.status == "final"):
            return None
        if now >= end + self.policy.final_after:
            return "final"
        return "provisional" if latest is None else "revised"

    def seal_due(self) -> list[Manifest]:
        """Seal every period that is due and has something new (or has just become final).

        One moment for the whole run: every revision sealed together gets the same ``sealed_at``, so each
        one's tables read the person links of all the others (``ketenstroom.adapters.links``)."""
        now = self.policy.clock()
        sealed = []
        for period in self.snapshots.periods():
            manifest = self.seal(period, now)
            if manifest is not None:
                sealed.append(manifest)
        return sealed

    def seal(self, period: str, now: datetime | None = None) -> Manifest | None:
        now = now or self.policy.clock()
        latest = self.snapshots.manifest(period)
        status = self.status_due(period, latest, now)
        if status is None:
            return None
        revision = 0 if latest is None else latest.revision + 1
        prefix = revision_prefix(period, revision)
        # 1. rows of an interrupted attempt (deduplicated then), staged files, and what is already sealed;
        # with nothing new and no change of status there is nothing to read (the common case)
        resumed_keys = [
            key
            for key in self.store.list(prefix + "data/")
            if (m := DATA.search(key)) and int(m[1]) == revision
        ]
        staged_keys = self.snapshots.staged(period)
        if not resumed_keys and not staged_keys and not (status == "final" and latest is not None):
            return None
        earlier = [] if latest is None else [read_file(e.path, self.store.get(e.path)) for e in latest.files]
        resumed = [read_file(key, self.store.get(key)) for key in resumed_keys]
        staged = [read_file(key, self.store.get(key)) for key in staged_keys]
        segments = [*earlier, *resumed, *staged]
        # keep each event id once: sealed rows first, then an interrupted attempt's, then the staged copy
        # at the lowest (partition, offset), so any chunking of the staged files keeps the same rows
        counts = [len(r.ids) for r in segments]
        ranks = [k for k, group in enumerate((earlier, resumed, staged)) for _ in group]
        first = keep_first_parts([r.ids for r in segments], ranks, [r.positions for r in segments])
        for r in segments:  # the files' ids and positions are done with
            r.ids = r.positions = np.empty(0)
        pa.default_memory_pool().release_unused()
        stats = Stats()
        entries: list[FileEntry] = []
        for r in resumed:
            stats.merge(r.stats)
            entries.append(r.entry)
        # 2. staged files into the revision: moved whole, or their first occurrences rewritten
        position = sum(counts[: len(earlier) + len(resumed)])
        sizes = counts[len(earlier) + len(resumed) :]
        dropped = self._take_staged(period, revision, staged, sizes, first[position:], stats, entries)
        rows_new = sum(e.rows for e in entries)
        if rows_new == 0 and not (status == "final" and latest is not None):
            if dropped:
                log.info("period %s: %d staged rows were all duplicates; no new revision", period, dropped)
            return None
        # 3. the previous revision's files, copied (the previous revision itself is never touched)
        for r in earlier:
            target = prefix + "data/" + r.entry.path.rsplit("/", 1)[-1]
            if not self.store.exists(target):
                self.store.copy(r.entry.path, target)
            stats.merge(r.stats)
            entries.append(r.entry.model_copy(update={"path": target}))
        entries.sort(key=lambda e: e.path)
        # 4. the manifest, create-only: from here on the revision exists
        crash_point("seal.before-manifest")
        return self._publish(period, revision, status, now, latest, entries, stats, rows_new, dropped)

    def _take_staged(
        self,
        period: str,
        revision: int,
        staged: list[FileRead],
        sizes: list[int],
        first: np.ndarray,
        stats: Stats,
        entries: list[FileEntry],
    ) -> int:
        """Move or rewrite each staged file into revision ``revision``; returns the duplicates dropped."""
        position = dropped = 0
        for r, size in zip(staged, sizes, strict=True):
            keep = first[position : position + size]
            position += size
            dropped += int(len(keep) - keep.sum())
            key = r.entry.path
            if keep.all():
                # listed under staging/ by this very pattern, so it matches
                partition, offset = (int(g) for g in STAGED.search(key).groups()[:2])  # type: ignore[union-attr]
                target = data_name(period, revision, revision, partition, offset)
                self.store.rename(key, target)
                crash_point("seal.moved")
                stats.merge(r.stats)
                entries.append(r.entry.model_copy(update={"path": target}))
                continue
            if keep.any():
                table = pq.read_table(io.BytesIO(self.store.get(key))).filter(pa.array(keep))
                partition, offset = table["kafka_partition"][0].as_py(), table["kafka_offset"][0].as_py()
                target = data_name(period, revision, revision, partition, offset)
                data, counted = write_counted(table, r.schema_ids)
                self.store.put(target, data)
                # the entry and counts of the bytes just written, without parsing them back
                stats.merge(counted)
                entries.append(
                    FileEntry(path=target, sha256=sha256(data), rows=table.num_rows, bytes=len(data))
                )
            self.store.delete(key)
            crash_point("seal.moved")
        return dropped

    def _publish(
        self,
        period: str,
        revision: int,
        status: Status,
        now: datetime,
        latest: Manifest | None,
        entries: list[FileEntry],
        stats: Stats,
        rows_new: int,
        dropped: int,
    ) -> Manifest:
        start, end = period_bounds(period)
        manifest = Manifest(
            period=period,
            period_start=start,
            period_end=end,
            revision=revision,
            status=status,
            sealed_at=now,
            grace_days=self.policy.grace / timedelta(days=1),
            final_after_days=self.policy.final_after / timedelta(days=1),
            previous_manifest_sha256=(
                None if latest is None else sha256(self.store.get(manifest_name(period, latest.revision)))
            ),
            files=entries,
            rows=sum(e.rows for e in entries),
            rows_new=rows_new,
            duplicates_dropped=dropped,
            rows_per_partner=dict(sorted(stats.per_partner.items())),
            rows_per_event_type={p: dict(sorted(c.items())) for p, c in sorted(stats.per_type.items())},
            offsets={
                str(p): OffsetRange(first=r[0], last=r[1], rows=r[2])
                for p, r in sorted(stats.offsets.items())
            },
            schema_ids=sorted(stats.schema_ids),
            mapping_versions=sorted(stats.mapping_versions),
            pseudonym_key_ids=sorted(stats.key_ids),
        )
        body = manifest.to_bytes()
        try:
            self.store.put(manifest_name(period, revision), body, create_only=True)
        except ObjectExistsError:
            log.warning("period %s r%d was sealed by another sealer; keeping its manifest", period, revision)
            return self.snapshots.manifest(period, revision) or manifest
        crash_point("seal.after-manifest")
        # 5. the pointer (overwritten; the manifests stay the truth if a crash leaves it behind)
        self._point(period, revision, status, body)
        log.info(
            "sealed %s r%d (%s): %d rows, %d new, %d duplicates dropped",
            period,
            revision,
            status,
            manifest.rows,
            rows_new,
            dropped,
        )
        return manifest

    def _point(self, period: str, revision: int, status: Status, body: bytes) -> None:
        pointer = {
            "period": period,
            "revision": revision,
            "status": status,
            "manifest": manifest_name(period, revision),
            "manifest_sha256": sha256(body),
        }
        self.store.put(latest_name(period), json.dumps(pointer, indent=2).encode())

    def repoint(self) -> None:
        """Make every ``latest.json`` name the newest manifest (after a crash between steps 4 and 5)."""
        for period in self.snapshots.periods():
            latest = self.snapshots.manifest(period)
            if latest is None:
                continue
            key = latest_name(period)
            current = json.loads(self.store.get(key)) if self.store.exists(key) else {}
            if current.get("revision") != latest.revision:
                self._point(
                    period,
                    latest.revision,
                    latest.status,
                    self.store.get(manifest_name(period, latest.revision)),
                )
