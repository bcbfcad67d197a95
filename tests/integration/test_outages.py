"""Outages of the parts around Kafka, on the real stack: the schema registry stopped mid-publish and
mid-process, the object store (s3proxy) stopped mid-seal, and a broker that cannot be reached at start.

Each test stops the real service (``devstack.Stack.stop_service``: SIGTERM to the JVM, then its port
refuses connections), checks what the component does meanwhile, starts it again (``Stack.up``, same
data) and checks the end state exactly. No sleeps: every wait polls a condition with a deadline.
Limits: an outage is a stopped process (connection refused), not a slow or half-answering one (the
registry and object-store adapters classify 408/429/5xx as transient too; unit-tested in
``tests/unit/test_transient.py``); the services are restarted with their data, so schema ids survive.
The tests need the stack the fixtures started (or one this checkout's settings own): with endpoints
from the environment that belong to another stack they are skipped, since stopping those is not ours.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from devstack import Stack, StackConfig
from ketenstroom.adapters.kafka import all_partitions, end_offsets, ensure_topics, read_to_end
from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.adapters.registry import Registry
from ketenstroom.adapters.snapshots import Snapshots
from ketenstroom.contract import Topics
from ketenstroom.contract.codec import decode
from ketenstroom.contract.wire import unframe
from ketenstroom.errors import DeliveryError
from ketenstroom.settings import (
    CatalogueSettings,
    ProcessorSettings,
    PseudonymSettings,
    S3Settings,
    SinkSettings,
)
from processors.build import build_transformer
from processors.runner import TransactionalProcessor
from producers.publish import EXIT_NOT_DELIVERED, Publisher
from sinks.runner import Sink
from sinks.seal import Sealer, SealPolicy
from synthetic import generate_chain
from synthetic.curated import chain_events, publish_curated
from tests.conftest import Services

KEY = "outage-test-key-0123456789abcdef012345678"
DEADLINE_S = 180.0
AS_OF = datetime(2027, 6, 1, tzinfo=UTC)  # every period of the events below is due for sealing


@pytest.fixture
def stack(services: Services) -> Iterator[Stack]:
    """The local stack behind ``services``, whose registry and s3proxy a test may stop; every service
    is running again after the test, whatever it did."""
    found = Stack(StackConfig.from_env(nodes=1))
    ours = found.endpoints()
    if (ours.registry_url, ours.kafka_bootstrap) != (services.registry.url, services.kafka.bootstrap_servers):
        pytest.skip("the endpoints belong to a stack these settings do not own: not ours to stop")
    yield found
    found.up()


def _until(condition: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)  # polling interval of a condition with a deadline, not a synchronisation sleep


def _ids(services: Services, topic: str) -> list[str]:
    """Event ids of every committed record of ``topic``."""
    out = []
    with Registry(services.registry) as registry:
        for msg in read_to_end(
            services.kafka, all_partitions(services.kafka, topic), group_id=f"{topic}.ids"
        ):
            schema_id, payload = unframe(msg.value())
            record = decode(registry.writer_schema(schema_id), payload)
            out.append(str(record["event_id"] if "event_id" in record else record["metadata"]["event_id"]))
    return out


def _produced(services: Services, topic: str) -> int:
    """Records in ``topic`` by its end offsets; 0 while a topic created a moment ago has no leader yet."""
    try:
        return sum(end_offsets(services.kafka, [topic]).values())
    except DeliveryError:
        return 0


def _count(services: Services, topic: str) -> int:
    parts = all_partitions(services.kafka, topic)
    return sum(1 for _ in read_to_end(services.kafka, parts, group_id=f"{topic}.n"))


def _publish_cli(services: Services, names: Topics, export: Path) -> tuple[int, str, dict[str, Any]]:
    """``ketenstroom publish`` as a subprocess: exit code, stderr, and the receipt it wrote."""
    before = set(export.parent.glob(f"{export.name}.*.receipt.json"))
    done = subprocess.run(
        [sys.executable, "-m", "cli", "publish", "--partner", "om", str(export)],
        env=services.env(names),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    [receipt] = set(export.parent.glob(f"{export.name}.*.receipt.json")) - before
    return done.returncode, done.stderr, json.loads(receipt.read_text())


@contextlib.contextmanager
def _processor(services: Services, names: Topics, app_id: str) -> Iterator[TransactionalProcessor]:
    """A processor whose transform has the curated schema (registered while the registry is up) and an
    empty cache of raw writer schemas: it fetches them when it meets them."""
    with Registry(services.registry) as registry:
        transformer = build_transformer(
            registry=registry,
            paths=CatalogueSettings(),
            pseudonym=PseudonymSettings(key=KEY, key_id="outage"),  # type: ignore[arg-type]
            topics=names,
        )
    with Registry(services.registry) as reader:
        transformer.writer_schema = reader.writer_schema
        yield TransactionalProcessor(
            kafka=services.kafka,
            topics=names,
            partners=["om"],
            transformer=transformer,
            settings=ProcessorSettings(app_id=app_id, batch_size=200, retry_backoff_max_s=1.0),
        )


def test_registry_stopped_mid_publish_reports_only_what_raw_holds_and_a_rerun_completes(
    services: Services, stack: Stack, names: Topics, tmp_path: Path
) -> None:
    """Publish registers a delivery's schemas before its first row, so a registry that stops while it
    produces does not hurt it; one that is down when a delivery starts ends it with exit 3, a clear
    line and a receipt that counts nothing as published. Receipts equal what raw holds, and the
    rerun after the registry returns yields the same event ids, each curated once."""
    export = Path(generate_chain(tmp_path, cases=1500, seed=61, partners=["om"]).partners["om"].path)
    ensure_topics(services.kafka, names.all(["om"]), partitions=3, replication_factor=1)
    child = subprocess.Popen(
        [sys.executable, "-m", "cli", "publish", "--partner", "om", str(export)],
        env=services.env(names),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _until(lambda: _produced(services, names.raw("om")) > 0, "publish to start")
    assert stack.stop_service("apicurio")
    _out, err = child.communicate(timeout=300)
    assert child.returncode in (0, 1), err[-2000:]  # delivered (1: some rows rejected by their content)
    [first] = [json.loads(p.read_text()) for p in tmp_path.glob("om.csv.*.receipt.json")]
    raw_after_first = sum(end_offsets(services.kafka, [names.raw("om")]).values())
    assert first["published"] == raw_after_first > 0 and first["reconciles"]

    code, err, failed = _publish_cli(services, names, export)  # the registry is still down
    assert code == EXIT_NOT_DELIVERED, err[-2000:]
    assert "not delivered" in err and "schema registry" in err and "unavailable" in err
    assert "Traceback" not in err
    assert failed["published"] == 0 and failed["failure"] and failed["reconciles"]
    assert sum(end_offsets(services.kafka, [names.raw("om")]).values()) == raw_after_first

    stack.up()
    code, err, rerun = _publish_cli(services, names, export)
    assert code in (0, 1), err[-2000:]
    assert rerun["published"] == first["published"]
    raw = Counter(_ids(services, names.raw("om")))
    assert len(raw) == first["published"] and set(raw.values()) == {2}  # the same ids, twice each

    with _processor(services, names, f"{names.prefix}proc") as proc:
        stats = proc.run(stop_at=end_offsets(services.kafka, [names.raw("om")]))
    curated = Counter(_ids(services, names.curated))
    assert set(curated) == set(raw) and set(curated.values()) == {1}
    assert stats.reconciles() and not any(stats.dead.values())


def test_registry_stopped_mid_process_is_waited_out_and_nothing_is_dead_lettered(
    services: Services, stack: Stack, names: Topics, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The processor meets the outage when it must fetch a writer schema it has not cached: it aborts
    the batch, logs and backs off, and tries the same records again; none is dead-lettered for it.
    When the registry is back everything is curated exactly once."""
    export = Path(generate_chain(tmp_path, cases=600, seed=62, partners=["om"]).partners["om"].path)
    ensure_topics(services.kafka, names.all(["om"]), partitions=3, replication_factor=1)
    with Publisher("om", kafka=services.kafka, registry=services.registry, topics=names) as publisher:
        published = publisher.publish([export]).published
    processor = _processor(services, names, f"{names.prefix}proc")
    proc = processor.__enter__()
    stop_at = end_offsets(services.kafka, [names.raw("om")])
    assert stack.stop_service("apicurio")

    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["stats"] = proc.run(stop_at=stop_at)
        except BaseException as exc:  # handed to the test thread
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="outage-processor", daemon=True)  # a broken one may hang
    with caplog.at_level(logging.WARNING, logger="ketenstroom.processor"):
        worker.start()
        try:
            _until(lambda: proc.backoff.retries >= 2 or not worker.is_alive(), "the processor to retry")
            assert "error" not in outcome, outcome.get("error")
            assert proc.backoff.retries >= 2, "the processor did not wait for the registry"
            assert worker.is_alive() and _count(services, names.dlq("om")) == 0
            assert _count(services, names.curated) == 0  # nothing committed half-way
            stack.up()
        finally:
            worker.join(DEADLINE_S)
            processor.__exit__(None, None, None)
    assert not worker.is_alive(), "the processor did not finish after the registry came back"
    assert "error" not in outcome, outcome.get("error")
    stats = outcome["stats"]
    curated = Counter(_ids(services, names.curated))
    assert len(curated) == published and set(curated.values()) == {1}
    assert _count(services, names.dlq("om")) == 0 and not any(stats.dead.values())
    assert stats.reconciles()
    assert any("retrying in" in r.getMessage() and "unavailable" in r.getMessage() for r in caplog.records)
    assert proc.metrics.retries._value.get() == proc.backoff.retries


