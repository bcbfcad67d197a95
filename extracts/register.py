"""The extract register: list what was handed out, show one extract, verify it is still what was made."""

from __future__ import annotations

import io

import pyarrow.parquet as pq

from extracts.make import output_store
from extracts.manifest import DATA_FILE, MANIFEST_FILE, REGISTER_PREFIX, RegisterEntry, register_name
from extracts.sdc import measure
from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.contract.snapshots import sha256
from ketenstroom.errors import ExtractError, StorageError


def entries(register: ObjectStore) -> list[RegisterEntry]:
    """Every register entry, oldest first."""
    return [
        RegisterEntry.model_validate_json(register.get(key))
        for key in register.list(REGISTER_PREFIX)
        if key.endswith(".json")
    ]


def entry(register: ObjectStore, extract_id: str) -> RegisterEntry:
    key = register_name(extract_id)
    if not register.exists(key):
        raise ExtractError(f"no extract {extract_id!r} in the register at {register.url}")
    return RegisterEntry.model_validate_json(register.get(key))


def verify(found: RegisterEntry, output: ObjectStore | None = None) -> list[str]:
    """Every difference between an extract's files and its register entry (empty: intact).

    Checks the manifest's sha256 against the register, every file's sha256 and rows, and k and l
    recomputed from the data file against the thresholds and what the manifest claims.
    """
    store = output or output_store(found.output)
    problems: list[str] = []
    try:
        body = store.get(MANIFEST_FILE)
    except StorageError as exc:
        return [f"{MANIFEST_FILE}: {exc}"]
    if sha256(body) != found.manifest_sha256:
        problems.append(f"{MANIFEST_FILE}: sha256 {sha256(body)} != register {found.manifest_sha256}")
    manifest = found.manifest
    for file in manifest.files:
        try:
            data = store.get(file.path)
        except StorageError as exc:
            problems.append(f"{file.path}: {exc}")
            continue
        if sha256(data) != file.sha256:
            problems.append(f"{file.path}: sha256 {sha256(data)} != manifest {file.sha256}")
            continue
        if file.path == DATA_FILE:
            table = pq.read_table(io.BytesIO(data))
            if table.num_rows != file.rows:
                problems.append(f"{file.path}: {table.num_rows} rows != manifest {file.rows}")
            quasi = [c.name for c in manifest.columns if c.kind == "quasi"]
            sensitive = [c.name for c in manifest.columns if c.kind == "sensitive"]
            found_k_l = measure(table, quasi, sensitive, manifest.thresholds.k, manifest.thresholds.l)
            if found_k_l.unsafe_rows:
                problems.append(
                    f"{file.path}: {found_k_l.unsafe_rows} rows in groups below k={manifest.thresholds.k} "
                    f"or l={manifest.thresholds.l}"
                )
            if (found_k_l.k, found_k_l.l) != (manifest.achieved.k, manifest.achieved.l):
                problems.append(
                    f"{file.path}: k={found_k_l.k} l={found_k_l.l} != manifest "
                    f"k={manifest.achieved.k} l={manifest.achieved.l}"
                )
    return problems
