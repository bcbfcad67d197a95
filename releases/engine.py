"""Compute declared tables from a sealed revision with DuckDB, and protect them (``releases.sdc``).

The revision's Parquet (and the earlier periods' latest revisions, for history such as the crime a
suspect registration belongs to or a detention that started months ago) is read once through the
object store into Arrow and registered in an in-memory DuckDB. Each measure of each table is one
``GROUP BY GROUPING SETS`` query: distinct units per cell, the cell's record-key sum (the record keys
are HMACs computed in SQL with the cell-key secret held only in DuckDB variables), and the statistic.
The protection rules then run vectorised over the cells; there is no Python loop over data rows.
"""

from __future__ import annotations

import hashlib
import io
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.calendar import period_bounds
from ketenstroom.contract.releases import ORDINARY, SUPPRESSED
from ketenstroom.contract.snapshots import Manifest, TablesManifest
from ketenstroom.errors import DisclosureError, StorageError
from ketenstroom.identity import Identities
from releases import sdc
from releases.spec import Measure, TableSpec

EVENT_COLUMNS = [
    "period",
    "event_id",
    "chain_step",
    "event_time",
    "case_pseudonym",
    "report_pseudonym",
    "execution_pseudonym",
    "person_pseudonym",
    "age_at_event",
    "sex",
    "municipality_code",
    "crime_municipality_code",
    "concepts",
]


#: Read besides, to resolve each event's person across SKN and BSN (``ketenstroom.identity``).
IDENTITY_COLUMNS = ["skn_pseudonym", "bsn_pseudonym", "person_pseudonym_source"]


def _read(store: ObjectStore, paths: Iterable[str], columns: Sequence[str] | None) -> list[pa.Table]:
    """Each file's ``columns`` that it has (rows written before a column existed lack it)."""
    tables = []
    for path in paths:
        parquet = pq.ParquetFile(io.BytesIO(store.get(path)))
        names = set(parquet.schema_arrow.names)
        tables.append(parquet.read(columns=[c for c in columns if c in names] if columns else None))
    return tables


def load_events(
    store: ObjectStore, manifests: Sequence[Manifest], identities: Identities | None = None
) -> pa.Table:
    """Every row of the given revisions, with the columns the tables use (categories as strings).

    With ``identities`` (``ketenstroom.adapters.links.persons`` of the revision), ``person_pseudonym``
    is the resolved person, as in the revision's person table: a person known by SKN in one event and by
    BSN alone in another counts once. Without, it is the processor's SKN-else-BSN pseudonym."""
    columns = EVENT_COLUMNS + (IDENTITY_COLUMNS if identities is not None else [])
    parts = _read(store, [f.path for m in manifests for f in m.files], columns)
    plain = []
    for t in parts:
        cols = [c.cast(pa.string()) if pa.types.is_dictionary(c.type) else c for c in t.columns]
        table = pa.table(cols, names=t.column_names)
        if identities is not None:
            table = identities.resolved(table)
            table = table.select([c for c in EVENT_COLUMNS if c in table.column_names])
        plain.append(table)
    if not plain:
        raise StorageError("no sealed rows to read")
    return pa.concat_tables(plain, promote_options="permissive")


def load_chain(store: ObjectStore, tables: TablesManifest | None) -> pa.Table | None:
    if tables is None or "chain" not in tables.files:
        return None
    return _read(store, [tables.files["chain"].path], None)[0]


def source_name(spec: TableSpec) -> str:
    """The relation a table's measures read: its ``from_sql`` materialised once, or the plain view."""
    if spec.from_sql:
        return f"src_{spec.id}"
    return "events" if spec.source == "events" else "chain"


