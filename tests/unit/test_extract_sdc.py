"""k-anonymity, distinct l-diversity and local suppression on hand-built microdata (counted by hand)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from extracts.sdc import measure, offending, protect, specificity_order
from ketenstroom.errors import ExtractRefused


def _table(rows: list[tuple[object, ...]], names: tuple[str, ...]) -> pa.Table:
    return pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)})


def test_k_and_l_as_counted_by_hand() -> None:
    rows = [
        *[("20-29", "M", d) for d in "ABA"],  # group of 3, decisions {A, B}: 2
        *[("20-29", "V", d) for d in "AAA"],  # group of 3, decisions {A}: 1
        *[("30-39", "M", d) for d in "ABCA"],  # group of 4, decisions {A, B, C}: 3
        *[("40-49", "V", d) for d in "AB"],  # group of 2, decisions {A, B}: 2
    ]
    t = _table(rows, ("age", "sex", "decision"))
    m = measure(t, ["age", "sex"], ["decision"], k=3, l=2)
    assert (m.rows, m.groups, m.k, m.l) == (12, 4, 2, 1)
    # below k=3: the 40-49 V group (2 rows); below l=2: the 20-29 V group (3 rows)
    assert (m.unsafe_groups, m.unsafe_rows) == (2, 5)
    # without the sensitive column l is undefined and only the group of 2 is unsafe
    m = measure(t, ["age", "sex"], [], k=3, l=2)
    assert (m.k, m.l, m.unsafe_rows) == (2, None, 2)
    # a missing sensitive value is a value of its own: {A, missing} is 2
    t2 = _table([("x", "A"), ("x", None), ("x", "A")], ("age", "decision"))
    assert measure(t2, ["age"], ["decision"], k=3, l=2).l == 2


def test_suppression_takes_the_most_specific_quasi_identifier_first() -> None:
    rows = [
        *[("A", "M")] * 3,
        *[("B", "M")] * 3,
        *[("A", "V")] * 3,
        ("C", "M"),
        ("D", "M"),
        ("E", "M"),
    ]
    t = _table(rows, ("region", "sex"))
    assert specificity_order(t, ["sex", "region"]) == ["region", "sex"]  # 5 regions, 2 sexes
    p = protect(t, ["sex", "region"], [], k=3, l=2, budget=0.25)
    out = p.table.to_pylist()
    # the three singletons lose their region (not their sex) and together form a group of three
    assert out[:9] == [{"region": r, "sex": s} for r, s in rows[:9]]
    assert out[9:] == [{"region": None, "sex": "M"}] * 3
    assert (p.rows_suppressed, p.rows_removed, p.cells_suppressed) == (3, 0, {"region": 3})
    assert (p.before.k, p.after.k, p.after.unsafe_rows) == (1, 3, 0)


def test_suppression_goes_on_to_the_next_column_and_removes_what_stays_unsafe() -> None:
    rows = [*[("A", "M")] * 3, *[("B", "V")] * 3, ("C", "M"), ("D", "V")]
    p = protect(_table(rows, ("region", "sex")), ["region", "sex"], [], k=2, l=2, budget=0.25)
    # region first: (., M) and (., V) are still single, so sex goes too: (., .) holds both
    assert p.table.to_pylist()[6:] == [{"region": None, "sex": None}] * 2
    assert (p.cells_suppressed, p.rows_suppressed, p.rows_removed, p.after.k) == (
        {"region": 2, "sex": 2},
        2,
        0,
        2,
    )

    rows = [*[("A", "M")] * 3, ("C", "M")]
    p = protect(_table(rows, ("region", "sex")), ["region", "sex"], [], k=2, l=2, budget=0.25)
    # alone even with nothing left to tell it apart: removed
    assert p.table.num_rows == 3 and (p.rows_suppressed, p.rows_removed) == (1, 1)
    assert p.after.k == 3


def test_groups_without_diversity_are_merged_until_l_holds() -> None:
    rows = [
        *[("20-29", "M", "X")] * 3,  # everyone here got X: learning the group tells the decision
        *[("30-39", "M", "Y")] * 3,  # and everyone here Y
        *[("20-29", "V", d) for d in "XYZXY"],
        *[("30-39", "V", d) for d in "XYZXY"],
    ]
    t = _table(rows, ("age", "sex", "decision"))
    assert measure(t, ["age", "sex"], ["decision"], k=3, l=2).l == 1
    p = protect(t, ["age", "sex"], ["decision"], k=3, l=2, budget=0.5)
    # age (2 values, first in order on a tie with sex) goes: (., M) holds X, X, X, Y, Y, Y
    assert p.cells_suppressed == {"age": 6}
    assert sorted(r["decision"] for r in p.table.to_pylist() if r["age"] is None) == list("XXXYYY")
    # groups after: (., M) 6 rows {X, Y}; (20-29, V) 5 rows {X, Y, Z}; (30-39, V) 5 rows {X, Y, Z}
    assert (p.after.k, p.after.l, p.after.groups, p.rows_removed) == (5, 2, 3, 0)


def test_refused_over_budget_with_the_offending_combinations() -> None:
    rows = [*[("A", "M")] * 3, *[("B", "M")] * 3, *[("A", "V")] * 3, ("C", "M"), ("D", "M"), ("E", "M")]
    t = _table(rows, ("region", "sex"))
    with pytest.raises(ExtractRefused) as refused:
        protect(t, ["region", "sex"], [], k=3, l=2, budget=0.2)  # 3 of 12 rows > 2 allowed
    assert "3 of 12 rows" in str(refused.value) and "allows 2" in str(refused.value)
    assert refused.value.offending == [
        {"region": "C", "sex": "M", "rows": 1},
        {"region": "D", "sex": "M", "rows": 1},
        {"region": "E", "sex": "M", "rows": 1},
    ]
    assert offending(t, ["region", "sex"], [], 3, 2) == refused.value.offending
    # exactly at the budget it is allowed
    assert protect(t, ["region", "sex"], [], k=3, l=2, budget=0.25).rows_suppressed == 3
