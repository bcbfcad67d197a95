"""Releases count resolved persons: a person known by SKN in some events and by BSN alone in others is one
unit in KS0002 (suspects) and KS0005 (DJI inflow), as in the revision's sealed person table (no services:
a local store, the real sealer, tables and release build)."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ketenstroom.adapters.links import persons
from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.adapters.snapshots import Snapshots
from ketenstroom.contract.snapshots import staging_name
from releases.build import Releases
from releases.engine import Engine, load_events
from releases.spec import load_specs
from sinks.parquet import SCHEMA, write_table
from sinks.seal import Sealer, SealPolicy
from sinks.tables import build_missing_tables
from synthetic.period import period_events

PERIOD = "2026MM03"
SECRET = b"unit-test-cell-key-0123456789abcdef-persons"  # pragma: allowlist secret
TOTALS = {"Leeftijd": "T001", "Geslacht": "T001038", "Delicthoofdgroep": "T001161"}


def _bsn_only(table: pa.Table, seed: int) -> tuple[pa.Table, int]:
    """``table`` with each person's SKN and BSN pseudonyms (64 hex, as the processor's): OM rows carry
    both (the evidence), 40% of the police suspect registrations and 30% of the DJI inflows the BSN alone
    (the processor's pseudonym is then the BSN's). Returns the table and the true number of persons."""
    rng = np.random.default_rng(seed)
    skn = table["person_pseudonym"].combine_chunks()
    truth = len(pc.unique(skn.filter(pc.is_valid(skn))))
    # the person's BSN pseudonym: its SKN pseudonym's bytes reversed (another 64-hex string, one a person)
    bsn = pa.array([None if s is None else s[::-1] for s in skn.to_pylist()], pa.string())
    step = table["chain_step"].to_numpy(zero_copy_only=False)
    draw = rng.random(len(step))
    only = ((step == "POLICE_SUSPECT_REGISTERED") & (draw < 0.4)) | (
        (step == "DETENTION_INFLOW") & (draw < 0.3)
    )
    only_bsn = pa.array(only) if len(only) else pa.array([], pa.bool_())
    none = pa.scalar(None, pa.string())
    skn_col = pc.if_else(only_bsn, none, skn)
    person = pc.if_else(only_bsn, bsn, skn)
    source = pc.if_else(pc.is_valid(person), pc.if_else(only_bsn, "BSN", "SKN"), none)
    for name, column in [
        ("skn_pseudonym", skn_col),
        ("bsn_pseudonym", bsn),
        ("person_pseudonym", person),
        ("person_pseudonym_source", source),
    ]:
        table = table.set_column(
            table.schema.get_field_index(name), name, column.cast(SCHEMA.field(name).type)
        )
    return table, truth


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    root = tmp_path_factory.mktemp("release-persons")
    store = ObjectStore(f"file://{root}")
    table, truth = _bsn_only(period_events(8_000, SCHEMA, PERIOD, seed=5), seed=5)
    for first in range(0, len(table), 3_000):
        store.put(staging_name(PERIOD, 0, first), write_table(table.slice(first, 3_000)))
    policy = SealPolicy(final_after=timedelta(days=3650), clock=lambda: datetime(2027, 1, 1, tzinfo=UTC))
    assert [m.period for m in Sealer(store, policy).seal_due()] == [PERIOD]
    assert build_missing_tables(store, {PERIOD})
    return root, truth


def _person_table(store: ObjectStore) -> pa.Table:
    snap = Snapshots(store).manifest(PERIOD)
    assert snap is not None
    tables = Snapshots(store).tables(snap)
    assert tables is not None
    return pq.read_table(io.BytesIO(store.get(tables.files["person"].path)))


def _units(events: pa.Table, table_id: str, measure: str) -> int:
    """The unprotected number of units in the table's total cell of ``measure``."""
    spec = next(s for s in load_specs() if s.id == table_id)
    engine = Engine(PERIOD, events, None, SECRET)
    try:
        cells = engine.compute(spec)
    finally:
        engine.close()
    at = cells.measure == measure
    for dim, codes in cells.coords.items():
        at &= codes == TOTALS[dim]
    assert at.sum() == 1
    return int(cells.units[at][0])


def test_release_person_counts_are_the_person_tables_persons(sealed: tuple[Path, int]) -> None:
    root, truth = sealed
    store = ObjectStore(f"file://{root}")
    people = _person_table(store)
    # every generated person has a suspect registration and a DJI inflow in March: the person table's
    # persons are the units both measures count, and they are the generator's true persons
    assert people.num_rows == truth > 400
    assert len(pc.unique(people["person_pseudonym"])) == truth
    snap = Snapshots(store).manifest(PERIOD)
    assert snap is not None
    identities, inputs = persons(store, snap)
    assert inputs == {PERIOD: 0}
    resolved = load_events(store, [snap], identities)
    pseudonyms = load_events(store, [snap])  # the processor's SKN-else-BSN pseudonyms: persons twice
    for table_id, measure in [("KS0002NED", "Verdachten_1"), ("KS0005NED", "DjiInstroom_4")]:
        assert _units(resolved, table_id, measure) == truth, table_id
        # the broken count (by pseudonym) counts a BSN-only registration's person a second time
        assert _units(pseudonyms, table_id, measure) >= truth + 50, table_id


def test_published_totals_count_resolved_persons(sealed: tuple[Path, int], tmp_path: Path) -> None:
    root, truth = sealed
    store = ObjectStore(f"file://{root}")
    manifest = Releases(store, SECRET).build(PERIOD)
    for table_id, measure in [("KS0002NED", "Verdachten_1"), ("KS0005NED", "DjiInstroom_4")]:
        cube = pq.read_table(io.BytesIO(store.get(f"releases/{PERIOD}/r0/{table_id}/{table_id}.parquet")))
        at = pc.equal(cube["Measure"], measure)
        for dim, code in TOTALS.items():
            if dim in cube.column_names:
                at = pc.and_(at, pc.equal(cube[dim], code))
        (value,) = cube.filter(at)["Value"].to_pylist()
        # rounded to base 5 (cell-key rounding moves a count to a neighbouring multiple): the pseudonym
        # count is 50 or more above the truth, out of rounding's reach
        assert value is not None and abs(value - truth) < 5, (table_id, value, truth)
    assert manifest.rules["persons"]["link_inputs"] == {PERIOD: 0}
