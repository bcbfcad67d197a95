"""Disclosure rules of ``releases.sdc``, one by one, on hand-computed examples."""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
import pyarrow as pa
import pytest

from releases import sdc
from releases.engine import Engine
from releases.spec import Measure, TableSpec

SECRET = b"unit-test-cell-key-secret-0123456789abcdef"


def test_rounding_probabilities_are_inversely_proportional_to_distance() -> None:
    # 12: 10 is 2 away, 15 is 3 away -> P(up) = 2/5, P(down) = 3/5; 5 and 0 stay; 4 -> 5 with 4/5
    down, up, p_up = sdc.round_probabilities(np.array([12, 15, 0, 4, 1]))
    assert down.tolist() == [10, 15, 0, 0, 0]
    assert up.tolist() == [15, 15, 0, 5, 5]
    assert p_up.tolist() == [0.4, 0.0, 0.0, 0.8, 0.2]
    # the draw decides: up iff draw < r/5
    assert sdc.random_round(np.array([12, 12, 12]), np.array([0.0, 0.399, 0.4])).tolist() == [15, 15, 10]


def test_rounding_is_unbiased_and_within_four() -> None:
    rng = np.random.default_rng(5)
    counts = rng.integers(0, 200, 200_000)
    rounded = sdc.random_round(counts, rng.random(len(counts)))
    assert (rounded % 5 == 0).all()
    assert np.abs(rounded - counts).max() <= 4
    # mean error of n cells has sd <= sqrt(6/n) ~ 0.0055 here; 0.03 is > 5 sd
    assert abs((rounded - counts).mean()) < 0.03
    # for a single value, the mean over draws is the value: 13 -> 15 w.p. 3/5, 10 w.p. 2/5 -> 13
    draws = (np.arange(100_000) + 0.5) / 100_000
    assert sdc.random_round(np.full(100_000, 13), draws).mean() == pytest.approx(13.0, abs=1e-9)


def _record_keys(units: list[str]) -> int:
    return sum(sdc.record_key(SECRET, u) for u in units)


def test_cell_key_is_the_same_for_the_same_units_and_fresh_for_one_more() -> None:
    a = sdc.cell_draw(np.array([_record_keys(["p1", "p2", "p3"]) % sdc.KEY_MOD]))[0]
    b = sdc.cell_draw(np.array([_record_keys(["p3", "p1", "p2"]) % sdc.KEY_MOD]))[0]  # order does not matter
    c = sdc.cell_draw(np.array([_record_keys(["p1", "p2", "p3", "p4"]) % sdc.KEY_MOD]))[0]
    assert a == b
    assert a != c
    # the record key is HMAC-SHA256(secret, pseudonym), its first 60 bits, modulo 2**48
    mac = hmac.new(SECRET, b"p1", hashlib.sha256).hexdigest()
    assert sdc.record_uid(SECRET, "p1") == int(mac[:15], 16)
    assert sdc.record_key(SECRET, "p1") == int(mac[:15], 16) % 2**48
    # another secret gives another key (the secret is what makes the draw unpredictable)
    assert sdc.record_key(b"x" * 32, "p1") != sdc.record_key(SECRET, "p1")


def test_cell_key_draws_make_rounding_unbiased() -> None:
    # 4000 cells of 1..20 distinct units each: rounding with the cell keys' draws (not a PRNG) has a mean
    # error near 0 (the error of one cell has sd < 2.5, so the mean of 4000 has sd < 0.04; 0.2 is 5 sd)
    rng = np.random.default_rng(9)
    sizes = rng.integers(1, 21, 4000)
    sums = []
    for cell, size in enumerate(sizes):
        sums.append(_record_keys([f"c{cell}-u{u}" for u in range(size)]) % sdc.KEY_MOD)
    draws = sdc.cell_draw(np.array(sums, dtype=np.int64))
    rounded = sdc.random_round(sizes, draws)
    assert (rounded % 5 == 0).all() and np.abs(rounded - sizes).max() <= 4
    assert abs((rounded - sizes).mean()) < 0.2
    # and the draws look uniform: each fifth of [0, 1) holds about a fifth of the cells
    assert np.histogram(draws, bins=5, range=(0, 1))[0].min() > 700


