"""A delivery's receipt as an event on ``ops.deliveries``: what operators and ``ketenstroom status`` read.

Written by ``ketenstroom publish`` after the broker has acknowledged (or refused) the rows. It holds
counts, digests, schema ids and times only: no rows, no values, no file paths (a path can name a
person); a file is known by its SHA-256 and size. Keyed by partner, so one partner's deliveries stay
in order on one partition; the topic keeps them for a long time (``DELIVERIES_RETENTION_DAYS``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

DELIVERIES_RETENTION_DAYS = 400  # a year of history, and the same month last year

Outcome = Literal["delivered", "some-rejected", "not-delivered"]


class FileDigest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    sha256: str
    bytes: int


class DeliveryEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    partner: str
    delivery_id: str
    started: datetime
    finished: datetime
    files: list[FileDigest]
    rows_read: int
    published: int
    #: rejected rows by reason (``duplicate-in-file`` included)
    rejected: dict[str, int]
    not_delivered: int
    delivery_errors: dict[str, int]
    #: registry subject -> schema id of each record type registered for this delivery
    schema_ids: dict[str, int]
    outcome: Outcome
    reconciles: bool

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, value: bytes) -> DeliveryEvent:
        return cls.model_validate_json(value)