def kept_sql(spec: TableSpec, m: Measure) -> str:
    """The rows a measure counts or summarises: one per (unit, dimension codes), ``unit`` and ``val``."""
    dims = [spec.dimension(d) for d in m.dimensions]
    # a multiple dimension with no code for a row puts the row under 'ONB', so it still counts in totals
    unnested = ", ".join(
        (
            f"unnest(CASE WHEN len(coalesce({d.expr}, [])) = 0 THEN ['ONB'] ELSE {d.expr} END)"
            if d.multiple
            else d.expr
        )
        + f' AS "{d.id}"'
        for d in dims
    )
    only = " AND ".join(
        f""""{d}" IN ({", ".join("'" + c + "'" for c in codes)})""" for d, codes in m.only.items()
    )
    dim_columns = "".join(f', "{d.id}"' for d in dims)
    # the SQL is built from the table specifications in the repository (reviewed like code), never from input
    return f"""
        WITH base0 AS (SELECT *{", " + unnested if unnested else ""} FROM {source_name(spec)}),
        base AS (
            SELECT ({m.unit_key})::VARCHAR AS unit, ({m.value or "NULL"})::DOUBLE AS val{dim_columns}
            FROM base0 WHERE ({m.where}) {("AND " + only) if only else ""}
        )
        SELECT * FROM base WHERE unit IS NOT NULL {"AND val IS NOT NULL" if m.value else ""}
    """  # noqa: S608


def aggregate_sql(spec: TableSpec, m: Measure, rows: str, *, keyed: bool) -> str:
    """A row per cell (every grouping set) with ``units``, ``key_sum`` and ``raw``, from ``rows`` (the
    kept rows; with ``keyed``, joined to their ``uid``: the unit's record key, unique per unit)."""
    dims = [spec.dimension(d) for d in m.dimensions]
    unit = "uid" if keyed else "unit"
    stat = {
        "count": f"count(DISTINCT {unit})::DOUBLE",
        "median": "quantile_cont(val, 0.5)",
        "p80": "quantile_cont(val, 0.8)",
        "share_within": f"100.0 * avg(CASE WHEN val <= {m.norm} THEN 1 ELSE 0 END)",
    }[m.kind]
    with_total = [f'"{d.id}"' for d in dims if d.total_code is not None]
    fixed = [f'"{d.id}"' for d in dims if d.total_code is None]
    sets = []
    for k in range(len(with_total) + 1):
        for combo in itertools.combinations(with_total, k):
            sets.append("(" + ", ".join([*fixed, *combo]) + ")")
    grouping = ", ".join(f'GROUPING("{d.id}") AS "g_{d.id}"' for d in dims)
    select_dims = "".join(f'"{d.id}", ' for d in dims)
    key_sum = f"(sum(DISTINCT uid) % {sdc.KEY_MOD})::BIGINT" if keyed else "0::BIGINT"
    return f"""
        SELECT {select_dims}{grouping + ", " if grouping else ""}
               count(DISTINCT {unit}) AS units, {key_sum} AS key_sum, {stat} AS raw
        FROM {rows}
        GROUP BY {"GROUPING SETS (" + ", ".join(sets) + ")" if dims else "()"}
    """  # noqa: S608


def measure_sql(spec: TableSpec, m: Measure) -> tuple[str, list[str]]:
    """One measure as one bare DuckDB query (no record keys): what the release benchmark compares
    against, and how statistics (which need no draw) are computed."""
    return (
        f"WITH kept AS ({kept_sql(spec, m)}) {aggregate_sql(spec, m, 'kept', keyed=False)}",
        list(m.dimensions),
    )


@dataclass
class Cells:
    """One table's cells, long format, with what protection needs alongside."""

    spec: TableSpec
    measure: np.ndarray  # measure id per cell
    coords: dict[str, np.ndarray]  # dimension id -> code per cell
    units: np.ndarray  # distinct units in the cell
    raw: np.ndarray  # unprotected value (count or statistic); NaN when undefined
    value: np.ndarray  # published value; NaN when suppressed
    attribute: np.ndarray  # ValueAttribute
    reasons: list[dict[str, Any]] = field(default_factory=list)
    relations: int = 0  # additive relations checked for recomputable suppressed cells

    def __len__(self) -> int:
        return len(self.measure)