def _spec(table: str, unit_key: str = "person_pseudonym") -> TableSpec:
    return TableSpec.model_validate(
        {
            "id": table,
            "version": "1",
            "title": "t",
            "short_title": "t",
            "description": "d",
            "statistical_unit": "persoon",
            "counting_rule": "r",
            "dimensions": [
                {
                    "id": "Geslacht",
                    "title": "Geslacht",
                    "expr": "sex",
                    "total_code": "T001038",
                    "total_title": "Totaal",
                }
            ],
            "measures": [
                {
                    "id": "Aantal_1",
                    "title": "Aantal",
                    "where": "in_period",
                    "unit_key": unit_key,
                    "dimensions": ["Geslacht"],
                }
            ],
        }
    )


def _events(persons: list[str], sexes: list[str]) -> pa.Table:
    n = len(persons)
    return pa.table(
        {
            "period": ["2026MM05"] * n,
            "event_id": [f"e{i}" for i in range(n)],
            "event_time": pa.array([1_778_000_000_000] * n, pa.timestamp("ms", tz="UTC")),
            "person_pseudonym": persons,
            "sex": sexes,
        }
    )


def test_sql_record_keys_equal_the_reference_and_tables_agree() -> None:
    persons = [f"{i:064x}" for i in range(1, 8)]
    engine = Engine("2026MM05", _events(persons, ["M", "M", "M", "V", "V", "V", "V"]), None, SECRET)
    got = engine.con.execute("SELECT record_key($u)", {"u": persons[0]}).fetchall()[0]
    assert got is not None and got[0] == sdc.record_key(SECRET, persons[0])
    one = engine.compute(_spec("KS9001NED"))
    two = engine.compute(_spec("KS9002NED"))
    engine.close()
    by = {str(one.coords["Geslacht"][i]): i for i in range(len(one))}
    # hand-computed: 7 persons in total, 3 men, 4 women; each rounded with its own cell key
    assert one.units[by["T001038"]] == 7 and one.units[by["M"]] == 3 and one.units[by["V"]] == 4
    for code, units in (("T001038", persons), ("M", persons[:3]), ("V", persons[3:])):
        draw = sdc.cell_draw(np.array([_record_keys(units) % sdc.KEY_MOD]))[0]
        expected = sdc.random_round(np.array([len(units)]), np.array([draw]))[0]
        assert one.value[by[code]] == expected
    # the same units give the same published value in another table
    assert one.value.tolist() == two.value.tolist()


def test_threshold_suppresses_statistics_over_fewer_than_ten_units() -> None:
    assert sdc.below_threshold(np.array([0, 9, 10, 11]), 10).tolist() == [True, True, False, False]
    persons = [f"{i:064x}" for i in range(1, 14)]
    events = _events(persons, ["M"] * 9 + ["V"] * 4).append_column(
        "days", pa.array(list(range(13)), pa.int32())
    )
    spec = _spec("KS9003NED").model_copy(
        update={
            "measures": [
                Measure.model_validate(
                    {
                        "id": "Mediaan_1",
                        "title": "Mediaan",
                        "kind": "median",
                        "value": "days",
                        "where": "in_period",
                        "unit_key": "person_pseudonym",
                        "dimensions": ["Geslacht"],
                    }
                )
            ]
        }
    )
    engine = Engine("2026MM05", events, None, SECRET)
    cells = engine.compute(spec)
    engine.close()
    by = {str(cells.coords["Geslacht"][i]): i for i in range(len(cells))}
    # total: 13 units, median of 0..12 = 6 (published exactly); men 9 and women 4 units: suppressed, not 0
    assert cells.value[by["T001038"]] == 6.0 and cells.attribute[by["T001038"]] == "None"
    for code in ("M", "V"):
        assert np.isnan(cells.value[by[code]]) and cells.attribute[by[code]] == "Confidential"
    assert {r["reason"] for r in cells.reasons} == {"threshold"}


def test_group_disclosure_flags_a_group_almost_all_in_one_category() -> None:
    # groups A: 9 of 10 in one category (90%) -> flagged at share 0.9; B: 6 of 10 -> not; C: empty -> not
    groups = np.array(["A", "A", "B", "B", "C", "C"])
    counts = np.array([9, 1, 6, 4, 0, 0])
    assert sdc.group_disclosure(groups, counts, 0.9).tolist() == [True, True, False, False, False, False]
    assert sdc.group_disclosure(groups, counts, 0.95).tolist() == [False] * 6


