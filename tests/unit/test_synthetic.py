"""The synthetic chain: partner exports the real producer code accepts and rejects exactly as reported."""

from __future__ import annotations

import json
import tomllib
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from ketenstroom.calendar import AMSTERDAM
from ketenstroom.catalogue import catalogue_at
from ketenstroom.contract import load_schemas
from ketenstroom.contract.identifiers import bsn_passes_11_check, normalise_parketnummer, normalise_pv_number
from ketenstroom.errors import InputRowError
from ketenstroom.settings import CatalogueSettings
from producers.config import load_mapping
from producers.reader import read_rows
from producers.rows import validate
from synthetic import (
    NOISE_KINDS,
    OM_COLUMNS,
    GenerationReport,
    generate_chain,
    om_decision_rows,
    partner_columns,
    write_csv,
)
from synthetic.codes import JUDGMENT_OUTCOMES, OM_DECISIONS

PARTNERS = catalogue_at(CatalogueSettings().dir).names  # the partners the catalogue declares

SCHEMAS = load_schemas(CatalogueSettings().schema_dir)
#: Crimes in 2023 followed until the start of 2026-11-01: whole chains, appeals included, and fixed
#: (with the default as-of, today, the exports would change from day to day).
START, AS_OF = date(2023, 1, 1), date(2026, 11, 1)


def _generate(out: Path, **kwargs: Any) -> GenerationReport:
    return generate_chain(out, **{"start": START, "as_of": AS_OF, **kwargs})


MAPPINGS = {p: load_mapping(p, SCHEMAS) for p in PARTNERS}


def offline_publish(partner: str, path: Path) -> dict[str, Any]:
    """What ``ketenstroom publish`` would do with the file, without Kafka: the producer's own validation."""
    mapping = MAPPINGS[partner]
    seen: set[tuple[str, int]] = set()
    accepted: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    rows: list[dict[str, Any]] = []
    for line, row in read_rows(path):
        try:
            if isinstance(row, InputRowError):
                raise row
            record = mapping.for_row(row, line)
            missing = record.missing_columns(list(row))
            if missing:
                raise InputRowError(
                    row=line, field=missing[0], value=None, reason="missing-column", message=""
                )
            flat = validate(record.model, record.values(row), line=line, columns=mapping.columns_of(record))
            implausible = record.plausibility.check(flat, datetime.now(UTC))
            if implausible is not None:
                raise InputRowError(row=line, field="*", value=None, reason=implausible[0], message="")
            key = (str(flat["metadata.source_record_id"]), int(flat.get("metadata.record_version") or 1))
            if key in seen:
                raise InputRowError(
                    row=line, field="id", value=key[0], reason="duplicate-in-file", message=""
                )
            seen.add(key)
        except InputRowError as exc:
            reasons[exc.reason] += 1
            continue
        accepted[str(row[mapping.type_column or ""])] += 1
        rows.append({"type": row[mapping.type_column or ""], "raw": row, **flat})
    return {
        "accepted": sum(accepted.values()),
        "rejected": sum(reasons.values()),
        "by_type": dict(accepted),
        "reasons": dict(reasons),
        "rows": rows,
    }


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GenerationReport]:
    out = tmp_path_factory.mktemp("clean")
    return out, _generate(out, cases=3000, seed=11, noise=0.0)


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GenerationReport]:
    out = tmp_path_factory.mktemp("noisy")
    return out, _generate(out, cases=2000, seed=5, noise=0.1)


@pytest.fixture(scope="module")
def clean_rows(clean: tuple[Path, GenerationReport]) -> dict[str, list[dict[str, Any]]]:
    _out, report = clean
    return {p: offline_publish(p, Path(report.partners[p].path))["rows"] for p in PARTNERS}


def _raw_rows(path: Path) -> Iterator[dict[str, str]]:
    for _line, row in read_rows(path):
        if isinstance(row, dict):
            yield row


