"""What an extract records about itself: its manifest (next to the files) and its register entry.

Both are create-only. The register is append-only by construction: one object per extract under
``extracts/register/`` in the platform's store, never rewritten, named so a listing is chronological.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from extracts.source import RevisionUsed
from ketenstroom.contract.snapshots import Document, FileEntry

MANIFEST_FORMAT = "ketenstroom.extract-manifest/1"
REGISTER_FORMAT = "ketenstroom.extract-register/1"
REGISTER_PREFIX = "extracts/register/"
DATA_FILE = "extract.parquet"
CODEBOOK_FILE = "codebook.json"
MANIFEST_FILE = "manifest.json"


class ColumnUsed(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    kind: str
    level: str
    source: str
    label: str


class Thresholds(BaseModel):
    model_config = ConfigDict(frozen=True)

    k: int
    l: int  # noqa: E741
    suppression_budget: float


class Achieved(BaseModel):
    model_config = ConfigDict(frozen=True)

    k: int | None
    l: int | None  # noqa: E741
    rows: int
    groups: int
    population_rows: int
    rows_suppressed: int
    rows_removed: int
    cells_suppressed: dict[str, int]
    suppression_order: list[str]
    identifier_findings: int
    platform_pseudonyms_found: int


class ExtractManifest(Document):
    format: str = MANIFEST_FORMAT
    extract_id: str
    study: str
    requester: str
    purpose: str
    created_at: datetime
    request_sha256: str
    catalogue_version: str
    catalogue_sha256: str
    snapshot_store: str
    revisions: list[RevisionUsed]
    population: dict[str, object] | None
    columns: list[ColumnUsed]
    thresholds: Thresholds
    achieved: Achieved
    extract_key_id: str
    output: str
    files: list[FileEntry]


class RegisterEntry(Document):
    format: str = REGISTER_FORMAT
    extract_id: str
    study: str
    requester: str
    created_at: datetime
    output: str
    manifest_sha256: str
    manifest: ExtractManifest


def register_name(extract_id: str) -> str:
    return f"{REGISTER_PREFIX}{extract_id}.json"
