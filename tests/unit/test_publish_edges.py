"""Rough edges of ``publish`` a partner meets on day one (issue 10): encodings, wrong files, failures,
receipts per delivery, and dates that cannot be. No broker needed: each case fails before producing."""

from __future__ import annotations

import codecs
import json
import stat
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from ketenstroom.contract import load_schemas
from ketenstroom.errors import ConfigurationError, InputRowError
from ketenstroom.settings import CatalogueSettings, KafkaSettings, RegistrySettings
from producers import publish as publish_module
from producers.config import load_mapping
from producers.plausibility import Plausibility, local_day, millis
from producers.publish import EXIT_NOT_DELIVERED, Publisher, Receipt, _RejectFile, header_problem
from producers.reader import open_export, read_rows
from tests.unit.test_fastpath import NOW, NOW_MS, _agree, _fast, _reference
from tests.unit.test_producer_rows import GOOD

SCHEMAS = load_schemas(CatalogueSettings().schema_dir)
OM_HEADER = list(GOOD)
DEAD = {  # nothing listens here: these tests must fail (or succeed) before any connection
    "KETENSTROOM_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
    "KETENSTROOM_REGISTRY_URL": "http://127.0.0.1:1/apis/ccompat/v7",
}


# -- 1. encodings: decided once per file ----------------------------------------------------------------
def _bom_cp1252(tmp_path: Path, name: str = "om.csv") -> Path:
    """The exact pattern from the field: a UTF-8 byte-order mark, then Windows-1252 with an é."""
    path = tmp_path / name
    row = dict(GOOD, postcode="1011 AB", bronsysteem="Café")  # 0xE9: not UTF-8
    text = ";".join(OM_HEADER) + "\r\n" + ";".join(row[c] for c in OM_HEADER) + "\r\n"
    path.write_bytes(codecs.BOM_UTF8 + text.encode("cp1252"))
    assert b"\xef\xbb\xbf" in path.read_bytes()[:3] and b"Caf\xe9" in path.read_bytes()
    return path


def test_a_bom_in_front_of_windows_1252_is_read_as_windows_1252_and_said_so(tmp_path: Path) -> None:
    export = open_export(_bom_cp1252(tmp_path))
    assert (export.encoding, export.bom) == ("cp1252", True)
    assert export.columns is not None and export.columns[0] == "soort"  # the BOM is not in the header
    [(line, row)] = list(export.rows())
    assert line == 2 and isinstance(row, dict) and row["bronsysteem"] == "Café"
    assert export.note is not None and "byte-order mark" in export.note and "Windows-1252" in export.note


def test_a_non_utf8_byte_far_into_the_file_decides_for_the_whole_file(tmp_path: Path) -> None:
    """A 64 KB sample would call this UTF-8 and crash half-way; the whole file is judged."""
    path = tmp_path / "export.csv"
    lines = ["a;b"] + [f"{n};plain" for n in range(20_000)] + ["x;Café"]
    path.write_bytes("\n".join(lines).encode("cp1252") + b"\n")
    assert path.stat().st_size > 64 * 1024
    rows = list(read_rows(path))
    assert rows[-1] == (len(lines), {"a": "x", "b": "Café"})


