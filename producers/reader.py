"""Read partner exports as partners really make them.

CSV with ``;`` or ``,`` separators, UTF-8 (with or without BOM) or Windows-1252, quoted fields;
or JSON Lines. Yields ``(line_number, row)``; a line that cannot be parsed yields an InputRowError
in place of the row, so the caller keeps it in the reject file instead of losing it.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

from ketenstroom.errors import InputRowError

_SNIFF_BYTES = 64 * 1024


def detect_encoding(sample: bytes) -> str:
    """``utf-8-sig`` for a BOM, ``utf-8`` if the sample decodes, else Windows-1252."""
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    try:
        # A multi-byte character may be cut at the end of the sample; ignore only that tail.
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(sample) - 3:
            return "cp1252"
    return "utf-8"


def detect_delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in (";", ",", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, str] | InputRowError]]:
    with path.open("rb") as raw:
        sample = raw.read(_SNIFF_BYTES)
    encoding = detect_encoding(sample)
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        yield from _read_jsonl(path, encoding)
    else:
        yield from _read_csv(path, encoding)


def _read_csv(path: Path, encoding: str) -> Iterator[tuple[int, dict[str, str] | InputRowError]]:
    with path.open("r", encoding=encoding, newline="") as fh:
        first = fh.readline()
        delimiter = detect_delimiter(first)
        header = next(csv.reader(io.StringIO(first), delimiter=delimiter))
        header = [h.strip() for h in header]
        reader = csv.reader(fh, delimiter=delimiter)
        while True:
            start = reader.line_num + 2  # the header was line 1
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield (
                    start,
                    InputRowError(
                        row=start,
                        field="*",
                        value=None,
                        reason="malformed-line",
                        message=f"not valid CSV: {exc}",
                    ),
                )
                continue
            if not values or all(not v.strip() for v in values):
                continue  # blank line between records: nothing to deliver
            if len(values) != len(header):
                yield (
                    start,
                    InputRowError(
                        row=start,
                        field="*",
                        value=delimiter.join(values),
                        reason="malformed-line",
                        message=f"has {len(values)} fields, the header has {len(header)}",
                    ),
                )
                continue
            yield start, dict(zip(header, values, strict=True))


def _read_jsonl(path: Path, encoding: str) -> Iterator[tuple[int, dict[str, str] | InputRowError]]:
    with path.open("r", encoding=encoding) as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield (
                    line_no,
                    InputRowError(
                        row=line_no,
                        field="*",
                        value=line.strip()[:80],
                        reason="malformed-line",
                        message=f"not valid JSON: {exc.msg}",
                    ),
                )
                continue
            if not isinstance(obj, dict):
                yield (
                    line_no,
                    InputRowError(
                        row=line_no,
                        field="*",
                        value=None,
                        reason="malformed-line",
                        message="a JSON Lines row must be an object",
                    ),
                )
                continue
            yield line_no, {str(k): "" if v is None else str(v) for k, v in obj.items()}
