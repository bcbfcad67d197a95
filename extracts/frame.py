"""The study frame: one row per case of the population, each column at the level the study asked for.

Built in DuckDB from the sources (``extracts/source.py``), set-based, no loop over rows:

1. ``chain``: every case's row from the latest period asked for in which it appears (a case's row in a
   later period's table knows more of its chain).
2. ``person``: the person's row from the latest period asked for (``cases_total``).
3. ``ev``: per case, from the events of the periods asked for, the first non-missing ``sex``, home
   ``municipality_code`` and ``crime_municipality_code``; the first OM decision
   (``om-beslissing``), the first first-instance outcome (``rechtspraak-eindbeslissing``) and the most
   severe sanction of the first judgment (``sanctie``).
4. The population filter: the ``reached`` step's Europe/Amsterdam date in [from, to), optionally
   juveniles only.
5. Each column generalised: pseudonyms re-keyed (``extracts/rekey.py``), ages to bands, municipalities
   to COROP or province (``terminology/gemeente-regio.csv``), times to week/month/quarter/year, SCM2010
   offences to a level (or rare codes to their parent in ``terminology/concepts.csv``), lead times in
   days or whole weeks.

Rows are ordered by every column, so the same sources and request give the same frame.
"""

from __future__ import annotations

import csv
from pathlib import Path

import duckdb
import pyarrow as pa

from extracts.catalogue import Resolved
from extracts.events import combine_sql
from extracts.rekey import pads, rekey_sql
from extracts.source import Sources
from ketenstroom.errors import ExtractError

LOCAL = "timezone('Europe/Amsterdam', {})"


def event_names(resolved: Resolved) -> set[str]:
    """The per-case event attributes the request needs (``extracts/events.py``)."""
    return {
        spec.source.split(".", 1)[1]
        for name in resolved.columns
        for spec in [resolved.catalogue.columns[name]]
        if spec.source.startswith("event.")
    }


def load_regions(path: Path) -> pa.Table:
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return pa.Table.from_pylist(rows)


def load_scm(path: Path) -> pa.Table:
    """SCM2010 codes with their parent and label, from the terminology's concept list."""
    with path.open(encoding="utf-8", newline="") as fh:
        rows = [
            {"code": r["code"], "parent": r["parent"] or None, "label": r["label"]}
            for r in csv.DictReader(fh)
            if r["vocabulary"] == "scm2010"
        ]
    return pa.Table.from_pylist(
        rows, schema=pa.schema([("code", pa.string()), ("parent", pa.string()), ("label", pa.string())])
    )


def _age(expr: str, level: str) -> str:
    if level in ("band5", "band10"):
        width = 5 if level == "band5" else 10
        low = f"(floor({expr} / {width}) * {width})::int"
        return (
            f"case when {expr} is null then null "
            f"else {low}::varchar || '-' || ({low} + {width - 1})::varchar end"
        )
    return (
        f"case when {expr} is null then null when {expr} < 12 then '0-11' when {expr} < 18 then '12-17' "
        f"when {expr} < 25 then '18-24' when {expr} < 45 then '25-44' when {expr} < 65 then '45-64' "
        "else '65+' end"
    )


def _time(expr: str, level: str) -> str:
    local = LOCAL.format(expr)
    if level == "week":
        return f"strftime({local}, '%G-W%V')"
    if level == "month":
        return f"strftime({local}, '%Y-%m')"
    if level == "quarter":
        return f"strftime({local}, '%Y') || '-Q' || quarter({local})::varchar"
    return f"strftime({local}, '%Y')"


def _column(name: str, source: str, level: str, region_alias: str | None) -> str:  # noqa: PLR0911 - one per level
    origin, field = source.split(".", 1)
    alias = {"chain": "ch", "person": "pe", "event": "ev"}[origin]
    expr = f"{alias}.{field}"
    if level == "study_pseudonym":
        return rekey_sql(expr, "case" if field.startswith("case") else "person")
    if level in ("band5", "band10", "cbs"):
        return _age(expr, level)
    if level in ("corop", "province"):
        return f"{region_alias}.{level}_code"
    if level in ("week", "month", "quarter", "year"):
        return _time(expr, level)
    if level == "scm1":
        return f"left({expr}, 1)"
    if level == "scm2":
        return f"left({expr}, 2)"
    if level == "band":
        return (
            f"case when {expr} is null then null when {expr} <= 2 then {expr}::varchar "
            f"when {expr} <= 4 then '3-4' else '5+' end"
        )
    if level == "weeks":
        return f"floor({expr} / 7)::int"
    return expr  # as_is, days, rare_to_parent (rolled up afterwards)


