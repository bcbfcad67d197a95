"""What each page shows, computed from the releases: charts and the tables beneath them, headline
figures, revisions' changes. Labels come from the releases' OData metadata, which the table
specifications (``publication/*.toml``) wrote; nothing here names a table, measure or code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dashboard.charts import Norm, Series, bar_chart, funnel_chart, line_chart, number
from dashboard.read import Release, ReleaseSet, Table

MAX_SERIES = 8
MAX_BARS = 12
MAX_BAR_SERIES = 5
REASONS_NL = (
    ("threshold", "minder eenheden dan de drempel; statistiek niet gepubliceerd"),
    ("no units", "geen eenheden in deze cel"),
    ("group disclosure", "groepsonthulling: (bijna) de hele groep valt in één categorie"),
    ("secondary", "secundaire geheimhouding: een totaal zou een geheime cel onthullen"),
)


def reason_nl(reason: str) -> str:
    for prefix, text in REASONS_NL:
        if reason.startswith(prefix):
            return text
    return reason


@dataclass(frozen=True)
class CellView:
    text: str
    suppressed: bool = False
    reason: str = ""


@dataclass
class DataTable:
    caption: str
    corner: str
    columns: list[str]
    rows: list[tuple[str, list[CellView]]]

    @property
    def notes(self) -> list[str]:
        seen: list[str] = []
        for _, cells in self.rows:
            for c in cells:
                if c.suppressed and c.reason not in seen:
                    seen.append(c.reason)
        return seen


@dataclass
class ChartView:
    id: str
    title: str
    svg: str
    table: DataTable


@dataclass
class Headline:
    table_id: str
    table_title: str
    figures: list[tuple[str, CellView, str]]  # label, cell, unit ('' for a count)


@dataclass
class Change:
    what: str
    before: str
    after: str


@dataclass
class RevisionChanges:
    release: Release
    previous: Release
    changed: int
    cells: int
    examples: list[Change] = field(default_factory=list)


def _reasons(release: Release, table: Table) -> dict[tuple[str, ...], str]:
    dims = [d["Identifier"] for d in table.dimensions]
    out = {}
    for r in release.audit.get("tables", {}).get(table.id, {}).get("suppressed", []):
        out[(r["measure"], *(r[d] for d in dims))] = reason_nl(r["reason"])
    return out


def cell_view(release: Release, table: Table, measure: dict[str, Any], coords: dict[str, str]) -> CellView:
    cell = table.cell(measure["Identifier"], coords)
    if cell is None:
        return CellView("")  # not a cell of this table (e.g. a measure restricted to some codes)
    if cell.suppressed or cell.value is None:
        key = (measure["Identifier"], *(coords[d["Identifier"]] for d in table.dimensions))
        return CellView(".", True, _reasons(release, table).get(key, "geheim"))
    return CellView(number(cell.value, measure["Decimals"]))


def _titles(table: Table, dim_id: str) -> dict[str, str]:
    return {r["Identifier"]: r["Title"] for r in table.codes[dim_id]}


class TableViews:
    """Charts over periods for one table: its latest revision in every period that released it."""

    def __init__(self, releases: ReleaseSet, table_id: str) -> None:
        self.releases = [r for r in releases.latest() if table_id in r.tables]
        self.table = self.releases[-1].tables[table_id]
        self.labels = [r.tables[table_id].period["Title"] for r in self.releases]

    def _values(
        self, measure: dict[str, Any], coords: dict[str, str]
    ) -> tuple[list[float | None], list[CellView]]:
        values, cells = [], []
        for r in self.releases:
            t = r.tables[self.table.id]
            c = t.cell(measure["Identifier"], coords)
            values.append(None if c is None or c.suppressed else c.value)
            cells.append(cell_view(r, t, measure, coords))
        return values, cells

    def _norms(self, measure: dict[str, Any]) -> list[Norm]:
        t = self.table
        if measure.get("Target") is not None:
            return [Norm(f"streefwaarde {number(measure['Target'])}{measure['Unit']}", measure["Target"])]
        norms = []
        for m in t.measures:
            if m.get("Norm") is not None and m["Unit"] != measure["Unit"]:
                if measure["Unit"] != "dagen":
                    continue
                where = self._restricted_to(m)
                norms.append(
                    Norm(f"norm {number(m['Norm'])} dagen{': ' + where if where else ''}", m["Norm"])
                )
        return norms

    def _restricted_to(self, measure: dict[str, Any]) -> str:
        """The codes a measure has cells for, when it has them for one code of a dimension only."""
        t = self.table
        for i, d in enumerate(t.dimensions):
            used = {k[i + 1] for k in t.cells if k[0] == measure["Identifier"]}
            if len(used) == 1 and len(t.codes[d["Identifier"]]) > 1:
                return _titles(t, d["Identifier"])[used.pop()]
        return ""

    def charts(self) -> list[ChartView]:
        t = self.table
        if not t.dimensions:
            return self._by_unit()
        charts = []
        for m in t.measures:
            charts += [c for c in (self._measure_chart(m), self._breakdown_chart(m)) if c is not None]
        return charts

    def _by_unit(self) -> list[ChartView]:
        """A table without dimensions: one chart per unit, its measures as series."""
        t, charts = self.table, []
        units: dict[str, list[dict[str, Any]]] = {}
        for m in t.measures:
            units.setdefault(m["Unit"], []).append(m)
        for k, (unit, measures) in enumerate(units.items()):
            for start in range(0, len(measures), MAX_SERIES):
                group = measures[start : start + MAX_SERIES]
                series, columns = [], []
                for m in group:
                    values, cells = self._values(m, {})
                    series.append((m, values, cells))
                    columns.append(m["Title"])
                chart_id = f"{t.id}-u{k}-{start}"
                title = f"{t.properties['ShortTitle']} ({unit})"
                svg = line_chart(
                    chart_id,
                    title,
                    self.labels,
                    [Series(m["Title"], v) for m, v, _ in series],
                    unit=unit,
                    decimals=group[0]["Decimals"],
                )
                rows = [(label, [s[2][i] for s in series]) for i, label in enumerate(self.labels)]
                charts.append(ChartView(chart_id, title, svg, DataTable(title, "Perioden", columns, rows)))
        return charts

    def series_dimension(self, measure: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """The dimension whose codes are the series, and those codes: the first dimension without a
        total (all its codes this measure has), else the first one with a total (total, top-level codes)."""
        t = self.table
        no_total = [d for d in t.dimensions if t.total(d) is None]
        dim = no_total[0] if no_total else t.dimensions[0]
        i = t.dimensions.index(dim) + 1
        used = {k[i] for k in t.cells if k[0] == measure["Identifier"]}
        total = t.total(dim)
        rows = t.codes[dim["Identifier"]]
        if total is None:
            codes = [r["Identifier"] for r in rows if r["Identifier"] in used]
        else:
            codes = [total] + [
                r["Identifier"] for r in rows if r["DimensionGroupId"] == total and r["Identifier"] in used
            ]
        return dim, codes[:MAX_SERIES]

    def _fixed(self, series_dim: dict[str, Any]) -> dict[str, str] | None:
        coords = {}
        for d in self.table.dimensions:
            if d is series_dim:
                continue
            total = self.table.total(d)
            if total is None:
                return None
            coords[d["Identifier"]] = total
        return coords

    def _measure_chart(self, m: dict[str, Any]) -> ChartView | None:
        t = self.table
        dim, codes = self.series_dimension(m)
        fixed = self._fixed(dim)
        if fixed is None or not codes:
            return None
        titles = _titles(t, dim["Identifier"])
        series, columns = [], []
        for code in codes:
            values, cells = self._values(m, {**fixed, dim["Identifier"]: code})
            series.append((values, cells))
            columns.append(titles[code])
        chart_id = f"{t.id}-{m['Identifier']}"
        others = ", ".join(
            f"{d['Title']}: {_titles(t, d['Identifier'])[fixed[d['Identifier']]]}"
            for d in t.dimensions
            if d["Identifier"] in fixed
        )
        title = f"{m['Title']} naar {dim['Title'].lower()}" + (f" ({others})" if others else "")
        svg = line_chart(
            chart_id,
            title,
            self.labels,
            [Series(c, s[0]) for c, s in zip(columns, series, strict=True)],
            unit=m["Unit"],
            decimals=m["Decimals"],
            norms=self._norms(m),
        )
        rows = [(label, [s[1][i] for s in series]) for i, label in enumerate(self.labels)]
        caption = f"{title}; {m['Unit']}"
        return ChartView(chart_id, title, svg, DataTable(caption, "Perioden", columns, rows))

    def lead_time_charts(self) -> list[ChartView]:
        """Over periods, the measures drawn against a norm: durations (days) and shares with a target."""
        t = self.table
        wanted = [m for m in t.measures if m["Unit"] == "dagen" or m.get("Target") is not None]
        return [c for m in wanted if (c := self._measure_chart(m)) is not None]

    def _breakdown_chart(self, m: dict[str, Any]) -> ChartView | None:
        """The newest period by a second dimension (its total and top-level codes), series as over periods."""
        t, release = self.table, self.releases[-1]
        dim, codes = self.series_dimension(m)
        other = next((d for d in t.dimensions if d is not dim and t.total(d) is not None), None)
        fixed = self._fixed(dim)
        if other is None or fixed is None or not codes:
            return None
        total = fixed[other["Identifier"]]
        rows = t.codes[other["Identifier"]]
        categories = [
            total,
            *[r["Identifier"] for r in rows if r["DimensionGroupId"] == total][: MAX_BARS - 1],
        ]
        titles, cat_titles = _titles(t, dim["Identifier"]), _titles(t, other["Identifier"])
        series, columns = [], []
        for code in codes[:MAX_BAR_SERIES]:
            cells, values = [], []
            for cat in categories:
                coords = {**fixed, dim["Identifier"]: code, other["Identifier"]: cat}
                c = t.cell(m["Identifier"], coords)
                values.append(None if c is None or c.suppressed else c.value)
                cells.append(cell_view(release, t, m, coords))
            series.append((values, cells))
            columns.append(titles[code])
        chart_id = f"{t.id}-{m['Identifier']}-{other['Identifier']}"
        title = f"{m['Title']} naar {other['Title'].lower()}, {t.period['Title']}"
        svg = bar_chart(
            chart_id,
            title,
            [cat_titles[c] for c in categories],
            [Series(c, s[0]) for c, s in zip(columns, series, strict=True)],
            unit=m["Unit"],
            decimals=m["Decimals"],
        )
        table_rows = [(cat_titles[c], [s[1][i] for s in series]) for i, c in enumerate(categories)]
        return ChartView(
            chart_id, title, svg, DataTable(f"{title}; {m['Unit']}", other["Title"], columns, table_rows)
        )

    def funnel(self) -> ChartView:
        """The newest period's cohort: each measure at the totals of every dimension, in spec order."""
        t, release = self.table, self.releases[-1]
        coords = {d["Identifier"]: self.table.total(d) or "" for d in t.dimensions}
        cells = [(m["Title"], cell_view(release, t, m, coords)) for m in t.measures]
        steps = [
            (m["Title"], None if (c := t.cell(m["Identifier"], coords)) is None or c.suppressed else c.value)
            for m in t.measures
        ]
        chart_id = f"{t.id}-funnel"
        title = f"{t.properties['ShortTitle']}, {t.period['Title']}"
        table = DataTable(title, "Stap", [t.period["Title"]], [(label, [c]) for label, c in cells])
        return ChartView(chart_id, title, funnel_chart(chart_id, title, steps), table)