class OutageStore(ObjectStore):
    """The real S3 store; the test stops s3proxy just before the ``nth`` write whose key starts with
    ``marker`` (a revision's data files, or its manifest): mid-seal."""

    def __init__(self, url: str, s3: S3Settings, stop: Callable[[], None], marker: str, nth: int) -> None:
        super().__init__(url, s3)
        self.stop, self.marker, self.left = stop, marker, nth
        self.writes: list[str] = []

    def _hit(self, key: str) -> None:
        if key.startswith(self.marker):
            self.left -= 1
            if self.left == 0:
                self.stop()
        self.writes.append(key)

    def put(self, key: str, data: bytes, *, create_only: bool = False) -> None:
        self._hit(key)
        super().put(key, data, create_only=create_only)

    def rename(self, source: str, target: str) -> None:
        self._hit(target)
        super().rename(source, target)

    def copy(self, source: str, target: str) -> None:
        self._hit(target)
        super().copy(source, target)


def _sink(services: Services, names: Topics, store: ObjectStore, group: str) -> Sink:
    return Sink(
        kafka=services.kafka,
        registry=services.registry,
        store=store,
        settings=SinkSettings(group_id=group, batch_size=50, max_buffered=150, retry_backoff_max_s=1.0),
        topics=names,
        sealer=Sealer(
            store, SealPolicy(grace=timedelta(days=14), final_after=timedelta(days=3650), clock=lambda: AS_OF)
        ),
        tables=False,
    )


