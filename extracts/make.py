"""Make one research extract: read sealed revisions, build the study frame, check it, write it, record it.

Order, each step only after the one before succeeded:

1. resolve the request against the catalogue (unknown columns, levels, thresholds below the platform's
   floors: refused before anything is read);
2. read the sealed revisions (sha256 of every file checked against its manifest);
3. build the study frame (generalised, pseudonyms re-keyed) and protect it (``extracts/sdc.py``):
   local suppression within the budget, or refusal with the offending combinations;
4. check the result once more: k and l recomputed on the final table, the identifier scanner over
   every value, and no value equal to any platform pseudonym of the revisions read;
5. encode the files, then write the **register entry** (create-only: the extract is on record before a
   byte of it leaves), the data and codebook (create-only), and the **manifest last** (create-only).
"""

from __future__ import annotations

import io
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from extracts.catalogue import Catalogue, Resolved, StudyRequest, resolve
from extracts.events import Reducer
from extracts.frame import build_frame, event_names, load_regions, load_scm
from extracts.manifest import (
    CODEBOOK_FILE,
    DATA_FILE,
    MANIFEST_FILE,
    Achieved,
    ColumnUsed,
    ExtractManifest,
    RegisterEntry,
    Thresholds,
    register_name,
)
from extracts.rekey import LENGTH, study_key
from extracts.sdc import Protected, measure, protect
from extracts.source import Sources, read_sources
from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.contract.scanner import Finding, scan_all
from ketenstroom.contract.snapshots import FileEntry, sha256
from ketenstroom.errors import ExtractError

log = logging.getLogger("ketenstroom.extract")
_PSEUDONYM_COLUMNS = ("case_pseudonym", "person_pseudonym")


@dataclass(frozen=True)
class Inputs:
    """Where things are: the snapshot store, the register store, the terminology, the extract key."""

    snapshots: ObjectStore
    register: ObjectStore
    terminology_dir: Path
    secret: bytes
    key_id: str


def output_store(output: str) -> ObjectStore:
    """A directory path or a storage URL (file:// or s3://) for the extract's files."""
    if "://" not in output:
        output = f"file://{Path(output).resolve()}"
    return ObjectStore(output)


def make_extract(
    request: StudyRequest, catalogue: Catalogue, inputs: Inputs, output: ObjectStore
) -> ExtractManifest:
    resolved = resolve(request, catalogue)
    if output.exists(MANIFEST_FILE) or output.exists(DATA_FILE):
        raise ExtractError(f"{output.url} already holds an extract; extracts are never overwritten")
    names = event_names(resolved)
    reducer = Reducer(names) if names else None
    try:
        sources = read_sources(inputs.snapshots, request.periods, request.revisions, reducer)
    finally:
        if reducer is not None:
            reducer.close()
    key = study_key(inputs.secret, request.study)
    frame = build_frame(
        resolved,
        sources,
        load_regions(inputs.terminology_dir / "gemeente-regio.csv"),
        load_scm(inputs.terminology_dir / "concepts.csv"),
        key,
    )
    if frame.num_rows == 0:
        raise ExtractError("the population is empty for the periods asked for; nothing to extract")
    quasi, sensitive = resolved.of_kind("quasi"), resolved.of_kind("sensitive")
    protected = protect(
        frame, quasi, sensitive, k=resolved.k, l=resolved.l, budget=resolved.suppression_budget
    )
    table = protected.table
    findings, platform = _final_checks(resolved, protected, sources)
    created = datetime.now(UTC)
    extract_id = f"{created:%Y%m%dT%H%M%SZ}-{request.study}-{secrets.token_hex(3)}"
    data = _parquet(table)
    codebook = _codebook(resolved, table, protected, extract_id, inputs.terminology_dir)
    files = [
        FileEntry(path=DATA_FILE, sha256=sha256(data), rows=table.num_rows, bytes=len(data)),
        FileEntry(
            path=CODEBOOK_FILE, sha256=sha256(codebook), rows=len(resolved.columns), bytes=len(codebook)
        ),
    ]
    after = protected.after
    manifest = ExtractManifest(
        extract_id=extract_id,
        study=request.study,
        requester=request.requester,
        purpose=request.purpose,
        created_at=created,
        request_sha256=request.sha256,
        catalogue_version=catalogue.version,
        catalogue_sha256=catalogue.sha256,
        snapshot_store=inputs.snapshots.url,
        revisions=sources.used,
        population=None
        if request.population is None
        else request.population.model_dump(mode="json", by_alias=True),
        columns=[
            ColumnUsed(name=n, kind=s.kind, level=resolved.columns[n], source=s.source, label=s.label)
            for n in resolved.columns
            for s in [catalogue.columns[n]]
        ],
        thresholds=Thresholds(k=resolved.k, l=resolved.l, suppression_budget=resolved.suppression_budget),
        achieved=Achieved(
            k=after.k,
            l=after.l,
            rows=table.num_rows,
            groups=after.groups,
            population_rows=frame.num_rows,
            rows_suppressed=protected.rows_suppressed,
            rows_removed=protected.rows_removed,
            cells_suppressed=protected.cells_suppressed,
            suppression_order=protected.order,
            identifier_findings=findings,
            platform_pseudonyms_found=platform,
        ),
        extract_key_id=inputs.key_id,
        output=output.url,
        files=files,
    )
    body = manifest.to_bytes()
    entry = RegisterEntry(
        extract_id=extract_id,
        study=request.study,
        requester=request.requester,
        created_at=created,
        output=output.url,
        manifest_sha256=sha256(body),
        manifest=manifest,
    )
    inputs.register.put(register_name(extract_id), entry.to_bytes(), create_only=True)
    output.put(DATA_FILE, data, create_only=True)
    output.put(CODEBOOK_FILE, codebook, create_only=True)
    output.put(MANIFEST_FILE, body, create_only=True)
    log.info(
        "extract %s for study %s: %d rows, k=%s l=%s, %d rows suppressed",
        extract_id,
        request.study,
        table.num_rows,
        after.k,
        after.l,
        protected.rows_suppressed,
    )
    return manifest


