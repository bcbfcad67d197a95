"""Typed settings, read once at start-up from the environment (prefix ``KETENSTROOM_``).

Each component takes the settings object it needs; nothing reads ``os.environ`` at import time
or in default arguments. Secrets are ``SecretStr`` so they never appear in a repr or a log line.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ketenstroom.errors import ConfigurationError

if TYPE_CHECKING:
    from ketenstroom.contract.retention import RetentionPolicy

REPO_ROOT = Path(__file__).resolve().parent.parent


class ClientLog:
    """librdkafka's own log lines, through Python logging (logger ``ketenstroom.kafka.client``).

    confluent-kafka calls ``log(level, "%s [%s] %s", facility, client, text)`` with librdkafka's syslog
    level already turned into a Python one. Without it they go raw to stderr (``%4|…|GETPID|…``).
    What librdkafka recovers from by itself (a retry while a transaction coordinator is still loading,
    purged background events at close) and its notices are DEBUG: not a problem unless it lasts, and
    then the caller's own timeout says so. Other warnings and errors keep their level.
    """

    RECOVERS = frozenset({"GETPID", "BGQUEUE"})

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def log(self, level: int, msg: str, *args: Any) -> None:
        facility, text = (str(args[0]), str(args[-1])) if args else ("", "")
        if level < logging.WARNING or facility in self.RECOVERS or text.endswith("retrying"):
            level = logging.DEBUG
        self.logger.log(level, msg, *args)


CLIENT_LOG = ClientLog(logging.getLogger("ketenstroom.kafka.client"))


def _config(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=prefix, frozen=True, extra="forbid")


class KafkaSettings(BaseSettings):
    """Where the Kafka cluster is, and how to talk to it."""

    model_config = _config("KETENSTROOM_KAFKA_")

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    #: A file holding only the SASL password (mode 0600); preferred over ``sasl_password``.
    sasl_password_file: Path | None = None
    #: PEM file of the CA that signed the brokers' certificates (``ssl.ca.location``).
    ssl_ca_location: Path | None = None
    #: Extra librdkafka properties in dotted form, e.g. ``{"socket.timeout.ms": "5000"}``.
    extra: dict[str, str] = Field(default_factory=dict)
    #: how long a command waits at start for the cluster to answer before it fails with a clear error
    connect_timeout_s: float = Field(default=30.0, gt=0)

    def librdkafka(self, **overrides: Any) -> dict[str, Any]:
        """The one converter from these settings to librdkafka's dotted keys."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            "logger": CLIENT_LOG,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        elif self.sasl_password_file is not None:
            conf["sasl.password"] = read_secret_file(self.sasl_password_file, "Kafka SASL password")
        if self.ssl_ca_location is not None:
            if not self.ssl_ca_location.is_file():
                raise ConfigurationError(
                    f"KETENSTROOM_KAFKA_SSL_CA_LOCATION={self.ssl_ca_location} is not a file; expected the "
                    "PEM certificate of the CA that signed the brokers' certificates"
                )
            conf["ssl.ca.location"] = str(self.ssl_ca_location)
        conf.update(self.extra)
        conf.update({k.replace("_", "."): v for k, v in overrides.items()})
        return conf

    @property
    def principal(self) -> str:
        """Who this client is to the brokers: ``User:<name>`` (``ANONYMOUS`` without SASL)."""
        return f"User:{self.sasl_username}" if self.sasl_username else "User:ANONYMOUS"