def _snapshot(store: ObjectStore) -> dict[str, list[dict[str, Any]]]:
    """Each period's latest sealed revision (the manifest's files only) as rows sorted by event id:
    values, not file boundaries or dictionary encodings, which depend on when the sink flushed."""
    snapshots, out = Snapshots(store), {}
    for period in snapshots.periods():
        manifest = snapshots.manifest(period)
        assert manifest is not None
        rows = [
            row for e in manifest.files for row in pq.read_table(io.BytesIO(store.get(e.path))).to_pylist()
        ]
        assert sum(e.rows for e in manifest.files) == len(rows) == manifest.rows
        out[period] = sorted(rows, key=lambda row: str(row["event_id"]))
    return out


@pytest.mark.parametrize(
    ("marker", "nth"), [("snapshots/2026MM01/r0/data/", 2), ("snapshots/2026MM01/r0/manifest", 1)]
)
def test_object_store_stopped_mid_seal_is_retried_without_a_partial_revision(
    services: Services, stack: Stack, names: Topics, marker: str, nth: int, caplog: pytest.LogCaptureFixture
) -> None:
    """s3proxy is stopped just before the second data file of the first period's revision is moved in
    (or just before its manifest is written). The sink retries with backoff; while it waits the period has no visible
    revision although some of its data files are already there; when s3proxy is back sealing completes
    and the snapshot equals a clean run's over the same records, row for row."""
    ensure_topics(services.kafka, [names.curated], partitions=3, replication_factor=1)
    events = list(chain_events(500, seed=63, start=datetime(2026, 1, 1, tzinfo=UTC), days=75))
    with Registry(services.registry) as registry:
        publish_curated(services.kafka, registry, names, events)
    stop_at = end_offsets(services.kafka, [names.curated])
    root = f"s3://{services.s3.bucket}/{names.prefix.rstrip('.')}"
    quick = services.s3.model_copy(update={"max_retries": 1, "retry_timeout_s": 2.0})  # surface it soon
    outage = OutageStore(f"{root}/outage", quick, lambda: stack.stop_service("s3proxy"), marker, nth)
    sink = _sink(services, names, outage, f"{names.prefix}outage")
    seen: dict[str, object] = {}
    retried = sink.backoff.on_retry

    def on_retry(exc: BaseException) -> None:  # in the sink's thread, while it waits out the outage
        if retried is not None:
            retried(exc)
        if sink.backoff.retries == 2:
            stack.up()  # back, before the sink's next try: what a reader sees now is mid-seal
            snapshots = Snapshots(ObjectStore(f"{root}/outage", services.s3))
            seen["revisions"] = {p: snapshots.manifest(p) for p in snapshots.periods()}
            seen["data"] = [
                k for k in ObjectStore(f"{root}/outage", services.s3).list("snapshots/") if "/data/" in k
            ]

    sink.backoff.on_retry = on_retry
    with caplog.at_level(logging.WARNING, logger="ketenstroom.sink"):
        report = sink.run(stop_at=stop_at)
    assert sink.backoff.retries >= 2 and seen, "the outage was not met"
    # the period being sealed has data files in r0 already, and no visible revision
    assert seen["revisions"].get("2026MM01") is None  # type: ignore[attr-defined]
    assert any(k.startswith("snapshots/2026MM01/r0/data/") for k in seen["data"])  # type: ignore[attr-defined]
    assert any("retrying in" in r.getMessage() for r in caplog.records)
    for manifest in [k for k in outage.writes if k.endswith("manifest.json")]:  # written last
        revision = manifest.rsplit("/", 1)[0] + "/data/"
        data = [i for i, k in enumerate(outage.writes) if k.startswith(revision)]
        assert data and max(data) < outage.writes.index(manifest), manifest

    clean = ObjectStore(f"{root}/clean", services.s3)
    _sink(services, names, clean, f"{names.prefix}clean").run(stop_at=stop_at)
    after, expected = _snapshot(ObjectStore(f"{root}/outage", services.s3)), _snapshot(clean)
    assert sorted(after) == sorted(expected) and len(after) >= 2
    for period, rows in expected.items():
        assert after[period] == rows, f"{period} differs from a clean run"
    assert sum(map(len, after.values())) == len({str(e["event_id"]) for e in events})
    assert report.sealed and not list(ObjectStore(f"{root}/outage", services.s3).list("staging/"))