class Engine:
    """One DuckDB connection per build; ``compute(spec)`` gives the protected cells of a table."""

    def __init__(self, period: str, events: pa.Table, chain: pa.Table | None, secret: bytes) -> None:
        self.period = period
        self.con = duckdb.connect()
        self.con.execute("SET threads TO 2")
        block = secret if len(secret) <= 64 else hashlib.sha256(secret).digest()  # as HMAC does
        block = block.ljust(64, b"\0")
        self.con.execute("SET VARIABLE ck_ipad = ?", [bytes(b ^ 0x36 for b in block)])
        self.con.execute("SET VARIABLE ck_opad = ?", [bytes(b ^ 0x5C for b in block)])
        start, end = period_bounds(period)
        self.con.register("events_raw", events)
        self.con.execute(
            """CREATE MACRO codes_of(cs, voc) AS
                 list_transform(list_filter(cs, lambda c: c.vocabulary = voc), lambda c: c.code)"""
        )
        self.con.execute("CREATE MACRO code_of(cs, voc) AS list_extract(codes_of(cs, voc), 1)")
        self.con.execute(
            f"""CREATE MACRO record_uid(u) AS ('0x' || substr(sha256(getvariable('ck_opad') ||
                 unhex(sha256(getvariable('ck_ipad') || encode(u)))), 1, {sdc.UID_BITS // 4}))::BIGINT"""
        )
        self.con.execute(f"CREATE MACRO record_key(u) AS record_uid(u) % {sdc.KEY_MOD}")
        self.con.execute("CREATE TEMP TABLE unit_keys (unit VARCHAR, uid BIGINT)")
        self.con.execute(
            "CREATE TEMP TABLE events AS SELECT *, period = $p AS in_period, "
            "event_time < $end AS until_end FROM events_raw",
            {"p": period, "end": end},
        )
        self.con.unregister("events_raw")
        if chain is not None:
            self.con.register("chain_raw", chain)
            self.con.execute(
                "CREATE TEMP TABLE chain AS "
                "SELECT *, $start AS period_start, $end AS period_end FROM chain_raw",
                {"start": start, "end": end},
            )
            self.con.unregister("chain_raw")

    def close(self) -> None:
        self.con.close()

    # -- one measure -----------------------------------------------------------------------------------

    def _query(self, spec: TableSpec, m: Measure) -> pa.Table:
        if m.kind != "count":
            return self.con.sql(measure_sql(spec, m)[0]).to_arrow_table()
        # counts: the kept rows once, their units' record keys (computed once per unit per build), then
        # the group-by over integers
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE kept AS {kept_sql(spec, m)}")
        self.con.execute(
            "INSERT INTO unit_keys SELECT k.unit, record_uid(k.unit) FROM (SELECT DISTINCT unit FROM kept) k "
            "WHERE NOT EXISTS (SELECT 1 FROM unit_keys c WHERE c.unit = k.unit)"
        )
        rows = "(SELECT kept.*, c.uid FROM kept JOIN unit_keys c USING (unit))"
        return self.con.sql(aggregate_sql(spec, m, rows, keyed=True)).to_arrow_table()

    def check_unit_keys(self) -> None:
        """Counting distinct record keys counts distinct units only if no two units share one (60 bits:
        about one chance in 10**7 for a million units); if they ever do, refuse rather than miscount."""
        rows = self.con.execute("SELECT count(*), count(DISTINCT uid) FROM unit_keys").fetchall()
        if rows and rows[0][0] != rows[0][1]:
            raise DisclosureError("two units share a record key: rebuild with another cell-key secret")

    def _measure_cells(self, spec: TableSpec, m: Measure) -> dict[str, np.ndarray]:
        dim_ids = list(m.dimensions)
        result = self._query(spec, m)
        coords: dict[str, np.ndarray] = {}
        for d in dim_ids:
            dim = spec.dimension(d)
            col = result[d].cast(pa.string())
            if dim.total_code is not None:
                col = pc.if_else(pc.equal(result[f"g_{d}"], 1), dim.total_code, col)
            coords[d] = np.asarray(pc.fill_null(col, "ONB").to_pylist(), dtype=object)
        units = result["units"].to_numpy(zero_copy_only=False).astype(np.int64)
        keys = pc.fill_null(result["key_sum"], 0).to_numpy(zero_copy_only=False).astype(np.int64)
        raw = pc.fill_null(result["raw"], np.nan).to_numpy(zero_copy_only=False).astype(np.float64)
        coords, units, keys, raw = self._fill_zeros(spec, m, coords, units, keys, raw)
        return {"units": units, "keys": keys, "raw": raw, **{f"d:{k}": v for k, v in coords.items()}}

    def _fill_zeros(
        self,
        spec: TableSpec,
        m: Measure,
        coords: dict[str, np.ndarray],
        units: np.ndarray,
        keys: np.ndarray,
        raw: np.ndarray,
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
        """Every combination of known codes is a cell: a count without units is a true zero, a statistic
        without units is undefined (and so suppressed)."""
        empty = 0.0 if m.kind == "count" else np.nan
        if not m.dimensions:
            if len(units) == 0:
                return coords, np.zeros(1, np.int64), np.zeros(1, np.int64), np.full(1, empty)
            return coords, units, keys, raw
        lists = []
        for d in m.dimensions:
            dim = spec.dimension(d)
            declared = [c.code for c in dim.code_list()]
            if d in m.only:
                declared = [c for c in declared if c in m.only[d]]
            seen = sorted(
                set(coords[d].tolist()) | set(declared) | ({dim.total_code} if dim.total_code else set())
            )
            lists.append(seen)
        present = {tuple(coords[d][i] for d in m.dimensions) for i in range(len(units))}
        missing = [combo for combo in itertools.product(*lists) if combo not in present]
        if not missing:
            return coords, units, keys, raw
        extra = np.array(missing, dtype=object).reshape(len(missing), len(m.dimensions))
        coords = {d: np.concatenate([coords[d], extra[:, i]]) for i, d in enumerate(m.dimensions)}
        zeros = np.zeros(len(missing), dtype=np.int64)
        return (
            coords,
            np.concatenate([units, zeros]),
            np.concatenate([keys, zeros]),
            np.concatenate([raw, np.full(len(missing), empty)]),
        )

    # -- a whole table ---------------------------------------------------------------------------------

    def compute(self, spec: TableSpec) -> Cells:
        if spec.from_sql:  # once per table, not once per measure
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE {source_name(spec)} AS {spec.from_sql}")
        dim_ids = [d.id for d in spec.dimensions]
        measure, units, keys, raw = [], [], [], []
        coords: dict[str, list[np.ndarray]] = {d: [] for d in dim_ids}
        kinds = []
        for m in spec.measures:
            got = self._measure_cells(spec, m)
            n = len(got["units"])
            measure.append(np.full(n, m.id, dtype=object))
            kinds.append(np.full(n, m.kind, dtype=object))
            units.append(got["units"])
            keys.append(got["keys"])
            raw.append(got["raw"])
            for d in dim_ids:
                dim = spec.dimension(d)
                fixed = dim.total_code if dim.total_code is not None else "NVT"
                coords[d].append(got.get(f"d:{d}", np.full(n, fixed, dtype=object)))
        cells = Cells(
            spec=spec,
            measure=np.concatenate(measure),
            coords={d: np.concatenate(v) for d, v in coords.items()},
            units=np.concatenate(units),
            raw=np.concatenate(raw),
            value=np.zeros(0),
            attribute=np.zeros(0),
        )
        self.check_unit_keys()
        protect(cells, np.concatenate(kinds), np.concatenate(keys))
        return cells


def protect(cells: Cells, kinds: np.ndarray, key_sums: np.ndarray) -> None:
    """Apply the rules in order: rounding (counts), threshold (statistics), group disclosure (counts),
    secondary suppression (counts); record every suppressed cell and why in ``cells.reasons``."""
    spec = cells.spec
    n = len(cells)
    is_count = kinds == "count"
    value = cells.raw.copy()
    value[is_count] = sdc.random_round(cells.units[is_count], sdc.cell_draw(key_sums[is_count]))
    suppressed = np.zeros(n, dtype=bool)
    reason = np.full(n, "", dtype=object)

    small = ~is_count & sdc.below_threshold(cells.units, spec.protection.threshold)
    undefined = ~is_count & np.isnan(cells.raw)
    suppressed |= small | undefined
    reason[small] = "threshold"
    reason[undefined & ~small] = "no units"

    dim_ids = [d.id for d in spec.dimensions]
    for gd in spec.protection.group_disclosure:
        total = spec.dimension(gd.dimension).total_code
        rows = np.flatnonzero(is_count & (cells.coords[gd.dimension] != total))
        if len(rows) == 0:
            continue
        others = [d for d in dim_ids if d != gd.dimension]
        group = np.array(
            ["\x1f".join([str(cells.measure[i]), *(str(cells.coords[d][i]) for d in others)]) for i in rows],
            dtype=object,
        )
        flagged = rows[sdc.group_disclosure(group, cells.units[rows], gd.share)]
        new = flagged[~suppressed[flagged]]
        suppressed[new] = True
        reason[new] = f"group disclosure on {gd.dimension} (one category >= {gd.share:.0%} of the group)"

    relations = relations_of(cells)
    final = sdc.secondary_suppression(suppressed, relations, cells.units.astype(float))
    left = sdc.recomputable(final, relations)  # the independent check, recorded in the audit
    if left:
        raise DisclosureError(f"{spec.id}: suppressed cells {left} could be recomputed from published ones")
    cells.relations = len(relations)
    reason[final & ~suppressed] = "secondary (a total would reveal a suppressed cell)"
    value[final] = np.nan
    cells.value = value
    cells.attribute = np.where(final, SUPPRESSED, ORDINARY).astype(object)
    cells.reasons = [
        {
            "measure": str(cells.measure[i]),
            **{d: str(cells.coords[d][i]) for d in dim_ids},
            "reason": str(reason[i]),
        }
        for i in np.flatnonzero(final)
    ]


def relations_of(cells: Cells) -> list[sdc.Relation]:
    """Additive relations of the count cells: along each dimension with a total, total = sum of the
    top-level codes, and each parent code = sum of its children (when it has children)."""
    spec = cells.spec
    dim_ids = [d.id for d in spec.dimensions]
    measures = {m.id: m for m in spec.measures}
    index: dict[tuple[str, ...], int] = {}
    for i in range(len(cells)):
        if measures[str(cells.measure[i])].kind == "count":
            index[(str(cells.measure[i]), *(str(cells.coords[d][i]) for d in dim_ids))] = i
    relations = []
    for pos, dim in enumerate(spec.dimensions):
        if dim.total_code is None:
            continue
        children: dict[str, list[str]] = {dim.total_code: []}
        known = {c.code: c for c in dim.code_list()}
        seen_codes = {key[pos + 1] for key in index} - {dim.total_code}
        for code in sorted(seen_codes):
            parent = known[code].parent if code in known else None
            children.setdefault(parent if parent in known else dim.total_code, []).append(code)
        for key, i in index.items():
            code = key[pos + 1]
            if code not in children or not children[code]:
                continue
            parts = []
            for child in children[code]:
                other = (*key[: pos + 1], child, *key[pos + 2 :])
                if other in index:
                    parts.append(index[other])
            if parts:
                relations.append(sdc.Relation(total=i, parts=tuple(parts)))
    return relations
