"""Where one benchmark turn's wall time goes: ours (``TransactionalProcessor``) against the raw passthrough.

Publishes the stream ``bench.process_bench`` publishes (once), then runs ours and raw in turns, each
timed in phases from the start of the turn (as the benchmark times them):

* ours: state topics, ``init_transactions``, the group join (subscribe to the assignment callback),
  the dedup restore (inside the callback), the first records, then per batch the consume wait, the
  transform loop, ``produce_batch``, the changelog, the commit (offsets + ``commit_transaction``)
  and the counting, and the end: EOF detection after the last records, the consumer's close and
  the producer's flush;
* raw: the group join, the first records, consuming and producing, the end (EOF, flush, close).

Ours is wrapped, not changed: its producer and consumer are proxies that time each call, and its
restore and counting are timed by wrapping the methods. Wall times on a shared machine: compare
within one run, with ``uptime``.
"""

from __future__ import annotations

import argparse
import secrets
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError
from pydantic import SecretStr

from bench.common import endpoints, load_average
from bench.process_bench import (
    MADE,
    PARTNERS,
    delete_made_topics,
    outputs,
    processor_for,
    publish,
    raw_clients,
)
from ketenstroom.adapters.kafka import ensure_topics, read_to_end
from ketenstroom.adapters.registry import Registry
from ketenstroom.contract import Topics
from ketenstroom.settings import KafkaSettings, PseudonymSettings
from processors import dedup, runner
from processors.dedup import _watermarks
from processors.metrics import ProcessorMetrics


