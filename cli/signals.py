"""A clean stop: SIGTERM and SIGINT (Ctrl-C) ask a long-running command to finish, not to die."""

from __future__ import annotations

import signal
import threading


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT. The command checks it between batches: it finishes the current
    batch, commits, flushes and seals what is due, then returns (exit 0) instead of being killed."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop
