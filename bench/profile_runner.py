"""Profile the whole exactly-once processor on the process benchmark's stream, by CPU time.

Publishes the stream ``bench.process_bench`` publishes (once), then, in turns, runs:

* ours: ``TransactionalProcessor`` to the end of the stream (metrics counted, not served),
* raw: the benchmark's raw consume + produce passthrough,

and the transform alone over the same records. For each it prints CPU microseconds per event of the
whole process (``time.process_time``: every thread, librdkafka's included), which the machine's load
does not distort as it does wall time, the Python thread's CPU (``time.thread_time``) and the wall
rate. ``--profile`` adds cProfile's top functions of one more processor run, timed by the Python
thread's CPU. The gap between ours and raw + transform is the runner's own cost: what
``bench/notes/processor-profile.md`` tracks. A sampling profile of the same runs:
``py-spy record -f raw -o out.raw -- python -m bench.profile_runner --no-raw``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import secrets
import time

from pydantic import SecretStr

from bench.common import endpoints, load_average
from bench.process_bench import (
    MADE,
    delete_made_topics,
    encoded_records,
    outputs,
    processor_for,
    publish,
    run_raw,
)
from ketenstroom.adapters.registry import Registry
from ketenstroom.contract import Topics
from ketenstroom.settings import CatalogueSettings, KafkaSettings, PseudonymSettings
from processors.build import build_transformer
from processors.metrics import ProcessorMetrics


def run_ours(
    kafka: KafkaSettings,
    registry: Registry,
    pseudonym: PseudonymSettings,
    source: Topics,
    profiler: cProfile.Profile | None = None,
    batch_size: int | None = None,
) -> tuple[float, float, float, int]:
    """Wall seconds, CPU seconds (whole process, Python thread) and records of one run to the end."""
    sized = {"batch_size": batch_size} if batch_size else {}
    proc = processor_for(kafka, registry, pseudonym, source, "prof", ProcessorMetrics(), **sized)
    cpu, main, wall = time.process_time(), time.thread_time(), time.perf_counter()
    if profiler is not None:
        profiler.enable()
    stats = proc.run(until_end=True)
    if profiler is not None:
        profiler.disable()
    cpu, main, wall = time.process_time() - cpu, time.thread_time() - main, time.perf_counter() - wall
    assert stats.reconciles(), stats
    return wall, cpu, main, sum(stats.records_in.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=14_000)
    parser.add_argument("--noise", type=float, default=0.01)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs="*",
        default=[],
        help="run ours with each, in turns (default: the setting's)",
    )
    parser.add_argument("--sort", default="tottime", help="cProfile sort key")
    parser.add_argument("--no-raw", action="store_true", help="skip the raw passthrough")
    args = parser.parse_args()
    kafka, registry_settings = endpoints()
    pseudonym = PseudonymSettings(key=SecretStr(secrets.token_hex(32)), key_id="bench")
    try:
        source, n = publish(kafka, registry_settings, args.cases, args.noise)
        print(f"published {n} events; {load_average()}", flush=True)
        with Registry(registry_settings) as registry:
            for run in range(args.runs):
                line = f"run {run + 1}:"
                for size in args.batch_sizes or [None]:
                    wall, cpu, main, seen = run_ours(kafka, registry, pseudonym, source, batch_size=size)
                    assert seen == n, (seen, n)
                    line += (
                        f" ours{f' (batch {size})' if size else ''} {cpu / n * 1e6:.1f} us/event cpu "
                        f"({main / n * 1e6:.1f} in the Python thread), {n / wall:,.0f}/s wall"
                    )
                if not args.no_raw:
                    cpu = time.process_time()
                    wall = run_raw(kafka, source, n)
                    cpu = time.process_time() - cpu
                    line += f"   raw {cpu / n * 1e6:.1f} us/event cpu, {n / wall:,.0f}/s wall"
                print(f"{line}; {load_average()}", flush=True)
            records = encoded_records(kafka, source)
            transformer = build_transformer(
                registry=registry,
                paths=CatalogueSettings(),
                pseudonym=pseudonym,
                topics=outputs(kafka, source, "c"),
            )
            best = float("inf")
            for _ in range(3):
                cpu = time.process_time()
                for i in range(0, len(records), 2000):
                    transformer.transform_batch(records[i : i + 2000])
                best = min(best, time.process_time() - cpu)
            print(f"transform alone {best / len(records) * 1e6:.1f} us/event cpu")
            if args.profile:
                profiler = cProfile.Profile(time.thread_time)  # the Python thread's CPU, not wall
                wall, cpu, _main, _seen = run_ours(kafka, registry, pseudonym, source, profiler)
                print(f"profiled run: {cpu / n * 1e6:.1f} us/event cpu (cProfile's overhead included)")
                pstats.Stats(profiler).sort_stats(args.sort).print_stats(args.top)
    finally:
        if MADE:
            delete_made_topics(kafka)


if __name__ == "__main__":
    main()