# -- files and columns -----------------------------------------------------------------------------------
def test_one_export_per_partner_with_exactly_the_mapping_columns(
    clean: tuple[Path, GenerationReport],
) -> None:
    out, report = clean
    assert sorted(report.partners) == sorted(PARTNERS)
    expected_files = {f"{p}.csv" for p in PARTNERS if p != "cjib"} | {"cjib.jsonl", "generation.json"}
    assert {f.name for f in out.iterdir()} == expected_files
    for partner in PARTNERS:
        toml = tomllib.loads(
            (CatalogueSettings().partner_dir / partner / "mapping.toml").read_text(encoding="utf-8")
        )
        used = {toml["type_column"]} | {c for r in toml["records"].values() for c in r["columns"].values()}
        columns = partner_columns(partner)
        assert set(columns) == used and len(columns) == len(used)
        first = next(_raw_rows(Path(report.partners[partner].path)))
        assert list(first) == list(columns)


def test_each_partner_writes_in_its_own_habits(clean: tuple[Path, GenerationReport]) -> None:
    out, _report = clean
    politie = (out / "politie.csv").read_bytes()
    assert b"\r\n" in politie and politie.splitlines()[0].count(b";") > 5
    politie.decode("cp1252")
    rechtspraak = (out / "rechtspraak.csv").read_bytes()
    assert rechtspraak.startswith(b'\xef\xbb\xbf"soort_uitspraak",')
    cjib = (out / "cjib.jsonl").read_text(encoding="utf-8").splitlines()
    first = json.loads(cjib[0])
    assert first["datum"][4] == "-" and "T" in first["datum"]  # ISO dates in one partner
    assert isinstance(first["versie"], int)
    om = next(_raw_rows(out / "om.csv"))
    assert om["inschrijfdatum"][2] == "-"  # Dutch dates
    dji = list(_raw_rows(out / "dji.csv"))
    assert {r["geslacht"] for r in dji} <= {"man", "vrouw", "onbekend"}
    assert any(len(r["bsn"]) == 8 for r in dji)  # leading zero dropped, as a spreadsheet would


def test_formats_can_be_overridden(tmp_path: Path) -> None:
    report = _generate(tmp_path, cases=200, seed=3, formats={"cjib": "csv", "om": "jsonl"})
    assert report.partners["cjib"].path.endswith("cjib.csv")
    assert report.partners["om"].path.endswith("om.jsonl")
    for partner in ("cjib", "om"):
        result = offline_publish(partner, Path(report.partners[partner].path))
        assert result["rejected"] == 0
        assert result["accepted"] == report.partners[partner].rows_written > 0
    with pytest.raises(ValueError, match="format"):
        _generate(tmp_path, cases=1, formats={"om": "xlsx"})


# -- the producer's verdict, exactly ---------------------------------------------------------------------
def test_noise_free_exports_are_accepted_in_full(clean: tuple[Path, GenerationReport]) -> None:
    _out, report = clean
    for partner, rep in report.partners.items():
        result = offline_publish(partner, Path(rep.path))
        assert result["reasons"] == {}, (partner, result["reasons"])
        assert result["accepted"] == rep.expected_accepted == rep.rows_written > 0
        assert rep.expected_rejected == 0
        assert result["by_type"] == rep.expected_accepted_by_type == rep.rows_by_type
        assert set(rep.rows_by_type) == set(MAPPINGS[partner].records), partner


