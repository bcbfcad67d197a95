"""The sealer as the commands run it: each revision gets its linked chain and person tables.

A period's chain table needs the history of its cases too (a judgment in July links back to a police
registration in March), so the events handed to ``sinks.microdata`` are this revision's rows plus the
rows of earlier periods' latest revisions that belong to the same cases: events carrying one of the
period's case, report or execution pseudonyms, and police events of reports that earlier OM events
linked to those cases. Only the columns the tables use are read.
"""

from __future__ import annotations

import io
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ketenstroom.adapters.objectstore import ObjectStore
from sinks.microdata import chain_table, person_table
from sinks.parquet import write_table
from sinks.periods import period_bounds
from sinks.snapshot import FileEntry, Sealer, SealPolicy, Snapshots

COLUMNS = [
    "period",
    "event_id",
    "event_time",
    "chain_step",
    "case_pseudonym",
    "report_pseudonym",
    "execution_pseudonym",
    "person_pseudonym",
    "age_at_event",
    "concepts",
]


def _read(store: ObjectStore, paths: Iterable[str], columns: list[str]) -> list[pa.Table]:
    return [pq.read_table(io.BytesIO(store.get(path)), columns=columns) for path in paths]


def _keys(tables: list[pa.Table], column: str) -> pa.Array:
    if not tables:
        return pa.array([], pa.string())
    chunks = [chunk.cast(pa.string()) for t in tables for chunk in t[column].chunks]
    values = pa.chunked_array(chunks, type=pa.string()).combine_chunks()
    return pc.unique(values.filter(pc.is_valid(values)))


def _history(store: ObjectStore, period: str, current: list[pa.Table]) -> list[pa.Table]:
    """Earlier periods' rows of the cases in ``current`` (latest sealed revision of each period)."""
    start, _ = period_bounds(period)
    snapshots = Snapshots(store)
    files: list[str] = []
    for other in snapshots.periods():
        if other == period or period_bounds(other)[1] > start:
            continue
        manifest = snapshots.manifest(other)
        if manifest is not None:
            files += [entry.path for entry in manifest.files]
    if not files:
        return []
    cases = _keys(current, "case_pseudonym")
    reports = _keys(current, "report_pseudonym")
    executions = _keys(current, "execution_pseudonym")
    # reports that earlier OM events linked to this period's cases (their police events come along)
    links = [
        t.filter(pc.is_in(t["case_pseudonym"], value_set=cases))
        for t in _read(store, files, ["case_pseudonym", "report_pseudonym"])
    ]
    reports = pc.unique(pa.concat_arrays([reports, _keys(links, "report_pseudonym")]))
    found = []
    for table in _read(store, files, COLUMNS):
        wanted = pc.or_(
            pc.or_(
                pc.is_in(table["case_pseudonym"], value_set=cases),
                pc.is_in(table["report_pseudonym"], value_set=reports),
            ),
            pc.is_in(table["execution_pseudonym"], value_set=executions),
        )
        found.append(table.filter(pc.fill_null(wanted, False)))
    return found


def microdata_tables(store: ObjectStore, period: str, files: list[FileEntry]) -> dict[str, bytes]:
    """``chain`` and ``person`` Parquet for a revision being sealed (``files``: all its data files)."""
    current = _read(store, (entry.path for entry in files), COLUMNS)
    tables = (
        [t.cast(current[0].schema) for t in [*current, *_history(store, period, current)]] if current else []
    )
    if not tables:
        return {}
    events = pa.concat_tables(tables)
    return {
        "chain": write_table(chain_table(events, period)),
        "person": write_table(person_table(events, period)),
    }


def sealer_for(store: ObjectStore, policy: SealPolicy) -> Sealer:
    return Sealer(store, policy, tables=microdata_tables)
