"""Per-partner column mapping, from the chain catalogue (``partners/<partner>/mapping.toml``).

Configuration, not code: which column fills which contract field, which column tells the record type
when one export mixes several, constants (e.g. the source system), each coded field's code system
and version, and the record type's plausibility rules (``producers.plausibility``). A mapping is
checked against the schema when it is loaded, so a typo fails at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ketenstroom.catalogue import load_mapping_file
from ketenstroom.contract.schemas import EventSchema, SchemaSet
from ketenstroom.errors import ConfigurationError, InputRowError
from ketenstroom.settings import CatalogueSettings
from producers.plausibility import NO_RULES, Plausibility
from producers.rows import CODED, CodeSystem, Leaf, build_model, check_mapping, leaves


@dataclass(frozen=True)
class RecordMapping:
    schema: EventSchema
    columns: dict[str, str]  # contract path -> partner column
    constants: dict[str, Any]  # contract path -> fixed value
    codes: dict[str, CodeSystem]  # coded contract path -> code system
    key: str  # contract path of the Kafka key (the partner's own case reference)
    model: type[BaseModel]
    plausibility: Plausibility = NO_RULES  # rules beyond the model: dates that cannot be

    def required_columns(self) -> list[str]:
        """Columns of the fields the model requires (no blank allowed): without them no row can pass."""
        fields = self.model.model_fields
        return [
            column
            for path, column in self.columns.items()
            if (found := fields.get(path.replace(".", "__"))) is not None and found.is_required()
        ]

    def values(self, row: dict[str, str]) -> dict[str, Any]:
        """Partner columns -> contract paths (constants first, columns override)."""
        out: dict[str, Any] = dict(self.constants)
        out.update({path: row[column] for path, column in self.columns.items() if column in row})
        return out

    def missing_columns(self, header: list[str]) -> list[str]:
        return [c for c in self.columns.values() if c not in header]


@dataclass(frozen=True)
class PartnerMapping:
    partner: str
    type_column: str | None
    records: dict[str, RecordMapping]  # type value (or "*" when the export holds one type) -> mapping
    code: str = ""  # the metadata.partner symbol (the catalogue's ``code``)

    def __post_init__(self) -> None:
        if not self.code:
            object.__setattr__(self, "code", self.partner.upper())

    def for_row(self, row: dict[str, str], line: int) -> RecordMapping:
        if self.type_column is None:
            return self.records["*"]
        value = (row.get(self.type_column) or "").strip()
        found = self.records.get(value)
        if found is None:
            raise InputRowError(
                row=line,
                field=self.type_column,
                value=value,
                reason="unknown-record-type",
                message=f"record type must be one of {', '.join(sorted(self.records))}",
            )
        return found

    def columns_of_all(self) -> list[str]:
        """Every column this partner's exports may have: the type column, then each record type's."""
        out = [self.type_column] if self.type_column else []
        for record in self.records.values():
            out.extend(c for c in record.columns.values() if c not in out)
        return out

    def columns_of(self, record: RecordMapping) -> dict[str, str]:
        return record.columns | ({"*type*": self.type_column} if self.type_column else {})


def _record(partner: str, name: str, data: dict[str, Any], schemas: SchemaSet) -> RecordMapping:
    schema = schemas[data["record"]]
    if schema.group != partner:
        raise ConfigurationError(f"{partner}: record {schema.fullname} belongs to {schema.group}")
    columns = {str(k): str(v) for k, v in data.get("columns", {}).items()}
    constants = dict(data.get("constants", {}))
    codes = {str(k): CodeSystem(**v) for k, v in data.get("codes", {}).items()}
    all_leaves = leaves(schema.schema)
    mapped = set(columns) | set(constants)
    check_mapping(schema.fullname, all_leaves, mapped, codes)
    used: list[Leaf] = [leaf for leaf in all_leaves if leaf.path in mapped]
    key = str(data.get("key", "case.parketnummer"))
    if key not in mapped:
        raise ConfigurationError(f"{partner}/{name}: key field {key!r} has no column")
    for leaf in used:
        if leaf.avro == CODED and leaf.path not in codes:
            raise ConfigurationError(f"{partner}/{name}: {leaf.path} needs a code system")
    return RecordMapping(
        schema=schema,
        columns=columns,
        constants=constants,
        codes=codes,
        key=key,
        model=build_model(schema.fullname, used, required=frozenset({key})),
        plausibility=Plausibility.from_toml(
            dict(data.get("plausibility", {})), where=f"{partner}/{name}", mapped=set(columns)
        ),
    )


def load_mapping(
    partner: str, schemas: SchemaSet, directory: Path | None = None, code: str = ""
) -> PartnerMapping:
    """The partner's column mapping from the catalogue (``partners/<partner>/mapping.toml``), checked
    against its schemas and turned into row models."""
    directory = directory or CatalogueSettings().partner_dir
    path = directory / partner / "mapping.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.parent.name for p in directory.glob("*/mapping.toml")))
        raise ConfigurationError(f"no column mapping for partner {partner!r} ({path}); known: {known}")
    mapping = load_mapping_file(path, partner)
    try:
        records = {
            value: _record(partner, value, dict(spec.spec), schemas)
            for value, spec in mapping.records.items()
        }
    except (KeyError, TypeError) as exc:
        raise ConfigurationError(f"{path}: invalid partner mapping: {exc!r}") from exc
    except ConfigurationError as exc:
        raise ConfigurationError(f"{path}: {exc}") from exc
    return PartnerMapping(partner=partner, type_column=mapping.type_column, records=records, code=code)
