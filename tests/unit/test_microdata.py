"""Linked microdata: chain table, person table and lead-time norms on small hand-built event tables."""

from __future__ import annotations

import io
import random
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ketenstroom.calendar import period_code
from sinks.microdata import CHAIN_SCHEMA, PERSON_SCHEMA, chain_table, lead_time_norm, person_table
from sinks.parquet import SCHEMA

_ids = count(1)


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def _concept(vocabulary: str, code: str, label: str = "") -> dict[str, str]:
    return {
        "vocabulary": vocabulary,
        "code": code,
        "label": label or code,
        "counting_unit": "feit",
        "source_code_system": "TEST",
        "source_code": code,
    }


def ev(
    when: datetime,
    chain_step: str,
    *,
    case: str | None = None,
    report: str | None = None,
    execution: str | None = None,
    person: str | None = None,
    age: int | None = None,
    concepts: tuple[dict[str, str], ...] = (),
) -> dict[str, Any]:
    """One snapshot row as the sink writes it; the period is the month of the event's local date."""
    return {
        "period": period_code(when, "month"),
        "event_id": f"e{next(_ids):04d}",
        "source_partner": "test",
        "source_event_type": "test",
        "source_system": "TEST",
        "event_time": when,
        "registration_time": when,
        "chain_step": chain_step,
        "case_pseudonym": case,
        "report_pseudonym": report,
        "execution_pseudonym": execution,
        "person_pseudonym": person,
        "age_at_event": age,
        "concepts": list(concepts),
        "mapping_version": "t1",
        "pseudonym_key_id": "k1",
        "processed_time": when,
    }


def table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist([{name: row.get(name) for name in SCHEMA.names} for row in rows], SCHEMA)


SCM_MISHANDELING = (
    _concept("scm2010", "3", "Gewelds- en seksuele misdrijven"),
    _concept("scm2010", "31", "Mishandeling"),
)
SCM_DIEFSTAL = (
    _concept("scm2010", "1"),
    _concept("scm2010", "11"),
    _concept("scm2010", "112", "Diefstal zonder geweld"),
)


def chain_events() -> list[dict[str, Any]]:
    return [
        # Case C1, juvenile P1: police in March (before the summer-time change of 29 Mar 2026, 01:00 UTC),
        # OM registration in April, decision in May. Police events carry only the report R1.
        # 28 Mar 23:30 UTC is 29 Mar 00:30 CET: the local date is 29 Mar.
        ev(_utc(2026, 3, 28, 23, 30), "POLICE_CRIME_REGISTERED", report="R1", concepts=SCM_DIEFSTAL),
        ev(_utc(2026, 3, 29, 9, 0), "POLICE_SUSPECT_REGISTERED", report="R1", person="P1", age=16),
        ev(_utc(2026, 3, 30, 9, 0), "POLICE_REPORT_SENT_TO_OM", report="R1", person="P1", age=16),
        # 2 Apr 22:30 UTC is 3 Apr 00:30 CEST: 5 calendar days after 29 Mar (4.96 days exactly).
        ev(
            _utc(2026, 4, 2, 22, 30),
            "OM_REGISTRATION",
            case="C1",
            report="R1",
            person="P1",
            age=17,
            concepts=SCM_MISHANDELING,
        ),
        # 10 May 21:45 UTC is 10 May 23:45 CEST: 42 calendar days after 29 Mar (43 UTC dates apart).
        ev(_utc(2026, 5, 10, 21, 45), "OM_DECISION", case="C1", report="R1", person="P1", age=17),
        # Case C2, adult P2, all in May: the decision is dated before the registration; pre-trial
        # detention is no execution; the CJIB collection carries only the execution pseudonym E2 and
        # is linked through the payment, which carries both.
        ev(_utc(2026, 5, 3, 10, 0), "POLICE_SUSPECT_REGISTERED", report="R2", person="P2", age=30),
        ev(_utc(2026, 5, 20, 10, 0), "OM_REGISTRATION", case="C2", report="R2", person="P2", age=30),
        ev(_utc(2026, 5, 15, 10, 0), "OM_DECISION", case="C2", report="R2", person="P2", age=30),
        ev(
            _utc(2026, 5, 21, 10, 0),
            "DETENTION_INFLOW",
            case="C2",
            person="P2",
            age=30,
            concepts=(_concept("detentie-titel", "VOORLOPIGE_HECHTENIS"),),
        ),
        ev(_utc(2026, 5, 25, 8, 0), "EXECUTION_COLLECTION_STARTED", execution="E2", person="P2", age=30),
        ev(_utc(2026, 5, 28, 8, 0), "EXECUTION_PAYMENT_RECEIVED", case="C2", execution="E2"),
        ev(_utc(2026, 5, 29, 8, 0), "SUPERVISION_STARTED", case="C2", person="P2", age=30),
        # Case C3: only March events; not in May's table.
        ev(_utc(2026, 3, 2, 10, 0), "OM_REGISTRATION", case="C3", report="R3", person="P3", age=40),
        ev(_utc(2026, 3, 20, 10, 0), "OM_DECISION", case="C3", report="R3", person="P3", age=40),
        # Case C4: registration only, no police events for its report, no person.
        ev(_utc(2026, 5, 5, 10, 0), "OM_REGISTRATION", case="C4", report="R4"),
        # Case C5: P2's second case, registration and judgment in May.
        ev(_utc(2026, 5, 6, 10, 0), "OM_REGISTRATION", case="C5", report="R5", person="P2", age=30),
        ev(_utc(2026, 5, 30, 10, 0), "COURT_JUDGMENT", case="C5", person="P2", age=30),
        # A report that never reached the OM, and a June event that May must not see.
        ev(_utc(2026, 5, 7, 10, 0), "POLICE_SUSPECT_REGISTERED", report="R9", person="P9", age=22),
        ev(_utc(2026, 6, 1, 10, 0), "COURT_JUDGMENT", case="C1", person="P1", age=17),
    ]