def test_noisy_exports_are_accepted_and_rejected_exactly_as_reported(
    noisy: tuple[Path, GenerationReport],
) -> None:
    _out, report = noisy
    kinds: Counter[str] = Counter()
    for partner, rep in report.partners.items():
        result = offline_publish(partner, Path(rep.path))
        assert result["accepted"] == rep.expected_accepted, partner
        assert result["rejected"] == rep.expected_rejected, partner
        assert result["accepted"] + result["rejected"] == rep.rows_written
        assert result["by_type"] == rep.expected_accepted_by_type, partner
        reasons = result["reasons"]
        assert reasons.get("duplicate-in-file", 0) == rep.noise["duplicate"], partner
        assert reasons.get("malformed-line", 0) == rep.noise["malformed"], partner
        assert reasons.get("missing-field", 0) == rep.noise["missing_field"], partner
        rest = sum(reasons.values()) - sum(
            reasons.get(r, 0) for r in ("duplicate-in-file", "malformed-line", "missing-field")
        )
        assert rest == rep.noise["impossible_date"], (partner, reasons)
        assert rep.expected_rejected_by_kind == {k: rep.noise[k] for k, ok in NOISE_KINDS.items() if not ok}
        kinds.update(rep.noise)
    assert all(kinds[k] > 0 for k in NOISE_KINDS), kinds
    base = sum(p.rows_written for p in report.partners.values()) - kinds["duplicate"] - kinds["redelivery"]
    assert 0.07 < sum(kinds.values()) / base < 0.13  # about the share asked for


def test_redeliveries_come_later_with_version_2_of_the_same_record(
    noisy: tuple[Path, GenerationReport],
) -> None:
    _out, report = noisy
    found = 0
    for partner, rep in report.partners.items():
        rows = offline_publish(partner, Path(rep.path))["rows"]
        first_seen = {}
        for n, row in enumerate(rows):
            sid, version = row["metadata.source_record_id"], row["metadata.record_version"]
            if version == 1:
                first_seen[sid] = n
            else:
                assert version == 2 and first_seen[sid] < n
                found += 1
    assert found == sum(p.noise["redelivery"] for p in report.partners.values()) > 0


def test_report_is_json_and_written_next_to_the_exports(noisy: tuple[Path, GenerationReport]) -> None:
    out, report = noisy
    on_disk = GenerationReport.from_json((out / "generation.json").read_text(encoding="utf-8"))
    assert on_disk == report
    data = json.loads(report.to_json())
    assert data["rows_written"] == report.rows_written
    assert data["partners"]["om"]["expected_accepted"] == report.partners["om"].expected_accepted


# -- determinism -----------------------------------------------------------------------------------------
def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    _generate(a, cases=400, seed=42, noise=0.1)
    _generate(b, cases=400, seed=42, noise=0.1)
    _generate(c, cases=400, seed=43, noise=0.1)
    for f in sorted(a.iterdir()):
        if f.name == "generation.json":  # the same but for where the files are
            assert f.read_text(encoding="utf-8").replace(str(a), "") == (b / f.name).read_text(
                encoding="utf-8"
            ).replace(str(b), "")
            continue
        assert f.read_bytes() == (b / f.name).read_bytes(), f.name
        assert f.read_bytes() != (c / f.name).read_bytes(), f.name


def test_noise_does_not_change_the_underlying_chain(tmp_path: Path) -> None:
    plain = _generate(tmp_path / "plain", cases=300, seed=9)
    spoiled = _generate(tmp_path / "spoiled", cases=300, seed=9, noise=0.2)
    assert plain.chain == spoiled.chain


# -- the chain hangs together ----------------------------------------------------------------------------
def _parket(value: str) -> str:
    return normalise_parketnummer(value)


