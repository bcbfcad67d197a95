"""The processor's settings and their defaults, in one place (prefix ``KETENSTROOM_PROCESSOR_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ProcessorSettings(BaseSettings):
    """How ``ketenstroom process`` runs; the command line's options override these."""

    model_config = SettingsConfigDict(env_prefix="KETENSTROOM_PROCESSOR_", frozen=True, extra="forbid")

    #: consumer group, transactional id prefix and dedup changelog namespace
    app_id: str = "ketenstroom-processor"
    #: stable per running instance: the transactional id ``<app_id>-<instance_id>`` fences its
    #: predecessor, and the static group member ``<app_id>.<instance_id>`` takes its partitions back
    instance_id: str = "0"
    batch_size: int = Field(default=2000, ge=1)
    #: the broker aborts a transaction left open this long (a crashed instance's, say)
    transaction_timeout_ms: int = Field(default=30_000, ge=1000)
    metrics_port: int = Field(default=0, ge=0, le=65535)
    #: the address ``/metrics`` and ``/health`` bind to: loopback unless a scraper elsewhere needs it
    metrics_host: str = "127.0.0.1"
