"""Reading sealed revisions for an extract: latest or pinned revision, tables required, sha256 checked."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from extracts.source import read_sources
from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.contract.snapshots import (
    FileEntry,
    Manifest,
    TablesManifest,
    manifest_name,
    revision_prefix,
    sha256,
    tables_manifest_name,
)
from ketenstroom.errors import ExtractError

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _revision(store: ObjectStore, period: str, revision: int, cases: list[str], tables: bool = True) -> None:
    body = Manifest(
        period=period,
        period_start=NOW,
        period_end=NOW,
        revision=revision,
        status="provisional" if revision == 0 else "revised",
        sealed_at=NOW,
        grace_days=14,
        final_after_days=365,
        previous_manifest_sha256=None,
        files=[],
        rows=0,
        rows_new=0,
        duplicates_dropped=0,
        rows_per_partner={},
        rows_per_event_type={},
        offsets={},
        schema_ids=[],
        mapping_versions=[],
        pseudonym_key_ids=[],
    ).to_bytes()
    store.put(manifest_name(period, revision), body)
    if not tables:
        return
    files = {}
    for name, table in {
        "chain": pa.table({"period": [period] * len(cases), "case_pseudonym": cases}),
        "person": pa.table({"period": [period], "person_pseudonym": ["p"]}),
    }.items():
        data = _parquet(table)
        path = revision_prefix(period, revision) + f"tables/{name}.parquet"
        store.put(path, data)
        files[name] = FileEntry(path=path, sha256=sha256(data), rows=table.num_rows, bytes=len(data))
    tables_manifest = TablesManifest(
        period=period,
        revision=revision,
        revision_manifest_sha256=sha256(body),
        built_at=NOW,
        events_read=0,
        files=files,
    )
    store.put(tables_manifest_name(period, revision), tables_manifest.to_bytes())


def test_latest_or_pinned_revision_and_what_was_used(tmp_path: Path) -> None:
    store = ObjectStore(f"file://{tmp_path}")
    _revision(store, "2026MM01", 0, ["a"])
    _revision(store, "2026MM01", 1, ["a", "b"])
    _revision(store, "2026MM02", 0, ["c"])
    latest = read_sources(store, ["2026MM01", "2026MM02"], {}, None)
    assert sorted(latest.chain["case_pseudonym"].to_pylist()) == ["a", "b", "c"]
    assert [(u.period, u.revision, u.status) for u in latest.used] == [
        ("2026MM01", 1, "revised"),
        ("2026MM02", 0, "provisional"),
    ]
    assert latest.used[0].manifest_sha256 == sha256(store.get(manifest_name("2026MM01", 1)))
    pinned = read_sources(store, ["2026MM01"], {"2026MM01": 0}, None)
    assert pinned.chain["case_pseudonym"].to_pylist() == ["a"] and pinned.used[0].revision == 0


def test_refuses_missing_revisions_missing_tables_and_changed_files(tmp_path: Path) -> None:
    store = ObjectStore(f"file://{tmp_path}")
    _revision(store, "2026MM01", 0, ["a"])
    _revision(store, "2026MM02", 0, ["b"], tables=False)
    with pytest.raises(ExtractError, match="no sealed revision of 2026MM03"):
        read_sources(store, ["2026MM03"], {}, None)
    with pytest.raises(ExtractError, match="no sealed revision r4 of 2026MM01"):
        read_sources(store, ["2026MM01"], {"2026MM01": 4}, None)
    with pytest.raises(ExtractError, match="snapshot tables"):
        read_sources(store, ["2026MM02"], {}, None)
    chain = revision_prefix("2026MM01", 0) + "tables/chain.parquet"
    store.put(chain, _parquet(pa.table({"period": ["2026MM01"], "case_pseudonym": ["someone else"]})))
    with pytest.raises(ExtractError, match="differs from its manifest"):
        read_sources(store, ["2026MM01"], {}, None)