def test_chain_references_are_consistent(clean_rows: dict[str, list[dict[str, Any]]]) -> None:
    rows = clean_rows
    police_pv = {normalise_pv_number(r["case.pv_number"]) for r in rows["politie"]}
    sent_pv = {
        normalise_pv_number(r["case.pv_number"]) for r in rows["politie"] if r["type"] == "PV_INZENDING"
    }
    om_pv = {normalise_pv_number(r["case.pv_number"]) for r in rows["om"] if r["type"] == "INSCHRIJVING"}
    assert om_pv and om_pv <= police_pv and om_pv <= sent_pv
    halt_pv = {normalise_pv_number(r["case.pv_number"]) for r in rows["halt"]}
    assert halt_pv and halt_pv <= police_pv

    decisions = {
        _parket(r["case.parketnummer"]): r["decision"] for r in rows["om"] if r["type"] == "BESLISSING"
    }
    registered = {_parket(r["case.parketnummer"]) for r in rows["om"] if r["type"] == "INSCHRIJVING"}
    assert set(decisions) == registered  # one decision per registered case
    court = {_parket(r["case.parketnummer"]) for r in rows["rechtspraak"]}
    assert court and all(decisions[p] == "DAGV" for p in court)
    judged_with_sanction = {
        _parket(r["case.parketnummer"]) for r in rows["rechtspraak"] if r["principal_sanction"]
    }
    own_disposal = {p for p, d in decisions.items() if d in ("STRB", "TRAN")}
    for partner in ("cjib", "dji", "reclassering"):
        cases = {_parket(r["case.parketnummer"]) for r in rows[partner]}
        assert cases, partner
        assert cases <= judged_with_sanction | own_disposal | {p for p, d in decisions.items() if d == "DAGV"}
    # DJI holds judged cases (detention, VH before trial) and unpaid fines (vervangende hechtenis) only
    dji = {_parket(r["case.parketnummer"]) for r in rows["dji"]}
    assert dji <= court | own_disposal
    # CJIB payments belong to a collection that was started
    started = {r["case.cjib_number"] for r in rows["cjib"] if r["type"] == "INNING_START"}
    assert {r["case.cjib_number"] for r in rows["cjib"]} == started
    assert all(len(n) == 16 and n.isdigit() for n in started)


def test_every_partner_identifies_the_person_by_the_same_skn(
    clean: tuple[Path, GenerationReport], clean_rows: dict[str, list[dict[str, Any]]]
) -> None:
    conflicts = set(clean[1].identity["conflict_records"])  # another person's BSN (synthetic.identity)
    assert 0 < len(conflicts) < 20
    by_pv: dict[str, set[str]] = {}
    for r in clean_rows["politie"] + clean_rows["om"] + clean_rows["halt"]:
        if r.get("suspect.skn"):
            by_pv.setdefault(normalise_pv_number(r["case.pv_number"]), set()).add(r["suspect.skn"])
    assert by_pv and all(len(s) == 1 for s in by_pv.values())
    by_case: dict[str, set[tuple[str, str | None]]] = {}
    for partner in ("om", "rechtspraak", "cjib", "dji", "reclassering"):
        for r in clean_rows[partner]:
            if r.get("suspect.skn") and r["metadata.source_record_id"] not in conflicts:
                by_case.setdefault(_parket(r["case.parketnummer"]), set()).add(
                    (r["suspect.skn"], r["suspect.bsn"])
                )
    assert all(len(s) == 1 for s in by_case.values())
    skns = Counter(r["suspect.skn"] for r in clean_rows["om"] if r["type"] == "INSCHRIJVING")
    assert all(len(s) == 8 and s.isdigit() for s in skns)
    assert max(skns.values()) >= 3 and sum(1 for n in skns.values() if n > 1) > 50  # recidivism


def test_times_run_forward_and_registration_follows_the_event(
    clean_rows: dict[str, list[dict[str, Any]]],
) -> None:
    for partner, rows in clean_rows.items():
        for r in rows:
            assert r["metadata.event_time"] <= r["metadata.registration_time"], (partner, r["raw"])
    sent = {
        normalise_pv_number(r["case.pv_number"]): r["metadata.event_time"]
        for r in clean_rows["politie"]
        if r["type"] == "PV_INZENDING"
    }
    crime = {
        normalise_pv_number(r["case.pv_number"]): r["metadata.event_time"]
        for r in clean_rows["politie"]
        if r["type"] == "MISDRIJF"
    }
    registered = {}
    for r in clean_rows["om"]:
        pv = normalise_pv_number(r["case.pv_number"])
        if r["type"] == "INSCHRIJVING":
            assert crime[pv] < sent[pv] < r["metadata.event_time"]
            registered[_parket(r["case.parketnummer"])] = r["metadata.event_time"]
    decided = [r for r in clean_rows["om"] if r["type"] == "BESLISSING"]
    assert decided
    for r in decided:  # an OM decision comes at least a day after the case was registered
        assert (r["metadata.event_time"] - registered[_parket(r["case.parketnummer"])]).days >= 1, r["raw"]
    for r in clean_rows["rechtspraak"]:
        lead = r["metadata.event_time"] - registered[_parket(r["case.parketnummer"])]
        assert 14 <= lead.days <= 1000