@pytest.fixture(scope="module")
def may() -> dict[str, dict[str, Any]]:
    out = chain_table(table(chain_events()), "2026MM05")
    assert out.schema == CHAIN_SCHEMA
    return {row["case_pseudonym"]: row for row in out.to_pylist()}


def test_cases_with_an_event_in_the_period_only(may: dict[str, dict[str, Any]]) -> None:
    assert list(may) == ["C1", "C2", "C4", "C5"]  # sorted; C3 (March only) and R9 (no OM case) absent
    assert {row["period"] for row in may.values()} == {"2026MM05"}


def test_lead_times_are_amsterdam_calendar_days_across_periods_and_dst(
    may: dict[str, dict[str, Any]],
) -> None:
    c1 = may["C1"]
    assert c1["police_registration_time"] == _utc(2026, 3, 28, 23, 30)  # earliest police event, March
    assert c1["om_registration_time"] == _utc(2026, 4, 2, 22, 30)
    assert c1["om_decision_time"] == _utc(2026, 5, 10, 21, 45)
    assert c1["days_police_registration_to_om_registration"] == 5  # not 4 (exact 4.96 days)
    assert c1["days_police_registration_to_om_decision"] == 42  # not 43 (UTC dates)
    assert c1["days_om_registration_to_om_decision"] == 37
    assert c1["anomalies"] == []


def test_police_links_to_the_case_through_the_report(may: dict[str, dict[str, Any]]) -> None:
    assert may["C2"]["police_registration_time"] == _utc(2026, 5, 3, 10, 0)
    assert may["C2"]["age_at_police_registration"] == 30
    assert may["C1"]["age_at_police_registration"] == 16  # suspect registration; OM has 17
    assert may["C1"]["age_at_first_step"] == 16
    assert may["C1"]["juvenile"] is True
    assert may["C2"]["juvenile"] is False
    assert may["C1"]["person_pseudonym"] == "P1"


def test_missing_steps_are_null(may: dict[str, dict[str, Any]]) -> None:
    c1, c4 = may["C1"], may["C4"]
    assert c1["judgment_time"] is None  # the June judgment is after the period
    assert c1["execution_start_time"] is None
    assert c1["days_om_decision_to_judgment"] is None
    assert c1["days_police_registration_to_execution_start"] is None
    assert c1["furthest_step"] == "om_decision"
    assert c4["police_registration_time"] is None
    assert c4["days_police_registration_to_om_registration"] is None
    assert c4["person_pseudonym"] is None
    assert c4["age_at_first_step"] is None
    assert c4["juvenile"] is None
    assert c4["furthest_step"] == "om_registration"


