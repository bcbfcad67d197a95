"""Named crash points, for the crash tests: SIGKILL this process at an exact moment.

``KETENSTROOM_CRASH_AT=<point>[:<n>]`` kills the process the n-th time (default 1st) it passes
``<point>``. Unset (always, outside tests), ``crash_point`` is a dictionary lookup and nothing else.
A real SIGKILL, not an exception: no ``finally`` runs, no buffer is flushed, exactly as when the
kernel's OOM killer or an operator's ``kill -9`` stops a worker.

``KETENSTROOM_CRASH_SIGNAL=SIGSTOP`` freezes the process at the point instead (it stops itself, and
goes on where it was when sent SIGCONT): a stall, as a long pause of the machine or the process, after
which its consumer group may have moved on without it.
"""

from __future__ import annotations

import os
import signal

_ENV = "KETENSTROOM_CRASH_AT"
_SIGNAL_ENV = "KETENSTROOM_CRASH_SIGNAL"
_hits: dict[str, int] = {}


def crash_point(name: str) -> None:
    wanted = os.environ.get(_ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == int(nth or 1):  # once: a frozen process goes on past the point
        how = os.environ.get(_SIGNAL_ENV, "SIGKILL")
        if how not in ("SIGKILL", "SIGSTOP"):
            raise ValueError(f"{_SIGNAL_ENV}={how}: expected SIGKILL or SIGSTOP")
        os.kill(os.getpid(), signal.Signals[how])
