"""Seeded synthetic partner exports, in each partner's own columns and codes.

Realistic enough to exercise the pipeline: persons with an SKN and usually a BSN that passes the
11-check, parketnummers and pv-numbers in their real shapes, OM decisions in roughly the shares CBS
reports (DOMAIN.md §2.5.1: >50% dagvaarding, 20% onvoorwaardelijk sepot, 18% strafbeschikking, 5%
voorwaardelijk beleidssepot, 3% transactie). Rows are written as they are generated, so memory stays
flat however many are asked for. All data are invented; any match with a real person is chance.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from ketenstroom.contract.identifiers import complete_bsn

# PC4 -> municipality (CBS GM code); the processor's terminology/pc4-gemeente.csv has the same rows.
POSTCODE_AREAS: tuple[tuple[str, str], ...] = (
    ("1011", "GM0363"), ("1054", "GM0363"), ("3011", "GM0599"), ("3072", "GM0599"),
    ("2511", "GM0518"), ("3511", "GM0344"), ("5611", "GM0772"), ("9711", "GM0014"),
    ("6511", "GM0268"), ("8011", "GM0193"),
)
PARKET_CODES = ("13", "10", "09", "16", "03", "05", "96")
# OM's own decision codes (COMPAS/GPS style) with the share of decisions they get.
OM_DECISIONS: tuple[tuple[str, float], ...] = (
    ("DAGV", 0.50), ("SEPO", 0.20), ("STRB", 0.18), ("VBSE", 0.05), ("TRAN", 0.03),
    ("VOEG", 0.02), ("OVER", 0.01), ("OPVZ", 0.01),
)
SEPOT_GROUNDS = ("01", "02", "03", "50", "52", "56", "58", "59")
WETSARTIKELEN = ("310 Sr", "311 Sr", "300 Sr", "285 Sr", "350 Sr", "326 Sr", "8 WVW", "2 OW", "3 OW", "416 Sr")

OM_COLUMNS = (
    "zaaknummer", "versie", "parketnummer", "pv_nummer", "skn", "bsn", "geboortedatum", "geslacht",
    "postcode", "beslissing", "sepotgrond", "wetsartikel", "beslisdatum", "inschrijfdatum", "bronsysteem",
)


@dataclass(frozen=True)
class Person:
    skn: str
    bsn: str | None
    birth_date: date
    sex: str
    postcode: str


def _bsn(rng: random.Random) -> str:
    while True:
        found = complete_bsn(f"{rng.randrange(10_000_000, 99_999_999):08d}")
        if found is not None and found != "000000000":
            return found


def make_person(rng: random.Random, *, invalid_bsn: bool = False) -> Person:
    bsn: str | None = _bsn(rng) if rng.random() < 0.9 else None
    if invalid_bsn:
        good = _bsn(rng)
        bsn = good[:8] + str((int(good[8]) + 1) % 10)  # one digit off: fails the 11-check
    pc4, _gm = rng.choice(POSTCODE_AREAS)
    return Person(
        skn=f"{rng.randrange(10_000_000, 99_999_999):08d}",
        bsn=bsn,
        birth_date=date(1950, 1, 1) + timedelta(days=rng.randrange(0, 365 * 58)),
        sex=rng.choices(("M", "V", "O"), weights=(80, 19, 1))[0],
        postcode=f"{pc4} {rng.choice('ABCDEFGHJKLMNPRSTVWXZ')}{rng.choice('ABCDEFGHJKLMNPRSTVWXZ')}",
    )


def om_decision_rows(
    count: int, *, seed: int = 7, start: date = date(2026, 1, 1), days: int = 180, noise: float = 0.0
) -> Iterator[dict[str, str]]:
    """OM decision export rows (OM's column names, Dutch dates). ``noise`` is the share of bad rows."""
    rng = random.Random(seed)
    codes = [c for c, _ in OM_DECISIONS]
    weights = [w for _, w in OM_DECISIONS]
    persons = [make_person(rng) for _ in range(max(1, count // 3))]
    for n in range(count):
        person = persons[rng.randrange(len(persons))]
        registered = datetime.combine(start + timedelta(days=rng.randrange(days)), datetime.min.time())
        registered += timedelta(hours=rng.randrange(8, 18), minutes=rng.randrange(60))
        decided = registered + timedelta(days=rng.randrange(1, 120), hours=rng.randrange(0, 6))
        code = rng.choices(codes, weights=weights)[0]
        year = registered.year % 100
        row = {
            "zaaknummer": f"OM{seed:03d}{n:09d}",
            "versie": "1",
            "parketnummer": f"{rng.choice(PARKET_CODES)}-{rng.randrange(0, 999_999):06d}-{year:02d}",
            "pv_nummer": f"PL{rng.randrange(1, 11):02d}{rng.choice('ABCD')}{rng.randrange(1, 9)} "
                         f"{registered.year}{rng.randrange(0, 999_999):06d}-{rng.randrange(1, 9)}",
            "skn": person.skn,
            "bsn": person.bsn or "",
            "geboortedatum": person.birth_date.strftime("%d-%m-%Y"),
            "geslacht": person.sex,
            "postcode": person.postcode,
            "beslissing": code,
            "sepotgrond": rng.choice(SEPOT_GROUNDS) if code in ("SEPO", "VBSE") else "",
            "wetsartikel": rng.choice(WETSARTIKELEN),
            "beslisdatum": decided.strftime("%d-%m-%Y %H:%M"),
            "inschrijfdatum": registered.strftime("%d-%m-%Y"),
            "bronsysteem": rng.choice(("COMPAS", "GPS")),
        }
        if noise and rng.random() < noise:
            _spoil(rng, row)
        yield row


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
        bsn = row["bsn"] or _bsn(rng)
        row["bsn"] = bsn[:8] + str((int(bsn[8]) + 1) % 10)  # fails the 11-check


def write_csv(path: Path, rows: Iterator[dict[str, str]], columns: tuple[str, ...], *,
              delimiter: str = ";", encoding: str = "utf-8") -> int:
    """Write rows as a partner would export them; returns the number of rows written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with path.open("w", encoding=encoding, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, delimiter=delimiter)
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
            written += 1
    return written
