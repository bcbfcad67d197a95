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
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from ketenstroom.calendar import AMSTERDAM, local_date
from ketenstroom.catalogue import Catalogue, RecordType
from ketenstroom.catalogue.terminology import Terminology
from ketenstroom.contract.codec import decode, encode
from ketenstroom.contract.wire import frame, unframe
from ketenstroom.errors import RecordError
from processors.pseudonym import Pseudonymiser, age_at, pc4

if TYPE_CHECKING:
    from processors.fastpath import FastPath

Path_ = tuple[str, ...]


def _at(raw: dict[str, Any], path: Path_ | None) -> Any:
    """The value at a dotted path of a decoded record (None when absent or the path is None)."""
    if path is None:
        return None
    node: Any = raw
    for name in path:
        if node is None:
            return None
        node = node.get(name)
    return node


def _split(path: str | None) -> Path_ | None:
    return None if path is None else tuple(path.split("."))


@dataclass(frozen=True)
class Plan:
    """A record type's declaration from the catalogue, with its paths split once (hot path)."""

    step: str
    coded: tuple[str, ...]  # required first, then optional
    case: Path_ | None
    report: Path_ | None
    execution: Path_ | None
    skn: Path_ | None
    bsn: Path_ | None
    birth_date: Path_ | None
    sex: Path_ | None
    postcode: Path_ | None
    sanction_days: Path_ | None
    sanction_hours: Path_ | None
    amount_eur: Path_ | None
    crime_municipality: Path_ | None

    @classmethod
    def of(cls, record: RecordType) -> Plan:
        who = record.identity
        return cls(
            step=record.step,
            coded=record.coded,
            case=_split(record.case),
            report=_split(record.report),
            execution=_split(record.execution),
            skn=_split(who.skn),
            bsn=_split(who.bsn),
            birth_date=_split(who.birth_date),
            sex=_split(who.sex),
            postcode=_split(who.postcode),
            sanction_days=_split(record.sanction_days),
            sanction_hours=_split(record.sanction_hours),
            amount_eur=_split(record.amount_eur),
            crime_municipality=_split(record.crime_municipality),
        )


def plans(catalogue: Catalogue) -> dict[str, Plan]:
    """Record type full name -> its plan, for every record type the catalogue declares."""
    return {
        fullname: Plan.of(record)
        for partner in catalogue.partners.values()
        for fullname, record in partner.records.items()
    }


class RawRecord(NamedTuple):
    """One raw Kafka record as the runners hand it over (a named tuple: one per record, made cheaply)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int | None = None  # the Kafka record timestamp, for latency


class Curated(NamedTuple):
    """A curated event's Kafka key and framed value, and what the runner needs to know about it."""

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
    event_id: str | None = None  # when the record could be decoded: the event's id, for its status

    def headers(self) -> list[tuple[str, str | bytes | None]]:
        """Headers naming the reason and where the record came from; the error text holds no values."""
        event = [("ketenstroom.event-id", self.event_id.encode())] if self.event_id else []
        return [
            ("ketenstroom.reason", self.reason.encode()),
            ("ketenstroom.stage", self.stage.encode()),
            ("ketenstroom.source.topic", self.source.topic.encode()),
            ("ketenstroom.source.partition", str(self.source.partition).encode()),
            ("ketenstroom.source.offset", str(self.source.offset).encode()),
            ("ketenstroom.error", self.error.encode()),
            *event,
            *self.source.headers,
        ]


def utc_now() -> datetime:
    """The default clock of ``processed_time``."""
    return datetime.now(UTC)


def load_municipalities(path: Path) -> dict[str, str]:
    with path.open(encoding="utf-8", newline="") as fh:
        return {row["pc4"]: row["municipality_code"] for row in csv.DictReader(fh)}


