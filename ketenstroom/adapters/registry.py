"""Schema registry adapter over confluent-kafka's ``SchemaRegistryClient`` (Confluent REST API).

Caches ids by subject and parsed writer schemas by id, so the hot path never calls the registry.
Failures are classified here, once: a registry that cannot be reached, times out or answers 408, 429
or 5xx raises ``RegistryUnavailable`` (transient: the client has already retried ``max.retries``
times; callers that run for long wait and retry); an unknown schema id raises ``DecodeError``
(permanent: the record is dead-lettered); other refusals are ``DeliveryError``/``ConfigurationError``.
"""

from __future__ import annotations

import json
from typing import Any

import fastavro
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from ketenstroom.contract.schemas import EventSchema
from ketenstroom.errors import ConfigurationError, DecodeError, DeliveryError, RegistryUnavailable
from ketenstroom.settings import RegistrySettings


class Registry:
    def __init__(self, settings: RegistrySettings) -> None:
        self.url = settings.url
        self.who = f" as {settings.username}" if settings.username else ""
        self.client = SchemaRegistryClient(settings.client_conf())
        self._ids: dict[str, int] = {}
        self._writers: dict[int, Any] = {}

    def close(self) -> None:
        """Close the HTTP session; the adapter is unusable afterwards."""
        self.client.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _fail(self, what: str, exc: Exception) -> DeliveryError:
        """The error for a failed call: ``RegistryUnavailable`` (transient) when the registry could not
        be reached or answered 408/429/5xx, else a ``DeliveryError``."""
        message = f"schema registry at {self.url}: {what}{self.who} failed: {exc}"
        if _unavailable(exc):
            return RegistryUnavailable(f"{message} (unavailable; retry when it is back)")
        return DeliveryError(message)

    def register(self, subject: str, schema: EventSchema) -> int:
        """Register (or look up) ``schema`` under ``subject``; returns the schema id."""
        cached = self._ids.get(subject)
        if cached is not None:
            return cached
        try:
            schema_id = self.client.register_schema(subject, Schema(schema.text, "AVRO"))
        except SchemaRegistryError as exc:
            if exc.http_status_code == 403:  # may not write here: fine if this very schema is registered
                return self._registered_by_owner(subject, schema, exc)
            if exc.http_status_code == 409:
                raise ConfigurationError(
                    f"registry refused {schema.fullname} under subject {subject!r} as incompatible with "
                    f"an earlier version ({exc.error_message}); make the change backward compatible "
                    "(add fields with defaults) or register a new record name"
                ) from exc
            raise self._fail(f"registering {subject}", exc) from exc
        except Exception as exc:  # connection errors surface as requests/httpx exceptions
            raise self._fail(f"registering {subject}", exc) from exc
        self._ids[subject] = schema_id
        self._writers.setdefault(schema_id, schema.parsed)
        return schema_id

    def _registered_by_owner(self, subject: str, schema: EventSchema, refused: SchemaRegistryError) -> int:
        """The id of ``schema`` under ``subject`` when its owner (the operator, at onboarding) registered
        it and this principal may only read; otherwise a refusal naming the principal and the subject."""
        try:
            found = self.client.lookup_schema(subject, Schema(schema.text, "AVRO"))
        except SchemaRegistryError as exc:
            raise DeliveryError(
                f"schema registry at {self.url}: the principal{self.who} may not register {schema.fullname} "
                f"under subject {subject!r} ({refused.error_message}) and that version is not registered "
                f"(lookup: HTTP {exc.http_status_code}); the subject's owner or the operator registers it "
                "(`ketenstroom schemas register`)"
            ) from refused
        if found.schema_id is None:
            raise self._fail(f"looking up {subject}", refused)
        self._ids[subject] = found.schema_id
        self._writers.setdefault(found.schema_id, schema.parsed)
        return found.schema_id

    def writer_schema(self, schema_id: int) -> Any:
        """The parsed writer schema for an id, fetched once."""
        parsed = self._writers.get(schema_id)
        if parsed is not None:
            return parsed
        try:
            found = self.client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise DecodeError(
                    f"schema id {schema_id} is unknown to the registry at {self.url}",
                    reason="unknown-schema-id",
                ) from exc
            raise self._fail(f"fetching schema id {schema_id}", exc) from exc
        except Exception as exc:  # connection errors surface as httpx2 exceptions
            raise self._fail(f"fetching schema id {schema_id}", exc) from exc
        if found.schema_str is None:
            raise DecodeError(
                f"schema id {schema_id} at {self.url} has no schema text", reason="unknown-schema-id"
            )
        parsed = fastavro.parse_schema(json.loads(found.schema_str), _force=True)
        self._writers[schema_id] = parsed
        return parsed

    def compatible(self, subject: str, schema: EventSchema) -> bool | None:
        """Whether the registry would accept ``schema`` under ``subject``; None if the subject is new."""
        try:
            return bool(self.client.test_compatibility(subject, Schema(schema.text, "AVRO")))
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                return None
            raise self._fail(f"checking {subject}", exc) from exc
        except Exception as exc:
            raise self._fail(f"checking {subject}", exc) from exc

    def compatibility(self, subject: str | None = None) -> str:
        try:
            return str(self.client.get_compatibility(subject_name=subject))
        except Exception as exc:
            raise self._fail("reading compatibility", exc) from exc

    def set_compatibility(self, level: str, subject: str | None = None) -> None:
        try:
            self.client.set_compatibility(subject_name=subject, level=level)
        except Exception as exc:
            raise self._fail(f"setting compatibility {level}", exc) from exc


RETRIABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def _unavailable(exc: Exception) -> bool:
    """A registry that is down, slow or overloaded (not one that refuses the request)."""
    if isinstance(exc, SchemaRegistryError):
        return exc.http_status_code in RETRIABLE_STATUS or exc.http_status_code >= 500
    return isinstance(exc, OSError | TimeoutError) or any(
        # confluent-kafka 2.16 talks HTTP through its fork ``httpx2``, earlier versions through httpx:
        # both raise a ``TransportError`` subclass when no answer came (refused, reset, timed out)
        cls.__name__ == "TransportError" and cls.__module__.split(".")[0] in ("httpx", "httpx2")
        for cls in type(exc).__mro__
    )