def _final_checks(resolved: Resolved, protected: Protected, sources: Sources) -> tuple[int, int]:
    """Recompute k and l on the final table, scan it for identifiers, look for platform pseudonyms."""
    table = protected.table
    quasi, sensitive = resolved.of_kind("quasi"), resolved.of_kind("sensitive")
    again = measure(table, quasi, sensitive, resolved.k, resolved.l)
    if again.unsafe_rows or again != protected.after:
        raise ExtractError(f"internal check failed: the protected table measures {again}")
    findings = _scan(table, resolved.of_kind("key"))
    if findings:
        kinds = sorted({f"{f.path.split('.', 1)[-1]}: {f.kind}" for f in findings})
        raise ExtractError(
            f"the identifier scanner found {len(findings)} values in the extract: {kinds[:10]}"
        )
    strings = [
        n for n, t in zip(table.column_names, table.schema.types, strict=True) if pa.types.is_string(t)
    ]
    platform = 0
    if strings:
        with duckdb.connect() as con:
            con.register("out", table)
            known = []
            for name, src in (("chain", sources.chain), ("person", sources.person)):
                con.register(name, src)
                known += [f"select {c} as v from {name}" for c in _PSEUDONYM_COLUMNS if c in src.column_names]
            con.register("event_pseudonyms", sources.event_pseudonyms)
            known.append("select v from event_pseudonyms")
            con.execute(f"create temp table platform as {' union '.join(known)}").fetchall()
            hits = con.execute(
                "select count(*) from out where "
                + " or ".join(f'"{c}" in (select v from platform)' for c in strings)
            ).fetchall()[0]
            platform = int(hits[0]) if hits else 0
    if platform:
        raise ExtractError(f"{platform} rows of the extract hold a platform pseudonym; nothing was written")
    return len(findings), platform


def _scan(table: pa.Table, keys: list[str]) -> list[Finding]:
    """The identifier scanner over each column's distinct values (a finding depends only on the column
    and the value); key columns must be study pseudonyms, 32 lower-case hex digits, checked in bulk."""
    findings: list[Finding] = []
    with duckdb.connect() as con:
        con.register("out", table)
        for column in table.column_names:
            if column in keys:
                bad = con.sql(
                    f'select count(*) from out where "{column}" is not null '
                    f"and not regexp_full_match(\"{column}\", '[0-9a-f]{{{LENGTH}}}')"
                ).fetchall()[0][0]
                findings += [Finding(column, "not-a-study-pseudonym")] * int(bad)
                continue
            values = con.sql(f'select distinct "{column}" as v from out where v is not null').fetchall()
            findings += scan_all({column: v} for (v,) in values)[1]
    return findings


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def _codebook(
    resolved: Resolved, table: pa.Table, protected: Protected, extract_id: str, terminology: Path
) -> bytes:
    labels: dict[str, dict[str, str]] = {}
    regions = load_regions(terminology / "gemeente-regio.csv").to_pylist()
    for level in ("corop", "province"):
        labels[level] = {r[f"{level}_code"]: r[f"{level}_name"] for r in regions}
    scm = {r["code"]: r["label"] for r in load_scm(terminology / "concepts.csv").to_pylist()}
    columns: list[dict[str, Any]] = []
    for name, level in resolved.columns.items():
        spec = resolved.catalogue.columns[name]
        entry: dict[str, Any] = {
            "name": name,
            "label": spec.label,
            "kind": spec.kind,
            "level": level,
            "type": str(table.schema.field(name).type),
            "missing": (
                "not known, or suppressed for disclosure control"
                if spec.kind == "quasi"
                else "not known or step not reached"
            ),
            "suppressed_cells": protected.cells_suppressed.get(name, 0),
        }
        if spec.kind in ("quasi", "sensitive", "plain") and level not in ("days", "weeks"):
            values = sorted((v for v in pc.unique(table[name]).to_pylist() if v is not None), key=str)
            names = labels.get(level) or (scm if spec.source.endswith("offence_scm2010") else {})
            entry["values"] = [{"value": v, "label": names.get(str(v), str(v))} for v in values]
        columns.append(entry)
    book = {
        "format": "ketenstroom.extract-codebook/1",
        "study": resolved.request.study,
        "extract_id": extract_id,
        "rows": table.num_rows,
        "unit": "one row per case of the population (latest state in the periods asked for)",
        "columns": columns,
    }
    return (json.dumps(book, indent=2, ensure_ascii=False) + "\n").encode()
