"""Kafka ACLs from :mod:`ketenstroom.access` grants: read what exists, create only what is missing.

``apply`` is idempotent: it lists the cluster's ACLs (``describe_acls``), creates the grants that are
not there (``create_acls``) and reports the rest as present. It never deletes: an ACL the plan does
not know (granted by hand) is reported as *extra* so a person decides.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

# confluent-kafka re-exports these from confluent_kafka.admin without declaring them (no __all__), so
# mypy --strict wants them from where they are defined
from confluent_kafka.admin._acl import AclBinding, AclBindingFilter, AclOperation, AclPermissionType
from confluent_kafka.admin._resource import ResourcePatternType, ResourceType

from ketenstroom.access import Grant
from ketenstroom.errors import ConfigurationError, DeliveryError
from ketenstroom.settings import KafkaSettings

_RESOURCE = {
    "topic": ResourceType.TOPIC,
    "group": ResourceType.GROUP,
    "transactional-id": ResourceType.TRANSACTIONAL_ID,
    "cluster": ResourceType.BROKER,  # confluent-kafka names the cluster resource BROKER
}
_RESOURCE_NAME = {v: k for k, v in _RESOURCE.items()}
_PATTERN = {"literal": ResourcePatternType.LITERAL, "prefixed": ResourcePatternType.PREFIXED}
_PATTERN_NAME = {v: k for k, v in _PATTERN.items()}


def binding(grant: Grant) -> AclBinding:
    return AclBinding(
        _RESOURCE[grant.resource],
        grant.name,
        _PATTERN[grant.pattern],
        f"User:{grant.principal}",
        "*",
        AclOperation[grant.operation],
        AclPermissionType.ALLOW,
    )


def _grant_of(acl: AclBinding) -> Grant | None:
    restype, pattern_type, operation = acl.restype, acl.resource_pattern_type, acl.operation
    if not (
        isinstance(restype, ResourceType)
        and isinstance(pattern_type, ResourcePatternType)
        and isinstance(operation, AclOperation)
    ):
        return None
    resource = _RESOURCE_NAME.get(restype)
    pattern = _PATTERN_NAME.get(pattern_type)
    if (
        resource is None
        or pattern is None
        or acl.permission_type != AclPermissionType.ALLOW
        or acl.host != "*"
        or not acl.principal.startswith("User:")
    ):
        return None
    return Grant(acl.principal.removeprefix("User:"), resource, acl.name, pattern, operation.name)  # type: ignore[arg-type]


@dataclass
class AclReport:
    created: list[Grant] = field(default_factory=list)
    present: list[Grant] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)  # ACLs on the cluster the plan does not contain
    authorizer: bool = True  # False: the cluster has none (a plain development cluster); nothing done


def _admin(kafka: KafkaSettings) -> AdminClient:
    return AdminClient(kafka.librdkafka())


def existing(kafka: KafkaSettings, timeout: float = 15.0) -> list[AclBinding] | None:
    """Every ACL of the cluster (needs Describe on the cluster: the admin principal); None if the
    cluster has no authorizer."""
    match_all = AclBindingFilter(
        ResourceType.ANY,
        None,  # type: ignore[arg-type]  # None matches any name, principal and host (the docs say so)
        ResourcePatternType.ANY,
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    admin = _admin(kafka)  # held until the result is in: a collected client cancels its requests
    try:
        found: list[AclBinding] = admin.describe_acls(match_all, request_timeout=timeout).result()
    except KafkaException as exc:
        if _security_disabled(exc):
            return None
        raise _refused(kafka, "list the cluster's ACLs", exc) from exc
    return found


def _security_disabled(exc: KafkaException) -> bool:
    err = exc.args[0] if exc.args else None
    if isinstance(err, KafkaError):
        return err.code() == KafkaError.SECURITY_DISABLED or "No Authorizer" in err.str()
    return "SECURITY_DISABLED" in str(exc).upper()


def _refused(kafka: KafkaSettings, what: str, exc: KafkaException) -> Exception:
    err = exc.args[0] if exc.args else exc
    text = err.str() if hasattr(err, "str") else str(err)
    name = err.name() if hasattr(err, "name") else text
    if "AUTHORIZATION" in name.upper() or "not authorized" in text.lower():
        text = name
        return ConfigurationError(
            f"principal {kafka.principal} may not {what} ({text}); run `ketenstroom access` as admin "
            "(KETENSTROOM_KAFKA_SASL_USERNAME=admin and its password file)"
        )
    return DeliveryError(f"could not {what} on {kafka.bootstrap_servers}: {text}")


def apply(kafka: KafkaSettings, grants: Iterable[Grant], timeout: float = 15.0) -> AclReport:
    """Create the grants the cluster lacks; report what was created, already present, and extra."""
    wanted = sorted(set(grants))
    have: set[Grant] = set()
    report = AclReport()
    found = existing(kafka, timeout)
    if found is None:
        report.authorizer = False
        return report
    for acl in found:
        grant = _grant_of(acl)
        if grant is None:
            report.extra.append(str(acl))
        else:
            have.add(grant)
    report.extra += [str(g) for g in sorted(have - set(wanted))]
    missing = [g for g in wanted if g not in have]
    report.present = [g for g in wanted if g in have]
    if missing:
        bindings = {binding(g): g for g in missing}
        admin = _admin(kafka)
        futures = admin.create_acls(list(bindings), request_timeout=timeout)
        for acl, future in futures.items():
            grant = bindings[acl]
            try:
                future.result()
            except KafkaException as exc:
                if _security_disabled(exc):  # a plain cluster: lists no ACLs, refuses to create any
                    report.authorizer = False
                    return report
                raise _refused(kafka, f"create ACL '{grant}'", exc) from exc
            report.created.append(grant)
    return report
