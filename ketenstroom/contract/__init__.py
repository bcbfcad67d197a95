"""The schema contract shared by producers, processors and sinks: schemas, wire format, topics, ids.

Pure: no network. Components share schema code only through this package.
"""

from ketenstroom.contract.ids import event_id
from ketenstroom.contract.schemas import SchemaSet, load_schemas
from ketenstroom.contract.topics import CURATED_TOPIC, Topics
from ketenstroom.contract.wire import MAGIC_BYTE, frame, unframe

__all__ = [
    "CURATED_TOPIC",
    "MAGIC_BYTE",
    "SchemaSet",
    "Topics",
    "event_id",
    "frame",
    "load_schemas",
    "unframe",
]