def test_bytes_windows_1252_leaves_undefined_still_decode(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_bytes(b"a;b\n1;x\x81y\xe9\n")  # 0x81 has no Windows-1252 character
    export = open_export(path)
    assert export.encoding == "latin-1"
    assert [row for _line, row in export.rows()] == [{"a": "1", "b": "x\x81yé"}]


def test_utf8_with_bom_stays_plain(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_bytes(codecs.BOM_UTF8 + "a;b\n1;Café\n".encode())
    export = open_export(path)
    assert (export.encoding, export.bom, export.note) == ("utf-8", True, None)
    assert [row for _line, row in export.rows()] == [{"a": "1", "b": "Café"}]


# -- 1. any failure: exit 3, one line, a receipt; a traceback only with --debug ------------------------
def test_an_unexpected_failure_ends_in_order_with_a_receipt(tmp_path: Path) -> None:
    with Publisher(
        "om", kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"), registry=RegistrySettings()
    ) as p:
        receipt = p.publish([tmp_path / "gone.csv"])
    assert receipt.exit_code == EXIT_NOT_DELIVERED and receipt.reconciles
    assert receipt.failure is not None and receipt.failure.startswith("FileNotFoundError: ")
    assert "\n" not in receipt.failure and isinstance(p.error, FileNotFoundError)


@pytest.mark.parametrize("debug", [False, True])
def test_cli_turns_a_crash_into_exit_3_a_line_and_a_receipt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, debug: bool
) -> None:
    def boom(_path: Path) -> None:
        raise UnicodeDecodeError("utf-8", b"\xe9", 0, 1, "invalid continuation byte")

    monkeypatch.setattr(publish_module, "open_export", boom)
    for key, value in DEAD.items():
        monkeypatch.setenv(key, value)
    export = _bom_cp1252(tmp_path)
    args = ["publish", "--partner", "om", str(export), *(["--debug"] if debug else [])]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == EXIT_NOT_DELIVERED, result.output
    assert "not delivered: UnicodeDecodeError" in result.output
    assert ("Traceback (most recent call last)" in result.output) is debug
    [receipt_file] = tmp_path.glob("om.csv.*.receipt.json")
    receipt = json.loads(receipt_file.read_text())
    assert receipt["exit_code"] == EXIT_NOT_DELIVERED and "UnicodeDecodeError" in receipt["failure"]


# -- 2. a file for another partner, or with a wrong header: refused whole --------------------------------
def test_an_om_file_published_as_politie_is_refused_naming_columns_and_the_right_partner(
    tmp_path: Path,
) -> None:
    path = tmp_path / "om.csv"
    path.write_text(";".join(OM_HEADER) + "\n" + ";".join(GOOD.values()) + "\n", encoding="utf-8")
    problem = header_problem(load_mapping("politie", SCHEMAS), open_export(path))
    assert problem is not None
    assert "missing soort_record" in problem or "missing" in problem
    assert "registratienummer" in problem  # a column politie's records cannot do without
    assert "unexpected" in problem and "parketnummer" in problem and "beslissing" in problem
    assert "fits partner 'om' best" in problem
    assert header_problem(load_mapping("om", SCHEMAS), open_export(path)) is None


def test_a_header_missing_a_required_column_of_every_record_type_is_refused(tmp_path: Path) -> None:
    header = [c for c in OM_HEADER if c != "recordnummer"]
    path = tmp_path / "om.csv"
    path.write_text(";".join(header) + "\n" + ";".join(GOOD[c] for c in header) + "\n", encoding="utf-8")
    problem = header_problem(load_mapping("om", SCHEMAS), open_export(path))
    assert problem is not None and "missing recordnummer" in problem and "fits partner" not in problem
    without_optional = [c for c in OM_HEADER if c != "postcode"]  # rows still rejected one by one
    path.write_text(";".join(without_optional) + "\n", encoding="utf-8")
    assert header_problem(load_mapping("om", SCHEMAS), open_export(path)) is None


def test_cli_refuses_the_wrong_partners_file_with_exit_3_before_connecting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in DEAD.items():
        monkeypatch.setenv(key, value)
    path = tmp_path / "om.csv"
    path.write_text(";".join(OM_HEADER) + "\n" + ";".join(GOOD.values()) + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["publish", "--partner", "politie", str(path)])
    assert result.exit_code == EXIT_NOT_DELIVERED, result.output
    assert "missing" in result.output and "registratienummer" in result.output
    assert "fits partner 'om' best" in result.output and "Traceback" not in result.output
    [receipt_file] = tmp_path.glob("om.csv.*.receipt.json")
    receipt = json.loads(receipt_file.read_text())
    assert (
        receipt["rows_read"] == 0 and receipt["published"] == 0 and "registratienummer" in receipt["failure"]
    )


# -- 6. receipts and reject files per delivery; reject file owner-only ----------------------------------
def test_each_delivery_gets_its_own_receipt_and_reject_names() -> None:
    first, second = Receipt(partner="om", files=["x/om.csv"]), Receipt(partner="om", files=["x/om.csv"])
    assert first.default_path("receipt.json") != second.default_path("receipt.json")
    assert first.default_path("rejects.jsonl").name.startswith("om.csv.")
    assert first.delivery_id[:8] in first.default_path("receipt.json").name


def test_reject_file_is_created_owner_only_even_over_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "rejects.jsonl"
    path.write_text("old\n")
    path.chmod(0o644)
    rejects = _RejectFile(path)
    rejects.write(
        tmp_path / "om.csv", InputRowError(row=2, field="bsn", value="1", reason="x", message="y"), GOOD
    )
    assert rejects.close() == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["row"]["bsn"] == GOOD["bsn"]


def test_summary_says_the_reject_file_holds_identifiers() -> None:
    receipt = Receipt(partner="om", files=["om.csv"], reject_file="om.csv.x.rejects.jsonl")
    assert "identifiers included" in receipt.summary() and "owner-only" in receipt.summary()


# -- 11. dates that cannot be ----------------------------------------------------------------------------
def test_a_row_dated_next_year_is_rejected_as_event_in_future_on_both_paths() -> None:
    next_year = f"02-03-{NOW.year + 1} 10:15"
    row = dict(GOOD, beslisdatum=next_year)
    assert _fast("om", row, 2) is None  # the fast path hands it to the reference path ...
    assert _reference_error(row).reason == "event-in-future"  # ... which rejects it with its reason
    assert _reference_error(row).field == "beslisdatum"
    assert _agree("om", dict(GOOD)) == "fast"  # the same row dated this year still takes the fast path


def _reference_error(row: dict[str, str]) -> InputRowError:
    from producers.publish import build_reference

    mapping = load_mapping("om", SCHEMAS)
    with pytest.raises(InputRowError) as caught:
        build_reference(mapping, mapping.records["BESLISSING"], row, 2, missing=[], delivery_time=NOW)
    return caught.value


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"beslisdatum": "28-11-2026 13:59"}, None),  # within the hour of clock skew (NOW is 12:00 UTC)
        ({"beslisdatum": "28-11-2026 14:01"}, "event-in-future"),  # 13:01 UTC: just past it
        ({"beslisdatum": "02-03-2062 10:15"}, "event-in-future"),  # the classic typo
        ({"beslisdatum": "31-12-1999"}, "event-before-floor"),
        ({"beslisdatum": "01-01-2000", "geboortedatum": "17-05-1970"}, None),
        ({"geboortedatum": "03-03-2026"}, "born-after-event"),
        ({"geboortedatum": "02-03-2020"}, "age-out-of-range"),  # six at the decision
        ({"geboortedatum": "03-03-2014"}, "age-out-of-range"),  # one day short of twelve
        ({"geboortedatum": "02-03-2014"}, None),  # twelve that day
        ({"geboortedatum": "02-03-1925"}, "age-out-of-range"),  # 101
        ({"geboortedatum": ""}, None),  # no birth date: the age rules do not apply
    ],
)
def test_each_rule_rejects_with_its_own_reason_and_the_fast_path_agrees(
    change: dict[str, str], reason: str | None
) -> None:
    row = dict(GOOD, **change)
    if reason is None:
        assert _reference(load_mapping("om", SCHEMAS), row, 2) is not None
        assert _agree("om", row) == "fast"
    else:
        assert _reference_error(row).reason == reason
        assert _agree("om", row) == "reference"


