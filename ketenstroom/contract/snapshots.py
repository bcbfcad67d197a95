"""The sealed-snapshot contract: object names and manifest models, shared by every reader.

The sink writes these objects; releases, extracts, the site and the CLI read them. Pure: no I/O.
Layout below the store's root (deterministic names; a retry overwrites, it never adds)::

    staging/<period>/part-p<PPP>-o<OFFSET>-<DIGEST>.parquet
                                                       the sink's incremental files; not for readers
    snapshots/<period>/r<N>/data/r<K>-p<PPP>-o<OFFSET>.parquet
                                                       revision N's rows (K: the revision that added them)
    snapshots/<period>/r<N>/manifest.json              written last, create-only: the revision exists
    snapshots/<period>/r<N>/tables/chain.parquet       one row per case pseudonym (linked microdata)
    snapshots/<period>/r<N>/tables/person.parquet      one row per person pseudonym
    snapshots/<period>/r<N>/tables/manifest.json       the tables' own manifest (create-only, last)
    snapshots/<period>/latest.json                     pointer to the newest manifest (a convenience)

A revision is visible only when its manifest exists; its data directory is self-contained (revision N
holds copies of N-1's files plus the rows that arrived since), so ``r<N>/data/*.parquet`` is the whole
period as known at sealing. Statuses follow CBS: r0 ``provisional``, later ones ``revised``, then
``final`` (``sinks/seal.py`` says when).
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

MANIFEST_FORMAT = "ketenstroom.snapshot-manifest/1"
Status = Literal["provisional", "revised", "final"]
#: a staged file's first row (partition, offset) and, since the handover fix, a digest of all its rows'
#: positions (older staging areas have names without it, and are read as before)
STAGED = re.compile(r"/part-p(\d{3})-o(\d{20})(?:-[0-9a-f]{16})?\.parquet$")
DATA = re.compile(r"/r(\d+)-p\d{3}-o\d{20}\.parquet$")
REVISION_DIR = re.compile(r"r\d+")


def staging_name(period: str, partition: int, first_offset: int, rows_digest: str = "") -> str:
    """Where the sink stages a file whose first row is ``partition``/``first_offset``.

    ``rows_digest`` (16 hex digits of a hash over every row's partition and offset) keeps two files with
    the same first row apart: after a partition handover two sink instances, or one instance before and
    after, can stage *different* rows behind one first row, and a name from the first row alone let the
    later file overwrite the earlier one's other rows (lost, their offsets already committed). The same
    rows still get the same name, so a retry after a crash overwrites instead of adding."""
    tag = f"-{rows_digest}" if rows_digest else ""
    return f"staging/{period}/part-p{partition:03d}-o{first_offset:020d}{tag}.parquet"


def rows_digest(partitions: bytes, offsets: bytes) -> str:
    """The staging-name digest of a file's rows: their partitions' and offsets' bytes, in row order."""
    h = hashlib.blake2b(digest_size=8)
    h.update(partitions)
    h.update(offsets)
    return h.hexdigest()


def revision_prefix(period: str, revision: int) -> str:
    return f"snapshots/{period}/r{revision}/"


def manifest_name(period: str, revision: int) -> str:
    return revision_prefix(period, revision) + "manifest.json"


def latest_name(period: str) -> str:
    return f"snapshots/{period}/latest.json"


def data_name(period: str, revision: int, origin: int, partition: int, offset: int) -> str:
    return f"{revision_prefix(period, revision)}data/r{origin}-p{partition:03d}-o{offset:020d}.parquet"


class FileEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str
    sha256: str
    rows: int
    bytes: int


class OffsetRange(BaseModel):
    model_config = ConfigDict(frozen=True)

    first: int
    last: int
    rows: int


class Document(BaseModel):
    """A JSON document written once (create-only) and read back as it was."""

    model_config = ConfigDict(frozen=True)

    def to_bytes(self) -> bytes:
        return (self.model_dump_json(indent=2) + "\n").encode()


class Manifest(Document):
    """What a sealed revision holds; its existence is what makes the revision visible."""

    format: str = MANIFEST_FORMAT
    period: str
    period_start: datetime
    period_end: datetime
    revision: int
    status: Status
    sealed_at: datetime
    grace_days: float
    final_after_days: float
    previous_manifest_sha256: str | None
    files: list[FileEntry]
    rows: int
    rows_new: int
    duplicates_dropped: int
    rows_per_partner: dict[str, int]
    rows_per_event_type: dict[str, dict[str, int]]
    offsets: dict[str, OffsetRange]
    schema_ids: list[int]
    mapping_versions: list[str]
    pseudonym_key_ids: list[str]

    @property
    def prefix(self) -> str:
        return revision_prefix(self.period, self.revision)


TABLES_FORMAT = "ketenstroom.snapshot-tables/1"


def tables_manifest_name(period: str, revision: int) -> str:
    return revision_prefix(period, revision) + "tables/manifest.json"


class IdentityCounts(BaseModel):
    """How persons were linked across SKN and BSN in one revision's tables (``ketenstroom.identity``)."""

    model_config = ConfigDict(frozen=True)

    links: int  # distinct (SKN, BSN) pseudonym pairs in the evidence read
    conflicts: int  # components of the evidence joining two or more SKNs: flagged, not merged
    persons: int  # rows of the person table
    persons_in_conflict: int  # of those, flagged ``identity_conflict``
    persons_merged_by_new_links: int  # of those, resolved otherwise than the previous revision's links
    link_inputs: dict[str, int]  # period -> the sealed revision whose rows gave the evidence


class TablesManifest(Document):
    """The linked chain and person tables derived from one sealed revision."""

    format: str = TABLES_FORMAT
    period: str
    revision: int
    revision_manifest_sha256: str
    built_at: datetime
    events_read: int  # this revision's rows plus the earlier periods' rows read for the cases' history
    files: dict[str, FileEntry]
    identity: IdentityCounts | None = None  # None in tables built before persons were linked


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
