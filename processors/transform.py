"""The pure transform: decoded raw partner record -> ChainEvent, or a dead letter. No I/O.

Runners (faust today) call ``Transformer.transform_batch`` on batches of raw Kafka records and send
what it returns; nothing in here knows about Kafka clients.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from ketenstroom.contract.codec import decode, encode
from ketenstroom.contract.wire import frame, unframe
from ketenstroom.errors import RecordError
from processors.pseudonym import Pseudonymiser, age_at, pc4
from processors.terminology import Terminology

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
# Which uniform chain step a raw record type is, and which of its coded fields carry the concept.
CHAIN_STEPS: dict[str, tuple[str, str]] = {
    "nl.ketenstroom.om.CaseDecision": ("OM_DECISION", "decision"),
}


@dataclass(frozen=True)
class RawRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class Curated:
    key: bytes
    value: bytes
    source: RawRecord


@dataclass(frozen=True)
class DeadLetter:
    source: RawRecord
    reason: str
    stage: str
    error: str

    def headers(self) -> list[tuple[str, bytes]]:
        """Headers naming the reason and where the record came from; the error text holds no values."""
        return [
            ("ketenstroom.reason", self.reason.encode()),
            ("ketenstroom.stage", self.stage.encode()),
            ("ketenstroom.source.topic", self.source.topic.encode()),
            ("ketenstroom.source.partition", str(self.source.partition).encode()),
            ("ketenstroom.source.offset", str(self.source.offset).encode()),
            ("ketenstroom.error", self.error.encode()),
            *self.source.headers,
        ]


def load_municipalities(path: Path) -> dict[str, str]:
    with path.open(encoding="utf-8", newline="") as fh:
        return {row["pc4"]: row["municipality_code"] for row in csv.DictReader(fh)}


@dataclass
class Transformer:
    pseudonymiser: Pseudonymiser
    terminology: Terminology
    municipalities: dict[str, str]
    writer_schema: Callable[[int], Any]  # schema id -> parsed writer schema (registry, cached)
    curated_schema_id: int
    curated_schema: Any
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def transform_batch(self, records: Iterable[RawRecord]) -> tuple[list[Curated], list[DeadLetter]]:
        curated: list[Curated] = []
        dead: list[DeadLetter] = []
        for record in records:
            stage = "decode"
            try:
                schema_id, payload = unframe(record.value)
                writer = self.writer_schema(schema_id)
                raw = decode(writer, payload)
                stage = "transform"
                event = self.to_chain_event(raw, writer)
                curated.append(Curated(
                    key=(event["case_pseudonym"] or event["event_id"]).encode(),
                    value=frame(self.curated_schema_id, encode(self.curated_schema, event)),
                    source=record,
                ))
            except RecordError as exc:
                dead.append(DeadLetter(record, exc.reason, stage, str(exc)))
        return curated, dead

    def to_chain_event(self, raw: dict[str, Any], writer: Any) -> dict[str, Any]:
        record_type = writer["name"] if isinstance(writer, dict) else str(writer)
        step = CHAIN_STEPS.get(record_type)
        if step is None:
            raise RecordError(f"record type {record_type} has no chain step mapping", reason="unknown-record-type")
        chain_step, coded_field = step
        meta = raw["metadata"]
        event_time: datetime = meta["event_time"]
        local_day = event_time.astimezone(AMSTERDAM).date()
        coded = raw[coded_field]
        concepts = self.terminology.lookup(coded["code_system"], coded["code"], coded["code_system_version"],
                                           local_day)
        suspect = raw.get("suspect") or {}
        person = self.pseudonymiser.person(suspect.get("skn"), suspect.get("bsn"))
        case = raw.get("case") or {}
        birth = suspect.get("birth_date")
        area = pc4(suspect.get("postcode"))
        return {
            "event_id": meta["event_id"],
            "source_partner": str(meta["partner"]).lower(),
            "source_event_type": record_type,
            "source_system": meta["source_system"],
            "event_time": event_time,
            "registration_time": meta["registration_time"],
            "chain_step": chain_step,
            "case_pseudonym": self.pseudonymiser.case(case["parketnummer"]) if case.get("parketnummer") else None,
            "report_pseudonym": self.pseudonymiser.report(case["pv_number"]) if case.get("pv_number") else None,
            "person_pseudonym": person.pseudonym,
            "person_pseudonym_source": person.source,
            "identity_flags": list(person.flags),
            "birth_year": birth.year if birth else None,
            "age_at_event": age_at(birth, event_time.astimezone(AMSTERDAM)) if birth else None,
            "sex": suspect.get("sex"),
            "municipality_code": self.municipalities.get(area) if area else None,
            "concepts": concepts,
            "mapping_version": self.terminology.version,
            "pseudonym_key_id": self.pseudonymiser.key_id,
            "processed_time": self.clock(),
        }
