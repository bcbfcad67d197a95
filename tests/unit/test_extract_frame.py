"""The study frame on hand-built sources: population at the Amsterdam date boundary, generalisation
levels, per-case attributes from events, rare codes rolled up to their parent, re-keyed pseudonyms;
and the request checks that refuse before anything is read."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from extracts.catalogue import Catalogue, Policy, StudyRequest, resolve
from extracts.events import Reducer
from extracts.frame import build_frame, event_names, load_regions, load_scm
from extracts.rekey import study_key, study_pseudonym
from extracts.source import Sources
from ketenstroom.errors import ExtractError
from ketenstroom.settings import CatalogueSettings

PATHS = CatalogueSettings()
SECRET = b"unit-test-extract-secret-0123456789abcdef"
TS = pa.timestamp("ms", tz="UTC")


def _t(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def _catalogue(k: int = 5) -> Catalogue:
    return Catalogue.load(PATHS.publication_dir / "research.toml").model_copy(
        update={"policy": Policy(default_k=k, min_k=k)}
    )


def _request(columns: dict[str, str], **extra: object) -> StudyRequest:
    return StudyRequest.model_validate(
        {
            "study": "unit-study",
            "requester": "unit test",
            "periods": ["2026MM01", "2026MM02"],
            "columns": columns,
            "population": {"reached": "om_registration", "from": "2026-02-01", "to": "2026-03-01"},
            **extra,
        }
    )


def _sources() -> tuple[pa.Table, pa.Table, pa.Table]:
    chain = pa.table(
        {
            "period": [
                "2026MM01",
                "2026MM02",
                "2026MM02",
                "2026MM02",
                "2026MM02",
                "2026MM02",
                "2026MM02",
                "2026MM02",
            ],
            "case_pseudonym": ["c1", "c1", "c2", "c3", "c4", "c5", "c6", "c7"],
            "person_pseudonym": ["p1", "p1", "p2", "p3", "p4", "p4", "p6", "p7"],
            "om_registration_time": pa.array(
                [
                    None,
                    _t(2026, 1, 31, 23, 30),  # 00:30 on 1 February in Amsterdam: in
                    _t(2026, 2, 28, 23, 30),  # 00:30 on 1 March in Amsterdam: out
                    None,  # never reached the OM: out
                    _t(2026, 2, 10, 9),
                    _t(2026, 2, 11, 9),
                    _t(2026, 2, 12, 9),
                    _t(2026, 2, 13, 9),
                ],
                TS,
            ),
            "age_at_first_step": pa.array([17, 17, 30, 40, 45, 45, 70, 11], pa.int16()),
            "offence_scm2010": ["11", "111", "31", "31", "112", "112", "31", "31"],
        }
    )
    person = pa.table(
        {
            "period": ["2026MM02"] * 5,
            "person_pseudonym": ["p1", "p2", "p4", "p6", "p7"],
            "cases_total": pa.array([1, 1, 2, 7, 3], pa.int64()),
        }
    )
    concept = pa.struct([("vocabulary", pa.string()), ("code", pa.string())])
    events = pa.table(
        {
            "case_pseudonym": ["c1", "c1", "c1", "c1", "c4", "c5", "c6", "c7"],
            "event_time": pa.array(
                [
                    _t(2026, 1, 31, 23, 30),
                    _t(2026, 1, 20),  # earlier, without sex: the first non-missing one counts
                    _t(2026, 2, 20),
                    _t(2026, 3, 20),
                    _t(2026, 2, 10),
                    _t(2026, 2, 11),
                    _t(2026, 2, 12),
                    _t(2026, 2, 13),
                ],
                TS,
            ),
            "chain_step": [
                "OM_REGISTRATION",
                "POLICE_SUSPECT_REGISTERED",
                "OM_DECISION",
                "COURT_JUDGMENT",
                "OM_REGISTRATION",
                "OM_REGISTRATION",
                "OM_REGISTRATION",
                "OM_REGISTRATION",
            ],
            "sex": ["V", None, "M", "M", "M", "V", "M", "V"],
            "municipality_code": ["GM0599", "GM0363", None, None, "GM0363", "GM0014", "GM0772", "GM0518"],
            "concepts": pa.array(
                [
                    [],
                    [],
                    [{"vocabulary": "om-beslissing", "code": "DAGVAARDING"}],
                    [
                        {"vocabulary": "sanctie", "code": "GELDBOETE"},
                        {"vocabulary": "sanctie", "code": "GEVANGENISSTRAF"},
                        {"vocabulary": "rechtspraak-eindbeslissing", "code": "SCHULDIG_MET_STRAF"},
                    ],
                    [],
                    [],
                    [],
                    [],
                ],
                pa.list_(concept),
            ),
        }
    )
    return chain, person, events


def _reduced(chain: pa.Table, person: pa.Table, events: pa.Table, names: set[str]) -> Sources:
    """As ``read_sources`` hands them over: reduced per "file", combined later. c1's earliest municipality
    (20 January) and its first sex (31 January) sit in different files."""
    with Reducer(names) as reducer:
        halves = [reducer(events.take([0, 2, 4, 5])), reducer(events.take([1, 3, 6, 7]))]
    return Sources(
        chain=chain,
        person=person,
        case_events=pa.concat_tables([p for p, _ in halves]),
        event_pseudonyms=pa.concat_tables([v for _, v in halves]),
        used=[],
    )


def _frame(
    columns: dict[str, str], k: int = 5, sources: tuple[pa.Table, pa.Table, pa.Table] | None = None
) -> list[dict[str, object]]:
    resolved = resolve(_request(columns), _catalogue(k))
    table = build_frame(
        resolved,
        _reduced(*(sources or _sources()), event_names(resolved)),
        load_regions(PATHS.terminology_dir / "gemeente-regio.csv"),
        load_scm(PATHS.terminology_dir / "concepts.csv"),
        study_key(SECRET, "unit-study"),
    )
    return table.to_pylist()


def test_population_levels_and_attributes() -> None:
    rows = _frame(
        {
            "case": "study_pseudonym",
            "person": "study_pseudonym",
            "age": "cbs",
            "sex": "as_is",
            "region": "province",
            "om_registration_date": "week",
            "om_decision": "as_is",
            "court_outcome": "as_is",
            "sanction": "as_is",
            "cases_total": "band",
        }
    )
    key = study_key(SECRET, "unit-study")
    by_case = {r["case"]: r for r in rows}
    assert len(rows) == 5  # c1 (1 Feb local), c4, c5, c6, c7; not c2 (1 March local) nor c3 (no OM)
    c1 = by_case[study_pseudonym(key, "case", "c1")]
    assert c1 == {
        "case": study_pseudonym(key, "case", "c1"),
        "person": study_pseudonym(key, "person", "p1"),
        "age": "12-17",
        "sex": "V",  # the first event that has a sex
        "region": "PV27",  # the first municipality in time: GM0363 (Amsterdam), before GM0599
        "om_registration_date": "2026-W05",  # Sunday 1 February 2026, ISO week 5
        "om_decision": "DAGVAARDING",
        "court_outcome": "SCHULDIG_MET_STRAF",
        "sanction": "GEVANGENISSTRAF",  # the most severe of the judgment's sanctions
        "cases_total": "1",
    }
    assert sorted((r["age"], r["cases_total"]) for r in rows) == [
        ("0-11", "3-4"),
        ("12-17", "1"),
        ("45-64", "2"),
        ("45-64", "2"),
        ("65+", "5+"),
    ]


def test_month_band_and_corop_levels() -> None:
    rows = _frame({"age": "band5", "region": "corop", "om_registration_date": "month"})
    assert sorted((r["age"], r["region"], r["om_registration_date"]) for r in rows) == [
        ("10-14", "CR26", "2026-02"),
        ("15-19", "CR23", "2026-02"),
        ("45-49", "CR03", "2026-02"),
        ("45-49", "CR23", "2026-02"),
        ("70-74", "CR36", "2026-02"),
    ]


def test_rare_codes_become_their_parent() -> None:
    # population offences: c1 111, c4 112, c5 112, c6 31, c7 31; with k=2, 111 (once) becomes 11,
    # still once, so 1; 112 and 31 (twice each) stay
    assert sorted(r["offence"] for r in _frame({"offence": "rare_to_parent"}, k=2)) == [
        "1",
        "112",
        "112",
        "31",
        "31",
    ]
    assert sorted(r["offence"] for r in _frame({"offence": "scm2"}, k=2)) == ["11", "11", "11", "31", "31"]


def test_an_unknown_municipality_is_an_error_not_a_missing_region() -> None:
    chain, person, events = _sources()
    events = events.set_column(
        events.schema.get_field_index("municipality_code"),
        "municipality_code",
        pa.array(["GM9999", None, None, None, None, None, None, None]),
    )
    with pytest.raises(ExtractError, match="GM9999"):
        _frame({"region": "province"}, sources=(chain, person, events))


def test_requests_that_cannot_be_served_are_refused_before_reading(tmp_path: Path) -> None:
    catalogue = Catalogue.load(PATHS.publication_dir / "research.toml")
    with pytest.raises(ExtractError) as refused:
        resolve(_request({"bsn": "as_is", "age": "year", "om_registration_date": "day"}, k=3, l=1), catalogue)
    message = str(refused.value)
    assert "'bsn' is not in the research catalogue" in message
    assert "level 'year' is not allowed" in message and "level 'day' is not allowed" in message
    assert "k = 3 is below the platform's minimum 5" in message and "l = 1 is below" in message
    bad = tmp_path / "r.toml"
    bad.write_text('study = "X Y"\nrequester = "r"\nperiods = ["2026-01"]\n[columns]\nage = "cbs"\n')
    with pytest.raises(ExtractError) as invalid:
        StudyRequest.load(bad)
    assert "study id" in str(invalid.value) and "CBS period code" in str(invalid.value)


def test_the_catalogue_offers_no_exact_value() -> None:
    catalogue = Catalogue.load(PATHS.publication_dir / "research.toml")
    levels = {level for spec in catalogue.columns.values() for level in spec.levels}
    assert not levels & {"day", "date", "exact", "municipality", "birth_date"}
    keys = {name for name, spec in catalogue.columns.items() if spec.kind == "key"}
    assert keys == {"case", "person"}
    assert all(catalogue.columns[k].levels == ["study_pseudonym"] for k in keys)


def test_the_example_request_is_served_by_the_catalogue() -> None:
    request = StudyRequest.load(PATHS.publication_dir / "requests" / "example-om-lead-times.toml")
    resolved = resolve(request, Catalogue.load(PATHS.publication_dir / "research.toml"))
    assert (resolved.k, resolved.l, resolved.suppression_budget) == (5, 2, 0.02)
    assert resolved.of_kind("quasi") == ["age", "sex", "region", "om_registration_date"]


def test_every_generated_municipality_has_a_region() -> None:
    from synthetic.codes import MUNICIPALITIES

    regions = {
        r["municipality_code"]: r
        for r in load_regions(PATHS.terminology_dir / "gemeente-regio.csv").to_pylist()
    }
    assert set(MUNICIPALITIES) <= set(regions)
    assert all(
        r["corop_code"].startswith("CR") and r["province_code"].startswith("PV") for r in regions.values()
    )
