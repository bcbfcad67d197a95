from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from ketenstroom.catalogue import catalogue_at
from ketenstroom.catalogue.terminology import load_terminology
from ketenstroom.contract import frame, load_schemas
from ketenstroom.contract.codec import decode, encode
from ketenstroom.errors import DecodeError, TerminologyError, UnknownCodeError
from ketenstroom.settings import CatalogueSettings
from processors.pseudonym import BSN_FAILED_11_CHECK, Pseudonymiser, age_at
from processors.transform import RawRecord, Transformer, load_municipalities, plans

PATHS = CatalogueSettings()
SCHEMAS = load_schemas(PATHS.schema_dir)
KEY = b"k" * 32


def test_person_pseudonym_prefers_skn_and_flags_a_bad_bsn() -> None:
    p = Pseudonymiser(KEY, "k1")
    assert p.person("12345678", "123456782").source == "SKN"
    by_bsn = p.person(None, "123456782")
    assert by_bsn.source == "BSN" and by_bsn.pseudonym and len(by_bsn.pseudonym) == 64
    bad = p.person(None, "123456789")
    assert (bad.pseudonym, bad.source, bad.flags) == (None, "NONE", (BSN_FAILED_11_CHECK,))
    assert p.person("12345678", "123456789").flags == (BSN_FAILED_11_CHECK,)


def test_pseudonyms_are_keyed_domain_separated_and_spelling_independent() -> None:
    p = Pseudonymiser(KEY, "k1")
    assert p.case("13-246712-15") == p.case("13/246712-15")
    assert p.person("1324671215", None).pseudonym != p.case("13-246712-15")
    rotated = Pseudonymiser(b"r" * 32, "k2")
    assert rotated.case("13-246712-15") != p.case("13-246712-15")
    assert "kkkk" not in repr(p)


def test_age_at_event_counts_birthdays() -> None:
    assert age_at(date(2000, 3, 1), datetime(2026, 2, 28, tzinfo=UTC)) == 25
    assert age_at(date(2000, 3, 1), datetime(2026, 3, 1, tzinfo=UTC)) == 26


def _write_table(tmp_path: Path, rows: list[str]) -> Path:
    (tmp_path / "manifest.toml").write_text(
        'version = "t1"\nconcepts = "c.csv"\n[[tables]]\nfile = "t.csv"\n'
    )
    (tmp_path / "c.csv").write_text(
        "vocabulary,code,label,parent\nv,OLD,Old,\nv,NEW,New,\nw,EXTRA,Extra,\nv,X,X,\n"
    )
    header = (
        "source_code_system,source_code,vocabulary,target_code,target_label,counting_unit,valid_from,valid_to"
    )
    (tmp_path / "t.csv").write_text("\n".join([header, *rows]) + "\n")
    return tmp_path


def test_terminology_picks_mapping_by_event_date_and_allows_n_to_m(tmp_path: Path) -> None:
    terms = load_terminology(
        _write_table(
            tmp_path,
            [
                "S,A,v,OLD,Old,zaak,2000-01-01,2026-01-01",
                "S,A,v,NEW,New,zaak,2026-01-01,",
                "S,A,w,EXTRA,Extra,feit,2000-01-01,",
            ],
        )
    )
    assert [c["code"] for c in terms.lookup("S", "A", "1", date(2025, 12, 31))] == ["OLD", "EXTRA"]
    assert [c["code"] for c in terms.lookup("S", "A", "1", date(2026, 1, 1))] == ["NEW", "EXTRA"]
    with pytest.raises(UnknownCodeError, match=r"'B' of code system S \(version 7\)"):
        terms.lookup("S", "B", "7", date(2026, 1, 1))


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["S,A,v,X,X,zaak,2000-01-01,", "S,A,v,X,X,zaak,2020-01-01,"], "overlaps"),
        (["S,A,v,X,X,zaak,2020-01-01,2010-01-01"], "not after valid_from"),
        (["S,A,v,X,,zaak,2020-01-01,"], "empty target_label"),
        (["S,A,v,X,X,zaak,01-01-2020,"], "not an ISO date"),
        (["S,A,v,NOPE,Nope,zaak,2020-01-01,"], "not defined in the concept list"),
        (["S,A,v,X,X,zaak,2000-01-01,2010-01-01", "S,A,v,X,X,zaak,2011-01-01,"], "gap in validity"),
    ],
)
def test_bad_tables_are_refused_with_file_and_line(tmp_path: Path, rows: list[str], message: str) -> None:
    with pytest.raises(TerminologyError, match=message) as info:
        load_terminology(_write_table(tmp_path, rows))
    assert "t.csv:" in str(info.value) or "gap" in str(info.value)


def test_shipped_terminology_validates() -> None:
    terms = load_terminology(PATHS.terminology_dir)
    assert terms.version and len(terms) >= 80
    # sepot ground 04 (burgerlijk rechter bevoegd) was dropped in 2022: valid before, unknown after
    assert terms.lookup("OM.SEPOTGROND", "04", "2022A004", date(2021, 6, 1))[0]["code"] == "TECHNISCH"
    with pytest.raises(UnknownCodeError):
        terms.lookup("OM.SEPOTGROND", "04", "2022A004", date(2022, 6, 1))
    # N:M: a theft with violence is one feit in three SCM2010 levels
    codes = [c["code"] for c in terms.lookup("WETSARTIKEL", "312 Sr", "2026", date(2026, 1, 1))]
    assert codes == ["1", "11", "111"]


