from __future__ import annotations

import codecs
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ketenstroom.errors import InputRowError
from producers.config import load_mapping
from producers.reader import read_rows
from producers.rows import CaseDecisionRow, parse_moment, validate_row

MAPPING = load_mapping("om")
GOOD = {
    "zaaknummer": "OM1", "versie": "1", "parketnummer": "13-246712-26", "pv_nummer": "PL07B3 2026123456-1",
    "skn": "12345678", "bsn": "123456782", "geboortedatum": "17-05-1990", "geslacht": "M",
    "postcode": "1011 AB", "beslissing": "DAGV", "sepotgrond": "", "wetsartikel": "310 Sr",
    "beslisdatum": "02-03-2026 10:15", "inschrijfdatum": "2026-02-01", "bronsysteem": "COMPAS",
}


def _validate(row: dict[str, str], line: int = 2) -> CaseDecisionRow:
    model = validate_row(MAPPING.model, MAPPING.rename(row), line=line, columns=MAPPING.columns)
    assert isinstance(model, CaseDecisionRow)
    return model


def test_a_good_row_validates_with_dutch_and_iso_dates() -> None:
    model = _validate(GOOD)
    assert model.event_time == datetime(2026, 3, 2, 9, 15, tzinfo=UTC)  # 10:15 CET
    assert model.registration_time == datetime(2026, 1, 31, 23, 0, tzinfo=UTC)  # local midnight
    assert model.birth_date is not None and model.birth_date.isoformat() == "1990-05-17"


def test_summer_time_is_applied_to_naive_local_times() -> None:
    assert parse_moment("01-07-2026 12:00") == datetime(2026, 7, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("beslisdatum", "31-02-2026", "invalid-event-time"),
        ("parketnummer", "", "invalid-parketnummer"),
        ("parketnummer", "13-2467-26", "invalid-parketnummer"),
        ("bsn", "12ab", "invalid-bsn"),
        ("geslacht", "Q", "invalid-sex"),
        ("versie", "twee", "not-a-number"),
        ("versie", "0", "out-of-range"),
        ("beslissing", "", "missing-field"),
    ],
)
def test_each_kind_of_bad_value_names_row_column_value_and_reason(column: str, value: str, reason: str) -> None:
    with pytest.raises(InputRowError) as info:
        _validate({**GOOD, column: value}, line=17)
    err = info.value
    assert (err.row, err.field, err.reason) == (17, column, reason)
    assert err.value == value
    assert f"row 17: field {column!r}" in str(err)


def test_bsn_failing_11_check_is_accepted_for_the_processor_to_flag() -> None:
    assert _validate({**GOOD, "bsn": "123456789"}).bsn == "123456789"


@pytest.mark.parametrize(
    ("encoding", "delimiter", "bom"),
    [("utf-8", ";", False), ("utf-8", ",", True), ("cp1252", ";", False)],
)
def test_reader_handles_encodings_separators_and_bom(tmp_path: Path, encoding: str, delimiter: str,
                                                     bom: bool) -> None:
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
