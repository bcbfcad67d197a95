"""Where the sink's time and memory go, on the sink benchmark's one-period data (``bench/sink_bench.py``).

Publishes ``--events`` events of one period (as ``make bench-sink``'s memory run does), then runs the
sink in this process, tables on, while a thread samples the resident set size every 20 ms and charges
it to the phase running then (decode, stage, seal, links, tables ...). Prints peak RSS and Arrow's
allocation per phase, and with ``--cprofile`` the functions taking the most time. The summary of a run
is kept in ``bench/notes/sink-profile.md``. Not part of CI: ``python -m bench.profile_sink``.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import multiprocessing
import pstats
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

import sinks.runner
import sinks.seal
import sinks.tables
from bench.common import endpoints, fresh_topics, load_average
from bench.sink_bench import AS_OF, publish_one_period
from ketenstroom.adapters.kafka import end_offsets, ensure_topics
from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.contract import Topics
from ketenstroom.errors import DeliveryError
from ketenstroom.settings import SinkSettings
from sinks.runner import Sink
from sinks.seal import Sealer, SealPolicy

_stack: list[str] = ["consume"]
_peak: dict[str, float] = {}
_arrow: dict[str, float] = {}
_spent: dict[str, float] = {}


def _rss_mib() -> float:
    with Path("/proc/self/statm").open() as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def _sample(done: threading.Event) -> None:
    while not done.wait(0.02):
        phase = _stack[-1]
        _peak[phase] = max(_peak.get(phase, 0.0), _rss_mib())
        _arrow[phase] = max(_arrow.get(phase, 0.0), pa.total_allocated_bytes() / 2**20)


def _phase(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        _stack.append(name)
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _spent[name] = _spent.get(name, 0.0) + time.perf_counter() - start
            _stack.pop()

    return wrapped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--prefix", help="topic prefix of events published by an earlier run")
    parser.add_argument("--reference", action="store_true", help="decode record by record (fastavro)")
    parser.add_argument("--cprofile", action="store_true", help="also profile the time (slower)")
    args = parser.parse_args()
    kafka, registry = endpoints()
    if args.prefix:  # the events of an earlier run (publishing 5M takes minutes)
        topics = Topics(prefix=args.prefix)
    else:  # published from a child process: the producer's buffers are not this process's memory
        topics = fresh_topics("sinkprof")
        ensure_topics(kafka, [topics.curated], partitions=3, replication_factor=1)
        child = multiprocessing.get_context("spawn").Process(
            target=publish_one_period, args=(kafka, registry, topics, args.events)
        )
        child.start()
        child.join()
        assert child.exitcode == 0, "publishing failed"
        print(f"published to {topics.curated} (reuse: --prefix {topics.prefix})")
    for owner, name, phase in [
        (sinks.runner.Sink, "_add_batch", "decode"),
        (sinks.runner.Sink, "_add", "decode"),
        (sinks.runner, "write_with_stats", "stage"),
        (sinks.runner, "write_table", "stage"),
        (sinks.seal.Sealer, "seal", "seal"),
        (sinks.seal.Sealer, "_take_staged", "seal: move/rewrite staged"),
        (sinks.runner, "build_missing_tables", "tables"),
        (sinks.tables, "link_inputs", "tables: person links"),
    ]:
        if hasattr(owner, name):  # (an older tree may lack some: profile what it has)
            setattr(owner, name, _phase(phase, getattr(owner, name)))
    done = threading.Event()
    sampler = threading.Thread(target=_sample, args=(done,), daemon=True)
    with tempfile.TemporaryDirectory() as tmp:
        store = ObjectStore(f"file://{tmp}")
        sink = Sink(
            kafka=kafka,
            registry=registry,
            store=store,
            settings=SinkSettings(group_id=f"{topics.prefix}prof-{uuid.uuid4().hex[:6]}"),
            topics=topics,
            sealer=Sealer(store, SealPolicy(final_after=timedelta(days=3650), clock=lambda: AS_OF)),
        )
        sink.columnar = not args.reference  # (an attribute an older sink ignores)
        profile = cProfile.Profile() if args.cprofile else None
        sampler.start()
        start = time.perf_counter()
        if profile is not None:
            profile.enable()
        try:
            records = sink.run(stop_at=end_offsets(kafka, [topics.curated])).records
        except DeliveryError as exc:  # e.g. the final commit after max.poll.interval.ms on a busy machine
            print(f"the run ended with: {exc}")
            records = sink.report.records
        finally:
            if profile is not None:
                profile.disable()
            elapsed = time.perf_counter() - start
            done.set()
            sampler.join()
    print(f"{records:,} records in {elapsed:.0f} s ({records / elapsed:,.0f}/s); {load_average()}")
    print(f"{'phase':<28} {'seconds':>8} {'peak RSS MiB':>13} {'peak Arrow MiB':>15}")
    for phase, peak in _peak.items():
        print(f"{phase:<28} {_spent.get(phase, 0.0):>8.1f} {peak:>13.0f} {_arrow[phase]:>15.0f}")
    if profile is not None:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(35)


if __name__ == "__main__":
    main()
