"""Releases read as files: every period's revisions, each table's OData metadata and Parquet cube.

Only the release contract (``ketenstroom.contract.releases``) is used: a file is read through its
release manifest and refused when its sha256 differs, so the site shows exactly what was released.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow.parquet as pq

from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.contract.releases import (
    MANIFEST_NAME,
    SUPPRESSED,
    ReleaseManifest,
    release_prefix,
)
from ketenstroom.contract.snapshots import sha256
from ketenstroom.errors import StorageError

#: the files of a table offered for download, relative to the table's folder in the release
DOWNLOADS = ("{t}.csv", "{t}.parquet", "odata/Observations.json")


@dataclass(frozen=True)
class Cell:
    value: float | None
    suppressed: bool


@dataclass
class Table:
    """One table of one release: metadata from its OData sets, cells from its Parquet cube."""

    id: str
    properties: dict[str, Any]
    dimensions: list[dict[str, Any]]  # without Perioden
    measures: list[dict[str, Any]]
    codes: dict[str, list[dict[str, Any]]]
    period: dict[str, Any]  # the PeriodenCodes row: Identifier, Title (with status mark), Status
    cells: dict[tuple[str, ...], Cell]  # (measure, *dimension codes in order) -> cell
    files: dict[str, bytes] = field(default_factory=dict)  # downloads: name in the table folder -> bytes

    def cell(self, measure: str, coords: dict[str, str]) -> Cell | None:
        return self.cells.get((measure, *(coords[d["Identifier"]] for d in self.dimensions)))

    def total(self, dim: dict[str, Any]) -> str | None:
        """The code of the dimension's total (a code no other code names as its group), if any."""
        rows = self.codes.get(dim["Identifier"], [])
        tops = [r for r in rows if r["DimensionGroupId"] is None]
        return tops[0]["Identifier"] if len(tops) == 1 and len(rows) > 1 else None


@dataclass
class Release:
    manifest: ReleaseManifest
    manifest_sha256: str
    tables: dict[str, Table]
    audit: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.manifest.period}/r{self.manifest.revision}"


@dataclass
class ReleaseSet:
    """Every released revision, by period (oldest period first, revisions in order)."""

    periods: dict[str, list[Release]]

    def latest(self) -> list[Release]:
        """The newest revision of every period: what the site shows over periods."""
        return [revisions[-1] for revisions in self.periods.values()]

    def newest(self) -> Release:
        return self.latest()[-1]

    def previous(self, release: Release) -> Release | None:
        revisions = self.periods[release.manifest.period]
        i = revisions.index(release)
        return revisions[i - 1] if i > 0 else None


def read_releases(store: ObjectStore) -> ReleaseSet:
    found: dict[str, list[tuple[int, str]]] = {}
    for key in store.list("releases/"):
        match = MANIFEST_NAME.match(key)
        if match:
            found.setdefault(match[1], []).append((int(match[2]), key))
    if not found:
        raise StorageError(f"no release in {store.root}: build one with `ketenstroom release build`")
    periods = {period: [_release(store, key) for _, key in sorted(found[period])] for period in sorted(found)}
    return ReleaseSet(periods)


def _release(store: ObjectStore, manifest_key: str) -> Release:
    raw = store.get(manifest_key)
    manifest = ReleaseManifest.model_validate_json(raw)
    expected = {f.path: f.sha256 for f in manifest.files}

    def get(path: str) -> bytes:
        data = store.get(path)
        if expected.get(path) != sha256(data):
            raise StorageError(f"{path}: not the file release {manifest_key} names (sha256 differs)")
        return data

    prefix = release_prefix(manifest.period, manifest.revision)
    tables = {}
    for table_id in manifest.tables:
        base = f"{prefix}{table_id}/"

        def odata(name: str, base: str = base) -> Any:
            return json.loads(get(f"{base}odata/{name}.json"))

        dims = [d for d in odata("Dimensions") if d["Kind"] != "TimeDimension"]
        cube = pq.read_table(io.BytesIO(get(f"{base}{table_id}.parquet"))).to_pydict()
        ids = [d["Identifier"] for d in dims]
        cells = {
            (cube["Measure"][i], *(cube[d][i] for d in ids)): Cell(
                cube["Value"][i], cube["ValueAttribute"][i] == SUPPRESSED
            )
            for i in range(len(cube["Measure"]))
        }
        files = {name.format(t=table_id): get(base + name.format(t=table_id)) for name in DOWNLOADS}
        tables[table_id] = Table(
            id=table_id,
            properties=odata("Properties"),
            dimensions=dims,
            measures=odata("MeasureCodes"),
            codes={d: odata(f"{d}Codes") for d in ids},
            period=odata("PeriodenCodes")[0],
            cells=cells,
            files=files,
        )
    audit = json.loads(get(prefix + "audit.json"))
    return Release(manifest, sha256(raw), tables, audit)