def read_secret_file(path: Path, what: str) -> str:
    """A secret kept in a file: refused if group or others may read it (it would not stay secret)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the {what} file {path}: {exc.strerror}") from exc
    if mode & 0o077:
        raise ConfigurationError(
            f"the {what} file {path} is readable by group or others (mode {mode & 0o777:o}); "
            f"expected 600: `chmod 600 {path}`"
        )
    if not text:
        raise ConfigurationError(f"the {what} file {path} is empty")
    return text


class TopicSettings(BaseSettings):
    """Topic namespace: ``KETENSTROOM_TOPIC_PREFIX=acc.`` gives ``acc.raw.om`` and so on."""

    model_config = _config("KETENSTROOM_TOPIC_")

    prefix: str = ""
    #: curated.chain-events: long enough to rebuild any period not yet sealed (see contract/retention.py)
    curated_retention_days: float = Field(default=400.0, gt=0)
    #: dlq.<partner>: unset keeps dead letters until resolved (retention.ms=-1)
    dlq_retention_days: float | None = Field(default=None, gt=0)
    #: on a cluster, e.g. 2 with replication factor 3; unset: the broker's setting
    min_insync_replicas: int | None = Field(default=None, ge=1)
    #: replicas of every topic ketenstroom creates (3 on the 3-node cluster); unset: the broker's
    #: ``default.replication.factor``. ``topics --check`` reports a partition with fewer.
    replication_factor: int | None = Field(default=None, ge=1)

    def retention(self) -> RetentionPolicy:
        from ketenstroom.contract.retention import RetentionPolicy  # contract imports settings

        return RetentionPolicy(
            curated_retention_days=self.curated_retention_days,
            dlq_retention_days=self.dlq_retention_days,
            min_insync_replicas=self.min_insync_replicas,
        )


class RegistrySettings(BaseSettings):
    """A Confluent-compatible schema registry (Apicurio's ccompat API locally)."""

    model_config = _config("KETENSTROOM_REGISTRY_")

    url: str = "http://127.0.0.1:8080/apis/ccompat/v7"
    timeout_s: float = 30.0
    basic_auth_user_info: SecretStr | None = None
    #: HTTP Basic user; its password from ``password_file`` (0600), the secured registry's way.
    username: str | None = None
    password_file: Path | None = None

    def client_conf(self) -> dict[str, Any]:
        # a bounded wait: a registry that accepts the connection but never answers must fail, not hang
        conf: dict[str, Any] = {"url": self.url, "timeout": self.timeout_s}
        if self.basic_auth_user_info is not None:
            conf["basic.auth.user.info"] = self.basic_auth_user_info.get_secret_value()
        elif self.username and self.password_file is not None:
            password = read_secret_file(self.password_file, "schema registry password")
            conf["basic.auth.user.info"] = f"{self.username}:{password}"
        return conf


class S3Settings(BaseSettings):
    """Credentials and endpoint for ``s3://`` storage URLs (s3proxy locally, any S3 API elsewhere)."""

    model_config = _config("KETENSTROOM_S3_")

    endpoint: str | None = None
    bucket: str = "ketenstroom"
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    #: obstore's own retries of one request before it reports the store unavailable (transient)
    max_retries: int = Field(default=5, ge=0)
    retry_timeout_s: float = Field(default=30.0, gt=0)


class StorageSettings(BaseSettings):
    """Where snapshots are written: ``file://DIR`` (default) or ``s3://BUCKET/PREFIX``."""

    model_config = _config("KETENSTROOM_STORAGE_")

    url: str = "file://var/snapshots"

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(("file://", "s3://")):
            raise ValueError(
                f"storage url {value!r} is not supported: use file://DIRECTORY or s3://BUCKET/PREFIX"
            )
        return value


class SnapshotSettings(BaseSettings):
    """When the sink seals a period: after its end plus ``grace_days``; final after ``final_after_days``."""

    model_config = _config("KETENSTROOM_SNAPSHOT_")

    period: Literal["month", "quarter", "year"] = "month"
    grace_days: float = Field(14.0, ge=0)
    final_after_days: float = Field(365.0, ge=0)

    @model_validator(mode="after")
    def _final_after_grace(self) -> SnapshotSettings:
        if self.final_after_days < self.grace_days:
            raise ValueError(
                f"final_after_days ({self.final_after_days}) must not be shorter than grace_days "
                f"({self.grace_days}): a period is sealed before it can become final"
            )
        return self


class PseudonymSettings(BaseSettings):
    """The pseudonymisation key. Exactly one of ``key`` and ``key_file``; never logged."""

    model_config = _config("KETENSTROOM_PSEUDONYM_")

    key: SecretStr | None = None
    key_file: Path | None = None
    key_id: str = "k1"

    def secret(self) -> bytes:
        """Return the key bytes, or raise a ConfigurationError that says how to provide one."""
        if self.key is not None and self.key_file is not None:
            raise ConfigurationError(
                "both KETENSTROOM_PSEUDONYM_KEY and KETENSTROOM_PSEUDONYM_KEY_FILE are set; set only one"
            )
        if self.key_file is not None:
            try:
                mode = self.key_file.stat().st_mode
                raw = self.key_file.read_bytes().strip()
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot read pseudonymisation key file {self.key_file}: {exc.strerror}"
                ) from exc
            if mode & 0o077:  # a key others may read is no longer a secret: refuse to start
                raise ConfigurationError(
                    f"pseudonymisation key file {self.key_file} (key id {self.key_id!r}) is readable by "
                    f"group or others (mode {mode & 0o777:o}); expected 600: `chmod 600 {self.key_file}`"
                )
        elif self.key is not None:
            raw = self.key.get_secret_value().encode()
        else:
            raise ConfigurationError(
                "no pseudonymisation key: set KETENSTROOM_PSEUDONYM_KEY_FILE to a file holding a secret of "
                "at least 32 bytes (or KETENSTROOM_PSEUDONYM_KEY), and KETENSTROOM_PSEUDONYM_KEY_ID to its id"
            )
        if len(raw) < 32:
            raise ConfigurationError(
                f"pseudonymisation key {self.key_id!r} is {len(raw)} bytes; at least 32 are required "
                "(e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)"
            )
        return raw


