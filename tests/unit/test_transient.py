"""Transient or permanent: one classification (``ketenstroom.errors.is_transient``), applied at the
registry and object-store boundaries, and honoured by the transform (never a dead letter for an
outage) and by ``Backoff`` (waits, logs, stops on request). The outages themselves are in
``tests/integration/test_outages.py``."""

from __future__ import annotations

import dataclasses
import logging
import time

import httpx
import httpx2
import pytest
from confluent_kafka.schema_registry.error import SchemaRegistryError
from obstore.exceptions import GenericError, NotFoundError

from ketenstroom.adapters import objectstore, registry
from ketenstroom.adapters.retry import Backoff
from ketenstroom.errors import (
    DecodeError,
    DeliveryError,
    RegistryUnavailable,
    StorageError,
    StorageUnavailable,
    UnknownCodeError,
    is_transient,
)
from ketenstroom.settings import S3Settings
from processors.transform import DeadLetter
from tests.unit.test_processor_core import _raw, _transformer


def test_transient_and_permanent_errors_are_told_apart() -> None:
    assert is_transient(RegistryUnavailable("down"))
    assert is_transient(StorageUnavailable("down"))
    assert not is_transient(DeliveryError("refused"))
    assert not is_transient(StorageError("missing"))
    assert not is_transient(DecodeError("bad bytes"))
    assert not is_transient(UnknownCodeError("XX"))
    try:  # a transient error wrapped by a caller is still transient
        try:
            raise StorageUnavailable("down")
        except StorageUnavailable as inner:
            raise RuntimeError("sealing failed") from inner
    except RuntimeError as outer:
        assert is_transient(outer)


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (httpx.ConnectError("connection refused"), True),
        (httpx2.ConnectError("connection refused"), True),  # what confluent-kafka 2.16 raises
        (httpx2.ReadTimeout("timed out"), True),
        (httpx.ReadTimeout("timed out"), True),
        (SchemaRegistryError(503, 50301, "unavailable"), True),
        (SchemaRegistryError(500, 50001, "store error"), True),
        (SchemaRegistryError(429, 42901, "slow down"), True),
        (SchemaRegistryError(404, 40403, "schema not found"), False),
        (SchemaRegistryError(401, 40101, "unauthorised"), False),
        (ValueError("bad schema text"), False),
    ],
)
def test_registry_classifies_its_failures(exc: Exception, transient: bool) -> None:
    assert registry._unavailable(exc) is transient


def test_an_unreachable_registry_is_transient_and_an_unknown_id_permanent() -> None:
    class Client:
        def __init__(self, exc: Exception) -> None:
            self.exc = exc

        def get_schema(self, _schema_id: int) -> None:
            raise self.exc

    adapter = registry.Registry.__new__(registry.Registry)
    adapter.url, adapter.who, adapter._writers, adapter._ids = "http://r", "", {}, {}
    adapter.client = Client(httpx2.ConnectError("refused"))  # type: ignore[assignment]
    with pytest.raises(RegistryUnavailable, match="unavailable"):
        adapter.writer_schema(7)
    adapter.client = Client(SchemaRegistryError(404, 40403, "not found"))  # type: ignore[assignment]
    with pytest.raises(DecodeError) as found:
        adapter.writer_schema(7)
    assert found.value.reason == "unknown-schema-id" and not is_transient(found.value)


@pytest.mark.parametrize(
    ("text", "transient"),
    [
        (
            "Generic S3 error: Error performing PUT http://x/b/k in 1s - HTTP error: error sending request",
            True,
        ),
        (
            "Generic S3 error: Error performing PUT http://x/b/k: Server error, status: 503 Service Unavailable",
            True,
        ),
        (
            "Generic S3 error: Error performing GET http://x/b/k: Client error with status 403 Forbidden",
            False,
        ),
        ("Generic S3 error: Client error with status 429 Too Many Requests", True),
    ],
)
def test_object_store_classifies_its_failures(text: str, transient: bool) -> None:
    store = objectstore.ObjectStore("s3://bucket/prefix", S3Settings(endpoint="http://127.0.0.1:1"))
    failure = store._failure("writing k", GenericError(text))
    assert isinstance(failure, StorageUnavailable) is transient
    assert "\n" not in str(failure)
    assert not is_transient(store._failure("reading k", NotFoundError("no such key")))


def test_a_local_directory_failure_is_never_transient(tmp_path: object) -> None:
    store = objectstore.ObjectStore(f"file://{tmp_path}")
    assert not is_transient(store._failure("writing k", GenericError("error sending request")))


def test_the_transform_never_dead_letters_an_outage() -> None:
    """A registry outage while fetching a writer schema escapes the transform (to be retried); an
    unknown schema id is a dead letter with its reason."""
    transformer = _transformer()

    def down(_schema_id: int) -> object:
        raise RegistryUnavailable("schema registry at http://r: fetching schema id 1 failed (unavailable)")

    outage = dataclasses.replace(transformer, writer_schema=down)
    with pytest.raises(RegistryUnavailable):
        outage.transform(_raw("SEPO"))

    def unknown(schema_id: int) -> object:
        raise DecodeError(f"schema id {schema_id} is unknown", reason="unknown-schema-id")

    letter = dataclasses.replace(transformer, writer_schema=unknown).transform(_raw("SEPO"))
    assert isinstance(letter, DeadLetter) and letter.reason == "unknown-schema-id"


def test_backoff_grows_is_capped_logs_and_stops_on_request(caplog: pytest.LogCaptureFixture) -> None:
    backoff = Backoff(initial_s=0.01, max_s=0.04)
    delays = []
    for attempt in range(6):
        backoff.attempt = attempt
        delays.append(backoff.delay())
    assert all(0.005 <= d <= 0.04 for d in delays) and max(delays[3:]) > 0.02
    backoff.attempt = 0
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise StorageUnavailable("object storage unavailable")
        return "stored"

    with caplog.at_level(logging.WARNING, logger="ketenstroom.retry"):
        assert backoff.call("storing k", flaky) == "stored"
    assert len(calls) == 3 and backoff.retries == 2 and backoff.attempt == 0
    assert sum("storing k failed (attempt" in r.getMessage() for r in caplog.records) == 2

    with pytest.raises(DecodeError):  # permanent: raised at once, no wait
        backoff.call("decoding", lambda: (_ for _ in ()).throw(DecodeError("bad")))
    assert backoff.retries == 2

    slow = Backoff(initial_s=30, max_s=30)
    started = time.monotonic()
    with pytest.raises(StorageUnavailable):  # a stop request ends the wait at once and re-raises
        slow.call("storing k", lambda: (_ for _ in ()).throw(StorageUnavailable("down")), lambda: True)
    assert time.monotonic() - started < 1.0


def test_dlq_status_reader_does_not_take_an_outage_for_a_missing_topic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ketenstroom.errors import BrokerUnavailable
    from ketenstroom.settings import KafkaSettings
    from processors import dlq

    def fails(exc: Exception) -> object:
        def call(*_args: object, **_kwargs: object) -> None:
            raise exc

        return call

    monkeypatch.setattr(dlq, "all_partitions", fails(BrokerUnavailable("could not reach Kafka")))
    with pytest.raises(BrokerUnavailable):
        dlq._statuses(KafkaSettings(), "dlq.om.status")
    monkeypatch.setattr(dlq, "all_partitions", fails(DeliveryError("topic dlq.om.status does not exist")))
    assert dlq._statuses(KafkaSettings(), "dlq.om.status") == {}
