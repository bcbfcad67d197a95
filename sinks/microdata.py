"""Linked microdata per period: a chain table (one row per case) and a person table. Pure: pyarrow in/out.

Input is a table with the columns of ``sinks.parquet.SCHEMA``: every curated event known up to and
including the period (the caller passes earlier periods' rows too, so a case that started months ago
still gets its police registration). Events with an ``event_time`` at or after the end of the period
are ignored, so passing more never changes a period's table. All work is vectorised pyarrow compute
(filters, hash joins, group-bys, one sort); there is no Python loop over rows.

Chain steps and how each is linked to a case (the case pseudonym comes from the parketnummer):

* ``police_registration`` -- the earliest police event (crime registered, suspect registered, pv sent to
  OM) of the linked report. Police events carry only the report pseudonym (pv-number); OM events
  (registration, and decisions, which carry the pv-number too) carry both report and case pseudonym,
  and that pair is the link. A case linked to several reports takes the earliest of them; a report
  linked to several cases gives each the same police time. Reports that never reach the OM have no
  case pseudonym and so no row here.
* ``om_registration`` -- the first OM registration (inschrijving) carrying the case pseudonym.
* ``om_decision`` -- the first OM decision carrying the case pseudonym.
* ``judgment`` -- the first first-instance judgment (appeals are not a step here).
* ``execution_start`` -- the earliest of CJIB collection started, DJI inflow and reclassering
  supervision (or werkstraf) started. DJI and reclassering records carry the parketnummer, hence the
  case pseudonym. CJIB records carry the CJIB number (execution pseudonym) and the parketnummer; a CJIB
  event without a case pseudonym is linked through any other event with the same execution pseudonym
  that carries one (a payment, a substitute detention order). CJIB events whose execution pseudonym
  never appears together with a case pseudonym cannot be linked and are left out. A DJI inflow under
  the title *voorlopige hechtenis* (pre-trial detention, concept ``detentie-titel``
  ``VOORLOPIGE_HECHTENIS``) is not the execution of a sanction and is not counted as a step.

An event "of a case" is an event carrying the case pseudonym plus the police events and CJIB events
linked to it as above; a case is in a period's table when at least one of its events is in the period.

Lead times are **whole calendar days in Europe/Amsterdam** (int32): the local date of the later step
minus the local date of the earlier one, so an event at 00:30 local time counts on its local day
whatever the UTC offset, and a daylight-saving change never gives a fractional day. Norms ("within 90
days") compare these day counts. A lead time is null when either step is missing. When a later step
happens before an earlier one (compared as instants), the value is kept -- it may be zero or
negative -- and ``anomalies`` names it, e.g. ``OM_DECISION_BEFORE_OM_REGISTRATION``; a case whose
events name more than one person pseudonym is flagged ``MULTIPLE_PERSONS``.

Ages come from ``age_at_event`` (age on the local event date): ``age_at_police_registration`` from the
earliest linked police event that carries an age (crime registrations carry no person, so in practice
the suspect registration), ``age_at_first_step`` from the earliest event of the case that carries an
age; ``juvenile`` is 12-17 at that first step, as the Kalsbeeknormen use it, null when no age is known.
The offence is the most detailed SCM2010 concept of the OM registration, else the first OM decision,
else the police crime registration (the OM's legal qualification wins, DOMAIN.md §2.5.5).

Rows are sorted by pseudonym, so the same input gives the same table and byte-identical Parquet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from ketenstroom.calendar import TIMEZONE, period_bounds
from ketenstroom.catalogue import catalogue_at
from ketenstroom.identity import Identities
from ketenstroom.settings import CatalogueSettings

_TS = pa.timestamp("ms", tz="UTC")

#: The chain steps in chain order; ``<step>_time`` is the column holding the step's time.
STEPS: tuple[str, ...] = (
    "police_registration",
    "om_registration",
    "om_decision",
    "judgment",
    "execution_start",
)
_PRE_TRIAL = ("detentie-titel", "VOORLOPIGE_HECHTENIS")
#: (from, to) pairs with a lead-time column ``days_<from>_to_<to>``: consecutive steps, then from police.
LEAD_TIMES: tuple[tuple[str, str], ...] = (
    ("police_registration", "om_registration"),
    ("om_registration", "om_decision"),
    ("om_decision", "judgment"),
    ("judgment", "execution_start"),
    ("police_registration", "om_decision"),
    ("police_registration", "judgment"),
    ("police_registration", "execution_start"),
)
#: Which step's SCM2010 concepts name the offence, best first.
_OFFENCE_SOURCES = ("om_registration", "om_decision", "police_registration")


def lead_time_column(from_step: str, to_step: str) -> str:
    return f"days_{from_step}_to_{to_step}"


CHAIN_SCHEMA = pa.schema(
    [
        ("period", pa.string()),
        ("case_pseudonym", pa.string()),
        ("person_pseudonym", pa.string()),
        *[(f"{step}_time", _TS) for step in STEPS],
        *[(lead_time_column(a, b), pa.int32()) for a, b in LEAD_TIMES],
        ("furthest_step", pa.string()),
        ("age_at_police_registration", pa.int16()),
        ("age_at_first_step", pa.int16()),
        ("juvenile", pa.bool_()),
        ("offence_scm2010", pa.string()),
        ("offence_scm2010_main", pa.string()),
        ("offence_label", pa.string()),
        ("offence_source", pa.string()),
        ("anomalies", pa.list_(pa.string())),
        ("chain_steps", pa.list_(pa.string())),
    ]
)
PERSON_SCHEMA = pa.schema(
    [
        ("period", pa.string()),
        ("person_pseudonym", pa.string()),
        ("events_in_period", pa.int64()),
        ("cases_in_period", pa.int64()),
        ("cases_total", pa.int64()),
        ("furthest_step", pa.string()),
        *[(f"reached_{step}", pa.bool_()) for step in STEPS],
        ("person_id_source", pa.string()),
        ("identity_conflict", pa.bool_()),
    ]
)


# -- shared preparation --------------------------------------------------------------------------------


def _as_string(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return column.cast(pa.string()) if pa.types.is_dictionary(column.type) else column


def default_stages() -> Mapping[str, tuple[str, ...]]:
    """Chain-table stage -> the chain steps that count for it, as the catalogue declares them."""
    return catalogue_at(CatalogueSettings().dir).stages()


def _prepare(
    events: pa.Table,
    period: str,
    stages: Mapping[str, tuple[str, ...]] | None = None,
    identities: Identities | None = None,
) -> pa.Table:
    """Events up to the end of ``period``, slimmed for joins: ``_row``, ``step`` and ``in_period`` added;
    ``person`` is the resolved person id (``ketenstroom.identity``)."""
    stages = default_stages() if stages is None else stages
    _start, end = period_bounds(period)
    ev = events.filter(pc.less(events["event_time"], pa.scalar(end, _TS))).combine_chunks()
    if identities is None:
        identities = Identities.from_events(ev)
    person, person_source = identities.person_columns(ev)
    n = ev.num_rows
    rows = pa.array(range(n), pa.int64())
    chain_step = _as_string(ev["chain_step"])
    step = pa.nulls(n, pa.string())
    for name, chain_steps in stages.items():
        step = pc.if_else(pc.is_in(chain_step, value_set=pa.array(chain_steps)), name, step)
    concepts = ev["concepts"].combine_chunks() if n else pa.array([], ev.schema.field("concepts").type)
    flat = pc.list_flatten(concepts)
    parents = pc.list_parent_indices(concepts)
    pre_trial = pc.and_(
        pc.equal(pc.struct_field(flat, "vocabulary"), _PRE_TRIAL[0]),
        pc.equal(pc.struct_field(flat, "code"), _PRE_TRIAL[1]),
    )
    pre_trial_rows = parents.filter(pc.fill_null(pre_trial, False))
    excluded = pc.and_(
        pc.equal(chain_step, "DETENTION_INFLOW"), pc.is_in(rows, value_set=pre_trial_rows.cast(pa.int64()))
    )
    step = pc.if_else(pc.fill_null(excluded, False), pa.scalar(None, pa.string()), step)
    return pa.table(
        {
            "_row": rows,
            "case": ev["case_pseudonym"],
            "report": ev["report_pseudonym"],
            "execution": ev["execution_pseudonym"],
            "person": person,
            "person_source": person_source,
            "age": ev["age_at_event"],
            "t": ev["event_time"],
            "event_id": ev["event_id"],
            "step": step,
            "chain_step": chain_step,
            "in_period": pc.fill_null(pc.equal(_as_string(ev["period"]), period), False),
            "_concepts": concepts,
        }
    )


def _distinct(table: pa.Table, keys: list[str]) -> pa.Table:
    return table.select(keys).group_by(keys, use_threads=False).aggregate([])


def _first_per_key(table: pa.Table, key: str) -> pa.Table:
    """Rows where ``key`` differs from the previous row: the first row of each group of a sorted table."""
    if table.num_rows == 0:
        return table
    keys = table[key].combine_chunks()
    changed = pc.not_equal(keys.slice(1), keys.slice(0, len(keys) - 1))
    return table.filter(pa.concat_arrays([pa.array([True]), pc.fill_null(changed, True)]))


def _local_days(times: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Days since 1970-01-01 of the Europe/Amsterdam calendar date of each UTC instant."""
    local = pc.local_timestamp(times.cast(pa.timestamp("ms", tz=TIMEZONE)))
    return local.cast(pa.date32()).cast(pa.int32())


