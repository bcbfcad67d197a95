"""Waiting out a transient outage: exponential backoff with full jitter, logged, and interruptible.

Long-running components (processor, sink) call ``Backoff.wait`` when an operation failed with a
transient error (``ketenstroom.errors.is_transient``: registry or object store down, broker timeout)
and then try the same work again; permanent errors (a record that is wrong) are never retried here,
they are dead-lettered or kept as rejects by the caller. One-shot commands do not wait: they fail with
the error's message. The wait is a loop-level retry that must notice a stop request (SIGTERM) within a
fraction of a second and rewind a Kafka transaction in between, which is why it is a small class here
rather than a retry decorator around one call.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from ketenstroom.errors import is_transient

T = TypeVar("T")
STEP_S = 0.2  # how often a wait looks at the stop request


class Backoff:
    """Delays of ``initial_s * 2**attempt`` capped at ``max_s``, each drawn uniformly from [delay/2, delay]
    (jittered so that many clients coming back do not retry in step); ``reset`` after a success."""

    def __init__(
        self,
        *,
        initial_s: float = 0.5,
        max_s: float = 30.0,
        log: logging.Logger | None = None,
        on_retry: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.initial_s, self.max_s = initial_s, max_s
        self.attempt = 0
        self.retries = 0  # waits since construction (a gauge for tests and metrics)
        self.log = log or logging.getLogger("ketenstroom.retry")
        self.on_retry = on_retry

    def reset(self) -> None:
        if self.attempt:
            self.log.info("recovered after %d attempt(s)", self.attempt)
        self.attempt = 0

    def delay(self) -> float:
        ceiling = min(self.max_s, self.initial_s * 2.0 ** min(self.attempt, 30))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 (jitter, not cryptography)

    def wait(self, what: str, exc: BaseException, should_stop: Callable[[], bool] = lambda: False) -> bool:
        """Log ``exc`` and wait the next delay; False (at once) if ``should_stop`` says so meanwhile."""
        seconds = self.delay()
        self.attempt += 1
        self.retries += 1
        if self.on_retry is not None:
            self.on_retry(exc)
        self.log.warning(
            "%s failed (attempt %d, transient: %s); retrying in %.1f s", what, self.attempt, exc, seconds
        )
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            if should_stop():
                return False
            time.sleep(min(STEP_S, left))  # a backoff delay, not synchronisation: nothing to poll for
        return not should_stop()

    def call(self, what: str, fn: Callable[[], T], should_stop: Callable[[], bool] = lambda: False) -> T:
        """``fn()`` until it does not fail with a transient error; a permanent error, or a transient one
        once ``should_stop`` is true, is raised."""
        while True:
            try:
                result = fn()
            except Exception as exc:
                if not is_transient(exc) or not self.wait(what, exc, should_stop):
                    raise
                continue
            self.reset()
            return result