def test_execution_links_through_the_execution_pseudonym_and_skips_pre_trial_detention(
    may: dict[str, dict[str, Any]],
) -> None:
    c2 = may["C2"]
    assert c2["execution_start_time"] == _utc(2026, 5, 25, 8, 0)  # CJIB, not the 21 May VH inflow
    assert c2["days_police_registration_to_execution_start"] == 22
    assert c2["furthest_step"] == "execution_start"


def test_out_of_order_steps_keep_the_value_and_are_flagged(may: dict[str, dict[str, Any]]) -> None:
    c2 = may["C2"]
    assert c2["days_om_registration_to_om_decision"] == -5
    assert c2["anomalies"] == ["OM_DECISION_BEFORE_OM_REGISTRATION"]
    assert may["C5"]["anomalies"] == []


def test_offence_prefers_the_om_qualification_at_its_most_detailed(may: dict[str, dict[str, Any]]) -> None:
    c1 = may["C1"]  # police said theft (112), the OM registered assault (31)
    assert (c1["offence_scm2010"], c1["offence_scm2010_main"]) == ("31", "3")
    assert (c1["offence_label"], c1["offence_source"]) == ("Mishandeling", "om_registration")
    assert may["C2"]["offence_scm2010"] is None


def test_earlier_period_sees_the_state_at_its_own_end() -> None:
    april = {r["case_pseudonym"]: r for r in chain_table(table(chain_events()), "2026MM04").to_pylist()}
    assert list(april) == ["C1"]
    assert april["C1"]["om_decision_time"] is None  # May's decision is not known at the end of April
    march = chain_table(table(chain_events()), "2026MM03")
    # R1's police events are in March, but the OM registration linking them to C1 only comes in April
    assert march["case_pseudonym"].to_pylist() == ["C3"]


def test_multiple_persons_on_one_case_are_flagged() -> None:
    rows = [
        ev(_utc(2026, 5, 1, 10, 0), "OM_REGISTRATION", case="C", person="A", age=20),
        ev(_utc(2026, 5, 2, 10, 0), "OM_DECISION", case="C", person="B", age=20),
    ]
    (row,) = chain_table(table(rows), "2026MM05").to_pylist()
    assert row["person_pseudonym"] == "A"
    assert row["anomalies"] == ["MULTIPLE_PERSONS"]


def test_person_table_counts() -> None:
    out = person_table(table(chain_events()), "2026MM05")
    assert out.schema == PERSON_SCHEMA
    rows = {r["person_pseudonym"]: r for r in out.to_pylist()}
    assert list(rows) == ["P1", "P2", "P9"]  # P3 is March only
    p1, p2, p9 = rows["P1"], rows["P2"], rows["P9"]
    assert (p1["events_in_period"], p1["cases_in_period"], p1["cases_total"]) == (1, 1, 1)
    assert p1["furthest_step"] == "om_decision"
    assert [p1[f"reached_{s}"] for s in ("police_registration", "judgment")] == [True, False]
    # P2: 8 events carry P2 in May (the payment carries no person); cases C2 and C5
    assert (p2["events_in_period"], p2["cases_in_period"], p2["cases_total"]) == (8, 2, 2)
    assert p2["reached_judgment"] and p2["reached_execution_start"]
    assert p2["furthest_step"] == "execution_start"
    assert (p9["events_in_period"], p9["cases_in_period"], p9["furthest_step"]) == (
        1,
        0,
        "police_registration",
    )


def test_same_input_in_any_order_gives_identical_parquet() -> None:
    rows = chain_events()
    shuffled = rows[:]
    random.Random(7).shuffle(shuffled)
    outputs = []
    for batch in (rows, shuffled):
        for fn in (chain_table, person_table):
            buf = io.BytesIO()
            pq.write_table(fn(table(batch), "2026MM05"), buf)
            outputs.append(buf.getvalue())
    assert outputs[0] == outputs[2]
    assert outputs[1] == outputs[3]