class Clock:
    """Seconds spent per phase, and the moments of named events, from ``start``."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.spent: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.at: dict[str, float] = {}
        self.waits: list[tuple[float, int]] = []  # each consume call: seconds, events

    def mark(self, name: str) -> None:
        self.at.setdefault(name, time.perf_counter() - self.start)

    def timed(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent[name] += time.perf_counter() - t
                self.calls[name] += 1

        return wrapper


class Proxy:
    """Delegates to ``target``; the calls named in ``phases`` are timed under their phase."""

    def __init__(self, target: Any, clock: Clock, phases: dict[str, str]) -> None:
        self._target, self._clock, self._phases = target, clock, phases

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        phase = self._phases.get(name)
        return self._clock.timed(phase, value) if phase else value


def run_ours(
    kafka: KafkaSettings, registry: Registry, pseudonym: PseudonymSettings, source: Topics
) -> tuple[Clock, float]:
    proc = processor_for(kafka, registry, pseudonym, source, "tl", ProcessorMetrics())
    clock = Clock()
    producer_phases = {
        "init_transactions": "init_transactions",
        "list_topics": "init_transactions",
        "begin_transaction": "commit",
        "produce_batch": "produce curated",
        "produce": "produce changelog/dlq",
        "send_offsets_to_transaction": "send offsets",
        "commit_transaction": "commit",
        "flush": "end: producer flush",
        "poll": "commit",
    }
    proc.producer = Proxy(proc.producer, clock, producer_phases)  # type: ignore[assignment]
    consumer = proc.loop.consumer
    consume = clock.timed("consume", consumer.consume)
    first: list[bool] = []

    def consuming(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        events = consume(*args, **kwargs)
        clock.waits.append((round(time.perf_counter() - t, 3), len(events)))
        if not first and any(m.error() is None for m in events):
            first.append(True)
            clock.mark("first records")
        return events

    proc.loop.consumer = Proxy(  # type: ignore[assignment]
        consumer, clock, {"close": "end: consumer close", "list_topics": "state topics"}
    )
    object.__setattr__(proc.loop.consumer, "consume", consuming)
    proc._ensure_state_topics = clock.timed("state topics", proc._ensure_state_topics)  # type: ignore[method-assign]
    runner.ensure_topics = clock.timed("  create topics", ensure_topics)  # type: ignore[attr-defined]
    dedup._watermarks = clock.timed("  restore: ends", _watermarks)  # type: ignore[attr-defined]
    dedup.read_to_end = clock.timed("  restore: read", read_to_end)  # type: ignore[attr-defined]
    if hasattr(proc, "_start"):  # (this branch; main's runner starts up inline: ``--runner`` A/B)
        start = clock.timed("start-up", proc._start)
        runner.await_ends = clock.timed("  await ends", runner.await_ends)  # type: ignore[attr-defined]

        def starting() -> None:
            start()
            clock.mark("started")

        proc._start = starting  # type: ignore[method-assign]
    restore = clock.timed("restore", proc._restore)

    def restoring(partitions: Any) -> None:
        clock.mark("assigned")
        restore(partitions)
        clock.mark("restored")

    proc._restore = restoring  # type: ignore[method-assign]
    proc._count = clock.timed("count", proc._count)  # type: ignore[method-assign]
    transact = clock.timed("transact", proc._transact)
    last: list[float] = []

    def transacting(batch: Any) -> bool:
        done = bool(transact(batch))
        last[:] = [time.perf_counter() - clock.start]
        return done

    proc._transact = transacting  # type: ignore[method-assign]
    stats = proc.run(until_end=True)
    clock.mark("end")
    clock.at["last batch committed"] = last[0] if last else 0.0
    assert stats.reconciles(), stats
    return clock, sum(stats.records_in.values())


def run_raw(kafka: KafkaSettings, source: Topics, n: int) -> Clock:
    """``bench.process_bench.run_raw``, timed in phases (the same calls)."""
    out = outputs(kafka, source, "tlraw")
    consumer, producer = raw_clients(kafka, out)
    at_end: set[tuple[str, int]] = set()
    copied = 0
    clock = Clock()
    consumer.subscribe([source.raw(p) for p in PARTNERS], on_assign=lambda _c, _p: clock.mark("assigned"))
    timed_consume = clock.timed("consume", consumer.consume)

    def consume(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        events = timed_consume(*args, **kwargs)
        clock.waits.append((round(time.perf_counter() - t, 3), len(events)))
        return events

    produce = clock.timed("produce", producer.produce)
    last = 0.0
    try:
        while True:
            for msg in consume(2000, timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise SystemExit(f"raw passthrough failed: {err}")
                    at_end.add((msg.topic(), msg.partition()))
                    continue
                clock.mark("first records")
                at_end.discard((msg.topic(), msg.partition()))
                while True:
                    try:
                        produce(out.curated, key=msg.key(), value=msg.value(), headers=msg.headers())
                        break
                    except BufferError:
                        producer.poll(0.1)
                copied += 1
                last = time.perf_counter() - clock.start
            producer.poll(0)
            assigned = consumer.assignment()
            if assigned and all((tp.topic, tp.partition) in at_end for tp in assigned):
                break
        clock.at["last records"] = last
        clock.timed("end: producer flush", producer.flush)(60)
    finally:
        clock.timed("end: consumer close", consumer.close)()
    clock.mark("end")
    assert copied == n, (copied, n)
    return clock


def show(label: str, clock: Clock) -> str:
    moments = "  ".join(f"{k} {v:.3f}" for k, v in sorted(clock.at.items(), key=lambda kv: kv[1]))
    spent = "  ".join(
        f"{k} {v:.3f}" + (f" ({clock.calls[k]})" if clock.calls[k] > 1 else "")
        for k, v in sorted(clock.spent.items())
    )
    waits = " ".join(f"{s:.3f}/{n}" for s, n in clock.waits)
    return f"{label}: at [{moments}]\n      spent [{spent}]\n      consume calls (s/events) [{waits}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=14_000)
    parser.add_argument("--noise", type=float, default=0.01)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-raw", action="store_true")
    args = parser.parse_args()
    kafka, registry_settings = endpoints()
    pseudonym = PseudonymSettings(key=SecretStr(secrets.token_hex(32)), key_id="bench")
    try:
        source, n = publish(kafka, registry_settings, args.cases, args.noise)
        print(f"published {n} events; {load_average()}", flush=True)
        with Registry(registry_settings) as registry:
            for run in range(args.runs):
                clock, seen = run_ours(kafka, registry, pseudonym, source)
                assert seen == n, (seen, n)
                print(f"run {run + 1} " + show(f"ours {n / clock.at['end']:,.0f}/s", clock), flush=True)
                if not args.no_raw:
                    raw = run_raw(kafka, source, n)
                    print(f"run {run + 1} " + show(f"raw {n / raw.at['end']:,.0f}/s", raw), flush=True)
        print(load_average())
    finally:
        if MADE:
            delete_made_topics(kafka)


if __name__ == "__main__":
    main()
