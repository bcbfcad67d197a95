"""Hostile partner input, property-based: at least 1,000 malformed rows and 300 malformed files through
``publish``'s validation path (reader, reference path, fast path, reject file) without a broker.

Nothing may crash: every row is accepted or rejected with a reason naming its line and column; the fast
path never accepts what the reference refuses; accepted + rejected = rows read; the reject file holds one
readable JSON line per reject. Deterministic (derandomize) and bounded (the largest field is 200 kB).
"""

from __future__ import annotations

import codecs
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ketenstroom.errors import InputRowError
from producers.publish import _RejectFile, build_reference
from producers.reader import open_export
from tests.unit.test_fastpath import MAPPINGS, NOW, _fast, _reference
from tests.unit.test_producer_rows import GOOD

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")  # huge reprs


COLUMNS = list(GOOD)
SETTINGS = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

IMPOSSIBLE_DATES = [
    "30-02-2026", "2026-02-30", "31-13-2026", "00-00-0000", "29-02-2025", "9999-99-99", "2026-13-01T25:61",
    "02-03-2026 24:00", "2026-03-29T02:30", "1-1-1", "-1-01-2026", "02-03-20266", "０２-０３-２０２６",
]  # fmt: skip
hostile_value = st.one_of(
    st.text(max_size=40),  # any Unicode
    st.text(alphabet=st.characters(categories=["Cc", "Cf", "Zl", "Zp"]), max_size=20),  # control chars
    st.text(alphabet=";,\"'\t|\n\r \\", max_size=20),  # separators, quotes, embedded newlines
    st.sampled_from(IMPOSSIBLE_DATES),
    st.text(alphabet="0123456789 -.", min_size=8, max_size=11),  # BSN-like noise
    st.integers(1_000, 200_000).map(lambda n: "9" * n),  # huge fields
    st.just(""),
)


@st.composite
def hostile_rows(draw: st.DrawFn) -> dict[str, str]:
    row = dict(GOOD)
    for column in draw(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=4, unique=True)):
        row[column] = draw(hostile_value)
    if draw(st.booleans()):
        row.pop(draw(st.sampled_from(COLUMNS)))  # a missing column
    return row


def _outcome(row: dict[str, str], line: int) -> InputRowError | None:
    """None when accepted; the reject otherwise. Any other exception is a crash and fails the test."""
    fast = _fast("om", row, line)
    reference = _reference(MAPPINGS["om"], row, line)
    if fast is not None:
        assert reference == fast, f"fast path accepted differently from the reference: {row}"
    if reference is not None:
        return None
    try:  # the reference refused: the reason it gives
        record = MAPPINGS["om"].for_row(row, line)
        missing = record.missing_columns(list(row))
        build_reference(MAPPINGS["om"], record, row, line, missing=missing, delivery_time=NOW)
    except InputRowError as exc:
        return exc
    raise AssertionError(f"the reference refused without a reason: {row}")


def _check_reject(exc: InputRowError, line: int, columns: set[str]) -> None:
    assert exc.row == line and exc.reason and exc.detail, vars(exc)
    assert exc.field == "*" or exc.field in columns, (exc.field, exc.reason)


def test_a_thousand_malformed_rows_are_each_accepted_or_rejected_with_a_reason() -> None:
    counts = {"rows": 0, "accepted": 0, "rejected": 0}

    @settings(SETTINGS, max_examples=1000)
    @given(hostile_rows())
    def check(row: dict[str, str]) -> None:
        counts["rows"] += 1
        exc = _outcome(row, 2)
        if exc is None:
            counts["accepted"] += 1
        else:
            counts["rejected"] += 1
            _check_reject(exc, 2, set(COLUMNS))

    check()
    assert counts["rows"] >= 1000 and counts["accepted"] + counts["rejected"] == counts["rows"]
    assert counts["rejected"] > counts["rows"] // 2, counts  # mostly hostile: most must be refused


ENCODINGS = ["utf-8", "utf-8-sig", "cp1252", "utf-16", "latin-1"]


@st.composite
def hostile_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """(suffix, bytes): a CSV or JSON Lines export with hostile rows, encodings, separators, quoting."""
    rows = draw(st.lists(hostile_rows(), min_size=1, max_size=6))
    encoding = draw(st.sampled_from(ENCODINGS))
    if draw(st.booleans()):
        lines = []
        for row in rows:
            text = json.dumps(row, ensure_ascii=draw(st.booleans()))
            if draw(st.booleans()):
                text = text.replace('"OM-B-1"', draw(st.sampled_from(['"\\ud800"', "[1,", "null", '"x"}'])))
            lines.append(text)
        if draw(st.booleans()):
            lines.append(draw(st.sampled_from(["[1, 2]", "{", '"just a string"', "\x00\x01"])))
        body, suffix = "\n".join(lines), ".jsonl"
    else:
        sep = draw(st.sampled_from([";", ",", "\t", "|"]))
        eol = draw(st.sampled_from(["\n", "\r\n", "\r"]))
        quote = draw(st.booleans())

        def cell(value: str) -> str:
            return '"' + value.replace('"', '""') + '"' if quote or sep in value or "\n" in value else value

        lines = [sep.join(COLUMNS)] + [sep.join(cell(r.get(c, "")) for c in COLUMNS) for r in rows]
        if draw(st.booleans()):
            lines.append(draw(st.sampled_from(['"unterminated;quote', "a;b", "", sep * 40, "\x00"])))
        body, suffix = eol.join(lines), ".csv"
    data = body.encode(encoding, errors="replace" if encoding != "utf-16" else "surrogatepass")
    if draw(st.booleans()):  # a stray byte of another encoding, possibly past the sniffed first 64 kB
        pad = draw(st.sampled_from([0, 70_000]))
        data += (
            (b"\n" if suffix == ".jsonl" else b"\r\n") + b"9" * pad + bytes([draw(st.integers(0x80, 0xFF))])
        )
    if draw(st.booleans()):
        data = codecs.BOM_UTF8 + data
    return suffix, data


def test_malformed_files_never_crash_and_every_reject_is_kept_readable() -> None:
    counts = {"files": 0, "rows": 0, "accepted": 0, "rejected": 0}

    @settings(SETTINGS, max_examples=300)
    @given(hostile_files())
    def check(export: tuple[str, bytes]) -> None:
        suffix, data = export
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"export{suffix}"
            path.write_bytes(data)
            rejects = _RejectFile(Path(tmp) / "rejects.jsonl")
            file_rows = file_rejects = 0
            opened = open_export(path)
            columns = set(opened.columns or COLUMNS)
            for line, row in opened.rows():
                file_rows += 1
                exc = row if isinstance(row, InputRowError) else _outcome(row, line)
                if exc is None:
                    counts["accepted"] += 1
                    continue
                _check_reject(exc, line, columns | set(COLUMNS))
                rejects.write(path, exc, row if isinstance(row, dict) else None)
                file_rejects += 1
            written = rejects.close()
            kept = [] if written is None else Path(written).read_text(encoding="utf-8").split("\n")[:-1]
            assert len(kept) == file_rejects
            assert all(json.loads(k)["reason"] for k in kept)
        counts["files"] += 1
        counts["rows"] += file_rows
        counts["rejected"] += file_rejects

    check()
    assert counts["files"] >= 300 and counts["accepted"] + counts["rejected"] == counts["rows"]