@dataclass
class Transformer:
    pseudonymiser: Pseudonymiser
    terminology: Terminology
    municipalities: dict[str, str]
    plans: dict[str, Plan]  # record type -> what its fields mean (from the catalogue)
    writer_schema: Callable[[int], Any]  # schema id -> parsed writer schema (registry, cached)
    curated_schema_id: int
    curated_schema: Any
    clock: Callable[[], datetime] = field(default=utc_now)
    #: use the compiled fast path (``processors.fastpath``) where it applies; off: the reference alone
    fast_path: bool = True
    fast: FastPath | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.fast_path:
            from processors.fastpath import FastPath, Unsupported  # it builds on this module's types

            try:
                self.fast = FastPath(self)
            except Unsupported:  # a curated schema the fast path does not write: the reference only
                self.fast = None

    def begin_batch(self) -> None:
        """A batch begins: the fast path forgets the pseudonyms it remembered (within a batch at most)."""
        if self.fast is not None:
            self.fast.forget()

    def transform_batch(self, records: Iterable[RawRecord]) -> tuple[list[Curated], list[DeadLetter]]:
        curated: list[Curated] = []
        dead: list[DeadLetter] = []
        self.begin_batch()
        for record in records:
            outcome = self.transform(record)
            if isinstance(outcome, Curated):
                curated.append(outcome)
            else:
                dead.append(outcome)
        return curated, dead

    def transform(self, record: RawRecord) -> Curated | DeadLetter:
        """One raw record to its curated event, or to a dead letter naming the reason and stage.

        The fast path where it applies; every record it hands back takes the reference path."""
        fast = self.fast
        if fast is not None:
            curated = fast(record)
            if curated is not None:
                return curated
        return self.transform_reference(record)

    def transform_reference(self, record: RawRecord) -> Curated | DeadLetter:
        """The reference transform: the definition of the curated event and of each dead letter."""
        stage, raw = "decode", cast(Any, None)
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
            event_id = (raw.get("metadata") or {}).get("event_id") if isinstance(raw, dict) else None
            return DeadLetter(record, exc.reason, stage, str(exc), str(event_id) if event_id else None)

    def to_chain_event(self, raw: dict[str, Any], writer: Any) -> dict[str, Any]:
        record_type = writer["name"] if isinstance(writer, dict) else str(writer)
        plan = self.plans.get(record_type)
        if plan is None:
            raise RecordError(
                f"record type {record_type} is not declared in the chain catalogue (partners/*/partner.toml)",
                reason="unknown-record-type",
            )
        meta = raw["metadata"]
        event_time: datetime = meta["event_time"]
        local_day = local_date(event_time)
        concepts: list[dict[str, str]] = []
        for name in plan.coded:
            coded = raw.get(name)
            if coded is None:
                continue  # optional and absent (required coded fields are non-null in the schema)
            concepts += self.terminology.lookup(
                coded["code_system"], coded["code"], coded["code_system_version"], local_day
            )
        person = self.pseudonymiser.person(_at(raw, plan.skn), _at(raw, plan.bsn))
        parketnummer = _at(raw, plan.case)
        pv_number = _at(raw, plan.report)
        cjib_number = _at(raw, plan.execution)
        birth = _at(raw, plan.birth_date)
        area = pc4(_at(raw, plan.postcode))
        return {
            "event_id": meta["event_id"],
            "source_partner": str(meta["partner"]).lower(),
            "source_event_type": record_type,
            "source_system": meta["source_system"],
            "event_time": event_time,
            "registration_time": meta["registration_time"],
            "chain_step": plan.step,
            "case_pseudonym": self.pseudonymiser.case(parketnummer) if parketnummer else None,
            "report_pseudonym": self.pseudonymiser.report(pv_number) if pv_number else None,
            "execution_pseudonym": self.pseudonymiser.execution(cjib_number) if cjib_number else None,
            "person_pseudonym": person.pseudonym,
            "person_pseudonym_source": person.source,
            "skn_pseudonym": person.skn,
            "bsn_pseudonym": person.bsn,
            "identity_flags": list(person.flags),
            "birth_year": birth.year if birth else None,
            "age_at_event": age_at(birth, event_time.astimezone(AMSTERDAM)) if birth else None,
            "sex": _at(raw, plan.sex),
            "municipality_code": self.municipalities.get(area) if area else None,
            "crime_municipality_code": _at(raw, plan.crime_municipality),
            "sanction_days": _at(raw, plan.sanction_days),
            "sanction_hours": _at(raw, plan.sanction_hours),
            "amount_eur": _at(raw, plan.amount_eur),
            "concepts": concepts,
            "mapping_version": self.terminology.version,
            "pseudonym_key_id": self.pseudonymiser.key_id,
            "processed_time": self.clock(),
        }