@pytest.mark.parametrize("command", ["publish", "process", "sink", "status"])
def test_an_unreachable_broker_at_start_fails_each_command_in_bounded_time(
    services: Services, names: Topics, tmp_path: Path, command: str
) -> None:
    """No hang: each command gives up after KETENSTROOM_KAFKA_CONNECT_TIMEOUT_S with one clear line."""
    export = tmp_path / "om.csv"
    export.write_text("soort;x\n", encoding="utf-8")
    argv = {
        "publish": ["publish", "--partner", "om", str(export)],
        "process": ["process", "--partner", "om"],
        "sink": ["sink", "--storage", f"file://{tmp_path / 'store'}", "--no-release"],
        "status": ["status", "--storage", f"file://{tmp_path / 'store'}"],
    }[command]
    env = {
        **services.env(names),
        "KETENSTROOM_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",  # nothing listens on port 1
        "KETENSTROOM_KAFKA_CONNECT_TIMEOUT_S": "4",
        "KETENSTROOM_PSEUDONYM_KEY": KEY,
        "KETENSTROOM_PSEUDONYM_KEY_ID": "outage",
    }
    if command == "publish":  # a valid header, so the delivery gets as far as the broker
        from tests.integration.test_publish import HEADER, ROWS

        export.write_text("\n".join([HEADER, *ROWS]) + "\n", encoding="utf-8")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    took = time.monotonic() - started
    assert done.returncode == (EXIT_NOT_DELIVERED if command == "publish" else 2), done.stderr[-2000:]
    assert "could not reach Kafka at 127.0.0.1:1 within 4 s" in done.stderr
    assert "Traceback" not in done.stderr
    assert took < 4 + 45, f"{command} took {took:.0f} s"  # the wait, plus interpreter start on a busy machine
    if command == "publish":  # refused before a row is read, not every row timed out one by one
        [receipt] = [json.loads(p.read_text()) for p in tmp_path.glob("om.csv.*.receipt.json")]
        assert receipt["rows_read"] == 0 and receipt["published"] == 0
        assert "could not reach Kafka at 127.0.0.1:1 within 4 s" in receipt["failure"]
