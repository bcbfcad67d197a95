"""Chain identifiers: BSN 11-check, parketnummer and pv-number normalisation. Pure functions.

Sources: DOMAIN.md §2.3 (formats) and §4.6 (the BSN 11-proef, last weight -1).
"""

from __future__ import annotations

import re

from ketenstroom.errors import IdentifierError

_BSN_WEIGHTS = (9, 8, 7, 6, 5, 4, 3, 2, -1)
# 2-digit parket code, 6-digit sequence, 2-digit year; separators vary ("13-246712-15", "13/246712-15").
_PARKETNUMMER = re.compile(r"^\s*(\d{2})\s*[-/. ]?\s*(\d{6})\s*[-/. ]?\s*(\d{2})\s*$")
# "PL07B3 2023123456-1": unit code, then year + six digits, "-", a digit.
_PV_NUMBER = re.compile(r"^\s*(PL\d{2}[A-Z]\d)\s*[-/ ]?\s*(\d{4})(\d{6})\s*-\s*(\d)\s*$", re.IGNORECASE)
_SKN = re.compile(r"^\d{8,10}$")


def normalise_bsn(value: str) -> str:
    """Nine digits; an 8-digit number gets its leading zero back. Raises on anything but digits."""
    digits = value.strip().replace(".", "").replace(" ", "")
    if not digits.isdigit() or len(digits) not in (8, 9):
        raise IdentifierError(f"BSN must be 8 or 9 digits, got {len(digits)} characters", reason="bsn-format")
    return digits.zfill(9)


def bsn_passes_11_check(bsn: str) -> bool:
    """True iff the nine-digit ``bsn`` passes the 11-proef; 000000000 is rejected explicitly."""
    if len(bsn) != 9 or not bsn.isdigit() or bsn == "000000000":
        return False
    total = sum(w * int(d) for w, d in zip(_BSN_WEIGHTS, bsn, strict=True))
    return total % 11 == 0


def complete_bsn(first_eight: str) -> str | None:
    """The BSN with these first eight digits that passes the 11-check, if a last digit 0-9 exists."""
    partial = sum(w * int(d) for w, d in zip(_BSN_WEIGHTS[:8], first_eight, strict=True))
    last = partial % 11
    return f"{first_eight}{last}" if last < 10 else None


def normalise_parketnummer(value: str) -> str:
    """Canonical ``PP-NNNNNN-JJ`` form, so spellings of one case give one pseudonym."""
    match = _PARKETNUMMER.match(value)
    if match is None:
        raise IdentifierError(
            "parketnummer must be a 2-digit parket code, 6-digit sequence and 2-digit year "
            "(e.g. 13-246712-15)",
            reason="parketnummer-format",
        )
    return "-".join(match.groups())


def normalise_pv_number(value: str) -> str:
    """Canonical ``PL07B3 2023123456-1`` form (upper case, one space)."""
    match = _PV_NUMBER.match(value)
    if match is None:
        raise IdentifierError(
            "pv-number must look like 'PL07B3 2023123456-1' (unit code, year and 6 digits, '-', a digit)",
            reason="pv-number-format",
        )
    unit, year, seq, check = match.groups()
    return f"{unit.upper()} {year}{seq}-{check}"


def is_skn(value: str) -> bool:
    """Plausible strafrechtketennummer: 8 to 10 digits (JustID does not publish a check rule)."""
    return bool(_SKN.match(value.strip()))
