"""Read partner exports as partners really make them.

CSV with ``;`` or ``,`` separators, UTF-8 (with or without BOM) or Windows-1252, quoted fields;
or JSON Lines. ``open_export`` reads what is known per file (encoding, separator, header) once;
``Export.rows`` yields ``(line_number, row)``; a line that cannot be parsed yields an InputRowError
in place of the row, so the caller keeps it in the reject file instead of losing it.

The encoding is decided once per file, from all of its bytes (a decoding error half-way would
otherwise end the delivery): UTF-8 if every byte decodes, else Windows-1252 (which Excel and many ETL
tools write), else Latin-1 for the five bytes Windows-1252 leaves undefined. A UTF-8 byte-order mark
does not make a file UTF-8: tools add one in front of Windows-1252 data too; ``Export.note`` says so.
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

_CHUNK = 1 << 20
_FALLBACKS = ("cp1252", "latin-1")  # latin-1 decodes every byte: the last resort never fails


def _decodes(path: Path, encoding: str, skip: int) -> bool:
    """Whether every byte of the file after ``skip`` decodes; read in chunks, memory stays flat."""
    decoder = codecs.getincrementaldecoder(encoding)()
    with path.open("rb") as raw:
        raw.seek(skip)
        try:
            while chunk := raw.read(_CHUNK):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return False
    return True


def file_encoding(path: Path) -> tuple[str, bool]:
    """``(encoding, bom)`` for the whole file: UTF-8 if all bytes decode, else Windows-1252, else Latin-1.

    ``bom`` says the file starts with a UTF-8 byte-order mark (skipped whatever the encoding).
    """
    with path.open("rb") as raw:
        bom = raw.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8
    skip = len(codecs.BOM_UTF8) if bom else 0
    for encoding in ("utf-8", *_FALLBACKS):
        if encoding == _FALLBACKS[-1] or _decodes(path, encoding, skip):
            return encoding, bom
    raise AssertionError("unreachable: latin-1 decodes every byte")  # pragma: no cover


def _open_text(path: Path, encoding: str, bom: bool) -> io.TextIOWrapper:
    raw = path.open("rb")
    if bom:
        raw.seek(len(codecs.BOM_UTF8))
    return io.TextIOWrapper(raw, encoding=encoding, newline="")


# A JSON ``\ud800`` escape decodes to a lone surrogate, which is no text (it cannot even be written as
# UTF-8): the row holding one is rejected by itself, naming the field.
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
    encoding: str  # a Python codec name: utf-8, cp1252 or latin-1
    columns: tuple[str, ...] | None  # the CSV header; None for JSON Lines, whose rows may differ
    delimiter: str = ","
    bom: bool = False  # starts with a UTF-8 byte-order mark (skipped)

    @property
    def note(self) -> str | None:
        """What a partner should know about how the file was read, for the receipt; None if plain."""
        if self.bom and self.encoding != "utf-8":
            return (
                f"{self.path.name}: starts with a UTF-8 byte-order mark but is not UTF-8; "
                f"read as {_NAMES[self.encoding]}"
            )
        if self.encoding != "utf-8":
            return f"{self.path.name}: not UTF-8; read as {_NAMES[self.encoding]}"
        return None

    def rows(self) -> Iterator[tuple[int, dict[str, str] | InputRowError]]:
        """``(line_number, row)``; a line that cannot be parsed yields an InputRowError instead."""
        if self.columns is None:
            return _read_jsonl(_open_text(self.path, self.encoding, self.bom))
        return _read_csv(_open_text(self.path, self.encoding, self.bom), self.delimiter, list(self.columns))


_NAMES = {"utf-8": "UTF-8", "cp1252": "Windows-1252", "latin-1": "Latin-1 (ISO-8859-1)"}


def open_export(path: Path) -> Export:
    """Detect the encoding (once, for the whole file) and format; for CSV also the separator and header."""
    encoding, bom = file_encoding(path)
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        return Export(path, encoding, None, bom=bom)
    with _open_text(path, encoding, bom) as fh:
        first = fh.readline()
    delimiter = detect_delimiter(first)
    header = next(csv.reader(io.StringIO(first), delimiter=delimiter), [])
    return Export(path, encoding, tuple(h.strip() for h in header), delimiter, bom)


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, str] | InputRowError]]:
    return open_export(path).rows()


def _read_csv(
    fh: io.TextIOWrapper, delimiter: str, header: list[str]
) -> Iterator[tuple[int, dict[str, str] | InputRowError]]:
    with fh:
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
            yield start, dict(zip(header, values, strict=True))


def _read_jsonl(fh: io.TextIOWrapper) -> Iterator[tuple[int, dict[str, str] | InputRowError]]:
    with fh:
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
