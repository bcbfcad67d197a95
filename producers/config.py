"""Per-partner column mapping, loaded from ``producers/partners/<partner>.toml`` (configuration, not code)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from ketenstroom.errors import ConfigurationError
from producers.rows import MODELS, CodeSystem, PartnerRow

PARTNER_DIR = Path(__file__).resolve().parent / "partners"


@dataclass(frozen=True)
class PartnerMapping:
    partner: str
    record: str
    model: type[PartnerRow]
    key_field: str
    columns: dict[str, str]  # contract field -> partner column
    code_systems: dict[str, CodeSystem]

    def rename(self, row: dict[str, str]) -> dict[str, str]:
        """Partner columns -> contract fields; columns the mapping does not name are ignored."""
        return {field: row[column] for field, column in self.columns.items() if column in row}

    def missing_columns(self, header: list[str]) -> list[str]:
        return [c for c in self.columns.values() if c not in header]


def load_mapping(partner: str, directory: Path = PARTNER_DIR) -> PartnerMapping:
    path = directory / f"{partner}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in directory.glob("*.toml")))
        raise ConfigurationError(f"no column mapping for partner {partner!r} ({path}); known: {known}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        model = MODELS[data["model"]]
        mapping = PartnerMapping(
            partner=data["partner"],
            record=data["record"],
            model=model,
            key_field=data["key"],
            columns=dict(data["columns"]),
            code_systems={k: CodeSystem(**v) for k, v in data.get("code_systems", {}).items()},
        )
    except (KeyError, TypeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"{path}: invalid partner mapping: {exc!r}") from exc
    if mapping.record != model.record_name:
        raise ConfigurationError(f"{path}: model {data['model']} produces {model.record_name}, "
                                 f"not {mapping.record}")
    unknown = set(mapping.columns) - set(model.model_fields)
    if unknown:
        raise ConfigurationError(f"{path}: fields {sorted(unknown)} are not fields of {data['model']}")
    return mapping