def test_a_suppressed_cell_recomputable_from_a_published_total_is_caught_and_fixed() -> None:
    # total 20 = a 5 + b 7 + c 8; only b suppressed -> b = 20 - 5 - 8 can be recomputed
    values = np.array([20, 5, 7, 8])
    rel = [sdc.Relation(total=0, parts=(1, 2, 3))]
    suppressed = np.array([False, False, True, False])
    assert sdc.recomputable(suppressed, rel) == [2]
    fixed = sdc.secondary_suppression(suppressed, rel, values)
    assert fixed.tolist() == [False, True, True, False]  # the smallest published part goes too
    assert sdc.recomputable(fixed, rel) == []
    # chained relations: row total and column total; hiding one part propagates until no cell follows
    #   t = x1 + x2 (row), x1 = y1 + y2 (x1 is itself a total)
    rel2 = [sdc.Relation(0, (1, 2)), sdc.Relation(1, (3, 4))]
    sup2 = np.array([False, False, False, True, False])
    fixed2 = sdc.secondary_suppression(sup2, rel2, np.array([10, 6, 4, 1, 5]))
    assert sdc.recomputable(fixed2, rel2) == []
    assert fixed2[3] and fixed2.sum() >= 2


def test_spec_refuses_min_max_and_keys() -> None:
    spec = _spec("KS9004NED")
    bad_dim = spec.model_copy(
        update={"dimensions": [spec.dimensions[0].model_copy(update={"expr": "person_pseudonym"})]}
    )
    with pytest.raises(Exception, match="key or min/max"):
        bad_dim.check()
    m = spec.measures[0].model_copy(update={"kind": "median", "value": "max(days)"})
    with pytest.raises(Exception, match="min, max"):
        spec.model_copy(update={"measures": [m]}).check()


def test_published_tables_are_declared_and_valid() -> None:
    from releases.spec import load_specs

    specs = load_specs()
    assert [s.id for s in specs] == [f"KS000{i}NED" for i in range(1, 8)]
    assert all(s.version for s in specs)


def test_a_row_without_a_code_of_a_multiple_dimension_still_counts_in_the_total() -> None:
    from releases.spec import load_specs

    concept = pa.struct(
        [
            (n, pa.string())
            for n in ("vocabulary", "code", "label", "counting_unit", "source_code_system", "source_code")
        ]
    )
    scm = [
        {
            "vocabulary": "scm2010",
            "code": c,
            "label": "",
            "counting_unit": "",
            "source_code_system": "",
            "source_code": "",
        }
        for c in ("1", "11")
    ]
    events = pa.table(
        {
            "period": ["2026MM05"] * 3,
            "event_id": ["e1", "e2", "e3"],
            "chain_step": ["POLICE_CRIME_REGISTERED"] * 3,
            "event_time": pa.array([1_778_000_000_000] * 3, pa.timestamp("ms", tz="UTC")),
            "report_pseudonym": ["r1", "r2", "r3"],
            "crime_municipality_code": ["GM0363"] * 3,
            "concepts": pa.array([scm, scm, []], pa.list_(concept)),
        }
    )
    spec = next(s for s in load_specs() if s.id == "KS0001NED")
    engine = Engine("2026MM05", events, None, SECRET)
    cells = engine.compute(spec)
    engine.close()
    units = {
        (str(cells.coords["SoortMisdrijf"][i]), str(cells.coords["RegioS"][i])): int(cells.units[i])
        for i in range(len(cells))
    }
    assert units[("T001161", "NL01")] == 3  # the crime without an offence code is in the total
    assert units[("CRI1", "NL01")] == 2 and units[("CRI11", "GM0363")] == 2
    assert units[("ONB", "NL01")] == 1


def test_two_units_sharing_a_record_key_stop_the_build() -> None:
    from ketenstroom.errors import DisclosureError

    persons = [f"{i:064x}" for i in range(1, 4)]
    engine = Engine("2026MM05", _events(persons, ["M", "V", "V"]), None, SECRET)
    engine.compute(_spec("KS9005NED"))  # fills the unit keys; distinct, so no complaint
    engine.con.execute("INSERT INTO unit_keys SELECT 'another unit', uid FROM unit_keys LIMIT 1")
    with pytest.raises(DisclosureError, match="share a record key"):
        engine.check_unit_keys()
    engine.close()
