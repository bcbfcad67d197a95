"""Assemble the transform from settings: tables and keys are loaded and validated once, at start-up."""

from __future__ import annotations

from typing import Any

from ketenstroom.catalogue import catalogue_at
from ketenstroom.contract import Topics
from ketenstroom.contract.chain_event import CHAIN_EVENT
from ketenstroom.settings import CatalogueSettings, PseudonymSettings
from processors.pseudonym import Pseudonymiser
from processors.transform import Transformer, load_municipalities, plans


def build_transformer(
    *, registry: Any, paths: CatalogueSettings, pseudonym: PseudonymSettings, topics: Topics
) -> Transformer:
    """Load tables and keys (validated at start-up) and register the curated schema."""
    catalogue = catalogue_at(paths.dir)
    chain = catalogue.schemas[CHAIN_EVENT]
    return Transformer(
        pseudonymiser=Pseudonymiser(key=pseudonym.secret(), key_id=pseudonym.key_id),
        terminology=catalogue.terminology,
        plans=plans(catalogue),
        municipalities=load_municipalities(paths.terminology_dir / "pc4-gemeente.csv"),
        writer_schema=registry.writer_schema,
        curated_schema_id=registry.register(chain.subject(topics.curated), chain),
        curated_schema=chain.parsed,
    )