def _days_between(earlier: pa.ChunkedArray, later: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.subtract(_local_days(later), _local_days(earlier))


def _left(base: pa.Table, other: pa.Table, key: str) -> pa.Table:
    return base.join(other, key, join_type="left outer", use_threads=False)


def _furthest(times: dict[str, pa.ChunkedArray | pa.Array], n: int) -> pa.ChunkedArray | pa.Array:
    furthest: pa.ChunkedArray | pa.Array = pa.nulls(n, pa.string())
    for step in STEPS:
        furthest = pc.if_else(pc.is_valid(times[step]), step, furthest)
    return furthest


# -- chain table ---------------------------------------------------------------------------------------


def _case_events(ev: pa.Table) -> pa.Table:
    """Events with the case each belongs to: direct, police through the report, CJIB through execution."""
    cols = ["_row", "case", "person", "age", "t", "event_id", "step", "chain_step", "in_period"]
    om = ev.filter(
        pc.and_(
            pc.is_in(ev["step"], value_set=pa.array(["om_registration", "om_decision"])),
            pc.and_(pc.is_valid(ev["report"]), pc.is_valid(ev["case"])),
        )
    )
    report_case = _distinct(om, ["report", "case"])
    execution_case = _distinct(
        ev.filter(pc.and_(pc.is_valid(ev["execution"]), pc.is_valid(ev["case"]))), ["execution", "case"]
    )
    direct = ev.filter(pc.is_valid(ev["case"])).select(cols)
    no_case = ev.filter(pc.is_null(ev["case"])).drop_columns(["_concepts"])
    police = no_case.filter(pc.equal(no_case["step"], "police_registration")).drop_columns(["case"])
    police = police.join(report_case, "report", join_type="inner", use_threads=False).select(cols)
    cjib = no_case.filter(pc.is_valid(no_case["execution"])).drop_columns(["case"])
    cjib = cjib.join(execution_case, "execution", join_type="inner", use_threads=False).select(cols)
    return pa.concat_tables([direct, police, cjib])


def _anomalies(times: dict[str, pa.ChunkedArray], multiple_persons: pa.ChunkedArray, n: int) -> pa.Array:
    """One list of anomaly names per row, in a fixed order; empty when the case is in order."""
    flags: list[tuple[str, pa.ChunkedArray]] = []
    for i, earlier in enumerate(STEPS):
        for later in STEPS[i + 1 :]:
            out_of_order = pc.fill_null(pc.less(times[later], times[earlier]), False)
            flags.append((f"{later.upper()}_BEFORE_{earlier.upper()}", out_of_order))
    flags.append(("MULTIPLE_PERSONS", pc.fill_null(multiple_persons, False)))
    rows = pa.array(range(n), pa.int64())
    counts = pa.repeat(pa.scalar(0, pa.int32()), n)
    hits = []
    for order, (name, flag) in enumerate(flags):
        counts = pc.add(counts, pc.cast(flag, pa.int32()))
        chosen = rows.filter(flag.combine_chunks() if isinstance(flag, pa.ChunkedArray) else flag)
        hits.append(
            pa.table(
                {
                    "row": chosen,
                    "order": pa.repeat(pa.scalar(order, pa.int32()), len(chosen)),
                    "name": pa.repeat(pa.scalar(name, pa.string()), len(chosen)),
                }
            )
        )
    found = pa.concat_tables(hits).sort_by([("row", "ascending"), ("order", "ascending")])
    counts = counts.combine_chunks() if isinstance(counts, pa.ChunkedArray) else counts
    offsets = pa.concat_arrays(
        [pa.array([0], pa.int32()), pc.cumulative_sum(counts).cast(pa.int32())]
        if n
        else [pa.array([0], pa.int32())]
    )
    return pa.ListArray.from_arrays(offsets, found["name"].combine_chunks())


def _offence(ev: pa.Table, linked: pa.Table) -> pa.Table:
    """Per case: the most detailed SCM2010 concept of the best source step, with its label and source."""
    concepts = ev["_concepts"].combine_chunks()
    flat = pc.list_flatten(concepts)
    parents = pc.list_parent_indices(concepts).cast(pa.int64())
    rows = pc.take(ev["_row"], parents)
    scm = pc.fill_null(pc.equal(pc.struct_field(flat, "vocabulary"), "scm2010"), False)
    concept_rows = pa.table(
        {
            "_row": rows.filter(scm) if isinstance(rows, pa.Array) else rows.combine_chunks().filter(scm),
            "code": pc.struct_field(flat, "code").filter(scm),
            "label": pc.struct_field(flat, "label").filter(scm),
        }
    )
    priority = pa.nulls(linked.num_rows, pa.int8())
    for rank, step in enumerate(_OFFENCE_SOURCES):
        priority = pc.if_else(pc.equal(linked["step"], step), pa.scalar(rank, pa.int8()), priority)
    sources = linked.select(["_row", "case", "group", "t", "event_id", "step"])
    sources = sources.append_column("priority", priority)
    sources = sources.filter(pc.is_valid(sources["priority"]))
    joined = sources.join(concept_rows, "_row", join_type="inner", use_threads=False)
    joined = joined.append_column("depth", pc.utf8_length(joined["code"]))
    joined = joined.sort_by(
        [
            ("group", "ascending"),
            ("priority", "ascending"),
            ("depth", "descending"),
            ("t", "ascending"),
            ("event_id", "ascending"),
            ("code", "ascending"),
        ]
    )
    best = _first_per_key(joined, "group")
    return pa.table(
        {
            "case": best["case"],
            "offence_scm2010": best["code"],
            "offence_scm2010_main": pc.utf8_slice_codeunits(best["code"], 0, 1),
            "offence_label": best["label"],
            "offence_source": best["step"],
        }
    )


def chain_table(
    events: pa.Table,
    period: str,
    stages: Mapping[str, tuple[str, ...]] | None = None,
    *,
    identities: Identities | None = None,
) -> pa.Table:
    """One row per case pseudonym with an event in ``period``: step times, lead times, person, offence.

    Columns and types are ``CHAIN_SCHEMA``; see the module docstring for how steps are linked.
    ``stages`` says which chain steps count for which stage (default: the catalogue's). ``identities``
    resolves persons across SKN and BSN (``ketenstroom.identity``); by default from the events' own links.
    """
    ev = _prepare(events, period, stages, identities)
    linked = _case_events(ev)
    cases = _distinct(linked.filter(linked["in_period"]), ["case"])
    linked = linked.filter(pc.is_in(linked["case"], value_set=cases["case"].combine_chunks()))
    # Group by an integer code of the case (sorting 64-character pseudonyms is ten times slower); the
    # code's order is arbitrary, only contiguity matters; the output is sorted by pseudonym at the end.
    group = pc.dictionary_encode(linked["case"].combine_chunks()).indices
    linked = linked.append_column("group", group)
    linked = linked.sort_by([("group", "ascending"), ("t", "ascending"), ("event_id", "ascending")])

    table = cases
    stepped = linked.filter(pc.is_valid(linked["step"]))
    firsts = stepped.group_by(["case", "step"], use_threads=False).aggregate([("t", "min")])
    for step in STEPS:
        part = firsts.filter(pc.equal(firsts["step"], step))
        table = _left(table, part.select(["case", "t_min"]).rename_columns(["case", f"{step}_time"]), "case")

    with_person = linked.filter(pc.is_valid(linked["person"]))
    person = _first_per_key(with_person, "group").select(["case", "person"])
    persons = with_person.group_by("case", use_threads=False).aggregate([("person", "count_distinct")])
    with_age = linked.filter(pc.is_valid(linked["age"]))
    first_age = _first_per_key(with_age, "group").select(["case", "age"])
    police_ages = with_age.filter(pc.equal(with_age["step"], "police_registration"))
    police_age = _first_per_key(police_ages, "group").select(["case", "age"])
    table = _left(table, person, "case")
    table = _left(table, persons, "case")
    table = _left(table, police_age.rename_columns(["case", "age_at_police_registration"]), "case")
    table = _left(table, first_age.rename_columns(["case", "age_at_first_step"]), "case")
    table = _left(table, _offence(ev, linked), "case")
    table = table.sort_by("case").combine_chunks()
    # every chain step the case's linked events took, whatever partner declared it: a new partner's
    # events show up here without a new column (lists cannot be joined: aligned by the case order)
    pairs = _distinct(linked, ["case", "chain_step"]).sort_by("chain_step")
    steps = pairs.group_by("case", use_threads=False).aggregate([("chain_step", "list")]).sort_by("case")
    if not steps["case"].equals(table["case"]):
        raise AssertionError("chain steps and cases are not aligned")  # a bug, never bad input

    n = table.num_rows
    times = {step: table[f"{step}_time"] for step in STEPS}
    age = table["age_at_first_step"]
    juvenile = pc.and_(pc.greater_equal(age, 12), pc.less_equal(age, 17))
    columns = {
        "period": pa.repeat(pa.scalar(period, pa.string()), n),
        "case_pseudonym": table["case"],
        "person_pseudonym": table["person"],
        **{f"{step}_time": times[step] for step in STEPS},
        **{lead_time_column(a, b): _days_between(times[a], times[b]) for a, b in LEAD_TIMES},
        "furthest_step": _furthest(times, n),
        "age_at_police_registration": table["age_at_police_registration"],
        "age_at_first_step": age,
        "juvenile": juvenile,
        "offence_scm2010": table["offence_scm2010"],
        "offence_scm2010_main": table["offence_scm2010_main"],
        "offence_label": table["offence_label"],
        "offence_source": table["offence_source"],
        "anomalies": _anomalies(times, pc.greater(table["person_count_distinct"], 1), n),
        "chain_steps": steps["chain_step_list"],
    }
    return pa.table(columns).cast(CHAIN_SCHEMA)


# -- person table --------------------------------------------------------------------------------------


def person_table(
    events: pa.Table,
    period: str,
    stages: Mapping[str, tuple[str, ...]] | None = None,
    *,
    identities: Identities | None = None,
) -> pa.Table:
    """One row per resolved person with an event in ``period``; columns and types are ``PERSON_SCHEMA``.

    ``person_pseudonym`` is the resolved person id (``ketenstroom.identity``: the SKN pseudonym, or the BSN
    pseudonym of a person known only by BSN; ``person_id_source`` says which), so a person known by BSN
    at the police and by SKN later is one row. ``events_in_period`` and ``cases_in_period`` count the
    person's events and distinct case pseudonyms in the period; ``cases_total`` counts distinct case
    pseudonyms up to the end of the period; ``reached_<step>`` and ``furthest_step`` say which chain
    steps the person's own events (events resolving to the person) reached by the end of the period,
    across all their cases. ``identity_conflict`` flags a person whose SKN is linked through a shared
    BSN to another SKN: not merged, see the rule in ``ketenstroom.identity``. ``identities`` defaults to the
    events' own link evidence.
    """
    if identities is None:
        _start, end = period_bounds(period)
        identities = Identities.from_events(events.filter(pc.less(events["event_time"], pa.scalar(end, _TS))))
    ev = _prepare(events, period, stages, identities).drop_columns(["_concepts"])
    ev = ev.filter(pc.is_valid(ev["person"]))
    active = ev.filter(ev["in_period"])
    table = active.group_by("person", use_threads=False).aggregate(
        [("person", "count"), ("case", "count_distinct"), ("person_source", "min")]
    )
    table = table.rename_columns(["person", "events_in_period", "cases_in_period", "person_source"])
    total = ev.group_by("person", use_threads=False).aggregate([("case", "count_distinct")])
    table = _left(table, total.rename_columns(["person", "cases_total"]), "person")
    table = table.sort_by("person").combine_chunks()
    n = table.num_rows
    reached = {}
    for step in STEPS:
        who = ev.filter(pc.equal(ev["step"], step))["person"].unique()
        reached[step] = pc.is_in(table["person"], value_set=who)
    furthest: pa.ChunkedArray | pa.Array = pa.nulls(n, pa.string())
    for step in STEPS:
        furthest = pc.if_else(reached[step], step, furthest)
    columns = {
        "period": pa.repeat(pa.scalar(period, pa.string()), n),
        "person_pseudonym": table["person"],
        "events_in_period": table["events_in_period"],
        "cases_in_period": table["cases_in_period"],
        "cases_total": table["cases_total"],
        "furthest_step": furthest,
        **{f"reached_{step}": reached[step] for step in STEPS},
        "person_id_source": table["person_source"],
        "identity_conflict": identities.is_conflicted(table["person"]),
    }
    return pa.table(columns).cast(PERSON_SCHEMA)


# -- lead-time norms -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NormResult:
    """How a chain table measures up to a norm like "80% within 90 days"."""

    cases: int  # cases with both steps, in order (the denominator)
    met: int  # of those, cases with the lead time <= the norm's days
    share_met: float | None  # met / cases; None when there are no cases
    norm_met: bool | None  # share_met >= the norm's share; None when there are no cases
    out_of_order: int  # cases with both steps but the later one first: left out, count them apart


def lead_time_norm(
    chain: pa.Table,
    from_step: str,
    to_step: str,
    days: int,
    share: float,
    *,
    juvenile: bool | None = None,
) -> NormResult:
    """Share of cases whose ``to_step`` came within ``days`` calendar days of ``from_step``.

    E.g. the Kalsbeeknorm for OM decisions:
    ``lead_time_norm(chain, "police_registration", "om_decision", 90, 0.8, juvenile=True)``.
    Only cases that reached both steps count (a look-back measure over cases that reached ``to_step``);
    ``juvenile`` True/False restricts to juvenile/adult cases, None takes all.
    """
    for step in (from_step, to_step):
        if step not in STEPS:
            raise ValueError(f"{step!r} is not a chain step; use one of {', '.join(STEPS)}")
    if juvenile is not None:
        chain = chain.filter(pc.fill_null(pc.equal(chain["juvenile"], juvenile), False))
    start, end = chain[f"{from_step}_time"], chain[f"{to_step}_time"]
    both = chain.filter(pc.and_(pc.is_valid(start), pc.is_valid(end)))
    start, end = both[f"{from_step}_time"], both[f"{to_step}_time"]
    in_order = pc.greater_equal(end, start)
    lead = _days_between(start, end).filter(in_order)
    cases = len(lead)
    out_of_order = both.num_rows - cases
    if cases == 0:
        return NormResult(0, 0, None, None, out_of_order)
    met = pc.sum(pc.less_equal(lead, days).cast(pa.int64())).as_py()
    share_met = met / cases
    return NormResult(cases, met, share_met, share_met >= share, out_of_order)
