"""Topic names and the partners that own raw topics (see ARCHITECTURE.md, "Topics and keys")."""

from __future__ import annotations

from ketenstroom.errors import ConfigurationError

PARTNERS: tuple[str, ...] = ("politie", "om", "rechtspraak", "cjib", "dji", "reclassering", "halt")
CURATED_TOPIC = "curated.chain-events"


def _check(partner: str) -> str:
    if partner not in PARTNERS:
        raise ConfigurationError(f"unknown partner {partner!r}; known partners: {', '.join(PARTNERS)}")
    return partner


def raw_topic(partner: str) -> str:
    """``raw.<partner>``: the partner's own events, personal data, short retention."""
    return f"raw.{_check(partner)}"


def dlq_topic(partner: str) -> str:
    """``dlq.<partner>``: what the processor could not process, with reason and original bytes."""
    return f"dlq.{_check(partner)}"
