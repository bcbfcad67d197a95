"""Who may do what on Kafka, derived from the chain catalogue: one principal per partner, one per component.

The plan is data (:class:`Grant` rows), so ``ketenstroom access apply --dry-run`` and ``access show``
print exactly what ``apply`` would create (``ketenstroom.adapters.acls`` turns grants into Kafka ACLs).
Nothing is granted to ``*``: with ``allow.everyone.if.no.acl.found=false`` a principal that is not
named here may do nothing but what the super users (``admin``, ``broker``) may.

* partner ``p``: write ``raw.p`` and its delivery receipts to ``ops.deliveries``; read ``dlq.p`` with
  consumer groups ``partner.p.*``; nothing else;
* ``processor``: read every ``raw.*``; write ``curated.chain-events`` and every ``dlq.*`` (and create
  the dead-letter status topics ``dlq.<p>.status``); its own
  topics ``<app>*`` (dedup changelogs); groups ``<app>*``; transactional ids ``<app>-*``;
* ``sink`` and ``release``: read ``curated.chain-events`` with their own groups;
* ``monitor``: describe topics, groups and the cluster (offsets and lag); the delivery monitor reads
  ``ops.deliveries``, ``curated.chain-events`` and every ``dlq.*`` with its own group ``<app>*`` and
  keeps its tables in its own changelogs ``<prefix><app>*`` (create, read, write); it writes nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from ketenstroom.catalogue import Catalogue
from ketenstroom.contract.topics import Topics
from ketenstroom.settings import MonitorSettings, ProcessorSettings, SinkSettings

#: The only super users of the secured cluster; everybody else gets exactly the grants below.
SUPER_USERS: tuple[str, ...] = ("admin", "broker")
#: Component principals (a partner may not take one of these names).
COMPONENTS: tuple[str, ...] = ("processor", "sink", "monitor", "release")

# the components' own defaults (one home: their settings classes)
PROCESSOR_APP_ID: str = ProcessorSettings.model_fields["app_id"].default
SINK_GROUP: str = SinkSettings.model_fields["group_id"].default
RELEASE_GROUP = "ketenstroom-release"
MONITOR_APP_ID: str = MonitorSettings.model_fields["app_id"].default

Resource = Literal["topic", "group", "transactional-id", "cluster"]
Pattern = Literal["literal", "prefixed"]
Operation = Literal["READ", "WRITE", "CREATE", "DESCRIBE", "DESCRIBE_CONFIGS"]


def partner_group_prefix(partner: str) -> str:
    """Consumer groups a partner may use to read its own DLQ: ``partner.<p>.``."""
    return f"partner.{partner}."


@dataclass(frozen=True, order=True)
class Grant:
    """One allowed operation of one principal on one resource (a Kafka ALLOW ACL, host ``*``)."""

    principal: str
    resource: Resource
    name: str
    pattern: Pattern
    operation: Operation

    def __str__(self) -> str:
        what = f"{self.name}*" if self.pattern == "prefixed" else self.name
        return f"User:{self.principal} may {self.operation} {self.resource} {what}"


def _grants(principal: str, resource: Resource, name: str, pattern: Pattern, *ops: Operation) -> list[Grant]:
    return [Grant(principal, resource, name, pattern, op) for op in ops]


def partner_grants(partner: str, topics: Topics) -> list[Grant]:
    """Exactly what partner ``partner`` may do: deliver to its raw topic (and the delivery's receipt to
    ``ops.deliveries``), read back its own DLQ."""
    return [
        *_grants(partner, "topic", topics.raw(partner), "literal", "WRITE", "DESCRIBE"),
        *_grants(partner, "topic", topics.deliveries, "literal", "WRITE", "DESCRIBE"),
        *_grants(partner, "topic", topics.dlq(partner), "literal", "READ", "DESCRIBE"),
        *_grants(partner, "group", partner_group_prefix(partner), "prefixed", "READ", "DESCRIBE"),
    ]


def component_grants(
    topics: Topics, *, processor_app_id: str = PROCESSOR_APP_ID, monitor_app_id: str = MONITOR_APP_ID
) -> list[Grant]:
    """The processor, sink, release and monitor principals' grants (independent of the partners)."""
    raw_prefix, dlq_prefix = f"{topics.prefix}raw.", f"{topics.prefix}dlq."
    monitor_state = f"{topics.prefix}{monitor_app_id}"  # faust: app id = group = changelog prefix
    return [
        *_grants("processor", "topic", raw_prefix, "prefixed", "READ", "DESCRIBE"),
        # CREATE: the processor creates each partner's compacted dlq.<p>.status beside dlq.<p>
        *_grants("processor", "topic", dlq_prefix, "prefixed", "WRITE", "DESCRIBE", "CREATE"),
        *_grants("processor", "topic", topics.curated, "literal", "WRITE", "DESCRIBE"),
        *_grants(
            "processor",
            "topic",
            processor_app_id,  # its dedup changelogs <app>.dedup.*
            "prefixed",
            "CREATE",
            "READ",
            "WRITE",
            "DESCRIBE",
        ),
        *_grants("processor", "group", processor_app_id, "prefixed", "READ", "DESCRIBE"),
        *_grants("processor", "transactional-id", f"{processor_app_id}-", "prefixed", "WRITE", "DESCRIBE"),
        *_grants("sink", "topic", topics.curated, "literal", "READ", "DESCRIBE"),
        *_grants("sink", "group", SINK_GROUP, "prefixed", "READ", "DESCRIBE"),
        *_grants("release", "topic", topics.curated, "literal", "READ", "DESCRIBE"),
        *_grants("release", "group", RELEASE_GROUP, "prefixed", "READ", "DESCRIBE"),
        *_grants("monitor", "topic", "*", "literal", "DESCRIBE", "DESCRIBE_CONFIGS"),
        *_grants("monitor", "group", "*", "literal", "DESCRIBE"),
        *_grants("monitor", "cluster", "kafka-cluster", "literal", "DESCRIBE"),
        *_grants("monitor", "topic", topics.deliveries, "literal", "READ"),
        *_grants("monitor", "topic", topics.curated, "literal", "READ"),
        *_grants("monitor", "topic", dlq_prefix, "prefixed", "READ"),
        *_grants("monitor", "topic", monitor_state, "prefixed", "CREATE", "READ", "WRITE", "DESCRIBE"),
        *_grants("monitor", "group", monitor_state, "prefixed", "READ", "DESCRIBE"),
    ]


def plan(catalogue: Catalogue, topics: Topics, partners: Iterable[str] | None = None) -> list[Grant]:
    """Every grant of the secured cluster, sorted: the components', then each catalogue partner's."""
    names = list(catalogue.names if partners is None else partners)
    for name in names:
        catalogue.partner(name)  # an unknown partner is refused, naming the known ones
    clash = sorted(set(names) & {*SUPER_USERS, *COMPONENTS})
    if clash:
        from ketenstroom.errors import ConfigurationError

        raise ConfigurationError(
            f"partner name(s) {', '.join(clash)} would share a principal with a component or super user; "
            "rename the partner in partners/<partner>/partner.toml"
        )
    out = component_grants(topics)
    for name in names:
        out += partner_grants(name, topics)
    return sorted(set(out))


def principals(catalogue: Catalogue) -> list[str]:
    """Every principal of the secured cluster: super users, components, one per partner."""
    return [*SUPER_USERS, *COMPONENTS, *catalogue.names]
