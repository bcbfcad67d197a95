"""Releases: the protected tables of one sealed snapshot revision, written once.

Layout below the store's root::

    releases/<period>/r<N>/
        <TABLE>/<TABLE>.parquet    long format: Id, Measure, <dims>, Perioden, Value, ValueAttribute
        <TABLE>/<TABLE>.csv        ';'-separated, Dutch headers, decimal comma, '.' = geheim
        <TABLE>/odata/<Set>.json   OData v4 shapes: Properties, Dimensions, MeasureCodes, ...
        <TABLE>/metadata.json      DCAT-style dataset description (CC BY 4.0, source)
        catalog.json               DCAT-style catalogue of the release's tables
        audit.json                 rule parameters, every suppressed cell and why, rounding error
        manifest.json              create-only, last: sha256 of every file, source manifests

Release ``r<N>`` is built from snapshot revision ``r<N>`` of the same period (plus the latest sealed
revisions of earlier periods, for history; all named by sha256 in the manifest). A release whose
manifest exists is never rebuilt or rewritten. The cell-key secret is read from settings and never
written anywhere.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ketenstroom.adapters.links import persons
from ketenstroom.adapters.objectstore import ObjectExistsError, ObjectStore
from ketenstroom.adapters.snapshots import Snapshots
from ketenstroom.calendar import period_bounds
from ketenstroom.contract.releases import (
    ATTRIBUTION,
    LICENSE,
    ORDINARY,
    PUBLISHER,
    STATUS_NL,
    ReleaseFile,
    ReleaseManifest,
    period_title,
    release_prefix,
)
from ketenstroom.contract.snapshots import manifest_name, sha256
from ketenstroom.errors import StorageError
from releases import sdc
from releases.engine import Cells, Engine, load_chain, load_events
from releases.spec import TableSpec, load_specs

HISTORY = timedelta(
    days=3 * 366
)  # earlier periods read for a case's or person's history (as the chain tables)


def _json(data: Any) -> bytes:
    return (json.dumps(data, ensure_ascii=False, indent=1, sort_keys=False) + "\n").encode()


class TableOutput:
    """The files of one table in one release, derived from its protected cells."""

    def __init__(self, cells: Cells, period: str, status: str, modified: datetime) -> None:
        self.cells, self.spec, self.period, self.status, self.modified = (
            cells,
            cells.spec,
            period,
            status,
            modified,
        )

    def long_table(self) -> pa.Table:
        c, spec = self.cells, self.spec
        dims = [d.id for d in spec.dimensions]
        measure_index = {m.id: i for i, m in enumerate(spec.measures)}
        rank = np.array([measure_index[str(m)] for m in c.measure], dtype=np.int64)
        idx = np.lexsort([c.coords[d].astype(str) for d in reversed(dims)] + [rank])
        decimals = {m.id: m.decimals for m in spec.measures}
        values = np.array(
            [
                round(float(v), decimals[str(mm)]) if not np.isnan(v) else np.nan
                for v, mm in zip(c.value[idx], c.measure[idx], strict=True)
            ]
        )
        columns: dict[str, Any] = {
            "Id": pa.array(np.arange(len(idx)), pa.int64()),
            "Measure": pa.array(c.measure[idx].tolist(), pa.string()),
        }
        for d in dims:
            columns[d] = pa.array(c.coords[d][idx].tolist(), pa.string())
        columns["Perioden"] = pa.array([self.period] * len(idx), pa.string())
        columns["Value"] = pa.array(values, pa.float64(), mask=np.isnan(values))
        columns["ValueAttribute"] = pa.array(c.attribute[idx].tolist(), pa.string())
        return pa.table(columns)

    def code_lists(self, table: pa.Table) -> dict[str, list[dict[str, Any]]]:
        lists: dict[str, list[dict[str, Any]]] = {}
        for dim in self.spec.dimensions:
            declared = {c.code: c for c in dim.code_list()}
            titles = dim.titles()
            used = sorted(set(table[dim.id].to_pylist()))
            rows = []
            for i, code in enumerate(used):
                if code == dim.total_code:
                    title, parent = dim.total_title, None
                elif code in declared:
                    title, parent = declared[code].title, declared[code].parent or dim.total_code
                else:
                    title = titles.get(code, "Onbekend" if code == "ONB" else code)
                    parent = dim.total_code
                rows.append(
                    {
                        "Identifier": code,
                        "Index": i + 1,
                        "Title": title,
                        "Description": "",
                        "DimensionGroupId": parent,
                    }
                )
            lists[dim.id] = rows
        return lists

    def files(self) -> dict[str, bytes]:
        spec = self.spec
        table = self.long_table()
        codes = self.code_lists(table)
        out: dict[str, bytes] = {}
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        out[f"{spec.id}/{spec.id}.parquet"] = buf.getvalue()
        out[f"{spec.id}/{spec.id}.csv"] = self.csv(table, codes)
        status_nl = STATUS_NL[self.status]
        measures = [
            {
                "Identifier": m.id,
                "Index": i + 1,
                "Title": m.title,
                "Description": m.description,
                "MeasureGroupId": None,
                "DataType": "Double" if m.decimals else "Long",
                "Unit": m.unit,
                "Decimals": m.decimals,
                "PresentationType": "Absolute",
                "Norm": m.norm,
                "Target": m.target,
            }
            for i, m in enumerate(spec.measures)
        ]
        dimensions = [
            {
                "Identifier": d.id,
                "Title": d.title,
                "Description": d.description,
                "Kind": d.kind,
                "MapYear": None,
                "ReleasePolicy": False,
                "ContainsGroups": False,
                "ContainsCodes": True,
            }
            for d in spec.dimensions
        ]
        dimensions.append(
            {
                "Identifier": "Perioden",
                "Title": "Perioden",
                "Description": "",
                "Kind": "TimeDimension",
                "MapYear": None,
                "ReleasePolicy": True,
                "ContainsGroups": False,
                "ContainsCodes": True,
            }
        )
        odata: dict[str, Any] = {
            "Properties": self.properties(table),
            "Dimensions": dimensions,
            "MeasureCodes": measures,
            "MeasureGroups": [],
            "PeriodenCodes": [
                {
                    "Identifier": self.period,
                    "Index": 1,
                    "Title": period_title(self.period, self.status),
                    "Description": "" if self.status == "final" else f"{status_nl.lower()} cijfers",
                    "DimensionGroupId": None,
                    "Status": status_nl,
                }
            ],
            "PeriodenGroups": [],
            "Observations": table.to_pylist(),
        }
        for dim_id, rows in codes.items():
            odata[f"{dim_id}Codes"] = rows
            odata[f"{dim_id}Groups"] = []
        for name, data in odata.items():
            out[f"{spec.id}/odata/{name}.json"] = _json(data)
        out[f"{spec.id}/metadata.json"] = _json(self.dcat(table))
        return out

    def properties(self, table: pa.Table) -> dict[str, Any]:
        spec = self.spec
        return {
            "Identifier": spec.id,
            "Title": spec.title,
            "ShortTitle": spec.short_title,
            "Description": spec.description,
            "Summary": spec.short_title,
            "Language": "nl",
            "Catalog": "KS",
            "Frequency": spec.frequency,
            "GraphTypes": spec.graph,
            "Status": "Regulier",
            "Version": spec.version,
            "Modified": self.modified.isoformat(),
            "ObservationsModified": self.modified.isoformat(),
            "ObservationCount": table.num_rows,
            "Source": ATTRIBUTION,
            "License": LICENSE,
            "StatisticalUnit": spec.statistical_unit,
            "CountingRule": spec.counting_rule,
            "Perioden": {"Identifier": self.period, "Status": STATUS_NL[self.status]},
        }

    def dcat(self, table: pa.Table) -> dict[str, Any]:
        spec = self.spec
        return {
            "@context": {"dcat": "http://www.w3.org/ns/dcat#", "dct": "http://purl.org/dc/terms/"},
            "@type": "dcat:Dataset",
            "dct:identifier": spec.id,
            "dct:title": spec.title,
            "dct:description": spec.description,
            "dct:language": "nl",
            "dct:license": LICENSE,
            "dct:publisher": PUBLISHER,
            "dct:source": ATTRIBUTION,
            "dct:temporal": self.period,
            "dct:modified": self.modified.isoformat(),
            "dct:accrualPeriodicity": spec.frequency,
            "adms:status": STATUS_NL[self.status],
            "dct:conformsTo": f"{spec.id} specificatie versie {spec.version}",
            "dcat:distribution": [
                {
                    "dcat:downloadURL": f"{spec.id}.parquet",
                    "dcat:mediaType": "application/vnd.apache.parquet",
                },
                {"dcat:downloadURL": f"{spec.id}.csv", "dcat:mediaType": "text/csv"},
                {"dcat:accessURL": "odata/", "dcat:mediaType": "application/json"},
            ],
            "ObservationCount": table.num_rows,
        }

    def csv(self, table: pa.Table, codes: dict[str, list[dict[str, Any]]]) -> bytes:
        spec = self.spec
        titles = {m.id: m.title for m in spec.measures}
        decimals = {m.id: m.decimals for m in spec.measures}
        labels = {d: {r["Identifier"]: r["Title"] for r in rows} for d, rows in codes.items()}
        buf = io.StringIO()
        writer = csv.writer(buf, delimiter=";", lineterminator="\n")
        writer.writerow(["Onderwerp", *[d.title for d in spec.dimensions], "Perioden", "Waarde", "Status"])
        cols = table.to_pydict()
        ptitle = period_title(self.period, self.status)
        for i in range(table.num_rows):  # the published cells (hundreds), not data rows
            m, v, attr = cols["Measure"][i], cols["Value"][i], cols["ValueAttribute"][i]
            text = "" if v is None else f"{v:.{decimals[m]}f}".replace(".", ",")
            writer.writerow(
                [
                    titles[m],
                    *[labels[d.id][cols[d.id][i]] for d in spec.dimensions],
                    ptitle,
                    text,
                    "" if attr == ORDINARY else ".",
                ]
            )
        return buf.getvalue().encode("utf-8")


class Releases:
    """Build, list, show and verify releases in one object store (the snapshots' store)."""

    def __init__(
        self, store: ObjectStore, secret: bytes | None = None, specs: list[TableSpec] | None = None
    ) -> None:
        self.store, self._secret, self._specs = store, secret, specs
        self.snapshots = Snapshots(store)

    @property
    def specs(self) -> list[TableSpec]:
        if self._specs is None:
            self._specs = load_specs()
        return self._specs

    def periods(self) -> list[str]:
        return list(self.store.list_dirs("releases/"))

    def manifests(self, period: str) -> list[ReleaseManifest]:
        found = []
        for name in self.store.list_dirs(f"releases/{period}/"):
            key = release_prefix(period, int(name[1:])) + "manifest.json"
            if name[1:].isdigit() and self.store.exists(key):
                found.append(ReleaseManifest.model_validate_json(self.store.get(key)))
        return sorted(found, key=lambda m: m.revision)

    def manifest(self, period: str, revision: int | None = None) -> ReleaseManifest | None:
        found = self.manifests(period)
        if revision is None:
            return found[-1] if found else None
        return next((m for m in found if m.revision == revision), None)

    def build_all(self) -> list[ReleaseManifest]:
        """A release for every sealed revision that has none yet (oldest first)."""
        built = []
        for period in self.snapshots.periods():
            for snap in self.snapshots.manifests(period):
                if self.manifest(period, snap.revision) is None:
                    built.append(self.build(period, snap.revision))
        return built

    def build(self, period: str, revision: int | None = None) -> ReleaseManifest:
        snap = self.snapshots.manifest(period, revision)
        if snap is None:
            raise StorageError(
                f"{period}: no sealed snapshot revision {'' if revision is None else revision}"
            )
        existing = self.manifest(period, snap.revision)
        if existing is not None:
            return existing  # create-only: a release is never rebuilt
        if self._secret is None:
            raise StorageError(
                "no cell-key secret: set KETENSTROOM_CELLKEY_KEY_FILE (or KETENSTROOM_CELLKEY_KEY)"
            )
        earliest = period_bounds(period)[0] - HISTORY
        history = [
            m
            for p in self.snapshots.periods()
            if p < period
            for m in [self.snapshots.manifest(p)]
            if m is not None and m.period_end > earliest
        ]
        snap_bytes = self.store.get(manifest_name(period, snap.revision))
        # persons resolved across SKN and BSN as the revision's person table resolves them
        identities, link_inputs = persons(self.store, snap)
        events = load_events(self.store, [*history, snap], identities)
        del identities
        chain = load_chain(self.store, self.snapshots.tables(snap))
        modified = snap.sealed_at
        engine = Engine(period, events, chain, self._secret)
        prefix = release_prefix(period, snap.revision)
        written: list[ReleaseFile] = []
        audit_tables: dict[str, Any] = {}
        catalog: list[dict[str, Any]] = []
        try:
            for spec in self.specs:
                if spec.source == "chain" and chain is None:
                    continue
                cells = engine.compute(spec)
                output = TableOutput(cells, period, snap.status, modified)
                for name, data in output.files().items():
                    written.append(self._put(prefix + name, data))
                audit_tables[spec.id] = _audit(cells)
                catalog.append(
                    {"dct:identifier": spec.id, "dct:title": spec.title, "dcat:accessURL": f"{spec.id}/"}
                )
        finally:
            engine.close()
        rules = {
            "rounding": {
                "method": "unbiased random rounding, draw from the cell key",
                "base": sdc.BASE,
                "cell_key_bits": sdc.KEY_BITS,
                "record_key": "HMAC-SHA256(cell-key secret, unit pseudonym)",
            },
            "threshold": {spec.id: spec.protection.threshold for spec in self.specs},
            "group_disclosure": {
                s.id: [g.model_dump() for g in s.protection.group_disclosure] for s in self.specs
            },
            "secondary_suppression": "every additive relation has 0 or >= 2 suppressed cells",
            "never_published": ["minimum", "maximum", "pseudonyms and other linking keys"],
            "persons": {
                "unit": "the resolved person of the revision's person table (SKN and BSN linked)",
                "link_inputs": link_inputs,  # period -> sealed revision whose rows gave the links
            },
        }
        all_errors = [a["rounding"]["mean_error"] * a["rounding"]["cells"] for a in audit_tables.values()]
        n_rounded = sum(a["rounding"]["cells"] for a in audit_tables.values())
        audit = {
            "period": period,
            "revision": snap.revision,
            "rules": rules,
            "tables": audit_tables,
            "rounding_mean_error": (sum(all_errors) / n_rounded) if n_rounded else 0.0,
        }
        written.append(self._put(prefix + "audit.json", _json(audit)))
        written.append(
            self._put(
                prefix + "catalog.json",
                _json(
                    {
                        "@context": {
                            "dcat": "http://www.w3.org/ns/dcat#",
                            "dct": "http://purl.org/dc/terms/",
                        },
                        "@type": "dcat:Catalog",
                        "dct:title": f"Ketenstroom tabellen {period_title(period, snap.status)}",
                        "dct:publisher": PUBLISHER,
                        "dct:license": LICENSE,
                        "dct:source": ATTRIBUTION,
                        "dcat:dataset": catalog,
                    }
                ),
            )
        )
        manifest = ReleaseManifest(
            period=period,
            revision=snap.revision,
            status=snap.status,
            perioden_status=STATUS_NL[snap.status],
            built_at=datetime.now(UTC),
            snapshot_manifest=manifest_name(period, snap.revision),
            snapshot_manifest_sha256=sha256(snap_bytes),
            history_manifests_sha256={
                m.period: sha256(self.store.get(manifest_name(m.period, m.revision))) for m in history
            },
            tables={s.id: s.version for s in self.specs if s.id in audit_tables},
            specs_sha256={
                s.id: sha256(s.model_dump_json().encode()) for s in self.specs if s.id in audit_tables
            },
            rules=rules,
            sources=dict(sorted(snap.rows_per_partner.items())),
            files=written,
        )
        try:
            self.store.put(prefix + "manifest.json", manifest.to_bytes(), create_only=True)
        except ObjectExistsError:
            found = self.manifest(period, snap.revision)
            assert found is not None
            return found
        return manifest

    def _put(self, key: str, data: bytes) -> ReleaseFile:
        self.store.put(key, data)  # no manifest yet: an interrupted build is redone with the same content
        return ReleaseFile(path=key, sha256=sha256(data), bytes=len(data))

    def verify(self, manifest: ReleaseManifest) -> list[str]:
        problems = []
        for entry in manifest.files:
            if not self.store.exists(entry.path):
                problems.append(f"{entry.path}: missing")
            elif sha256(self.store.get(entry.path)) != entry.sha256:
                problems.append(f"{entry.path}: sha256 differs from the manifest")
        snap_key = manifest.snapshot_manifest
        if (
            not self.store.exists(snap_key)
            or sha256(self.store.get(snap_key)) != manifest.snapshot_manifest_sha256
        ):
            problems.append(f"{snap_key}: not the snapshot manifest the release was built from")
        return problems


def _audit(cells: Cells) -> dict[str, Any]:
    kinds = {m.id: m.kind for m in cells.spec.measures}
    is_count = np.array([kinds[str(m)] == "count" for m in cells.measure], dtype=bool)
    rounded = is_count & (cells.attribute == ORDINARY)
    errors = cells.value[rounded] - cells.units[rounded]
    return {
        "cells": len(cells),
        "suppressed": cells.reasons,
        "secondary_check": {"additive_relations": cells.relations, "recomputable_suppressed_cells": 0},
        "rounding": {"cells": int(rounded.sum()), "mean_error": float(errors.mean()) if len(errors) else 0.0},
    }