def test_halt_gets_juveniles_with_light_offences(clean_rows: dict[str, list[dict[str, Any]]]) -> None:
    halt = [r for r in clean_rows["halt"] if r["type"] == "VERWIJZING"]
    assert halt
    for r in halt:
        age = (r["metadata.event_time"].date() - r["suspect.birth_date"]).days / 365.25
        assert 12 <= age < 18.5
    outcomes = Counter(r["outcome"] for r in clean_rows["halt"] if r["type"] == "AFGEROND")
    assert outcomes["POSITIEF"] > outcomes["NEGATIEF"] > 0


def test_bsns_pass_the_11_check_except_the_spoiled_ones(noisy: tuple[Path, GenerationReport]) -> None:
    _out, report = noisy
    failing = passing = 0
    for rep in report.partners.values():
        for row in _raw_rows(Path(rep.path)):
            bsn = row.get("bsn") or ""
            if bsn:
                if bsn_passes_11_check(bsn.zfill(9)):
                    passing += 1
                else:
                    failing += 1
    assert failing == sum(p.noise["invalid_bsn"] for p in report.partners.values()) > 0
    assert passing > 10 * failing


def test_about_ninety_percent_of_suspects_have_a_bsn(clean_rows: dict[str, list[dict[str, Any]]]) -> None:
    persons = {(r["suspect.skn"], r["suspect.bsn"]) for r in clean_rows["om"] if r["type"] == "BESLISSING"}
    share = sum(1 for _s, b in persons if b) / len(persons)
    assert 0.85 < share < 0.95
    sexes = Counter(r["suspect.sex"] for r in clean_rows["om"] if r["type"] == "INSCHRIJVING")
    assert 0.74 < sexes["M"] / sum(sexes.values()) < 0.86


def test_om_decisions_and_court_outcomes_come_in_the_documented_shares(tmp_path: Path) -> None:
    report = _generate(tmp_path, cases=5000, seed=1)
    rows = list(_raw_rows(Path(report.partners["om"].path)))
    decisions = Counter(r["beslissing"] for r in rows if r["soort"] == "BESLISSING")
    total = sum(decisions.values())
    assert total > 2500 and decisions == Counter(report.chain["om_decision"])
    for code, (_label, share) in OM_DECISIONS.items():
        assert abs(decisions[code] / total - share) < max(0.025, share * 0.5), (code, decisions[code] / total)
    sepots = [r["sepotgrond"] for r in rows if r["beslissing"] == "SEPO"]
    assert all(sepots) and {g[0] for g in sepots} == {"0", "5"}
    court = Counter(
        r["beslissing"]
        for r in _raw_rows(Path(report.partners["rechtspraak"].path))
        if r["soort_uitspraak"] == "EERSTE_AANLEG"
    )
    assert abs(court["SCHULDIG_STRAF"] / sum(court.values()) - JUDGMENT_OUTCOMES["SCHULDIG_STRAF"][1]) < 0.04
    appeals = report.partners["rechtspraak"].rows_by_type.get("HOGER_BEROEP", 0)
    assert 0.02 < appeals / sum(court.values()) < 0.08
    organisations = Counter(
        r["organisatie"] for r in _raw_rows(Path(report.partners["reclassering"].path)) if r["organisatie"]
    )
    assert abs(organisations["RN"] / sum(organisations.values()) - 0.6) < 0.08


# -- scale -----------------------------------------------------------------------------------------------
def _peak(tmp: Path, cases: int) -> tuple[int, int]:
    tracemalloc.start()
    try:
        report = _generate(tmp, cases=cases, seed=3, noise=0.05)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, report.rows_written


