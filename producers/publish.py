"""``ketenstroom publish``: validate, encode and produce a partner export, then write a receipt.

Only what the broker acknowledged counts as published. Rejected rows go to a reject file (JSON Lines:
line, field, value, reason, message, and the original row) and are never produced. Every row read
ends up in exactly one of: published, rejected, not delivered.

A whole export is refused before anything of the delivery is produced when its header lacks a column
that every row needs (``header_problem``: the missing and unexpected columns, and the partner whose
mapping fits best). Any other failure ends the delivery in order: ``Receipt.failure`` says what, the
exit code is 3 (not delivered), and what the broker acknowledged before it is counted as published.

Receipts and reject files are named per delivery (``delivery_stem``), so a re-delivery keeps the
earlier ones; a reject file holds the partner's raw rows, identifiers included, and is created
readable by its owner only.

Two paths, one outcome: ``build_reference`` (pydantic model, nest, fastavro) defines what is valid and
names every reject; ``producers.fastpath.RowPlan`` writes the same bytes for rows that are plainly
valid, several times faster, and hands every other row to the reference path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any, TextIO

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from ketenstroom.adapters.preflight import require_topic
from ketenstroom.adapters.registry import Registry
from ketenstroom.catalogue import catalogue_at, load_mapping_file
from ketenstroom.contract import Topics, event_id
from ketenstroom.contract.codec import encode
from ketenstroom.contract.deliveries import DeliveryEvent, FileDigest
from ketenstroom.contract.wire import header
from ketenstroom.errors import (
    ConfigurationError,
    DeliveryError,
    ExportRefused,
    InputRowError,
    KetenstroomError,
)
from ketenstroom.settings import CatalogueSettings, KafkaSettings, RegistrySettings
from producers.config import PartnerMapping, RecordMapping, load_mapping
from producers.fastpath import RowPlan
from producers.reader import Export, open_export
from producers.rows import nest, validate

log = logging.getLogger("ketenstroom.publish")

EXIT_OK = 0
EXIT_SOME_REJECTED = 1
EXIT_NOT_DELIVERED = 3
_POLL_EVERY = 1000  # produced messages between two polls for delivery reports


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
    #: How each file was read, when it was not plain UTF-8 (e.g. a BOM in front of Windows-1252).
    notes: list[str] = field(default_factory=list)
    #: Why the delivery ended before every row was handled; None when it ran to the end.
    failure: str | None = None

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def stem(self) -> str:
        """``<UTC start, basic ISO>-<first 8 of the delivery id>``: names this delivery's files."""
        started = datetime.fromisoformat(self.started).astimezone(UTC)
        return f"{started:%Y%m%dT%H%M%SZ}-{self.delivery_id[:8]}"

    def default_path(self, kind: str) -> Path:
        """``<first file>.<stem>.<kind>``: next to the export, one per delivery, earlier ones kept."""
        return Path(f"{self.files[0]}.{self.stem}.{kind}")

    @property
    def reconciles(self) -> bool:
        return self.rows_read == self.published + self.rejected_total + self.not_delivered

    @property
    def exit_code(self) -> int:
        if self.not_delivered or self.failure:
            return EXIT_NOT_DELIVERED
        return EXIT_SOME_REJECTED if self.rejected_total else EXIT_OK

    @property
    def outcome(self) -> str:
        return {EXIT_OK: "delivered", EXIT_SOME_REJECTED: "some-rejected"}.get(
            self.exit_code, "not-delivered"
        )

    def event(self, digests: list[FileDigest]) -> DeliveryEvent:
        """The receipt for ``ops.deliveries``: counts, digests and schema ids, no file paths."""
        return DeliveryEvent.model_validate(
            {
                "partner": self.partner,
                "delivery_id": self.delivery_id,
                "started": self.started,
                "finished": self.finished,
                "files": digests,
                "rows_read": self.rows_read,
                "published": self.published,
                "rejected": self.rejected,
                "not_delivered": self.not_delivered,
                "delivery_errors": self.delivery_errors,
                "schema_ids": self.schema_ids,
                "outcome": self.outcome,
                "reconciles": self.reconciles,
            }
        )

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
            + (
                ""
                if not self.rejected
                else "  " + ", ".join(f"{k}: {v}" for k, v in sorted(self.rejected.items()))
            ),
            f"  duplicates     {self.duplicates_in_file} (within the file; counted under rejected)",
            f"  not delivered  {self.not_delivered}"
            + (
                ""
                if not self.delivery_errors
                else "  " + ", ".join(f"{k}: {v}" for k, v in self.delivery_errors.items())
            ),
            "  schemas        " + ", ".join(f"{s} = id {i}" for s, i in self.schema_ids.items()),
        ]
        lines.extend(f"  note           {note}" for note in self.notes)
        if self.reject_file:
            lines.append(f"  reject file    {self.reject_file}")
            lines.append(
                "                 (the rejected rows as delivered, identifiers included: owner-only; "
                "keep or delete it as you would the export)"
            )
        if self.failure:
            lines.append(f"  NOT DELIVERED  {self.failure}")
        lines.append("  counts reconcile" if self.reconciles else "  COUNTS DO NOT RECONCILE")
        return "\n".join(lines)


