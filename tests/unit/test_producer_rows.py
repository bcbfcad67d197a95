from __future__ import annotations

import codecs
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ketenstroom.catalogue import catalogue_at
from ketenstroom.contract import load_schemas
from ketenstroom.errors import ConfigurationError, InputRowError
from ketenstroom.settings import CatalogueSettings
from producers.config import load_mapping
from producers.reader import read_rows
from producers.rows import nest, parse_moment, validate

PARTNERS = catalogue_at(CatalogueSettings().dir).names  # the partners the catalogue declares

SCHEMAS = load_schemas(CatalogueSettings().schema_dir)
MAPPING = load_mapping("om", SCHEMAS)
GOOD = {
    "soort": "BESLISSING",
    "recordnummer": "OM-B-1",
    "versie": "1",
    "parketnummer": "13-246712-26",
    "pv_nummer": "PL07B3 2026123456-1",
    "skn": "12345678",
    "bsn": "123456782",
    "geboortedatum": "17-05-1990",
    "geslacht": "M",
    "postcode": "1011 AB",
    "beslissing": "DAGV",
    "sepotgrond": "",
    "wetsartikel": "310 Sr",
    "beslisdatum": "02-03-2026 10:15",
    "inschrijfdatum": "2026-02-01",
    "bronsysteem": "COMPAS",
}


def _validate(row: dict[str, str], line: int = 2) -> dict[str, object]:
    record = MAPPING.for_row(row, line)
    return validate(record.model, record.values(row), line=line, columns=MAPPING.columns_of(record))


def test_a_good_row_validates_with_dutch_and_iso_dates() -> None:
    flat = _validate(GOOD)
    assert flat["metadata.event_time"] == datetime(2026, 3, 2, 9, 15, tzinfo=UTC)  # 10:15 CET
    assert (
        flat["metadata.registration_time"] == flat["metadata.event_time"]
    )  # decisions: registered when made
    assert parse_moment("2026-02-01") == datetime(2026, 1, 31, 23, 0, tzinfo=UTC)  # ISO date: local midnight
    assert str(flat["suspect.birth_date"]) == "1990-05-17"
    nested = nest(flat, MAPPING.records["BESLISSING"].codes)
    assert nested["decision"] == {
        "code_system": "OM.AFDOENING",
        "code": "DAGV",
        "code_system_version": "2024",
    }
    assert nested["sepot_ground"] is None
    assert nested["case"]["parketnummer"] == "13-246712-26"


def test_every_partner_mapping_matches_the_contract() -> None:
    for partner in PARTNERS:
        mapping = load_mapping(partner, SCHEMAS)
        assert mapping.records, partner
        for record in mapping.records.values():
            assert record.schema.group == partner


def test_a_mapping_with_a_typo_fails_at_start_up(tmp_path: Path) -> None:
    text = (Path(__file__).parents[2] / "partners/om/mapping.toml").read_text(encoding="utf-8")
    (tmp_path / "om").mkdir()
    (tmp_path / "om" / "mapping.toml").write_text(
        text.replace('"case.parketnummer" = "parketnummer"', '"case.parketnumer" = "parketnummer"', 1)
    )
    with pytest.raises(ConfigurationError, match="parketnumer"):
        load_mapping("om", SCHEMAS, tmp_path)


def test_unknown_record_type_is_rejected_with_the_allowed_values() -> None:
    with pytest.raises(InputRowError) as info:
        _validate({**GOOD, "soort": "ONZIN"}, line=4)
    assert (info.value.field, info.value.reason) == ("soort", "unknown-record-type")
    assert "BESLISSING" in info.value.detail


def test_summer_time_is_applied_to_naive_local_times() -> None:
    assert parse_moment("01-07-2026 12:00") == datetime(2026, 7, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("beslisdatum", "31-02-2026", "invalid-event-time"),
        ("parketnummer", "", "missing-field"),  # the key of an OM record may not be blank
        ("parketnummer", "13-2467-26", "invalid-parketnummer"),
        ("bsn", "12ab", "invalid-bsn"),
        ("geboortedatum", "1990-13-45", "invalid-birth-date"),
        ("geslacht", "Q", "invalid-sex"),
        ("versie", "twee", "not-a-number"),
        ("versie", "0", "out-of-range"),
        ("beslissing", "", "missing-field"),
    ],
)
def test_each_kind_of_bad_value_names_row_column_value_and_reason(
    column: str, value: str, reason: str
) -> None:
    with pytest.raises(InputRowError) as info:
        _validate({**GOOD, column: value}, line=17)
    err = info.value
    assert (err.row, err.field, err.reason) == (17, column, reason)
    assert err.value == value
    assert f"row 17: field {column!r}" in str(err)
    if reason.endswith("-time") or reason.endswith("-date"):
        assert "dd-mm-jjjj" in err.detail  # tells the partner how to write it


def test_blank_optional_values_are_none_not_errors() -> None:
    flat = _validate({**GOOD, "geboortedatum": " ", "bsn": "", "pv_nummer": "", "sepotgrond": ""})
    assert flat["suspect.birth_date"] is None and flat["suspect.bsn"] is None
    assert flat["case.pv_number"] is None and flat["sepot_ground"] is None


def test_bsn_failing_11_check_is_accepted_for_the_processor_to_flag() -> None:
    assert _validate({**GOOD, "bsn": "123456789"})["suspect.bsn"] == "123456789"
    assert _validate({**GOOD, "bsn": "12345678"})["suspect.bsn"] == "012345678"


@pytest.mark.parametrize(
    ("encoding", "delimiter", "bom"),
    [("utf-8", ";", False), ("utf-8", ",", True), ("cp1252", ";", False)],
)
def test_reader_handles_encodings_separators_and_bom(
    tmp_path: Path, encoding: str, delimiter: str, bom: bool
) -> None:
    header = delimiter.join(["zaaknummer", "naam", "plaats"])
    body = delimiter.join(["OM1", '"Jansen, Ü."', "’s-Hertogenbosch"])
    raw = f"{header}\r\n{body}\r\n".encode(encoding)
    path = tmp_path / "export.csv"
    path.write_bytes((codecs.BOM_UTF8 if bom else b"") + raw)
    rows = list(read_rows(path))
    assert rows == [(2, {"zaaknummer": "OM1", "naam": "Jansen, Ü.", "plaats": "’s-Hertogenbosch"})]


def test_reader_reports_malformed_lines_instead_of_dropping_them(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text("a;b\n1;2\n3;4;5\n\n6;7\n", encoding="utf-8")
    rows = list(read_rows(path))
    assert [line for line, _ in rows] == [2, 3, 5]
    bad = rows[1][1]
    assert isinstance(bad, InputRowError) and bad.reason == "malformed-line"


def test_reader_reads_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "export.jsonl"
    path.write_text(json.dumps({"zaaknummer": "OM1", "versie": 2}) + "\n{not json\n", encoding="utf-8")
    rows = list(read_rows(path))
    assert rows[0] == (1, {"zaaknummer": "OM1", "versie": "2"})
    assert isinstance(rows[1][1], InputRowError)