def test_registration_before_the_event_day_is_rejected_but_the_same_day_is_not() -> None:
    rules = Plausibility(registration_not_before_event=True)
    event = millis(datetime(2026, 3, 2, 14, 0, tzinfo=UTC))  # 15:00 in Amsterdam
    same_day_midnight = millis(datetime(2026, 3, 1, 23, 0, tzinfo=UTC))  # 00:00 local, 2 March
    assert rules.violation(event, same_day_midnight, None, NOW_MS) is None
    day_before = same_day_midnight - 1
    found = rules.violation(event, day_before, None, NOW_MS)
    assert found is not None and found[0] == "registered-before-event"


def test_politie_rows_registered_before_the_event_take_the_reference_path_and_are_rejected() -> None:
    from tests.unit.test_fastpath import MAPPINGS

    mapping = MAPPINGS["politie"]
    record = mapping.records["MISDRIJF"]
    columns = {c: "" for c in mapping.columns_of_all()}
    row = {
        **columns,
        mapping.type_column or "": "MISDRIJF",
        **{record.columns[p]: v for p, v in _politie_values().items() if p in record.columns},
    }
    assert _agree("politie", row) == "fast"
    row[record.columns["metadata.registration_time"]] = "01-03-2026 09:00"
    assert _agree("politie", row) == "reference"
    assert _reference(mapping, row, 2) is None


