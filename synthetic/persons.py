"""Synthetic suspects, derived from ``(seed, index)`` alone so no population is ever held in memory.

Every person has an SKN (8 digits, unique per index); ~90% also a BSN that passes the 11-check
(DOMAIN.md §4.6), unique per index too, some with a leading zero. Birth dates give ~15% juveniles
(12-17) at the reference date; sex is M ~80%. Cases pick their suspect with a skew towards low
indexes, so the same persons come back in several cases (recidivism) without a registry of who did
what. All data are invented.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date

from ketenstroom.contract.identifiers import complete_bsn

# PC4 -> municipality (CBS GM code); the processor's terminology/pc4-gemeente.csv has the same rows.
POSTCODE_AREAS: tuple[tuple[str, str], ...] = (
    ("1011", "GM0363"),
    ("1054", "GM0363"),
    ("3011", "GM0599"),
    ("3072", "GM0599"),
    ("2511", "GM0518"),
    ("3511", "GM0344"),
    ("5611", "GM0772"),
    ("9711", "GM0014"),
    ("6511", "GM0268"),
    ("8011", "GM0193"),
)
_LETTERS = "ABCDEFGHJKLMNPRSTVWXZ"
_MASK = (1 << 64) - 1
_SKN_SPACE = 90_000_000  # 10000000 .. 99999999
_SKN_STEP = 61_803_397  # coprime with the space: index -> SKN is a bijection
_BSN_SPACE = 99_000_000  # first eight digits 01000000 .. 99999999
_BSN_STEP = 27_182_819  # coprime with 2, 3, 5 and 11
_BSN_CORES = 9_900_000  # first seven digits 0100000 .. 9999999: one per person index


def mix64(x: int) -> int:
    """SplitMix64 finaliser: a fast, well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


@dataclass(frozen=True, slots=True)
class Person:
    index: int
    skn: str
    bsn: str | None
    birth_date: date
    sex: str
    postcode: str
    municipality: str  # GM code of the home postcode area

    def fields(self) -> dict[str, object]:
        """The person as contract paths (``suspect.*``)."""
        return {
            "suspect.skn": self.skn,
            "suspect.bsn": self.bsn,
            "suspect.birth_date": self.birth_date,
            "suspect.sex": self.sex,
            "suspect.postcode": self.postcode,
        }


def valid_bsn(h: int) -> str:
    """A BSN passing the 11-check (``complete_bsn``), from a hash; never 000000000."""
    first = 1_000_000 + (h % _BSN_SPACE)
    while True:
        digits = f"{first:08d}"
        found = complete_bsn(digits)
        if found is not None:
            return found
        first = 1_000_000 + (first - 1_000_000 + _BSN_STEP) % _BSN_SPACE


def person_bsn(index: int, base: int) -> str:
    """Person ``index``'s BSN, unique per index (below ``_BSN_CORES`` persons): the index picks the first
    seven digits, the eighth is the first that lets the 11-check complete (one of 0-9 always does: the
    eighth digit's weight 2 moves the sum through ten different residues)."""
    core = 100_000 + (index * _BSN_STEP + (base >> 7)) % _BSN_CORES
    for eighth in range(10):
        found = complete_bsn(f"{core:07d}{eighth}")
        if found is not None:
            return found
    raise AssertionError("unreachable: one eighth digit always completes the 11-check")


def spoil_bsn(bsn: str) -> str:
    """Change the last digit by one: nine digits that fail the 11-check (the weighted sum moves by 1)."""
    bsn = bsn.zfill(9)
    return bsn[:8] + str((int(bsn[8]) + 1) % 10)


def person(seed: int, index: int, reference: date) -> Person:
    """Person ``index`` of the population for ``seed``; the same arguments give the same person."""
    base = mix64((seed & 0xFFFFFFFF) << 32 ^ 0x5EED_0000_0000_0000)
    h = mix64(base ^ index)
    h2 = mix64(h)
    h3 = mix64(h2)
    skn = 10_000_000 + (index * _SKN_STEP + base) % _SKN_SPACE
    bsn = person_bsn(index, base) if h % 100 < 90 else None
    # ~15% juveniles (12..17 at the reference date), adults 18..70 skewed towards young.
    u = (h2 & 0xFFFFFF) / 0x1000000
    juvenile = (h2 >> 24) % 100 < 15
    age_days = int(365.25 * (12 + 6 * u)) if juvenile else int(365.25 * (18 + 52 * u**1.8))
    birth = date.fromordinal(reference.toordinal() - age_days)
    s = (h2 >> 40) % 100
    sex = "M" if s < 80 else ("V" if s < 99 else "O")
    pc4, gm = POSTCODE_AREAS[h3 % len(POSTCODE_AREAS)]
    letters = _LETTERS[(h3 >> 8) % 21] + _LETTERS[(h3 >> 16) % 21]
    return Person(
        index=index,
        skn=str(skn),
        bsn=bsn,
        birth_date=birth,
        sex=sex,
        postcode=f"{pc4} {letters}",
        municipality=gm,
    )


def population_size(cases: int) -> int:
    """How many distinct persons ``cases`` cases draw from (fewer persons than cases: recidivism)."""
    return max(20, int(cases * 0.6))


def pick_index(rng: random.Random, size: int) -> int:
    """A person index skewed to low indexes: ~30% of cases involve the 10% most frequent suspects."""
    return int(size * rng.random() ** 2)