class Publisher:
    """Validates rows and produces them; one instance per delivery."""

    def __init__(
        self,
        partner: str,
        *,
        kafka: KafkaSettings,
        registry: RegistrySettings,
        paths: CatalogueSettings | None = None,
        topics: Topics | None = None,
        message_timeout_ms: int = 30_000,
    ) -> None:
        self.partner = partner
        paths = paths or CatalogueSettings()
        catalogue = catalogue_at(paths.dir)
        entry = catalogue.partner(partner)  # an unknown partner is refused here, naming the known ones
        self.partner_dir = entry.mapping.path.parent.parent  # every partner's mapping: header checks
        self.mapping: PartnerMapping = load_mapping(
            partner, catalogue.schemas, entry.mapping.path.parent.parent, code=entry.code
        )
        self.topic = (topics or Topics()).raw(partner)
        self.deliveries_topic = (topics or Topics()).deliveries
        self.kafka, self.message_timeout_ms = kafka, message_timeout_ms
        self.registry = Registry(registry)
        self.producer = Producer(
            kafka.librdkafka(
                enable_idempotence=True,
                acks="all",
                linger_ms=20,
                compression_type="lz4",
                message_timeout_ms=message_timeout_ms,
                batch_num_messages=10_000,
            )
        )
        self.error: Exception | None = None  # what ended the last delivery early, if anything
        self._headers: dict[str, bytes] = {}  # record name -> framed header with its schema id
        self._plans: dict[str, RowPlan | None] = {}  # record name -> fast path, once registered

    def close(self) -> None:
        """Flush what is queued and close the registry session."""
        self.producer.flush(10)
        self.registry.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _header(self, record: RecordMapping, receipt: Receipt) -> bytes:
        name = record.schema.fullname
        found = self._headers.get(name)
        if found is None:
            subject = record.schema.subject(self.topic)
            schema_id = self.registry.register(subject, record.schema)  # DeliveryError if unreachable
            receipt.schema_ids[subject] = schema_id
            found = self._headers[name] = header(schema_id)
            self._plans[name] = RowPlan.compile(self.partner, record, found, self.mapping.code)
        return found

    def publish(
        self,
        files: list[Path],
        *,
        reject_path: Path | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Receipt:
        """Deliver ``files`` as one delivery; never raises: a failure is in ``Receipt.failure``.

        ``self.error`` keeps the exception behind a failure, for a caller that wants its traceback.
        """
        receipt = Receipt(partner=self.partner, files=[str(f) for f in files], topic=self.topic)
        seen: set[bytes] = set()
        errors: Counter[str] = Counter()

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is None:
                receipt.published += 1
            else:
                receipt.not_delivered += 1
                errors[err.name()] += 1

        rejects = _RejectFile(reject_path or receipt.default_path("rejects.jsonl"))
        remaining = 0
        try:
            exports = [open_export(path) for path in files]  # every header checked before producing
            for export in exports:
                problem = header_problem(self.mapping, export, self.partner_dir)
                if problem is not None:
                    raise ExportRefused(problem)
                if export.note:
                    receipt.notes.append(export.note)
            who = self.kafka.sasl_username or "ANONYMOUS"  # refused before anything is produced or registered
            require_topic(  # an unreachable cluster: refused before a row is read, within the setting
                self.kafka,
                self.topic,
                f"partner {who} may not write {self.topic}",
                timeout=self.kafka.connect_timeout_s,
                await_unknown_s=10.0,  # a raw topic created a moment ago (onboarding, tests) may still lag
            )
            for record in self.mapping.records.values():  # register up front: fail before producing
                self._header(record, receipt)
            for export in exports:
                self._publish_file(export, receipt, rejects, seen, on_delivery, progress)
        except Exception as exc:  # any failure ends the delivery in order, with a receipt
            self.error = exc
            receipt.failure = one_line(exc)
        finally:
            remaining = self.producer.flush(60)
            receipt.reject_file = rejects.close()
        # Anything still queued after the final flush was never acknowledged: not published.
        if remaining:
            receipt.not_delivered += remaining
            errors["not-acknowledged-before-timeout"] += remaining
        if receipt.failure is not None:  # rows read but neither produced nor rejected when it failed
            lost = receipt.rows_read - receipt.published - receipt.rejected_total - receipt.not_delivered
            if lost > 0:
                receipt.not_delivered += lost
                errors["delivery-ended-early"] += lost
        receipt.delivery_errors = dict(errors)
        receipt.finished = datetime.now(UTC).isoformat()
        self._announce(receipt.event([d for f in files if (d := _digest(f)) is not None]))
        return receipt

    def _announce(self, event: DeliveryEvent) -> None:
        """Write the delivery's event to ``ops.deliveries`` and wait for it. Its rows are already
        acknowledged (or counted as not delivered) and the receipt file stays the record of truth, so a
        failure here is logged, not raised."""
        try:  # a missing topic would hold the flush below for the whole message timeout
            require_topic(
                self.kafka,
                self.deliveries_topic,
                f"{self.kafka.principal} may not write {self.deliveries_topic}",
                timeout=3,  # unreachable: skip it rather than wait for the message timeout
            )
        except DeliveryError as exc:
            log.error(
                "delivery %s: no event on %s (%s); `ketenstroom topics` creates it",
                event.delivery_id,
                self.deliveries_topic,
                exc,
            )
            return
        failed: list[str] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failed.append(err.name())

        try:
            self.producer.produce(
                self.deliveries_topic,
                key=event.partner.encode(),
                value=event.encode(),
                on_delivery=on_delivery,
            )
            left = self.producer.flush(30)
        except (KafkaException, BufferError) as exc:
            failed.append(str(exc))
            left = 0
        if failed or left:
            log.error(
                "delivery %s: its event did not reach %s (%s); the receipt file has it",
                event.delivery_id,
                self.deliveries_topic,
                ", ".join(failed) or "not acknowledged in time",
            )

    def _publish_file(
        self,
        export: Export,
        receipt: Receipt,
        rejects: _RejectFile,
        seen: set[bytes],
        on_delivery: Callable[[KafkaError | None, Message], None],
        progress: Callable[[int], None] | None,
    ) -> None:
        """Every row of one export: rejected (with its reason) or produced; ``seen`` spans the delivery.

        A CSV header is checked for the mapping's columns once per file; a JSON Lines row per row.
        Rows go through the fast path (``producers.fastpath``) when it can vouch for them, otherwise
        through the reference path (pydantic model, nest, fastavro), which also names every reject.
        """
        missing: dict[str, list[str]] = {}
        plans: dict[str, RowPlan | None] = {}
        for record in self.mapping.records.values():
            name = record.schema.fullname
            if export.columns is not None:
                missing[name] = record.missing_columns(list(export.columns))
            plans[name] = None if missing.get(name) else self._plans[name]
        pending = 0
        for_row, produce, topic, clock = self.mapping.for_row, self.producer.produce, self.topic, time.time_ns
        for line, row in export.rows():
            receipt.rows_read += 1
            try:
                if isinstance(row, InputRowError):
                    raise row
                record = for_row(row, line)
                name = record.schema.fullname
                plan = plans[name]
                built = None if plan is None else plan.encode(row, clock() // 1_000_000)
                if built is None:
                    absent = missing[name] if name in missing else record.missing_columns(list(row))
                    avro, key, eid = build_reference(
                        self.mapping, record, row, line, missing=absent, delivery_time=datetime.now(UTC)
                    )
                    value = self._header(record, receipt) + encode(record.schema.parsed, avro)
                else:
                    value, key, eid = built
                if eid in seen:
                    receipt.duplicates_in_file += 1
                    column = record.columns["metadata.source_record_id"]
                    raise InputRowError(
                        row=line,
                        field=column,
                        value=row.get(column),
                        reason="duplicate-in-file",
                        message="same record id and version earlier in this delivery",
                    )
                seen.add(eid)
            except InputRowError as exc:
                receipt.rejected[exc.reason] = receipt.rejected.get(exc.reason, 0) + 1
                rejects.write(export.path, exc, row if isinstance(row, dict) else None)
                continue
            try:
                produce(topic, value, key, on_delivery=on_delivery)
            except BufferError:
                self._produce(key, value, on_delivery)  # local queue full: serve reports, then retry
            except KafkaException as exc:
                raise DeliveryError(f"producing to {self.topic} failed: {exc}") from exc
            pending += 1
            if pending >= _POLL_EVERY:  # serve delivery reports in batches, not after every row
                self.producer.poll(0)
                pending = 0
            if progress is not None and receipt.rows_read % 1000 == 0:
                progress(receipt.rows_read)

    def _produce(self, key: bytes, value: bytes, on_delivery: Callable[..., None]) -> None:
        while True:
            try:
                self.producer.produce(self.topic, value=value, key=key, on_delivery=on_delivery)
                return
            except BufferError:
                self.producer.poll(0.5)  # local queue full: serve delivery reports, then retry
            except KafkaException as exc:
                raise DeliveryError(f"producing to {self.topic} failed: {exc}") from exc


def _digest(path: Path) -> FileDigest | None:
    """SHA-256 and size of a delivered file; None when it cannot be read (the receipt says why)."""
    sha = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                sha.update(chunk)
                size += len(chunk)
    except OSError:
        return None
    return FileDigest(sha256=sha.hexdigest(), bytes=size)


def build_reference(
    mapping: PartnerMapping,
    record: RecordMapping,
    row: dict[str, str],
    line: int,
    *,
    missing: list[str],
    delivery_time: datetime,
) -> tuple[dict[str, Any], bytes, bytes]:
    """The reference path: ``(nested Avro record, key, event id bytes)``; InputRowError names the reject.

    The pydantic model defines what is valid; the fast path must agree with this function byte for byte.
    """
    if missing:
        raise InputRowError(
            row=line,
            field=missing[0],
            value=None,
            reason="missing-column",
            message=f"the export has no column {missing[0]!r}",
        )
    flat = validate(record.model, record.values(row), line=line, columns=mapping.columns_of(record))
    implausible = record.plausibility.check(flat, delivery_time)
    if implausible is not None:
        reason, path, message = implausible
        column = record.columns.get(path, path)
        raise InputRowError(row=line, field=column, value=row.get(column), reason=reason, message=message)
    source_id = str(flat["metadata.source_record_id"])
    version = int(flat.get("metadata.record_version") or 1)
    eid = event_id(mapping.partner, source_id, version)
    flat.update(
        {
            "metadata.event_id": eid,
            "metadata.partner": mapping.code,
            "metadata.delivery_time": delivery_time,
            "metadata.record_version": version,
        }
    )
    key = str(flat[record.key]).encode()
    return nest(flat, record.codes), key, uuid.UUID(eid).bytes


class _RejectFile:
    """JSON Lines: file, line, column, value, reason, message, and the row as delivered (partner's data).

    The rows carry the partner's identifiers (BSN, name, birth date, ...): mode 0600.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: TextIO | None = None

    def write(self, source: Path, exc: InputRowError, row: dict[str, str] | None) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # raw rows with identifiers: readable by the owner only, from the moment the file exists
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT: set it
            # a lone surrogate (a JSON \ud800 escape) is written as its JSON escape: valid UTF-8 and JSON
            self._fh = os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace")
        self._fh.write(
            json.dumps(
                {
                    "file": str(source),
                    "line": exc.row,
                    "field": exc.field,
                    "value": exc.value,
                    "reason": exc.reason,
                    "message": exc.detail,
                    "row": row,
                },
                ensure_ascii=False,
                default=str,
            )
            + "\n"
        )

    def close(self) -> str | None:
        if self._fh is None:
            return None
        self._fh.close()
        return str(self.path)


def one_line(exc: BaseException) -> str:
    """An error as one line for a partner: the message, with the type unless it is one of ours."""
    text = " ".join(str(exc).split()) or "no message"
    return text if isinstance(exc, KetenstroomError) else f"{type(exc).__name__}: {text}"


def _partner_columns(directory: Path) -> dict[str, set[str]]:
    """Every partner's columns (type column and mapped columns), from the catalogue's mapping files."""
    out: dict[str, set[str]] = {}
    for path in sorted(directory.glob("*/mapping.toml")):
        try:
            out[path.parent.name] = set(load_mapping_file(path, path.parent.name).columns)
        except ConfigurationError:
            continue  # a broken mapping of another partner says nothing about this file
    return out


def header_problem(mapping: PartnerMapping, export: Export, directory: Path | None = None) -> str | None:
    """Why an export cannot be this partner's, or None. Checked once per file, before any row.

    Refused when the header lacks the type column, or lacks for every record type a column the record
    type cannot do without (then every row would be rejected). The message names the missing and the
    unexpected columns and the partner whose mapping the header fits best. For JSON Lines the keys of
    the first (up to ten) rows stand for the header.
    """
    columns = export.columns
    if columns is None:  # JSON Lines: the first rows' keys stand for a header
        rows = [row for _line, row in islice(export.rows(), 10) if isinstance(row, dict)]
        if not rows:
            return None  # nothing to judge by: each line gets its own reject
        columns = tuple(sorted(set().union(*rows)))
    header = set(columns)
    needed = [c for c in ([mapping.type_column] if mapping.type_column else []) if c not in header]
    if not needed:
        lacking = [[c for c in r.required_columns() if c not in header] for r in mapping.records.values()]
        if all(lacking):
            needed = min(lacking, key=len)
    if not needed:
        return None
    ours = set(mapping.columns_of_all())
    unexpected = sorted(header - ours)
    fits = {
        partner: (len(header & cols) / max(1, len(header | cols)), partner)
        for partner, cols in _partner_columns(directory or CatalogueSettings().partner_dir).items()
    }
    best = max(fits.values(), default=(0.0, ""))
    hint = (
        f"; it fits partner {best[1]!r} best ({best[0]:.0%} of the columns in common)"
        if best[1] and best[1] != mapping.partner and best[0] > fits.get(mapping.partner, (0.0, ""))[0]
        else ""
    )
    return (
        f"{export.path.name} does not have the columns of partner {mapping.partner!r}: "
        f"missing {', '.join(needed)}"
        + (f"; unexpected {', '.join(unexpected)}" if unexpected else "")
        + hint
        + f". Nothing of this delivery was published; check the file and --partner "
        f"(mapping: partners/{mapping.partner}/mapping.toml)"
    )
