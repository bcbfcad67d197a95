from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from ketenstroom.contract.scanner import scan, scan_all

CLEAN = {
    "event_id": "40178056-6083-59aa-b0a0-127012345678",  # digit-only UUID groups are not identifiers
    "event_time": datetime(2026, 1, 17, 14, 23, tzinfo=UTC),
    "case_pseudonym": "5afa806e3ab969dfa056a598f793076a1b6faf893a52f52eb548f05486ee90eb",  # pragma: allowlist secret
    "person_pseudonym": "1234567890123456789012345678901234567890123456789012345678901234",
    "birth_year": 1976,
    "age_at_event": 49,
    "municipality_code": "GM0363",
    "kafka_offset": 123456789,
    "concepts": [{"code": "DAGVAARDING", "source_code": "310 Sr"}],
    "processed_time": "2026-11-28T11:00:42+00:00",
}


def test_a_clean_curated_event_has_no_findings() -> None:
    assert list(scan(CLEAN)) == []


@pytest.mark.parametrize(
    ("field", "value", "kind"),
    [
        ("note", "bsn 123456782 in text", "bsn"),
        ("note", "12345678", "skn-or-number"),
        ("count", 249566758, "bsn"),
        ("note", "zaak 13-246712-15", "parketnummer"),
        ("note", "13/246712-15", "parketnummer"),
        ("note", "pv PL07B3 2023123456-1", "pv-number"),
        ("note", "woont 1011 AB", "postcode"),
        ("note", "geboren 17-05-1990", "full-date"),
        ("born", date(1990, 5, 17), "full-date"),
        ("bsn", "x", "forbidden-field"),
    ],
)
def test_each_kind_of_identifier_is_found_and_not_echoed(field: str, value: object, kind: str) -> None:
    findings = list(scan({**CLEAN, "nested": [{field: value}]}))
    assert kind in {f.kind for f in findings}
    assert findings[0].path.startswith("nested[0].")
    assert all(str(value) not in str(f) for f in findings)


def test_scan_all_counts_records() -> None:
    count, findings = scan_all([CLEAN, CLEAN, {**CLEAN, "x": "123456782"}])
    assert count == 3 and [f.path for f in findings] == ["[2].x"]


def test_a_snapshot_event_date_is_not_a_birth_date_but_the_same_date_elsewhere_is() -> None:
    from datetime import date

    from ketenstroom.contract.scanner import scan

    assert list(scan({"event_date": date(2026, 3, 2)})) == []
    assert [f.kind for f in scan({"note": date(2001, 3, 2)})] == ["full-date"]
