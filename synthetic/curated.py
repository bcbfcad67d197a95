"""Synthetic curated ``ChainEvent`` records, as the processor emits them, for sink tests and benchmarks.

The sink's input is ``curated.chain-events``; generating it directly (rather than through publish and
process) lets sink tests pick exact event times (period boundaries, DST changes) and lets the sink
benchmark fill a period with millions of events quickly. Pseudonyms are random 64-hex strings, shaped
like the processor's HMACs; no identifier is ever generated.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from confluent_kafka import KafkaException, Producer

from ketenstroom.contract import Topics, load_schemas
from ketenstroom.contract.chain_event import CHAIN_EVENT
from ketenstroom.contract.codec import encode_framed
from ketenstroom.errors import DeliveryError
from ketenstroom.settings import CatalogueSettings, KafkaSettings

_NS = uuid.UUID("6f1c2b0e-3d4a-5b6c-8d7e-9f0a1b2c3d4e")
_BSN_MASK = (1 << 256) - 1 - (0xB5 << 248)  # a BSN pseudonym unlike any SKN pseudonym, per person

# (chain step, partner, record type, days after the previous step: low, high)
_STEPS = [
    ("POLICE_SUSPECT_REGISTERED", "politie", "nl.ketenstroom.politie.SuspectRegistered", 0, 0),
    ("OM_REGISTRATION", "om", "nl.ketenstroom.om.CaseRegistered", 1, 40),
    ("OM_DECISION", "om", "nl.ketenstroom.om.CaseDecision", 5, 120),
    ("COURT_JUDGMENT", "rechtspraak", "nl.ketenstroom.rechtspraak.Judgment", 20, 200),
    ("EXECUTION_COLLECTION_STARTED", "cjib", "nl.ketenstroom.cjib.CollectionStarted", 14, 60),
]


def chain_event(
    *,
    event_id: str,
    event_time: datetime,
    chain_step: str = "OM_DECISION",
    partner: str = "om",
    event_type: str = "nl.ketenstroom.om.CaseDecision",
    case: str | None = None,
    report: str | None = None,
    execution: str | None = None,
    person: str | None = None,
    age: int | None = None,
    concepts: Iterable[dict[str, Any]] = (),
    skn: str | None = None,
    bsn: str | None = None,
) -> dict[str, Any]:
    """One ChainEvent record (the fields the processor sets), ready for the curated schema.

    ``person`` alone is taken as an SKN pseudonym (the common case); ``skn`` and ``bsn`` give the two
    identifiers' pseudonyms separately, and the resolved ``person_pseudonym`` follows the processor's
    rule (SKN before BSN) unless ``person`` is given too."""
    if person is not None and skn is None and bsn is None:
        skn = person
    resolved = person if person is not None else (skn or bsn)
    source = "SKN" if resolved is not None and resolved == skn else ("BSN" if resolved else "NONE")
    return {
        "event_id": event_id,
        "source_partner": partner,
        "source_event_type": event_type,
        "source_system": partner.upper(),
        "event_time": event_time,
        "registration_time": event_time + timedelta(hours=2),
        "chain_step": chain_step,
        "case_pseudonym": case,
        "report_pseudonym": report,
        "execution_pseudonym": execution,
        "person_pseudonym": resolved,
        "person_pseudonym_source": source,
        "skn_pseudonym": skn,
        "bsn_pseudonym": bsn,
        "identity_flags": [],
        "birth_year": None if age is None else event_time.year - age,
        "age_at_event": age,
        "sex": "M",
        "municipality_code": "GM0363",
        "crime_municipality_code": "GM0363",
        "sanction_days": None,
        "sanction_hours": None,
        "amount_eur": None,
        "concepts": list(concepts),
        "mapping_version": "2026.11.2",
        "pseudonym_key_id": "synthetic-k1",
        "processed_time": event_time + timedelta(hours=3),
    }


def chain_events(
    cases: int, *, seed: int, start: datetime, days: int, repeat_share: float = 0.0
) -> Iterator[dict[str, Any]]:
    """Cases flowing police -> OM -> court -> CJIB with lead times; some delivered twice (same id).

    Identities as partners deliver them: ~90% of persons have a BSN besides the SKN, and ~15% of those
    are known to the police by BSN only (drawn from the person pseudonym, not from ``rng``, so the
    rest of the stream does not depend on it)."""
    rng = random.Random(seed)  # noqa: S311 - synthetic data, not security
    for n in range(cases):
        case, report, person = (f"{rng.getrandbits(256):064x}" for _ in range(3))
        bsn = f"{int(person, 16) ^ _BSN_MASK:064x}" if int(person[:2], 16) < 230 else None
        police_bsn_only = bsn is not None and int(person[2:4], 16) < 38
        execution = f"{rng.getrandbits(256):064x}"
        age = rng.randint(12, 70)
        moment = start + timedelta(seconds=rng.randrange(days * 86400))
        steps = rng.choice([2, 3, 3, 4, 4, 5])
        for i, (step, partner, kind, low, high) in enumerate(_STEPS[:steps]):
            moment += (
                timedelta(days=rng.randint(low, high), seconds=rng.randrange(86400)) if i else timedelta()
            )
            event = chain_event(
                event_id=str(uuid.uuid5(_NS, f"{seed}/{n}/{i}")),
                event_time=moment,
                chain_step=step,
                partner=partner,
                event_type=kind,
                case=case if i else None,
                report=report if i <= 1 else None,
                execution=execution if step.startswith("EXECUTION") else None,
                skn=None if i == 0 and police_bsn_only else person,
                bsn=bsn,
                age=age,
            )
            yield event
            if rng.random() < repeat_share:
                yield event  # a re-delivery: the same event id again


def publish_curated(
    kafka: KafkaSettings, registry: Any, topics: Topics, events: Iterable[dict[str, Any]]
) -> int:
    """Produce ChainEvents to the curated topic, keyed as the processor keys them; returns the count."""
    schema = load_schemas(CatalogueSettings().schema_dir)[CHAIN_EVENT]
    schema_id = registry.register(schema.subject(topics.curated), schema)
    producer = Producer(kafka.librdkafka(enable_idempotence=True, acks="all", linger_ms=20))
    failures: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    count = 0
    try:
        for event in events:
            key = event["case_pseudonym"] or event["report_pseudonym"] or event["event_id"]
            value = encode_framed(schema_id, schema.parsed, event)
            while True:
                try:
                    producer.produce(topics.curated, key=key.encode(), value=value, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.1)
            count += 1
            if count % 10_000 == 0:
                producer.poll(0)
        if producer.flush(60) or failures:
            raise DeliveryError(f"curated events not delivered: {failures[:3] or 'flush timed out'}")
    except KafkaException as exc:
        raise DeliveryError(f"producing curated events failed: {exc}") from exc
    return count
