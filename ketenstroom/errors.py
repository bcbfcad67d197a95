"""One exception tree for ketenstroom. Imports nothing of ours.

::

    KetenstroomError
    ├── ConfigurationError          settings or data files are wrong; fix and restart
    │   └── TerminologyError        a mapping table does not validate
    ├── InfraError                  the local stack could not be fetched, started or reached
    │   ├── JavaNotFoundError       no Java of the version a service needs
    │   ├── FetchError              Maven Central (or the Maven client) failed
    │   ├── PortInUseError          something else listens on a port we need
    │   └── ServiceStartError       a service died or did not become healthy in time
    ├── DeliveryError               a producer could not get records acknowledged
    │   ├── RegistryUnavailable *   the schema registry did not answer, or answered 408/429/5xx
    │   └── BrokerUnavailable *     Kafka could not be reached before a deadline
    ├── ExportRefused               a whole export cannot be delivered (its header fits no record type)
    ├── RecordError                 one record cannot be processed; carries where it came from
    │   ├── InputRowError           a partner export row failed validation (row, field, value, reason)
    │   ├── DecodeError             bytes are not a valid Confluent-framed Avro record
    │   ├── UnknownCodeError        a partner code has no mapping (never guessed)
    │   └── IdentifierError         an identifier is malformed (e.g. a parketnummer)
    ├── StorageError                object storage refused or failed a write/read
    │   └── StorageUnavailable *    object storage did not answer, or answered 5xx/429 (not 4xx)
    ├── TransientError              base of the classes marked *: a dependency is down, retry
    └── ExtractError                a research extract cannot be made as requested (request, catalogue)
        └── ExtractRefused          the extract would not be safe: offending combinations attached

    * also a TransientError: a dependency is down for now; a long-running component waits and
      retries (``ketenstroom.adapters.retry``), a one-shot command fails with a clear message.

Transient or permanent (``is_transient``): a registry that is down or answers 5xx, object storage
that is down or answers 5xx, a broker that times out are transient: retry, never dead-letter. An unknown
schema id, undecodable bytes, an unknown code, an invalid row (``RecordError``) are permanent: the
record is dead-lettered or rejected with its reason, because no retry would change the answer.

Third-party errors are translated at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class KetenstroomError(Exception):
    """Base of every error ketenstroom raises on purpose."""


class ConfigurationError(KetenstroomError):
    """Settings or a data file are wrong."""


class TerminologyError(ConfigurationError):
    """A terminology mapping table failed validation at start-up."""


class InfraError(KetenstroomError):
    """The local stack could not be fetched, started or reached."""


class JavaNotFoundError(InfraError):
    """No Java runtime of the version a service needs was found."""


class FetchError(InfraError):
    """Downloading an artifact from Maven Central failed."""


class PortInUseError(InfraError):
    """A port the stack needs is taken by a process we did not start."""


class ServiceStartError(InfraError):
    """A service exited, or did not become healthy before its deadline."""


class DeliveryError(KetenstroomError):
    """Records could not be delivered (broker or registry unreachable, not acknowledged)."""


class ExportRefused(KetenstroomError):
    """A partner export is refused as a whole, before any of its rows is produced (e.g. its header)."""


class StorageError(KetenstroomError):
    """Object storage failed a read or write."""


class StopRequested(KetenstroomError):
    """A stop request (SIGTERM, Ctrl-C) came while a long wait was not done: what it was for did not
    happen, and the component stops without committing it."""


class TransientError(KetenstroomError):
    """A dependency is unavailable for now: retry later (never dead-letter or reject on this)."""


class RegistryUnavailable(DeliveryError, TransientError):
    """The schema registry could not be reached, timed out, or answered 408, 429 or 5xx."""


class BrokerUnavailable(DeliveryError, TransientError):
    """Kafka could not be reached (or did not answer) before a deadline."""


class StorageUnavailable(StorageError, TransientError):
    """Object storage could not be reached, timed out, or answered 429 or 5xx."""


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) says "try again later" rather than "this
    record or request is wrong". RecordErrors are never transient."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, RecordError):
            return False
        if isinstance(current, TransientError):
            return True
        seen.add(id(current))
        current = current.__cause__
    return False


class DisclosureError(KetenstroomError):
    """A table would be released with a cell that the disclosure rules forbid; nothing is written."""


@dataclass(frozen=True)
class RecordOrigin:
    """Where a record came from, so a dead letter can be traced and replayed."""

    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    raw: bytes | None = field(default=None, repr=False)


class RecordError(KetenstroomError):
    """One record cannot be processed. ``reason`` is a stable machine-readable code."""

    reason: str = "record-error"

    def __init__(self, message: str, *, reason: str | None = None, origin: RecordOrigin | None = None):
        super().__init__(message)
        if reason is not None:
            self.reason = reason
        self.origin = origin or RecordOrigin()


class InputRowError(RecordError):
    """A row of a partner export failed validation."""

    reason = "invalid-row"

    def __init__(self, *, row: int, field: str, value: object, reason: str, message: str):
        super().__init__(f"row {row}: field {field!r} value {value!r}: {message}", reason=reason)
        self.row = row
        self.field = field
        self.value = value
        self.detail = message


class DecodeError(RecordError):
    """Bytes are not a Confluent-framed Avro record we can read."""

    reason = "undecodable"


class UnknownCodeError(RecordError):
    """A partner code has no mapping for the event time; it is dead-lettered, never guessed."""

    reason = "unknown-code"


class IdentifierError(RecordError):
    """An identifier is malformed."""

    reason = "invalid-identifier"


class ExtractError(KetenstroomError):
    """A research extract cannot be made as requested (bad request, unknown column or level, no data)."""


class ExtractRefused(ExtractError):
    """The extract would not meet its disclosure thresholds within the suppression budget.

    ``offending`` lists the quasi-identifier combinations below k (or below l on a sensitive column),
    one dict per combination with its row count and distinct sensitive values, for the operator only.
    """

    def __init__(self, message: str, offending: list[dict[str, object]]):
        super().__init__(message)
        self.offending = offending
