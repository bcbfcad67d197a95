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
    ├── ExportRefused               a whole export cannot be delivered (its header fits no record type)
    ├── RecordError                 one record cannot be processed; carries where it came from
    │   ├── InputRowError           a partner export row failed validation (row, field, value, reason)
    │   ├── DecodeError             bytes are not a valid Confluent-framed Avro record
    │   ├── UnknownCodeError        a partner code has no mapping (never guessed)
    │   └── IdentifierError         an identifier is malformed (e.g. a parketnummer)
    ├── StorageError                object storage refused or failed a write/read
    └── ExtractError                a research extract cannot be made as requested (request, catalogue)
        └── ExtractRefused          the extract would not be safe: offending combinations attached

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
