"""Disclosure checks for a microdata extract: k-anonymity, distinct l-diversity, local suppression.

Pure: a pyarrow table in, a pyarrow table out, the work done in DuckDB (window functions and set-based
updates; no Python loop over rows).

* A **group** is the set of rows sharing one combination of quasi-identifier values. A missing value
  (including one set missing by suppression) is a value of its own here: a suppressed cell matches
  only other missing cells, never "anything" (the conservative reading).
* **k** is the size of the smallest group. **Distinct l** is, over every group and every sensitive
  column, the smallest number of distinct values (missing counts as a value: "no decision yet" is as
  telling as any decision). With no sensitive column, l is not defined (None).
* A group is **unsafe** when it has fewer than k rows or fewer than l distinct values in a sensitive
  column. Rows in unsafe groups are **locally suppressed**: their most specific quasi-identifier (the
  one with the most distinct values; ties in the order given) is set missing, the groups are formed
  again, and the next most specific is set missing for the rows still unsafe, and so on. Only rows of
  unsafe groups ever change, and a group that is safe stays safe (it can only gain rows), so the rows
  suppressed are exactly the rows unsafe at the start; rows still unsafe with every quasi-identifier
  missing are removed.
* When the unsafe rows exceed the **budget** (a share of all rows) nothing is suppressed: the extract
  is refused with the table of offending combinations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

from ketenstroom.errors import ExtractRefused

_MISSING = "chr(0)"  # how a missing sensitive value is counted: one value of its own


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Measure:
    """k and distinct l of a table, and how many groups and rows fall short of given thresholds."""

    rows: int
    groups: int
    k: int | None  # None for an empty table
    l: int | None  # noqa: E741 - None without sensitive columns (or rows)
    unsafe_groups: int
    unsafe_rows: int


@dataclass(frozen=True)
class Protected:
    table: pa.Table
    before: Measure
    after: Measure
    rows_suppressed: int
    rows_removed: int
    cells_suppressed: dict[str, int] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # the suppression order used, most specific first


def _flags_sql(quasi: list[str], sensitive: list[str], k: int, l_: int) -> str:
    window = f"partition by {', '.join(_q(c) for c in quasi)}" if quasi else ""
    distinct = [f"count(distinct coalesce(cast({_q(s)} as varchar), {_MISSING})) over w" for s in sensitive]
    least = f"least({', '.join(distinct)})" if distinct else "NULL"
    return (
        f"select _row, count(*) over w as _n, {least} as _l, "
        f"(count(*) over w < {int(k)}{''.join(f' or {d} < {int(l_)}' for d in distinct)}) as _unsafe "
        f"from work window w as ({window})"
    )


def _measure(
    con: duckdb.DuckDBPyConnection, quasi: list[str], sensitive: list[str], k: int, l_: int
) -> Measure:
    con.execute(f"create or replace temp table flags as {_flags_sql(quasi, sensitive, k, l_)}").fetchall()
    group_cols = ", ".join(_q(c) for c in quasi) or "1"
    rows, k_min, l_min, unsafe_rows = con.execute(
        "select count(*), min(_n), min(_l), count(*) filter (where _unsafe) from flags"
    ).fetchall()[0]
    groups, unsafe_groups = con.execute(
        f"select count(*), count(*) filter (where u) from (select bool_or(f._unsafe) u from work "
        f"join flags f using (_row) group by {group_cols})"
    ).fetchall()[0]
    return Measure(
        rows=int(rows),
        groups=int(groups),
        k=None if k_min is None else int(k_min),
        l=None if l_min is None or not sensitive else int(l_min),
        unsafe_groups=int(unsafe_groups),
        unsafe_rows=int(unsafe_rows),
    )


def _connect(table: pa.Table) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.register("source", table)
    con.execute("create temp table work as select row_number() over () as _row, * from source").fetchall()
    con.unregister("source")
    return con


def measure(table: pa.Table, quasi: list[str], sensitive: list[str], k: int = 5, l: int = 2) -> Measure:  # noqa: E741
    """k, distinct l, and the groups and rows that fall below ``k`` / ``l``."""
    with _connect(table) as con:
        return _measure(con, quasi, sensitive, k, l)


def offending(
    table: pa.Table,
    quasi: list[str],
    sensitive: list[str],
    k: int,
    l: int,  # noqa: E741
) -> list[dict[str, object]]:
    """The unsafe combinations: quasi-identifier values, rows, distinct values per sensitive column."""
    with _connect(table) as con:
        con.execute(f"create temp table flags as {_flags_sql(quasi, sensitive, k, l)}").fetchall()
        cols = ", ".join(_q(c) for c in quasi) or "1"
        distinct = "".join(
            f", count(distinct coalesce(cast({_q(s)} as varchar), {_MISSING})) as {_q('distinct_' + s)}"
            for s in sensitive
        )
        found: list[dict[str, object]] = (
            con.sql(
                f"select {cols + ',' if quasi else ''} count(*) as rows{distinct} from work "
                f"join flags using (_row) where _unsafe group by all order by rows, {cols}"
            )
            .to_arrow_table()
            .to_pylist()
        )
        return found


def specificity_order(table: pa.Table, quasi: list[str]) -> list[str]:
    """Quasi-identifiers, most specific (most distinct non-missing values) first; ties keep their order."""
    if not quasi:
        return []
    with duckdb.connect() as con:
        con.register("t", table)
        counts = con.execute(
            "select " + ", ".join(f"count(distinct {_q(c)})" for c in quasi) + " from t"
        ).fetchall()[0]
    distinct = dict(zip(quasi, counts or [0] * len(quasi), strict=True))
    return sorted(quasi, key=lambda c: (-distinct[c], quasi.index(c)))


def protect(
    table: pa.Table,
    quasi: list[str],
    sensitive: list[str],
    *,
    k: int,
    l: int,  # noqa: E741
    budget: float,
) -> Protected:
    """Suppress locally until every group has k rows and l distinct sensitive values, or refuse."""
    order = specificity_order(table, quasi)
    with _connect(table) as con:
        before = _measure(con, quasi, sensitive, k, l)
        allowed = int(budget * before.rows)
        if before.unsafe_rows > allowed:
            rows = offending(table, quasi, sensitive, k, l)
            raise ExtractRefused(
                f"refused: {before.unsafe_rows} of {before.rows} rows are in {before.unsafe_groups} "
                f"combinations of {', '.join(quasi)} with fewer than k={k} rows"
                + (f" or fewer than l={l} distinct values of {', '.join(sensitive)}" if sensitive else "")
                + f"; the suppression budget allows {allowed} ({budget:.1%}). Ask for coarser levels "
                "(e.g. age band10, region province, dates by month or quarter, offence scm1) or fewer "
                "quasi-identifiers.",
                rows,
            )
        cells = {c: 0 for c in quasi}
        current = before
        for column in order:
            if current.unsafe_rows == 0:
                break
            cells[column] = int(
                con.execute(
                    f"select count(*) from work join flags using (_row) "
                    f"where _unsafe and {_q(column)} is not null"
                ).fetchall()[0][0]
            )
            con.execute(
                f"update work set {_q(column)} = NULL where _row in (select _row from flags where _unsafe)"
            ).fetchall()
            current = _measure(con, quasi, sensitive, k, l)
        removed = current.unsafe_rows
        if removed:
            con.execute("delete from work where _row in (select _row from flags where _unsafe)").fetchall()
            current = _measure(con, quasi, sensitive, k, l)
        names = ", ".join(_q(c) for c in table.column_names)
        result = con.sql(f"select {names} from work order by _row").to_arrow_table()
    return Protected(
        table=result.cast(table.schema),
        before=before,
        after=current,
        rows_suppressed=before.unsafe_rows,
        rows_removed=removed,
        cells_suppressed={c: n for c, n in cells.items() if n},
        order=order,
    )
