"""Read what an extract is made from: sealed revisions' chain and person tables and event rows.

Only sealed revisions are read (their manifest exists), through the snapshot contract
(``ketenstroom.contract.snapshots``) and its read side; never staging. Each period's latest revision is
used unless the request pins one. Every file read is checked against the sha256 in its manifest before
use, so the revisions named in the extract's manifest are exactly the bytes the extract was made from.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from extracts.events import Reducer, columns_for
from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.adapters.snapshots import Snapshots
from ketenstroom.contract.snapshots import FileEntry, manifest_name, sha256, tables_manifest_name
from ketenstroom.errors import ExtractError

#: Event columns read for the per-case attributes (plus the ones the request needs).
EVENT_BASE = (
    "case_pseudonym",
    "report_pseudonym",
    "execution_pseudonym",
    "person_pseudonym",
    "event_time",
    "chain_step",
)


class RevisionUsed(BaseModel):
    model_config = ConfigDict(frozen=True)

    period: str
    revision: int
    status: str
    manifest_sha256: str
    tables_manifest_sha256: str


@dataclass(frozen=True)
class Sources:
    chain: pa.Table
    person: pa.Table
    case_events: pa.Table  # per-case partials from each data file (``extracts/events.py``)
    event_pseudonyms: pa.Table  # column ``v``: report and execution pseudonyms of the events read
    used: list[RevisionUsed]


def _read(store: ObjectStore, entry: FileEntry, columns: list[str] | None = None) -> pa.Table:
    data = store.get(entry.path)
    if sha256(data) != entry.sha256:
        raise ExtractError(
            f"{store.url}/{entry.path} differs from its manifest (sha256); run `ketenstroom snapshot verify`"
        )
    return pq.read_table(io.BytesIO(data), columns=columns)


def _plain(table: pa.Table) -> pa.Table:
    """Dictionary-encoded columns as plain values, so tables of several files concatenate."""
    return pa.table(
        {
            name: col.cast(col.type.value_type) if pa.types.is_dictionary(col.type) else col
            for name, col in zip(table.column_names, table.columns, strict=True)
        }
    )


def read_sources(
    store: ObjectStore, periods: list[str], pinned: dict[str, int], reducer: Reducer | None
) -> Sources:
    """The chain and person tables of each period's revision, and its events reduced file by file."""
    snapshots = Snapshots(store)
    chains: list[pa.Table] = []
    persons: list[pa.Table] = []
    partials: list[pa.Table] = []
    pseudonyms: list[pa.Table] = []
    used: list[RevisionUsed] = []
    wanted = columns_for(reducer.names) if reducer is not None else []
    for period in periods:
        manifest = snapshots.manifest(period, pinned.get(period))
        if manifest is None:
            which = f" r{pinned[period]}" if period in pinned else ""
            raise ExtractError(f"no sealed revision{which} of {period} in {store.url}")
        tables = snapshots.tables(manifest)
        if tables is None:
            raise ExtractError(
                f"{period} r{manifest.revision} has no chain and person tables yet; "
                "run `ketenstroom snapshot tables` first"
            )
        body = store.get(manifest_name(period, manifest.revision))
        if tables.revision_manifest_sha256 != sha256(body):
            raise ExtractError(f"{period} r{manifest.revision}: its tables were built from another manifest")
        chains.append(_plain(_read(store, tables.files["chain"])))
        persons.append(_plain(_read(store, tables.files["person"])))
        if reducer is not None:  # one data file's events at a time
            for entry in manifest.files:
                partial, seen = reducer(_plain(_read(store, entry, wanted)))
                partials.append(partial)
                pseudonyms.append(seen)
        used.append(
            RevisionUsed(
                period=period,
                revision=manifest.revision,
                status=manifest.status,
                manifest_sha256=sha256(body),
                tables_manifest_sha256=sha256(store.get(tables_manifest_name(period, manifest.revision))),
            )
        )
    return Sources(
        chain=pa.concat_tables(chains, promote_options="permissive"),
        person=pa.concat_tables(persons, promote_options="permissive"),
        case_events=pa.concat_tables(partials)
        if partials
        else pa.table({"case_pseudonym": pa.array([], pa.string())}),
        event_pseudonyms=pa.concat_tables(pseudonyms)
        if pseudonyms
        else pa.table({"v": pa.array([], pa.string())}),
        used=used,
    )