def test_empty_input_gives_empty_tables() -> None:
    assert chain_table(table([]), "2026MM05").schema == CHAIN_SCHEMA
    assert chain_table(table([]), "2026MM05").num_rows == 0
    assert person_table(table([]), "2026MM05").num_rows == 0


def _norm_chain(cases: list[tuple[bool | None, int | None]]) -> pa.Table:
    start = _utc(2026, 1, 5, 10, 0)
    return pa.table(
        {
            "juvenile": pa.array([j for j, _ in cases], pa.bool_()),
            "police_registration_time": pa.array([start] * len(cases), pa.timestamp("ms", tz="UTC")),
            "om_decision_time": pa.array(
                [None if d is None else start + timedelta(days=d) for _, d in cases],
                pa.timestamp("ms", tz="UTC"),
            ),
        }
    )


def test_lead_time_norm_on_a_hand_built_table() -> None:
    chain = _norm_chain(
        [(True, 10), (True, 90), (True, 91), (True, 30), (True, None), (True, -3), (False, 200), (None, 5)]
    )
    kalsbeek = lead_time_norm(chain, "police_registration", "om_decision", 90, 0.8, juvenile=True)
    assert (kalsbeek.cases, kalsbeek.met, kalsbeek.out_of_order) == (4, 3, 1)  # 90 days is within
    assert kalsbeek.share_met == 0.75
    assert kalsbeek.norm_met is False
    assert lead_time_norm(chain, "police_registration", "om_decision", 90, 0.75, juvenile=True).norm_met
    everyone = lead_time_norm(chain, "police_registration", "om_decision", 90, 0.8)
    assert (everyone.cases, everyone.met) == (6, 4)
    adults = lead_time_norm(chain, "police_registration", "om_decision", 90, 0.8, juvenile=False)
    assert (adults.cases, adults.met, adults.norm_met) == (1, 0, False)
    none = lead_time_norm(_norm_chain([]), "police_registration", "om_decision", 90, 0.8)
    assert (none.cases, none.share_met, none.norm_met) == (0, None, None)
    with pytest.raises(ValueError, match="chain step"):
        lead_time_norm(chain, "police", "om_decision", 90, 0.8)


def test_chain_steps_name_every_step_of_the_linked_case_events(may: dict[str, dict[str, Any]]) -> None:
    # C2's police step is linked through the report, the CJIB collection through the execution
    # pseudonym; pre-trial detention is no execution start but is still a step the case took.
    assert may["C2"]["chain_steps"] == [
        "DETENTION_INFLOW",
        "EXECUTION_COLLECTION_STARTED",
        "EXECUTION_PAYMENT_RECEIVED",
        "OM_DECISION",
        "OM_REGISTRATION",
        "POLICE_SUSPECT_REGISTERED",
        "SUPERVISION_STARTED",
    ]
    assert may["C4"]["chain_steps"] == ["OM_REGISTRATION"]
    assert "COURT_JUDGMENT" not in may["C1"]["chain_steps"]  # June's judgment is after May's end


def test_a_step_counts_for_the_stage_the_catalogue_gives_it() -> None:
    rows = [
        ev(_utc(2026, 5, 2, 10, 0), "RVDK_ADVICE_ISSUED", case="C9", person="P9", age=16),
        ev(_utc(2026, 5, 12, 10, 0), "OM_DECISION", case="C9", person="P9", age=16),
    ]
    plain = {r["case_pseudonym"]: r for r in chain_table(table(rows), "2026MM05").to_pylist()}["C9"]
    assert plain["om_registration_time"] is None and plain["chain_steps"] == [
        "OM_DECISION",
        "RVDK_ADVICE_ISSUED",
    ]
    stages = {"om_registration": ("RVDK_ADVICE_ISSUED",), "om_decision": ("OM_DECISION",)}
    declared = chain_table(table(rows), "2026MM05", stages).to_pylist()[0]
    assert declared["om_registration_time"] == _utc(2026, 5, 2, 10, 0)
    assert declared["days_om_registration_to_om_decision"] == 10
