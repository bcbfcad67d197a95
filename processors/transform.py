"""The pure transform: decoded raw partner record -> ChainEvent, or a dead letter. No I/O.

Runners call ``Transformer.transform_batch`` on batches of raw Kafka records (or ``transform`` on one)
and send what it returns; nothing in here knows about Kafka clients.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ketenstroom.calendar import AMSTERDAM, local_date
from ketenstroom.contract.codec import decode, encode
from ketenstroom.contract.wire import frame, unframe
from ketenstroom.errors import RecordError
from processors.pseudonym import Pseudonymiser, age_at, pc4
from processors.terminology import Terminology


@dataclass(frozen=True)
class Step:
    """The uniform chain step of a raw record type, and its coded fields mapped through terminology.

    ``required`` coded fields must map (else the event is dead-lettered); ``optional`` ones map when
    present. Organisational codes (court, 3RO organisation, Halt referrer) are not mapped.
    """

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()


STEPS: dict[str, Step] = {
    "nl.ketenstroom.politie.CrimeRegistered": Step("POLICE_CRIME_REGISTERED", ("incident",)),
    "nl.ketenstroom.politie.SuspectRegistered": Step("POLICE_SUSPECT_REGISTERED", ()),
    "nl.ketenstroom.politie.ReportSentToOm": Step("POLICE_REPORT_SENT_TO_OM", ()),
    "nl.ketenstroom.om.CaseRegistered": Step("OM_REGISTRATION", ("offence",)),
    "nl.ketenstroom.om.CaseDecision": Step("OM_DECISION", ("decision",), ("sepot_ground", "offence")),
    "nl.ketenstroom.rechtspraak.Judgment": Step("COURT_JUDGMENT", ("outcome",), ("principal_sanction",)),
    "nl.ketenstroom.rechtspraak.AppealJudgment": Step(
        "APPEAL_JUDGMENT", ("outcome",), ("principal_sanction",)
    ),
    "nl.ketenstroom.cjib.CollectionStarted": Step("EXECUTION_COLLECTION_STARTED", ("sanction",)),
    "nl.ketenstroom.cjib.PaymentReceived": Step("EXECUTION_PAYMENT_RECEIVED", ()),
    "nl.ketenstroom.cjib.SubstituteDetentionOrdered": Step("EXECUTION_SUBSTITUTE_DETENTION", ()),
    "nl.ketenstroom.dji.DetentionInflow": Step("DETENTION_INFLOW", ("title", "institution")),
    "nl.ketenstroom.dji.DetentionOutflow": Step("DETENTION_OUTFLOW", ("reason",)),
    "nl.ketenstroom.reclassering.SupervisionStarted": Step("SUPERVISION_STARTED", ("kind",)),
    "nl.ketenstroom.reclassering.SupervisionEnded": Step("SUPERVISION_ENDED", ("kind", "outcome")),
    "nl.ketenstroom.halt.Referral": Step("HALT_REFERRAL", ("offence_group",)),
    "nl.ketenstroom.halt.Completed": Step("HALT_COMPLETED", ("outcome",)),
}


@dataclass(frozen=True)
class RawRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int | None = None  # the Kafka record timestamp, for latency


@dataclass(frozen=True)
class Curated:
    key: bytes
    value: bytes
    source: RawRecord
    event_id: str
    event_time: float  # unix seconds


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
            outcome = self.transform(record)
            if isinstance(outcome, Curated):
                curated.append(outcome)
            else:
                dead.append(outcome)
        return curated, dead

    def transform(self, record: RawRecord) -> Curated | DeadLetter:
        """One raw record to its curated event, or to a dead letter naming the reason and stage."""
        stage = "decode"
        try:
            schema_id, payload = unframe(record.value)
            writer = self.writer_schema(schema_id)
            raw = decode(writer, payload)
            stage = "transform"
            event = self.to_chain_event(raw, writer)
            key = (
                event["case_pseudonym"]
                or event["report_pseudonym"]
                or event["execution_pseudonym"]
                or str(event["event_id"])
            )
            return Curated(
                key=key.encode(),
                value=frame(self.curated_schema_id, encode(self.curated_schema, event)),
                source=record,
                event_id=str(event["event_id"]),
                event_time=event["event_time"].timestamp(),
            )
        except RecordError as exc:
            return DeadLetter(record, exc.reason, stage, str(exc))

    def to_chain_event(self, raw: dict[str, Any], writer: Any) -> dict[str, Any]:
        record_type = writer["name"] if isinstance(writer, dict) else str(writer)
        step = STEPS.get(record_type)
        if step is None:
            raise RecordError(
                f"record type {record_type} has no chain step mapping", reason="unknown-record-type"
            )
        meta = raw["metadata"]
        event_time: datetime = meta["event_time"]
        local_day = local_date(event_time)
        concepts: list[dict[str, str]] = []
        for name in (*step.required, *step.optional):
            coded = raw.get(name)
            if coded is None:
                continue  # optional and absent (required coded fields are non-null in the schema)
            concepts += self.terminology.lookup(
                coded["code_system"], coded["code"], coded["code_system_version"], local_day
            )
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
            "chain_step": step.name,
            "case_pseudonym": self.pseudonymiser.case(case["parketnummer"])
            if case.get("parketnummer")
            else None,
            "report_pseudonym": self.pseudonymiser.report(case["pv_number"])
            if case.get("pv_number")
            else None,
            "execution_pseudonym": (
                self.pseudonymiser.execution(case["cjib_number"]) if case.get("cjib_number") else None
            ),
            "person_pseudonym": person.pseudonym,
            "person_pseudonym_source": person.source,
            "skn_pseudonym": person.skn,
            "bsn_pseudonym": person.bsn,
            "identity_flags": list(person.flags),
            "birth_year": birth.year if birth else None,
            "age_at_event": age_at(birth, event_time.astimezone(AMSTERDAM)) if birth else None,
            "sex": suspect.get("sex"),
            "municipality_code": self.municipalities.get(area) if area else None,
            "crime_municipality_code": raw.get("crime_municipality"),
            "sanction_days": raw.get("sanction_days", raw.get("days")),
            "sanction_hours": raw.get("sanction_hours", raw.get("hours")),
            "amount_eur": raw.get("sanction_amount_eur", raw.get("amount_eur")),
            "concepts": concepts,
            "mapping_version": self.terminology.version,
            "pseudonym_key_id": self.pseudonymiser.key_id,
            "processed_time": self.clock(),
        }
