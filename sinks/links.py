"""Which sealed rows a revision's person links come from: the link state, derived, never stored apart.

The evidence that an SKN and a BSN belong to one person is on the curated rows themselves (both
pseudonyms on one row, ``sinks.identity``). So the link state is not a second store to keep in step
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

"New links" are counted against the inputs of revision N-1 of P: the rows of P that revision held
(origin revision below N, see ``ketenstroom.contract.snapshots.DATA``) and the other periods' rows
in revisions sealed no later than N-1. For r0 there was no earlier table: every link counts as new.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
import pyarrow.parquet as pq

from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.adapters.snapshots import Snapshots
from ketenstroom.contract.snapshots import DATA, FileEntry, Manifest
from sinks.identity import EVIDENCE_SCHEMA, identifiers, link_evidence, merge_evidence

#: What the evidence is read from (older rows have only the processor's person pseudonym and source).
LINK_COLUMNS = ("skn_pseudonym", "bsn_pseudonym", "person_pseudonym", "person_pseudonym_source", "event_time")


@dataclass(frozen=True)
class LinkInputs:
    evidence: pa.Table  # every link the revision's tables use
    before: pa.Table  # the links the previous revision's tables used (empty for r0)
    revisions: dict[str, int]  # period -> the revision whose rows were read


def _origin(path: str) -> int:
    found = DATA.search(path)
    return int(found.group(1)) if found else 0


def _file_evidence(store: ObjectStore, entry: FileEntry, cache: dict[str, pa.Table]) -> pa.Table:
    """One data file's evidence; a sealed file never changes and its sha256 names its content, so it is
    read once per ``cache`` (a sealing run) however many revisions list it."""
    found = cache.get(entry.sha256)
    if found is None:
        found = cache[entry.sha256] = _read_evidence(store, entry.path)
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
        table = parquet.read(columns=["skn_pseudonym", "bsn_pseudonym", "event_time"])
    else:  # rows written before both pseudonyms were carried
        table = parquet.read(columns=[c for c in LINK_COLUMNS if c in names])
    return link_evidence(table)


def link_inputs(
    store: ObjectStore, manifest: Manifest, cache: dict[str, pa.Table] | None = None
) -> LinkInputs:
    """The evidence for ``manifest``'s tables, and the evidence its previous revision's tables had.

    ``cache`` (file sha256 -> evidence) carries what was read over several revisions' tables."""
    cache = {} if cache is None else cache
    snapshots = Snapshots(store)
    previous = snapshots.manifest(manifest.period, manifest.revision - 1) if manifest.revision else None
    now: list[pa.Table] = []
    before: list[pa.Table] = []
    revisions: dict[str, int] = {}
    for period in snapshots.periods():
        if period == manifest.period:
            chosen: Manifest | None = manifest
            sealed_at: dict[int, datetime] = {}
        else:
            sealed = [m for m in snapshots.manifests(period) if m.sealed_at <= manifest.sealed_at]
            chosen = sealed[-1] if sealed else None
            sealed_at = {m.revision: m.sealed_at for m in sealed}
        if chosen is None:
            continue
        revisions[period] = chosen.revision
        for entry in chosen.files:
            evidence = _file_evidence(store, entry, cache)
            now.append(evidence)
            origin = _origin(entry.path)
            if previous is None:
                continue
            if period == manifest.period:
                known = origin < manifest.revision
            else:
                known = sealed_at[origin] <= previous.sealed_at if origin in sealed_at else False
            if known:
                before.append(evidence)
    return LinkInputs(merge_evidence(now), merge_evidence(before), revisions)


def with_identifiers(table: pa.Table) -> pa.Table:
    """``table`` with ``skn_pseudonym`` and ``bsn_pseudonym`` columns (derived for rows written before)."""
    if "skn_pseudonym" in table.column_names and "bsn_pseudonym" in table.column_names:
        return table
    skn, bsn = identifiers(table)
    kept = table.drop_columns([c for c in ("skn_pseudonym", "bsn_pseudonym") if c in table.column_names])
    return kept.append_column("skn_pseudonym", skn).append_column("bsn_pseudonym", bsn)
