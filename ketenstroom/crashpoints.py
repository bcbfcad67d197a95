"""Named crash points, for the crash tests: SIGKILL this process at an exact moment.

``KETENSTROOM_CRASH_AT=<point>[:<n>]`` kills the process the n-th time (default 1st) it passes
``<point>``. Unset (always, outside tests), ``crash_point`` is a dictionary lookup and nothing else.
A real SIGKILL, not an exception: no ``finally`` runs, no buffer is flushed, exactly as when the
kernel's OOM killer or an operator's ``kill -9`` stops a worker.
"""

from __future__ import annotations

import os
import signal

_ENV = "KETENSTROOM_CRASH_AT"
_hits: dict[str, int] = {}


def crash_point(name: str) -> None:
    wanted = os.environ.get(_ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