def test_memory_stays_flat_however_many_cases(tmp_path: Path) -> None:
    small, small_rows = _peak(tmp_path / "small", 1_000)
    large, large_rows = _peak(tmp_path / "large", 10_000)
    assert large_rows > 9 * small_rows
    assert large < small * 1.5 + 256 * 1024, (small, large)
    assert large < 8 * 1024 * 1024


# -- the first version's API -----------------------------------------------------------------------------
def test_om_decision_rows_match_the_om_mapping(tmp_path: Path) -> None:
    path = tmp_path / "om.csv"
    written = write_csv(path, om_decision_rows(300, seed=4), OM_COLUMNS)
    assert written == 300
    assert partner_columns("om") == OM_COLUMNS and OM_COLUMNS[0] == "soort"
    result = offline_publish("om", path)
    assert result == {**result, "accepted": 300, "rejected": 0, "by_type": {"BESLISSING": 300}}


def test_om_decision_rows_noise_kinds_are_unchanged(tmp_path: Path) -> None:
    rows = list(om_decision_rows(2000, seed=11, noise=0.2))
    assert any(r["beslisdatum"] == "31-02-2026" for r in rows)
    assert any(r["parketnummer"] == "" for r in rows)
    assert any(r["beslissing"] == "XXXX" for r in rows)
    assert any(r["bsn"] and not bsn_passes_11_check(r["bsn"]) for r in rows)
    path = tmp_path / "om.csv"
    write_csv(path, iter(rows), OM_COLUMNS)
    result = offline_publish("om", path)
    bad = sum(1 for r in rows if r["beslisdatum"] == "31-02-2026" or not r["parketnummer"])
    assert result["rejected"] == bad and result["accepted"] == 2000 - bad


# -- as-of: nothing dated on or after the export's day (issue 10, item 11) --------------------------------
_MOMENT_PATHS = ("metadata.event_time", "metadata.registration_time", "first_interrogation_time")


def _latest(report: GenerationReport) -> datetime:
    latest = datetime.min.replace(tzinfo=UTC)
    for partner in PARTNERS:
        for row in offline_publish(partner, Path(report.partners[partner].path))["rows"]:
            latest = max([latest, *(row[p] for p in _MOMENT_PATHS if isinstance(row.get(p), datetime))])
    return latest


def test_a_generated_export_holds_no_event_on_or_after_its_as_of_day(tmp_path: Path) -> None:
    as_of = date(2026, 6, 1)
    report = generate_chain(tmp_path, cases=1500, seed=21, noise=0.1, start=date(2026, 1, 1), as_of=as_of)
    midnight = datetime(2026, 6, 1, tzinfo=AMSTERDAM)
    assert report.as_of == "2026-06-01"
    assert datetime(2026, 5, 1, tzinfo=UTC) < _latest(report) < midnight  # cut there, not long before
    for partner, rep in report.partners.items():  # and publish takes exactly what it was told to
        result = offline_publish(partner, Path(rep.path))
        assert (result["accepted"], result["rejected"]) == (rep.expected_accepted, rep.expected_rejected)
    uncut = generate_chain(
        tmp_path / "uncut", cases=1500, seed=21, start=date(2026, 1, 1), as_of=date(2031, 1, 1)
    )
    assert _latest(uncut) > midnight  # the same cases, followed on, do reach past it


def test_generate_writes_nothing_after_today_by_default(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli import app

    result = CliRunner().invoke(app, ["generate", "--out", str(tmp_path), "--cases", "300"])
    assert result.exit_code == 0, result.output
    report = GenerationReport.from_json((tmp_path / "generation.json").read_text(encoding="utf-8"))
    today = datetime.now(AMSTERDAM).date()
    assert report.as_of == today.isoformat()
    assert _latest(report) < datetime.combine(today, datetime.min.time(), tzinfo=AMSTERDAM)
    result = CliRunner().invoke(
        app, ["generate", "--out", str(tmp_path / "b"), "--cases", "30", "--as-of", "2026-02-01"]
    )
    assert result.exit_code == 0, result.output
    assert "as of 2026-02-01" in result.output
