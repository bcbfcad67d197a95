"""Partner exports as partners really make them, with deterministic noise and an exact expectation.

Columns come from the chain catalogue (the partner's ``mapping.toml``, read by
``ketenstroom.catalogue``): the type column plus the union of every record type's columns, in the
order the mapping names them. Each partner has its own habits (``STYLES``): encoding, separator,
quoting, date style, booleans, how it writes sex, BSN, parketnummer and postcode. Noise is drawn from
a per-partner random stream, so the clean chain is the same with and without noise, and every noisy
row is counted with the outcome the producer must give.
"""

from __future__ import annotations

import csv
import json
import random
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any, TextIO

from ketenstroom.catalogue import Catalogue, catalogue_at
from ketenstroom.settings import CatalogueSettings
from synthetic.chain import DAY
from synthetic.codes import UNKNOWN_CODE
from synthetic.persons import spoil_bsn, valid_bsn

#: Noise kinds, and whether the producer accepts the row (True) or must reject it (False).
NOISE_KINDS: dict[str, bool] = {
    "invalid_bsn": True,  # fails the 11-check: the processor flags it, the producer accepts it
    "unknown_code": True,  # a code not in the partner's list: the processor's business
    "redelivery": True,  # the same source record id again with versie 2 and a corrected value
    "late_event": True,  # registered months after the event: valid, just late
    "duplicate": False,  # the exact same row again: duplicate-in-file
    "malformed": False,  # a CSV line with a field missing, or a broken JSON line
    "impossible_date": False,  # 31-02-2026 in the event date
    "missing_field": False,  # the case reference (the record's key) left empty
}
#: The producer's reject reason each rejected noise kind should produce (for reading a receipt).
REJECT_REASONS: dict[str, str] = {
    "duplicate": "duplicate-in-file",
    "malformed": "malformed-line",
    "impossible_date": "invalid-event-time",
    "missing_field": "missing-field",
}
_TIMESTAMP_PATHS = frozenset(
    {"metadata.event_time", "metadata.registration_time", "first_interrogation_time"}
)
_BOOL_PATHS = frozenset({"ambtshalve", "conditional", "fully_paid"})
_FLOAT_PATHS = frozenset({"amount_eur", "sanction_amount_eur"})
_INT_PATHS = frozenset({"metadata.record_version", "sanction_days", "sanction_hours", "days", "hours"})
_REDELIVERY_DELAY = 25
_PERSON = "suspect."  # rows between a record and its corrected version


@dataclass(frozen=True)
class Style:
    """How one partner writes its export."""

    format: str = "csv"  # "csv" or "jsonl"
    encoding: str = "utf-8"
    delimiter: str = ";"
    quote_all: bool = False
    line_end: str = "\n"
    dates: str = "nl"  # "nl" dd-mm-jjjj, "nl/" dd/mm/jjjj (no times), "iso" jjjj-mm-dd(Thh:mm:ss)
    time_columns: frozenset[str] | None = None  # timestamp columns written with a time; None: all
    bools: tuple[str, str] = ("ja", "nee")
    sexes: tuple[str, str, str] = ("M", "V", "O")
    decimal_comma: bool = False
    thousands: bool = False
    parket_separators: tuple[str, str] = ("-", "-")
    pv_separator: str = " "
    bsn_drop_leading_zero: bool = False
    postcode_space: bool = True
    typed_json: bool = False  # JSON numbers and booleans instead of strings


STYLES: dict[str, Style] = {
    "politie": Style(encoding="cp1252", line_end="\r\n", decimal_comma=True),
    "om": Style(time_columns=frozenset({"beslisdatum"})),
    "rechtspraak": Style(
        encoding="utf-8-sig",
        delimiter=",",
        quote_all=True,
        line_end="\r\n",
        time_columns=frozenset({"registratiedatum"}),
        bools=("J", "N"),
        sexes=("man", "vrouw", "onbekend"),
        decimal_comma=True,
        thousands=True,
        parket_separators=("/", "-"),
    ),
    "cjib": Style(format="jsonl", dates="iso", bools=("true", "false"), typed_json=True),
    "dji": Style(
        sexes=("man", "vrouw", "onbekend"),
        parket_separators=(".", "."),
        bsn_drop_leading_zero=True,
        postcode_space=False,
    ),
    "reclassering": Style(dates="nl/", time_columns=frozenset(), parket_separators=(" ", " ")),
    "halt": Style(time_columns=frozenset(), pv_separator="-", postcode_space=False),
}
FORMATS = ("csv", "jsonl")


