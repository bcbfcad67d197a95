"""The sink's settings and their defaults, in one place (prefix ``KETENSTROOM_SINK_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SinkSettings(BaseSettings):
    """How ``ketenstroom sink`` consumes and stages; the command line's options override these."""

    model_config = SettingsConfigDict(env_prefix="KETENSTROOM_SINK_", frozen=True, extra="forbid")

    group_id: str = "ketenstroom-sink"
    #: stable per running instance: the static group member ``<group_id>.<instance_id>`` takes its
    #: partitions back at once after a restart; give each concurrent instance its own
    instance_id: str = "0"
    batch_size: int = Field(default=5000, ge=1)
    #: rows buffered before a staged file is written (bounds memory)
    max_buffered: int = Field(default=50_000, ge=1)
    #: at most this long between staged files while records keep coming
    flush_interval_s: float = Field(default=30.0, gt=0)
    #: serve ``/metrics`` and ``/health`` on this port (0: off)
    metrics_port: int = Field(default=0, ge=0, le=65535)
    #: the address ``/metrics`` and ``/health`` bind to: loopback unless a scraper elsewhere needs it
    metrics_host: str = "127.0.0.1"
