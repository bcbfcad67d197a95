"""Find direct identifiers in records that must hold none (curated events, snapshots, tables).

Looks, in every value of a (nested) record, for: a 9-digit number passing the BSN 11-check; a
standalone run of 8 to 10 digits (the shape of an SKN, or a BSN without its leading zero); a
parketnummer; a pv-number; a full Dutch postcode; and a full calendar date outside the fields that
are meant to hold event times. Field names that belong only in raw data are findings by themselves.
Findings name the path and the kind, never the value, so a report can be logged safely.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from ketenstroom.contract.identifiers import bsn_passes_11_check

#: Fields whose dates are event or processing times, not birth dates.
TIME_FIELDS = frozenset(
    {
        "event_time",
        "event_date",  # the Amsterdam calendar date of event_time in snapshot rows
        "registration_time",
        "processed_time",
        "delivery_time",
        "valid_from",
        "valid_to",
        "sealed_at",
        "created_at",
        # release metadata: when a table or release was built, never a person's date
        "built_at",
        "Modified",
        "ObservationsModified",
        "MetaDataModified",
        "dct:modified",
    }
)
#: Numeric fields that are counters or positions, not identifiers.
TECHNICAL_FIELDS = frozenset(
    {
        "kafka_offset",
        "kafka_partition",
        "offset",
        "partition",
        "rows",
        "row_count",
        "records",
        "bytes",
        "size",
    }
)
#: Field names that may only exist in raw data.
FORBIDDEN_FIELDS = frozenset(
    {
        "bsn",
        "skn",
        "parketnummer",
        "pv_number",
        "birth_date",
        "postcode",
        "name",
        "first_name",
        "last_name",
        "address",
        "street",
        "cjib_number",
        "ecli",
    }
)
_DIGITS = re.compile(r"(?<![0-9A-Za-z])\d{8,10}(?![0-9A-Za-z])")
_PARKET = re.compile(r"(?<![0-9A-Za-z])\d{2}[-/. ]\d{6}[-/. ]\d{2}(?![0-9A-Za-z])")
_PV = re.compile(r"\bPL\d{2}[A-Z]\d\b", re.IGNORECASE)
_POSTCODE = re.compile(r"(?<![0-9A-Za-z])[1-9]\d{3} ?[A-Z]{2}(?![0-9A-Za-z])")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DATE = re.compile(r"(?<![0-9])(\d{4}-\d{2}-\d{2}|\d{2}-\d{2}-\d{4})(?![0-9])")


@dataclass(frozen=True)
class Finding:
    path: str
    kind: str

    def __str__(self) -> str:
        return f"{self.path}: {self.kind}"


def _scan_text(path: str, text: str) -> Iterator[Finding]:
    text = _UUID.sub(" ", text)  # event ids: a UUID's first group may be eight decimal digits
    for match in _DIGITS.finditer(text):
        digits = match.group()
        if len(digits) == 9 and bsn_passes_11_check(digits):
            yield Finding(path, "bsn")
        else:
            yield Finding(path, "skn-or-number")
    if _PARKET.search(text):
        yield Finding(path, "parketnummer")
    if _PV.search(text):
        yield Finding(path, "pv-number")
    if _POSTCODE.search(text):
        yield Finding(path, "postcode")
    if path.rsplit(".", 1)[-1] not in TIME_FIELDS and _DATE.search(text):
        yield Finding(path, "full-date")


def scan(record: Any, path: str = "") -> Iterator[Finding]:
    """All findings in one record (dicts, lists, strings, numbers, dates)."""
    if isinstance(record, Mapping):
        for key, value in record.items():
            sub = f"{path}.{key}" if path else str(key)
            if str(key) in FORBIDDEN_FIELDS and value not in (None, "", []):
                yield Finding(sub, "forbidden-field")
            yield from scan(value, sub)
    elif isinstance(record, (list, tuple)):
        for i, value in enumerate(record):
            yield from scan(value, f"{path}[{i}]")
    elif isinstance(record, str):
        yield from _scan_text(path, record)
    elif isinstance(record, bool):
        return
    elif isinstance(record, int):
        if path.rsplit(".", 1)[-1] not in TECHNICAL_FIELDS:
            yield from _scan_text(path, str(record))
    elif (
        isinstance(record, date)
        and not isinstance(record, datetime)
        and path.rsplit(".", 1)[-1] not in TIME_FIELDS
    ):
        yield Finding(path, "full-date")


def scan_all(records: Iterable[Any]) -> tuple[int, list[Finding]]:
    """(records scanned, findings) over many records."""
    count = 0
    findings: list[Finding] = []
    for record in records:
        count += 1
        findings.extend(scan(record, f"[{count - 1}]"))
    return count, findings
