"""The chain catalogue: partners, record types, chain steps, schemas and terminology, declared as data.

``load_catalogue(root)`` reads and checks it (``catalogue.load``); ``catalogue_at(root)`` caches it per
process. Components ask the catalogue instead of naming partners or fields in code.
"""

from ketenstroom.catalogue.load import catalogue_at, load_catalogue, load_mapping_file
from ketenstroom.catalogue.model import (
    Catalogue,
    ChainStep,
    ColumnMapping,
    Identity,
    MappingRecord,
    Partner,
    RecordType,
    TopicPolicy,
)

__all__ = [
    "Catalogue",
    "ChainStep",
    "ColumnMapping",
    "Identity",
    "MappingRecord",
    "Partner",
    "RecordType",
    "TopicPolicy",
    "catalogue_at",
    "load_catalogue",
    "load_mapping_file",
]
