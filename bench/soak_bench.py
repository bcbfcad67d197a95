"""Endurance: a steady generated load through publish -> process -> sink on the 3-node cluster.

``make bench-soak`` (or ``python -m bench.soak_bench --rate 1000 --minutes 10``). Every ``--interval``
seconds a partner delivery of ``rate * interval`` OM decisions is written and handed to the real
``ketenstroom publish`` (a subprocess per delivery, as a partner's scheduler would run it), while one
``ketenstroom process`` and one ``ketenstroom sink`` run as subprocesses for the whole soak. When the
load stops the pipeline is given ``--drain`` seconds to catch up, then processor and sink get SIGTERM.

Measured, per event id:

* lost: acknowledged by publish (in ``raw.om``, whose producer is idempotent) but not in the sink's
  staged or sealed rows; duplicated: rows beyond the first per event id in what the sink left;
* latency: from the raw record's Kafka timestamp (publish's produce time; acknowledged right after)
  to the modification time of the staged Parquet file holding the row, i.e. when the row was durably
  staged and ready to be sealed. The file's mtime is read from the local store (``file://``), so the
  sink needs no extra column or metric for it. Events are dated in the current month, so nothing is
  sealed (moved) during the soak;
* RSS of each component (``/proc/<pid>/status``, sampled each second): processor and sink from minute 2
  (or half-way, for a run shorter than 4 minutes) to the end; publish, a new process per delivery,
  as the median peak RSS (`VmHWM`) of the deliveries launched then against those launched in the last 30 s.
  The processor's dedup state (``ketenstroom_processor_dedup_bytes``, scraped from its ``/metrics``)
  is printed beside it: it grows with every new id until the dedup horizon (400 days by default)
  by design, about 22 bytes an id, and is the part of the processor's growth that is not a leak.

The last line is ``lost=<n> duplicated=<n> p99_latency_s=<x> rss_growth_mib=<y>`` (growth: the largest
over the components). Never run in CI: it takes the duration plus a few minutes and loads the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
from prometheus_client.parser import text_string_to_metric_families

from bench.common import load_average
from ketenstroom.adapters.kafka import all_partitions, end_offsets, read_to_end
from ketenstroom.adapters.registry import Registry
from ketenstroom.calendar import AMSTERDAM
from ketenstroom.contract import Topics, event_id
from ketenstroom.contract.codec import decode
from ketenstroom.contract.wire import unframe
from ketenstroom.settings import KafkaSettings, RegistrySettings
from synthetic import OM_COLUMNS, om_decision_rows, write_csv

MAX_PUBLISHING = 4  # deliveries in flight at once; more and the schedule slips (reported as achieved rate)


QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _rss_mib(pid: int, field: str = "VmRSS") -> float | None:
    """A process's resident memory now (``VmRSS``) or its peak so far (``VmHWM``), in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass
class Samples:
    """(seconds since start, RSS MiB) per component."""

    started: float = field(default_factory=time.monotonic)
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def add(self, name: str, rss: float | None) -> None:
        if rss is not None:
            self.series.setdefault(name, []).append((time.monotonic() - self.started, rss))

    #: publish: per delivery process, (seconds since start when launched, its largest RSS seen)
    peaks: dict[int, tuple[float, float]] = field(default_factory=dict)

    def launched(self, pid: int) -> None:
        self.peaks[pid] = (time.monotonic() - self.started, 0.0)

    def peak(self, pid: int, rss: float | None) -> None:
        if rss is not None and pid in self.peaks:
            at, top = self.peaks[pid]
            self.peaks[pid] = (at, max(top, rss))

    def delivery_growth(self, baseline_s: float, end_s: float) -> tuple[float, float, float]:
        """Publish is a new process per delivery, so its growth compares like with like: the median
        peak RSS of the deliveries launched in the 30 s after ``baseline_s`` against those launched in
        the last 30 s of load (one process's peak grows with nothing but its own delivery)."""
        base = [r for t, r in self.peaks.values() if r and baseline_s <= t < baseline_s + 30]
        last = [r for t, r in self.peaks.values() if r and end_s - 30 <= t <= end_s]
        if not base or not last:
            return 0.0, 0.0, 0.0
        b, e = statistics.median(base), statistics.median(last)
        return b, e, e - b

    def per_minute(self, name: str) -> list[float]:
        """The median of each minute's samples: whether growth levels off or keeps climbing."""
        minutes: dict[int, list[float]] = {}
        for t, r in self.series.get(name, []):
            minutes.setdefault(int(t // 60), []).append(r)
        return [statistics.median(minutes[m]) for m in sorted(minutes)]

    def growth(self, name: str, baseline_s: float, end_s: float) -> tuple[float, float, float]:
        """RSS around ``baseline_s`` (median of the 30 s after it), at the end (median of the last
        30 s of load) and the difference."""
        points = self.series.get(name, [])
        base = [r for t, r in points if baseline_s <= t < baseline_s + 30]
        last = [r for t, r in points if end_s - 30 <= t <= end_s]
        if not base or not last:
            return 0.0, 0.0, 0.0
        b, e = statistics.median(base), statistics.median(last)
        return b, e, e - b


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _dedup_mib(port: int) -> float | None:
    """The processor's dedup state in MiB, from its ``/metrics`` (None while it is not serving)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    total = sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "ketenstroom_processor_dedup_bytes"
        for sample in family.samples
    )
    return total / 2**20


def _rows(delivery: int, count: int, now: datetime) -> list[dict[str, str]]:
    """``count`` OM decisions of this delivery, decided in the last hours of the current month (so
    none is due for sealing during the soak) and registered a few days before."""
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    rng = random.Random(delivery)  # synthetic data, not security
    rows = []
    for row in om_decision_rows(count, seed=delivery, start=month_start.date(), days=1):
        decided = max(month_start, now - timedelta(minutes=rng.randrange(5, 600)))
        registered = max(month_start, decided - timedelta(days=rng.randrange(0, 3)))
        row["beslisdatum"] = decided.strftime("%d-%m-%Y %H:%M")
        row["inschrijfdatum"] = registered.strftime("%d-%m-%Y")
        rows.append(row)
    return rows


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="ketenstroom-soak-"))
        self.names = Topics(prefix=f"soak{uuid.uuid4().hex[:6]}.")
        self.store_dir = self.work / "store"
        self.samples = Samples()
        self.publishing: list[tuple[subprocess.Popen[bytes], int]] = []
        self.receipts: list[dict[str, object]] = []
        self.expected: set[str] = set()
        self.stop_sampling = threading.Event()

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            **self.endpoints,
            "KETENSTROOM_TOPIC_PREFIX": self.names.prefix,
            "KETENSTROOM_PSEUDONYM_KEY": self.key,
            "KETENSTROOM_PSEUDONYM_KEY_ID": "soak",
            "KETENSTROOM_STORAGE_URL": f"file://{self.store_dir}",
            "KETENSTROOM_SINK_FLUSH_INTERVAL_S": str(self.args.flush_interval),
        }

    def start_stack(self) -> None:
        if os.environ.get("KETENSTROOM_KAFKA_BOOTSTRAP_SERVERS"):
            self.endpoints = {k: v for k, v in os.environ.items() if k.startswith("KETENSTROOM_")}
        else:
            from devstack import Stack, StackConfig

            stack = Stack(StackConfig.from_env(nodes=3))
            stack.up(progress=lambda m: print(f"  {m}", file=sys.stderr))
            self.endpoints = stack.endpoints().as_env()
        self.kafka = KafkaSettings(bootstrap_servers=self.endpoints["KETENSTROOM_KAFKA_BOOTSTRAP_SERVERS"])
        self.registry = RegistrySettings(url=self.endpoints["KETENSTROOM_REGISTRY_URL"])
        self.key = secrets.token_hex(24)

    def cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "cli", *args]

    def run(self) -> str:
        a = self.args
        self.start_stack()
        subprocess.run(self.cli("topics"), env=self.env(), check=True, capture_output=True)
        devnull = subprocess.DEVNULL
        logs = {name: (self.work / f"{name}.log").open("wb") for name in ("process", "sink")}
        self.metrics_port = _free_port()
        proc = subprocess.Popen(
            self.cli("process", "--partner", "om", "--app-id", f"{self.names.prefix}proc"),
            env={**self.env(), "KETENSTROOM_PROCESSOR_METRICS_PORT": str(self.metrics_port)},
            stdout=devnull,
            stderr=logs["process"],
        )
        sink = subprocess.Popen(
            self.cli("sink", "--group", f"{self.names.prefix}sink", "--no-release", "--site", ""),
            env=self.env(),
            stdout=devnull,
            stderr=logs["sink"],
        )
        sampler = threading.Thread(target=self._sample, args=(proc.pid, sink.pid), daemon=True)
        sampler.start()
        print(f"soak: {a.rate}/s for {a.minutes} min, a delivery every {a.interval} s; {load_average()}")
        per_delivery = max(1, round(a.rate * a.interval))
        load_s = a.minutes * 60
        started = time.monotonic()
        delivery = 0
        while (elapsed := time.monotonic() - started) < load_s:
            due = delivery * a.interval
            if elapsed < due:
                time.sleep(min(0.2, due - elapsed))  # the load's own clock: a delivery every interval
                self._reap()
                continue
            self._reap()
            while len(self.publishing) >= MAX_PUBLISHING:  # the machine cannot keep up: wait, slip
                time.sleep(0.2)
                self._reap()
            path = self.work / f"om-{delivery:05d}.csv"
            rows = _rows(delivery, per_delivery, datetime.now(AMSTERDAM).replace(tzinfo=None))
            write_csv(path, rows, OM_COLUMNS)
            self.expected.update(event_id("om", r["recordnummer"], int(r["versie"])) for r in rows)
            child = subprocess.Popen(
                self.cli("publish", "--partner", "om", str(path)),
                env=self.env(),
                stdout=devnull,
                stderr=devnull,
            )
            self.samples.launched(child.pid)
            self.publishing.append((child, delivery))
            delivery += 1
        load_end = time.monotonic() - started
        while self.publishing:
            self._reap()
            time.sleep(0.2)
        print(f"load done after {load_end:.0f} s: {delivery} deliveries; {load_average()}")
        raw_total = sum(end_offsets(self.kafka, [self.names.raw("om")]).values())
        self._drain(raw_total, proc, sink)
        for child in (proc, sink):
            child.send_signal(signal.SIGTERM)
        for child in (proc, sink):
            try:
                child.wait(timeout=120)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.stop_sampling.set()
        sampler.join(5)
        for fh in logs.values():
            fh.close()
        return self.report(load_end, delivery, raw_total, proc.returncode, sink.returncode)

    def _drain(self, raw_total: int, *children: subprocess.Popen[bytes]) -> None:
        """Wait (at most ``--drain`` seconds) until the sink has staged every raw record."""
        drain_until = time.monotonic() + self.args.drain
        while self._staged_rows() < raw_total:
            if any(child.poll() is not None for child in children):
                print("a component died before catching up: stopping")
                return  # waiting longer stages nothing
            if time.monotonic() >= drain_until:
                print(f"not caught up {self.args.drain:.0f} s after the load: stopping anyway")
                return
            time.sleep(1.0)

    def _reap(self) -> None:
        for child, n in list(self.publishing):
            if child.poll() is not None:
                self.publishing.remove((child, n))
                [receipt] = self.work.glob(f"om-{n:05d}.csv.*.receipt.json")
                self.receipts.append(json.loads(receipt.read_text()))

    def _sample(self, processor: int, sink: int) -> None:
        while not self.stop_sampling.is_set():
            self.samples.add("process", _rss_mib(processor))
            self.samples.add("sink", _rss_mib(sink))
            for child, _n in list(self.publishing):
                self.samples.peak(child.pid, _rss_mib(child.pid, "VmHWM"))
            self.samples.add("dedup", _dedup_mib(self.metrics_port))
            self.stop_sampling.wait(1.0)

    def _staged_files(self) -> list[Path]:
        return sorted(self.store_dir.glob("staging/**/*.parquet")) + sorted(
            self.store_dir.glob("snapshots/*/r*/data/*.parquet")
        )

    def _staged_rows(self) -> int:
        total = 0
        for path in self._staged_files():
            try:
                total += pq.ParquetFile(path).metadata.num_rows
            except (OSError, ValueError):
                continue  # being written or moved
        return total

    def report(
        self, load_s: float, deliveries: int, raw_total: int, proc_rc: int | None, sink_rc: int | None
    ) -> str:
        raw_time: dict[str, float] = {}
        with Registry(self.registry) as registry:
            topic = self.names.raw("om")
            for msg in read_to_end(self.kafka, all_partitions(self.kafka, topic), group_id=f"{topic}.soak"):
                schema_id, payload = unframe(msg.value())
                record = decode(registry.writer_schema(schema_id), payload)
                raw_time[str(record["metadata"]["event_id"])] = msg.timestamp()[1] / 1000
        staged: Counter[str] = Counter()
        latencies: list[float] = []
        for path in self._staged_files():
            when = path.stat().st_mtime
            for eid in pq.read_table(path, columns=["event_id"])["event_id"].to_pylist():
                staged[str(eid)] += 1
                if str(eid) in raw_time:
                    latencies.append(when - raw_time[str(eid)])
        acknowledged = set(raw_time)
        published = sum(int(str(r["published"])) for r in self.receipts)
        lost = len(acknowledged - set(staged))
        duplicated = sum(n - 1 for n in staged.values() if n > 1)
        latencies.sort()
        p99 = _quantile(latencies, 0.99)
        baseline = 120.0 if load_s >= 240 else load_s / 2
        exits = dict(Counter(int(str(r["exit_code"])) for r in self.receipts))
        print(
            f"deliveries {deliveries}, receipts {len(self.receipts)}: published {published:,} (exit codes "
            f"{exits}), raw.om holds {raw_total:,}; rows generated {len(self.expected):,}; "
            f"achieved {raw_total / load_s:.0f} events/s"
        )
        print(
            f"sink left {sum(staged.values()):,} rows ({len(staged):,} distinct); "
            f"processor exit {proc_rc}, sink exit {sink_rc}"
        )
        print(
            "latency publish -> staged: "
            + ", ".join(f"{label} {_quantile(latencies, q):.2f} s" for label, q in QUANTILES)
        )
        growth = []
        for name in ("process", "sink"):
            b, e, g = self.samples.growth(name, baseline, load_s)
            growth.append(g)
            print(f"rss {name}: {b:.0f} MiB at {baseline:.0f} s -> {e:.0f} MiB at the end ({g:+.1f} MiB)")
            print(f"  per minute: {' '.join(f'{r:.0f}' for r in self.samples.per_minute(name))} MiB")
        print(f"  dedup per minute: {' '.join(f'{r:.1f}' for r in self.samples.per_minute('dedup'))} MiB")
        b, e, g = self.samples.growth("dedup", baseline, load_s)
        print(
            f"processor dedup state (ketenstroom_processor_dedup_bytes): {b:.1f} MiB at {baseline:.0f} s -> "
            f"{e:.1f} MiB at the end ({g:+.1f} MiB: the ids within the horizon, by design)"
        )
        b, e, g = self.samples.delivery_growth(baseline, load_s)
        growth.append(g)
        print(
            f"rss publish (median peak per delivery): {b:.0f} MiB launched at {baseline:.0f} s -> "
            f"{e:.0f} MiB in the last 30 s ({g:+.1f} MiB)"
        )
        failed = {"process": proc_rc, "sink": sink_rc}
        for name, rc in failed.items():
            if rc != 0:
                log = (self.work / f"{name}.log").read_text(errors="replace").splitlines()
                print(f"{name} exited {rc}; the last lines of its log:", *log[-15:], sep="\n  ")
        print(f"{load_average()}; work dir {self.work}")
        if not self.args.keep and not lost and not duplicated and not any(failed.values()):
            shutil.rmtree(self.work, ignore_errors=True)
        return f"lost={lost} duplicated={duplicated} p99_latency_s={p99:.2f} rss_growth_mib={max(growth):.1f}"


def main() -> None:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rate", type=float, default=float(env("SOAK_RATE", "1000")), help="events per second"
    )
    parser.add_argument(
        "--minutes", type=float, default=float(env("SOAK_MINUTES", "10")), help="load duration"
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=float(env("SOAK_INTERVAL_S", "5")),
        help="seconds between deliveries",
    )
    parser.add_argument(
        "--flush-interval",
        type=float,
        default=float(env("SOAK_FLUSH_INTERVAL_S", "2")),
        help="the sink's KETENSTROOM_SINK_FLUSH_INTERVAL_S",
    )
    parser.add_argument(
        "--drain",
        type=float,
        default=float(env("SOAK_DRAIN_S", "180")),
        help="seconds allowed to catch up after the load",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (exports, receipts, logs, store)"
    )
    line = Soak(parser.parse_args()).run()
    print(line, flush=True)


if __name__ == "__main__":
    main()
