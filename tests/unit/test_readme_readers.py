"""The README's one-line readers (DuckDB, pyarrow, polars) run as printed against a sealed snapshot and
see the readers' types: timestamps with time zone, dates, dictionary-coded codes."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.calendar import AMSTERDAM, period_code
from ketenstroom.contract.snapshots import staging_name
from ketenstroom.settings import REPO_ROOT
from sinks.parquet import to_parquet
from sinks.seal import Sealer, SealPolicy
from sinks.tables import build_missing_tables
from synthetic.curated import chain_events


def _readme_one_liners() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    return [
        line for line in re.findall(r"^python -c .*$", text, flags=re.MULTILINE) if "var/snapshots" in line
    ]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("readers")
    store = ObjectStore(f"file://{root / 'var' / 'snapshots'}")
    rows = []
    for offset, event in enumerate(
        chain_events(300, seed=3, start=datetime(2026, 2, 1, tzinfo=UTC), days=40, repeat_share=0.0)
    ):
        moment = event["event_time"]
        event.update(
            period=period_code(moment),
            event_date=moment.astimezone(AMSTERDAM).date(),
            kafka_partition=0,
            kafka_offset=offset,
        )
        rows.append(event)
    for period in sorted({r["period"] for r in rows}):
        mine = [r for r in rows if r["period"] == period]
        store.put(staging_name(period, 0, mine[0]["kafka_offset"]), to_parquet(mine, [1]))
    far = datetime(2030, 1, 1, tzinfo=UTC)
    sealed = Sealer(store, SealPolicy(final_after=timedelta(days=3650), clock=lambda: far)).seal_due()
    assert "2026MM03" in {m.period for m in sealed}
    assert build_missing_tables(store)
    return root


def test_the_readme_has_a_one_liner_for_each_reader() -> None:
    lines = _readme_one_liners()
    for reader in ("import duckdb", "import pyarrow", "import polars"):
        assert any(reader in line for line in lines), f"README has no {reader} one-liner"


@pytest.mark.parametrize("line", _readme_one_liners(), ids=lambda line: line[10:40])
def test_readme_one_liner_runs_and_sees_the_types(workdir: Path, line: str) -> None:
    result = subprocess.run(
        ["bash", "-c", line.replace("python -c", f"{sys.executable} -c", 1)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    if "pyarrow.dataset" in line:
        assert "timestamp[ms, tz=UTC] date32[day] dictionary<values=string, indices=int32" in out
    elif "polars" in line:
        assert "datetime[ms, UTC]" in out and "OM_DECISION" in out
    elif "share_within_90d" in line:
        assert "norm_met" in out
    else:
        assert "2026MM03" in out
        if "last_day" in line:
            assert "timestamp with time zone" in out and "date" in out