def _known_schema(schema_id: int, parsed: object) -> object:
    if schema_id != 1:  # what the registry adapter raises for an id it does not know
        raise DecodeError(f"schema id {schema_id} is unknown", reason="unknown-schema-id")
    return parsed


def _transformer() -> Transformer:
    chain = SCHEMAS["nl.ketenstroom.curated.ChainEvent"]
    decision = SCHEMAS["nl.ketenstroom.om.CaseDecision"]
    return Transformer(
        pseudonymiser=Pseudonymiser(KEY, "k1"),
        terminology=load_terminology(PATHS.terminology_dir),
        municipalities=load_municipalities(PATHS.terminology_dir / "pc4-gemeente.csv"),
        plans=plans(catalogue_at(PATHS.dir)),
        writer_schema=lambda schema_id: _known_schema(schema_id, decision.parsed),
        curated_schema_id=2,
        curated_schema=chain.parsed,
        clock=lambda: datetime(2026, 11, 1, tzinfo=UTC),
    )


def _raw(code: str, *, bsn: str | None = "123456782", offset: int = 0) -> RawRecord:
    decision = SCHEMAS["nl.ketenstroom.om.CaseDecision"]
    moment = datetime(2026, 3, 2, 9, 15, tzinfo=UTC)
    record = {
        "metadata": {
            "event_id": "6f1c9a4e-1111-5222-8333-944455556666",
            "partner": "OM",
            "source_system": "COMPAS",
            "source_record_id": "OM1",
            "record_version": 1,
            "event_time": moment,
            "registration_time": moment,
            "delivery_time": moment,
        },
        "suspect": {
            "skn": None,
            "bsn": bsn,
            "birth_date": date(1990, 5, 17),
            "sex": "V",
            "postcode": "3011 AB",
        },
        "case": {"parketnummer": "10/123456-26", "pv_number": "PL07B3 2026123456-1"},
        "decision": {"code_system": "OM.AFDOENING", "code": code, "code_system_version": "2024"},
        "sepot_ground": None,
        "offence": None,
    }
    return RawRecord("raw.om", 0, offset, b"10/123456-26", frame(1, encode(decision.parsed, record)))


def test_transform_pseudonymises_generalises_and_maps() -> None:
    curated, dead = _transformer().transform_batch([_raw("SEPO")])
    assert not dead and len(curated) == 1
    chain = SCHEMAS["nl.ketenstroom.curated.ChainEvent"]
    event = decode(chain.parsed, curated[0].value[5:])
    assert curated[0].value[:5] == b"\x00\x00\x00\x00\x02"
    assert event["person_pseudonym_source"] == "BSN"
    assert (event["birth_year"], event["age_at_event"], event["municipality_code"]) == (1990, 35, "GM0599")
    assert [c["code"] for c in event["concepts"]] == ["ONVOORWAARDELIJK_SEPOT"]
    assert curated[0].key == event["case_pseudonym"].encode()
    text = repr(event)
    for identifier in ("123456782", "123456-26", "2026123456", "1990-05-17", "3011"):
        assert identifier not in text


def test_unknown_code_and_garbage_become_dead_letters_with_origin() -> None:
    garbage = RawRecord("raw.om", 1, 41, b"k", b"\x00\x00\x00\x00\x09junk")
    curated, dead = _transformer().transform_batch(
        [_raw("XXXX", offset=40), garbage, _raw("DAGV", offset=42)]
    )
    assert len(curated) == 1
    assert [(d.reason, d.stage, d.source.offset) for d in dead] == [
        ("unknown-code", "transform", 40),
        ("unknown-schema-id", "decode", 41),
    ]
    headers = dict(dead[0].headers())
    assert headers["ketenstroom.source.offset"] == b"40"
    assert b"XXXX" in headers["ketenstroom.error"]


def test_legacy_changelog_records_yield_ids_of_both_forms() -> None:
    from processors.dedup import legacy_ids

    assert legacy_ids(b"1200.0", b"id-a\nid-b") == ["id-a", "id-b"]
    assert legacy_ids(b"id-c", b"1") == ["id-c"]


def test_reconciliation_counts_batches_of_either_runner() -> None:
    from processors.progress import Reconciliation
    from processors.transform import Curated, DeadLetter

    records = [RawRecord("p.raw.om", 0, offset, b"k", b"v") for offset in range(4)]
    sent = [Curated(b"k", b"v", records[0], "e0", 0.0), Curated(b"k", b"v", records[1], "e1", 0.0)]
    dead = [DeadLetter(records[2], "unknown-code", "transform", "code X of OM.FEIT")]
    stats = Reconciliation()
    stats.add(lambda topic: topic.rsplit(".", 1)[1], records, sent, dead, [records[3]])
    assert (stats.records_in, stats.curated, stats.duplicates) == ({"om": 4}, {"om": 2}, {"om": 1})
    assert stats.dead == {"om": {"unknown-code": 1}} and stats.reconciles()
    assert stats.position == {("p.raw.om", 0): 4}
    assert stats.done({("p.raw.om", 0): 4, ("p.raw.om", 1): 0}) and not stats.done({("p.raw.om", 0): 5})
    stats.records_in["om"] += 1
    assert not stats.reconciles()
