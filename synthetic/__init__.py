"""Seeded synthetic exports for every chain partner, in each partner's own columns, codes and habits.

``generate_chain(out_dir, cases=...)`` follows one suspect per case through the chain (DOMAIN.md §2.2):
police registration -> Halt or OM -> court -> CJIB / DJI / reclassering, with plausible lead times and
OM decisions in the shares CBS reports (§2.5.1). It writes one export per partner (``politie.csv``,
``om.csv``, ``rechtspraak.csv``, ``cjib.jsonl``, ``dji.csv``, ``reclassering.csv``, ``halt.csv``) with
exactly the columns of ``partners/<partner>/mapping.toml``, streaming case by case so memory stays
flat for millions of rows, and a ``generation.json`` report that says per partner how many rows the
producer must accept and reject. ``noise`` spoils a share of rows in realistic ways (see
``exports.NOISE_KINDS``). The same seed gives byte-identical files. All data are invented; any match
with a real person is chance.

``om_decision_rows``/``OM_COLUMNS``/``write_csv`` are the first, OM-only version's API, kept for callers.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

from ketenstroom.calendar import AMSTERDAM
from ketenstroom.catalogue import Catalogue
from synthetic.chain import ChainGenerator
from synthetic.codes import OM_DECISIONS as _OM_DECISIONS
from synthetic.exports import (
    NOISE_KINDS,
    REJECT_REASONS,
    STYLES,
    GenerationReport,
    PartnerExport,
    PartnerReport,
    load_layout,
    style_for,
)
from synthetic.identity import IdentityNoise
from synthetic.persons import POSTCODE_AREAS, Person, person, spoil_bsn, valid_bsn

#: The partners the generator has realism profiles for (``STYLES``), in chain order.
PROFILED: tuple[str, ...] = ("politie", "om", "rechtspraak", "cjib", "dji", "reclassering", "halt")

__all__ = [
    "NOISE_KINDS",
    "OM_COLUMNS",
    "OM_DECISIONS",
    "POSTCODE_AREAS",
    "REJECT_REASONS",
    "STYLES",
    "GenerationReport",
    "IdentityNoise",
    "PartnerReport",
    "Person",
    "generate_chain",
    "make_person",
    "om_decision_rows",
    "partner_columns",
    "write_csv",
]

PARKET_CODES = ("13", "10", "09", "16", "03", "05", "96")
#: OM's own decision codes (COMPAS/GPS style) with the share of decisions they get.
OM_DECISIONS: tuple[tuple[str, float], ...] = tuple(
    (code, share) for code, (_label, share) in _OM_DECISIONS.items()
)
SEPOT_GROUNDS = ("01", "02", "03", "50", "52", "56", "58", "59")
WETSARTIKELEN = (
    "310 Sr",
    "311 Sr",
    "300 Sr",
    "285 Sr",
    "350 Sr",
    "326 Sr",
    "8 WVW",
    "2 OW",
    "3 OW",
    "416 Sr",
)


def partner_columns(partner: str, catalogue: Catalogue | None = None) -> tuple[str, ...]:
    """The export's columns: the type column, then every column the partner's mapping uses."""
    return load_layout(partner, catalogue).columns


OM_COLUMNS: tuple[str, ...] = partner_columns("om")


def generate_chain(
    out_dir: Path,
    *,
    cases: int,
    seed: int = 7,
    noise: float = 0.0,
    start: date = date(2026, 1, 1),
    days: int = 365,
    formats: dict[str, str] | None = None,
    partners: Iterable[str] = PROFILED,
    catalogue: Catalogue | None = None,
    as_of: date | None = None,
    identity: IdentityNoise | None = None,
) -> GenerationReport:
    """Write one export per partner into ``out_dir`` for ``cases`` crimes; returns (and writes) the report.

    ``formats`` overrides a partner's file format, e.g. ``{"cjib": "csv", "om": "jsonl"}``. ``noise`` is
    the share of rows that get one realistic mistake each. ``as_of`` (default: today in Amsterdam) is
    the day the export is made, at its start: no event or registration on or after it is written (a
    case followed past it stops there), so ``publish`` takes every row it is told to accept.
    ``identity`` is the identity noise (police records before identification, BSN-only partners,
    conflicting pairs; ``synthetic.identity``), by default ``IdentityNoise()``; the report's
    ``identity`` holds the true number of persons in what was written.
    """
    as_of = as_of or datetime.now(AMSTERDAM).date()
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be a share between 0 and 1, got {noise}")
    out_dir.mkdir(parents=True, exist_ok=True)
    formats = formats or {}
    unknown = sorted(set(formats) - set(PROFILED))
    if unknown:
        raise ValueError(f"unknown partners in formats: {unknown}")
    for partner in partners:
        style_for(partner, formats.get(partner))  # refuse an unknown format before opening any file
    chain = ChainGenerator(
        seed=seed,
        cases=cases,
        start=start,
        days=days,
        as_of=as_of,
        identity=IdentityNoise() if identity is None else identity,
    )
    exports: dict[str, PartnerExport] = {}
    try:
        for partner in partners:
            exports[partner] = PartnerExport(
                partner,
                out_dir,
                seed=seed,
                noise=noise,
                fmt=formats.get(partner),
                catalogue=catalogue,
                until=chain.until,
            )
        emit = {p: e.emit for p, e in exports.items()}
        for _ in range(cases):
            for partner, rtype, values in chain.case():
                if partner in emit:  # a subset of partners: the chain still runs whole
                    emit[partner](rtype, values)
    finally:
        reports = {p: e.close() for p, e in exports.items()}
    report = GenerationReport(
        seed=seed,
        cases=cases,
        noise=noise,
        start=start.isoformat(),
        days=days,
        population=chain.population,
        as_of=as_of.isoformat(),
        partners=reports,
        chain={k: dict(sorted(v.items())) for k, v in chain.stats.items()},
        identity=chain.identity.truth.report(),
    )
    (out_dir / "generation.json").write_text(report.to_json() + "\n", encoding="utf-8")
    return report


# -- the OM-only API of the first version --------------------------------------------------------------
def _bsn(rng: random.Random) -> str:
    return valid_bsn(rng.getrandbits(48))


def make_person(rng: random.Random, *, invalid_bsn: bool = False) -> Person:
    """A person drawn from ``rng`` (the population of ``generate_chain`` is indexed instead)."""
    found = person(rng.getrandbits(31), rng.getrandbits(31), date(2026, 1, 1))
    if invalid_bsn:
        return Person(
            found.index,
            found.skn,
            spoil_bsn(found.bsn or _bsn(rng)),
            found.birth_date,
            found.sex,
            found.postcode,
            found.municipality,
        )
    return found


def om_decision_rows(
    count: int, *, seed: int = 7, start: date = date(2026, 1, 1), days: int = 180, noise: float = 0.0
) -> Iterator[dict[str, str]]:
    """OM BESLISSING export rows (OM's column names, Dutch dates). ``noise`` is the share of bad rows."""
    rng = random.Random(seed)  # noqa: S311 - synthetic data, not security
    codes = [c for c, _ in OM_DECISIONS]
    weights = [w for _, w in OM_DECISIONS]
    population = max(1, count // 3)
    for n in range(count):
        who = person(seed, rng.randrange(population), start)
        registered = datetime.combine(start + timedelta(days=rng.randrange(days)), datetime.min.time())
        registered += timedelta(hours=rng.randrange(8, 18), minutes=rng.randrange(60))
        decided = registered + timedelta(days=rng.randrange(1, 120), hours=rng.randrange(0, 6))
        code = rng.choices(codes, weights=weights)[0]
        year = registered.year % 100
        row = {
            "soort": "BESLISSING",
            "recordnummer": f"OM-B-{seed:03d}-{n:07d}",
            "versie": "1",
            "bronsysteem": rng.choice(("COMPAS", "GPS")),
            "beslisdatum": decided.strftime("%d-%m-%Y %H:%M"),
            "inschrijfdatum": registered.strftime("%d-%m-%Y"),
            "parketnummer": f"{rng.choice(PARKET_CODES)}-{rng.randrange(0, 999_999):06d}-{year:02d}",
            "pv_nummer": f"PL{rng.randrange(1, 11):02d}{rng.choice('ABCD')}{rng.randrange(1, 9)} "
            f"{registered.year}{rng.randrange(0, 999_999):06d}-{rng.randrange(1, 9)}",
            "skn": who.skn,
            "bsn": who.bsn or "",
            "geboortedatum": who.birth_date.strftime("%d-%m-%Y"),
            "geslacht": who.sex,
            "postcode": who.postcode,
            "beslissing": code,
            "sepotgrond": rng.choice(SEPOT_GROUNDS) if code in ("SEPO", "VBSE") else "",
            "wetsartikel": rng.choice(WETSARTIKELEN),
        }
        if noise and rng.random() < noise:
            _spoil(rng, row)
        yield {c: row.get(c, "") for c in OM_COLUMNS}


def _spoil(rng: random.Random, row: dict[str, str]) -> None:
    """Make one realistic mistake in a row."""
    kind = rng.randrange(4)
    if kind == 0:
        row["beslisdatum"] = "31-02-2026"  # impossible date
    elif kind == 1:
        row["parketnummer"] = ""  # missing case reference
    elif kind == 2:
        row["beslissing"] = "XXXX"  # a code OM's table does not have
    else:
        row["bsn"] = spoil_bsn(row["bsn"] or _bsn(rng))  # fails the 11-check


def write_csv(
    path: Path,
    rows: Iterable[dict[str, str]],
    columns: tuple[str, ...],
    *,
    delimiter: str = ";",
    encoding: str = "utf-8",
) -> int:
    """Write rows as a partner would export them; returns the number of rows written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with path.open("w", encoding=encoding, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, delimiter=delimiter, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
            written += 1
    return written
