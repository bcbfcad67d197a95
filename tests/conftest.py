"""Shared fixtures. Unit tests need none of the services; integration tests get the real stack.

Endpoints come from the environment when set (``KETENSTROOM_KAFKA_BOOTSTRAP_SERVERS``,
``KETENSTROOM_REGISTRY_URL``, ``KETENSTROOM_S3_*``); otherwise the session starts the local stack
with the project's own infra module, and stops it again at the end if it started it.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import SecretStr

from ketenstroom.contract import Topics
from ketenstroom.settings import KafkaSettings, RegistrySettings, S3Settings


@dataclass(frozen=True)
class Services:
    kafka: KafkaSettings
    registry: RegistrySettings
    s3: S3Settings
    started_here: bool

    def env(self, topics: Topics | None = None) -> dict[str, str]:
        """This process's environment plus the ``KETENSTROOM_*`` endpoints, for a ``ketenstroom`` child."""
        env = {
            **os.environ,
            "KETENSTROOM_KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
            "KETENSTROOM_REGISTRY_URL": self.registry.url,
            "KETENSTROOM_S3_BUCKET": self.s3.bucket,
            "KETENSTROOM_S3_REGION": self.s3.region,
        }
        for name, value in (
            ("ENDPOINT", self.s3.endpoint),
            ("ACCESS_KEY_ID", self.s3.access_key_id),
            ("SECRET_ACCESS_KEY", self.s3.secret_access_key and self.s3.secret_access_key.get_secret_value()),
        ):
            if value:
                env[f"KETENSTROOM_S3_{name}"] = value
        if topics is not None:
            env["KETENSTROOM_TOPIC_PREFIX"] = topics.prefix
        return env


def _from_env() -> Services | None:
    if not os.environ.get("KETENSTROOM_KAFKA_BOOTSTRAP_SERVERS"):
        return None
    return Services(KafkaSettings(), RegistrySettings(), S3Settings(), started_here=False)


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    found = _from_env()
    if found is not None:
        yield found
        return
    from devstack import Stack, StackConfig

    stack = Stack(StackConfig.from_env(nodes=1))
    was_running = all(s.healthy for s in stack.status())
    yield services_of(stack.up(), started_here=not was_running)
    if not was_running:
        stack.down()


def services_of(eps: Any, *, started_here: bool) -> Services:
    """The clients' settings for a stack's ``Endpoints`` (single node or the 3-node cluster)."""
    return Services(
        kafka=KafkaSettings(bootstrap_servers=eps.kafka_bootstrap),
        registry=RegistrySettings(url=eps.registry_url),
        s3=S3Settings(
            endpoint=eps.s3_endpoint,
            bucket=eps.s3_bucket,
            region=eps.s3_region,
            access_key_id=eps.s3_access_key,
            secret_access_key=SecretStr(eps.s3_secret_key),
        ),
        started_here=started_here,
    )


@pytest.fixture
def names() -> Topics:
    """A topic namespace of this test's own: ``t<hex>.raw.om`` and so on."""
    return Topics(prefix=f"t{uuid.uuid4().hex[:10]}.")


@pytest.fixture
def group_id(names: Topics) -> str:
    return f"{names.prefix}group"


@pytest.fixture(autouse=True)
def no_lingering_threads() -> Iterator[None]:
    """Fail a test that leaves non-daemon threads running (clients not closed)."""
    before = {t.ident for t in threading.enumerate()}
    yield
    lingering = [t for t in threading.enumerate() if t.ident not in before and t.is_alive() and not t.daemon]
    assert not lingering, f"threads left running: {[t.name for t in lingering]}"
