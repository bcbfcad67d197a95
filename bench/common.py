"""Shared bits for benchmarks: endpoints (the running local stack or the environment), timing, load."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ketenstroom.contract import Topics
from ketenstroom.settings import KafkaSettings, RegistrySettings


def endpoints() -> tuple[KafkaSettings, RegistrySettings]:
    """The environment's endpoints if set, else the local stack (started if needed)."""
    if os.environ.get("KETENSTROOM_KAFKA_BOOTSTRAP_SERVERS"):
        return KafkaSettings(), RegistrySettings()
    from devstack import Stack, StackConfig

    eps = Stack(StackConfig.from_env(nodes=1)).up()
    return KafkaSettings(bootstrap_servers=eps.kafka_bootstrap), RegistrySettings(url=eps.registry_url)


def fresh_topics(label: str) -> Topics:
    return Topics(prefix=f"bench-{label}-{uuid.uuid4().hex[:6]}.")


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


@contextmanager
def timed(results: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    results[name] = time.perf_counter() - start


def best_of(runs: int, fn: Callable[[], float]) -> float:
    """Best (lowest) seconds over ``runs``: the least disturbed run on a noisy machine."""
    return min(fn() for _ in range(runs))
