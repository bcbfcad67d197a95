"""Keyed pseudonyms (HMAC-SHA-256) and generalisation of quasi-identifiers.

Each identifier kind has its own domain label inside the MAC, so a case pseudonym can never equal a
person pseudonym of the same digits. The key is never logged; its id is stamped on every output, and
rotating the key (new id) yields new pseudonyms while old outputs stay as they were.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from ketenstroom.contract.identifiers import (
    bsn_passes_11_check,
    normalise_parketnummer,
    normalise_pv_number,
)

BSN_FAILED_11_CHECK = "BSN_FAILED_11_CHECK"


@dataclass(frozen=True)
class PersonPseudonym:
    """The resolved pseudonym (SKN before BSN) and both identifiers' own pseudonyms, each nullable."""

    pseudonym: str | None
    source: str  # SKN, BSN or NONE
    flags: tuple[str, ...] = ()
    skn: str | None = None  # pseudonym of the SKN, domain "person:skn"
    bsn: str | None = None  # pseudonym of a valid BSN, domain "person:bsn"


@dataclass(frozen=True)
class Pseudonymiser:
    key: bytes = field(repr=False)
    key_id: str
    # HMAC-SHA-256 (RFC 2104) with the key's inner and outer blocks hashed once: per MAC two copies of
    # those states instead of the key set up again (``hmac.digest`` does that per call, ~3x the cost)
    _inner: Any = field(init=False, repr=False, compare=False)
    _outer: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        block = (hashlib.sha256(self.key).digest() if len(self.key) > 64 else self.key).ljust(64, b"\0")
        object.__setattr__(self, "_inner", hashlib.sha256(bytes(b ^ 0x36 for b in block)))
        object.__setattr__(self, "_outer", hashlib.sha256(bytes(b ^ 0x5C for b in block)))

    def _mac(self, domain: str, value: str) -> str:
        inner = self._inner.copy()
        inner.update(f"{domain}\x1f{value}".encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        return str(outer.hexdigest())

    def person(self, skn: str | None, bsn: str | None) -> PersonPseudonym:
        """SKN before BSN (the strongest identifier present); a BSN failing the 11-check is flagged.

        Both pseudonyms are returned as well: a record carrying both is the evidence the sink's person
        tables use to link a BSN-only record to the SKN of the same person."""
        flags: tuple[str, ...] = ()
        if bsn is not None and not bsn_passes_11_check(bsn):
            flags = (BSN_FAILED_11_CHECK,)
            bsn = None
        skn = skn.strip() if skn else None
        by_skn = self._mac("person:skn", skn) if skn else None
        by_bsn = self._mac("person:bsn", bsn) if bsn else None
        if by_skn:
            return PersonPseudonym(by_skn, "SKN", flags, by_skn, by_bsn)
        if by_bsn:
            return PersonPseudonym(by_bsn, "BSN", flags, None, by_bsn)
        return PersonPseudonym(None, "NONE", flags)

    def case(self, parketnummer: str) -> str:
        return self._mac("case:parketnummer", normalise_parketnummer(parketnummer))

    def report(self, pv_number: str) -> str:
        return self._mac("report:pv", normalise_pv_number(pv_number))

    def execution(self, cjib_number: str) -> str:
        return self._mac("execution:cjib", "".join(cjib_number.split()))


def age_at(birth: date, moment: datetime) -> int:
    day = moment.date()
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def pc4(postcode: str | None) -> str | None:
    if not postcode:
        return None
    digits = postcode.strip()[:4]
    return digits if digits.isdigit() else None
