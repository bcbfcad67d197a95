"""The release contract: object names, manifest model and status conventions, shared by every reader.

``releases`` writes these objects; the dashboard (``dashboard``) and the CLI read them as files, without
importing ``releases``. Pure: no I/O. Layout below the store's root::

    releases/<period>/r<N>/<TABLE>/<TABLE>.parquet   long format: Id, Measure, <dims>, Perioden, Value,
                                                    ValueAttribute ("None", or "Confidential" when secret)
    releases/<period>/r<N>/<TABLE>/<TABLE>.csv       ';'-separated, Dutch headers, '.' = geheim
    releases/<period>/r<N>/<TABLE>/odata/<Set>.json  OData v4 shapes: Properties, Dimensions, MeasureCodes,
                                                    <Dim>Codes, PeriodenCodes, Observations
    releases/<period>/r<N>/<TABLE>/metadata.json     DCAT-style dataset description
    releases/<period>/r<N>/catalog.json, audit.json
    releases/<period>/r<N>/manifest.json             create-only, written last: the release exists
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

FORMAT = "ketenstroom.release-manifest/1"
LICENSE = "https://creativecommons.org/licenses/by/4.0/"
LICENSE_NAME = "CC BY 4.0"
PUBLISHER = "Data Alliantie Strafrechtketen (ketenstroom)"
ATTRIBUTION = (
    "Bron: Data Alliantie Strafrechtketen, ketenstroom (bewerking van gegevens van de ketenpartners)"
)
STATUS_NL: dict[str, str] = {"provisional": "Voorlopig", "revised": "Nader voorlopig", "final": "Definitief"}
#: the StatLine mark after a period's title: * voorlopig, ** nader voorlopig, none for definitief
STATUS_MARK: dict[str, str] = {"provisional": "*", "revised": "**", "final": ""}
SUPPRESSED = "Confidential"  # ValueAttribute of a suppressed cell (rendered "." everywhere)
ORDINARY = "None"
MANIFEST_NAME = re.compile(r"^releases/(\d{4}(?:MM|KW|JJ)\d{2})/r(\d+)/manifest\.json$")
_MONTHS = [
    "januari",
    "februari",
    "maart",
    "april",
    "mei",
    "juni",
    "juli",
    "augustus",
    "september",
    "oktober",
    "november",
    "december",
]


def release_prefix(period: str, revision: int) -> str:
    return f"releases/{period}/r{revision}/"


def period_title(period: str, status: str) -> str:
    """``2026MM03`` -> ``2026 maart`` plus the status mark (``*``, ``**`` or none)."""
    year, kind, number = period[:4], period[4:6], int(period[6:])
    base = {"MM": f"{year} {_MONTHS[number - 1]}", "KW": f"{year} {number}e kwartaal", "JJ": year}[kind]
    return base + STATUS_MARK[status]


class ReleaseFile(BaseModel):
    model_config = ConfigDict(frozen=True)
    path: str
    sha256: str
    bytes: int


class ReleaseManifest(BaseModel):
    model_config = ConfigDict(frozen=True)

    format: str = FORMAT
    period: str
    revision: int
    status: Literal["provisional", "revised", "final"]
    perioden_status: str
    built_at: datetime
    snapshot_manifest: str
    snapshot_manifest_sha256: str
    history_manifests_sha256: dict[str, str]
    tables: dict[str, str]  # table id -> spec version
    specs_sha256: dict[str, str]  # table id -> sha256 of the whole specification (counting rule included)
    rules: dict[str, Any]
    #: events per delivering partner in the sealed revision it was built from (the sources)
    sources: dict[str, int] = {}
    license: str = LICENSE
    files: list[ReleaseFile]

    def to_bytes(self) -> bytes:
        return (self.model_dump_json(indent=2) + "\n").encode()
