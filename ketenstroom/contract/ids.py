"""Deterministic event ids: a re-delivered export yields the same ids, so duplicates can be counted once."""

from __future__ import annotations

import uuid

# Fixed namespace for ketenstroom event ids (uuid5 of the project's name in the URL namespace).
EVENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:ketenstroom:event")


def event_id(partner: str, source_record_id: str, record_version: int) -> str:
    """UUIDv5 of ``partner|source_record_id|record_version``."""
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{partner}|{source_record_id}|{record_version}"))