def build_frame(
    resolved: Resolved, sources: Sources, regions: pa.Table, scm: pa.Table, key: bytes
) -> pa.Table:
    """The study frame before disclosure control (see the module docstring)."""
    catalogue = resolved.catalogue
    specs = {name: catalogue.columns[name] for name in resolved.columns}
    names = event_names(resolved)
    con = duckdb.connect()
    try:
        con.register("chain_all", sources.chain)
        con.register("person_all", sources.person)
        con.register("regions", regions)
        con.execute(
            "create temp table chain as select * from chain_all "
            "qualify row_number() over (partition by case_pseudonym order by period desc) = 1"
        ).fetchall()
        con.execute(
            "create temp table person as select * from person_all "
            "qualify row_number() over (partition by person_pseudonym order by period desc) = 1"
        ).fetchall()
        con.register("case_events", sources.case_events)
        con.execute(f"create temp table ev as {combine_sql(names, 'case_events')}").fetchall()
        joins = [
            "left join person pe on pe.person_pseudonym = ch.person_pseudonym",
            "left join ev on ev.case_pseudonym = ch.case_pseudonym",
        ]
        selects = []
        for name, spec in specs.items():
            level = resolved.columns[name]
            region_alias = None
            if level in ("corop", "province"):
                region_alias = f"r_{name}"
                field = _column(name, spec.source, "as_is", None)
                joins.append(
                    f"left join regions {region_alias} on {region_alias}.municipality_code = {field}"
                )
                _check_regions(con, field, joins[:2])
            selects.append(f'{_column(name, spec.source, level, region_alias)} as "{name}"')
        where = _population(resolved)
        sql = f"select {', '.join(selects)} from chain ch {' '.join(joins)} {where} order by all"
        params = pads(key) if "$ipad" in sql else None  # keys travel as parameters, never as SQL text
        con.execute(f"create temp table frame as {sql}", params).fetchall()
        for name, level in resolved.columns.items():
            if level == "rare_to_parent":
                _roll_up(con, name, scm, resolved.k)
        return con.sql("select * from frame").to_arrow_table()
    except duckdb.Error as exc:
        raise ExtractError(f"building the study frame failed: {exc}") from exc
    finally:
        con.close()


def _check_regions(con: duckdb.DuckDBPyConnection, field: str, joins: list[str]) -> None:
    """A municipality the region table does not know is an error, never a silent missing value."""
    unknown = con.sql(
        f"select distinct {field} from chain ch {' '.join(joins)} where {field} is not null "
        f"and {field} not in (select municipality_code from regions) order by 1"
    ).fetchall()
    if unknown:
        raise ExtractError(
            f"municipality codes {[u[0] for u in unknown]} are not in terminology/gemeente-regio.csv; "
            "add their COROP and province there"
        )


def _population(resolved: Resolved) -> str:
    pop = resolved.request.population
    if pop is None:
        return ""
    column = f"ch.{pop.reached}_time"
    conditions = [f"{column} is not null"]
    if pop.from_ is not None:
        conditions.append(f"cast({LOCAL.format(column)} as date) >= DATE '{pop.from_.isoformat()}'")
    if pop.to is not None:
        conditions.append(f"cast({LOCAL.format(column)} as date) < DATE '{pop.to.isoformat()}'")
    if pop.juvenile is not None:
        conditions.append(f"ch.juvenile = {'true' if pop.juvenile else 'false'}")
    return "where " + " and ".join(conditions)


def _roll_up(con: duckdb.DuckDBPyConnection, name: str, scm: pa.Table, k: int) -> None:
    """Codes held by fewer than k rows become their parent, repeatedly, up to the top level."""
    con.register("scm", scm)
    column = f'"{name}"'
    for _ in range(8):  # SCM2010 is at most four levels deep; this bounds a cyclic table too
        changed = con.execute(
            f"update frame set {column} = scm.parent from scm, "
            f"(select {column} as code from frame where {column} is not null group by 1 "
            f"having count(*) < {int(k)}) rare "
            f"where frame.{column} = rare.code and scm.code = rare.code and scm.parent is not null"
        ).fetchall()[0]
        if not changed or not changed[0]:
            break
    con.execute("create or replace temp table frame as select * from frame order by all").fetchall()
    con.unregister("scm")