def style_for(partner: str, fmt: str | None = None) -> Style:
    """The partner's habits; ``fmt`` overrides the file format (csv <-> jsonl) and what goes with it."""
    style = STYLES.get(partner, Style())
    if fmt is None or fmt == style.format:
        return style
    if fmt not in FORMATS:
        raise ValueError(f"format for {partner} must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "csv":
        return replace(style, format="csv", encoding="utf-8", delimiter=";", typed_json=False)
    return replace(style, format="jsonl", encoding="utf-8", quote_all=False)


# -- the partner's columns, from its TOML --------------------------------------------------------------
@dataclass(frozen=True)
class RecordLayout:
    rtype: str
    slots: tuple[tuple[int, str], ...]  # (column index, contract path)
    paths: dict[str, int]  # contract path -> column index
    event: int
    registration: int
    key: int
    version: int
    coded: tuple[str, ...]  # contract paths with a code system
    late_ok: bool  # registration column is no event column in this export: it can be shifted alone


@dataclass(frozen=True)
class PartnerLayout:
    partner: str
    type_column: str
    columns: tuple[str, ...]
    records: dict[str, RecordLayout]


def load_layout(partner: str, catalogue: Catalogue | None = None) -> PartnerLayout:
    """Columns and per-record slots from the partner's column mapping in the catalogue."""
    mapping = (catalogue or catalogue_at(CatalogueSettings().dir)).partner(partner).mapping
    if mapping.type_column is None:
        raise ValueError(f"{mapping.path}: the generator writes exports with a type column")
    columns = mapping.columns
    index = {c: i for i, c in enumerate(columns)}
    event_columns = {spec.columns["metadata.event_time"] for spec in mapping.records.values()}
    records: dict[str, RecordLayout] = {}
    for rtype, spec in mapping.records.items():
        cols = spec.columns
        paths = {path: index[col] for path, col in cols.items()}
        records[rtype] = RecordLayout(
            rtype=rtype,
            slots=tuple((index[col], path) for path, col in cols.items()),
            paths=paths,
            event=paths["metadata.event_time"],
            registration=paths["metadata.registration_time"],
            key=paths[spec.key],
            version=paths["metadata.record_version"],
            coded=tuple(p for p in spec.codes if p in paths),
            late_ok=cols["metadata.registration_time"] not in event_columns,
        )
    return PartnerLayout(partner=partner, type_column=mapping.type_column, columns=columns, records=records)


# -- values -> the partner's text ---------------------------------------------------------------------
Formatter = Callable[[Any], Any] | None


def _date_text(style: Style) -> Callable[[date], str]:
    if style.dates == "iso":
        return lambda d: f"{d.year:04d}-{d.month:02d}-{d.day:02d}"
    sep = "/" if style.dates == "nl/" else "-"
    return lambda d: f"{d.day:02d}{sep}{d.month:02d}{sep}{d.year:04d}"


def impossible_date(style: Style) -> str:
    if style.dates == "iso":
        return "2026-02-31"
    return "31/02/2026" if style.dates == "nl/" else "31-02-2026"


class _Timestamp:
    """Minutes-since-day-1 -> the partner's date(-time) text; day texts cached (bounded by the span)."""

    def __init__(self, style: Style, with_time: bool) -> None:
        self.day_text = _date_text(style)
        self.cache: dict[int, str] = {}
        if not with_time:
            self.clock: list[str] = [""] * DAY
        elif style.dates == "iso":
            self.clock = [f"T{m // 60:02d}:{m % 60:02d}:00" for m in range(DAY)]
        else:
            self.clock = [f" {m // 60:02d}:{m % 60:02d}" for m in range(DAY)]

    def miss(self, day: int) -> str:
        text = self.cache[day] = self.day_text(date.fromordinal(day))
        return text

    def __call__(self, t: int) -> str:
        d, m = divmod(t, DAY)
        return (self.cache.get(d) or self.miss(d)) + self.clock[m]


def _money(style: Style) -> Formatter:
    if style.typed_json:
        return lambda x: x

    def fmt(x: float) -> str:
        text = str(int(x)) if float(x).is_integer() else f"{x:.2f}"
        if not style.decimal_comma:
            return text
        whole, _, cents = text.partition(".")
        if style.thousands and len(whole) > 3:
            whole = f"{int(whole):,}".replace(",", ".")
        return f"{whole},{cents}" if cents else whole

    return fmt


def formatter(style: Style, path: str, column: str) -> Formatter:  # noqa: PLR0911 - one per kind
    """How this partner writes the value of ``path`` in ``column``."""
    if path in _TIMESTAMP_PATHS:
        with_time = style.dates != "nl/" and (style.time_columns is None or column in style.time_columns)
        return _Timestamp(style, with_time)
    if path == "suspect.birth_date":
        return _date_text(style)
    if path in _BOOL_PATHS:
        if style.typed_json:
            return bool
        yes, no = style.bools
        return lambda b: yes if b else no
    if path in _FLOAT_PATHS:
        return _money(style)
    if path in _INT_PATHS:
        return int if style.typed_json else str
    if path == "suspect.sex":
        names = dict(zip(("M", "V", "O"), style.sexes, strict=True))
        return names.__getitem__
    if path == "suspect.bsn" and style.bsn_drop_leading_zero:
        return lambda b: b.lstrip("0") or "0"
    if path == "case.parketnummer":
        a, b = style.parket_separators
        return lambda p: f"{p[:2]}{a}{p[3:9]}{b}{p[10:]}"
    if path == "case.pv_number" and style.pv_separator != " ":
        return lambda pv: pv.replace(" ", style.pv_separator, 1)
    if path == "suspect.postcode" and not style.postcode_space:
        return lambda pc: pc.replace(" ", "")
    return None  # written as the chain made it (a string)


def compile_row(layout: PartnerLayout, rtype: str, style: Style) -> Callable[[dict[str, Any]], list[Any]]:
    """A function ``values -> row`` for one record type, generated so a row is one list display.

    Row building is the hot loop (millions of rows); a generated expression per column is about twice
    as fast as looping over (column, path, formatter) triples. Unused columns are "" in CSV and null in
    JSON; a used column without a value is "". The suspect's fields sit in ``values["suspect"]``.
    """
    record = layout.records[rtype]
    by_index = {i: path for i, path in record.slots}
    empty = '""' if style.format == "csv" else "None"
    namespace: dict[str, Any] = {}
    cells: list[str] = []
    for i, column in enumerate(layout.columns):
        path = by_index.get(i)
        if i == 0:
            cells.append(repr(rtype))
            continue
        if path is None:
            cells.append(empty)
            continue
        fmt = formatter(style, path, column)
        source = "w" if path.startswith(_PERSON) else "g"
        if fmt is None:
            cells.append(f'({source}({path!r}) or "")')
        elif isinstance(fmt, _Timestamp):  # inlined: the hottest formatter
            namespace[f"c{i}"], namespace[f"m{i}"], namespace[f"k{i}"] = fmt.cache.get, fmt.miss, fmt.clock
            cells.append(
                f'("" if (v := {source}({path!r})) is None else '
                f"(c{i}(v // {DAY}) or m{i}(v // {DAY})) + k{i}[v % {DAY}])"
            )
        else:
            namespace[f"f{i}"] = fmt
            cells.append(f'("" if (v := {source}({path!r})) is None else f{i}(v))')
    code = (
        "def build(values):\n"
        "    g = values.get\n"
        "    w = (values.get('suspect') or {}).get\n"
        f"    return [{', '.join(cells)}]\n"
    )
    exec(compile(code, f"<row {layout.partner}/{rtype}>", "exec"), namespace)  # noqa: S102 - our own code
    return namespace["build"]  # type: ignore[no-any-return]  # exec fills a dict[str, Any]


# -- writers ------------------------------------------------------------------------------------------
class _Sink:
    def __init__(self, path: Path, columns: tuple[str, ...], style: Style) -> None:
        self.path = path
        self.columns = columns
        self.style = style
        self.fh: TextIO = path.open("w", encoding=style.encoding, newline="")

    def write(self, row: list[Any]) -> None:
        raise NotImplementedError

    def write_malformed(self, row: list[Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.fh.close()


class _CsvSink(_Sink):
    """Joins fields itself when no field needs quoting (csv.writer is slow per row), else uses csv.writer."""

    def __init__(self, path: Path, columns: tuple[str, ...], style: Style) -> None:
        super().__init__(path, columns, style)
        self.writer = csv.writer(
            self.fh,
            delimiter=style.delimiter,
            lineterminator=style.line_end,
            quoting=csv.QUOTE_ALL if style.quote_all else csv.QUOTE_MINIMAL,
        )
        self.writer.writerow(columns)
        self.sep = f'"{style.delimiter}"' if style.quote_all else style.delimiter
        self.end = f'"{style.line_end}' if style.quote_all else style.line_end
        self.begin = '"' if style.quote_all else ""
        self.put = self.fh.write

    def write(self, row: list[Any]) -> None:
        text = self.sep.join(row)
        if (
            '"' in text
            or "\n" in text
            or "\r" in text
            or (not self.style.quote_all and text.count(self.sep) != len(row) - 1)
        ):
            self.writer.writerow(row)  # a field needs quoting: let csv do it
        else:
            self.put(self.begin + text + self.end)

    def write_malformed(self, row: list[Any]) -> None:
        self.write(row[:-1])  # one field short: the reader cannot line it up with the header


class _JsonlSink(_Sink):
    def write(self, row: list[Any]) -> None:
        self.fh.write(json.dumps(dict(zip(self.columns, row, strict=True)), ensure_ascii=False))
        self.fh.write("\n")

    def write_malformed(self, row: list[Any]) -> None:
        text = json.dumps(dict(zip(self.columns, row, strict=True)), ensure_ascii=False)
        self.fh.write(text[: len(text) * 2 // 3] + "\n")  # cut off mid-object: not valid JSON


# -- report -------------------------------------------------------------------------------------------
@dataclass
class PartnerReport:
    partner: str
    path: str
    format: str
    encoding: str
    delimiter: str | None
    rows_written: int = 0
    rows_by_type: dict[str, int] = field(default_factory=dict)
    noise: dict[str, int] = field(default_factory=lambda: dict.fromkeys(NOISE_KINDS, 0))
    expected_accepted: int = 0
    expected_rejected: int = 0
    expected_accepted_by_type: dict[str, int] = field(default_factory=dict)
    expected_rejected_by_kind: dict[str, int] = field(default_factory=dict)


@dataclass
class GenerationReport:
    seed: int
    cases: int
    noise: float
    start: str
    days: int
    population: int
    as_of: str | None = None  # the export's day: nothing on or after it (ISO date)
    partners: dict[str, PartnerReport] = field(default_factory=dict)
    chain: dict[str, dict[str, int]] = field(default_factory=dict)
    identity: dict[str, Any] = field(default_factory=dict)  # true persons (synthetic.identity)
    reject_reasons: dict[str, str] = field(default_factory=lambda: dict(REJECT_REASONS))

    @property
    def rows_written(self) -> int:
        return sum(p.rows_written for p in self.partners.values())

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["rows_written"] = self.rows_written
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, sort_keys=False)

    @classmethod
    def from_json(cls, text: str) -> GenerationReport:
        data = json.loads(text)
        data.pop("rows_written", None)
        partners = {k: PartnerReport(**v) for k, v in data.pop("partners").items()}
        return cls(partners=partners, **data)


# -- one partner's export -----------------------------------------------------------------------------
class PartnerExport:
    """Formats, spoils and writes one partner's rows; counts what the producer must do with each."""

    def __init__(
        self,
        partner: str,
        out_dir: Path,
        *,
        seed: int,
        noise: float,
        fmt: str | None = None,
        catalogue: Catalogue | None = None,
        until: int | None = None,
    ) -> None:
        self.partner = partner
        self.last = None if until is None else until - 1  # the latest minute a value may carry
        self.layout = load_layout(partner, catalogue)
        self.style = style = style_for(partner, fmt)
        self.noise = noise
        self.rng = random.Random(f"{seed}:{partner}:noise")  # noqa: S311 - synthetic data
        path = out_dir / f"{partner}.{style.format}"
        sink = _CsvSink if style.format == "csv" else _JsonlSink
        self.sink: _Sink = sink(path, self.layout.columns, style)
        self.empty: Any = "" if style.format == "csv" else None
        self.write = self.sink.write
        self.build = {rtype: compile_row(self.layout, rtype, style) for rtype in self.layout.records}
        self.bad_date = impossible_date(style)
        self.report = PartnerReport(
            partner=partner,
            path=str(path),
            format=style.format,
            encoding=style.encoding,
            delimiter=style.delimiter if style.format == "csv" else None,
        )
        self.by_type: dict[str, int] = dict.fromkeys(self.layout.records, 0)
        self.rejected_by_type: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()
        self.written = 0
        self.rejected = 0
        self.pending: deque[tuple[int, str, list[Any]]] = deque()

    def row(self, rtype: str, values: dict[str, Any]) -> list[Any]:
        return self.build[rtype](values)

    def _out(self, rtype: str, row: list[Any]) -> None:
        self.write(row)
        self.written += 1
        self.by_type[rtype] += 1
        if self.pending and self.pending[0][0] <= self.written:
            _due, ptype, prow = self.pending.popleft()
            self._out(ptype, prow)

    def _reject(self, rtype: str, row: list[Any], *, malformed: bool = False) -> None:
        """Write a row the producer must reject."""
        self.rejected += 1
        self.rejected_by_type[rtype] += 1
        if malformed:
            self.sink.write_malformed(row)
            self.written += 1
            self.by_type[rtype] += 1
        else:
            self._out(rtype, row)

    def emit(self, rtype: str, values: dict[str, Any]) -> None:
        rl = self.layout.records.get(rtype)
        if rl is None:
            return  # the mapping has no such record type: this partner does not deliver it
        if not self.noise or self.rng.random() >= self.noise:  # the clean path, inlined: it is the hot one
            self.write(self.build[rtype](values))
            self.written += 1
            self.by_type[rtype] += 1
            if self.pending and self.pending[0][0] <= self.written:
                _due, ptype, prow = self.pending.popleft()
                self._out(ptype, prow)
            return
        self._spoil(rtype, rl, values)

    def _spoil(self, rtype: str, rl: RecordLayout, values: dict[str, Any]) -> None:  # noqa: PLR0912 - one branch per kind of spoiling
        """Write the row with one mistake of a kind this record type can have."""
        kinds = ["duplicate", "redelivery", "malformed", "impossible_date", "missing_field"]
        who: dict[str, Any] = values.get("suspect") or {}
        if who and "suspect.bsn" in rl.paths:
            kinds.append("invalid_bsn")
        coded = [p for p in rl.coded if values.get(p) is not None]
        if coded:
            kinds.append("unknown_code")
        if rl.late_ok:
            kinds.append("late_event")
        kind = kinds[int(self.rng.random() * len(kinds))]
        self.kinds[kind] += 1
        if kind == "invalid_bsn":
            values = dict(values)
            values["suspect"] = dict(
                who,
                **{"suspect.bsn": spoil_bsn(who.get("suspect.bsn") or valid_bsn(self.rng.getrandbits(40)))},
            )
            self._out(rtype, self.row(rtype, values))
        elif kind == "unknown_code":
            row = self.row(rtype, values)
            row[rl.paths[coded[int(self.rng.random() * len(coded))]]] = UNKNOWN_CODE
            self._out(rtype, row)
        elif kind == "late_event":
            values = dict(values)
            values["metadata.registration_time"] = self._at_most(
                values["metadata.registration_time"] + self.rng.randrange(60, 240) * DAY
            )
            self._out(rtype, self.row(rtype, values))
        elif kind == "duplicate":
            row = self.row(rtype, values)
            self._out(rtype, row)
            self._reject(rtype, list(row))
        elif kind == "redelivery":
            self._out(rtype, self.row(rtype, values))
            corrected = dict(values)
            corrected["metadata.record_version"] = 2
            postcode = who.get("suspect.postcode")
            if postcode and "suspect.postcode" in rl.paths:
                corrected["suspect"] = dict(
                    who, **{"suspect.postcode": postcode[:5] + ("XA" if postcode[5:] != "XA" else "XB")}
                )
            else:
                corrected["metadata.registration_time"] = self._at_most(
                    corrected["metadata.registration_time"] + DAY
                )
            self.pending.append((self.written + _REDELIVERY_DELAY, rtype, self.row(rtype, corrected)))
        elif kind == "malformed":
            self._reject(rtype, self.row(rtype, values), malformed=True)
        elif kind == "impossible_date":
            row = self.row(rtype, values)
            row[rl.event] = self.bad_date
            self._reject(rtype, row)
        else:  # missing_field
            row = self.row(rtype, values)
            row[rl.key] = ""
            self._reject(rtype, row)

    def _at_most(self, t: int) -> int:
        """A later registration, but not past the as-of moment (the export holds nothing after it)."""
        return t if self.last is None else min(t, self.last)

    def close(self) -> PartnerReport:
        while self.pending:
            _due, ptype, prow = self.pending.popleft()
            self._out(ptype, prow)
        self.sink.close()
        rep = self.report
        rep.rows_written = self.written
        rep.rows_by_type = {t: self.by_type[t] for t in self.layout.records if self.by_type[t]}
        rep.noise = {k: self.kinds[k] for k in NOISE_KINDS}
        rep.expected_rejected = self.rejected
        rep.expected_accepted = self.written - self.rejected
        rep.expected_accepted_by_type = {
            t: n - self.rejected_by_type[t] for t, n in self.by_type.items() if n - self.rejected_by_type[t]
        }
        rep.expected_rejected_by_kind = {k: self.kinds[k] for k, ok in NOISE_KINDS.items() if not ok}
        return rep