def _politie_values() -> dict[str, str]:
    return {
        "metadata.source_record_id": "POL-M-1",
        "metadata.record_version": "1",
        "metadata.source_system": "BVH",
        "metadata.event_time": "02-03-2026 10:15",
        "metadata.registration_time": "03-03-2026 09:00",
        "case.pv_number": "PL07B3 2026123456-1",
        "incident": "A10",
        "crime_municipality": "GM0363",
        "ambtshalve": "ja",
    }


def test_rules_are_declared_in_the_mapping_and_typos_in_them_refused(tmp_path: Path) -> None:
    om = load_mapping("om", SCHEMAS).records["BESLISSING"].plausibility
    assert om.max_clock_skew_minutes == 60 and om.event_not_before == date(2000, 1, 1)
    assert om.age_at_event == (12, 100) and om.birth_before_event and om.registration_not_before_event
    with pytest.raises(ConfigurationError, match="unknown plausibility rules"):
        Plausibility.from_toml({"max_clock_skew": 5}, where="om/X", mapped={"metadata.event_time"})
    with pytest.raises(ConfigurationError, match=r"need \['suspect.birth_date'\]"):
        Plausibility.from_toml({"age_at_event": [12, 100]}, where="om/X", mapped={"metadata.event_time"})


def test_a_new_partners_mapping_template_declares_plausibility_rules(tmp_path: Path) -> None:
    import shutil
    import tomllib

    from cli.catalogue import scaffold

    shutil.copytree(CatalogueSettings().schema_dir, tmp_path / "schemas")
    written = scaffold("om", "Openbaar Ministerie", "OM", tmp_path)
    mapping = tomllib.loads(written[1].read_text(encoding="utf-8"))
    for name, record in mapping["records"].items():
        rules = Plausibility.from_toml(record["plausibility"], where=name, mapped=set(record["columns"]))
        assert rules.max_clock_skew_minutes == 60 and rules.age_at_event == (12, 100)


def test_a_json_lines_file_for_another_partner_is_refused_by_its_keys(tmp_path: Path) -> None:
    path = tmp_path / "export.jsonl"
    path.write_text("{broken\n" + json.dumps(GOOD) + "\n", encoding="utf-8")
    problem = header_problem(load_mapping("cjib", SCHEMAS), open_export(path))
    assert problem is not None and "fits partner 'om' best" in problem
    assert header_problem(load_mapping("om", SCHEMAS), open_export(path)) is None


def test_local_day_per_utc_hour_agrees_with_zoneinfo_across_both_clock_changes() -> None:
    from ketenstroom.calendar import AMSTERDAM

    for start in (datetime(2026, 3, 28, 20, tzinfo=UTC), datetime(2026, 10, 24, 20, tzinfo=UTC)):
        for minutes in range(0, 3 * 24 * 60, 7):
            moment = start + timedelta(minutes=minutes)
            local = moment.astimezone(AMSTERDAM)
            midnight = datetime(local.year, local.month, local.day, tzinfo=AMSTERDAM)
            assert local_day(millis(moment)) == (local.date(), millis(midnight)), moment


@pytest.mark.parametrize(
    ("birth", "years"),
    [("29-02-2012", 12), ("29-02-1920", 101), ("28-03-2014", 12), ("25-10-2014", 12), ("27-11-1925", 101)],
)
def test_the_fast_path_never_accepts_an_age_the_model_rejects_around_midnights(
    birth: str, years: int
) -> None:
    """Birthdays (a leap day, both clock changes, the oldest allowed) at times around midnight: the fast
    path's bounds are UTC midnights moved inwards, so it may hand a row back, never accept one the
    rules reject."""
    from producers.plausibility import anniversary
    from producers.rows import parse_date

    base = anniversary(parse_date(birth), years)
    taken: list[str] = []
    for offset in (-1, 0, 1):
        moment = base + timedelta(days=offset)
        for clock in ("00:00", "00:30", "01:30", "02:30", "12:00", "23:30"):
            row = dict(GOOD, beslisdatum=f"{moment:%d-%m-%Y} {clock}", geboortedatum=birth)
            taken.append(_agree("om", row))  # fails if the fast path accepts what the reference rejects
    assert "fast" in taken and "reference" in taken  # both sides of the birthday were seen
