"""Topic names (see ARCHITECTURE.md, "Topics and keys"); which partners exist is the catalogue's word.

A ``Topics`` namespace prefixes every name (``KETENSTROOM_TOPIC_PREFIX``), so environments and
tests can share one cluster without sharing topics: ``acc.raw.om``, ``t3f9.curated.chain-events``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ketenstroom.errors import ConfigurationError

CURATED_TOPIC = "curated.chain-events"
DELIVERIES_TOPIC = "ops.deliveries"
_PARTNER = re.compile(r"^[a-z][a-z0-9-]{1,30}$")


def _check(partner: str) -> str:
    if not _PARTNER.match(partner):
        raise ConfigurationError(
            f"{partner!r} is not a partner name (lower case a-z, 0-9 and -, as in partners/<partner>/)"
        )
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

    @property
    def deliveries(self) -> str:
        """``ops.deliveries``: each delivery's receipt as an event (``ketenstroom.contract.deliveries``)."""
        return f"{self.prefix}{DELIVERIES_TOPIC}"

    def partner_of(self, topic: str) -> str:
        """The partner of a raw or DLQ topic name."""
        return topic.removeprefix(self.prefix).split(".", 1)[1]

    def all(self, partners: Iterable[str]) -> list[str]:
        """The data topics of ``partners``: raw, DLQ, curated and the delivery receipts."""
        partners = list(partners)
        return [
            *(self.raw(p) for p in partners),
            *(self.dlq(p) for p in partners),
            self.curated,
            self.deliveries,
        ]
