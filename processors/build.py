"""Assemble the transform from settings: tables and keys are loaded and validated once, at start-up."""

from __future__ import annotations

from typing import Any

from ketenstroom.contract import Topics, load_schemas
from ketenstroom.settings import PathSettings, PseudonymSettings
from processors.pseudonym import Pseudonymiser
from processors.terminology import load_terminology
from processors.transform import Transformer, load_municipalities

CHAIN_EVENT = "nl.ketenstroom.curated.ChainEvent"


def build_transformer(
    *, registry: Any, paths: PathSettings, pseudonym: PseudonymSettings, topics: Topics
) -> Transformer:
    """Load tables and keys (validated at start-up) and register the curated schema."""
    schemas = load_schemas(paths.schema_dir)
    chain = schemas[CHAIN_EVENT]
    return Transformer(
        pseudonymiser=Pseudonymiser(key=pseudonym.secret(), key_id=pseudonym.key_id),
        terminology=load_terminology(paths.terminology_dir),
        municipalities=load_municipalities(paths.terminology_dir / "pc4-gemeente.csv"),
        writer_schema=registry.writer_schema,
        curated_schema_id=registry.register(chain.subject(topics.curated), chain),
        curated_schema=chain.parsed,
    )
