"""Topic names and the partners that own raw topics (see ARCHITECTURE.md, "Topics and keys").

A ``Topics`` namespace prefixes every name (``KETENSTROOM_TOPIC_PREFIX``), so environments and
tests can share one cluster without sharing topics: ``acc.raw.om``, ``t3f9.curated.chain-events``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ketenstroom.errors import ConfigurationError

PARTNERS: tuple[str, ...] = ("politie", "om", "rechtspraak", "cjib", "dji", "reclassering", "halt")
CURATED_TOPIC = "curated.chain-events"


def _check(partner: str) -> str:
    if partner not in PARTNERS:
        raise ConfigurationError(f"unknown partner {partner!r}; known partners: {', '.join(PARTNERS)}")
    return partner


@dataclass(frozen=True)
class Topics:
    prefix: str = ""

    def raw(self, partner: str) -> str:
        """``raw.<partner>``: the partner's own events, personal data, short retention."""
        return f"{self.prefix}raw.{_check(partner)}"

    def dlq(self, partner: str) -> str:
        """``dlq.<partner>``: what the processor could not process, with reason and original bytes."""
        return f"{self.prefix}dlq.{_check(partner)}"

    def dlq_status(self, partner: str) -> str:
        """``dlq.<partner>.status``: compacted, per dead-lettered event its latest state (written by the
        processor in the transaction that dead-letters or resolves it, and by ``dlq replay``)."""
        return f"{self.dlq(partner)}.status"

    @property
    def curated(self) -> str:
        return f"{self.prefix}{CURATED_TOPIC}"

    def partner_of(self, topic: str) -> str:
        """The partner of a raw or DLQ topic name."""
        return topic.removeprefix(self.prefix).split(".", 1)[1]

    def all(self, partners: tuple[str, ...] | list[str] = PARTNERS) -> list[str]:
        return [self.raw(p) for p in partners] + [self.dlq(p) for p in partners] + [self.curated]


def raw_topic(partner: str) -> str:
    return Topics().raw(partner)


def dlq_topic(partner: str) -> str:
    return Topics().dlq(partner)
