"""Ask the cluster, before any record is produced, whether this principal may use a topic at all.

A client with a wrong password, without the CA, or without rights on the topic fails here with a
message naming the principal and the resource refused, instead of a delivery report per record.
"""

from __future__ import annotations

import re
import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from ketenstroom.errors import BrokerUnavailable, DeliveryError
from ketenstroom.settings import KafkaSettings

_REFUSED = re.compile(r"ssl handshake|certificate verify|authentication", re.IGNORECASE)


def connection_refused(kafka: KafkaSettings, text: str) -> DeliveryError:
    """A clear message for the ways a secured cluster turns a client away before any ACL is asked."""
    who = kafka.principal
    lowered = text.lower()
    if "ssl handshake" in lowered or "certificate verify" in lowered:
        return DeliveryError(
            f"{who} could not set up TLS with {kafka.bootstrap_servers}: the broker's certificate is not "
            f"trusted ({text}); point KETENSTROOM_KAFKA_SSL_CA_LOCATION at the CA that signed it"
        )
    if "authentication" in lowered:
        return DeliveryError(
            f"{who} could not authenticate to {kafka.bootstrap_servers}: wrong or missing password "
            f"({text}); check KETENSTROOM_KAFKA_SASL_USERNAME and KETENSTROOM_KAFKA_SASL_PASSWORD_FILE"
        )
    return BrokerUnavailable(
        f"{who} could not reach Kafka at {kafka.bootstrap_servers} within "
        f"{kafka.connect_timeout_s:g} s (KETENSTROOM_KAFKA_CONNECT_TIMEOUT_S): {text}"
    )


def _admin(kafka: KafkaSettings) -> tuple[AdminClient, list[str]]:
    """An admin client and the list its error callback fills: librdkafka says there why a connection
    failed (SSL handshake, SASL authentication, refused), which the exception itself does not."""
    errors: list[str] = []

    def on_error(err: KafkaError) -> None:
        errors.append(err.str())

    conf = kafka.librdkafka()
    conf["error_cb"] = on_error
    return AdminClient(conf), errors


def require_topic(
    kafka: KafkaSettings,
    topic: str,
    refusal: str,
    timeout: float = 15.0,
    *,
    unreachable_ok: bool = False,
    await_unknown_s: float = 0.0,
) -> None:
    """Raise DeliveryError(``refusal``) if the cluster will not even describe ``topic`` to us, or a
    DeliveryError naming the principal if it turns us away (TLS, authentication). ``unreachable_ok``:
    a cluster that does not answer at all is left to the caller's own delivery reports.
    ``await_unknown_s``: how long a topic the cluster calls unknown is asked for again (one created a
    moment ago is not served by every broker yet); 0 refuses it at once."""
    admin, errors = _admin(kafka)
    deadline = time.monotonic() + timeout
    unknown_until = time.monotonic() + min(await_unknown_s, timeout)
    while True:  # short metadata requests, so a refused handshake is reported at once, not at the deadline
        try:
            metadata = admin.list_topics(topic=topic, timeout=min(1.0, max(0.1, deadline - time.monotonic())))
            error = getattr(metadata.topics.get(topic), "error", None)
            unknown = error is not None and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
            if unknown and time.monotonic() < unknown_until:
                admin.poll(0.2)  # a topic created a moment ago may not be served by every broker yet
                continue
            break
        except KafkaException as exc:
            admin.poll(0.1)  # serve the error callbacks: they say why (SSL handshake, SASL authentication)
            refused = [e for e in errors if _REFUSED.search(e)]
            if refused or time.monotonic() >= deadline:
                if not refused and unreachable_ok:
                    return
                reason = (refused or errors or [str(exc.args[0] if exc.args else exc)])[0]
                raise connection_refused(kafka, reason) from exc
    found = metadata.topics.get(topic)
    if found is not None and found.error is not None:
        if found.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            raise DeliveryError(f"{refusal} (Kafka: {found.error.str()})")
        raise DeliveryError(f"topic {topic} is not available to {kafka.principal}: {found.error.str()}")


def require_broker(kafka: KafkaSettings, timeout: float | None = None) -> None:
    """Raise ``BrokerUnavailable`` (or the ``DeliveryError`` of a refused handshake) unless the cluster
    answers a metadata request within ``timeout`` seconds (default ``KafkaSettings.connect_timeout_s``),
    so a command started against an unreachable cluster fails with one clear line instead of waiting."""
    limit = kafka.connect_timeout_s if timeout is None else timeout
    admin, errors = _admin(kafka)
    deadline = time.monotonic() + limit
    while True:
        try:
            admin.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic())))
            return
        except KafkaException as exc:
            admin.poll(0.1)  # serve the error callbacks: they say why
            refused = [e for e in errors if _REFUSED.search(e)]
            if refused:
                raise connection_refused(kafka, refused[0]) from exc
            if time.monotonic() >= deadline:
                reason = (errors or [str(exc.args[0] if exc.args else exc)])[-1]
                raise BrokerUnavailable(
                    f"could not reach Kafka at {kafka.bootstrap_servers} within {limit:g} s ({reason}); "
                    "expected a running cluster: check it (`ketenstroom infra status`) and "
                    "KETENSTROOM_KAFKA_BOOTSTRAP_SERVERS (the wait is KETENSTROOM_KAFKA_CONNECT_TIMEOUT_S)"
                ) from exc
