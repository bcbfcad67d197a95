"""Per-case attributes from event rows, reduced file by file so memory follows cases, not events.

For each case: the first non-missing ``sex``, ``municipality_code`` and ``crime_municipality_code``
(by event time); the first OM decision (``om-beslissing`` concept of an ``OM_DECISION`` event), the
first first-instance outcome (``rechtspraak-eindbeslissing`` of a ``COURT_JUDGMENT``) and the most
severe sanction of the first judgment (``sanctie``; prison, tbs, ISD, community service, fine).

Each sealed data file is reduced on its own to one row per case holding every attribute with the key
it was chosen by (``<name>__k``: the event time, or (time, severity) for sanctions); the partial rows of
all files are combined by taking, per attribute, the value with the smallest key. "First" is
associative, so the result is the same as over all events at once, while only one file's events and
the per-case partials are ever in memory.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

ATTRIBUTES = ("sex", "municipality_code", "crime_municipality_code")
CONCEPTS = {  # name -> (chain step, vocabulary)
    "om_decision": ("OM_DECISION", "om-beslissing"),
    "court_outcome": ("COURT_JUDGMENT", "rechtspraak-eindbeslissing"),
    "sanction": ("COURT_JUDGMENT", "sanctie"),
}
SANCTION_SEVERITY = ("GEVANGENISSTRAF", "TBS", "ISD", "TAAKSTRAF", "GELDBOETE")
PSEUDONYMS = ("report_pseudonym", "execution_pseudonym")  # only events carry these


def columns_for(names: set[str]) -> list[str]:
    """Event columns to read for these attributes."""
    wanted = {"case_pseudonym", "event_time", *PSEUDONYMS}
    wanted |= {n for n in names if n in ATTRIBUTES}
    if names & set(CONCEPTS):
        wanted |= {"chain_step", "concepts"}
    return sorted(wanted)


def partial_sql(names: set[str]) -> str:
    """One row per case of the table ``events``: each attribute and the key it was chosen by."""
    attrs = [a for a in ATTRIBUTES if a in names]
    concepts = [n for n in CONCEPTS if n in names]
    parts, selects = [], ["case_pseudonym"]
    if attrs:
        parts.append(
            "a as (select case_pseudonym, "
            + ", ".join(
                f"arg_min({a}, event_time) filter (where {a} is not null) as {a}, "
                f"min(event_time) filter (where {a} is not null) as {a}__k"
                for a in attrs
            )
            + " from events where case_pseudonym is not null group by case_pseudonym)"
        )
        selects += [f"a.{a}, a.{a}__k" for a in attrs]
    if concepts:
        ranks = " ".join(f"when '{code}' then {i}" for i, code in enumerate(SANCTION_SEVERITY))
        found = []
        for n in concepts:
            step, vocab = CONCEPTS[n]
            where = f"chain_step = '{step}' and vocabulary = '{vocab}'"
            found.append(
                f"arg_min(code, {{'t': event_time, 'r': rank}}) filter (where {where}) as {n}, "
                f"min({{'t': event_time, 'r': rank}}) filter (where {where}) as {n}__k"
            )
        parts.append(
            "c as (select case_pseudonym, " + ", ".join(found) + " from (select case_pseudonym, "
            "event_time, chain_step, u.c.vocabulary as vocabulary, u.c.code as code, "
            f"case u.c.code {ranks} else 99 end as rank from events, unnest(concepts) as u(c) "
            "where case_pseudonym is not null) group by case_pseudonym)"
        )
        selects += [f"c.{n}, c.{n}__k" for n in concepts]
    if not parts:
        return "select case_pseudonym from events where false"
    if attrs and concepts:
        source = "a full join c using (case_pseudonym)"
        selects[0] = "coalesce(a.case_pseudonym, c.case_pseudonym) as case_pseudonym"
    else:
        source = "a" if attrs else "c"
    return f"with {', '.join(parts)} select {', '.join(selects)} from {source}"


def combine_sql(names: set[str], partials: str) -> str:
    """The final attributes from the partial rows in table ``partials``."""
    chosen = [n for n in (*ATTRIBUTES, *CONCEPTS) if n in names]
    if not chosen:
        return f"select distinct case_pseudonym from {partials}"
    return (
        "select case_pseudonym, "
        + ", ".join(f"arg_min({n}, {n}__k) as {n}" for n in chosen)
        + f" from {partials} group by case_pseudonym"
    )


class Reducer:
    """Reduces one data file's events to per-case partials and the pseudonyms only events carry.

    One DuckDB connection serves every file (a context manager: ``with Reducer(names) as reduce``).
    """

    def __init__(self, names: set[str]) -> None:
        self.names = names
        self._sql = partial_sql(names)
        self._con = duckdb.connect()

    def __enter__(self) -> Reducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._con.close()

    def __call__(self, events: pa.Table) -> tuple[pa.Table, pa.Table]:
        con = self._con
        con.register("events", events)
        try:
            partial = con.sql(self._sql).to_arrow_table()
            present = [c for c in PSEUDONYMS if c in events.column_names]
            if not present:
                return partial, pa.table({"v": pa.array([], pa.string())})
            pseudonyms = con.sql(
                f"select distinct v from (select unnest([{', '.join(present)}]) as v from events) "
                "where v is not null"
            ).to_arrow_table()
        finally:
            con.unregister("events")
        return partial, pseudonyms