def _read_secret(key: SecretStr | None, key_file: Path | None, key_id: str, env: str, what: str) -> bytes:
    """The secret's bytes from exactly one of ``key`` / ``key_file`` (at least 32 bytes), or a clear error."""
    if key is not None and key_file is not None:
        raise ConfigurationError(f"both {env} and {env}_FILE are set; set only one")
    if key_file is not None:
        try:
            raw = key_file.read_bytes().strip()
        except OSError as exc:
            raise ConfigurationError(f"cannot read {what} file {key_file}: {exc.strerror}") from exc
    elif key is not None:
        raw = key.get_secret_value().encode()
    else:
        raise ConfigurationError(
            f"no {what}: set {env}_FILE to a file holding a secret of at least 32 bytes (or {env}), "
            f"and {env}_ID to its id"
        )
    if len(raw) < 32:
        raise ConfigurationError(
            f"{what} {key_id!r} is {len(raw)} bytes; at least 32 are required "
            "(e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)"
        )
    return raw


class ExtractSettings(BaseSettings):
    """Research extracts: the secret extract key (study keys are derived from it) and the register.

    The extract key must differ from the pseudonymisation key: it is what makes one study's
    pseudonyms unlinkable to another's and to the platform's. Never logged.
    """

    model_config = _config("KETENSTROOM_EXTRACT_")

    key: SecretStr | None = None
    key_file: Path | None = None
    key_id: str = "x1"
    #: Where the append-only extract register lives (default: the snapshot storage URL).
    register_url: str | None = None

    def secret(self) -> bytes:
        return _read_secret(self.key, self.key_file, self.key_id, "KETENSTROOM_EXTRACT_KEY", "extract key")


class CatalogueSettings(BaseSettings):
    """Where the chain catalogue lives: ``schemas/``, ``partners/``, ``terminology/``, ``publication/``.

    ``KETENSTROOM_CATALOGUE_DIR`` (default: this repository) lets a deployment keep its catalogue in a
    repository of its own; every component reads partners, schemas and code lists from there.
    """

    model_config = _config("KETENSTROOM_CATALOGUE_")

    dir: Path = REPO_ROOT

    @property
    def schema_dir(self) -> Path:
        return self.dir / "schemas"

    @property
    def terminology_dir(self) -> Path:
        return self.dir / "terminology"

    @property
    def partner_dir(self) -> Path:
        return self.dir / "partners"

    @property
    def publication_dir(self) -> Path:
        return self.dir / "publication"


class CellKeySettings(BaseSettings):
    """The cell-key secret that fixes the random rounding of released tables (``releases``).

    Exactly one of ``key`` and ``key_file``; never logged, never written into a release. Keep it apart
    from the pseudonymisation key: anyone holding it can predict how a published count was rounded.
    """

    model_config = _config("KETENSTROOM_CELLKEY_")

    key: SecretStr | None = None
    key_file: Path | None = None

    def secret(self) -> bytes:
        if self.key is not None and self.key_file is not None:
            raise ConfigurationError(
                "both KETENSTROOM_CELLKEY_KEY and KETENSTROOM_CELLKEY_KEY_FILE are set; set only one"
            )
        if self.key_file is not None:
            try:
                raw = self.key_file.read_bytes().strip()
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot read cell-key file {self.key_file}: {exc.strerror}"
                ) from exc
        elif self.key is not None:
            raw = self.key.get_secret_value().encode()
        else:
            raise ConfigurationError(
                "no cell-key secret: set KETENSTROOM_CELLKEY_KEY_FILE to a file holding a secret of at least "
                "32 bytes (or KETENSTROOM_CELLKEY_KEY)"
            )
        if len(raw) < 32:
            raise ConfigurationError(f"the cell-key secret is {len(raw)} bytes; at least 32 are required")
        return raw


