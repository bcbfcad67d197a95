from __future__ import annotations

import pytest

from ketenstroom.contract.identifiers import (
    bsn_passes_11_check,
    complete_bsn,
    normalise_bsn,
    normalise_parketnummer,
    normalise_pv_number,
)
from ketenstroom.errors import IdentifierError


@pytest.mark.parametrize("bsn", ["123456782", "249566758"])
def test_documented_bsns_pass_the_11_check(bsn: str) -> None:
    assert bsn_passes_11_check(bsn)


# pragma: allowlist nextline secret (BSN test numbers, not secrets)
@pytest.mark.parametrize("bsn", ["123456789", "249566757", "000000000", "12345678", "12345678a"])
def test_bad_bsns_fail(bsn: str) -> None:
    assert not bsn_passes_11_check(bsn)


def test_last_weight_is_minus_one_not_plus_one() -> None:
    # 123456782 passes with the BSN weighting (last weight -1) but not with the old bank-account +1.
    digits = [int(d) for d in "123456782"]
    plus_one = sum(w * d for w, d in zip((9, 8, 7, 6, 5, 4, 3, 2, 1), digits, strict=True))
    assert plus_one % 11 != 0
    assert bsn_passes_11_check("123456782")


def test_complete_bsn_finds_the_check_digit() -> None:
    assert complete_bsn("12345678") == "123456782"
    found = complete_bsn("24956675")
    assert found == "249566758"


def test_eight_digit_bsn_gets_its_leading_zero() -> None:
    assert normalise_bsn("12345678") == "012345678"
    with pytest.raises(IdentifierError):
        normalise_bsn("1234")


@pytest.mark.parametrize(
    "spelling", ["13-246712-15", "13/246712-15", " 13 246712 15 ", "13.246712.15", "1324671215"]
)
def test_parketnummer_spellings_normalise_to_one_form(spelling: str) -> None:
    assert normalise_parketnummer(spelling) == "13-246712-15"


@pytest.mark.parametrize("bad", ["", "13-24671-15", "AB-246712-15", "13-246712-2015"])
def test_malformed_parketnummer_is_refused(bad: str) -> None:
    with pytest.raises(IdentifierError) as info:
        normalise_parketnummer(bad)
    assert info.value.reason == "parketnummer-format"


def test_pv_number_normalises_case_and_spacing() -> None:
    assert normalise_pv_number("pl07b3 2023123456-1") == "PL07B3 2023123456-1"
    assert normalise_pv_number("PL07B3  2023123456 - 1") == "PL07B3 2023123456-1"
    with pytest.raises(IdentifierError):
        normalise_pv_number("2023123456-1")
