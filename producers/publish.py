"""``ketenstroom publish``: validate, encode and produce a partner export, then write a receipt.

Only what the broker acknowledged counts as published. Rejected rows go to a reject file (JSON Lines:
line, field, value, reason, message, and the original row) and are never produced. Every row read
ends up in exactly one of: published, rejected, not delivered.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from ketenstroom.adapters.registry import Registry
from ketenstroom.contract import Topics, event_id, load_schemas
from ketenstroom.contract.codec import encode
from ketenstroom.contract.wire import header
from ketenstroom.errors import DeliveryError, InputRowError
from ketenstroom.settings import KafkaSettings, PathSettings, RegistrySettings
from producers.config import PartnerMapping, load_mapping
from producers.reader import read_rows
from producers.rows import validate_row

EXIT_OK = 0
EXIT_SOME_REJECTED = 1
EXIT_NOT_DELIVERED = 3


@dataclass
class Receipt:
    partner: str
    files: list[str]
    delivery_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    finished: str | None = None
    rows_read: int = 0
    published: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    duplicates_in_file: int = 0
    not_delivered: int = 0
    delivery_errors: dict[str, int] = field(default_factory=dict)
    schema_ids: dict[str, int] = field(default_factory=dict)
    topic: str = ""
    reject_file: str | None = None

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def reconciles(self) -> bool:
        return self.rows_read == self.published + self.rejected_total + self.not_delivered

    @property
    def exit_code(self) -> int:
        if self.not_delivered:
            return EXIT_NOT_DELIVERED
        return EXIT_SOME_REJECTED if self.rejected_total else EXIT_OK

    def to_json(self) -> str:
        data = asdict(self)
        data["rejected_total"] = self.rejected_total
        data["reconciles"] = self.reconciles
        data["exit_code"] = self.exit_code
        return json.dumps(data, indent=2, sort_keys=True)

    def summary(self) -> str:
        lines = [
            f"delivery {self.delivery_id} ({self.partner}) -> {self.topic}",
            f"  rows read      {self.rows_read}",
            f"  published      {self.published} (acknowledged by the broker)",
            f"  rejected       {self.rejected_total}"
            + ("" if not self.rejected else "  " + ", ".join(f"{k}: {v}" for k, v in sorted(self.rejected.items()))),
            f"  duplicates     {self.duplicates_in_file} (within the file; counted under rejected)",
            f"  not delivered  {self.not_delivered}"
            + ("" if not self.delivery_errors else "  " + ", ".join(f"{k}: {v}" for k, v in self.delivery_errors.items())),
            f"  schemas        " + ", ".join(f"{s} = id {i}" for s, i in self.schema_ids.items()),
        ]
        if self.reject_file:
            lines.append(f"  reject file    {self.reject_file}")
        lines.append("  counts reconcile" if self.reconciles else "  COUNTS DO NOT RECONCILE")
        return "\n".join(lines)


class Publisher:
    """Validates rows and produces them; one instance per delivery."""

    def __init__(self, partner: str, *, kafka: KafkaSettings, registry: RegistrySettings,
                 paths: PathSettings | None = None, topics: Topics | None = None,
                 message_timeout_ms: int = 30_000) -> None:
        self.mapping: PartnerMapping = load_mapping(partner)
        self.topic = (topics or Topics()).raw(partner)
        schemas = load_schemas((paths or PathSettings()).schema_dir)
        self.schema = schemas[self.mapping.record]
        self.registry = Registry(registry)
        self.producer = Producer(kafka.librdkafka(
            enable_idempotence=True, acks="all", linger_ms=20, compression_type="lz4",
            message_timeout_ms=message_timeout_ms, batch_num_messages=10_000,
        ))
        self.kafka = kafka

    def publish(self, files: list[Path], *, reject_path: Path | None = None,
                progress: Callable[[int], None] | None = None) -> Receipt:
        receipt = Receipt(partner=self.mapping.partner, files=[str(f) for f in files], topic=self.topic)
        subject = self.schema.subject(self.topic)
        schema_id = self.registry.register(subject, self.schema)  # raises DeliveryError if unreachable
        receipt.schema_ids[subject] = schema_id
        prefix = header(schema_id)
        parsed = self.schema.parsed
        seen: set[bytes] = set()
        errors: Counter[str] = Counter()

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is None:
                receipt.published += 1
            else:
                receipt.not_delivered += 1
                errors[err.name()] += 1

        reject_fh: TextIO | None = None
        try:
            for path in files:
                for line, row in read_rows(path):
                    receipt.rows_read += 1
                    try:
                        if isinstance(row, InputRowError):
                            raise row
                        record, key, eid = self._build(row, line)
                        if eid in seen:
                            receipt.duplicates_in_file += 1
                            raise InputRowError(row=line, field=self.mapping.columns["source_record_id"],
                                                value=row.get(self.mapping.columns["source_record_id"]),
                                                reason="duplicate-in-file",
                                                message="same record id and version earlier in this delivery")
                        seen.add(eid)
                    except InputRowError as exc:
                        receipt.rejected[exc.reason] = receipt.rejected.get(exc.reason, 0) + 1
                        if reject_fh is None:
                            reject_path = reject_path or Path(f"{files[0]}.rejects.jsonl")
                            reject_path.parent.mkdir(parents=True, exist_ok=True)
                            reject_fh = reject_path.open("w", encoding="utf-8")
                            receipt.reject_file = str(reject_path)
                        reject_fh.write(json.dumps({
                            "file": str(path), "line": exc.row, "field": exc.field, "value": exc.value,
                            "reason": exc.reason, "message": exc.detail,
                            "row": row if isinstance(row, dict) else None,
                        }, ensure_ascii=False, default=str) + "\n")
                        continue
                    self._produce(key, prefix + encode(parsed, record), on_delivery)
                    if progress is not None and receipt.rows_read % 1000 == 0:
                        progress(receipt.rows_read)
            remaining = self.producer.flush(60)
        finally:
            if reject_fh is not None:
                reject_fh.close()
        # Anything still queued after the final flush was never acknowledged: not published.
        if remaining:
            receipt.not_delivered += remaining
            errors["not-acknowledged-before-timeout"] += remaining
        receipt.delivery_errors = dict(errors)
        receipt.finished = datetime.now(UTC).isoformat()
        return receipt

    def _build(self, row: dict[str, str], line: int) -> tuple[dict[str, Any], bytes, bytes]:
        missing = self.mapping.missing_columns(list(row))
        if missing:
            raise InputRowError(row=line, field=missing[0], value=None, reason="missing-column",
                                message=f"the export has no column {missing[0]!r}")
        model = validate_row(self.mapping.model, self.mapping.rename(row), line=line,
                             columns=self.mapping.columns)
        eid = event_id(self.mapping.partner, model.source_record_id, model.record_version)
        record = model.body(self.mapping.code_systems)
        record["metadata"] = model.metadata(partner=self.mapping.partner, event_id=eid,
                                            delivered=datetime.now(UTC))
        key = str(getattr(model, self.mapping.key_field)).encode()
        return record, key, uuid.UUID(eid).bytes

    def _produce(self, key: bytes, value: bytes, on_delivery: Callable[..., None]) -> None:
        while True:
            try:
                self.producer.produce(self.topic, value=value, key=key, on_delivery=on_delivery)
                break
            except BufferError:
                self.producer.poll(0.5)  # local queue full: serve delivery reports, then retry
            except KafkaException as exc:
                raise DeliveryError(f"producing to {self.topic} failed: {exc}") from exc
        self.producer.poll(0)
