"""Study pseudonyms: stable within a study across reruns, disjoint between studies and from the platform's."""

from __future__ import annotations

import hashlib
import hmac

import duckdb
import pyarrow as pa

from extracts.rekey import pads, rekey_sql, study_key, study_pseudonym

SECRET = b"extract-secret-for-unit-tests-0123456789abcdef"
PLATFORM = [hashlib.sha256(f"person {i}".encode()).hexdigest() for i in range(500)]


def _rekey(key: bytes, kind: str, values: list[str | None]) -> list[str | None]:
    with duckdb.connect() as con:
        con.register("t", pa.table({"p": pa.array(values, pa.string())}))
        rows = con.execute(f"select {rekey_sql('p', kind)} from t", pads(key)).fetchall()
    return [r[0] for r in rows]


def test_sql_is_the_rfc2104_hmac() -> None:
    key = study_key(SECRET, "wodc-2026-001")
    assert (
        key == hmac.new(SECRET, b"ketenstroom.extract-study-key/1\x1fwodc-2026-001", hashlib.sha256).digest()
    )
    got = _rekey(key, "person", [*PLATFORM[:20], None])
    assert got[:20] == [study_pseudonym(key, "person", p) for p in PLATFORM[:20]]
    assert got[20] is None
    expected = hmac.new(key, b"person\x1f" + PLATFORM[0].encode(), hashlib.sha256).hexdigest()[:32]
    assert got[0] == expected


def test_stable_within_a_study_disjoint_between_studies() -> None:
    a1 = _rekey(study_key(SECRET, "study-a"), "person", PLATFORM)
    a2 = _rekey(study_key(SECRET, "study-a"), "person", list(reversed(PLATFORM)))  # a rerun, other order
    b = _rekey(study_key(SECRET, "study-b"), "person", PLATFORM)
    assert a1 == list(reversed(a2))
    assert len(set(a1)) == len(PLATFORM)
    assert not set(a1) & set(b)
    assert not (set(a1) | set(b)) & set(PLATFORM)
    # another extract key gives other pseudonyms for the same study
    assert not set(a1) & set(_rekey(study_key(SECRET + b"x", "study-a"), "person", PLATFORM))


def test_case_and_person_are_separate_domains() -> None:
    key = study_key(SECRET, "study-a")
    assert not set(_rekey(key, "case", PLATFORM)) & set(_rekey(key, "person", PLATFORM))
