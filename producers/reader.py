"""Read partner exports as partners really make them.

CSV with ``;`` or ``,`` separators, UTF-8 (with or without BOM) or Windows-1252, quoted fields;
or JSON Lines. ``open_export`` reads what is known per file (encoding, separator, header) once;
``Export.rows`` yields ``(line_number, row)``; a line that cannot be parsed yields an InputRowError
in place of the row, so the caller keeps it in the reject file instead of losing it.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ketenstroom.errors import InputRowError

_SNIFF_BYTES = 64 * 1024


def detect_encoding(sample: bytes, *, whole: bool = False) -> str:
    """``utf-8-sig`` for a BOM, ``utf-8`` if the sample decodes, else Windows-1252.

    ``whole``: the sample is the whole file, so a cut character at its end is not excused.
    """
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    try:
        # A multi-byte character may be cut at the end of the sample; ignore only that tail.
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        if whole or exc.start < len(sample) - 3:
            return "cp1252"
    return "utf-8"


# Bytes the detected encoding cannot decode are read as lone surrogates (``surrogateescape``), never a
# crash half-way through a file; a row holding one (or a JSON ``\ud800`` escape) is rejected by itself.
_UNDECODABLE = re.compile("[\ud800-\udfff]")


def _undecodable(line: int, row: dict[str, str]) -> InputRowError | None:
    if not _UNDECODABLE.search("".join(row.values())):
        return None
    field = next(k for k, v in row.items() if _UNDECODABLE.search(v))
    return InputRowError(
        row=line,
        field=field,
        value=row[field].encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace"),
        reason="bad-encoding",
        message="holds bytes that are not text in the file's encoding",
    )


def detect_delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in (";", ",", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


@dataclass(frozen=True)
class Export:
    """One partner export, opened: its encoding and, for CSV, its header (read once, not per row)."""

    path: Path
    encoding: str
    columns: tuple[str, ...] | None  # the CSV header; None for JSON Lines, whose rows may differ
    delimiter: str = ","

    def rows(self) -> Iterator[tuple[int, dict[str, str] | InputRowError]]:
        """``(line_number, row)``; a line that cannot be parsed yields an InputRowError instead."""
        if self.columns is None:
            return _read_jsonl(self.path, self.encoding)
        return _read_csv(self.path, self.encoding, self.delimiter, list(self.columns))


def open_export(path: Path) -> Export:
    """Detect the encoding and format; for CSV also the separator and the header."""
    with path.open("rb") as raw:
        sample = raw.read(_SNIFF_BYTES)
    encoding = detect_encoding(sample, whole=len(sample) < _SNIFF_BYTES)
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        return Export(path, encoding, None)
    with path.open("r", encoding=encoding, errors="surrogateescape", newline="") as fh:
        first = fh.readline()
    delimiter = detect_delimiter(first)
    header = next(csv.reader(io.StringIO(first), delimiter=delimiter), [])
    return Export(path, encoding, tuple(h.strip() for h in header), delimiter)


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, str] | InputRowError]]:
    return open_export(path).rows()


def _read_csv(
    path: Path, encoding: str, delimiter: str, header: list[str]
) -> Iterator[tuple[int, dict[str, str] | InputRowError]]:
    with path.open("r", encoding=encoding, errors="surrogateescape", newline="") as fh:
        fh.readline()  # the header, read by open_export
        reader = csv.reader(fh, delimiter=delimiter)
        width = len(header)
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
            if not "".join(values).strip():
                continue  # blank line between records: nothing to deliver
            if len(values) != width:
                yield (
                    start,
                    InputRowError(
                        row=start,
                        field="*",
                        value=delimiter.join(values),
                        reason="malformed-line",
                        message=f"has {len(values)} fields, the header has {width}",
                    ),
                )
                continue
            row = dict(zip(header, values, strict=True))
            yield start, _undecodable(start, row) or row


def _read_jsonl(path: Path, encoding: str) -> Iterator[tuple[int, dict[str, str] | InputRowError]]:
    with path.open("r", encoding=encoding, errors="surrogateescape") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (ValueError, RecursionError) as exc:  # also a 5,000-digit number, [[[[… too deep
                yield (
                    line_no,
                    InputRowError(
                        row=line_no,
                        field="*",
                        value=line.strip()[:80],
                        reason="malformed-line",
                        message=f"not valid JSON: {getattr(exc, 'msg', exc)}",
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
            row = {str(k): "" if v is None else str(v) for k, v in obj.items()}
            yield line_no, _undecodable(line_no, row) or row
