"""Table specifications: the TOML files in ``publication/`` read into typed models.

A table declares its identifier, Dutch title and description, statistical unit and counting rule,
dimensions (a DuckDB expression over the prepared event or chain view, its code list, its total), and
measures (what is counted or summarised, over which rows, which unit, along which dimensions). The
engine (``releases.engine``) computes any table declared this way; adding a table is adding a file.
Expressions may use the view's columns and the macros ``code_of(concepts, vocabulary)`` and
``codes_of(concepts, vocabulary)`` defined by the engine. Minimum, maximum and pseudonym columns can
not be published: ``check`` rejects a spec that asks for them.
"""

from __future__ import annotations

import csv
import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ketenstroom.errors import ConfigurationError
from ketenstroom.settings import CatalogueSettings

_ID = re.compile(r"^KS\d{4}NED$")
_FORBIDDEN = re.compile(
    r"\b(min|max|arg_min|arg_max|min_by|max_by|first|last|any_value|list|array_agg)\s*\(", re.I
)
_PSEUDONYM = re.compile(r"pseudonym|event_id", re.I)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Code(_Model):
    code: str
    title: str
    parent: str | None = None


class Dimension(_Model):
    id: str
    title: str
    description: str = ""
    kind: Literal["Dimension", "GeoDimension"] = "Dimension"
    #: DuckDB expression giving the code per row; a list expression when ``multiple`` (one row per code)
    expr: str
    multiple: bool = False
    #: the code of the total over this dimension; None for a dimension that has no meaningful total
    total_code: str | None = None
    total_title: str = ""
    codes: list[Code] = Field(default_factory=list)
    #: fill the code list from terminology/concepts.csv: (vocabulary, code prefix, maximum code length)
    vocabulary: str | None = None
    vocabulary_prefix: str = ""
    vocabulary_max_length: int = 99
    #: codes seen in the data are added with titles from this terminology CSV (code column, title column)
    titles_csv: str | None = None
    titles_columns: tuple[str, str] = ("code", "title")

    def code_list(self) -> list[Code]:
        codes = list(self.codes)
        if self.vocabulary:
            with (CatalogueSettings().terminology_dir / "concepts.csv").open(encoding="utf-8") as fh:
                for row in csv.DictReader(fh):
                    if (
                        row["vocabulary"] == self.vocabulary
                        and len(row["code"]) <= self.vocabulary_max_length
                    ):
                        parent = row["parent"] or None
                        codes.append(
                            Code(
                                code=self.vocabulary_prefix + row["code"],
                                title=row["label"],
                                parent=self.vocabulary_prefix + parent if parent else None,
                            )
                        )
        return codes

    def titles(self) -> dict[str, str]:
        if not self.titles_csv:
            return {}
        key, title = self.titles_columns
        with (CatalogueSettings().terminology_dir / self.titles_csv).open(encoding="utf-8") as fh:
            return {row[key]: row[title] for row in csv.DictReader(fh)}


class Measure(_Model):
    id: str
    title: str
    description: str = ""
    unit: str = "aantal"
    decimals: int = 0
    kind: Literal["count", "median", "p80", "share_within"] = "count"
    #: which rows (DuckDB predicate over the view)
    where: str
    #: the statistical unit: the expression whose distinct values are counted (a pseudonym or event id)
    unit_key: str
    #: for statistics: the value per unit (e.g. a lead time in days) and, for shares, the norm
    value: str | None = None
    norm: float | None = None
    #: the share a norm asks for (Kalsbeek: 80% of cases within the norm); shown against the realised share
    target: float | None = None
    dimensions: list[str] = Field(default_factory=list)
    #: dimension codes this measure is restricted to (e.g. only stretches with a norm)
    only: dict[str, list[str]] = Field(default_factory=dict)


class GroupDisclosure(_Model):
    dimension: str
    share: float = 0.9


class Protection(_Model):
    threshold: int = 10
    rounding_base: Literal[5] = 5
    group_disclosure: list[GroupDisclosure] = Field(default_factory=list)


class TableSpec(_Model):
    id: str
    version: str
    title: str
    short_title: str
    description: str
    statistical_unit: str
    counting_rule: str
    source: Literal["events", "chain"] = "events"
    #: optional SELECT over ``events`` or ``chain`` giving the rows the measures read (joins, windows)
    from_sql: str | None = None
    frequency: str = "Permaand"
    #: how the dashboard draws it (Properties.GraphTypes): lines over periods, a cohort funnel (measures
    #: in chain order), or lead times per stretch against the measures' norms
    graph: Literal["lines", "funnel", "lead_times"] = "lines"
    dimensions: list[Dimension]
    measures: list[Measure]
    protection: Protection = Protection()

    def dimension(self, ident: str) -> Dimension:
        for dim in self.dimensions:
            if dim.id == ident:
                return dim
        raise ConfigurationError(f"{self.id}: no dimension {ident!r}")

    def check(self) -> None:
        """Reject what must never be published: min/max/listing aggregates and pseudonym columns."""
        if not _ID.match(self.id):
            raise ConfigurationError(f"table id {self.id!r} is not like KS0001NED")
        for dim in self.dimensions:
            if _PSEUDONYM.search(dim.expr) or _FORBIDDEN.search(dim.expr):
                raise ConfigurationError(f"{self.id}.{dim.id}: a dimension may not publish a key or min/max")
        for m in self.measures:
            for text in (m.value or "", m.where):
                if _FORBIDDEN.search(text):
                    raise ConfigurationError(
                        f"{self.id}.{m.id}: min, max and row-listing aggregates are not published"
                    )
            if m.value and _PSEUDONYM.search(m.value):
                raise ConfigurationError(f"{self.id}.{m.id}: a measure may not publish a pseudonym")
            if m.kind == "share_within" and m.norm is None:
                raise ConfigurationError(f"{self.id}.{m.id}: a share needs a norm")
            if m.kind != "count" and not m.value:
                raise ConfigurationError(f"{self.id}.{m.id}: a {m.kind} needs a value expression")
            for d in [*m.dimensions, *m.only]:
                self.dimension(d)
        for gd in self.protection.group_disclosure:
            self.dimension(gd.dimension)


def load_specs(directory: Path | None = None) -> list[TableSpec]:
    """Every ``KS*.toml`` in the catalogue's ``publication/`` (``KETENSTROOM_CATALOGUE_DIR``), checked."""
    directory = directory or CatalogueSettings().publication_dir
    specs = []
    for path in sorted(directory.glob("KS*.toml")):
        try:
            spec = TableSpec.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"{path}: {exc}") from exc
        if path.stem != spec.id:
            raise ConfigurationError(f"{path}: file name must be the table id {spec.id}")
        spec.check()
        specs.append(spec)
    if not specs:
        raise ConfigurationError(f"no table specifications in {directory}")
    return specs
