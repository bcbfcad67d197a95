"""Which sealed rows a revision's person links come from: the link state, derived, never stored apart.

Read by the sink's tables (``sinks.tables``) and by releases (``releases.build``), so both resolve the
same persons for a revision.

The evidence that an SKN and a BSN belong to one person is on the curated rows themselves (both
pseudonyms on one row, ``ketenstroom.identity``). So the link state is not a second store to keep in step
with the snapshots: it is a pure function of sealed revisions, and survives restarts because they do.
The tables of revision N of period P read the evidence of

* revision N of P itself, and
* of every other period, the newest revision sealed no later than P's revision N (``sealed_at``),

so a revision's inputs are exactly its own rows plus revisions sealed before it: rebuilding its
tables later (after a crash, or ``snapshot tables``) reads the same rows and gives the same persons,
and a link sealed afterwards changes only the tables of revisions sealed afterwards -- a period's
next revision, or a later period -- never a table already written. Evidence from later periods is
used on purpose: an OM registration in May proves that the BSN-only police record of March belongs
to the suspect with that SKN, so March's next revision links them.

"New links" are counted against the inputs of revision N-1 of P, chosen the same way (its own rows
and the other periods' revisions sealed no later than it). For r0 there was no earlier table: links
count against the processor's own SKN-else-BSN pseudonyms.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa
import pyarrow.parquet as pq

from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.adapters.snapshots import Snapshots
from ketenstroom.contract.snapshots import FileEntry, Manifest
from ketenstroom.identity import EVIDENCE_SCHEMA, Identities, identifiers, link_evidence, merge_evidence

#: What the evidence is read from (older rows have only the processor's person pseudonym and source).
LINK_COLUMNS = ("skn_pseudonym", "bsn_pseudonym", "person_pseudonym", "person_pseudonym_source", "event_time")


@dataclass(frozen=True)
class LinkInputs:
    identities: Identities  # persons resolved over every link the revision's tables use
    before: Identities | None  # the links the previous revision's tables used (None for r0)
    revisions: dict[str, int]  # period -> the revision whose rows were read


@dataclass
class LinkCache:
    """What one sealing run (or ``snapshot tables``) reads once for all the revisions it builds tables
    for: each data file's evidence by sha256 (a sealed file never changes), and the persons resolved
    over each set of input revisions (the revisions sealed in one run share their inputs)."""

    files: dict[str, pa.Table] = field(default_factory=dict)
    persons: dict[tuple[tuple[str, int], ...], Identities] = field(default_factory=dict)
    #: keep each file's evidence for the next revisions; without, it is folded into the running
    #: aggregate and let go (``merge_evidence``), so one large revision never holds every file's pairs
    keep_files: bool = True


def _file_evidence(store: ObjectStore, entry: FileEntry, cache: LinkCache) -> pa.Table:
    found = cache.files.get(entry.sha256)
    if found is None:
        found = _read_evidence(store, entry.path)
        if cache.keep_files:
            cache.files[entry.sha256] = found
    return found


def _read_evidence(store: ObjectStore, path: str) -> pa.Table:
    parquet = pq.ParquetFile(io.BytesIO(store.get(path)))
    names = set(parquet.schema_arrow.names)
    if "bsn_pseudonym" in names:
        # most rows of some partners carry no BSN: skip reading the rest when no row has one
        meta = parquet.metadata
        leaves = [meta.schema.column(i).path for i in range(meta.num_columns)]
        column = leaves.index("bsn_pseudonym")  # a leaf index (nested columns have several leaves)
        groups = [meta.row_group(g) for g in range(meta.num_row_groups)]
        stats = [(g.column(column).statistics, g.num_rows) for g in groups]
        if all(s is not None and s.has_null_count and s.null_count == rows for s, rows in stats):
            return EVIDENCE_SCHEMA.empty_table()
        table = parquet.read(columns=["skn_pseudonym", "bsn_pseudonym", "event_time"], use_threads=False)
    else:  # rows written before both pseudonyms were carried
        table = parquet.read(columns=[c for c in LINK_COLUMNS if c in names], use_threads=False)
    return link_evidence(table)


def _inputs(snapshots: Snapshots, period: str, revision: Manifest, cutoff: datetime) -> list[Manifest]:
    """``revision`` of ``period``, and of every other period the newest revision sealed by ``cutoff``."""
    chosen = [revision]
    for other in snapshots.periods():
        if other != period:
            sealed = [m for m in snapshots.manifests(other) if m.sealed_at <= cutoff]
            chosen += sealed[-1:]
    return sorted(chosen, key=lambda m: m.period)


def _resolve(store: ObjectStore, manifests: list[Manifest], cache: LinkCache) -> Identities:
    key = tuple((m.period, m.revision) for m in manifests)
    found = cache.persons.get(key)
    if found is None:
        evidence = merge_evidence(_file_evidence(store, e, cache) for m in manifests for e in m.files)
        found = cache.persons[key] = Identities.resolve(evidence)
    return found


def link_inputs(store: ObjectStore, manifest: Manifest, cache: LinkCache | None = None) -> LinkInputs:
    """Persons for ``manifest``'s tables, and as its previous revision's tables resolved them."""
    cache = LinkCache(keep_files=False) if cache is None else cache  # one revision: nothing to share
    snapshots = Snapshots(store)
    inputs = _inputs(snapshots, manifest.period, manifest, manifest.sealed_at)
    before = None
    previous = snapshots.manifest(manifest.period, manifest.revision - 1) if manifest.revision else None
    if previous is not None:
        before = _resolve(store, _inputs(snapshots, manifest.period, previous, previous.sealed_at), cache)
    return LinkInputs(_resolve(store, inputs, cache), before, {m.period: m.revision for m in inputs})


def persons(store: ObjectStore, manifest: Manifest) -> tuple[Identities, dict[str, int]]:
    """The persons ``manifest``'s tables resolve (``link_inputs`` without the previous revision's), and
    which revisions gave the evidence: what a release of this revision counts persons by, so its
    figures count the persons of the revision's person table."""
    inputs = _inputs(Snapshots(store), manifest.period, manifest, manifest.sealed_at)
    identities = _resolve(store, inputs, LinkCache(keep_files=False))
    return identities, {m.period: m.revision for m in inputs}


def with_identifiers(table: pa.Table) -> pa.Table:
    """``table`` with ``skn_pseudonym`` and ``bsn_pseudonym`` columns (derived for rows written before)."""
    if "skn_pseudonym" in table.column_names and "bsn_pseudonym" in table.column_names:
        return table
    skn, bsn = identifiers(table)
    kept = table.drop_columns([c for c in ("skn_pseudonym", "bsn_pseudonym") if c in table.column_names])
    return kept.append_column("skn_pseudonym", skn).append_column("bsn_pseudonym", bsn)
