"""Read side of sealed snapshots: which periods and revisions exist, and whether one is intact.

Any component may read sealed revisions through this (releases, extracts, the CLI); only the sink
writes them. The object names and manifest models are ``ketenstroom.contract.snapshots``.
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.contract.snapshots import (
    REVISION_DIR,
    STAGED,
    Manifest,
    TablesManifest,
    manifest_name,
    sha256,
    tables_manifest_name,
)


class Snapshots:
    """Read side: which periods and revisions exist, and whether a revision is intact."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def periods(self) -> list[str]:
        return sorted(set(self.store.list_dirs("snapshots/")) | set(self.store.list_dirs("staging/")))

    def manifests(self, period: str) -> list[Manifest]:
        found = []
        for name in self.store.list_dirs(f"snapshots/{period}/"):
            if not REVISION_DIR.fullmatch(name):
                continue
            key = manifest_name(period, int(name[1:]))
            if self.store.exists(key):
                found.append(Manifest.model_validate_json(self.store.get(key)))
        return sorted(found, key=lambda m: m.revision)

    def manifest(self, period: str, revision: int | None = None) -> Manifest | None:
        manifests = self.manifests(period)
        if revision is None:
            return manifests[-1] if manifests else None
        return next((m for m in manifests if m.revision == revision), None)

    def tables(self, manifest: Manifest) -> TablesManifest | None:
        key = tables_manifest_name(manifest.period, manifest.revision)
        return TablesManifest.model_validate_json(self.store.get(key)) if self.store.exists(key) else None

    def staged(self, period: str) -> list[str]:
        return [k for k in self.store.list(f"staging/{period}/") if STAGED.search(k)]

    def verify(self, manifest: Manifest) -> list[str]:
        """Every difference between a revision's objects and its manifest (empty: intact)."""
        problems = []
        raw = self.store.get(manifest_name(manifest.period, manifest.revision))
        if Manifest.model_validate_json(raw) != manifest:
            problems.append(f"{manifest_name(manifest.period, manifest.revision)}: changed since it was read")
        listed = {entry.path for entry in manifest.files}
        tables = self.tables(manifest)
        if tables is not None:
            body = self.store.get(manifest_name(manifest.period, manifest.revision))
            if tables.revision_manifest_sha256 != sha256(body):
                problems.append(
                    f"{tables_manifest_name(manifest.period, manifest.revision)}: built from another manifest"
                )
        for entry in [*manifest.files, *(tables.files.values() if tables else [])]:
            if not self.store.exists(entry.path):
                problems.append(f"{entry.path}: missing")
                continue
            data = self.store.get(entry.path)
            if sha256(data) != entry.sha256:
                problems.append(f"{entry.path}: sha256 {sha256(data)} != manifest {entry.sha256}")
            try:
                rows = pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
            except (pa.ArrowException, OSError) as exc:
                problems.append(f"{entry.path}: not readable as Parquet ({exc})")
                continue
            if rows != entry.rows:
                problems.append(f"{entry.path}: {rows} rows != manifest {entry.rows}")
        for key in self.store.list(manifest.prefix + "data/"):
            if key not in listed:
                problems.append(f"{key}: in the revision's data directory but not in its manifest")
        if sum(entry.rows for entry in manifest.files) != manifest.rows:
            problems.append(f"manifest rows {manifest.rows} != sum of its files' rows")
        if sum(manifest.rows_per_partner.values()) != manifest.rows:
            problems.append(f"manifest rows {manifest.rows} != sum of rows per partner")
        return problems
