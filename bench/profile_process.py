"""Profile the processor's transform on the process benchmark's data, without Kafka.

The stream is the one ``bench.process_bench`` publishes (all partners, ``--cases`` crimes from two
years back, a little noise), encoded offline by ``bench.raw_stream``. Prints microseconds per record
of ``Transformer.transform`` (CPU time, best of ``--runs``: the machine is shared) and, with
``--profile``, cProfile's top functions by internal time. ``--reference`` times the reference path
alone (the fast path switched off). ``--parts`` adds the decode alone: fastavro's plain reader and
the reader generated per writer schema (``ketenstroom.contract.avro_plain``) on the same records.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from bench.raw_stream import RawStream, raw_stream, transformer_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=14_000)
    parser.add_argument("--noise", type=float, default=0.01)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--reference", action="store_true", help="the reference path only")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--parts", action="store_true", help="also time the decode alone")
    args = parser.parse_args()
    stream = raw_stream(cases=args.cases, noise=args.noise)
    records = stream.records
    print(f"{len(records)} raw records of {len(stream.schemas)} record types")
    best = float("inf")
    for _ in range(args.runs):
        transformer = transformer_for(stream)
        if args.reference and hasattr(transformer, "fast"):
            transformer.fast = None
        transform = transformer.transform
        start = time.process_time()
        for record in records:
            transform(record)
        best = min(best, time.process_time() - start)
    path = "reference" if args.reference else "default"
    print(
        f"{path} transform: {best / len(records) * 1e6:.1f} us/record ({len(records) / best:,.0f} records/s)"
    )
    if args.parts:
        _parts(stream, args.runs)
    if args.profile:
        transformer = transformer_for(stream)
        if args.reference and hasattr(transformer, "fast"):
            transformer.fast = None
        profiler = cProfile.Profile()
        profiler.enable()
        for record in records:
            transformer.transform(record)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)


def _parts(stream: RawStream, runs: int) -> None:
    """CPU per record of the fast path's decode alone: fastavro's plain reader, the generated one."""
    transformer = transformer_for(stream)
    fast = transformer.fast
    readers = []
    for record in stream.records:
        value = record.value or b""
        schema_id = int.from_bytes(value[1:5], "big")
        reader = fast._reader(schema_id, stream.writer_schema(schema_id))
        if reader is not None and reader.compiled is not None:
            readers.append((reader, value))

    def plain() -> None:
        for reader, value in readers:
            reader.read(value)

    def generated() -> None:
        for reader, value in readers:
            reader.compiled(value)

    for name, loop in (("fastavro plain reader", plain), ("generated reader", generated)):
        best = float("inf")
        for _ in range(runs):
            start = time.process_time()
            loop()
            best = min(best, time.process_time() - start)
        print(f"decode, {name}: {best / len(readers) * 1e6:.2f} us/record ({len(readers)} records)")


if __name__ == "__main__":
    main()
