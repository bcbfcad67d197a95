"""What the chain catalogue declares, as frozen objects (loaded and checked by ``catalogue.load``).

A partner is data: ``partners/<partner>/partner.toml`` names it, its topics and retention, and for every
record type it delivers the chain step, which fields carry the case / report / execution references and
the suspect's identity, which coded fields map through terminology, and which numeric fields mean
sanction days, hours or an amount. ``partners/<partner>/mapping.toml`` maps the partner's own export
columns onto the record types. Chain steps are uniform terminology (``terminology/chain-steps.csv``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ketenstroom.catalogue.terminology import Terminology
from ketenstroom.contract.schemas import SchemaSet
from ketenstroom.errors import ConfigurationError


@dataclass(frozen=True)
class Identity:
    """Dotted paths of the suspect's identifiers in a record (None: the record type has none)."""

    skn: str | None = None
    bsn: str | None = None
    birth_date: str | None = None
    sex: str | None = None
    postcode: str | None = None


@dataclass(frozen=True)
class RecordType:
    """One record type a partner delivers, and what its fields mean for the chain."""

    fullname: str
    step: str
    case: str | None  # path of the parketnummer (case pseudonym)
    report: str | None  # path of the pv-number (police report pseudonym)
    execution: str | None  # path of the CJIB reference (execution pseudonym)
    identity: Identity
    required_codes: tuple[str, ...]  # coded fields that must map through terminology (else DLQ)
    optional_codes: tuple[str, ...]  # coded fields mapped when present
    sanction_days: str | None = None
    sanction_hours: str | None = None
    amount_eur: str | None = None
    crime_municipality: str | None = None

    @property
    def coded(self) -> tuple[str, ...]:
        return (*self.required_codes, *self.optional_codes)


@dataclass(frozen=True)
class TopicPolicy:
    """How the partner's raw topic is created: partitions and retention (personal data: kept short)."""

    partitions: int
    retention_days: float
    legal_basis: str


@dataclass(frozen=True)
class MappingRecord:
    """One record type's column mapping, as declared (``producers`` builds its row models from it)."""

    type_value: str  # value of the export's type column, or "*" when the export holds one type
    record: str  # the record type's full name
    key: str  # contract path of the Kafka key
    columns: Mapping[str, str]  # contract path -> partner column
    constants: Mapping[str, Any]  # contract path -> fixed value
    codes: Mapping[str, tuple[str, str]]  # coded contract path -> (code system, version)
    spec: Mapping[str, Any]  # the whole TOML table, for settings a component reads itself


@dataclass(frozen=True)
class ColumnMapping:
    """A partner's export layout: the type column and one ``MappingRecord`` per record type."""

    path: Path
    type_column: str | None
    records: Mapping[str, MappingRecord]

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column the export has, in declaration order, the type column first."""
        out: list[str] = [self.type_column] if self.type_column else []
        for record in self.records.values():
            for column in record.columns.values():
                if column not in out:
                    out.append(column)
        return tuple(out)


@dataclass(frozen=True)
class Partner:
    name: str  # lower case: topic names raw.<name>, dlq.<name>; schema folder schemas/<name>/
    display_name: str
    code: str  # symbol of nl.ketenstroom.common.Partner written in metadata.partner
    directory: Path
    topics: TopicPolicy
    records: Mapping[str, RecordType]  # full name -> record type
    mapping: ColumnMapping
    delivery_every_days: float | None = None  # the agreed delivery schedule (None: not agreed)
    position: int = 100  # place in the chain, for listings (police first, Halt last)


@dataclass(frozen=True)
class ChainStep:
    name: str
    stage: str | None  # the chain-table stage it counts for (police_registration, ...), or None
    label: str


@dataclass(frozen=True)
class Catalogue:
    """Partners, record types, chain steps, schemas and terminology: everything a deployment declares."""

    root: Path
    schemas: SchemaSet
    terminology: Terminology
    steps: Mapping[str, ChainStep]
    partners: Mapping[str, Partner]
    _records: dict[str, tuple[Partner, RecordType]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for partner in self.partners.values():
            for record in partner.records.values():
                self._records[record.fullname] = (partner, record)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.partners)

    def partner(self, name: str) -> Partner:
        found = self.partners.get(name)
        if found is None:
            raise ConfigurationError(
                f"unknown partner {name!r}; the catalogue {self.root} declares: {', '.join(self.partners)}"
            )
        return found

    def record(self, fullname: str) -> RecordType | None:
        found = self._records.get(fullname)
        return None if found is None else found[1]

    def stages(self) -> dict[str, tuple[str, ...]]:
        """Chain-table stage -> the chain steps that count for it."""
        out: dict[str, list[str]] = {}
        for step in self.steps.values():
            if step.stage:
                out.setdefault(step.stage, []).append(step.name)
        return {stage: tuple(names) for stage, names in out.items()}