class ProcessorSettings(BaseSettings):
    """How ``ketenstroom process`` runs; the command line's options override these."""

    model_config = _config("KETENSTROOM_PROCESSOR_")

    #: consumer group, transactional id prefix and dedup changelog namespace
    app_id: str = "ketenstroom-processor"
    #: stable per running instance: the transactional id ``<app_id>-<instance_id>`` fences its
    #: predecessor, and the static group member ``<app_id>.<instance_id>`` takes its partitions back
    instance_id: str = "0"
    #: records per transaction (at most: a quiet stream's batch is what 0.5 s brought). Each commit
    #: waits ~10-20 ms for the coordinator, so 10,000 rather than 2,000 spares most of that wait
    #: (bench/notes/processor-profile.md); latency at a low rate is the same (the batch is not full)
    batch_size: int = Field(default=10_000, ge=1)
    #: the broker aborts a transaction left open this long (a crashed instance's, say)
    transaction_timeout_ms: int = Field(default=30_000, ge=1000)
    #: the longest wait between two tries of a batch that failed transiently (registry, broker down)
    retry_backoff_max_s: float = Field(default=30.0, gt=0)
    metrics_port: int = Field(default=0, ge=0, le=65535)
    #: the address ``/metrics`` and ``/health`` bind to: loopback unless a scraper elsewhere needs it
    metrics_host: str = "127.0.0.1"
    #: how long the processor remembers an event id after its first ingest (the raw record's time):
    #: as long as curated.chain-events keeps it (``TopicSettings.curated_retention_days``), so a reader
    #: of the curated topic meets no event twice. Older re-deliveries pass the processor and the
    #: sink's per-period dedup drops them (processors/dedup.py, README "What is deduplicated where")
    dedup_horizon_days: float = Field(default=400.0, gt=0)
    #: the dedup state's time buckets (by ingest time): state expires, and its changelog is
    #: tombstoned, a bucket at a time (at least ~1.5 minutes: bucket numbers are 32-bit)
    dedup_bucket_days: float = Field(default=1.0, ge=0.001)

    @model_validator(mode="after")
    def _bucket_within_horizon(self) -> ProcessorSettings:
        if self.dedup_bucket_days > self.dedup_horizon_days:
            raise ValueError(
                f"dedup_bucket_days ({self.dedup_bucket_days}) must not exceed dedup_horizon_days "
                f"({self.dedup_horizon_days})"
            )
        return self


class SinkSettings(BaseSettings):
    """How ``ketenstroom sink`` consumes and stages; the command line's options override these."""

    model_config = _config("KETENSTROOM_SINK_")

    group_id: str = "ketenstroom-sink"
    #: stable per running instance: the static group member ``<group_id>.<instance_id>`` takes its
    #: partitions back at once after a restart; give each concurrent instance its own
    instance_id: str = "0"
    batch_size: int = Field(default=5000, ge=1)
    #: rows buffered before a staged file is written (bounds memory)
    max_buffered: int = Field(default=50_000, ge=1)
    #: at most this long between staged files while records keep coming
    flush_interval_s: float = Field(default=30.0, gt=0)
    #: the longest wait between two tries after a transient failure (object store, registry down)
    retry_backoff_max_s: float = Field(default=30.0, gt=0)
    #: serve ``/metrics`` and ``/health`` on this port (0: off)
    metrics_port: int = Field(default=0, ge=0, le=65535)
    #: the address ``/metrics`` and ``/health`` bind to: loopback unless a scraper elsewhere needs it
    metrics_host: str = "127.0.0.1"


class MonitorSettings(BaseSettings):
    """How ``ketenstroom monitor`` (the delivery monitor, a faust app) runs."""

    model_config = _config("KETENSTROOM_MONITOR_")

    #: faust app id (consumer group, changelog topics ``<prefix><app_id>-<table>-changelog``); the
    #: topic prefix goes in front, so environments sharing a cluster keep their own monitor state
    app_id: str = "ketenstroom-monitor"
    #: ``/metrics``, ``/health`` and the JSON views ``/views/*`` (0: any free port)
    metrics_port: int = Field(default=9466, ge=0, le=65535)
    #: the address they bind to: loopback unless a scraper elsewhere needs it
    metrics_host: str = "127.0.0.1"
    #: periods per partner that get metric labels (the latest ones with events; JSON views show all)
    recent_periods: int = Field(default=3, ge=1, le=12)
    #: a DLQ spike: at least ``dlq_spike_min_records`` dead letters in the last hour and more than
    #: ``dlq_spike_factor`` times the mean of the ``dlq_trailing_hours`` hours before
    dlq_spike_factor: float = Field(default=5.0, gt=0)
    dlq_spike_min_records: int = Field(default=10, ge=1)
    dlq_trailing_hours: int = Field(default=24, ge=1)
    #: how often the views and metrics are recomputed from the tables
    refresh_s: float = Field(default=1.0, gt=0)
