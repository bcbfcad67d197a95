"""Real releases for the dashboard's tests, made without Kafka: events generated here, staged and sealed by
the sink's own sealer, chain tables by the sink's table builder, releases by ``releases`` itself.

Three months, one per status: 2026MM01 final, 2026MM02 revised (r0 then r1 after late events),
2026MM03 provisional. About 300 cases a month, so some statistics fall under the threshold (``.``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.contract.snapshots import staging_name
from releases.build import Releases
from sinks.parquet import SCHEMA, write_table
from sinks.seal import Sealer, SealPolicy
from sinks.tables import build_missing_tables
from synthetic.period import period_events

CELLKEY = b"site-test-cell-key-secret-0123456789abcdef"
PERIODS = ("2026MM01", "2026MM02", "2026MM03")
EVENTS = 2_400  # 300 cases a period


def _seal(store: ObjectStore, period: str, *, final: bool) -> None:
    policy = SealPolicy(
        grace=timedelta(days=14),
        final_after=timedelta(days=30 if final else 3650),
        clock=lambda: datetime(2026, 4, 20, tzinfo=UTC),
    )
    assert Sealer(store, policy).seal(period) is not None
    build_missing_tables(store, {period})
    Releases(store, CELLKEY).build_all()


def build_release_store(root: Path) -> ObjectStore:
    """A store under ``root`` with sealed revisions and their releases (see the module docstring)."""
    store = ObjectStore(f"file://{root}")
    for n, period in enumerate(PERIODS):
        store.put(staging_name(period, 0, 0), write_table(period_events(EVENTS, SCHEMA, period, seed=n + 1)))
        _seal(store, period, final=period == "2026MM01")
    late = period_events(
        EVENTS // 4, SCHEMA, "2026MM02", seed=99
    )  # late deliveries: revision r1, "nader voorlopig"
    store.put(staging_name("2026MM02", 0, 10_000_000), write_table(late))
    _seal(store, "2026MM02", final=False)
    return store