def headlines(release: Release) -> list[Headline]:
    """Per table (a chain step's figures), each measure at the totals of every dimension; along a
    dimension without a total, at the one code the measure is published for (e.g. a norm's stretch)."""
    out = []
    for t in release.tables.values():
        figures = []
        for m in t.measures:
            coords: dict[str, str] = {}
            for i, d in enumerate(t.dimensions):
                total = t.total(d)
                used = {k[i + 1] for k in t.cells if k[0] == m["Identifier"]}
                if total is not None:
                    coords[d["Identifier"]] = total
                elif len(used) == 1:
                    coords[d["Identifier"]] = used.pop()
            if len(coords) == len(t.dimensions):
                unit = "" if m["Unit"] == "aantal" else m["Unit"]
                figures.append((m["Title"], cell_view(release, t, m, coords), unit))
        if figures:
            out.append(Headline(t.id, t.properties["ShortTitle"], figures[:4]))
    return out


def changes(release: Release, previous: Release, limit: int = 8) -> RevisionChanges:
    """Cells whose published value differs between two revisions of one period."""
    result = RevisionChanges(release, previous, 0, 0)
    for table_id, t in release.tables.items():
        old = previous.tables.get(table_id)
        measures = {m["Identifier"]: m for m in t.measures}
        for key, cell in t.cells.items():
            result.cells += 1
            before = old.cells.get(key) if old else None
            if before is not None and before == cell:
                continue
            result.changed += 1
            m = measures[key[0]]
            totals = all(key[i + 1] == t.total(d) for i, d in enumerate(t.dimensions))
            if totals and len(result.examples) < limit:
                result.examples.append(
                    Change(
                        f"{t.properties['ShortTitle']}: {m['Title']}",
                        "nieuw"
                        if before is None
                        else "."
                        if before.suppressed
                        else number(before.value, m["Decimals"]),
                        "." if cell.suppressed else number(cell.value, m["Decimals"]),
                    )
                )
    return result
