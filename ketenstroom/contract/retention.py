"""Retention is a decision: every topic kind's configuration, declared here, not left to the broker.

A broker's default (``log.retention.hours=168``) silently deletes a dead letter whose code takes two
weeks to add to the terminology table, and curated events a sink that was down for a week never
sealed. So every topic ``ketenstroom topics`` creates gets its kind's configuration:

==================  ===========================================================================
raw.<partner>       the partner's ``[topics] retention_days`` (personal data: long enough to
                    reprocess, no longer; the legal basis is in the catalogue)
dlq.<partner>       ``retention.ms=-1``: kept until resolved (``KETENSTROOM_TOPIC_DLQ_RETENTION_DAYS``
                    for a bound instead; then the monitoring alert must fire before it expires)
curated             ``KETENSTROOM_TOPIC_CURATED_RETENTION_DAYS`` (default 400): long enough to
                    rebuild any period not yet sealed, a year's included
state topics        ``cleanup.policy=compact``: dead-letter status and the processor's dedup
                    changelogs keep each key's latest record, whatever its age
==================  ===========================================================================

and, on a cluster, ``min.insync.replicas`` (``KETENSTROOM_TOPIC_MIN_INSYNC_REPLICAS``; 2 with
replication factor 3, ``KETENSTROOM_TOPIC_REPLICATION_FACTOR``) with unclean leader election off, so an
``acks=all`` write survives the loss of any one node. ``drift`` compares a live topic's configuration and
replica count with its declaration.
Pure: the adapter reads the broker.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

DAY_MS = 86_400_000
KEEP_FOREVER = "-1"


def days_ms(days: float) -> str:
    return str(round(days * DAY_MS))


@dataclass(frozen=True)
class TopicSpec:
    """One topic as declared: its kind (for people), partitions and the configuration it must have."""

    name: str
    kind: str
    partitions: int
    config: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RetentionPolicy:
    """The settings that decide retention beyond what each partner's catalogue entry declares."""

    curated_retention_days: float = 400.0
    #: None: kept until resolved (``retention.ms=-1``)
    dlq_retention_days: float | None = None
    #: None: the broker's setting (a single-node stack has one replica)
    min_insync_replicas: int | None = None

    def _common(self) -> dict[str, str]:
        if self.min_insync_replicas is None:
            return {}
        # a replica that missed acknowledged writes must never become leader (Jepsen 2013's loss)
        return {
            "min.insync.replicas": str(self.min_insync_replicas),
            "unclean.leader.election.enable": "false",
        }

    def raw(self, retention_days: float) -> dict[str, str]:
        return {"cleanup.policy": "delete", "retention.ms": days_ms(retention_days), **self._common()}

    def dlq(self) -> dict[str, str]:
        days = self.dlq_retention_days
        retention = KEEP_FOREVER if days is None else days_ms(days)
        return {"cleanup.policy": "delete", "retention.ms": retention, **self._common()}

    def curated(self) -> dict[str, str]:
        return {
            "cleanup.policy": "delete",
            "retention.ms": days_ms(self.curated_retention_days),
            **self._common(),
        }

    def state(self) -> dict[str, str]:
        """Compacted state: a changelog or a status topic keeps every key's latest record."""
        return {"cleanup.policy": "compact", **self._common()}


@dataclass(frozen=True)
class Drift:
    topic: str
    key: str
    wanted: str | None
    actual: str | None

    def __str__(self) -> str:
        if self.key == "":
            return f"{self.topic}: missing (create it with `ketenstroom topics`)"
        return f"{self.topic}: {self.key}={self.actual} but declared {self.wanted}"


def drift(
    specs: Iterable[TopicSpec],
    actual: Mapping[str, Mapping[str, str] | None],
    *,
    replicas: Mapping[str, int] | None = None,
    replication_factor: int | None = None,
) -> list[Drift]:
    """Every difference between the declared topics and the live ones (``None``: topic absent).

    With ``replication_factor``, ``replicas`` (the fewest replicas of any partition of each topic) must
    reach it: a topic created with one replica on a cluster is lost with its node, whatever its config.
    """
    found: list[Drift] = []
    for spec in specs:
        live = actual.get(spec.name)
        if live is None:
            found.append(Drift(spec.name, "", None, None))
            continue
        for key, wanted in sorted(spec.config.items()):
            if live.get(key) != wanted:
                found.append(Drift(spec.name, key, wanted, live.get(key)))
        have = (replicas or {}).get(spec.name)
        if replication_factor is not None and have is not None and have < replication_factor:
            found.append(Drift(spec.name, "replicas", str(replication_factor), str(have)))
    return found
